//! A ClusterNetworkPolicy from the API server, enforced by the node agent on real
//! packets, its rules counted by name in `/metrics`: per rule
//! (`podwall_cluster_policy_rule_*`) and under its policy
//! (`podwall_policy_*`, no namespace).

use std::time::Duration;

use serde_json::json;

use super::{
    harness::{self, namespace_json, Node},
    support,
};

/// Admin policy `guard`: `app=db` pods admit `app=web` pods (`web-in`) and deny
/// every other pod (`no-one-else`).
fn guard() -> serde_json::Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "guard"},
        "spec": {
            "tier": "Admin",
            "priority": 10,
            "subject": {"pods": {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"app": "db"}}
            }},
            "ingress": [
                {"name": "web-in", "action": "Accept", "from": [{"pods": {
                    "namespaceSelector": {},
                    "podSelector": {"matchLabels": {"app": "web"}}
                }}]},
                {"name": "no-one-else", "action": "Deny", "from": [{"namespaces": {}}]}
            ]
        }
    })
}

/// The value of the metric line that starts with `series`, if there is one.
fn value(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn a_cluster_policy_from_the_api_server_is_enforced_and_counted_by_rule_name() {
    support::require_root_and_bpf();
    let node = Node::up(&[("web", "web"), ("db", "db"), ("other", "other")], &[]);
    node.api.create_value(namespace_json("prod", &[]));
    for pod in ["web", "db", "other"] {
        node.create_pod(pod);
    }
    node.api.create_value(guard());
    let mut agent = node.start_agent("cnp");
    agent.wait_ready(Duration::from_secs(60));
    node.expect(
        "the Admin policy admits web and denies the rest",
        &[("web", "db", true), ("other", "db", false)],
    );
    let series = [
        r#"podwall_cluster_policy_rule_packets_total{policy="guard",direction="ingress",rule="web-in",verdict="allowed"}"#,
        r#"podwall_cluster_policy_rule_packets_total{policy="guard",direction="ingress",rule="no-one-else",verdict="dropped"}"#,
        r#"podwall_policy_allowed_packets_total{namespace="",policy="guard",direction="ingress"}"#,
        r#"podwall_policy_dropped_packets_total{namespace="",policy="guard",direction="ingress"}"#,
    ];
    let mut last = String::new();
    harness::eventually(
        "every rule's packets in /metrics",
        Duration::from_secs(30),
        || {
            last = agent
                .get("/metrics")
                .map(|(_, body)| body)
                .unwrap_or_default();
            series
                .iter()
                .all(|s| value(&last, s).is_some_and(|packets| packets > 0))
        },
    );
    assert!(agent.terminate(), "policy-agent run exits 0 on SIGTERM");
}
