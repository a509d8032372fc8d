//! The classifiers on hand-made frames (`BPF_PROG_TEST_RUN`): IPv6 extension-header
//! chains, fragments, truncated headers, ICMPv6 and neighbour discovery, SCTP over
//! IPv6, and each branch of Service egress deferral with forged marks. The frames
//! never leave the kernel, but conntrack and counters change as for real packets.

use std::net::{IpAddr, Ipv6Addr};

use policy_agent::{dataplane::Hook, policy::tables::Direction};
use policy_common::verdict::{MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED};

use super::{
    addr,
    frames::{self, Ext, ICMPV6, SCTP, TCP, UDP},
    net::Net,
    support,
    tables::Tables,
};

const SERVER_V6: &str = "fd00:1::10";
const CLIENT_V6: &str = "fd00:2::5";

fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A server and a client, for IPv6 frames between them.
fn server_and_client() -> Net {
    support::require_root_and_bpf();
    Net::up(&[
        ("server", "10.1.0.10", SERVER_V6),
        ("client", "10.2.0.5", CLIENT_V6),
    ])
}

/// Tables with the server isolated both ways and the client in class 3.
fn isolated(net: &Net) -> Tables<'_> {
    Tables::new(net)
        .isolate("server", true, true)
        .pod_class("client", 3)
}

fn to_server(exts: &[Ext], protocol: u8, l4: &[u8]) -> Vec<u8> {
    frames::ipv6(v6(CLIENT_V6), v6(SERVER_V6), exts, protocol, l4)
}

fn to_client(exts: &[Ext], protocol: u8, l4: &[u8]) -> Vec<u8> {
    frames::ipv6(v6(SERVER_V6), v6(CLIENT_V6), exts, protocol, l4)
}

fn passes(net: &mut Net, hook: Hook, pod: &str, frame: &[u8]) -> bool {
    net.run(hook, pod, 0, frame).passed
}

/// Whether the server's ingress passes `frame`.
fn server_admits(net: &mut Net, frame: &[u8]) -> bool {
    passes(net, Hook::PodIngress, "server", frame)
}

#[test]
fn ipv6_extension_headers_are_walked_up_to_four_deep() {
    let mut net = server_and_client();
    let tables = isolated(&net).allow_port("server", Direction::Ingress, 3, TCP, 80);
    net.apply(&tables.build());
    let four = [
        Ext::HopByHop,
        Ext::DestOptions { units: 2 },
        Ext::Routing,
        Ext::DestOptions { units: 0 },
    ];
    let syn = |port| frames::tcp(40000, port);
    assert!(server_admits(&mut net, &to_server(&[], TCP, &syn(80))));
    assert!(server_admits(&mut net, &to_server(&four, TCP, &syn(80))));
    assert!(!server_admits(&mut net, &to_server(&four, TCP, &syn(81))));

    // A fifth header ends the walk: the packet is "protocol 60, port 0".
    let five = [four.as_slice(), &[Ext::DestOptions { units: 0 }]].concat();
    let frame = to_server(&five, TCP, &syn(80));
    assert!(!server_admits(&mut net, &frame), "TCP 80 rule");
    let tables = isolated(&net).allow_port("server", Direction::Ingress, 3, 60, 0);
    net.apply(&tables.build());
    assert!(server_admits(&mut net, &frame), "protocol 60 port 0");
}

#[test]
fn ipv6_fragments_after_the_first_get_ports_zero() {
    let mut net = server_and_client();
    let tables = isolated(&net)
        .allow_port("server", Direction::Ingress, 3, TCP, 80)
        .allow_port("server", Direction::Ingress, 3, UDP, 0);
    net.apply(&tables.build());
    let first = to_server(&[Ext::Fragment { offset: 0 }], TCP, &frames::tcp(40001, 80));
    assert!(server_admits(&mut net, &first), "first fragment");
    let later = to_server(
        &[Ext::Fragment { offset: 185 }],
        TCP,
        &frames::tcp(40002, 80),
    );
    assert!(!server_admits(&mut net, &later), "no ports: not TCP 80");
    let udp_later = to_server(
        &[Ext::HopByHop, Ext::Fragment { offset: 185 }],
        UDP,
        &[0x9c, 0x40, 0x00, 0x35, 0, 8, 0, 0],
    );
    assert!(server_admits(&mut net, &udp_later), "UDP port 0");
}

#[test]
fn truncated_or_malformed_ipv6_is_dropped_as_malformed() {
    let mut net = server_and_client();
    // Even an open pod: a packet that does not parse is never decided.
    net.apply(&Tables::new(&net).build());
    let before = net.stats().get("drop_malformed");
    let mut past_end = to_server(&[Ext::DestOptions { units: 0 }], TCP, &frames::tcp(1, 80));
    past_end[14 + 40 + 1] = 30; // the options now claim 248 bytes
    let mut short_tcp = to_server(&[], TCP, &frames::tcp(1, 80));
    short_tcp.truncate(14 + 40 + 2);
    let mut not_v6 = to_server(&[], TCP, &frames::tcp(1, 80));
    not_v6[14] = 0x40;
    // (A frame shorter than the fixed header never reaches the program in a test
    // run: the kernel refuses it. A missing extension header is the same read.)
    let missing_ext = to_server(&[], 0, &[]);
    for (what, frame) in [
        ("extension past the end", &past_end),
        ("truncated TCP", &short_tcp),
        ("version 4 in an IPv6 frame", &not_v6),
        ("hop-by-hop announced, nothing follows", &missing_ext),
    ] {
        assert!(!server_admits(&mut net, frame), "{what}");
    }
    assert_eq!(net.stats().get("drop_malformed"), before + 4);
}

#[test]
fn icmpv6_echo_pairs_by_identifier_and_neighbour_discovery_always_passes() {
    let mut net = server_and_client();
    net.apply(&isolated(&net).build());
    for nd_type in 133..=137 {
        let nd = to_server(&[], ICMPV6, &frames::icmpv6(nd_type, 0));
        assert!(server_admits(&mut net, &nd), "ND type {nd_type} in");
        let out = to_client(&[], ICMPV6, &frames::icmpv6(nd_type, 0));
        assert!(
            passes(&mut net, Hook::PodEgress, "server", &out),
            "ND type {nd_type} out"
        );
    }
    let request = to_server(&[], ICMPV6, &frames::icmpv6(128, 0x1234));
    assert!(!server_admits(&mut net, &request), "no rule");

    let with_rule = isolated(&net).allow("server", Direction::Ingress, 3, Some(ICMPV6), None);
    net.apply(&with_rule.build());
    assert!(server_admits(&mut net, &request), "ICMPv6 rule");
    let reply = to_client(&[], ICMPV6, &frames::icmpv6(129, 0x1234));
    assert!(
        passes(&mut net, Hook::PodEgress, "server", &reply),
        "the reply is tracked"
    );
    let other = to_client(&[], ICMPV6, &frames::icmpv6(129, 0x4321));
    assert!(
        !passes(&mut net, Hook::PodEgress, "server", &other),
        "another identifier"
    );
    let server_if = net.ifindex("server");
    let tracked: Vec<_> = net
        .conntrack()
        .into_iter()
        .filter(|f| f.ifindex == server_if && f.protocol == ICMPV6)
        .map(|f| (f.source, f.destination))
        .collect();
    assert_eq!(
        tracked,
        vec![((addr(CLIENT_V6), 0x1234), (addr(SERVER_V6), 0x1234))]
    );
}

#[test]
fn sctp_over_ipv6_is_matched_by_sctp_port_rules() {
    let mut net = server_and_client();
    let tables = Tables::new(&net)
        .isolate("server", true, false)
        .pod_class("client", 3)
        .allow_port("server", Direction::Ingress, 3, SCTP, 5000);
    net.apply(&tables.build());
    let sctp = |dport| {
        to_server(
            &[Ext::HopByHop],
            SCTP,
            &super::probe::sctp_init(40000, dport, 7),
        )
    };
    assert!(server_admits(&mut net, &sctp(5000)));
    assert!(!server_admits(&mut net, &sctp(5001)));
    let udp = to_server(&[], UDP, &[0x9c, 0x40, 0x13, 0x88, 0, 8, 0, 0]);
    assert!(!server_admits(&mut net, &udp), "UDP 5000");
}

/// Addresses of one family for the deferral walk-through.
struct Family {
    client: IpAddr,
    backend: IpAddr,
    vip: IpAddr,
    stranger: IpAddr,
}

#[test]
fn service_egress_deferral_step_by_step_in_both_families() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("backend", "10.1.0.10", "fd00:1::10"),
        ("client", "10.2.0.5", "fd00:2::5"),
    ]);
    let tables = Tables::new(&net)
        .isolate("client", true, true)
        .pod_class("backend", 5)
        .service("10.96.0.10/32")
        .service("fd96::10/128")
        .allow_port("client", Direction::Egress, 5, TCP, 8080);
    net.apply(&tables.build());
    let families = [
        Family {
            client: addr("10.2.0.5"),
            backend: addr("10.1.0.10"),
            vip: addr("10.96.0.10"),
            stranger: addr("10.99.0.1"),
        },
        Family {
            client: addr("fd00:2::5"),
            backend: addr("fd00:1::10"),
            vip: addr("fd96::10"),
            stranger: addr("fd99::1"),
        },
    ];
    const OTHER_MARK: u32 = 0x4000;
    for f in families {
        let before = net.stats();
        // 1. The client's side defers: marked and passed, every packet of the flow.
        let syn = frames::ip(f.client, f.vip, TCP, &frames::tcp(40000, 80));
        for _ in 0..2 {
            let out = net.run(Hook::PodEgress, "client", 0, &syn);
            assert!(
                out.passed && out.mark & MARK_DEFERRED_EGRESS != 0,
                "{out:?}"
            );
        }
        // 2. The backend's side decides the client's egress on the translated flow,
        //    clearing only its own mark bits.
        let dnat = frames::ip(f.client, f.backend, TCP, &frames::tcp(40000, 8080));
        let marked = MARK_DEFERRED_EGRESS | OTHER_MARK;
        let out = net.run(Hook::PodIngress, "backend", marked, &dnat);
        assert_eq!(
            (out.passed, out.mark),
            (true, OTHER_MARK),
            "allowed backend port"
        );
        let denied = frames::ip(f.client, f.backend, TCP, &frames::tcp(40001, 9090));
        assert!(
            !net.run(Hook::PodIngress, "backend", marked, &denied).passed,
            "9090"
        );
        assert!(
            passes(&mut net, Hook::PodIngress, "backend", &denied),
            "unmarked: no check"
        );
        let masqueraded = frames::ip(f.stranger, f.backend, TCP, &frames::tcp(40002, 8080));
        assert!(
            !net.run(Hook::PodIngress, "backend", marked, &masqueraded)
                .passed,
            "stranger"
        );
        // 3. The backend's answer is verified for the client...
        let answer = frames::ip(f.backend, f.client, TCP, &frames::tcp_ack(8080, 40000));
        let out = net.run(Hook::PodEgress, "backend", 0, &answer);
        assert!(out.passed && out.mark & MARK_REPLY_VERIFIED != 0, "{out:?}");
        // 4. ...and after un-DNAT, the isolated client takes it only with the mark.
        let undnat = frames::ip(f.vip, f.client, TCP, &frames::tcp_ack(80, 40000));
        assert!(
            !passes(&mut net, Hook::PodIngress, "client", &undnat),
            "unverified"
        );
        let out = net.run(Hook::PodIngress, "client", MARK_REPLY_VERIFIED, &undnat);
        assert_eq!((out.passed, out.mark), (true, 0), "verified, mark cleared");
        let after = net.stats();
        for (counter, n) in [
            ("egress_deferred", 2),
            ("drop_deferred_egress", 1),
            ("drop_deferred_unknown_source", 1),
        ] {
            assert_eq!(after.get(counter), before.get(counter) + n, "{counter}");
        }
    }
}
