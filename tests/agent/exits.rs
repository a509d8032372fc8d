//! The agent places the exit classifiers and `node_sockets`: a pod's egress to a
//! Service whose backend runs on another node (a namespace behind the node's
//! uplink) is decided at the uplink, and one whose backend is the node itself at
//! the node's sockets, so a default-deny egress blocks them and an egress rule to
//! the backend allows them; both go on deciding while the agent is down.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use policy_agent::lab::{addresses::NODE_V4, netns, probe::Family, services};
use serde_json::json;

use super::{
    harness::{self, namespace_json, policy_json, Node},
    support::{self, remote::RemoteNode},
};

/// The ClusterIP, its port, and the backend on the other node it leads to.
const CLUSTER_IP: &str = "10.96.0.10";
/// A ClusterIP whose backend is the node itself (a hostNetwork pod).
const HOST_CLUSTER_IP: &str = "10.96.0.11";
const SERVICE_PORT: u16 = 80;
const BACKEND: &str = "10.9.0.20";
const BACKEND_PORT: u16 = 8080;

/// Whether `web` reaches the Service's backend: the handshake completes or is
/// refused (nothing listens there; a refusal is the backend's answer).
fn web_reaches_the_service(node: &Node) -> bool {
    let vip: IpAddr = CLUSTER_IP.parse().unwrap_or_else(|e| panic!("{e}"));
    let to = SocketAddr::new(vip, SERVICE_PORT);
    netns::in_netns(&node.pod_netns("web"), || match TcpStream::connect_timeout(
        &to,
        Duration::from_millis(400),
    ) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    })
    .unwrap_or_else(|e| panic!("enter web's namespace: {e}"))
}

#[test]
fn egress_to_a_service_whose_backend_is_on_another_node_is_decided_at_the_nodes_uplink() {
    support::require_root_and_bpf();
    let node = Node::up(&[("web", "web")], &[]);
    let web = node.pod_ip("web", Family::Ipv4);
    let backend: IpAddr = BACKEND.parse().unwrap_or_else(|e| panic!("{e}"));
    let _far = RemoteNode::up(node.net.node_netns(), &[web], &[backend]);
    services::nft(
        node.net.node_netns(),
        &format!(
            "table ip svc {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n \
               ip daddr {CLUSTER_IP} tcp dport {SERVICE_PORT} dnat to {BACKEND}:{BACKEND_PORT}\n }}\n}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("Service rule: {e}"));
    node.api
        .create_value(namespace_json(harness::NAMESPACE, &[]));
    node.create_pod("web");
    node.api.create_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": harness::NAMESPACE, "name": "far"},
        "spec": {"clusterIP": CLUSTER_IP, "selector": {"app": "far"},
                 "ports": [{"port": SERVICE_PORT, "targetPort": BACKEND_PORT}]},
    }));
    let web_egress = |rest| {
        policy_json(
            harness::NAMESPACE,
            "web-egress",
            json!({"matchLabels": {"app": "web"}}),
            rest,
        )
    };
    node.api
        .create_value(web_egress(json!({"policyTypes": ["Egress"]})));
    let mut agent = node.start_agent("exits");
    agent.wait_ready(Duration::from_secs(60));
    let before = node.stats("exits");
    harness::eventually(
        "default-deny egress blocks the remote backend",
        Duration::from_secs(20),
        || !web_reaches_the_service(&node),
    );
    let after = node.stats("exits");
    assert!(
        after.get("drop_deferred_egress") > before.get("drop_deferred_egress"),
        "{:?}",
        after.growth_since(&before)
    );
    node.api.update_value(web_egress(json!({
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": format!("{BACKEND}/32")}}],
                    "ports": [{"protocol": "TCP", "port": BACKEND_PORT}]}],
    })));
    harness::eventually(
        "an egress rule to the backend allows it",
        Duration::from_secs(20),
        || web_reaches_the_service(&node),
    );
    assert!(node.stats("exits").get("allow_service_egress") > 0);

    // The exit's links are pinned like a pod's: killed, the agent leaves the
    // uplink deciding, and its successor adopts them.
    node.api
        .update_value(web_egress(json!({"policyTypes": ["Egress"]})));
    harness::eventually(
        "default-deny egress blocks the remote backend again",
        Duration::from_secs(20),
        || !web_reaches_the_service(&node),
    );
    agent.kill9();
    for attempt in 0..5 {
        assert!(
            !web_reaches_the_service(&node),
            "attempt {attempt}: with no agent running, the uplink still decides web's egress"
        );
    }
    let mut successor = node.start_agent("exits");
    successor.wait_ready(Duration::from_secs(60));
    node.api.update_value(web_egress(json!({
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": format!("{BACKEND}/32")}}],
                    "ports": [{"protocol": "TCP", "port": BACKEND_PORT}]}],
    })));
    harness::eventually(
        "the successor's exit classifiers follow the next change",
        Duration::from_secs(20),
        || web_reaches_the_service(&node),
    );
    drop(successor);
}

/// Whether `web`'s TCP handshake through `HOST_CLUSTER_IP` to the node's listener
/// completes (a refusal does not count: the node answers a denied one with a reset).
fn web_connects_to_the_node(node: &Node) -> bool {
    let vip: IpAddr = HOST_CLUSTER_IP.parse().unwrap_or_else(|e| panic!("{e}"));
    let to = SocketAddr::new(vip, SERVICE_PORT);
    netns::in_netns(&node.pod_netns("web"), || {
        TcpStream::connect_timeout(&to, Duration::from_millis(400)).is_ok()
    })
    .unwrap_or_else(|e| panic!("enter web's namespace: {e}"))
}

#[test]
fn egress_to_a_service_whose_backend_is_the_node_itself_is_decided_at_the_nodes_sockets() {
    support::require_root_and_bpf();
    let node = Node::up(&[("web", "web")], &[]);
    services::nft(
        node.net.node_netns(),
        &format!(
            "table ip svc {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n \
               ip daddr {HOST_CLUSTER_IP} tcp dport {SERVICE_PORT} dnat to {NODE_V4}:{BACKEND_PORT}\n }}\n}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("Service rule: {e}"));
    let _listener = netns::in_netns(node.net.node_netns(), || {
        std::net::TcpListener::bind((NODE_V4, BACKEND_PORT))
    })
    .unwrap_or_else(|e| panic!("enter the node: {e}"))
    .unwrap_or_else(|e| panic!("listen on the node: {e}"));
    node.api
        .create_value(namespace_json(harness::NAMESPACE, &[]));
    node.create_pod("web");
    node.api.create_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": harness::NAMESPACE, "name": "on-the-node"},
        "spec": {"clusterIP": HOST_CLUSTER_IP, "selector": {"app": "host"},
                 "ports": [{"port": SERVICE_PORT, "targetPort": BACKEND_PORT}]},
    }));
    let web_egress = |rest| {
        policy_json(
            harness::NAMESPACE,
            "web-egress",
            json!({"matchLabels": {"app": "web"}}),
            rest,
        )
    };
    let to_the_node = json!({
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": format!("{NODE_V4}/32")}}],
                    "ports": [{"protocol": "TCP", "port": BACKEND_PORT}]}],
    });
    node.api
        .create_value(web_egress(json!({"policyTypes": ["Egress"]})));
    let mut agent = node.start_agent("sockets");
    agent.wait_ready(Duration::from_secs(60));
    let before = node.stats("sockets");
    harness::eventually(
        "default-deny egress blocks the node as a Service's backend",
        Duration::from_secs(20),
        || !web_connects_to_the_node(&node),
    );
    let after = node.stats("sockets");
    assert!(
        after.get("drop_deferred_egress") > before.get("drop_deferred_egress"),
        "{:?}",
        after.growth_since(&before)
    );
    node.api.update_value(web_egress(to_the_node.clone()));
    harness::eventually(
        "an egress rule to the node's address allows it",
        Duration::from_secs(20),
        || web_connects_to_the_node(&node),
    );
    assert!(node.stats("sockets").get("allow_service_egress") > 0);

    // Killed, the agent leaves `node_sockets` deciding; the successor adopts it.
    node.api
        .update_value(web_egress(json!({"policyTypes": ["Egress"]})));
    harness::eventually(
        "default-deny egress blocks the node again",
        Duration::from_secs(20),
        || !web_connects_to_the_node(&node),
    );
    agent.kill9();
    for attempt in 0..5 {
        assert!(
            !web_connects_to_the_node(&node),
            "attempt {attempt}: with no agent running, the node's sockets still decide web's egress"
        );
    }
    let mut successor = node.start_agent("sockets");
    successor.wait_ready(Duration::from_secs(60));
    node.api.update_value(web_egress(to_the_node));
    harness::eventually(
        "the successor's node_sockets follows the next change",
        Duration::from_secs(20),
        || web_connects_to_the_node(&node),
    );
    drop(successor);
}
