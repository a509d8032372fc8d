//! The classifiers on hand-made frames (`BPF_PROG_TEST_RUN`), for what the verdict
//! table (`verdicts.rs`) cannot express: the conntrack entries ICMPv6 echo and
//! off-link ND leave, source address validation across pods and families with its
//! counts, and each branch of Service egress deferral with forged marks. The frames
//! never leave the kernel, but conntrack and counters change as for real packets.

use std::net::{IpAddr, Ipv6Addr};

use policy_agent::{dataplane::Hook, policy::tables::Direction};
use policy_common::verdict::{MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED};

use super::{
    addr,
    frames::{self, Ext, ICMPV6, TCP, UDP},
    net::Net,
    pods::{CLIENT_V6, SERVER_V6},
    support,
    tables::Tables,
};

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
fn off_link_neighbour_discovery_admitted_by_an_icmpv6_rule_is_tracked_with_ports_zero() {
    // (Which ND passes without a rule, and which is plain ICMPv6: the verdict table.)
    let mut net = server_and_client();
    let with_rule = isolated(&net).allow("server", Direction::Ingress, 3, Some(ICMPV6), None);
    net.apply(&with_rule.build());
    // A redirect between global addresses: ND, but not on-link control.
    let redirect = frames::icmpv6(137, 0);
    let frame = frames::hop_limit(to_server(&[], ICMPV6, &redirect), 255);
    assert!(server_admits(&mut net, &frame));
    let server_if = net.ifindex("server");
    let tracked: Vec<_> = net
        .conntrack()
        .into_iter()
        .filter(|f| f.ifindex == server_if && f.protocol == ICMPV6)
        .map(|f| (f.source, f.destination))
        .collect();
    assert_eq!(tracked, vec![((addr(CLIENT_V6), 0), (addr(SERVER_V6), 0))]);
}

#[test]
fn icmpv6_echo_pairs_by_identifier() {
    let mut net = server_and_client();
    net.apply(&isolated(&net).build());
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
        // 1. The client's side defers: marked and passed, every packet of the flow
        //    (the SYN records the deferred flow, the ACK matches it).
        let syn = frames::ip(f.client, f.vip, TCP, &frames::tcp(40000, 80));
        let ack = frames::ip(f.client, f.vip, TCP, &frames::tcp_ack(40000, 80));
        for (what, packet) in [("SYN", &syn), ("ACK", &ack)] {
            let out = net.run(Hook::PodEgress, "client", 0, packet);
            assert!(
                out.passed && out.mark & MARK_DEFERRED_EGRESS != 0,
                "{what}: {out:?}"
            );
        }
        let denied_syn = frames::ip(f.client, f.vip, TCP, &frames::tcp(40001, 80));
        assert!(passes(&mut net, Hook::PodEgress, "client", &denied_syn));
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
        // 3. The backend's answer is verified for the client, but not its answer on
        //    the tuple the client's egress policy denied (which the unmarked packet
        //    above made the backend track).
        let answer = frames::ip(f.backend, f.client, TCP, &frames::tcp_ack(8080, 40000));
        let out = net.run(Hook::PodEgress, "backend", 0, &answer);
        assert!(out.passed && out.mark & MARK_REPLY_VERIFIED != 0, "{out:?}");
        let denied_answer = frames::ip(f.backend, f.client, TCP, &frames::tcp_ack(9090, 40001));
        let out = net.run(Hook::PodEgress, "backend", 0, &denied_answer);
        assert_eq!(
            (out.passed, out.mark),
            (true, net.stamp()),
            "denied tuple: not verified, only stamped"
        );
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
            ("allow_deferred_egress", 3),
            ("drop_deferred_egress", 1),
            ("drop_deferred_unknown_source", 1),
        ] {
            assert_eq!(after.get(counter), before.get(counter) + n, "{counter}");
        }
    }
}

#[test]
fn only_a_reply_the_backend_tracked_is_verified_for_the_client() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("backend", "10.1.0.10", "fd00:1::10"),
        ("client", "10.2.0.5", "fd00:2::5"),
    ]);
    let tables = Tables::new(&net)
        .isolate("client", true, true)
        .pod_class("backend", 5)
        .allow_port("client", Direction::Egress, 5, TCP, 8080);
    net.apply(&tables.build());
    for (client, backend) in [
        (addr("10.2.0.5"), addr("10.1.0.10")),
        (addr("fd00:2::5"), addr("fd00:1::10")),
    ] {
        // The client tracks its egress to the backend, but the backend never saw it:
        // the backend's packet on the reversed tuple is no reply there, so it gets
        // no mark (it is decided as the backend's own new, unisolated egress).
        let syn = frames::ip(client, backend, TCP, &frames::tcp(40000, 8080));
        assert!(passes(&mut net, Hook::PodEgress, "client", &syn));
        let answer = frames::ip(backend, client, TCP, &frames::tcp_ack(8080, 40000));
        let out = net.run(Hook::PodEgress, "backend", 0, &answer);
        assert_eq!(
            (out.passed, out.mark),
            (true, net.stamp()),
            "not a reply at the backend: only stamped"
        );
        // Once the backend's ingress tracked the flow, its answer is a reply. The
        // client decided this flow at its own hook (no Service translated it), so
        // the answer is not verified, only stamped, and the client's ingress
        // passes it on its own entry. (A deferred flow's answer is verified:
        // `service_egress_deferral_step_by_step_in_both_families`.)
        let syn = frames::ip(client, backend, TCP, &frames::tcp(40001, 8080));
        assert!(passes(&mut net, Hook::PodEgress, "client", &syn));
        assert!(passes(&mut net, Hook::PodIngress, "backend", &syn));
        let answer = frames::ip(backend, client, TCP, &frames::tcp_ack(8080, 40001));
        let out = net.run(Hook::PodEgress, "backend", 0, &answer);
        assert_eq!(
            (out.passed, out.mark),
            (true, net.stamp()),
            "the client's own flow: only stamped"
        );
        assert!(passes(&mut net, Hook::PodIngress, "client", &answer));
        // The same answer on the classifier's long way (IPv4 options, an IPv6
        // destination options header: no fast path), where `verify_reply` runs:
        // it too leaves the client's own flow unverified.
        let long_way = match (backend, client) {
            (IpAddr::V4(_), _) => frames::ipv4_options(answer.clone(), 1),
            (IpAddr::V6(b), IpAddr::V6(c)) => frames::ipv6(
                b,
                c,
                &[Ext::DestOptions { units: 0 }],
                TCP,
                &frames::tcp_ack(8080, 40001),
            ),
            _ => unreachable!("one family per pair"),
        };
        let out = net.run(Hook::PodEgress, "backend", 0, &long_way);
        assert_eq!(
            (out.passed, out.mark),
            (true, net.stamp()),
            "the client's own flow on the long way: only stamped"
        );
        assert!(passes(&mut net, Hook::PodIngress, "client", &long_way));
    }
}

/// Whether the client's egress entry of the flow from `client`:`sport` carries
/// `CT_FLAG_DIRECT`; `None` without one.
fn direct_entry(net: &mut Net, client: IpAddr, sport: u16) -> Option<bool> {
    let client_if = net.ifindex("client");
    net.conntrack()
        .into_iter()
        .find(|e| {
            e.ifindex == client_if
                && e.direction == Direction::Egress
                && e.source == (client, sport)
        })
        .map(|e| e.direct)
}

#[test]
fn a_flow_the_client_decided_itself_stays_direct_when_a_policy_change_re_decides_it() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("backend", "10.1.0.10", "fd00:1::10"),
        ("client", "10.2.0.5", "fd00:2::5"),
    ]);
    let tables = |extra_port| {
        Tables::new(&net)
            .isolate("client", true, true)
            .pod_class("backend", 5)
            .allow_port("client", Direction::Egress, 5, TCP, 8080)
            .allow_port("client", Direction::Egress, 5, TCP, extra_port)
            .build()
    };
    let (first, second) = (tables(8081), tables(8082));
    net.apply(&first);
    for (i, (client, backend)) in [
        (addr("10.2.0.5"), addr("10.1.0.10")),
        (addr("fd00:2::5"), addr("fd00:1::10")),
    ]
    .into_iter()
    .enumerate()
    {
        let sport = 41000 + i as u16;
        let syn = frames::ip(client, backend, TCP, &frames::tcp(sport, 8080));
        assert!(passes(&mut net, Hook::PodEgress, "client", &syn));
        assert!(passes(&mut net, Hook::PodIngress, "backend", &syn));
        assert_eq!(direct_entry(&mut net, client, sport), Some(true));
        // Another state: the client's next packet re-decides its flow (still
        // allowed), which keeps the flag, so the answer is still only stamped.
        net.apply(if i == 0 { &second } else { &first });
        let ack = frames::ip(client, backend, TCP, &frames::tcp_ack(sport, 8080));
        assert!(passes(&mut net, Hook::PodEgress, "client", &ack));
        let generation = net.datapath.generation();
        let entry = direct_entry(&mut net, client, sport);
        assert_eq!(entry, Some(true), "re-decided at generation {generation}");
        assert!(passes(&mut net, Hook::PodIngress, "backend", &ack));
        let answer = frames::ip(backend, client, TCP, &frames::tcp_ack(8080, sport));
        let out = net.run(Hook::PodEgress, "backend", 0, &answer);
        assert_eq!((out.passed, out.mark), (true, net.stamp()), "{client}");
    }
}

#[test]
fn a_pod_may_send_only_from_its_own_addresses_or_ipv6_link_local() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("backend", "10.1.0.10", "fd00:1::10"),
        ("open", "10.2.0.5", "fd00:2::5"),
        ("isolated", "10.3.0.6", "fd00:3::6"),
    ]);
    // isolated may reach the backend on 8080 (also through the Service); open is
    // not isolated at all. Neither may borrow the other's address.
    let tables = Tables::new(&net)
        .isolate("isolated", false, true)
        .pod_class("backend", 5)
        .service("10.96.0.10/32")
        .service("fd96::10/128")
        .allow_port("isolated", Direction::Egress, 5, TCP, 8080);
    net.apply(&tables.build());
    let before = net.stats();
    let mut spoofed = 0;
    for [open, isolated, backend, vip, stranger] in [
        [
            "10.2.0.5",
            "10.3.0.6",
            "10.1.0.10",
            "10.96.0.10",
            "10.99.0.1",
        ],
        [
            "fd00:2::5",
            "fd00:3::6",
            "fd00:1::10",
            "fd96::10",
            "fd99::1",
        ],
    ]
    .map(|family| family.map(addr))
    {
        let to_backend = |src| frames::ip(src, backend, TCP, &frames::tcp(40000, 8080));
        let to_vip = |src| frames::ip(src, vip, TCP, &frames::tcp(40000, 80));
        // Each pod from its own address: decided as usual.
        for (pod, own) in [("open", open), ("isolated", isolated)] {
            let frame = to_backend(own);
            assert!(passes(&mut net, Hook::PodEgress, pod, &frame), "{pod}");
        }
        // The open pod as the isolated one (directly, and to the Service, where the
        // backend would apply isolated's egress policy) or as a stranger; the
        // isolated pod as the open one.
        for (pod, source, frame) in [
            ("open", isolated, to_backend(isolated)),
            ("open", isolated, to_vip(isolated)),
            ("open", stranger, to_backend(stranger)),
            ("isolated", open, to_backend(open)),
            ("isolated", open, to_vip(open)),
        ] {
            let out = net.run(Hook::PodEgress, pod, 0, &frame);
            assert_eq!((out.passed, out.mark), (false, 0), "{pod} as {source}");
            spoofed += 1;
        }
    }
    // IPv6 link-local and unspecified sources go on to the usual decision: the
    // open pod passes them, the isolated pod's policy drops them.
    let backend_v6 = addr("fd00:1::10");
    for source in ["fe80::5", "::"] {
        let frame = frames::ip(addr(source), backend_v6, TCP, &frames::tcp(40001, 8080));
        assert!(
            passes(&mut net, Hook::PodEgress, "open", &frame),
            "{source}"
        );
        let frame = frames::ip(addr(source), backend_v6, TCP, &frames::tcp(40001, 9090));
        assert!(
            !passes(&mut net, Hook::PodEgress, "isolated", &frame),
            "{source}"
        );
    }
    // Neighbour discovery is no exception: from a global address, it must be the
    // pod's own.
    let nd = |src| {
        let l4 = frames::icmpv6(135, 0);
        let frame = frames::ipv6(src, v6("ff02::1:ff00:1"), &[], ICMPV6, &l4);
        frames::hop_limit(frame, 255)
    };
    assert!(passes(
        &mut net,
        Hook::PodEgress,
        "open",
        &nd(v6("fd00:2::5"))
    ));
    assert!(!passes(
        &mut net,
        Hook::PodEgress,
        "open",
        &nd(v6("fd00:3::6"))
    ));
    spoofed += 1;
    // (Other counters also count the pods' own MLD and router solicitations.)
    let after = net.stats();
    for (counter, n) in [
        ("drop_spoofed_source", spoofed),
        ("allow_deferred_egress", 0),
    ] {
        assert_eq!(after.get(counter), before.get(counter) + n, "{counter}");
    }
}

/// A target pod, a client pod and another pod, with tracked flows kept across
/// policy changes (`CONFIG_FLAG_KEEP_ESTABLISHED`) or not.
fn target_and_client(kept: bool) -> Net {
    support::require_root_and_bpf();
    let options = if kept {
        policy_agent::dataplane::LoadOptions {
            config: policy_common::config::Config {
                flags: policy_common::config::CONFIG_FLAG_KEEP_ESTABLISHED,
                ..policy_common::config::Config::DEFAULT
            },
            ..policy_agent::dataplane::LoadOptions::default()
        }
    } else {
        policy_agent::dataplane::LoadOptions::default()
    };
    Net::up_with(
        &[
            ("target", "10.1.0.10", "fd00:1::10"),
            ("client", "10.2.0.5", "fd00:2::5"),
            ("other", "10.4.0.7", "fd00:4::7"),
        ],
        &options,
    )
}

/// A UDP flow from `client:port` to `target:7000`, sent and answered with every
/// hook passing it: its datagram and its answer.
fn answered_flow(net: &mut Net, client: IpAddr, target: IpAddr, port: u16) -> (Vec<u8>, Vec<u8>) {
    let datagram = frames::ip(client, target, UDP, &frames::udp(port, 7000));
    let answer = frames::ip(target, client, UDP, &frames::udp(7000, port));
    assert!(passes(net, Hook::PodEgress, "client", &datagram));
    assert!(passes(net, Hook::PodIngress, "target", &datagram));
    assert!(passes(net, Hook::PodEgress, "target", &answer));
    assert!(passes(net, Hook::PodIngress, "client", &answer));
    (datagram, answer)
}

/// The client isolated for egress (and ingress with `both`), allowed to class 5
/// on UDP 7000; the target's addresses in class 5, Service addresses with
/// `service`; the other pod in class 9.
fn client_to_target(
    net: &Net,
    both: bool,
    service: bool,
) -> policy_agent::policy::tables::DatapathTables {
    let entry = policy_agent::policy::tables::PeerEntry {
        class_id: 5,
        node: false,
        service,
    };
    Tables::new(net)
        .isolate("client", both, true)
        .peer("10.1.0.10/32", entry)
        .peer("fd00:1::10/128", entry)
        .pod_class("other", 9)
        .allow_port("client", Direction::Egress, 5, UDP, 7000)
        .build()
}

/// Each family's client, target and other pod addresses (`target_and_client`).
fn client_target_other() -> [(IpAddr, IpAddr, IpAddr); 2] {
    [
        (addr("10.2.0.5"), addr("10.1.0.10"), addr("10.4.0.7")),
        (addr("fd00:2::5"), addr("fd00:1::10"), addr("fd00:4::7")),
    ]
}

/// The peer entry of a pod address in `class_id` that a Service also names.
fn service_named(class_id: u32) -> policy_agent::policy::tables::PeerEntry {
    policy_agent::policy::tables::PeerEntry {
        class_id,
        node: false,
        service: true,
    }
}

/// A SYN to a pod address that a Service also names, on a port nothing
/// translates: the pod's side judges the client's egress by class and allows
/// it, and the client's entry of the tuple stays a deferral, decided there (the
/// client's hook defers every packet, so a later translation of the tuple is
/// decided at its backend). A SYN finds no entry to pass on, so this is about
/// the deferral the client's hook wrote for it, not a tracked flow.
#[test]
fn a_syn_to_a_service_named_pod_keeps_the_clients_entry_a_deferral() {
    let mut net = target_and_client(false);
    let named = service_named(5);
    let tables = Tables::new(&net)
        .isolate("client", true, true)
        .peer("10.1.0.10/32", named)
        .peer("fd00:1::10/128", named)
        .allow_port("client", Direction::Egress, 5, TCP, 80)
        .build();
    net.apply(&tables);
    let client_if = net.ifindex("client");
    for (i, (client, target)) in [
        (addr("10.2.0.5"), addr("10.1.0.10")),
        (addr("fd00:2::5"), addr("fd00:1::10")),
    ]
    .into_iter()
    .enumerate()
    {
        let sport = 43000 + i as u16;
        let syn = frames::ip(client, target, TCP, &frames::tcp(sport, 80));
        let out = net.run(Hook::PodEgress, "client", 0, &syn);
        assert!(
            out.passed && out.mark & MARK_DEFERRED_EGRESS != 0,
            "{out:?}"
        );
        let at_target = net.run(Hook::PodIngress, "target", MARK_DEFERRED_EGRESS, &syn);
        assert!(
            at_target.passed,
            "{target}: allowed by class: {at_target:?}"
        );
        let entry = net
            .conntrack()
            .into_iter()
            .find(|e| {
                e.ifindex == client_if
                    && e.direction == Direction::Egress
                    && e.source == (client, sport)
            })
            .unwrap_or_else(|| panic!("{client}: no entry"));
        assert!(
            entry.deferred,
            "{client}: the target's side made the client's entry a plain one: {entry:?}"
        );
    }
}

/// With `--keep-established-flows`, a datagram to a Service-named pod that the
/// pod's side allowed under one policy (its entry a deferral decided there), but
/// that got no answer, is decided again under the next: a decision there holds
/// for the generation that made it alone. Here the old policy allowed the
/// client's egress but not the pod's ingress, the new one the other way round:
/// neither lets the datagram through, so it must not pass.
#[test]
fn a_deferral_decided_there_holds_for_its_own_generation_even_when_flows_are_kept() {
    let mut net = target_and_client(true);
    let named = service_named(5);
    let tables = |client_out: bool| {
        let tables = Tables::new(&net)
            .isolate("client", false, true)
            .isolate("target", true, false)
            .peer("10.1.0.10/32", named)
            .peer("fd00:1::10/128", named)
            .pod_class("client", 3);
        if client_out {
            tables.allow_port("client", Direction::Egress, 5, UDP, 7000)
        } else {
            tables.allow_port("target", Direction::Ingress, 3, UDP, 7000)
        }
        .build()
    };
    let (old, new) = (tables(true), tables(false));
    for (i, (client, target)) in [
        (addr("10.2.0.5"), addr("10.1.0.10")),
        (addr("fd00:2::5"), addr("fd00:1::10")),
    ]
    .into_iter()
    .enumerate()
    {
        net.apply(&old);
        let datagram = frames::ip(client, target, UDP, &frames::udp(44000 + i as u16, 7000));
        let out = net.run(Hook::PodEgress, "client", 0, &datagram);
        assert!(
            out.passed && out.mark & MARK_DEFERRED_EGRESS != 0,
            "{out:?}"
        );
        let at_target = net.run(Hook::PodIngress, "target", MARK_DEFERRED_EGRESS, &datagram);
        assert!(!at_target.passed, "{target}: the old ingress denies it");
        net.apply(&new);
        let out = net.run(Hook::PodEgress, "client", 0, &datagram);
        assert!(
            out.passed && out.mark & MARK_DEFERRED_EGRESS != 0,
            "{out:?}"
        );
        let at_target = net.run(Hook::PodIngress, "target", MARK_DEFERRED_EGRESS, &datagram);
        assert!(
            !at_target.passed,
            "{target}: passed on the old policy's egress decision and the new ingress"
        );
    }
}

/// With `--keep-established-flows`, a flow the client's hook decided itself
/// keeps passing a policy change, unless its destination has become a Service
/// address: then the node may translate the same tuple to a pod the egress
/// never judged, so its next packet goes on as a deferral. As any deferral, it
/// is decided where it arrives, and the answer of the pod it reached, verified
/// there, gets into the client past its isolated ingress.
#[test]
fn a_kept_flow_to_an_address_that_became_a_service_address_is_deferred_again() {
    let mut net = target_and_client(true);
    let (plain, named) = (
        client_to_target(&net, true, false),
        client_to_target(&net, true, true),
    );
    for (i, (client, target)) in [
        (addr("10.2.0.5"), addr("10.1.0.10")),
        (addr("fd00:2::5"), addr("fd00:1::10")),
    ]
    .into_iter()
    .enumerate()
    {
        net.apply(&plain);
        let sport = 44500 + i as u16;
        let (datagram, answer) = answered_flow(&mut net, client, target, sport);
        let kept = net.run(Hook::PodEgress, "client", 0, &datagram);
        assert!(
            kept.passed && kept.mark & MARK_DEFERRED_EGRESS == 0,
            "{kept:?}"
        );
        net.apply(&named);
        let out = net.run(Hook::PodEgress, "client", 0, &datagram);
        assert!(
            out.passed && out.mark & MARK_DEFERRED_EGRESS != 0,
            "{target} became a Service address: the kept flow's packet must be deferred: {out:?}"
        );
        let there = net.run(Hook::PodIngress, "target", out.mark, &datagram);
        assert!(there.passed, "decided at {target}: {there:?}");
        let verified = net.run(Hook::PodEgress, "target", 0, &answer);
        assert!(
            verified.passed && verified.mark & MARK_REPLY_VERIFIED != 0,
            "the answer to the deferral must be verified at {target}: {verified:?}"
        );
        assert!(
            net.run(Hook::PodIngress, "client", verified.mark, &answer)
                .passed,
            "the verified answer from {target} into the client"
        );
    }
}

/// With `--keep-established-flows`, an entry the client's hook did not decide
/// (the backend's side tracked a Service flow's translated tuple as a would-drop
/// of the client's egress in audit mode) stops passing once the egress enforces:
/// a packet on that tuple, sent by the client directly, is judged afresh at the
/// client's hook (and dropped), not deferred on the strength of the ended audit.
#[test]
fn an_ended_audit_on_an_entry_the_client_did_not_decide_is_judged_afresh() {
    let mut net = target_and_client(true);
    let tables = |audit: bool| {
        let mut tables = Tables::new(&net)
            .isolate("client", false, true)
            .pod_class("target", 5)
            .service("10.96.0.60/32")
            .service("fd00:96::60/128")
            .build();
        let key = net.pod("client").key.clone();
        if let Some(entry) = tables.endpoints.get_mut(&key) {
            entry.audit_egress = audit;
        }
        tables
    };
    let (auditing, enforcing) = (tables(true), tables(false));
    for (i, (client, target, vip)) in [
        (addr("10.2.0.5"), addr("10.1.0.10"), addr("10.96.0.60")),
        (addr("fd00:2::5"), addr("fd00:1::10"), addr("fd00:96::60")),
    ]
    .into_iter()
    .enumerate()
    {
        net.apply(&auditing);
        let sport = 44700 + i as u16;
        let to_vip = frames::ip(client, vip, UDP, &frames::udp(sport, 53));
        let out = net.run(Hook::PodEgress, "client", 0, &to_vip);
        assert!(
            out.passed && out.mark & MARK_DEFERRED_EGRESS != 0,
            "{out:?}"
        );
        // Translated by the node to the target, a would-drop there.
        let translated = frames::ip(client, target, UDP, &frames::udp(sport, 5353));
        let at_target = net.run(
            Hook::PodIngress,
            "target",
            MARK_DEFERRED_EGRESS,
            &translated,
        );
        assert!(
            at_target.passed,
            "{target}: a would-drop passes: {at_target:?}"
        );
        // Answered (so the entry is no longer only opening).
        let answer = frames::ip(target, client, UDP, &frames::udp(5353, sport));
        assert!(net.run(Hook::PodEgress, "target", 0, &answer).passed);
        net.apply(&enforcing);
        let direct = net.run(Hook::PodEgress, "client", 0, &translated);
        assert!(
            !direct.passed,
            "{target}: the ended audit's entry let the client's direct packet on: {direct:?}"
        );
    }
}

/// A client isolated for egress only answers a datagram from a pod whose
/// address a Service names. Once the node has forgotten that flow, the client's
/// "answer" is a new connection to a Service address, which the node may
/// translate to a pod the client's egress denies: so it is deferred, passes at
/// the pod it answers (on the client's own entry of the flow) and is dropped
/// where the node translated it to, flows kept or not.
#[test]
fn a_reply_to_a_service_address_is_deferred_and_judged_where_it_arrives() {
    for kept in [false, true] {
        let mut net = target_and_client(kept);
        let tables = Tables::new(&net)
            .isolate("client", false, true)
            .peer("10.1.0.10/32", service_named(5))
            .peer("fd00:1::10/128", service_named(5))
            .pod_class("other", 9)
            .build();
        net.apply(&tables);
        for (i, (client, target, other)) in client_target_other().into_iter().enumerate() {
            let port = 45000 + i as u16;
            let direct = frames::ip(client, other, UDP, &frames::udp(port, 7001));
            assert!(
                !passes(&mut net, Hook::PodEgress, "client", &direct),
                "the client's egress denies {other}"
            );
            let inbound = frames::ip(target, client, UDP, &frames::udp(7000, port));
            assert!(passes(&mut net, Hook::PodIngress, "client", &inbound));
            let reply = frames::ip(client, target, UDP, &frames::udp(port, 7000));
            let out = net.run(Hook::PodEgress, "client", 0, &reply);
            assert!(
                out.passed && out.mark & MARK_DEFERRED_EGRESS != 0,
                "kept {kept}: a reply to the Service address {target} must be deferred: {out:?}"
            );
            assert!(
                net.run(Hook::PodIngress, "target", out.mark, &reply).passed,
                "kept {kept}: the reply, untranslated, at {target}"
            );
            let translated = frames::ip(client, other, UDP, &frames::udp(port, 7001));
            let there = net.run(Hook::PodIngress, "other", out.mark, &translated);
            assert!(
                !there.passed,
                "kept {kept}: the reply translated to {other} passed the client's egress: {there:?}"
            );
        }
    }
}

/// A packet stamped before a flip that made its destination a Service address
/// arrives with the old stamp. The destination's side re-decides the client's
/// entry for it, but that entry does not come out as decided by the client's own
/// hook (`CT_FLAG_DIRECT`): the client's next packet on the tuple is deferred,
/// and so judged where the node translates it to.
#[test]
fn a_stale_packet_does_not_make_the_clients_entry_direct_for_the_new_state() {
    let mut net = target_and_client(false);
    let (plain, named) = (
        client_to_target(&net, false, false),
        client_to_target(&net, false, true),
    );
    for (i, (client, target, other)) in client_target_other().into_iter().enumerate() {
        net.apply(&plain);
        let port = 47000 + i as u16;
        let (datagram, _) = answered_flow(&mut net, client, target, port);
        let in_flight = net.run(Hook::PodEgress, "client", 0, &datagram);
        assert!(in_flight.passed && in_flight.mark & MARK_DEFERRED_EGRESS == 0);
        net.apply(&named);
        let stale = net.run(Hook::PodIngress, "target", in_flight.mark, &datagram);
        assert!(
            stale.passed,
            "the stale packet, allowed by {target}'s class"
        );
        let next = net.run(Hook::PodEgress, "client", 0, &datagram);
        assert!(
            next.passed && next.mark & MARK_DEFERRED_EGRESS != 0,
            "{target} is a Service address now: the next packet must be deferred: {next:?}"
        );
        let translated = frames::ip(client, other, UDP, &frames::udp(port, 7001));
        assert!(
            !net.run(Hook::PodIngress, "other", next.mark, &translated)
                .passed,
            "{client} reached {other} past its egress policy"
        );
    }
}

/// The same stale packet between two pods no Service names: the destination's
/// re-decision leaves the client's entry its own hook's decision, so the flow's
/// next packets pass undeferred, as before the change.
#[test]
fn a_stale_packet_leaves_a_plain_flow_decided_by_the_clients_hook() {
    let mut net = target_and_client(false);
    let tables = |port: u16| {
        Tables::new(&net)
            .isolate("client", false, true)
            .pod_class("target", 5)
            .allow_port("client", Direction::Egress, 5, UDP, 7000)
            .allow_port("client", Direction::Egress, 5, UDP, port)
            .build()
    };
    let (before, after) = (tables(7001), tables(7002));
    for (i, (client, target, _)) in client_target_other().into_iter().enumerate() {
        net.apply(&before);
        let port = 47100 + i as u16;
        let (datagram, _) = answered_flow(&mut net, client, target, port);
        let in_flight = net.run(Hook::PodEgress, "client", 0, &datagram);
        net.apply(&after);
        let stale = net.run(Hook::PodIngress, "target", in_flight.mark, &datagram);
        assert!(stale.passed, "the stale packet, still allowed at {target}");
        let next = net.run(Hook::PodEgress, "client", 0, &datagram);
        assert!(
            next.passed && next.mark & MARK_DEFERRED_EGRESS == 0,
            "the next packet to {target}, which no Service names, must not be deferred: {next:?}"
        );
    }
}

/// A stale SYN, or a stale first datagram nobody answered yet, finds no entry at
/// the destination's side to pass on: its egress is judged there for that packet
/// alone, and the client's own entry of the flow stays its hook's decision, so
/// the flow's next packets are not deferred.
#[test]
fn a_stale_opening_packet_leaves_the_flow_decided_by_the_clients_hook() {
    let mut net = target_and_client(false);
    let tables = |net: &Net, port: u16| {
        Tables::new(net)
            .isolate("client", false, true)
            .pod_class("target", 5)
            .allow_port("client", Direction::Egress, 5, TCP, 7000)
            .allow_port("client", Direction::Egress, 5, UDP, 7000)
            .allow_port("client", Direction::Egress, 5, UDP, port)
            .build()
    };
    let (before, after) = (tables(&net, 7001), tables(&net, 7002));
    for (i, (client, target, _)) in client_target_other().into_iter().enumerate() {
        let port = 47300 + i as u16;
        let syn = frames::ip(
            client,
            target,
            TCP,
            &frames::tcp_flags(port, 7000, frames::SYN),
        );
        let synack = frames::ip(
            target,
            client,
            TCP,
            &frames::tcp_flags(7000, port, frames::SYN | frames::ACK),
        );
        let ack = frames::ip(
            client,
            target,
            TCP,
            &frames::tcp_flags(port, 7000, frames::ACK),
        );
        let datagram = frames::ip(client, target, UDP, &frames::udp(port, 7000));
        let answer = frames::ip(target, client, UDP, &frames::udp(7000, port));
        for (opening, answer, next) in [(&syn, &synack, &ack), (&datagram, &answer, &datagram)] {
            net.apply(&before);
            let in_flight = net.run(Hook::PodEgress, "client", 0, opening);
            assert!(in_flight.passed);
            net.apply(&after);
            let stale = net.run(Hook::PodIngress, "target", in_flight.mark, opening);
            assert!(stale.passed, "the stale packet, still allowed at {target}");
            assert!(passes(&mut net, Hook::PodEgress, "target", answer));
            assert!(passes(&mut net, Hook::PodIngress, "client", answer));
            let then = net.run(Hook::PodEgress, "client", 0, next);
            assert!(
                then.passed && then.mark & MARK_DEFERRED_EGRESS == 0,
                "the flow's next packet to {target} must not be deferred: {then:?}"
            );
        }
    }
}

/// A stale reply is judged by the direction that opened its flow: the server's
/// ingress. It passes where that ingress allowed the flow, even though the
/// server's egress is isolated; and where the new state's ingress denies the
/// flow, it is dropped, as the server's next reply would be.
#[test]
fn a_stale_reply_is_judged_by_the_direction_that_opened_its_flow() {
    let mut net = target_and_client(false);
    let server_egress = |net: &Net, port: u16| {
        Tables::new(net)
            .isolate("target", false, true)
            .pod_class("client", 6)
            .allow_port("target", Direction::Egress, 6, UDP, port)
            .build()
    };
    let server_ingress = |net: &Net, allow: bool| {
        let tables = Tables::new(net)
            .isolate("target", true, false)
            .pod_class("client", 6);
        if allow {
            tables.allow_port("target", Direction::Ingress, 6, UDP, 7000)
        } else {
            tables
        }
        .build()
    };
    let cases = [
        (server_egress(&net, 1), server_egress(&net, 2), true),
        (
            server_ingress(&net, true),
            server_ingress(&net, false),
            false,
        ),
    ];
    for (i, (client, target, _)) in client_target_other().into_iter().enumerate() {
        for (j, (before, after, passes_then)) in cases.iter().enumerate() {
            net.apply(before);
            let port = 47500 + (2 * i + j) as u16;
            let datagram = frames::ip(client, target, UDP, &frames::udp(port, 7000));
            let answer = frames::ip(target, client, UDP, &frames::udp(7000, port));
            assert!(passes(&mut net, Hook::PodEgress, "client", &datagram));
            assert!(passes(&mut net, Hook::PodIngress, "target", &datagram));
            let in_flight = net.run(Hook::PodEgress, "target", 0, &answer);
            assert!(in_flight.passed, "the reply at {target}'s egress");
            net.apply(after);
            let stale = net.run(Hook::PodIngress, "client", in_flight.mark, &answer);
            assert_eq!(
                stale.passed, *passes_then,
                "case {j}: the stale reply from {target}: {stale:?}"
            );
        }
    }
}
