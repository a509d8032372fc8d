//! A policy change cuts the tracked flows it denies, on real sockets: the first
//! packet of a flow after the change, either way, re-decides it with the new state;
//! a denied flow is revoked and its packets dropped (`drop_revoked`) both ways, and
//! a flow the new state still allows goes on without losing a packet. With
//! `CONFIG_FLAG_KEEP_ESTABLISHED` tracked flows outlive the change instead.

use std::net::IpAddr;

use policy_agent::{
    dataplane::{LoadOptions, TrackedFlow},
    policy::tables::{DatapathTables, Direction},
};
use policy_common::config::{Config, CONFIG_FLAG_KEEP_ESTABLISHED};

use super::{
    addr,
    frames::{TCP, UDP},
    net::Net,
    pods::{one_side_open, FAMILIES, PODS},
    sockets::{Tcp, Udp},
    support,
    tables::Tables,
};

/// Ports of the flows the change denies (TCP, UDP) and of those it still allows.
const CUT: (u16, u16) = (7000, 7001);
const KEPT: (u16, u16) = (7002, 7003);

/// The server isolated for ingress, admitting the client (class 3) on the kept
/// ports and, with `all`, on the cut ones too.
fn server_admits(net: &Net, all: bool) -> DatapathTables {
    let mut tables = Tables::new(net)
        .isolate("server", true, false)
        .pod_class("client", 3)
        .allow_port("server", Direction::Ingress, 3, TCP, KEPT.0)
        .allow_port("server", Direction::Ingress, 3, UDP, KEPT.1);
    if all {
        tables = tables
            .allow_port("server", Direction::Ingress, 3, TCP, CUT.0)
            .allow_port("server", Direction::Ingress, 3, UDP, CUT.1);
    }
    tables.build()
}

/// One TCP connection and one UDP flow from the client to `server` on `ports`,
/// checked both ways.
fn open(net: &Net, server: IpAddr, ports: (u16, u16)) -> (Tcp, Udp) {
    let mut tcp = Tcp::open(net, "client", "server", server, ports.0);
    let udp = Udp::open(net, "client", "server", server, ports.1);
    assert!(
        tcp.server_gets(b"hello") && tcp.client_gets(b"hello"),
        "TCP {server}"
    );
    assert!(
        udp.server_gets(b"hello") && udp.client_gets(b"hello"),
        "UDP {server}"
    );
    (tcp, udp)
}

/// The server's entry of the flow to `server:port`, if tracked.
fn server_entry(net: &mut Net, server: IpAddr, port: u16) -> Option<TrackedFlow> {
    let server_if = net.ifindex("server");
    net.conntrack()
        .into_iter()
        .find(|flow| flow.ifindex == server_if && flow.destination == (server, port))
}

/// A server and client, loaded with `config`, admitting every flow.
fn up(config: Config) -> Net {
    let options = LoadOptions {
        config,
        ..LoadOptions::default()
    };
    support::require_root_and_bpf();
    // Not quieted: IPv6 stays on, and neighbour discovery moves counters too.
    let mut net = Net::up_with(&PODS[..2], &options);
    let tables = server_admits(&net, true);
    net.apply(&tables);
    net
}

#[test]
fn a_policy_change_cuts_the_flows_it_denies_both_ways_and_the_flows_it_allows_lose_nothing() {
    let mut net = up(Config::DEFAULT);
    for (_, server) in FAMILIES {
        let server = addr(server);
        net.apply(&server_admits(&net, true));
        let (mut cut_tcp, cut_udp) = open(&net, server, CUT);
        let (mut kept_tcp, kept_udp) = open(&net, server, KEPT);
        let before = net.stats();
        net.apply(&server_admits(&net, false));
        // The first packet after the change comes from the server (a reply) on the
        // TCP connection, from the client on the UDP flow: either way the flow is
        // re-decided, revoked, and dropped from then on, both ways.
        assert!(
            !cut_tcp.client_gets(b"after"),
            "cut TCP, server to client ({server})"
        );
        assert!(
            !cut_tcp.server_gets(b"after"),
            "cut TCP, client to server ({server})"
        );
        assert!(
            !cut_udp.server_gets(b"after"),
            "cut UDP, client to server ({server})"
        );
        assert!(
            !cut_udp.client_gets(b"after"),
            "cut UDP, server to client ({server})"
        );
        let revoked = net.stats().get("drop_revoked") - before.get("drop_revoked");
        assert!(
            revoked >= 4,
            "{revoked} packets dropped as revoked ({server})"
        );
        for port in [CUT.0, CUT.1] {
            let entry = server_entry(&mut net, server, port);
            assert!(
                entry.as_ref().is_some_and(|e| e.revoked),
                "{server}:{port}: {entry:?}"
            );
        }
        // The flows the new state allows take its generation and lose no packet.
        for i in 0..20u8 {
            let message = [b'k', i];
            assert!(kept_tcp.client_gets(&message), "kept TCP to client, #{i}");
            assert!(kept_tcp.server_gets(&message), "kept TCP to server, #{i}");
            assert!(kept_udp.server_gets(&message), "kept UDP to server, #{i}");
            assert!(kept_udp.client_gets(&message), "kept UDP to client, #{i}");
        }
        let generation = net.datapath.generation();
        for port in [KEPT.0, KEPT.1] {
            let entry = server_entry(&mut net, server, port);
            assert!(
                entry
                    .as_ref()
                    .is_some_and(|e| !e.revoked && e.generation == generation),
                "{server}:{port}: {entry:?}"
            );
        }
    }
}

#[test]
fn with_keep_established_flows_a_tracked_flow_outlives_a_change_that_denies_it() {
    let mut net = up(Config {
        flags: CONFIG_FLAG_KEEP_ESTABLISHED,
        ..Config::DEFAULT
    });
    for (_, server) in FAMILIES {
        let server = addr(server);
        net.apply(&server_admits(&net, true));
        let (mut tcp, udp) = open(&net, server, CUT);
        let before = net.stats();
        net.apply(&server_admits(&net, false));
        assert!(
            tcp.client_gets(b"after") && tcp.server_gets(b"after"),
            "TCP {server}"
        );
        assert!(
            udp.server_gets(b"after") && udp.client_gets(b"after"),
            "UDP {server}"
        );
        assert_eq!(net.stats().get("drop_revoked"), before.get("drop_revoked"));
        // A new flow meets the new policy.
        assert!(
            !udp.server_gets_anew(&net, "client", b"new"),
            "a new UDP flow to {server}"
        );
    }
}

/// UDP port the client's egress and the server's ingress trade
/// (`one_side_open`).
const HALF: u16 = 7004;

#[test]
fn with_keep_established_flows_an_unanswered_flow_meets_the_new_policy() {
    // Kept flows are answered ones (`ct::lookup` finds no entry for a non-TCP
    // flow that never got an answer): a flow the client's egress tracked but the
    // server's ingress dropped is no connection, and were it kept at the client
    // it would pass the egress the new state denies and meet only the new state's
    // ingress at the server, which admits it.
    let mut net = up(Config {
        flags: CONFIG_FLAG_KEEP_ESTABLISHED,
        ..Config::DEFAULT
    });
    for (_, server) in FAMILIES {
        let at = std::net::SocketAddr::new(addr(server), HALF);
        net.apply(&one_side_open(&net, true, UDP, HALF).build());
        let server_socket = Net::in_ns(&net.pod("server").netns, || std::net::UdpSocket::bind(at))
            .unwrap_or_else(|e| panic!("bind {at}: {e}"));
        server_socket
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap_or_else(|e| panic!("read timeout: {e}"));
        let client = Net::in_ns(&net.pod("client").netns, || {
            let any = if at.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let socket = std::net::UdpSocket::bind(any)?;
            socket.connect(at)?;
            Ok::<_, std::io::Error>(socket)
        })
        .unwrap_or_else(|e| panic!("udp socket to {at}: {e}"));
        let arrives = |message: &[u8]| {
            client
                .send(message)
                .unwrap_or_else(|e| panic!("udp send: {e}"));
            let mut buffer = [0u8; 64];
            server_socket.recv(&mut buffer).is_ok()
        };
        assert!(!arrives(b"before"), "the server's ingress drops UDP {at}");
        net.apply(&one_side_open(&net, false, UDP, HALF).build());
        assert!(
            !arrives(b"after"),
            "UDP {at} passed end to end, which neither state allows"
        );
    }
}
