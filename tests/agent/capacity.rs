//! A tenant cannot stop the node: a NetworkPolicy too big for the maps (16,385
//! one-port rules, over the per-policy budget of 4,096 rules) in namespace `prod`
//! fails closed for the pods it selects, and only for them: a policy change in
//! namespace `b` still programs, new pod veths are still attached, also after a
//! restart whose first pass meets the policy again, and `/readyz` stays 200 with
//! the refusal in its detail while a metric counts it.

use std::time::Duration;

use serde_json::{json, Value};

use super::harness::{self, namespace_json, policy_json, Node, TCP_PORT};

/// Rules of `prod/huge`: one more than `RULE_COUNTERS` holds, four times the
/// per-policy budget.
const HUGE_RULES: u16 = 16_385;

/// `prod/huge`: selects `app=web` and would admit `app=db` on every port from 1
/// to `HUGE_RULES` (`TCP_PORT` among them), one rule per port.
fn huge() -> Value {
    let rules: Vec<Value> = (1..=HUGE_RULES)
        .map(|port| {
            json!({
                "from": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                "ports": [{"protocol": "TCP", "port": port}]
            })
        })
        .collect();
    policy_json(
        "prod",
        "huge",
        json!({"matchLabels": {"app": "web"}}),
        json!({"policyTypes": ["Ingress"], "ingress": rules}),
    )
}

/// `b/api`: selects `app=api` in namespace `b` and admits TCP `TCP_PORT` from
/// `app=<app>` pods of namespace `namespace`.
fn api_from(namespace: &str, app: &str) -> Value {
    policy_json(
        "b",
        "api",
        json!({"matchLabels": {"app": "api"}}),
        json!({
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "podSelector": {"matchLabels": {"app": app}}
                }],
                "ports": [{"protocol": "TCP", "port": TCP_PORT}]
            }]
        }),
    )
}

/// What `/readyz` says of the refusal.
const REFUSED: &str = "refused: policy prod/huge: 16,385 rules exceed the per-policy budget \
                       of 4,096; its pods on this node prod/web fail closed";

/// `/readyz` is 200 and names the refusal; `/metrics` counts it.
fn ready_with_the_refusal(agent: &super::support::agent::AgentProcess) {
    let (status, body) = agent.get("/readyz").unwrap_or_else(|| panic!("no /readyz"));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(body.contains(REFUSED), "/readyz lacks the refusal:\n{body}");
    let (_, metrics) = agent
        .get("/metrics")
        .unwrap_or_else(|| panic!("no /metrics"));
    for line in [
        "podwall_policies_refused 1",
        "podwall_policy_refusals_total{resource=\"rules\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "/metrics lacks {line}:\n{metrics}"
        );
    }
}

#[test]
fn a_policy_too_big_for_the_maps_fails_closed_for_its_pods_only_and_the_node_keeps_programming() {
    super::support::require_root_and_bpf();
    let mut node = Node::up(
        &[
            ("web", "web"),
            ("db", "db"),
            ("b/api", "api"),
            ("b/client", "client"),
            ("b/late", "late"),
            ("b/later", "later"),
        ],
        &["b/late", "b/later"],
    );
    node.api.create_value(namespace_json("prod", &[]));
    node.api.create_value(namespace_json("b", &[]));
    for pod in ["web", "db", "b/api", "b/client"] {
        node.create_pod(pod);
    }
    node.create_pod_without_ip("b/late");
    node.create_pod_without_ip("b/later");
    node.api.create_value(harness::db_from_web(
        json!([{"protocol": "TCP", "port": TCP_PORT}]),
    ));
    node.api.create_value(api_from("b", "client"));
    node.api.create_value(huge());
    let mut agent = node.start_agent("capacity");
    agent.wait_ready(Duration::from_secs(120));
    node.expect(
        "prod/huge is refused: web is isolated and none of its rules allow",
        &[
            ("db", "web", false),
            ("web", "db", true),
            ("b/client", "b/api", true),
            ("web", "b/api", false),
        ],
    );
    ready_with_the_refusal(&agent);

    // A policy change in namespace b programs.
    node.api.update_value(api_from("prod", "web"));
    node.expect(
        "b/api now admits prod's web",
        &[("web", "b/api", true), ("b/client", "b/api", false)],
    );
    // A new pod's veth is attached, then the pod gets its own verdicts.
    node.connect(&["b/late"]);
    node.wait_attached_by("capacity", "b/late");
    node.set_pod_ip("b/late");
    node.expect("b/late wired", &[("b/client", "b/late", true)]);

    // Restarted, the agent's first pass meets prod/huge again: it is refused
    // again, the node is ready, and the node keeps programming.
    agent.kill9();
    let mut agent = node.start_agent("capacity");
    agent.wait_ready(Duration::from_secs(120));
    ready_with_the_refusal(&agent);
    node.connect(&["b/later"]);
    node.wait_attached_by("capacity", "b/later");
    node.set_pod_ip("b/later");
    node.api.update_value(api_from("b", "client"));
    node.expect(
        "after the restart",
        &[
            ("db", "web", false),
            ("web", "db", true),
            ("web", "b/api", false),
            ("b/client", "b/api", true),
            ("b/client", "b/later", true),
        ],
    );
    // The policy fixed (one rule): web admits db, nothing is refused any more.
    node.api.update_value(policy_json(
        "prod",
        "huge",
        json!({"matchLabels": {"app": "web"}}),
        json!({
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                "ports": [{"protocol": "TCP", "port": TCP_PORT}]
            }]
        }),
    ));
    node.expect("prod/huge fixed", &[("db", "web", true)]);
    harness::eventually(
        "the refusal leaves /readyz",
        Duration::from_secs(20),
        || matches!(agent.get("/readyz"), Some((200, body)) if body == "ready\n"),
    );
    assert!(agent.terminate(), "policy-agent run exits 0 on SIGTERM");
}
