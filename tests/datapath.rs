//! The datapath on real packets and on `BPF_PROG_TEST_RUN` frames, with tables
//! written by hand: ipBlock-style LPM prefixes, endPort ranges as port blocks, SCTP,
//! IPv6 (extension headers, fragments, ICMPv6 echo, neighbour discovery), ingress
//! from the node and Service egress deferral through a real nftables DNAT.
//!
//! Real-packet tests run in their own dual-stack namespaces (`datapath/net.rs`);
//! `datapath/verdicts.rs` is the table of single-frame verdicts (`BPF_PROG_TEST_RUN`);
//! `datapath/prog_test_run.rs` holds the frame sequences a table row cannot express;
//! `datapath/pods.rs` the pods, tables and frames the frame tests share;
//! `datapath/conntrack.rs` the conntrack lifecycle (states, timeouts, related ICMP
//! errors), `datapath/conntrack_limits.rs` and `datapath/flood.rs` what bounds the
//! table (a full table, a pod's limit, the sweep, a flooding pod), and
//! `datapath/recheck.rs` tracked flows re-decided after a policy change and the
//! bank stamp of same-node packets; `datapath/fast_path.rs` what the conntrack
//! fast path may pass on an entry alone and what it must leave to `decide`; `datapath/counters.rs`, `datapath/events.rs` and
//! `datapath/audit.rs` the per-policy counters, verdict events and audit mode;
//! `datapath/bench.rs` checks the pieces of `cargo xtask bench datapath`;
//! `datapath/fragments.rs` the non-first fragments of a datagram after its first
//! (frames) and `datapath/fragments_on_veths.rs` large datagrams and crafted
//! fragments on real veths, with and without reassembly in the node;
//! `datapath/rule_sets.rs` the two-step allow lookup against compiled tables,
//! `datapath/banks.rs` the two banks and the flip of hole-free updates,
//! `datapath/in_place.rs` peer entries changed in the active bank itself,
//! `datapath/in_place_endpoints.rs` a local pod's own entries written there,
//! `datapath/peer_hosts.rs` pod peers' host prefixes in their hash before the trie,
//! `datapath/pending.rs` interfaces no pod of the tables owns,
//! `datapath/pins.rs` a pinned datapath outliving its owner, adopted and removed,
//! `datapath/bypass.rs` what a pod crafts to get past its policy (VLAN tags,
//! spoofed ARP, tunnels, a Service naming a pod's address), sent from its namespace, and `datapath/kernel_log.rs`
//! the kernel debug channel, on and off.

mod support;

#[path = "datapath/audit.rs"]
mod audit;
#[path = "datapath/banks.rs"]
mod banks;
#[path = "datapath/bench.rs"]
mod bench;
#[path = "datapath/bypass.rs"]
mod bypass;
#[path = "datapath/cluster_counters.rs"]
mod cluster_counters;
#[path = "datapath/conntrack.rs"]
mod conntrack;
#[path = "datapath/conntrack_lifecycle.rs"]
mod conntrack_lifecycle;
#[path = "datapath/conntrack_limits.rs"]
mod conntrack_limits;
#[path = "datapath/conntrack_related.rs"]
mod conntrack_related;
#[path = "datapath/counters.rs"]
mod counters;
#[path = "datapath/events.rs"]
mod events;
#[path = "datapath/exits.rs"]
mod exits;
#[path = "datapath/fast_path.rs"]
mod fast_path;
#[path = "datapath/flood.rs"]
mod flood;
#[path = "datapath/fragment_frames.rs"]
mod fragment_frames;
#[path = "datapath/fragment_probes.rs"]
mod fragment_probes;
#[path = "datapath/fragments.rs"]
mod fragments;
#[path = "datapath/fragments_on_veths.rs"]
mod fragments_on_veths;
#[path = "datapath/frames.rs"]
mod frames;
#[path = "datapath/in_place.rs"]
mod in_place;
#[path = "datapath/in_place_endpoints.rs"]
mod in_place_endpoints;
#[path = "datapath/in_place_tables.rs"]
mod in_place_tables;
#[path = "datapath/ip_exits.rs"]
mod ip_exits;
#[path = "datapath/kernel_log.rs"]
mod kernel_log;
#[path = "datapath/net.rs"]
mod net;
#[path = "datapath/new_flow_lookups.rs"]
mod new_flow_lookups;
#[path = "datapath/node_backend.rs"]
mod node_backend;
#[path = "datapath/peer_hosts.rs"]
mod peer_hosts;
#[path = "datapath/pending.rs"]
mod pending;
#[path = "datapath/pins.rs"]
mod pins;
#[path = "datapath/pods.rs"]
mod pods;
#[path = "datapath/probe.rs"]
mod probe;
#[path = "datapath/prog_test_run.rs"]
mod prog_test_run;
#[path = "datapath/recheck.rs"]
mod recheck;
#[path = "datapath/rule_sets.rs"]
mod rule_sets;
#[path = "datapath/service_conntrack.rs"]
mod service_conntrack;
#[path = "datapath/sockets.rs"]
mod sockets;
#[path = "datapath/stamps.rs"]
mod stamps;
#[path = "datapath/state_changed.rs"]
mod state_changed;
#[path = "datapath/tables.rs"]
mod tables;
#[path = "datapath/unanswered.rs"]
mod unanswered;
#[path = "datapath/verdicts.rs"]
mod verdicts;

use std::net::IpAddr;

use frames::{SCTP, TCP, UDP};
use net::Net;
use pods::{SERVER_V4, SERVER_V6};
use policy_agent::policy::tables::{Direction, PeerEntry, PortBlock};
use tables::Tables;

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// TCP from pod `from` to `to:port`, answered or refused.
fn tcp(net: &Net, from: &str, to: &str, port: u16) -> bool {
    probe::tcp(&net.pod(from).netns, None, addr(to), port)
}

#[test]
fn an_ipblock_prefix_admits_its_range_and_an_except_prefix_carves_a_hole() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("server", SERVER_V4, SERVER_V6),
        ("a", "10.2.0.5", "fd00:2::5"),
        ("b", "10.2.0.6", "fd00:2::6"),
        ("c", "10.3.0.7", "fd00:3::7"),
    ]);
    // ipBlock {cidr: 10.2.0.0/16, except: [10.2.0.6/32]} and its IPv6 twin: the
    // range is class 7, the except prefix is class 8, which no rule names.
    let with_except = Tables::new(&net)
        .isolate("server", true, false)
        .prefix("10.2.0.0/16", 7)
        .prefix("10.2.0.6/32", 8)
        .prefix("fd00:2::/64", 7)
        .prefix("fd00:2::6/128", 8)
        .allow_port("server", Direction::Ingress, 7, TCP, 80)
        .build();
    net.apply(&with_except);
    for server in [SERVER_V4, SERVER_V6] {
        assert!(tcp(&net, "a", server, 80), "a is in the cidr ({server})");
        assert!(!tcp(&net, "b", server, 80), "b is in the except ({server})");
        assert!(
            !tcp(&net, "c", server, 80),
            "c is outside the cidr ({server})"
        );
        assert!(!tcp(&net, "a", server, 81), "only port 80 ({server})");
    }

    // Without the except prefixes the range covers b too: stale prefixes are removed.
    let mut without_except = with_except.clone();
    without_except
        .peers
        .retain(|prefix, _| prefix.prefix_len() != 32 && prefix.prefix_len() != 128);
    net.apply(&without_except);
    assert!(tcp(&net, "b", SERVER_V4, 80), "except removed (IPv4)");
    assert!(tcp(&net, "b", SERVER_V6, 80), "except removed (IPv6)");
    assert!(!tcp(&net, "c", SERVER_V4, 80), "c stays outside");
}

#[test]
fn an_end_port_range_admits_exactly_its_ports() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("server", SERVER_V4, SERVER_V6),
        ("client", "10.2.0.5", "fd00:2::5"),
    ]);
    // port: 8000, endPort: 8010 -> 8000-8007, 8008-8009, 8010.
    let blocks = PortBlock::split_range(8000, 8010);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    let mut tables = Tables::new(&net)
        .isolate("server", true, false)
        .pod_class("client", 3);
    for block in blocks {
        tables = tables.allow("server", Direction::Ingress, 3, Some(TCP), Some(block));
    }
    net.apply(&tables.build());
    for (port, allowed) in [
        (7999, false),
        (8000, true),
        (8007, true),
        (8008, true),
        (8009, true),
        (8010, true),
        (8011, false),
        (8016, false),
    ] {
        assert_eq!(
            tcp(&net, "client", SERVER_V4, port),
            allowed,
            "IPv4 port {port}"
        );
    }
    assert!(tcp(&net, "client", SERVER_V6, 8005), "IPv6 in range");
    assert!(!tcp(&net, "client", SERVER_V6, 8011), "IPv6 past the range");
}

#[test]
fn sctp_is_matched_by_sctp_port_rules_only() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("server", SERVER_V4, SERVER_V6),
        ("client", "10.2.0.5", "fd00:2::5"),
    ]);
    let sctp_rule = Tables::new(&net)
        .isolate("server", true, false)
        .pod_class("client", 3)
        .allow_port("server", Direction::Ingress, 3, SCTP, 5000)
        .build();
    net.apply(&sctp_rule);
    let (client, server) = (
        net.pod("client").netns.clone(),
        net.pod("server").netns.clone(),
    );
    let before = net.stats();
    for to in [addr(SERVER_V4), addr(SERVER_V6)] {
        assert!(probe::sctp(&client, &server, to, 5000), "SCTP 5000 to {to}");
        assert!(
            !probe::sctp(&client, &server, to, 5001),
            "SCTP 5001 to {to}"
        );
    }
    let after = net.stats();
    assert!(
        after.get("drop_policy") >= before.get("drop_policy") + 2,
        "{after:?}"
    );

    let tcp_rule = Tables::new(&net)
        .isolate("server", true, false)
        .pod_class("client", 3)
        .allow_port("server", Direction::Ingress, 3, TCP, 5000)
        .build();
    net.apply(&tcp_rule);
    assert!(
        !probe::sctp(&client, &server, addr(SERVER_V4), 5000),
        "a TCP rule"
    );
    assert!(
        tcp(&net, "client", SERVER_V4, 5000),
        "TCP 5000 itself passes"
    );
}

#[test]
fn a_pod_sending_from_another_pods_address_is_dropped_at_its_own_veth() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("server", SERVER_V4, SERVER_V6),
        ("victim", "10.2.0.5", "fd00:2::5"),
        ("spoofer", "10.3.0.6", "fd00:3::6"),
    ]);
    // The server admits UDP 7000 from the victim only; the spoofer is not isolated.
    let tables = Tables::new(&net)
        .isolate("server", true, false)
        .pod_class("victim", 3)
        .allow_port("server", Direction::Ingress, 3, UDP, 7000)
        .build();
    net.apply(&tables);
    let (victim_v4, victim_v6) = (addr("10.2.0.5"), addr("fd00:2::5"));
    // The spoofer takes the victim's addresses as its own (NET_ADMIN in its pod).
    net.add_pod_addresses("spoofer", &[victim_v4, victim_v6]);
    let [victim, spoofer, server] =
        ["victim", "spoofer", "server"].map(|pod| net.pod(pod).netns.clone());
    let before = net.stats();
    for (to, as_victim) in [(SERVER_V4, victim_v4), (SERVER_V6, victim_v6)] {
        let to = addr(to);
        assert!(
            probe::udp(&victim, None, &server, to, 7000),
            "victim to {to}"
        );
        assert!(
            !probe::udp(&spoofer, None, &server, to, 7000),
            "spoofer as itself to {to}"
        );
        assert!(
            !probe::udp(&spoofer, Some(as_victim), &server, to, 7000),
            "spoofer as the victim to {to}"
        );
    }
    let after = net.stats();
    assert!(
        after.get("drop_spoofed_source") >= before.get("drop_spoofed_source") + 2,
        "{after:?}"
    );
}

#[test]
fn ingress_from_the_node_passes_and_its_replies_are_tracked() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("server", SERVER_V4, SERVER_V6),
        ("client", "10.2.0.5", "fd00:2::5"),
    ]);
    let (node_v4, node_v6) = (addr("10.99.0.1"), addr("fd99::1"));
    net.add_node_addresses(&[node_v4, node_v6]);
    let node = |on: bool| PeerEntry {
        class_id: 0,
        node: on,
        service: false,
    };
    // The server is isolated both ways with no rules at all: only the node flag
    // lets the node in, and only conntrack lets the answers out.
    let tables = |net: &Net, on: bool| {
        Tables::new(net)
            .isolate("server", true, true)
            .peer("10.99.0.1/32", node(on))
            .peer("fd99::1/128", node(on))
            .build()
    };
    let with_flag = tables(&net, true);
    net.apply(&with_flag);
    let before = net.stats();
    for (source, server) in [(node_v4, SERVER_V4), (node_v6, SERVER_V6)] {
        assert!(
            probe::tcp(&net.node, Some(source), addr(server), 80),
            "node {source}"
        );
        assert!(
            !tcp(&net, "client", server, 80),
            "a pod is not the node ({server})"
        );
    }
    let after = net.stats();
    assert!(
        after.get("allow_node") >= before.get("allow_node") + 2,
        "{after:?}"
    );
    assert!(
        after.get("allow_tracked") > before.get("allow_tracked"),
        "{after:?}"
    );

    let without_flag = tables(&net, false);
    net.apply(&without_flag);
    assert!(
        !probe::tcp(&net.node, Some(node_v4), addr(SERVER_V4), 80),
        "no node flag"
    );
}

#[test]
fn ipv6_is_decided_like_ipv4_and_neighbour_discovery_passes() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("server", SERVER_V4, SERVER_V6),
        ("a", "10.2.0.5", "fd00:2::5"),
        ("b", "10.3.0.6", "fd00:3::6"),
    ]);
    // Server: isolated both ways; a may reach TCP 80, b every protocol. Gateways are
    // found through ND, which must pass the isolated server's interface.
    let tables = Tables::new(&net)
        .isolate("server", true, true)
        .pod_class("a", 3)
        .pod_class("b", 4)
        .allow_port("server", Direction::Ingress, 3, TCP, 80)
        .allow("server", Direction::Ingress, 4, None, None)
        .build();
    net.apply(&tables);
    let before = net.stats();
    assert!(tcp(&net, "a", SERVER_V6, 80), "a rule with a port");
    assert!(!tcp(&net, "a", SERVER_V6, 81), "another port");
    let (a, b) = (net.pod("a").netns.clone(), net.pod("b").netns.clone());
    assert!(
        !probe::ping6(&a, addr(SERVER_V6), 0x0a0a),
        "a rule with ports"
    );
    assert!(
        probe::ping6(&b, addr(SERVER_V6), 0x0b0b),
        "a rule without ports"
    );
    assert!(
        !probe::tcp(&net.pod("server").netns, None, addr("fd00:2::5"), 80),
        "the server's egress is isolated"
    );
    let after = net.stats();
    assert!(
        after.get("allow_non_ip") > before.get("allow_non_ip"),
        "ND: {after:?}"
    );
    let server_if = net.ifindex("server");
    let echo = net
        .conntrack()
        .into_iter()
        .find(|f| f.ifindex == server_if && f.protocol == frames::ICMPV6)
        .unwrap_or_else(|| panic!("the echo request is tracked"));
    assert_eq!(
        (echo.source.1, echo.destination.1),
        (0x0b0b, 0x0b0b),
        "{echo:?}"
    );
    assert_eq!(echo.direction, Direction::Ingress);
}

#[test]
fn service_egress_is_decided_on_the_backend_after_dnat_and_replies_are_verified() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("backend", SERVER_V4, SERVER_V6),
        ("good", "10.2.0.5", "fd00:2::5"),
        ("bad", "10.3.0.6", "fd00:3::6"),
    ]);
    // A ClusterIP per family, DNAT to the backend's port 8080 as kube-proxy's
    // nftables mode does it, in the node namespace.
    net.nft(
        "table ip svc {\n chain pre {\n type nat hook prerouting priority dstnat;\n \
           ip daddr 10.96.0.10 tcp dport 80 dnat to 10.1.0.10:8080\n }\n}\n\
         table ip6 svc {\n chain pre {\n type nat hook prerouting priority dstnat;\n \
           ip6 daddr fd96::10 tcp dport 80 dnat to [fd00:1::10]:8080\n }\n}\n",
    );
    // good may reach the backend on 8080, bad only on 9090; both are isolated for
    // ingress with no rules, so answers pass only as verified replies.
    let tables = Tables::new(&net)
        .isolate("backend", true, false)
        .isolate("good", true, true)
        .isolate("bad", true, true)
        .pod_class("backend", 5)
        .pod_class("good", 2)
        .pod_class("bad", 3)
        .service("10.96.0.10/32")
        .service("fd96::10/128")
        .allow_port("good", Direction::Egress, 5, TCP, 8080)
        .allow_port("bad", Direction::Egress, 5, TCP, 9090)
        .allow("backend", Direction::Ingress, 2, Some(TCP), None)
        .allow("backend", Direction::Ingress, 3, Some(TCP), None)
        .build();
    net.apply(&tables);
    let before = net.stats();
    for vip in ["10.96.0.10", "fd96::10"] {
        assert!(tcp(&net, "good", vip, 80), "good via the Service {vip}");
        assert!(!tcp(&net, "bad", vip, 80), "bad via the Service {vip}");
    }
    let after = net.stats();
    for counter in ["allow_deferred_egress", "drop_deferred_egress"] {
        assert!(
            after.get(counter) > before.get(counter),
            "{counter}: {after:?}"
        );
    }
    // At good's interface: the ClusterIP flow is deferred, and the backend's side
    // tracked the translated flow once good's egress rule allowed it.
    let good_if = net.ifindex("good");
    let flows = net.conntrack();
    for (vip, backend) in [("10.96.0.10", SERVER_V4), ("fd96::10", SERVER_V6)] {
        let at_good = |dest: &str, port: u16| {
            flows
                .iter()
                .find(|f| f.ifindex == good_if && f.destination == (addr(dest), port))
                .unwrap_or_else(|| panic!("no flow to {dest}:{port} at good: {flows:#?}"))
        };
        let deferred = at_good(vip, 80);
        assert!(
            deferred.deferred && deferred.direction == Direction::Egress,
            "{deferred:?}"
        );
        let decided = at_good(backend, 8080);
        assert!(
            !decided.deferred && decided.counter_slot.is_some(),
            "{decided:?}"
        );
    }
    for backend in [SERVER_V4, SERVER_V6] {
        assert!(
            tcp(&net, "good", backend, 8080),
            "good straight to {backend}"
        );
        assert!(
            !tcp(&net, "bad", backend, 8080),
            "bad straight to {backend}"
        );
    }
}
