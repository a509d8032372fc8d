//! What a pod crafts to get past its policy, on real veths: each attack is sent
//! from inside the pod's namespace, nothing arrives where it was aimed, and a drop
//! counter with a named reason moves. Frames behind VLAN tags (the kernel strips
//! VLAN id 0 tags after TC and routes what they carried), ARP that claims another
//! pod's address, VXLAN to a tunnel device on the node, an IPv6 extension chain
//! longer than the walk, a Service that names another pod's address; and the ARP
//! pods and the node need, which must keep working. `bypass_rows.rs` has the same rules as
//! single-frame rows, with the tunnels this kernel cannot carry.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
    time::Duration,
};

use policy_agent::{
    lab::netns,
    policy::tables::{Direction, PeerEntry},
};

use super::{
    addr,
    frames::{self, Ext, TCP, UDP},
    net::{Net, HOST_MAC_BYTES},
    probe, support,
    support::packet::{internet_checksum, send_frames, transport_checksum},
    tables::Tables,
};

/// The node address tunnel devices and ARP targets use.
const NODE_V4: &str = "10.99.0.1";
const BROADCAST: [u8; 6] = [0xff; 6];
const ARP_REQUEST: u8 = 1;
const ARP_REPLY: u8 = 2;

/// An Ethernet frame from MAC `source` to `dest` carrying an IPv4/UDP datagram
/// `from -> to:port` (from port `sport`) with `payload`: a valid header checksum,
/// no UDP checksum (IPv4 allows none), as a packet socket or a tunnel carries it.
fn udp_frame(
    (dest, source): ([u8; 6], [u8; 6]),
    (from, to): (Ipv4Addr, Ipv4Addr),
    (sport, port): (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let length = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    let l4 = [
        &sport.to_be_bytes()[..],
        &port.to_be_bytes(),
        &length.to_be_bytes(),
        &[0, 0],
        payload,
    ]
    .concat();
    let mut frame = frames::ipv4(from, to, UDP, 0, &l4);
    frame[..6].copy_from_slice(&dest);
    frame[6..12].copy_from_slice(&source);
    let checksum = internet_checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&checksum.to_be_bytes());
    frame
}

/// `ip neigh show to <ip>` in namespace `netns`: every neighbour entry for `ip`.
fn neighbours(netns: &str, ip: Ipv4Addr) -> String {
    let output = Command::new("ip")
        .args(["-n", netns, "neigh", "show", "to", &ip.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("ip neigh show: {e}"));
    assert!(output.status.success(), "ip neigh show in {netns} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sysctls(netns: &str, pairs: &[(&str, &str)]) {
    for (key, value) in pairs {
        netns::sysctl(netns, key, value).unwrap_or_else(|e| panic!("{netns}: {e}"));
    }
}

fn node_lines(net: &Net, lines: &[String]) {
    netns::ip_batch(Some(&net.node), lines).unwrap_or_else(|e| panic!("node: {e}"));
}

/// How much counter `name` grew between two reads.
fn grew(net: &mut Net, before: &policy_agent::dataplane::Stats, name: &str) -> u64 {
    net.stats().get(name) - before.get(name)
}

#[test]
fn a_pod_cannot_send_past_its_egress_policy_behind_vlan_tags() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("receiver", "10.1.0.10", "fd00:1::10"),
        ("sender", "10.3.0.6", "fd00:3::6"),
    ]);
    let (sender, receiver) = (net.pod("sender"), net.pod("receiver"));
    let (sender_ns, macs, ips) = (
        sender.netns.clone(),
        (HOST_MAC_BYTES, sender.mac),
        (sender.v4, receiver.v4),
    );
    let listener = probe::udp_listener(&receiver.netns, IpAddr::V4(receiver.v4), 7000);
    // Control: this sender's frame arrives untagged while its egress is open.
    net.apply(&Tables::new(&net).build());
    let control = udp_frame(macs, ips, (42000, 7000), b"untagged");
    send_frames(&sender_ns, "eth0", &[control]);
    assert!(probe::receives(&listener, b"untagged"), "the control frame");

    net.apply(&Tables::new(&net).isolate("sender", false, true).build());
    for (i, (what, tpids)) in [
        ("two 802.1Q tags with VLAN id 0", &[0x8100, 0x8100][..]),
        ("an 802.1ad tag, then an 802.1Q tag", &[0x88a8, 0x8100]),
        ("three tags", &[0x88a8, 0x8100, 0x8100]),
        ("one 802.1Q tag", &[0x8100]),
    ]
    .into_iter()
    .enumerate()
    {
        let payload = format!("behind {what}");
        let sport = 42001 + i as u16;
        let frame = udp_frame(macs, ips, (sport, 7000), payload.as_bytes());
        let before = net.stats();
        send_frames(&sender_ns, "eth0", &[frames::tagged(frame, tpids)]);
        assert!(
            !probe::receives(&listener, payload.as_bytes()),
            "a frame behind {what} was delivered past a default-deny egress"
        );
        assert!(
            grew(&mut net, &before, "drop_vlan") >= 1,
            "{what}: {:?}",
            net.stats()
        );
    }
}

#[test]
fn a_pod_claiming_another_pods_address_in_arp_is_dropped_and_the_node_learns_nothing() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("victim", "10.2.0.5", "fd00:2::5"),
        ("spoofer", "10.3.0.6", "fd00:3::6"),
    ]);
    net.add_node_addresses(&[addr(NODE_V4)]);
    // The node learns from unsolicited ARP and filters no reverse path, so each
    // frame below would put the victim's address on the spoofer's veth.
    let spoofer_veth = format!("net/ipv4/conf/{}/rp_filter", net.pod("spoofer").host);
    sysctls(
        &net.node,
        &[
            ("net/ipv4/conf/all/arp_accept", "1"),
            ("net/ipv4/conf/all/rp_filter", "0"),
            (&spoofer_veth, "0"),
        ],
    );
    // Neither pod is isolated: ARP is checked whatever policy says.
    net.apply(&Tables::new(&net).build());
    let (victim, node) = (
        net.pod("victim").v4,
        NODE_V4.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
    );
    let spoofer = net.pod("spoofer");
    let (spoofer_ns, mac) = (spoofer.netns.clone(), spoofer.mac);
    let claims = [
        frames::arp_from(HOST_MAC_BYTES, mac, ARP_REPLY, victim, node),
        frames::arp_from(BROADCAST, mac, ARP_REPLY, victim, victim),
        frames::arp_from(BROADCAST, mac, ARP_REQUEST, victim, victim),
        frames::arp_from(BROADCAST, mac, ARP_REQUEST, victim, node),
    ];
    let table_before = neighbours(&net.node, victim);
    let mut events = net.event_reader();
    let before = net.stats();
    send_frames(&spoofer_ns, "eth0", &claims);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        grew(&mut net, &before, "drop_arp_spoofed"),
        claims.len() as u64
    );
    // Each drop is reported with the addresses the ARP claims and targets.
    let spoofer_if = net.ifindex("spoofer");
    let reported: Vec<(&str, IpAddr, IpAddr)> = events
        .drain()
        .iter()
        .filter(|e| e.ifindex == spoofer_if)
        .map(|e| (e.reason, e.source.0, e.destination.0))
        .collect();
    let (victim_ip, node_ip) = (IpAddr::V4(victim), IpAddr::V4(node));
    assert_eq!(
        reported,
        [
            ("drop_arp_spoofed", victim_ip, node_ip),
            ("drop_arp_spoofed", victim_ip, victim_ip),
            ("drop_arp_spoofed", victim_ip, victim_ip),
            ("drop_arp_spoofed", victim_ip, node_ip),
        ]
    );
    assert_eq!(
        neighbours(&net.node, victim),
        table_before,
        "the node's neighbour table for the victim's address changed"
    );
}

#[test]
fn pods_and_the_node_still_resolve_each_other_with_arp() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("a", "10.2.0.5", "fd00:2::5"),
        ("b", "10.3.0.6", "fd00:3::6"),
    ]);
    let (a, a_host, a_mac, a_ns) = {
        let a = net.pod("a");
        (a.v4, a.host.clone(), a.mac, a.netns.clone())
    };
    // No permanent entries for a either way: a resolves its gateway, which the node
    // answers as an address of its own, and the node resolves a.
    node_lines(
        &net,
        &[
            "addr add 169.254.1.1/32 dev lo".to_string(),
            format!("neigh del {a} dev {a_host}"),
        ],
    );
    netns::ip_batch(Some(&a_ns), &["neigh del 169.254.1.1 dev eth0".to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    // a is isolated both ways; UDP 7000 with b is all its rules allow.
    let tables = Tables::new(&net)
        .isolate("a", true, true)
        .pod_class("b", 4)
        .allow_port("a", Direction::Ingress, 4, UDP, 7000)
        .allow_port("a", Direction::Egress, 4, UDP, 7000)
        .build();
    net.apply(&tables);
    let before = net.stats();
    let b_ns = net.pod("b").netns.clone();
    assert!(
        probe::udp(&b_ns, None, &a_ns, IpAddr::V4(a), 7000),
        "b to a: the node resolves a"
    );
    assert!(
        probe::udp(&a_ns, None, &b_ns, addr("10.3.0.6"), 7000),
        "a to b: a resolves its gateway"
    );
    let mac = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
    let gateway = neighbours(&a_ns, Ipv4Addr::new(169, 254, 1, 1));
    assert!(
        gateway.contains(&mac(HOST_MAC_BYTES)),
        "a's gateway: {gateway}"
    );
    let at_node = neighbours(&net.node, a);
    assert!(
        at_node.contains(&mac(a_mac)),
        "the node's entry for a: {at_node}"
    );
    for reason in [
        "drop_arp_spoofed",
        "drop_arp_unsupported",
        "drop_ether_type",
    ] {
        assert_eq!(grew(&mut net, &before, reason), 0, "{reason}");
    }
}

/// An Ethernet frame from MAC `source` to `dest` carrying IPv6 `from -> to`, the
/// extension headers `exts`, then UDP from `sport` to `port` with `payload` and its
/// checksum (which IPv6 requires; RFC 8200 section 8.1).
fn udp6_frame(
    (dest, source): ([u8; 6], [u8; 6]),
    (from, to): (Ipv6Addr, Ipv6Addr),
    exts: &[Ext],
    (sport, port): (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let length = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    let mut udp = [
        &sport.to_be_bytes()[..],
        &port.to_be_bytes(),
        &length.to_be_bytes(),
        &[0, 0],
        payload,
    ]
    .concat();
    let checksum = transport_checksum(IpAddr::V6(from), IpAddr::V6(to), UDP, &udp);
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = frames::ipv6(from, to, exts, UDP, &udp);
    frame[..6].copy_from_slice(&dest);
    frame[6..12].copy_from_slice(&source);
    frame
}

#[test]
fn an_ipv6_packet_whose_extension_chain_outruns_the_walk_is_dropped_not_guessed() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("receiver", "10.1.0.10", "fd00:1::10"),
        ("sender", "10.3.0.6", "fd00:3::6"),
    ]);
    net.apply(&Tables::new(&net).build());
    let (sender, receiver) = (net.pod("sender"), net.pod("receiver"));
    let (sender_ns, macs, ips) = (
        sender.netns.clone(),
        (HOST_MAC_BYTES, sender.mac),
        (sender.v6, receiver.v6),
    );
    let listener = probe::udp_listener(&receiver.netns, IpAddr::V6(receiver.v6), 7000);
    let options = Ext::DestOptions { units: 0 };
    let one = [Ext::HopByHop];
    let five = [Ext::HopByHop, options, Ext::Routing, options, options];
    // Control: behind one header, the same datagram arrives; Linux walks five.
    send_frames(
        &sender_ns,
        "eth0",
        &[udp6_frame(macs, ips, &one, (44000, 7000), b"one header")],
    );
    assert!(
        probe::receives(&listener, b"one header"),
        "the control frame"
    );
    let before = net.stats();
    send_frames(
        &sender_ns,
        "eth0",
        &[udp6_frame(macs, ips, &five, (44001, 7000), b"five headers")],
    );
    assert!(
        !probe::receives(&listener, b"five headers"),
        "a chain longer than the walk was decided on a guess and delivered"
    );
    assert_eq!(grew(&mut net, &before, "drop_ipv6_extension_chain"), 1);
}

/// A VXLAN datagram (RFC 7348: flags with the VNI bit, then the VNI) carrying the
/// Ethernet frame `inner`.
fn vxlan(vni: u32, inner: Vec<u8>) -> Vec<u8> {
    let mut datagram = vec![0x08, 0, 0, 0];
    datagram.extend_from_slice(&(vni << 8).to_be_bytes());
    datagram.extend(inner);
    datagram
}

#[test]
fn a_pod_cannot_tunnel_through_a_vxlan_device_on_the_node_to_another_pod() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("target", "10.1.0.10", "fd00:1::10"),
        ("victim", "10.2.0.5", "fd00:2::5"),
        ("attacker", "10.3.0.6", "fd00:3::6"),
    ]);
    net.add_node_addresses(&[addr(NODE_V4)]);
    // The inner packet claims the victim's address, which comes in on a tunnel.
    sysctls(
        &net.node,
        &[
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/default/rp_filter", "0"),
        ],
    );
    // vx0 on the standard port; vx1 on one only the node's devices name.
    let devices = [
        ("vx0", 42u32, [0x0a, 0, 0, 0, 0, 0x2a], 4789u16),
        ("vx1", 43, [0x0a, 0, 0, 0, 0, 0x2b], 9999),
    ];
    for (name, vni, mac, port) in devices {
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        node_lines(
            &net,
            &[
                format!("link add {name} address {mac} type vxlan id {vni} dstport {port} local {NODE_V4}"),
                format!("link set {name} up"),
            ],
        );
    }
    let written = net.refresh_tunnel_ports();
    assert!(
        written.ports.contains(&9999),
        "the node's own port is read: {written:?}"
    );
    let (victim, target) = (net.pod("victim").v4, net.pod("target").v4);
    let target_ns = net.pod("target").netns.clone();
    let attacker_ns = net.pod("attacker").netns.clone();
    let listener = probe::udp_listener(&target_ns, IpAddr::V4(target), 7000);
    // The attacker's egress allows the node's address range, and nothing else.
    let tables = |net: &Net, tunnels: bool| {
        let tables = Tables::new(net)
            .isolate("attacker", false, true)
            .prefix("10.99.0.0/24", 9)
            .allow("attacker", Direction::Egress, 9, None, None);
        if tunnels {
            tables.allow_tunnels("attacker")
        } else {
            tables
        }
        .build()
    };
    let datagram = |(_, vni, mac, _): (&str, u32, [u8; 6], u16), payload: &str| {
        let inner = udp_frame(
            (mac, [2, 0xaa, 0, 0, 0, 1]),
            (victim, target),
            (43000, 7000),
            payload.as_bytes(),
        );
        vxlan(vni, inner)
    };
    net.apply(&tables(&net, false));
    for device in devices {
        let payload = format!("inner packet via {}", device.0);
        let before = net.stats();
        probe::send_udp(
            &attacker_ns,
            addr(NODE_V4),
            device.3,
            &datagram(device, &payload),
        );
        assert!(
            !probe::receives(&listener, payload.as_bytes()),
            "the node unwrapped a pod's VXLAN datagram on {} and delivered it",
            device.0
        );
        assert_eq!(grew(&mut net, &before, "drop_tunnel"), 1, "{}", device.0);
    }
    // Allowed to tunnel, the same datagrams arrive: the node does unwrap them, so
    // the drops above were podwall's.
    net.apply(&tables(&net, true));
    for device in devices {
        let payload = format!("allowed via {}", device.0);
        probe::send_udp(
            &attacker_ns,
            addr(NODE_V4),
            device.3,
            &datagram(device, &payload),
        );
        assert!(
            probe::receives(&listener, payload.as_bytes()),
            "via {}",
            device.0
        );
    }
}

/// Sends `payload` from `from` (a socket bound in its pod's namespace) to `to`.
fn send_from(from: &socket2::Socket, to: (IpAddr, u16), payload: &[u8]) {
    from.send_to(
        payload,
        &socket2::SockAddr::from(std::net::SocketAddr::from(to)),
    )
    .unwrap_or_else(|e| panic!("send to {to:?}: {e}"));
}

/// A Service that names a pod's own address (an external IP, which anyone who
/// may create a Service can set; nothing translates the ports the Service does
/// not list) does not open that pod to a client whose egress policy denies it,
/// nor the client to that pod's answers. The client's egress to a Service
/// address is deferred to the backend's side, and there the client's entry on the
/// untranslated tuple is the deferral itself, not a decision: the egress is judged
/// there, by the pod's class (so an allowed flow passes both ways), and a deferred
/// entry verifies no answer and relates no ICMP error of the pod's until its side
/// decided the flow. A policy change that denies the flow later stops it both
/// ways, re-decided by class, not deferred again. And the client's entry of
/// an allowed flow stays a deferral: when the Service later translates that very
/// tuple to another pod (a port it gains), the flow is decided at that pod.
#[test]
fn a_service_naming_a_pods_address_does_not_open_it_past_the_clients_policy() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("target", "10.1.0.10", "fd00:1::10"),
        ("client", "10.3.0.6", "fd00:3::6"),
        ("other", "10.4.0.7", "fd00:4::7"),
    ]);
    let (client_ns, target_ns) = (
        net.pod("client").netns.clone(),
        net.pod("target").netns.clone(),
    );
    let pairs = [
        (
            IpAddr::V4(net.pod("client").v4),
            IpAddr::V4(net.pod("target").v4),
        ),
        (
            IpAddr::V6(net.pod("client").v6),
            IpAddr::V6(net.pod("target").v6),
        ),
    ];
    // The client isolated both ways; the target's addresses in class 5, and
    // flagged as Service addresses.
    let tables = |allowed: bool| {
        let named = PeerEntry {
            class_id: 5,
            node: false,
            service: true,
        };
        let tables = pairs
            .iter()
            .fold(Tables::new(&net), |tables, (_, target)| {
                tables.peer(&format!("{}", ipnet::IpNet::from(*target)), named)
            })
            .isolate("client", true, true);
        let tables = if allowed {
            tables
                .allow_port("client", Direction::Egress, 5, TCP, 80)
                .allow_port("client", Direction::Egress, 5, UDP, 7000)
        } else {
            tables
        };
        tables.build()
    };
    let (denied, allowed) = (tables(false), tables(true));
    net.apply(&denied);
    for (i, (client, target)) in pairs.into_iter().enumerate() {
        let before = net.stats();
        assert!(
            !probe::tcp(&client_ns, None, target, 80),
            "TCP to {target} passed an egress policy that denies it"
        );
        assert!(
            !probe::udp(&client_ns, None, &target_ns, target, 7000),
            "UDP to {target} passed an egress policy that denies it"
        );
        assert!(
            grew(&mut net, &before, "drop_deferred_egress") >= 1,
            "{target}: {:?}",
            net.stats()
        );
        // The target answers the denied datagram's tuple: the client's deferred
        // entry of it verifies nothing, and the client's ingress denies it.
        let port = 45000 + i as u16;
        let at_client = probe::udp_listener(&client_ns, client, port);
        let at_target = probe::udp_listener(&target_ns, target, 7000);
        send_from(&at_client, (target, 7000), b"out");
        assert!(!probe::receives(&at_target, b"out"), "{target}: out");
        send_from(&at_target, (client, port), b"answer");
        assert!(
            !probe::receives(&at_client, b"answer"),
            "an answer to a denied datagram reached {client} past its ingress policy"
        );
        // Nor does an ICMP error the target makes up about that datagram: the
        // client's deferral of it relates no error from the pod it named.
        assert!(
            !icmp_error_reaches(&target_ns, &client_ns, (client, port), target),
            "{target}'s ICMP error about a denied datagram reached {client} past its ingress policy"
        );
    }
    // Allowed by the target's class, the same traffic passes: judged by class,
    // not dropped as a Service address nothing translated; answers are verified.
    net.apply(&allowed);
    let mut flows = Vec::new();
    for (i, (client, target)) in pairs.into_iter().enumerate() {
        assert!(probe::tcp(&client_ns, None, target, 80), "TCP to {target}");
        let port = 46000 + i as u16;
        let at_client = probe::udp_listener(&client_ns, client, port);
        let at_target = probe::udp_listener(&target_ns, target, 7000);
        send_from(&at_client, (target, 7000), b"out");
        assert!(probe::receives(&at_target, b"out"), "{target}: out");
        send_from(&at_target, (client, port), b"answer");
        assert!(probe::receives(&at_client, b"answer"), "{client}: answer");
        assert!(
            icmp_error_reaches(&target_ns, &client_ns, (client, port), target),
            "{target}'s ICMP error about an allowed datagram, into {client}"
        );
        flows.push((client, target, at_client, at_target));
    }
    // The node now translates the target's address on that port to the other
    // pod, which the client's egress does not allow: the same tuple again is
    // decided there, and dropped (before the node tracked nothing, so the next
    // packet of the tuple is translated).
    let other = [
        IpAddr::V4(net.pod("other").v4),
        IpAddr::V6(net.pod("other").v6),
    ];
    let dnat: String = [("ip", 0), ("ip6", 1)]
        .into_iter()
        .map(|(family, i)| {
            let (from, to) = (pairs[i].1, other[i]);
            let to = if to.is_ipv6() {
                format!("[{to}]")
            } else {
                to.to_string()
            };
            format!(
                "table {family} later {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n \
                 {family} daddr {from} udp dport 7000 dnat to {to}:7000\n }}\n}}\n"
            )
        })
        .collect();
    net.nft(&dnat);
    let other_ns = net.pod("other").netns.clone();
    for ((client, _, at_client, _), to) in flows.iter().zip(other) {
        let at_other = probe::udp_listener(&other_ns, to, 7000);
        let before = net.stats();
        send_from(
            at_client,
            (pairs_target(&pairs, *client), 7000),
            b"translated",
        );
        assert!(
            !probe::receives(&at_other, b"translated"),
            "{client}'s tracked tuple, translated to {to}, passed the egress policy that denies it"
        );
        assert!(
            grew(&mut net, &before, "drop_deferred_egress") >= 1,
            "{to}: {:?}",
            net.stats()
        );
    }
    net.nft(
        &[("ip", 0), ("ip6", 1)]
            .map(|(family, _)| format!("delete table {family} later\n"))
            .concat(),
    );
    // Denied again: the tracked flows are re-decided by class and stop, the
    // target's answers too.
    net.apply(&denied);
    for (client, target, at_client, at_target) in &flows {
        send_from(
            at_target,
            (*client, at_client_port(at_client)),
            b"late answer",
        );
        assert!(
            !probe::receives(at_client, b"late answer"),
            "{target}'s answer reached {client} after the policy denied the flow"
        );
        send_from(at_client, (*target, 7000), b"late");
        assert!(!probe::receives(at_target, b"late"), "{client}: late");
    }
}

/// Whether an ICMP (ICMPv6) port unreachable that namespace `from_ns` sends from
/// `target` to `client`, quoting a datagram `client` sent to `target`'s port
/// 7000, reaches a raw socket in namespace `to_ns`.
fn icmp_error_reaches(from_ns: &str, to_ns: &str, client: (IpAddr, u16), target: IpAddr) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    let marker = format!("quoted {}:{}", client.0, client.1);
    let mut udp = Vec::new();
    udp.extend_from_slice(&client.1.to_be_bytes());
    udp.extend_from_slice(&7000u16.to_be_bytes());
    let length = u16::try_from(8 + marker.len()).unwrap_or(u16::MAX);
    udp.extend_from_slice(&length.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(marker.as_bytes());
    let quoted = frames::ip(client.0, target, UDP, &udp);
    let (domain, protocol) = if target.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4)
    } else {
        (Domain::IPV6, Protocol::ICMPV6)
    };
    let receiver = Net::in_ns(to_ns, || Socket::new(domain, Type::RAW, Some(protocol)))
        .unwrap_or_else(|e| panic!("raw ICMP socket in {to_ns}: {e}"));
    probe::send_port_unreachable(from_ns, client.0, &quoted);
    probe::await_packet(&receiver, |bytes, _| {
        bytes
            .windows(marker.len())
            .any(|window| window == marker.as_bytes())
    })
}

/// A client isolated for egress only answers a datagram from a pod whose
/// address a Service names (an external IP). While the node still tracks that
/// flow the answer reaches the pod; once the node has forgotten it (here after
/// one second, the node's UDP timeout shortened; 30 s by default, while podwall
/// keeps the flow 60 s), the client's "answer" is a new connection to the
/// Service address, and the node translates it to a pod the client's egress
/// denies. It is deferred at the client and judged there: dropped.
#[test]
fn a_reply_the_node_translates_anew_is_judged_as_the_clients_egress() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("target", "10.1.0.10", "fd00:1::10"),
        ("client", "10.3.0.6", "fd00:3::6"),
        ("other", "10.4.0.7", "fd00:4::7"),
    ]);
    let ns = |pod: &str| net.pod(pod).netns.clone();
    let (client_ns, target_ns, other_ns) = (ns("client"), ns("target"), ns("other"));
    let family = |pod: &str| [IpAddr::V4(net.pod(pod).v4), IpAddr::V6(net.pod(pod).v6)];
    let (clients, targets, others) = (family("client"), family("target"), family("other"));
    let named = PeerEntry {
        class_id: 5,
        node: false,
        service: true,
    };
    let tables = targets
        .iter()
        .fold(Tables::new(&net), |tables, target| {
            tables.peer(&format!("{}", ipnet::IpNet::from(*target)), named)
        })
        .pod_class("other", 9)
        .isolate("client", false, true)
        .build();
    net.apply(&tables);
    Net::in_ns(&net.node, || {
        std::fs::write("/proc/sys/net/netfilter/nf_conntrack_udp_timeout", "1")
    })
    .unwrap_or_else(|e| panic!("the node's UDP conntrack timeout: {e}"));
    for i in 0..2 {
        let (client, target, other) = (clients[i], targets[i], others[i]);
        let at_target = probe::udp_listener(&target_ns, target, 7000);
        let at_other = probe::udp_listener(&other_ns, other, 7001);
        // The answer while the node tracks the flow: to the target.
        let answering = probe::udp_listener(&client_ns, client, 45100 + i as u16);
        send_from(&at_target, (client, 45100 + i as u16), b"hello");
        assert!(probe::receives(&answering, b"hello"), "{client}: hello");
        send_from(&answering, (target, 7000), b"answer");
        assert!(
            probe::receives(&at_target, b"answer"),
            "{client}'s answer to {target}"
        );
        // The node translates the target's address on that port to the other pod.
        let (table, other_at) = if other.is_ipv6() {
            ("ip6", format!("[{other}]"))
        } else {
            ("ip", other.to_string())
        };
        net.nft(&format!(
            "table {table} anew {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n \
             {table} daddr {target} udp dport 7000 dnat to {other_at}:7001\n }}\n}}\n"
        ));
        send_from(&answering, (other, 7001), b"direct");
        assert!(
            !probe::receives(&at_other, b"direct"),
            "{client}'s egress denies {other}"
        );
        let late = probe::udp_listener(&client_ns, client, 45200 + i as u16);
        send_from(&at_target, (client, 45200 + i as u16), b"hello");
        assert!(probe::receives(&late, b"hello"), "{client}: hello");
        std::thread::sleep(Duration::from_millis(2500));
        let before = net.stats();
        send_from(&late, (target, 7000), b"late answer");
        assert!(
            !probe::receives(&at_other, b"late answer"),
            "{client}'s late answer to {target}, translated to {other}, passed its egress policy"
        );
        assert!(
            grew(&mut net, &before, "drop_deferred_egress") >= 1,
            "{:?}",
            net.stats()
        );
        net.nft(&format!("delete table {table} anew\n"));
    }
}

/// The target address paired with `client` in `pairs`.
fn pairs_target(pairs: &[(IpAddr, IpAddr); 2], client: IpAddr) -> IpAddr {
    pairs
        .iter()
        .find(|(c, _)| *c == client)
        .map_or(client, |(_, target)| *target)
}

/// The local port `socket` is bound to.
fn at_client_port(socket: &socket2::Socket) -> u16 {
    socket
        .local_addr()
        .ok()
        .and_then(|address| address.as_socket())
        .map_or(0, |address| address.port())
}

/// A client's Service flow leaves an entry of its translated tuple at the client
/// (written where it was decided). Sending to that backend address directly on
/// the same tuple must not skip the egress policy when the node translates that
/// address anew: here a second Service names the backend's own address and sends
/// it to a pod the client's egress denies. The client's hook passes such a packet
/// as a deferral, decided where it arrives.
#[test]
fn a_services_translated_tuple_sent_directly_is_decided_where_it_arrives() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("backend", "10.1.0.10", "fd00:1::10"),
        ("client", "10.3.0.6", "fd00:3::6"),
        ("denied", "10.4.0.7", "fd00:4::7"),
    ]);
    let vips = ["10.96.0.50", "fd00:96::50"].map(addr);
    let ns = |pod: &str| net.pod(pod).netns.clone();
    let (client_ns, backend_ns, denied_ns) = (ns("client"), ns("backend"), ns("denied"));
    let pair = |pod: &str| [IpAddr::V4(net.pod(pod).v4), IpAddr::V6(net.pod(pod).v6)];
    let (clients, backends, denied) = (pair("client"), pair("backend"), pair("denied"));
    // The backend (class 5, also a Service address) is allowed on UDP 7000; the
    // other pod (class 9) is not; the ClusterIPs are Service addresses.
    let service_class = |class_id| PeerEntry {
        class_id,
        node: false,
        service: true,
    };
    let tables = backends
        .iter()
        .fold(Tables::new(&net), |tables, backend| {
            tables.peer(
                &format!("{}", ipnet::IpNet::from(*backend)),
                service_class(5),
            )
        })
        .service("10.96.0.50/32")
        .service("fd00:96::50/128")
        .pod_class("denied", 9)
        .isolate("client", false, true)
        .allow_port("client", Direction::Egress, 5, UDP, 7000)
        .build();
    net.apply(&tables);
    // ClusterIP:80 -> backend:7000; backend:7000 -> the denied pod:7001.
    let rules: String = [("ip", 0), ("ip6", 1)]
        .into_iter()
        .map(|(family, i)| {
            let bracket = |address: IpAddr| match address {
                IpAddr::V6(_) => format!("[{address}]"),
                IpAddr::V4(_) => address.to_string(),
            };
            format!(
                "table {family} twice {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n \
                 {family} daddr {vip} udp dport 80 dnat to {backend}:7000\n \
                 {family} daddr {direct} udp dport 7000 dnat to {other}:7001\n }}\n}}\n",
                vip = vips[i],
                backend = bracket(backends[i]),
                direct = backends[i],
                other = bracket(denied[i]),
            )
        })
        .collect();
    net.nft(&rules);
    for i in 0..2 {
        let at_client = probe::udp_listener(&client_ns, clients[i], 45500 + i as u16);
        let at_backend = probe::udp_listener(&backend_ns, backends[i], 7000);
        let at_denied = probe::udp_listener(&denied_ns, denied[i], 7001);
        send_from(&at_client, (vips[i], 80), b"through the service");
        assert!(
            probe::receives(&at_backend, b"through the service"),
            "{}: the allowed Service flow",
            backends[i]
        );
        send_from(&at_backend, (clients[i], 45500 + i as u16), b"answer");
        assert!(
            probe::receives(&at_client, b"answer"),
            "{}: answer",
            clients[i]
        );
        let before = net.stats();
        send_from(&at_client, (backends[i], 7000), b"direct");
        assert!(
            !probe::receives(&at_denied, b"direct"),
            "{}: the translated tuple, sent directly and translated anew, reached a pod the \
             client's egress denies",
            denied[i]
        );
        assert!(
            grew(&mut net, &before, "drop_deferred_egress") >= 1,
            "{:?}",
            net.stats()
        );
    }
}

/// ICMP errors about a client's Service flows, through a ClusterIP the node
/// translates to a backend on the node (both families). The node un-translates
/// an error so that it comes from the ClusterIP, and a deferral is no decision:
/// the error gets into the client past its ingress only when the backend's side
/// allowed the flow (the backend's own port unreachable, marked verified there)
/// or the node made it (a REJECT for a Service without endpoints); a backend the
/// client's egress denies cannot push one in.
#[test]
fn an_error_through_a_clusterip_gets_in_only_as_the_backends_side_or_the_node_vouches() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("server", "10.1.0.10", "fd00:1::10"),
        ("client", "10.2.0.5", "fd00:2::5"),
    ]);
    let (client_ns, server_ns) = (
        net.pod("client").netns.clone(),
        net.pod("server").netns.clone(),
    );
    net.translate_cluster_ips(["10.1.0.10", "fd00:1::10"], &["udp"], 53, 53);
    let [vip4, vip6] = super::pods::CLUSTER_IPS;
    net.nft(&format!(
        "table ip rej {{\n chain pre {{\n type filter hook prerouting priority 0;\n \
         ip daddr {vip4} udp dport 54 reject\n }}\n}}\n\
         table ip6 rej {{\n chain pre {{\n type filter hook prerouting priority 0;\n \
         ip6 daddr {vip6} udp dport 54 reject\n }}\n}}\n"
    ));
    let tables = |net: &Net, port: u16| {
        Tables::new(net)
            .isolate("client", true, true)
            .pod_class("server", 5)
            .service(&format!("{vip4}/32"))
            .service(&format!("{vip6}/128"))
            .allow_port("client", Direction::Egress, 5, UDP, port)
            .build()
    };
    let families = [
        (addr("10.2.0.5"), addr("10.1.0.10"), addr(vip4)),
        (addr("fd00:2::5"), addr("fd00:1::10"), addr(vip6)),
    ];
    // Allowed: the server's kernel answers port unreachable (nothing listens on
    // 53 there); the node's own REJECT likewise.
    let allowing = tables(&net, 53);
    net.apply(&allowing);
    for (client, _, vip) in families {
        assert!(
            probe::udp_refused(&client_ns, client, vip, 53).1,
            "the backend's error through {vip}"
        );
        assert!(
            probe::udp_refused(&client_ns, client, vip, 54).1,
            "the node's REJECT for {vip}:54"
        );
    }
    // Denied: the server's side drops the datagram; an error the server makes
    // up about it must not get in.
    let denying = tables(&net, 5353);
    net.apply(&denying);
    for (client, server, vip) in families {
        let (socket, _) = probe::udp_refused(&client_ns, client, vip, 53);
        let port = socket.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        let before = net.stats();
        let quoted = frames::ip(client, server, UDP, &frames::udp(port, 53));
        probe::send_port_unreachable(&server_ns, client, &quoted);
        assert!(
            !probe::socket_refused(&socket),
            "the server's made-up error through {vip} reached {client} past its ingress policy: {:?}",
            net.stats().growth_since(&before)
        );
    }
}
