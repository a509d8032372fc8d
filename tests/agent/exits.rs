//! The agent places the exit classifiers and `node_sockets`: a pod's egress to a
//! Service whose backend runs on another node (a namespace behind the node's
//! uplink) is decided at the uplink, and one whose backend is the node itself at
//! the node's sockets, so a default-deny egress blocks them and an egress rule to
//! the backend allows them; both go on deciding while the agent is down.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use policy_agent::lab::{addresses::NODE_V4, netns, probe::Family, services};
use serde_json::{json, Value};

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
const WAIT: Duration = Duration::from_secs(20);

/// Whether `web`'s TCP connection through `vip` gets the backend's answer: the
/// handshake completes, or (with `refusal_answers`, where nothing listens) is
/// refused by the backend.
fn web_reaches(node: &Node, vip: &str, refusal_answers: bool) -> bool {
    let vip: IpAddr = vip.parse().unwrap_or_else(|e| panic!("{e}"));
    let to = SocketAddr::new(vip, SERVICE_PORT);
    netns::in_netns(&node.pod_netns("web"), || match TcpStream::connect_timeout(
        &to,
        Duration::from_millis(400),
    ) {
        Ok(_) => true,
        Err(e) => refusal_answers && e.kind() == std::io::ErrorKind::ConnectionRefused,
    })
    .unwrap_or_else(|e| panic!("enter web's namespace: {e}"))
}

/// The node with `web`, a Service at `vip` translated to `backend` (an nftables
/// rule, as kube-proxy makes it, and the API object), and web's egress denied.
fn web_and_a_service(vip: &str, backend: IpAddr) -> Node {
    let node = Node::up(&[("web", "web")], &[]);
    services::nft(
        node.net.node_netns(),
        &format!(
            "table ip svc {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n \
               ip daddr {vip} tcp dport {SERVICE_PORT} dnat to {backend}:{BACKEND_PORT}\n }}\n}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("Service rule: {e}"));
    node.api
        .create_value(namespace_json(harness::NAMESPACE, &[]));
    node.create_pod("web");
    node.api.create_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": harness::NAMESPACE, "name": "backend"},
        "spec": {"clusterIP": vip, "selector": {"app": "backend"},
                 "ports": [{"port": SERVICE_PORT, "targetPort": BACKEND_PORT}]},
    }));
    node.api.create_value(web_egress(None));
    node
}

/// web's egress policy: default-deny, or with a rule to `to`/32 on the backend port.
fn web_egress(to: Option<IpAddr>) -> Value {
    let rest = match to {
        None => json!({"policyTypes": ["Egress"]}),
        Some(to) => json!({
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": format!("{to}/32")}}],
                        "ports": [{"protocol": "TCP", "port": BACKEND_PORT}]}],
        }),
    };
    policy_json(
        harness::NAMESPACE,
        "web-egress",
        json!({"matchLabels": {"app": "web"}}),
        rest,
    )
}

/// What both tests show with an agent tagged `tag`, where web reaches the
/// backend at `backend` when `reaches` says so, `deciding` naming the hook: the
/// default-deny blocks it (counted as `drop_deferred_egress`), a rule to the
/// backend allows it (`allow_service_egress`); killed, the agent leaves the hook
/// blocking it again, and a successor follows the next change.
fn decided_and_kept_without_the_agent(
    node: &Node,
    tag: &str,
    backend: IpAddr,
    deciding: &str,
    reaches: impl Fn(&Node) -> bool,
) {
    let mut agent = node.start_agent(tag);
    agent.wait_ready(Duration::from_secs(60));
    let before = node.stats(tag);
    harness::eventually("default-deny egress blocks the backend", WAIT, || {
        !reaches(node)
    });
    let after = node.stats(tag);
    assert!(
        after.get("drop_deferred_egress") > before.get("drop_deferred_egress"),
        "{:?}",
        after.growth_since(&before)
    );
    node.api.update_value(web_egress(Some(backend)));
    harness::eventually("an egress rule to the backend allows it", WAIT, || {
        reaches(node)
    });
    assert!(node.stats(tag).get("allow_service_egress") > 0);

    node.api.update_value(web_egress(None));
    harness::eventually("default-deny egress blocks it again", WAIT, || {
        !reaches(node)
    });
    agent.kill9();
    for attempt in 0..5 {
        assert!(
            !reaches(node),
            "attempt {attempt}: with no agent running, {deciding} still decides web's egress"
        );
    }
    let mut successor = node.start_agent(tag);
    successor.wait_ready(Duration::from_secs(60));
    node.api.update_value(web_egress(Some(backend)));
    harness::eventually(
        &format!("the successor's {deciding} follows the next change"),
        WAIT,
        || reaches(node),
    );
}

#[test]
fn egress_to_a_service_whose_backend_is_on_another_node_is_decided_at_the_nodes_uplink() {
    support::require_root_and_bpf();
    let backend: IpAddr = BACKEND.parse().unwrap_or_else(|e| panic!("{e}"));
    let node = web_and_a_service(CLUSTER_IP, backend);
    let web = node.pod_ip("web", Family::Ipv4);
    let _far = RemoteNode::up(node.net.node_netns(), &[web], &[backend]);
    // Nothing listens on the remote backend: its refusal is its answer.
    decided_and_kept_without_the_agent(&node, "exits", backend, "the uplink", |node| {
        web_reaches(node, CLUSTER_IP, true)
    });
}

#[test]
fn egress_to_a_service_whose_backend_is_the_node_itself_is_decided_at_the_nodes_sockets() {
    support::require_root_and_bpf();
    let node_address = IpAddr::V4(NODE_V4);
    let node = web_and_a_service(HOST_CLUSTER_IP, node_address);
    let _listener = netns::in_netns(node.net.node_netns(), || {
        TcpListener::bind((NODE_V4, BACKEND_PORT))
    })
    .unwrap_or_else(|e| panic!("enter the node: {e}"))
    .unwrap_or_else(|e| panic!("listen on the node: {e}"));
    // A denied connection is answered with a reset: only a handshake counts.
    decided_and_kept_without_the_agent(&node, "sockets", node_address, "node_sockets", |node| {
        web_reaches(node, HOST_CLUSTER_IP, false)
    });
}
