//! `policy-agent flows` following a lab while things change: events that waited
//! across a table update that renumbers policy ids keep the names of the tables
//! that decided them; events from before `flows` started are skipped and counted;
//! would-drops of an audit-mode lab come through `--verdict would-drop`; events the
//! datapath lost while `flows` did not read are reported on stderr; a names file
//! gone while its owner runs (a failed publish) leaves events unnamed, not stale.

use std::{
    process::Child,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use policy_agent::{
    lab::probe::Family,
    model::{
        builders::{cluster, netpol, pod, rule, selector},
        ClusterState, ObjectRef, PolicyMode, Protocol,
    },
    telemetry::flows::{clock::rfc3339, FlowPaths},
};

use super::{
    client_to_web, lab_up, spawn_flows, stdout_of, support, wait_exit, wait_until_following,
    web_denied, web_pod, TIMEOUT,
};

fn signal(child: &Child, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    kill(pid, signal).unwrap_or_else(|e| panic!("{signal}: {e}"));
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `shop/client` and `shop/web` (80), `shop/web-allow` admitting the client on 80;
/// with `renumbered`, also `shop/aaa-client-deny` (isolating the client's
/// ingress), which sorts first and so takes policy id 0 from `shop/web-allow`.
fn web_allowed(renumbered: bool) -> ClusterState {
    let mut state = cluster()
        .pod(pod("shop", "client").labels([("app", "client")]).build())
        .pod(web_pod())
        .policy(
            netpol("shop", "web-allow")
                .select(selector().label("app", "web").build())
                .ingress(
                    rule()
                        .from_pods(selector().label("app", "client").build())
                        .port(80, Protocol::Tcp)
                        .build(),
                )
                .build(),
        );
    if renumbered {
        state = state.policy(
            netpol("shop", "aaa-client-deny")
                .select(selector().label("app", "client").build())
                .types(true, false)
                .build(),
        );
    }
    state.build()
}

#[test]
fn events_waiting_across_an_update_that_renumbers_policies_keep_the_policies_that_decided_them() {
    support::require_root_and_bpf();
    let mut lab = lab_up(web_allowed(false));
    let web_allow = ObjectRef::new("shop", "web-allow");
    let id_of = |lab: &policy_agent::lab::Lab| {
        lab.tables()
            .policy_names
            .iter()
            .position(|name| *name == web_allow)
    };
    assert_eq!(id_of(&lab), Some(0));
    let (mut flows, stderr) = spawn_flows(&[
        "--output",
        "json",
        "--verdict",
        "allow",
        "--pod",
        "web",
        "--instance",
        lab.instance(),
    ]);
    wait_until_following(&stderr);
    // Stopped, flows reads nothing: both probes' events wait in the ring across
    // the update and are read together after it.
    signal(&flows, Signal::SIGSTOP);
    let before = lab.probe(&[client_to_web()], TIMEOUT);
    lab.update(web_allowed(true))
        .unwrap_or_else(|e| panic!("update: {e}"));
    assert_eq!(id_of(&lab), Some(1), "the update renumbers shop/web-allow");
    let after = lab.probe(&[client_to_web()], TIMEOUT);
    signal(&flows, Signal::SIGCONT);
    for results in [before, after] {
        let results = results.unwrap_or_else(|e| panic!("probe: {e}"));
        assert!(results[0].allowed, "shop/web-allow admits the probe");
    }
    std::thread::sleep(Duration::from_millis(1500));
    signal(&flows, Signal::SIGINT);
    let status = wait_exit(&mut flows, Duration::from_secs(5));
    let stdout = stdout_of(&mut flows);
    assert!(status.success(), "{status}: {stdout}");
    let allowed_into_web: Vec<serde_json::Value> = json_lines(&stdout)
        .into_iter()
        .filter(|l| {
            l["pod"] == "shop/web" && l["direction"] == "ingress" && l["destination"]["port"] == 80
        })
        .collect();
    assert_eq!(allowed_into_web.len(), 2, "one per probe:\n{stdout}");
    for line in &allowed_into_web {
        assert_eq!(
            line["allowed_by"],
            serde_json::json!({"policy": "shop/web-allow", "rule": "spec.ingress[0]"}),
            "{line}"
        );
    }
}

#[test]
fn flows_skips_and_counts_the_events_waiting_from_before_it_started() {
    support::require_root_and_bpf();
    let lab = lab_up(web_denied());
    // Nobody reads the lab's events yet: this drop waits in the ring.
    lab.probe(&[client_to_web()], TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| rfc3339(i128::try_from(d.as_nanos()).unwrap_or(0)))
        .unwrap_or_default();
    let (mut flows, stderr) = spawn_flows(&[
        "--output",
        "json",
        "--verdict",
        "drop",
        "--pod",
        "client",
        "--count",
        "1",
        "--instance",
        lab.instance(),
    ]);
    wait_until_following(&stderr);
    let skipped = stderr
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no word of the skipped events: {e}"));
    assert!(
        skipped.starts_with("flows: skipped ")
            && skipped.ends_with(" events that were waiting from before flows started"),
        "{skipped}"
    );
    lab.probe(&[client_to_web()], TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let status = wait_exit(&mut flows, Duration::from_secs(10));
    let stdout = stdout_of(&mut flows);
    assert!(status.success(), "{status}: {stdout}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    // The line printed is the probe made after flows started, not the waiting one.
    let time = lines[0]["time"].as_str().unwrap_or_default();
    assert!(time >= started.as_str(), "{time} < {started}");
}

#[test]
fn flows_verdict_would_drop_shows_what_an_audit_mode_lab_lets_through() {
    support::require_root_and_bpf();
    let mut state = web_denied();
    state = state.with_every_policy_in_audit();
    assert!(state.policies.values().all(|p| p.mode == PolicyMode::Audit));
    let lab = lab_up(state);
    let (mut flows, stderr) = spawn_flows(&[
        "--output",
        "json",
        "--verdict",
        "would-drop",
        "--pod",
        "client",
        "--count",
        "1",
        "--instance",
        lab.instance(),
    ]);
    wait_until_following(&stderr);
    let results = lab
        .probe(&[client_to_web()], TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    assert!(results[0].allowed, "audit mode drops nothing");
    let status = wait_exit(&mut flows, Duration::from_secs(10));
    let stdout = stdout_of(&mut flows);
    assert!(status.success(), "{status}: {stdout}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    let line = &lines[0];
    assert_eq!(line["verdict"], "would-drop", "{line}");
    assert_eq!(line["reason"], "would_drop_policy", "{line}");
    assert_eq!(line["pod"], "shop/web", "{line}");
    assert_eq!(line["direction"], "ingress", "{line}");
    assert_eq!(line["source"]["pod"], "shop/client", "{line}");
    assert_eq!(line["destination"]["port"], 80, "{line}");
    assert_eq!(
        line["policies"],
        serde_json::json!(["shop/web-deny"]),
        "{line}"
    );
}

#[test]
fn flows_warns_on_stderr_when_the_datapath_lost_events() {
    support::require_root_and_bpf();
    let lab = lab_up(web_denied());
    // Nothing in an enforcing lab is a would-drop: stdout stays empty however
    // many events come, so a stopped flows never blocks on a full pipe.
    let (mut flows, stderr) = spawn_flows(&[
        "--output",
        "json",
        "--verdict",
        "would-drop",
        "--instance",
        lab.instance(),
    ]);
    wait_until_following(&stderr);
    signal(&flows, Signal::SIGSTOP);
    // Each datagram is dropped at web's ingress and reported; the 1 MiB ring holds
    // about 13,000 events, so most of these find it full.
    let web = lab
        .pod_address(&ObjectRef::new("shop", "web"), Family::Ipv4)
        .unwrap_or_else(|e| panic!("{e}"));
    lab.in_pod(&ObjectRef::new("shop", "client"), || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..30_000 {
            let _ = socket.send_to(b"x", (web, 80));
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    signal(&flows, Signal::SIGCONT);
    let warning = (0..20)
        .filter_map(|_| stderr.recv_timeout(Duration::from_millis(500)).ok())
        .find(|line| line.contains("could not report"));
    signal(&flows, Signal::SIGINT);
    let status = wait_exit(&mut flows, Duration::from_secs(5));
    let stdout = stdout_of(&mut flows);
    assert!(status.success(), "{status}: {stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    let warning = warning.unwrap_or_else(|| panic!("flows said nothing of lost events"));
    assert!(
        warning.starts_with("flows: warning: the datapath could not report ")
            && warning.contains(" for a full ring buffer); some flows are missing"),
        "{warning}"
    );
    assert!(!warning.contains(", 0 for a full ring buffer"), "{warning}");
}

#[test]
fn with_its_names_file_gone_flows_says_so_and_names_nothing_rather_than_guess() {
    support::require_root_and_bpf();
    let lab = lab_up(web_denied());
    let (mut flows, stderr) = spawn_flows(&[
        "--output",
        "json",
        "--verdict",
        "drop",
        "--count",
        "1",
        "--instance",
        lab.instance(),
    ]);
    wait_until_following(&stderr);
    // What a lab does when publishing its names fails: the stale file goes.
    let names_file = FlowPaths::system().names_file(lab.instance());
    std::fs::remove_file(&names_file).unwrap_or_else(|e| panic!("{e}"));
    let missing = (0..20)
        .filter_map(|_| stderr.recv_timeout(Duration::from_millis(500)).ok())
        .find(|line| line.contains("is missing"))
        .unwrap_or_else(|| panic!("flows said nothing of the missing names"));
    assert!(
        missing.starts_with(&format!(
            "flows: warning: the names file {} is missing",
            names_file.display()
        )),
        "{missing}"
    );
    assert!(
        flows.try_wait().ok().flatten().is_none(),
        "flows must keep following: the datapath still runs"
    );
    lab.probe(&[client_to_web()], TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let status = wait_exit(&mut flows, Duration::from_secs(10));
    let stdout = stdout_of(&mut flows);
    assert!(status.success(), "{status}: {stdout}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0]["pod"].is_null(), "{}", lines[0]);
    assert!(lines[0]["source"]["pod"].is_null(), "{}", lines[0]);
    assert_eq!(lines[0]["policies"], serde_json::json!([]), "{}", lines[0]);
}
