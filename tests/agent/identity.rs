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
        agent::AgentProcess,
        forge,
        packet::{self, Mac, RawLink, BROADCAST},
    },
};

/// Where the client listens for what the attacker sends as the victim.
const SPOOF_PORT: u16 = 7100;
/// The pods' IPv4 gateway, on the bridge.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
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
        (packet::mac_of("eth0"), link_local)
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

/// The frames that forge neighbour entries: for each family, the victim's address
/// claimed at the attacker's MAC and the attacker's address at the victim's MAC
/// (so that a node following neighbour entries would swap the two pods' ports).
fn neighbour_frames(node: &Node, attacker: (Mac, Ipv6Addr), victim_mac: Mac) -> Vec<Vec<u8>> {
    let (mac, link_local) = attacker;
    let gateway_mac = in_netns(node.net.node_netns(), || packet::mac_of("pwbr0"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (victim, own) = (v4(node, "victim"), v4(node, "attacker"));
    vec![
        // Gratuitous ARP: the victim's address is at the attacker's MAC.
        forge::arp((mac, BROADCAST), false, (mac, victim), ([0; 6], victim)),
        // A forged ARP reply to the node, and a request to the gateway that makes
        // the node learn the sender.
        forge::arp(
            (mac, gateway_mac),
            true,
            (mac, victim),
            (gateway_mac, GATEWAY),
        ),
        forge::arp((mac, gateway_mac), false, (mac, victim), ([0; 6], GATEWAY)),
        // The swap's other half: the attacker's own address at the victim's MAC.
        forge::arp((mac, BROADCAST), false, (victim_mac, own), ([0; 6], own)),
        // Unsolicited neighbour advertisements (override) for both addresses.
        forge::neighbour_advert(mac, link_local, v6(node, "victim"), mac),
        forge::neighbour_advert(mac, link_local, v6(node, "attacker"), victim_mac),
    ]
}

/// A datagram from the attacker's own address but the victim's MAC: the bridge
/// learns the victim's MAC on the attacker's port (no ARP needed for that).
fn mac_frame(node: &Node, victim_mac: Mac) -> Vec<u8> {
    forge::udp(
        (victim_mac, BROADCAST),
        (IpAddr::V4(v4(node, "attacker")), 7001),
        (IpAddr::V4(Ipv4Addr::BROADCAST), 7001),
        b"from the victim's MAC",
    )
}

fn v4(node: &Node, pod: &str) -> Ipv4Addr {
    match node.pod_ip(pod, Family::Ipv4) {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => panic!("not IPv4"),
    }
}

fn v6(node: &Node, pod: &str) -> Ipv6Addr {
    match node.pod_ip(pod, Family::Ipv6) {
        IpAddr::V6(ip) => ip,
        IpAddr::V4(_) => panic!("not IPv6"),
    }
}

/// The attacker pod's raw socket on its `eth0`, and the pods and agent around it.
struct Attacker<'a> {
    node: &'a Node,
    agent: &'a AgentProcess,
    link: RawLink,
    mac: Mac,
}

impl Attacker<'_> {
    /// Sends `frames` three times (a neighbour entry changes at most once a
    /// second), then makes the agent resolve every pod address again (any change
    /// does: a policy named `name` that selects nothing) and waits for that pass.
    fn forge(&self, frames: &[Vec<u8>], name: &str) {
        let passes = self.agent.passes();
        for _ in 0..3 {
            for frame in frames {
                self.link
                    .send(frame)
                    .unwrap_or_else(|e| panic!("forging: {e}"));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        self.node.api.create_value(policy_json(
            NAMESPACE,
            name,
            json!({"matchLabels": {"app": "nothing"}}),
            json!({"policyTypes": ["Ingress"]}),
        ));
        eventually("a pass after the attack", Duration::from_secs(20), || {
            self.agent.passes() > passes
        });
    }

    /// Sends a datagram from the victim's address to the client in each family;
    /// whether the client received any.
    fn reaches_the_client_as_the_victim(&self) -> bool {
        let client_ns = self.node.pod_netns("client");
        // One dual-stack socket takes both families.
        let listener = in_netns(&client_ns, || {
            let socket = UdpSocket::bind(("::", SPOOF_PORT)).unwrap_or_else(|e| panic!("{e}"));
            socket
                .set_nonblocking(true)
                .unwrap_or_else(|e| panic!("{e}"));
            socket
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let (client_mac, _) = eth0_of(self.node, "client");
        for family in [Family::Ipv4, Family::Ipv6] {
            let frame = forge::udp(
                (self.mac, client_mac),
                (self.node.pod_ip("victim", family), 7000),
                (self.node.pod_ip("client", family), SPOOF_PORT),
                b"as the victim",
            );
            self.link.send(&frame).unwrap_or_else(|e| panic!("{e}"));
        }
        std::thread::sleep(Duration::from_millis(500));
        listener.recv_from(&mut [0u8; 64]).is_ok()
    }

    /// The client and the node send to the victim in both families; the
    /// datagrams of it that reached the attacker's interface.
    fn receives_the_victims_traffic(&self) -> Vec<IpAddr> {
        drop(self.link.received(Duration::ZERO));
        let to_victim = [Family::Ipv4, Family::Ipv6]
            .map(|family| SocketAddr::new(self.node.pod_ip("victim", family), UDP_PORT));
        send_from(&self.node.pod_netns("client"), &to_victim, MARKER);
        send_from(self.node.net.node_netns(), &to_victim, MARKER);
        self.link
            .received(Duration::from_millis(300))
            .iter()
            .filter_map(|frame| forge::udp_destination(frame))
            .filter(|(_, payload)| payload == MARKER)
            .map(|(destination, _)| destination)
            .collect()
    }
}

/// Three pods on a bridge, `victim` admitting `client` only, and the agent, ready;
/// the node and the client have neighbour entries for every pod, as traffic makes
/// them (an agent that took identity from them would need them to start).
fn bridged_pods() -> (Node, AgentProcess) {
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
    let to_pods: Vec<SocketAddr> = ["victim", "attacker", "client"]
        .into_iter()
        .flat_map(|pod| {
            [Family::Ipv4, Family::Ipv6]
                .map(|family| SocketAddr::new(node.pod_ip(pod, family), UDP_PORT))
        })
        .collect();
    send_from(node.net.node_netns(), &to_pods, b"warm up");
    send_from(&node.pod_netns("client"), &to_pods, b"warm up");
    agent.wait_ready(Duration::from_secs(60));
    (node, agent)
}

#[test]
fn a_pod_forging_arp_and_neighbour_adverts_for_its_neighbour_keeps_its_own_identity() {
    support::require_root_and_bpf();
    let (node, agent) = bridged_pods();
    let expected = [("client", "victim", true), ("attacker", "victim", false)];
    node.expect("before the attack", &expected);
    let (mac, link_local) = eth0_of(&node, "attacker");
    let (victim_mac, _) = eth0_of(&node, "victim");
    let link = in_netns(&node.pod_netns("attacker"), || RawLink::open("eth0"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("raw socket in the attacker: {e}"));
    let attacker = Attacker {
        node: &node,
        agent: &agent,
        link,
        mac,
    };
    let before = node.stats("identity");

    // Forged ARP replies, gratuitous ARP and neighbour advertisements.
    attacker.forge(
        &neighbour_frames(&node, (mac, link_local), victim_mac),
        "after-neighbours",
    );
    assert!(
        !attacker.reaches_the_client_as_the_victim(),
        "the client received a datagram the attacker sent as the victim"
    );
    let seen = attacker.receives_the_victims_traffic();
    assert!(
        seen.is_empty(),
        "the attacker received the victim's traffic: {seen:?}"
    );
    // The victim's MAC forged: the bridge moves it to the attacker's port.
    attacker.forge(&[mac_frame(&node, victim_mac)], "after-mac");
    let seen = attacker.receives_the_victims_traffic();
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
    for ns in [node.net.node_netns().to_string(), node.pod_netns("client")] {
        netns::ip_batch(Some(&ns), &["neigh flush all".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    node.expect("after the forged entries are flushed", &expected);
}
