//! Identity on a bridge (the lab's bridge topology, as the bridge CNI and flannel
//! wire pods): a pod that forges ARP replies, gratuitous ARP and unsolicited
//! neighbour advertisements for its neighbour's address keeps its own identity.
//! It cannot send as the other pod, and traffic for the other pod that the forged
//! entries steer to its port is dropped there, never delivered.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use policy_agent::lab::{netns, netns::in_netns, probe::Family, topology::TopologyKind};
use serde_json::json;

use super::{
    harness::{eventually, namespace_json, policy_json, Node, NAMESPACE, UDP_PORT},
    support::{
        self,
        forge::{self, Mac, RawLink, BROADCAST},
    },
};

/// Where the client listens for what the attacker sends as the victim.
const SPOOF_PORT: u16 = 7100;
/// Marks the datagrams sent to the victim while the attacker listens.
const MARKER: &[u8] = b"for the victim only";

/// `victim` (app=web) admits `client` only, on both ports.
fn web_from_client() -> serde_json::Value {
    policy_json(
        NAMESPACE,
        "web-from-client",
        json!({"matchLabels": {"app": "web"}}),
        json!({
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]
        }),
    )
}

/// A pod's MAC and IPv6 link-local address on its `eth0`.
fn eth0_of(node: &Node, pod: &str) -> (Mac, Ipv6Addr) {
    in_netns(&node.pod_netns(pod), || {
        let link_local = nix::ifaddrs::getifaddrs()
            .unwrap_or_else(|e| panic!("{e}"))
            .filter(|entry| entry.interface_name == "eth0")
            .filter_map(|entry| entry.address?.as_sockaddr_in6().map(|a| a.ip()))
            .find(|ip| ip.segments()[0] == 0xfe80)
            .unwrap_or_else(|| panic!("no link-local address on {pod}'s eth0"));
        (forge::mac_of("eth0"), link_local)
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Sends one UDP datagram with `payload` from network namespace `netns` to
/// each of `targets` (which makes the sender resolve them, as traffic does).
fn send_from(netns: &str, targets: &[SocketAddr], payload: &[u8]) {
    in_netns(netns, || {
        for target in targets {
            let any: SocketAddr = match target {
                SocketAddr::V4(_) => "0.0.0.0:0".parse(),
                SocketAddr::V6(_) => "[::]:0".parse(),
            }
            .unwrap_or_else(|e| panic!("{e}"));
            let socket = UdpSocket::bind(any).unwrap_or_else(|e| panic!("{e}"));
            socket
                .send_to(payload, target)
                .unwrap_or_else(|e| panic!("send to {target}: {e}"));
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(200));
}

/// Every frame the attacker forges: for each family, its neighbour's address
/// claimed at its own MAC and its own address at its neighbour's MAC (so that
/// a node following neighbour entries would swap the two pods' ports).
fn forged_frames(
    node: &Node,
    attacker: (Mac, Ipv6Addr),
    victim_mac: Mac,
    gateway: (Mac, Ipv4Addr),
) -> Vec<Vec<u8>> {
    let v4 = |pod| match node.pod_ip(pod, Family::Ipv4) {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => panic!("not IPv4"),
    };
    let v6 = |pod| match node.pod_ip(pod, Family::Ipv6) {
        IpAddr::V6(ip) => ip,
        IpAddr::V4(_) => panic!("not IPv6"),
    };
    let (mac, link_local) = attacker;
    let (gateway_mac, gateway_ip) = (gateway.0, gateway.1);
    vec![
        // Gratuitous ARP: the victim's address is at the attacker's MAC.
        forge::arp(
            (mac, BROADCAST),
            false,
            (mac, v4("victim")),
            ([0; 6], v4("victim")),
        ),
        // A forged ARP reply to the node, and a request to the gateway that makes
        // the node learn the sender.
        forge::arp(
            (mac, gateway_mac),
            true,
            (mac, v4("victim")),
            (gateway_mac, gateway_ip),
        ),
        forge::arp(
            (mac, gateway_mac),
            false,
            (mac, v4("victim")),
            ([0; 6], gateway_ip),
        ),
        // The swap's other half: the attacker's own address at the victim's MAC.
        forge::arp(
            (mac, BROADCAST),
            false,
            (victim_mac, v4("attacker")),
            ([0; 6], v4("attacker")),
        ),
        // Unsolicited neighbour advertisements (override) for both addresses.
        forge::neighbour_advert(mac, link_local, v6("victim"), mac),
        forge::neighbour_advert(mac, link_local, v6("attacker"), victim_mac),
    ]
}

#[test]
fn a_pod_forging_arp_and_neighbour_adverts_for_its_neighbour_keeps_its_own_identity() {
    support::require_root_and_bpf();
    let node = Node::up_with(
        &[
            ("victim", "web"),
            ("attacker", "attacker"),
            ("client", "client"),
        ],
        &[],
        TopologyKind::Bridge,
    );
    node.api.create_value(namespace_json(NAMESPACE, &[]));
    for pod in ["victim", "attacker", "client"] {
        node.create_pod(pod);
    }
    node.api.create_value(web_from_client());
    let mut agent = node.start_agent("identity");
    let address = |pod, family, port| SocketAddr::new(node.pod_ip(pod, family), port);
    let families = [Family::Ipv4, Family::Ipv6];
    let to_pods: Vec<SocketAddr> = ["victim", "attacker", "client"]
        .into_iter()
        .flat_map(|pod| families.map(|family| address(pod, family, UDP_PORT)))
        .collect();
    // The node and the client have neighbour entries for both pods, as traffic
    // makes them (an agent that took identity from them would need them to start).
    send_from(node.net.node_netns(), &to_pods, b"warm up");
    send_from(&node.pod_netns("client"), &to_pods, b"warm up");
    agent.wait_ready(Duration::from_secs(60));
    node.expect(
        "before the attack",
        &[("client", "victim", true), ("attacker", "victim", false)],
    );

    let attacker = eth0_of(&node, "attacker");
    let (victim_mac, _) = eth0_of(&node, "victim");
    let gateway = in_netns(node.net.node_netns(), || forge::mac_of("pwbr0"))
        .unwrap_or_else(|e| panic!("{e}"));
    let frames = forged_frames(
        &node,
        attacker,
        victim_mac,
        (gateway, Ipv4Addr::new(10, 244, 0, 1)),
    );
    let attacker_ns = node.pod_netns("attacker");
    let link = in_netns(&attacker_ns, || RawLink::open("eth0"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("raw socket in the attacker: {e}"));
    let passes = agent.passes();
    for _ in 0..3 {
        for frame in &frames {
            link.send(frame).unwrap_or_else(|e| panic!("forging: {e}"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Any change makes the agent resolve every pod address again.
    node.api.create_value(policy_json(
        NAMESPACE,
        "selects-nothing",
        json!({"matchLabels": {"app": "nothing"}}),
        json!({"policyTypes": ["Ingress"]}),
    ));
    eventually("a pass after the attack", Duration::from_secs(20), || {
        agent.passes() > passes
    });
    let before = node.stats("identity");

    // The attacker cannot send as the victim, in either family.
    let client_ns = node.pod_netns("client");
    // One dual-stack socket takes both families.
    let listener = in_netns(&client_ns, || {
        let socket = UdpSocket::bind(("::", SPOOF_PORT)).unwrap_or_else(|e| panic!("{e}"));
        socket
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        socket
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (client_mac, _) = eth0_of(&node, "client");
    for family in families {
        let frame = forge::udp(
            (attacker.0, client_mac),
            (node.pod_ip("victim", family), 7000),
            (node.pod_ip("client", family), SPOOF_PORT),
            b"as the victim",
        );
        link.send(&frame).unwrap_or_else(|e| panic!("{e}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut buffer = [0u8; 64];
    assert!(
        listener.recv_from(&mut buffer).is_err(),
        "the client received a datagram the attacker sent as the victim"
    );

    // Traffic for the victim, which the forged entries steer to the attacker's
    // port, is never delivered there.
    let drained = link.received(Duration::ZERO);
    drop(drained);
    let to_victim = families.map(|family| address("victim", family, UDP_PORT));
    send_from(&client_ns, &to_victim, MARKER);
    send_from(node.net.node_netns(), &to_victim, MARKER);
    let seen: Vec<(IpAddr, Vec<u8>)> = link
        .received(Duration::from_millis(300))
        .iter()
        .filter_map(|frame| forge::udp_destination(frame))
        .filter(|(_, payload)| payload == MARKER)
        .collect();
    assert!(
        seen.is_empty(),
        "the attacker received the victim's traffic: {seen:?}"
    );

    let grown = node.stats("identity").growth_since(&before);
    let grew = |name: &str| grown.iter().any(|(n, by)| *n == name && *by > 0);
    assert!(
        grew("drop_spoofed_source"),
        "counters that moved: {grown:?}"
    );
    assert!(grew("drop_misdelivered"), "counters that moved: {grown:?}");
    let (_, ready) = agent.get("/readyz").unwrap_or_else(|| panic!("no /readyz"));
    assert!(
        ready.contains("identity: pod prod/victim: the node's neighbour entry for"),
        "the forged entries are reported:\n{ready}"
    );

    // Once the forged entries are gone, the victim is itself again.
    for ns in [node.net.node_netns().to_string(), client_ns] {
        netns::ip_batch(Some(&ns), &["neigh flush all".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    node.expect(
        "after the forged entries are flushed",
        &[("client", "victim", true), ("attacker", "victim", false)],
    );
}
