//! Flow logs on the real kernel: `policy-agent flows` following a lab from another
//! process (JSON lines and table, filters, `--count`, SIGINT/SIGTERM), what a lab
//! publishes and how it is cleaned up; `flows/lab.rs`: `lab run --show-drops` and
//! audit mode in the lab; `flows/live.rs`: following across table updates, events
//! from before `flows` started, would-drops; `flows/bpffs.rs`: the bpffs mount a lab makes and
//! `lab down` undoes; `flows/explain_node.rs`: `explain --node` reading a running lab's
//! tables beside the evaluator; `flows/suggest.rs`: policies suggested from a recording pass
//! what it saw and deny the rest.

mod support;

#[path = "flows/bpffs.rs"]
mod bpffs;
#[path = "flows/explain_node.rs"]
mod explain_node;
#[path = "flows/lab.rs"]
mod lab;
#[path = "flows/live.rs"]
mod live;
#[path = "flows/suggest.rs"]
mod suggest;

use std::{
    io::Read,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use policy_agent::{
    lab::{probe::ProbeSpec, Lab},
    model::{
        builders::{cluster, netpol, pod, selector},
        ClusterState, ObjectRef, Pod, Protocol,
    },
    telemetry::flows::FlowPaths,
};

const AGENT: &str = env!("CARGO_BIN_EXE_policy-agent");
const TIMEOUT: Duration = Duration::from_millis(1000);

/// `shop/web` (`app=web`), serving TCP 80: the destination of every flows test.
fn web_pod() -> Pod {
    pod("shop", "web")
        .labels([("app", "web")])
        .port(80, Protocol::Tcp)
        .build()
}

/// `shop/client` and `shop/web` (port 80), web isolated for ingress by
/// `shop/web-deny`, which allows nothing.
fn web_denied() -> ClusterState {
    cluster()
        .pod(
            pod("shop", "client")
                .labels([("app", "client")])
                .port(8080, Protocol::Tcp)
                .build(),
        )
        .pod(web_pod())
        .policy(
            netpol("shop", "web-deny")
                .select(selector().label("app", "web").build())
                .types(true, false)
                .build(),
        )
        .build()
}

fn client_to_web() -> ProbeSpec {
    ProbeSpec {
        from: ObjectRef::new("shop", "client"),
        to: ObjectRef::new("shop", "web"),
        port: 80,
        protocol: Protocol::Tcp,
    }
}

fn lab_up(state: ClusterState) -> Lab {
    Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"))
}

/// Starts `policy-agent flows` with `args`; stderr lines arrive on the channel.
fn spawn_flows(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut flows = Command::new(AGENT);
    flows.arg("flows").args(args);
    support::spawn_reading_stderr(flows)
}

/// Waits until `flows` says it follows the datapath (it has opened the ring).
fn wait_until_following(stderr: &mpsc::Receiver<String>) {
    let line = stderr
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("flows said nothing on stderr: {e}"));
    assert!(line.starts_with("flows: following pwlab-"), "{line}");
}

/// Waits up to `limit` for `child` to exit; kills it and fails if it does not.
fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("policy-agent flows did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `policy-agent` with `args`; its stdout, once it exited 0.
fn agent_stdout<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new(AGENT)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stdout_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut text);
    }
    text
}

#[test]
fn flows_follows_a_lab_as_json_lines_naming_the_pods_port_and_isolating_policy() {
    support::require_root_and_bpf();
    let lab = lab_up(web_denied());
    let (mut flows, stderr) = spawn_flows(&[
        "--output",
        "json",
        "--verdict",
        "dropped",
        "--namespace",
        "shop",
        // Only flows with the client at an end: the pods' IPv6 multicast reports
        // (MLD, from link-local addresses) are dropped at web too.
        "--pod",
        "client",
        "--count",
        "2",
        "--instance",
        lab.instance(),
    ]);
    wait_until_following(&stderr);
    for _ in 0..2 {
        let results = lab
            .probe(&[client_to_web()], TIMEOUT)
            .unwrap_or_else(|e| panic!("probe: {e}"));
        assert!(!results[0].allowed, "web-deny must drop the probe");
    }
    let status = wait_exit(&mut flows, Duration::from_secs(10));
    let stdout = stdout_of(&mut flows);
    assert!(status.success(), "{status}: {stdout}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "--count 2: {stdout}");
    for line in &lines {
        assert_eq!(line["pod"], "shop/web", "{line}");
        assert_eq!(line["direction"], "ingress", "{line}");
        assert_eq!(line["source"]["pod"], "shop/client", "{line}");
        assert_eq!(line["destination"]["pod"], "shop/web", "{line}");
        assert_eq!(line["destination"]["port"], 80, "{line}");
        assert_eq!(line["protocol"], "TCP", "{line}");
        assert_eq!(line["verdict"], "dropped", "{line}");
        assert_eq!(line["reason"], "drop_policy", "{line}");
        assert_eq!(
            line["policies"],
            serde_json::json!(["shop/web-deny"]),
            "{line}"
        );
        assert!(line["allowed_by"].is_null(), "{line}");
        let time = line["time"].as_str().unwrap_or_default();
        assert!(time.len() == 27 && time.ends_with('Z'), "{line}");
    }
}

#[test]
fn flows_prints_a_table_and_exits_cleanly_on_sigint_and_sigterm() {
    support::require_root_and_bpf();
    let lab = lab_up(web_denied());
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let (mut flows, stderr) = spawn_flows(&["--instance", lab.instance(), "--pod", "client"]);
        wait_until_following(&stderr);
        lab.probe(&[client_to_web()], TIMEOUT)
            .unwrap_or_else(|e| panic!("probe: {e}"));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(flows.id()).unwrap_or(0));
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("{e}"));
        let status = wait_exit(&mut flows, Duration::from_secs(5));
        let stdout = stdout_of(&mut flows);
        assert!(status.success(), "{signal}: {status}\n{stdout}");
        let mut lines = stdout.lines();
        let header = lines.next().unwrap_or_default();
        assert!(header.starts_with("TIME (UTC)"), "{stdout}");
        let drop = lines
            .find(|l| l.contains("shop/client ("))
            .unwrap_or_else(|| panic!("no drop line after {signal}:\n{stdout}"));
        let column = |title: &str| header.find(title).unwrap_or(usize::MAX);
        // Values sit under their titles.
        assert_eq!(drop.find("shop/web"), Some(column("POD")), "{stdout}");
        assert_eq!(drop.find("shop/client ("), Some(column("PEER")), "{stdout}");
        assert_eq!(drop.find("80/TCP"), Some(column("PORT")), "{stdout}");
        assert!(
            drop.ends_with("drop_policy       shop/web-deny"),
            "{stdout}"
        );
    }
}

#[test]
fn flows_without_a_running_datapath_fails_saying_so() {
    // No root needed: nothing is opened before the names are found.
    let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run_dir = empty.path().to_str().unwrap_or_default();
    let out = Command::new(AGENT)
        .args(["flows", "--run-dir", run_dir])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no podwall datapath is running (nothing published under"),
        "{stderr}"
    );
    assert!(stderr.contains(run_dir), "{stderr}");
    let out = Command::new(AGENT)
        .args(["flows", "--run-dir", run_dir, "--instance", "pwlab-1x0"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no podwall datapath instance 'pwlab-1x0' (running: none)"),
        "{stderr}"
    );
}

#[test]
fn flows_refuses_a_count_of_zero_before_looking_for_a_datapath() {
    let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(AGENT)
        .args(["flows", "--count", "0", "--run-dir"])
        .arg(empty.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value '0' for '--count <N>'"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_lab_publishes_while_it_runs_cleans_up_when_dropped_and_lab_down_removes_dead_ones() {
    support::require_root_and_bpf();
    let paths = FlowPaths::system();
    let mut lab = lab_up(web_denied());
    // The tables are written before the classifiers attach: no packet of the pods
    // coming up is dropped (and reported) as an unknown endpoint.
    let stats = lab.stats().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.get("drop_unknown_endpoint"), 0, "{stats:?}");
    let instance = lab.instance().to_string();
    let names_file = paths.names_file(&instance);
    let pin = paths.events_pin(&instance);
    assert!(pin.exists(), "{} is not pinned", pin.display());
    let stats_pin = paths.stats_pin(&instance);
    assert!(stats_pin.exists(), "{} is not pinned", stats_pin.display());
    let names: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&names_file).unwrap_or_else(|e| panic!("{}: {e}", names_file.display())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names["instance"], instance.as_str());
    assert_eq!(names["policies"], serde_json::json!(["shop/web-deny"]));
    assert_eq!(names["events_pin"], pin.to_str().unwrap_or_default());
    assert_eq!(names["stats_pin"], stats_pin.to_str().unwrap_or_default());
    drop(lab);
    assert!(
        !pin.exists() && !stats_pin.exists() && !names_file.exists(),
        "left behind"
    );
    assert!(!paths.instance_names().contains(&instance));

    // What a killed lab leaves: the names and pin directories of a dead pid.
    let dead = format!("pwlab-{}x0", dead_pid());
    let left: Vec<PathBuf> = [paths.names_root(), paths.pins_root()]
        .iter()
        .map(|root| root.join(&dead))
        .collect();
    for dir in &left {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    let out = Command::new(AGENT)
        .args(["lab", "down"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("removed the flow log pin and names of {dead}")),
        "{stdout}"
    );
    assert!(left.iter().all(|dir| !dir.exists()), "{left:?}");
}

#[test]
fn ctrl_c_during_a_lab_run_removes_its_flow_log() {
    support::require_root_and_bpf();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/secure-app");
    let mut child = Command::new(AGENT)
        .args(["lab", "run", "--timeout-ms", "10000", "-f"])
        .arg(&example)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let paths = FlowPaths::system();
    let instance = format!("pwlab-{}x0", child.id());
    let names_file = paths.names_file(&instance);
    let start = Instant::now();
    while !names_file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            names_file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap_or_else(|e| panic!("{e}"));
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(
        !paths.instance_names().contains(&instance),
        "{instance} left its names or pin"
    );
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = Command::new("true")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = child.id();
    let _ = child.wait();
    pid
}
