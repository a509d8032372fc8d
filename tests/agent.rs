//! `policy-agent run` end to end on one lab node: the real kube client watching the
//! stand-in API server (inside the node namespace), pod veths found through their
//! routes, the pinned datapath enforcing. Objects change and verdicts follow;
//! interrupted watches converge; the agent is killed and restarted under traffic;
//! new pods are isolated before they are known; a tunnel device the node brings up
//! closes its port to pods; the agent runs with only its documented capabilities;
//! identity on a bridge holds against forged neighbour entries
//! (`agent/identity.rs`); the agent coexists with other programs, a runtime's
//! bridge and `uninstall` (`agent/coexistence.rs`); a policy too big for the maps
//! fails closed for its pods only (`agent/capacity.rs`); a ClusterNetworkPolicy
//! is enforced and counted by rule name (`agent/cluster_policies.rs`); 10,000 idle connections
//! to its HTTP endpoint stop nothing (`agent/hostile.rs`); a Service egress to a
//! backend on another node is decided at the node's uplink (`agent/exits.rs`);
//! the programs another datapath version left are removed once it is ready
//! (`agent/versions.rs`); `policy-agent flows` follows the agent's verdicts (`agent/flows.rs`); the
//! image `cargo xtask image` builds runs under podman as the DaemonSet says
//! (`agent/image.rs`).

mod support;

#[path = "agent/capacity.rs"]
mod capacity;
#[path = "agent/cluster_policies.rs"]
mod cluster_policies;
#[path = "agent/coexistence.rs"]
mod coexistence;
#[path = "agent/exits.rs"]
mod exits;
#[path = "agent/flows.rs"]
mod flows;
#[path = "agent/harness.rs"]
mod harness;
#[path = "agent/hostile.rs"]
mod hostile;
#[path = "agent/identity.rs"]
mod identity;
#[path = "agent/image.rs"]
mod image;
#[path = "agent/nodes.rs"]
mod nodes;
#[path = "agent/restarts.rs"]
mod restarts;
#[path = "agent/versions.rs"]
mod versions;

use std::time::Duration;

use harness::{namespace_json, policy_json, Node};
use policy_agent::{
    agent::REQUIRED_CAPABILITIES,
    lab::{
        netns,
        probe::{Family, ProbeSpec},
    },
    model::{ObjectRef, Protocol},
};
use serde_json::json;

/// `db` in `prod` admits TCP 5432 from `app=web` pods only.
fn db_from_web() -> serde_json::Value {
    harness::db_from_web(json!([{"protocol": "TCP", "port": harness::TCP_PORT}]))
}

/// `prod` with `web`, `db` and `other` in it, and `db_from_web`, as API objects.
fn create_web_db_other(node: &Node) {
    node.api.create_value(namespace_json("prod", &[]));
    for pod in ["web", "db", "other"] {
        node.create_pod(pod);
    }
    node.api.create_value(db_from_web());
}

#[test]
fn api_server_changes_reach_the_kernel_and_interrupted_watches_converge() {
    support::require_root_and_bpf();
    let node = Node::up(&[("web", "web"), ("db", "db"), ("other", "other")], &[]);
    node.api
        .create_value(namespace_json("prod", &[("team", "a")]));
    for pod in ["web", "db", "other"] {
        node.create_pod(pod);
    }
    node.api.create_value(db_from_web());
    let mut agent = node.start_agent("api");
    agent.wait_ready(Duration::from_secs(60));

    node.expect(
        "the policy admits web only",
        &[
            ("web", "db", true),
            ("other", "db", false),
            ("db", "web", true),
        ],
    );

    // A label change moves `other` into the policy's peers.
    node.relabel("other", "web");
    node.expect("other relabelled app=web", &[("other", "db", true)]);

    // History lost while disconnected: the next watch gets 410 Gone and relists,
    // and a change made meanwhile still arrives.
    node.api.compact();
    node.api.drop_watches();
    node.relabel("other", "other");
    node.expect(
        "relabel seen after a relist",
        &[("other", "db", false), ("web", "db", true)],
    );

    // A namespace label the policy now requires.
    node.api.update_value(policy_json(
        "prod",
        "db-from-web",
        json!({"matchLabels": {"app": "db"}}),
        json!({
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]
        }),
    ));
    node.expect("policy needs team=b", &[("web", "db", false)]);
    node.api
        .update_value(namespace_json("prod", &[("team", "b")]));
    node.expect(
        "namespace labelled team=b",
        &[("web", "db", true), ("other", "db", true)],
    );

    node.api
        .update_value(namespace_json("prod", &[("team", "c")]));
    node.expect("namespace relabelled team=c", &[("web", "db", false)]);

    // The API server goes away: enforcement stays, readiness says stale. The
    // policy is deleted meanwhile; that arrives once the server is back.
    node.api.set_unavailable(true);
    harness::eventually(
        "readiness reports the stale source",
        Duration::from_secs(20),
        || matches!(agent.get("/readyz"), Some((503, body)) if body.contains("stale")),
    );
    node.api
        .delete::<k8s_openapi::api::networking::v1::NetworkPolicy>("prod", "db-from-web");
    node.expect(
        "last state kept while the API server is gone",
        &[("web", "db", false), ("db", "web", true)],
    );
    node.api.set_unavailable(false);
    harness::eventually(
        "ready again after the API server is back",
        Duration::from_secs(60),
        || matches!(agent.get("/readyz"), Some((200, _))),
    );
    node.expect(
        "policy deleted while down is gone after recovery",
        &[("web", "db", true), ("db", "web", true)],
    );

    let (status, metrics) = agent
        .get("/metrics")
        .unwrap_or_else(|| panic!("no /metrics"));
    assert_eq!(status, 200);
    for line in [
        "podwall_endpoints 3",
        "podwall_ready 1",
        "podwall_source_stale 0",
        "podwall_map_entries{map=\"POLICY\"}",
        "podwall_map_capacity{map=\"POLICY\"}",
        "podwall_errors_total",
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");
    }
    for histogram in [
        "podwall_sync_duration_seconds_count",
        "podwall_programming_latency_seconds_count",
    ] {
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(histogram)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("/metrics lacks {histogram}:\n{metrics}"));
        assert!(count > 0, "{histogram} is 0: nothing was timed");
    }
    // A second agent on the same instance would write the first one's banks.
    let mut second = node.start_agent("api");
    harness::eventually(
        "a second agent on the instance exits",
        Duration::from_secs(20),
        || !second.running(),
    );
    assert!(
        second
            .log_tail()
            .contains("another policy-agent runs instance"),
        "the second agent says why it stopped:\n{}",
        second.log_tail()
    );
    assert!(agent.terminate(), "policy-agent run exits 0 on SIGTERM");
}

#[test]
fn a_new_pod_is_isolated_from_its_first_packet_until_the_agent_knows_it() {
    support::require_root_and_bpf();
    // `late-db` and `late-open` are scheduled here but have no veth yet.
    let mut node = Node::up(
        &[
            ("web", "web"),
            ("other", "other"),
            ("late-db", "db"),
            ("late-open", "open"),
        ],
        &["late-db", "late-open"],
    );
    node.api.create_value(namespace_json("prod", &[]));
    for pod in ["web", "other"] {
        node.create_pod(pod);
    }
    node.create_pod_without_ip("late-db");
    node.create_pod_without_ip("late-open");
    node.api.create_value(db_from_web());
    let mut agent = node.start_agent("late");
    agent.wait_ready(Duration::from_secs(60));

    // The CNI wires both pods; the agent attaches to their veths at once.
    node.connect(&["late-db", "late-open"]);
    for pod in ["late-db", "late-open"] {
        node.wait_attached(pod);
    }
    // Before the API server says which pod each veth is: a veth that may belong
    // to a pod a policy selects for ingress is isolated for ingress...
    node.expect(
        "pending veths before the pods' addresses are known",
        &[
            ("web", "late-db", false),
            ("other", "late-db", false),
            ("web", "late-open", false),
            // Its own packets are dropped too: no address is known as its yet
            // (source validation), whatever policies say.
            ("late-db", "web", false),
        ],
    );
    // ... and once the addresses arrive, each pod gets its own verdicts.
    node.set_pod_ip("late-db");
    node.set_pod_ip("late-open");
    node.expect(
        "pods known",
        &[
            ("web", "late-db", true),
            ("other", "late-db", false),
            ("other", "late-open", true),
            ("late-db", "web", true),
        ],
    );
    drop(agent);
}

#[test]
fn the_agent_enforces_with_only_its_documented_capabilities() {
    support::require_root_and_bpf();
    let node = Node::up(&[("web", "web"), ("db", "db"), ("other", "other")], &[]);
    create_web_db_other(&node);
    // Root's capabilities are capped by the bounding set at exec: keep only the
    // documented ones (as the DaemonSet's `drop: [ALL]` + `add:` does).
    let keep: Vec<String> = REQUIRED_CAPABILITIES
        .iter()
        .map(|cap| format!("+{}", cap.to_ascii_lowercase()))
        .collect();
    let bounding = format!("-all,{}", keep.join(","));
    let mut agent = node.start_agent_with("caps", |command| {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        *command = std::process::Command::new("setpriv");
        command
            .args(["--bounding-set", &bounding, "--inh-caps", &bounding])
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(std::process::Stdio::null());
    });
    agent.wait_ready(Duration::from_secs(60));
    let effective = agent.effective_capabilities();
    let wanted: u64 = REQUIRED_CAPABILITIES
        .iter()
        .map(|cap| 1u64 << capability_number(cap))
        .sum();
    assert_eq!(
        effective, wanted,
        "the agent runs with exactly {REQUIRED_CAPABILITIES:?} (CapEff {effective:#x})"
    );
    node.expect(
        "enforcing with reduced capabilities",
        &[("web", "db", true), ("other", "db", false)],
    );
    // Finding a program ahead of podwall's needs no more than these either.
    let db_if = node
        .net
        .host_interface(&policy_agent::model::ObjectRef::new(
            harness::NAMESPACE,
            "db",
        ))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let mut other = coexistence::other_agent();
    coexistence::attach_other(
        &mut other,
        node.net.node_netns(),
        &db_if,
        aya::programs::LinkOrder::first(),
    );
    harness::eventually(
        "the program ahead is reported",
        Duration::from_secs(20),
        || {
            agent
                .get("/readyz")
                .is_some_and(|(_, body)| body.contains(&format!("ahead: {db_if} (ifindex ")))
        },
    );
    let (_, metrics) = agent
        .get("/metrics")
        .unwrap_or_else(|| panic!("no /metrics"));
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("podwall_errors_total") && !l.ends_with(" 0"))
        .collect();
    assert!(
        errors.is_empty(),
        "errors with reduced capabilities: {errors:?}"
    );
}

/// The kernel's number of a capability (linux/capability.h).
fn capability_number(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "SYS_ADMIN" => 21,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other} is not in this test's table"),
    }
}

#[test]
fn a_tunnel_device_the_node_brings_up_closes_its_port_to_pods_unless_their_namespace_allows_it() {
    support::require_root_and_bpf();
    let node = Node::up(&[("web", "web"), ("db", "db")], &[]);
    node.api.create_value(namespace_json("prod", &[]));
    for pod in ["web", "db"] {
        node.create_pod(pod);
    }
    let mut agent = node.start_agent("tunnels");
    agent.wait_ready(Duration::from_secs(60));
    let udp_to_db = |reached: bool, what: &str| {
        let spec = ProbeSpec {
            from: ObjectRef::new(harness::NAMESPACE, "web"),
            to: ObjectRef::new(harness::NAMESPACE, "db"),
            port: harness::UDP_PORT,
            protocol: Protocol::Udp,
        };
        harness::eventually(what, Duration::from_secs(20), || {
            let results = node
                .net
                .probe(
                    std::slice::from_ref(&spec),
                    Family::Ipv4,
                    Duration::from_millis(300),
                )
                .unwrap_or_else(|e| panic!("probe: {e}"));
            results.first().is_some_and(|r| r.allowed == reached)
        });
    };
    udp_to_db(true, "UDP between pods without any policy");
    // The node brings up a vxlan device receiving on the port the pods echo on:
    // the agent sees the link appear and closes that port to pods.
    netns::ip_batch(
        Some(node.net.node_netns()),
        &[format!(
            "link add vx0 type vxlan id 42 dstport {}",
            harness::UDP_PORT
        )],
    )
    .unwrap_or_else(|e| panic!("vxlan device: {e}"));
    udp_to_db(false, "UDP to the port of the node's new tunnel device");
    // The namespace allows tunnels: policy (here none) decides again.
    let mut namespace = namespace_json("prod", &[]);
    namespace["metadata"]["annotations"] = json!({"podwall.io/allow-tunnels": "true"});
    node.api.update_value(namespace);
    udp_to_db(
        true,
        "UDP from a namespace annotated podwall.io/allow-tunnels",
    );
    drop(agent);
}
