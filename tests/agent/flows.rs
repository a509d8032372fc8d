//! `policy-agent flows` follows a running node agent, as `kubectl exec ds/podwall
//! -- policy-agent flows` does on a node: the agent publishes the names of its
//! events beside its instance lock, pointing at the maps its datapath keeps
//! pinned; drops come out naming the pods, the port and the isolating policy;
//! after a restart the successor publishes again; `uninstall` removes the names
//! with the pins. `explain --node` reads the agent's pinned tables, the cluster
//! read from the API server, and agrees with the evaluator.

use std::{
    io::Read,
    process::Command,
    time::{Duration, Instant},
};

use policy_agent::telemetry::flows::{publish::read_names, FlowPaths};

use super::{
    create_web_db_other,
    harness::{self, Node},
    support,
};

const AGENT: &str = env!("CARGO_BIN_EXE_policy-agent");

/// The arguments after `policy-agent` that follow `instance` for the first drop
/// of a flow from `prod/other`, as JSON.
pub fn first_drop_args(instance: &str) -> Vec<String> {
    let args = [
        "flows",
        "--output",
        "json",
        "--verdict",
        "dropped",
        "--pod",
        "prod/other",
        "--count",
        "1",
        "--instance",
    ];
    args.into_iter()
        .chain([instance])
        .map(String::from)
        .collect()
}

/// Runs `flows` (a `policy-agent` command line with `first_drop_args(instance)`)
/// while `other` keeps trying `db`; returns the event it prints, as JSON.
pub fn first_drop_from_other(node: &Node, instance: &str, flows: Command) -> serde_json::Value {
    let (mut flows, stderr) = support::spawn_reading_stderr(flows);
    let said = stderr
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("flows said nothing on stderr: {e}"));
    assert!(
        said.starts_with(&format!("flows: following {instance}")),
        "{said}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while matches!(flows.try_wait(), Ok(None)) && Instant::now() < deadline {
        node.expect("other is refused by db", &[("other", "db", false)]);
    }
    if matches!(flows.try_wait(), Ok(None)) {
        let _ = flows.kill();
        let _ = flows.wait();
        panic!("no drop from prod/other came through flows within 20 s");
    }
    let mut stdout = String::new();
    if let Some(mut out) = flows.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    let status = flows.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "flows: {status}: {stdout}");
    let line = stdout
        .lines()
        .next()
        .unwrap_or_else(|| panic!("flows printed nothing"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Asserts `event` is `prod/other`'s connection to `prod/db` dropped at db's
/// ingress by `prod/db-from-web`.
pub fn assert_names_other_to_db(event: &serde_json::Value) {
    assert_eq!(event["pod"], "prod/db", "{event}");
    assert_eq!(event["direction"], "ingress", "{event}");
    assert_eq!(event["source"]["pod"], "prod/other", "{event}");
    assert_eq!(event["destination"]["pod"], "prod/db", "{event}");
    assert_eq!(event["destination"]["port"], harness::TCP_PORT, "{event}");
    assert_eq!(event["verdict"], "dropped", "{event}");
    assert_eq!(event["reason"], "drop_policy", "{event}");
    assert_eq!(
        event["policies"],
        serde_json::json!(["prod/db-from-web"]),
        "{event}"
    );
}

/// `policy-agent flows` run here, following `instance`.
fn flows(instance: &str) -> Command {
    let mut command = Command::new(AGENT);
    command.args(first_drop_args(instance));
    command
}

/// `explain --node` on agent `instance`, run by `run` (which adds how to read
/// the cluster from the stand-in API server): the agent's pinned tables and the
/// evaluator agree that db admits web by its rule and drops other.
pub fn explain_node_agrees(instance: &str, run: impl Fn(&[&str]) -> std::process::Output) {
    let port = harness::TCP_PORT.to_string();
    for (from, allowed) in [("web", true), ("other", false)] {
        let from = format!("prod/{from}");
        let out = run(&[
            "explain",
            "--node",
            "--instance",
            instance,
            "-o",
            "json",
            "--from",
            &from,
            "--to",
            "prod/db",
            "--port",
            &port,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("explain --node printed no JSON ({e}): {stderr}"));
        let node_json = &json["node"];
        assert_eq!(
            out.status.code(),
            Some(if allowed { 0 } else { 3 }),
            "{stderr} {json:#}"
        );
        assert_eq!(node_json["agrees"], true, "{json:#}");
        let ingress = &node_json["ingress"];
        assert_eq!(ingress["pod"], "prod/db", "{json:#}");
        assert_eq!(
            ingress["verdict"],
            if allowed { "allowed" } else { "dropped" },
            "{json:#}"
        );
        if allowed {
            assert!(
                ingress["rule"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(" spec.ingress[0]")),
                "{json:#}"
            );
        }
    }
}

#[test]
fn flows_follows_a_running_agent_across_a_restart_and_uninstall_removes_its_names() {
    support::require_root_and_bpf();
    let node = Node::up(&[("web", "web"), ("db", "db"), ("other", "other")], &[]);
    create_web_db_other(&node);
    let mut agent = node.start_agent("flows");
    agent.wait_ready(Duration::from_secs(60));
    let instance = node.instance("flows");
    let names_file = FlowPaths::system().names_file(&instance);
    let names = read_names(&names_file)
        .unwrap_or_else(|e| panic!("a ready agent has published its names: {e}"));
    assert_eq!(names.pid, agent.pid(), "the names name their owner");
    assert!(
        names.events_pin.ends_with("maps/EVENTS") && names.events_pin.exists(),
        "the names point at the datapath's pinned ring: {}",
        names.events_pin.display()
    );

    assert_names_other_to_db(&first_drop_from_other(&node, &instance, flows(&instance)));
    explain_node_agrees(&instance, |args| node.run_cli(args));

    // A successor adopts the pins and publishes under its own pid.
    agent.kill9();
    let mut successor = node.start_agent("flows");
    successor.wait_ready(Duration::from_secs(60));
    harness::eventually(
        "the successor publishes its names",
        Duration::from_secs(20),
        || read_names(&names_file).is_ok_and(|n| n.pid == successor.pid()),
    );
    assert_names_other_to_db(&first_drop_from_other(&node, &instance, flows(&instance)));

    let uninstall = Command::new(AGENT)
        .args(["uninstall", "--stop-agent", "--instance", &instance])
        .output()
        .unwrap_or_else(|e| panic!("uninstall: {e}"));
    assert!(uninstall.status.success(), "{uninstall:?}");
    assert!(
        !names_file.exists(),
        "uninstall leaves {} behind",
        names_file.display()
    );
}
