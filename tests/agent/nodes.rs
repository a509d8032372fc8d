//! One `policy-agent run` per lab node, each with its `--node-name`, against one
//! API server: a connection between nodes meets the source node's egress and the
//! destination node's ingress, and policy, pod-label and namespace-label changes
//! reach both; a pod deleted on one node and recreated with the same name on
//! another is enforced with its new address on both.

use std::time::Duration;

use policy_agent::lab::topology::{Layout, Overlay, TopologyKind};
use serde_json::json;

use super::{
    harness::{self, db_from_web, namespace_json, pod_json, policy_json, Node, TCP_PORT},
    support,
};

/// Two nodes, pod traffic between them as `overlay` says.
fn two_nodes(overlay: Overlay) -> Layout {
    Layout {
        kind: TopologyKind::Routed,
        nodes: 2,
        overlay,
    }
}

/// The name of the node `pod` runs on.
fn node_of(node: &Node, pod: &str) -> String {
    node.net
        .node_of(&Node::pod_ref(pod))
        .map(|n| n.name.clone())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn agents_on_each_node_decide_cross_node_connections_and_follow_policy_label_and_namespace_changes()
{
    support::require_root_and_bpf();
    // In pod order, in turn: api and other on node-1, db and web on node-2.
    let pods = [
        ("api", "web"),
        ("db", "db"),
        ("other", "other"),
        ("web", "web"),
    ];
    let node = Node::up_layout(&pods, &[], two_nodes(Overlay::Vxlan));
    assert_eq!(
        ["api", "db", "other", "web"].map(|pod| node_of(&node, pod)),
        ["node-1", "node-2", "node-1", "node-2"]
    );
    node.api
        .create_value(namespace_json(harness::NAMESPACE, &[]));
    for (pod, _) in pods {
        node.create_pod(pod);
    }
    node.api
        .create_value(db_from_web(json!([{"port": TCP_PORT}])));
    let mut agents = [
        node.start_agent_on(0, "many"),
        node.start_agent_on(1, "many"),
    ];
    for agent in &mut agents {
        agent.wait_ready(Duration::from_secs(60));
    }
    node.expect(
        "db (node-2) admits app=web from both nodes",
        &[
            ("api", "db", true),
            ("web", "db", true),
            ("other", "db", false),
        ],
    );
    let dropped = node.stats_on(1, "many").get("drop_policy");
    assert!(dropped > 0, "node-2's agent drops other's connections");

    // A label change on node-1 changes what node-2 admits.
    node.relabel("other", "web");
    node.relabel("api", "api");
    node.expect(
        "relabelled pods on node-1 are known by their new labels on node-2",
        &[
            ("api", "db", false),
            ("other", "db", true),
            ("web", "db", true),
        ],
    );

    // The source node's egress: api may reach nothing, decided on node-1.
    node.api.create_value(policy_json(
        harness::NAMESPACE,
        "web-egress-to-nothing",
        json!({"matchLabels": {"app": "web"}}),
        json!({"policyTypes": ["Egress"]}),
    ));
    node.expect(
        "egress of app=web is denied on both nodes",
        &[("other", "db", false), ("web", "db", false)],
    );
    assert!(
        node.stats_on(0, "many").get("drop_policy") > 0,
        "node-1's agent drops other's egress"
    );
    node.api
        .delete::<k8s_openapi::api::networking::v1::NetworkPolicy>(
            harness::NAMESPACE,
            "web-egress-to-nothing",
        );

    // A namespace label the policy now requires.
    node.api.update_value(policy_json(
        harness::NAMESPACE,
        "db-from-web",
        json!({"matchLabels": {"app": "db"}}),
        json!({
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{
                "namespaceSelector": {"matchLabels": {"team": "blue"}},
                "podSelector": {"matchLabels": {"app": "web"}}
            }]}]
        }),
    ));
    node.expect(
        "without the namespace label nothing is admitted",
        &[("other", "db", false), ("web", "db", false)],
    );
    node.api
        .update_value(namespace_json(harness::NAMESPACE, &[("team", "blue")]));
    node.expect(
        "the namespace label admits app=web from both nodes again",
        &[
            ("other", "db", true),
            ("web", "db", true),
            ("api", "db", false),
        ],
    );
}

#[test]
fn a_pod_recreated_on_another_node_is_enforced_at_its_new_address_on_both_nodes() {
    support::require_root_and_bpf();
    // db runs on node-1, then moves to node-2 (the lab pod `db-moved`, its new
    // sandbox); web and other run on node-2 and node-1.
    let pods = [
        ("db", "db"),
        ("db-moved", "db"),
        ("other", "other"),
        ("web", "web"),
    ];
    let node = Node::up_layout(&pods, &[], two_nodes(Overlay::None));
    assert_eq!(
        ["db", "db-moved", "other", "web"].map(|pod| node_of(&node, pod)),
        ["node-1", "node-2", "node-1", "node-2"]
    );
    node.api
        .create_value(namespace_json(harness::NAMESPACE, &[]));
    for pod in ["db", "other", "web"] {
        node.create_pod(pod);
    }
    // db admits app=web; web may reach app=db only.
    node.api
        .create_value(db_from_web(json!([{"port": TCP_PORT}])));
    node.api.create_value(policy_json(
        harness::NAMESPACE,
        "web-to-db",
        json!({"matchLabels": {"app": "web"}}),
        json!({
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]
        }),
    ));
    let mut agents = [
        node.start_agent_on(0, "move"),
        node.start_agent_on(1, "move"),
    ];
    for agent in &mut agents {
        agent.wait_ready(Duration::from_secs(60));
    }
    node.expect(
        "before the move",
        &[("web", "db", true), ("other", "db", false)],
    );

    // Deleted on node-1, recreated with the same name on node-2 at db-moved's
    // addresses.
    node.api
        .delete::<k8s_openapi::api::core::v1::Pod>(harness::NAMESPACE, "db");
    let mut moved = pod_json("db", "db", "node-2");
    moved["status"] = node.status_with_ips("db-moved");
    node.api.create_value(moved);
    node.expect(
        "after the move: node-2 admits web at db's new address, web's egress (node-2) \
         knows it, and the old address is no app=db for web's egress",
        &[
            ("web", "db-moved", true),
            ("other", "db-moved", false),
            ("web", "db", false),
        ],
    );
}
