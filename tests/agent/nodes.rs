//! One `policy-agent run` per lab node, each with its `--node-name`, against one
//! API server: a connection between nodes meets the source node's egress and the
//! destination node's ingress, and policy, pod-label and namespace-label changes
//! reach both, and a node whose agent is killed keeps enforcing until its
//! successor takes over; a pod deleted on one node and recreated with the same
//! name on another is enforced with its new address on both.

use std::time::Duration;

use policy_agent::lab::topology::{Layout, Overlay, TopologyKind};
use serde_json::json;

use super::{
    harness::{self, db_from_web, namespace_json, pod_json, policy_json, Node, TCP_PORT},
    support::{self, agent::AgentProcess},
};

/// Two nodes, pod traffic between them as `overlay` says.
fn two_nodes(overlay: Overlay) -> Layout {
    Layout {
        kind: TopologyKind::Routed,
        nodes: 2,
        overlay,
    }
}

/// Two nodes running `pods`, checked to be placed as `placed` says (node names in
/// pod order), with the pods' namespace, `created` of them and a policy admitting
/// app=web to app=db as API objects.
fn two_nodes_with(
    pods: &[(&str, &str)],
    placed: [&str; 4],
    overlay: Overlay,
    created: &[&str],
) -> Node {
    let node = Node::up_layout(pods, &[], two_nodes(overlay));
    let names: Vec<String> = pods.iter().map(|(pod, _)| node_of(&node, pod)).collect();
    assert_eq!(names, placed, "where the lab placed {pods:?}");
    node.api
        .create_value(namespace_json(harness::NAMESPACE, &[]));
    for pod in created {
        node.create_pod(pod);
    }
    node.api
        .create_value(db_from_web(json!([{"port": TCP_PORT}])));
    node
}

/// One agent per node, tagged `tag`, each ready.
fn agents(node: &Node, tag: &str) -> [AgentProcess; 2] {
    let mut agents = [node.start_agent_on(0, tag), node.start_agent_on(1, tag)];
    for agent in &mut agents {
        agent.wait_ready(Duration::from_secs(60));
    }
    agents
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
    let node = two_nodes_with(
        &pods,
        ["node-1", "node-2", "node-1", "node-2"],
        Overlay::Vxlan,
        &["api", "db", "other", "web"],
    );
    let mut agents = agents(&node, "many");
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

    // Node-2's agent killed: its pinned datapath keeps enforcing; its successor
    // adopts it and follows the next change.
    agents[1].kill9();
    node.expect(
        "node-2 enforces without its agent",
        &[("other", "db", true), ("api", "db", false)],
    );
    let mut successor = node.start_agent_on(1, "many");
    successor.wait_ready(Duration::from_secs(60));
    node.relabel("api", "web");
    node.expect(
        "node-2's new agent admits the relabelled pod from node-1",
        &[("api", "db", true), ("other", "db", true)],
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
    let node = two_nodes_with(
        &pods,
        ["node-1", "node-2", "node-1", "node-2"],
        Overlay::None,
        &["db", "other", "web"],
    );
    // web may reach app=db only.
    node.api.create_value(policy_json(
        harness::NAMESPACE,
        "web-to-db",
        json!({"matchLabels": {"app": "web"}}),
        json!({
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]
        }),
    ));
    let _agents = agents(&node, "move");
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
