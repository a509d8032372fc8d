//! Verdict rows for what a pod crafts to get past its policy: frames behind VLAN
//! tags or of other EtherTypes, ARP that claims an address it may not, IPv6
//! extension chains the parser cannot finish, and tunnels (IP-in-IP, GRE, VXLAN,
//! Geneve, ...). Real packets prove the first three and VXLAN (`bypass.rs`); this
//! kernel has no IPIP or GRE, so these rows carry the other tunnels.

use super::*;

/// VLAN tag protocol identifiers: 802.1Q, 802.1ad and the older QinQ.
const DOT1Q: u16 = 0x8100;
const DOT1AD: u16 = 0x88a8;
const QINQ: u16 = 0x9100;
/// Tunnel protocols (IPv4 protocol, IPv6 next header).
const IPIP: u8 = 4;
const IPV6_IN_IP: u8 = 41;
const GRE: u8 = 47;
const ETHERIP: u8 = 97;
const L2TP: u8 = 115;
const MPLS_IN_IP: u8 = 137;
/// The lab's IPv4 gateway: an address no pod has.
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The rows of this module, appended to `rows()`.
pub(super) fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    tags_and_ether_types(&mut rows);
    arp(&mut rows);
    ipv6_chains(&mut rows);
    tunnels(&mut rows);
    rows
}

fn push(
    rows: &mut Vec<Row>,
    name: String,
    fixture: Fixture,
    hook: Hook,
    pod: &'static str,
    frame: Vec<u8>,
    expect: Expect,
) {
    rows.push(Row {
        name,
        fixture,
        hook,
        pod,
        frame,
        expect,
    });
}

/// A VLAN tag anywhere drops a frame, whatever it carries and whatever policy
/// allows; so does any EtherType but IPv4, IPv6 and ARP.
fn tags_and_ether_types(rows: &mut Vec<Row>) {
    use Hook::{PodEgress as Out, PodIngress as In};
    let vlan = dropped("drop_vlan");
    let syn_v4 = |from, to| v4(from, to, TCP, &l4(TCP, 80));
    let syn_v6 = |from, to| v6(from, to, TCP, &l4(TCP, 80));
    for (what, tpids) in [
        ("one 802.1Q tag (VLAN id 0)", &[DOT1Q][..]),
        ("two 802.1Q tags with VLAN id 0", &[DOT1Q, DOT1Q]),
        ("an 802.1ad tag and an 802.1Q tag", &[DOT1AD, DOT1Q]),
        ("a 0x9100 tag", &[QINQ]),
        ("three tags", &[DOT1AD, DOT1Q, DOT1Q]),
    ] {
        for (family, out, into) in [
            (
                "IPv4",
                syn_v4(CLIENT_V4, SERVER_V4),
                syn_v4(CLIENT_V4, SERVER_V4),
            ),
            (
                "IPv6",
                syn_v6(CLIENT_V6, SERVER_V6),
                syn_v6(CLIENT_V6, SERVER_V6),
            ),
        ] {
            let name = format!(
                "an {family} TCP SYN behind {what} from a pod that is not isolated is dropped"
            );
            push(
                rows,
                name,
                Fixture::Open,
                Out,
                "client",
                frames::tagged(out, tpids),
                vlan,
            );
            let name = format!(
                "an {family} TCP SYN behind {what} to a pod that is not isolated is dropped"
            );
            push(
                rows,
                name,
                Fixture::Open,
                In,
                "server",
                frames::tagged(into, tpids),
                vlan,
            );
        }
    }
    let arp = frames::arp(CLIENT_V4, SERVER_V4, false);
    push(
        rows,
        "an ARP request behind an 802.1Q tag from a pod is dropped".into(),
        Fixture::Open,
        Out,
        "client",
        frames::tagged(arp, &[DOT1Q]),
        vlan,
    );
    for (name, ether_type) in [
        ("MPLS (0x8847)", 0x8847),
        ("RARP (0x8035)", 0x8035),
        ("PPPoE session (0x8864)", 0x8864),
        ("a local experimental EtherType (0x88b5)", 0x88b5),
        ("an 802.3 length (0x0040) instead of an EtherType", 0x0040),
    ] {
        for (hook, pod, way) in [(Out, "client", "from"), (In, "server", "to")] {
            let frame = [frames::ethernet(ether_type), vec![0x45; 40]].concat();
            push(
                rows,
                format!("a frame of {name} {way} a pod that is not isolated is dropped"),
                Fixture::Open,
                hook,
                pod,
                frame,
                dropped("drop_ether_type"),
            );
        }
    }
}

/// ARP passes only as Ethernet/IPv4 whose sender is the frame's source and, from
/// the pod, the pod itself (or 0.0.0.0 in a probe).
fn arp(rows: &mut Vec<Row>) {
    use Hook::{PodEgress as Out, PodIngress as In};
    let (non_ip, spoofed) = (passed("allow_non_ip"), dropped("drop_arp_spoofed"));
    let unsupported = dropped("drop_arp_unsupported");
    let request = |sender, target| frames::arp(sender, target, false);
    let reply = |sender, target| frames::arp(sender, target, true);
    let unspecified = Ipv4Addr::UNSPECIFIED;
    // Byte 14 + 8 starts the sender hardware address; the frame's source is ee:...
    let other_sender_mac = |frame| poke(frame, 14 + 8, 0x02);
    for (name, hook, frame, expect) in [
        ("a gratuitous ARP request for the pod's own address passes out", Out, request(SERVER_V4, SERVER_V4), non_ip),
        ("a gratuitous ARP reply for the pod's own address passes out", Out, reply(SERVER_V4, SERVER_V4), non_ip),
        ("an ARP probe (request from 0.0.0.0) passes out", Out, request(unspecified, CLIENT_V4), non_ip),
        ("an ARP reply from 0.0.0.0 is dropped as spoofed", Out, reply(unspecified, CLIENT_V4), spoofed),
        ("an ARP reply claiming another pod's address is dropped as spoofed", Out, reply(CLIENT_V4, OTHER_V4), spoofed),
        ("an ARP request from another pod's address is dropped as spoofed", Out, request(CLIENT_V4, OTHER_V4), spoofed),
        ("a gratuitous ARP for another pod's address is dropped as spoofed", Out, request(OTHER_V4, OTHER_V4), spoofed),
        ("an ARP reply claiming the gateway's address is dropped as spoofed", Out, reply(GATEWAY_V4, SERVER_V4), spoofed),
        ("an ARP reply from the pod's own address with another sender MAC than the frame's is dropped as spoofed", Out, other_sender_mac(reply(SERVER_V4, CLIENT_V4)), spoofed),
        ("an ARP reply from the gateway passes in", In, reply(GATEWAY_V4, SERVER_V4), non_ip),
        ("an ARP request from the node for the pod passes in", In, request(Ipv4Addr::new(10, 99, 0, 1), SERVER_V4), non_ip),
        ("an ARP reply whose sender MAC is not the frame's source is dropped in", In, other_sender_mac(reply(GATEWAY_V4, SERVER_V4)), spoofed),
    ] {
        push(rows, format!("{name} (isolated pod)"), Fixture::Rules, hook, "server", frame, expect);
    }
    let own = || reply(SERVER_V4, CLIENT_V4);
    for (what, frame) in [
        ("of hardware type 6 (IEEE 802)", poke(own(), 15, 6)),
        ("of protocol type IPv6", poke(own(), 16, 0x86)),
        ("with 8-byte hardware addresses", poke(own(), 18, 8)),
        ("of operation 3 (RARP request)", poke(own(), 21, 3)),
        ("of operation 8 (InARP request)", poke(own(), 21, 8)),
    ] {
        for (hook, way) in [(Out, "out"), (In, "in")] {
            push(
                rows,
                format!("an ARP frame {what} is dropped as unsupported {way}"),
                Fixture::Rules,
                hook,
                "server",
                frame.clone(),
                unsupported,
            );
        }
    }
    push(
        rows,
        "an ARP reply cut before its sender address is dropped as malformed".into(),
        Fixture::Rules,
        Out,
        "server",
        truncated(own(), 14 + 20),
        dropped("drop_malformed"),
    );
}

/// An IPv6 chain the walk cannot finish, or that routes on past its destination.
fn ipv6_chains(rows: &mut Vec<Row>) {
    use Hook::{PodEgress as Out, PodIngress as In};
    let five = [
        Ext::HopByHop,
        Ext::DestOptions { units: 0 },
        Ext::Routing,
        Ext::DestOptions { units: 0 },
        Ext::DestOptions { units: 0 },
    ];
    let chain = dropped("drop_ipv6_extension_chain");
    push(rows, "an IPv6 UDP datagram behind five extension headers from a pod that is not isolated is dropped".into(), Fixture::Open, Out, "client", frames::ipv6(CLIENT_V6, SERVER_V6, &five, UDP, &l4(UDP, 53)), chain);
    push(
        rows,
        "an IPv6 packet whose fifth extension header is a fragment header is dropped".into(),
        Fixture::Open,
        In,
        "server",
        frames::ipv6(
            CLIENT_V6,
            SERVER_V6,
            &[
                five[0],
                five[1],
                five[2],
                five[3],
                Ext::Fragment { offset: 0 },
            ],
            UDP,
            &l4(UDP, 53),
        ),
        chain,
    );
    // Segments left is the routing header's fourth byte.
    let routed = |from, to, exts: &[Ext], at: usize| {
        poke(
            frames::ipv6(from, to, exts, TCP, &l4(TCP, 80)),
            14 + 40 + at + 3,
            1,
        )
    };
    let routing = dropped("drop_ipv6_routing_header");
    push(
        rows,
        "an IPv6 TCP SYN with a routing header that has segments left is dropped in".into(),
        Fixture::Rules,
        In,
        "server",
        routed(CLIENT_V6, SERVER_V6, &[Ext::Routing], 0),
        routing,
    );
    push(rows, "an IPv6 TCP SYN with a routing header that has segments left, behind a hop-by-hop header, is dropped out".into(), Fixture::Open, Out, "client", routed(CLIENT_V6, SERVER_V6, &[Ext::HopByHop, Ext::Routing], 8), routing);
}

/// Tunnels from a pod are dropped to any destination whatever policy allows,
/// unless its namespace allows them; they are no concern of ingress.
fn tunnels(rows: &mut Vec<Row>) {
    use Hook::{PodEgress as Out, PodIngress as In};
    let tunnel = dropped("drop_tunnel");
    let inner = v4(CLIENT_V4, SERVER_V4, TCP, &l4(TCP, 80));
    let payload = inner.get(14..).unwrap_or_default().to_vec();
    let carried = [vec![0, 0, 0x08, 0], payload.clone()].concat();
    let udp_to = |dport: u16| [frames::udp(port(), dport), payload.clone()].concat();
    for (family, server, other, client) in [
        (
            "IPv4",
            IpAddr::V4(SERVER_V4),
            IpAddr::V4(OTHER_V4),
            IpAddr::V4(CLIENT_V4),
        ),
        (
            "IPv6",
            IpAddr::V6(SERVER_V6),
            IpAddr::V6(OTHER_V6),
            IpAddr::V6(CLIENT_V6),
        ),
    ] {
        for (what, protocol) in [
            ("IP-in-IP (4)", IPIP),
            ("IPv6-in-IP (41)", IPV6_IN_IP),
            ("GRE (47)", GRE),
            ("EtherIP (97)", ETHERIP),
            ("L2TPv3 (115)", L2TP),
            ("MPLS-in-IP (137)", MPLS_IN_IP),
        ] {
            let frame = frames::ip(server, other, protocol, &carried);
            push(rows, format!("an {family} {what} packet to a peer allowed every protocol is dropped as a tunnel"), Fixture::Rules, Out, "server", frame.clone(), tunnel);
            push(
                rows,
                format!(
                    "an {family} {what} packet passes by policy where the namespace allows tunnels"
                ),
                Fixture::Tunnels,
                Out,
                "server",
                frame,
                passed("allow_policy"),
            );
        }
        for (what, dport) in [
            ("VXLAN (4789)", 4789),
            ("Linux VXLAN (8472)", 8472),
            ("Geneve (6081)", 6081),
        ] {
            push(rows, format!("an {family} UDP datagram to {what} at a peer allowed every protocol is dropped as a tunnel"), Fixture::Rules, Out, "server", frames::ip(server, other, UDP, &udp_to(dport)), tunnel);
            push(rows, format!("an {family} UDP datagram to {what} passes by policy where the namespace allows tunnels"), Fixture::Tunnels, Out, "server", frames::ip(server, other, UDP, &udp_to(dport)), passed("allow_policy"));
            push(rows, format!("an {family} UDP datagram to {what} from a pod that is not isolated is dropped as a tunnel"), Fixture::Open, Out, "client", frames::ip(client, server, UDP, &udp_to(dport)), tunnel);
        }
        push(
            rows,
            format!("an {family} UDP datagram to port 4790 (no tunnel port here) passes by policy"),
            Fixture::Rules,
            Out,
            "server",
            frames::ip(server, other, UDP, &udp_to(4790)),
            passed("allow_policy"),
        );
        push(rows, format!("an {family} GRE packet from a pod whose namespace does not allow tunnels is dropped beside one that may"), Fixture::Tunnels, Out, "client", frames::ip(client, server, GRE, &carried), tunnel);
        push(rows, format!("an {family} GRE packet to a pod that is not isolated passes: tunnels are an egress matter"), Fixture::Open, In, "server", frames::ip(client, server, GRE, &carried), passed("allow_unisolated"));
    }
}
