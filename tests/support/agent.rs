//! `policy-agent run` as a child process inside a lab's node namespace, the way a
//! DaemonSet pod with hostNetwork runs on a node: its health endpoints reached from
//! inside that namespace, killed with SIGKILL or stopped with SIGTERM.

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsFd,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::sched::{setns, CloneFlags};
use policy_agent::lab::netns::in_netns;

/// `policy-agent` to run inside network namespace `node_netns` (only the
/// network namespace: bpffs and /run stay the host's), as a command on the node.
pub fn in_node(node_netns: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_policy-agent"));
    enter(&mut command, node_netns);
    command
}

/// Makes `command` run in network namespace `node_netns` (set last: whatever
/// replaced the command before keeps it).
fn enter(command: &mut Command, node_netns: &str) {
    let netns = File::open(format!("/run/netns/{node_netns}"))
        .unwrap_or_else(|e| panic!("open /run/netns/{node_netns}: {e}"));
    // SAFETY: setns is async-signal-safe; the closure allocates nothing and
    // touches only the descriptor opened before the fork.
    unsafe {
        command.pre_exec(move || {
            setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
}

/// A running `policy-agent run`; killed (SIGKILL) when dropped.
pub struct AgentProcess {
    child: Child,
    /// Its log (stderr), shown when it fails to become ready.
    log: std::path::PathBuf,
    /// The node namespace it runs in.
    pub node_netns: String,
    /// Where it serves /metrics, /healthz and /readyz (inside `node_netns`).
    pub metrics: SocketAddr,
}

/// What `AgentProcess::start` passes to `policy-agent run`.
pub struct AgentArgs<'a> {
    /// `--node-name`.
    pub node_name: &'a str,
    /// `--kubeconfig`.
    pub kubeconfig: &'a Path,
    /// `--instance`: the pin directory's name, unique per test.
    pub instance: &'a str,
    /// Port of `--metrics-addr 127.0.0.1:<port>`.
    pub metrics_port: u16,
    /// More arguments.
    pub extra: Vec<String>,
}

impl AgentProcess {
    /// Starts the agent binary inside network namespace `node_netns` (only the
    /// network namespace: bpffs and /run stay the host's, so pins outlive it).
    pub fn start(node_netns: &str, args: &AgentArgs<'_>) -> Self {
        Self::start_with(node_netns, args, |_| {})
    }

    /// `start`, letting `adjust` change the command first (environment, privileges).
    pub fn start_with(
        node_netns: &str,
        args: &AgentArgs<'_>,
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let log = std::env::temp_dir().join(format!("podwall-agent-{}.log", args.instance));
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("agent log {}: {e}", log.display()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_policy-agent"));
        command
            .args(["-v", "run", "--node-name", args.node_name])
            .arg("--kubeconfig")
            .arg(args.kubeconfig)
            .args(["--instance", args.instance])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{}", args.metrics_port),
            ])
            .args(&args.extra)
            .stdin(Stdio::null());
        adjust(&mut command);
        command.stderr(log_file);
        // After `adjust`, which may replace the command (a wrapper).
        enter(&mut command, node_netns);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start policy-agent run: {e}"));
        Self {
            child,
            log,
            node_netns: node_netns.to_string(),
            metrics: SocketAddr::from(([127, 0, 0, 1], args.metrics_port)),
        }
    }

    /// `GET path` on the agent's HTTP port: the status code and the body, or `None`
    /// when nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        get_in(&self.node_netns, self.metrics, path)
    }

    /// Waits until /readyz answers 200; panics with the last answer after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "policy-agent run exited with {status} before it was ready; its log:\n{}",
                    self.log_tail()
                );
            }
            last = self.get("/readyz");
            if matches!(last, Some((200, _))) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "policy-agent run not ready after {timeout:?}; last /readyz: {last:?}; its log:\n{}",
            self.log_tail()
        );
    }

    /// The last lines of the agent's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the agent with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the agent with SIGTERM and waits for it; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// The process's effective capability mask (`CapEff` in /proc/PID/status).
    pub fn effective_capabilities(&self) -> u64 {
        effective_capabilities(self.child.id())
    }

    /// How many sync passes the agent has timed (`podwall_sync_duration_seconds`).
    pub fn passes(&self) -> u64 {
        let (_, metrics) = self.get("/metrics").unwrap_or_default();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("podwall_sync_duration_seconds_count"))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Process `pid`'s effective capability mask (`CapEff` in /proc/PID/status).
pub fn effective_capabilities(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading the agent's status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no CapEff in the agent's status"))
}

/// `GET path` on `addr` from inside network namespace `netns`: the status code
/// and the body, or `None` when nothing answers.
pub fn get_in(netns: &str, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let stream = in_netns(netns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500))
    })
    .ok()?
    .ok()?;
    http_get(stream, path)
}

/// A minimal HTTP/1.0 GET over `stream`: status code and body.
fn http_get(mut stream: TcpStream, path: &str) -> Option<(u16, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// A TCP port nobody listens on in the node namespace, for `--metrics-addr`.
pub fn free_port(node_netns: &str) -> u16 {
    in_netns(node_netns, || {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("pick a port: {e}"))
    .port()
}
