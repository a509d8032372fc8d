//! The memory benchmark's scratch node: a network namespace of its own (named as
//! the lab names its namespaces, so `policy-agent lab clean` sweeps it should the
//! benchmark die), a veth per local pod with a route to the pod's address as a
//! CNI sets it up (the peer end stays in the namespace: no pod behind it, but the
//! agent maps, attaches and becomes ready as on a node), and `policy-agent run`
//! as a child process inside it with a pin directory of its own (`--instance`). Dropping it stops the agent, removes what
//! the agent pinned (`policy-agent uninstall`) and the namespace, on every path.

use std::{
    fs::File,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::super::super::BenchError;
use crate::lab::{netns, LabError};

/// Where the agent serves `/readyz` inside the scratch namespace (its own, so any
/// port is free).
const METRICS_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 9978);
/// How long a stopped agent has to exit before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(15);

fn lab(error: LabError) -> BenchError {
    BenchError::Child {
        command: "the memory benchmark's network namespace".into(),
        message: error.to_string(),
    }
}

/// A scratch network namespace, and the agent running in it once started.
pub struct ScratchNode {
    netns: String,
    /// The agent's `--instance`: its pin directory's and lock's name.
    instance: String,
    /// The binary, also run for `uninstall`.
    agent: PathBuf,
    child: Option<Child>,
    /// The agent's log (stderr), kept for a look after the run.
    pub log: PathBuf,
}

impl ScratchNode {
    /// Creates the namespace (loopback up). `agent` is the `policy-agent` binary.
    pub fn create(agent: &Path) -> Result<Self, BenchError> {
        let pid = std::process::id();
        let name = format!("{}{pid}xmemory", netns::LAB_PREFIX);
        netns::ip_batch(None, &[format!("netns add {name}")]).map_err(lab)?;
        let node = Self {
            netns: name,
            instance: format!("bench-memory-{pid}"),
            agent: agent.to_path_buf(),
            child: None,
            log: std::env::temp_dir().join(format!("podwall-bench-memory-{pid}.log")),
        };
        netns::ip_batch(Some(&node.netns), &["link set lo up".to_string()]).map_err(lab)?;
        Ok(node)
    }

    /// A veth pair per address: `pwm<i>`, which the agent attaches (its name has
    /// a default `--interface-prefix`), with a host route to the address, and its
    /// peer `mpod<i>`, which matches no prefix.
    pub fn add_pod_interfaces(&self, addresses: &[IpAddr]) -> Result<(), BenchError> {
        let lines: Vec<String> = addresses
            .iter()
            .enumerate()
            .flat_map(|(i, address)| {
                let prefix = if address.is_ipv4() { 32 } else { 128 };
                [
                    format!("link add pwm{i} type veth peer name mpod{i}"),
                    format!("link set mpod{i} up"),
                    format!("link set pwm{i} up"),
                    format!("route add {address}/{prefix} dev pwm{i}"),
                ]
            })
            .collect();
        netns::ip_batch(Some(&self.netns), &lines).map_err(lab)
    }

    /// A listener on 127.0.0.1 inside the namespace, for the stand-in API server.
    pub fn listen(&self) -> Result<TcpListener, BenchError> {
        netns::in_netns(&self.netns, || TcpListener::bind("127.0.0.1:0"))
            .map_err(lab)?
            .map_err(|source| BenchError::Io {
                what: format!("listening inside {}", self.netns),
                source,
            })
    }

    /// Starts `policy-agent run` for node `node_name` inside the namespace: the
    /// child inherits the namespace of the thread that spawns it.
    pub fn start_agent(
        &mut self,
        node_name: &str,
        kubeconfig: &Path,
        bpf_object: &Path,
    ) -> Result<u32, BenchError> {
        let io = |what: String| move |source| BenchError::Io { what, source };
        let log =
            File::create(&self.log).map_err(io(format!("creating {}", self.log.display())))?;
        let mut command = Command::new(&self.agent);
        command
            .args([
                "run",
                "--node-name",
                node_name,
                "--instance",
                &self.instance,
            ])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--bpf-object")
            .arg(bpf_object)
            .arg("--metrics-addr")
            .arg(SocketAddr::from(METRICS_ADDR).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = netns::in_netns(&self.netns, move || command.spawn())
            .map_err(lab)?
            .map_err(io(format!("starting {} run", self.agent.display())))?;
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }

    /// Fails when the agent has exited.
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => return Ok(()),
            Some(Ok(Some(status))) => format!("exited with {status}"),
            Some(Err(error)) => format!("cannot be waited for: {error}"),
            None => "was never started".to_string(),
        };
        Err(BenchError::Child {
            command: format!("{} run", self.agent.display()),
            message: format!("{exited}; its log: {}", self.log.display()),
        })
    }

    /// Waits until the agent's `/readyz` answers 200 (its first sync programmed);
    /// how long that took.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, BenchError> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            self.check_running()?;
            if self.readyz() == Some(200) {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(BenchError::Child {
            command: format!("{} run", self.agent.display()),
            message: format!(
                "not ready after {timeout:?}; its log: {}",
                self.log.display()
            ),
        })
    }

    /// The status code of `GET /readyz`, or `None` when nothing answers.
    fn readyz(&self) -> Option<u16> {
        let addr = SocketAddr::from(METRICS_ADDR);
        let mut stream = netns::in_netns(&self.netns, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        })
        .ok()?
        .ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: agent\r\n\r\n")
            .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    /// Stops the agent with SIGTERM (SIGKILL after `STOP_PATIENCE`); whether it
    /// exited cleanly. Without an agent, `true`.
    pub fn stop_agent(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_PATIENCE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        tracing::warn!(
            pid = child.id(),
            "the agent did not stop on SIGTERM; killing it"
        );
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for ScratchNode {
    fn drop(&mut self) {
        self.stop_agent();
        let uninstall = Command::new(&self.agent)
            .args(["uninstall", "--instance", &self.instance])
            .stdout(Stdio::null())
            .status();
        if !uninstall.is_ok_and(|status| status.success()) {
            tracing::warn!(
                instance = %self.instance,
                "`policy-agent uninstall` failed; remove the pins with it by hand"
            );
        }
        if let Err(error) = netns::delete(std::slice::from_ref(&self.netns)) {
            tracing::warn!(netns = %self.netns, %error, "removing the scratch namespace");
        }
    }
}
