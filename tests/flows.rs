//! Flow logs on the real kernel: `policy-agent flows` following a lab from another
//! process (JSON lines and table, filters, `--count`, SIGINT/SIGTERM), what a lab
//! publishes and how it is cleaned up, `lab run --show-drops`, and audit mode in
//! the lab: an audited default-deny keeps traffic flowing and reports exactly the
//! flows that enforcing it drops.

mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use policy_agent::{
    lab::{
        drops::{self, EventCollector},
        probe::ProbeSpec,
        Lab,
    },
    model::{
        builders::{cluster, netpol, pod, rule, selector},
        ClusterState, ObjectRef, PolicyMode, Protocol,
    },
    telemetry::flows::{FlowLine, FlowPaths, WallClock},
};

const AGENT: &str = env!("CARGO_BIN_EXE_policy-agent");
const TIMEOUT: Duration = Duration::from_millis(1000);

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
        .pod(
            pod("shop", "web")
                .labels([("app", "web")])
                .port(80, Protocol::Tcp)
                .build(),
        )
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

/// A lab whose events so far are read and thrown away: packets that reached a pod
/// between attaching the classifiers and the first table write were dropped as
/// `drop_unknown_endpoint` (fail closed); real, but not what these tests look at.
fn quiet_lab_up(state: ClusterState) -> Lab {
    let mut lab = lab_up(state);
    let mut reader = lab.event_reader().unwrap_or_else(|e| panic!("{e}"));
    reader.drain();
    lab
}

/// Starts `policy-agent flows` with `args`; stderr lines arrive on the channel.
fn spawn_flows(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(AGENT)
        .arg("flows")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {AGENT}: {e}"));
    let (send, receive) = mpsc::channel();
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
    }
    (child, receive)
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
    let lab = quiet_lab_up(web_denied());
    let (mut flows, stderr) = spawn_flows(&[
        "--output",
        "json",
        "--verdict",
        "drop",
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
        assert_eq!(line["verdict"], "drop", "{line}");
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
    let lab = quiet_lab_up(web_denied());
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
fn a_lab_publishes_while_it_runs_cleans_up_when_dropped_and_lab_down_removes_dead_ones() {
    support::require_root_and_bpf();
    let paths = FlowPaths::system();
    let lab = lab_up(web_denied());
    let instance = lab.instance().to_string();
    let names_file = paths.names_file(&instance);
    let pin = paths.events_pin(&instance);
    assert!(pin.exists(), "{} is not pinned", pin.display());
    let names: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&names_file).unwrap_or_else(|e| panic!("{}: {e}", names_file.display())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names["instance"], instance.as_str());
    assert_eq!(names["policies"], serde_json::json!(["shop/web-deny"]));
    assert_eq!(names["events_pin"], pin.to_str().unwrap_or_default());
    drop(lab);
    assert!(!pin.exists() && !names_file.exists(), "left behind");
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

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = Command::new("true")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = child.id();
    let _ = child.wait();
    pid
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/secure-app")
        .to_str()
        .unwrap_or_default()
        .to_string()
}

fn lab_run(extra: &[&str]) -> String {
    let out = Command::new(AGENT)
        .args(["lab", "run", "-f", &example(), "--probe", "80/TCP"])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lab_run_show_drops_lists_each_dropped_flow_with_its_isolating_policies() {
    support::require_root_and_bpf();
    let text = lab_run(&["--show-drops"]);
    let (matrix, drops) = text
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("no drops after the matrix:\n{text}"));
    assert!(
        matrix.ends_with("12 probes: 0 allowed, 12 denied"),
        "{text}"
    );
    let mut lines = drops.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("drops reported while probing: ")),
        "{text}"
    );
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("from"), "{text}");
    // Egress of the frontend, isolated by the tutorial's egress policy.
    let wanted = [
        "secure-app/frontend",
        "secure-app/backend",
        "80/TCP",
        "drop",
    ];
    let line = lines
        .clone()
        .find(|l| l.split_whitespace().take(4).eq(wanted))
        .unwrap_or_else(|| panic!("no line starting {wanted:?}:\n{text}"));
    assert!(
        line.contains("secure-app/frontend egress")
            && line.contains("drop_policy")
            && line.contains("secure-app/deny-all-egress-allow-dns"),
        "{line}"
    );

    let json: serde_json::Value = serde_json::from_str(&lab_run(&["--show-drops", "-o", "json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["probes"].as_array().map(Vec::len), Some(12));
    assert_eq!(json["events_lost"]["rate_limited"], 0, "{json}");
    assert_eq!(json["events_lost"]["ring_full"], 0, "{json}");
    let drops = json["drops"].as_array().cloned().unwrap_or_default();
    // coredns reaches no tutorial pod on 80: ingress policies drop it at each one.
    for (to, policies) in [
        (
            "secure-app/backend",
            serde_json::json!([
                "secure-app/allow-frontend-to-backend",
                "secure-app/deny-all-ingress"
            ]),
        ),
        (
            "secure-app/mysql",
            serde_json::json!(["secure-app/deny-all-ingress", "secure-app/mysql-lockdown"]),
        ),
    ] {
        let found = drops
            .iter()
            .find(|d| d["from"] == "kube-system/coredns" && d["to"] == to && d["port"] == 80);
        let drop = found.unwrap_or_else(|| panic!("no drop coredns -> {to}: {json}"));
        assert_eq!(drop["verdict"], "drop");
        assert_eq!(drop["pod"], to);
        assert_eq!(drop["direction"], "ingress");
        assert_eq!(drop["policies"], policies, "{drop}");
        assert!(drop["packets"].as_u64().is_some_and(|n| n >= 1), "{drop}");
    }
}

/// `(from, to, port)` of the probes in a `lab run` JSON that satisfy `keep`.
fn probes_where(
    json: &serde_json::Value,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> BTreeSet<String> {
    json["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| keep(p))
        .map(|p| format!("{} -> {} {}", p["from"], p["to"], p["port"]))
        .collect()
}

#[test]
fn lab_run_audit_passes_everything_and_marks_exactly_what_enforcing_drops() {
    support::require_root_and_bpf();
    let enforced: serde_json::Value =
        serde_json::from_str(&lab_run(&["-o", "json"])).unwrap_or_else(|e| panic!("{e}"));
    let audited: serde_json::Value = serde_json::from_str(&lab_run(&["--audit", "-o", "json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    let dropped = probes_where(&enforced, |p| p["allowed"] == false);
    assert!(!dropped.is_empty());
    assert!(
        probes_where(&audited, |p| p["allowed"] == false).is_empty(),
        "{audited}"
    );
    assert_eq!(probes_where(&audited, |p| p["would_drop"] == true), dropped);
    let table = lab_run(&["--audit"]);
    assert!(table.contains("80 ⚠"), "{table}");
    assert!(table.contains("would-drop: audit mode"), "{table}");
}

/// The tutorial's shape in small: a default-deny ingress for the namespace and an
/// allow from `a` to `b` on 80, both in `mode`.
fn default_deny(mode: PolicyMode) -> ClusterState {
    let app = |name: &str| {
        pod("shop", name)
            .labels([("app", name)])
            .port(80, Protocol::Tcp)
            .build()
    };
    cluster()
        .pod(app("a"))
        .pod(app("b"))
        .pod(app("c"))
        .policy(
            netpol("shop", "default-deny-ingress")
                .select(selector().build())
                .types(true, false)
                .mode(mode)
                .build(),
        )
        .policy(
            netpol("shop", "allow-a-to-b")
                .select(selector().label("app", "b").build())
                .ingress(
                    rule()
                        .from_pods(selector().label("app", "a").build())
                        .port(80, Protocol::Tcp)
                        .build(),
                )
                .mode(mode)
                .build(),
        )
        .build()
}

#[test]
fn an_audited_default_deny_keeps_traffic_flowing_and_reports_exactly_the_flows_enforcing_drops() {
    support::require_root_and_bpf();
    let mut lab = lab_up(default_deny(PolicyMode::Audit));
    let specs = lab.probe_specs(&[]);
    assert_eq!(specs.len(), 6);
    let collector = EventCollector::start(lab.event_reader().unwrap_or_else(|e| panic!("{e}")));
    let mut results = lab
        .probe(&specs, TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let records = collector.finish().unwrap_or_else(|e| panic!("{e}"));
    let names = lab.flow_names();
    let lines: Vec<FlowLine> = records
        .iter()
        .map(|r| FlowLine::name(r, &names, WallClock::now()))
        .collect();
    drops::mark_would_drops(&mut results, &lines);
    assert!(
        results.iter().all(|r| r.allowed),
        "audit drops nothing: {results:?}"
    );
    let key = |r: &policy_agent::lab::report::ProbeResult| format!("{} -> {}", r.from, r.to);
    let would_drop: BTreeSet<String> = results.iter().filter(|r| r.would_drop).map(key).collect();
    // Every pair but a -> b, which the allow admits.
    assert_eq!(would_drop.len(), 5, "{would_drop:?}");
    assert!(!would_drop.contains("shop/a -> shop/b"), "{would_drop:?}");
    // Each would-drop names the policies that isolate its destination.
    for seen in drops::summarize(&lines).iter().filter(|d| d.port == 80) {
        let expected: Vec<&str> = if seen.to == "shop/b" {
            vec!["shop/allow-a-to-b", "shop/default-deny-ingress"]
        } else {
            vec!["shop/default-deny-ingress"]
        };
        assert_eq!(seen.policies, expected, "{seen:?}");
        assert_eq!(seen.reason, "allow_audit", "{seen:?}");
    }

    lab.update(default_deny(PolicyMode::Enforce))
        .unwrap_or_else(|e| panic!("update: {e}"));
    let enforced = lab
        .probe(&specs, TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let dropped: BTreeSet<String> = enforced.iter().filter(|r| !r.allowed).map(key).collect();
    assert_eq!(
        dropped, would_drop,
        "enforcing drops exactly what audit reported"
    );
}
