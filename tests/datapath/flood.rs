//! A pod that floods new flows, on real veths, cannot evict another pod's live
//! flows: the conntrack table evicts nothing, and the flooding pod stops at its own
//! limit of tracked flows (`drop_ct_endpoint_limit`), so the others keep their
//! flows and still open new ones. The table and the limit are small here
//! (`LoadOptions::conntrack_capacity`, `Config::ct_endpoint_flows`) so that a flood
//! of a few thousand datagrams overruns the table many times over. Nor can a pod
//! seed long-lived entries with bare TCP ACKs: a flow picked up mid-stream keeps
//! the opening timeout until the other side answers.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use policy_agent::{dataplane::LoadOptions, policy::tables::Direction};
use policy_common::{config::Config, ct::CT_STATE_OPENING};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{
    addr,
    frames::{self, ACK, TCP, UDP},
    net::Net,
    pods::{SERVER_V4, SERVER_V6},
    sockets::{Tcp, Udp},
    support,
    tables::Tables,
};

/// `CONNTRACK` entries in this test.
const CAPACITY: u32 = 4096;
/// Entries one pod interface may hold.
const PER_POD: u32 = 1024;
/// New flows the flooding pod opens: three times the table.
const FLOOD: u16 = 12_000;

/// Sends datagrams from pod `from` to each of `count` ports of `to`, from one
/// socket: `count` distinct 5-tuples, each a new flow, each sent to twice in a
/// row so that its entry looks as used as any live flow's.
fn flood(net: &Net, from: &str, to: IpAddr, count: u16) {
    let socket = Net::in_ns(&net.pod(from).netns, || UdpSocket::bind("0.0.0.0:0"))
        .unwrap_or_else(|e| panic!("flood socket: {e}"));
    for port in 0..count {
        let at = SocketAddr::new(to, 20_000 + port);
        for _ in 0..2 {
            socket
                .send_to(b"flood", at)
                .unwrap_or_else(|e| panic!("flood to {at}: {e}"));
        }
    }
}

#[test]
fn a_pod_flooding_new_flows_stops_at_its_limit_and_another_pods_live_flows_go_on() {
    support::require_root_and_bpf();
    let options = LoadOptions {
        conntrack_capacity: Some(CAPACITY),
        config: Config {
            ct_endpoint_flows: PER_POD,
            ..Config::DEFAULT
        },
        ..LoadOptions::default()
    };
    let mut net = Net::up_with(
        &[
            ("server", SERVER_V4, SERVER_V6),
            ("a", "10.2.0.5", "fd00:2::5"),
            ("b", "10.3.0.6", "fd00:3::6"),
        ],
        &options,
    );
    // Pod a denies all ingress; the server admits a on TCP 7000 and UDP 7001-7002 and
    // denies all egress: what the server sends a passes only as a reply of a's
    // tracked flows, at both ends. Pod b is open.
    let tables = Tables::new(&net)
        .isolate("a", true, false)
        .isolate("server", true, true)
        .pod_class("a", 3)
        .allow_port("server", Direction::Ingress, 3, TCP, 7000)
        .allow_port("server", Direction::Ingress, 3, UDP, 7001)
        .allow_port("server", Direction::Ingress, 3, UDP, 7002)
        .build();
    net.apply(&tables);
    let server = addr(SERVER_V4);
    let mut tcp = Tcp::open(&net, "a", "server", server, 7000);
    let udp = Udp::open(&net, "a", "server", server, 7001);
    assert!(tcp.server_gets(b"before") && tcp.client_gets(b"before"));
    assert!(udp.client_gets(b"before"));

    // Pod b opens three tables' worth of flows (to server ports its ingress denies).
    let before = net.stats();
    flood(&net, "b", server, FLOOD);
    let after = net.stats();
    // a's flows are still tracked at both ends: the server's answers pass.
    assert!(tcp.client_gets(b"after the flood"), "TCP answer");
    assert!(udp.client_gets(b"after the flood"), "UDP answer");
    assert!(tcp.server_gets(b"after the flood"), "TCP to the server");

    // b stopped at its limit: every flow past it was dropped at its own veth.
    let held = net
        .datapath
        .conntrack_held()
        .unwrap_or_else(|e| panic!("{e}"));
    let cpus = u32::try_from(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .unwrap_or(u32::MAX);
    let b_held = held.get(&net.ifindex("b")).copied().unwrap_or(0);
    assert!(
        (i64::from(PER_POD)..=i64::from(PER_POD + cpus)).contains(&b_held),
        "b holds {b_held} flows, its limit is {PER_POD}"
    );
    let refused = after.get("drop_ct_endpoint_limit") - before.get("drop_ct_endpoint_limit");
    assert!(
        refused >= u64::from(FLOOD) - u64::from(PER_POD + cpus),
        "{refused} of {FLOOD} flows refused: {:?}",
        after.growth_since(&before)
    );
    // ...and a opens new flows as ever.
    let fresh = Udp::open(&net, "a", "server", server, 7002);
    assert!(fresh.client_gets(b"new flow"), "a new flow's answer");
}

/// Pickups sent as bare ACKs in `a_pod_cannot_seed_established_entries_with_bare_acks`.
const PICKUPS: u16 = 50;

#[test]
fn a_pod_cannot_seed_established_entries_with_bare_acks() {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("server", SERVER_V4, SERVER_V6),
        ("b", "10.3.0.6", "fd00:3::6"),
    ]);
    // The server admits b on TCP 7000, so every ACK is tracked at both ends.
    let tables = Tables::new(&net)
        .isolate("server", true, false)
        .pod_class("b", 3)
        .allow_port("server", Direction::Ingress, 3, TCP, 7000)
        .build();
    net.apply(&tables);
    let server = addr(SERVER_V4);
    // Bare ACKs of no connection, from a raw socket (without a TCP checksum, so
    // the server's stack drops them unanswered, as an ACK to a closed port would
    // be answered by no one but a reset).
    let raw = Net::in_ns(&net.pod("b").netns, || {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP))
    })
    .unwrap_or_else(|e| panic!("raw TCP socket: {e}"));
    for i in 0..PICKUPS {
        let ack = frames::tcp_flags(30_000 + i, 7000, ACK);
        raw.send_to(&ack, &SockAddr::from(SocketAddr::new(server, 0)))
            .unwrap_or_else(|e| panic!("send a bare ACK: {e}"));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Each was picked up mid-stream at b's egress and the server's ingress, and
    // stays OPENING (the opening timeout, not the established one's six hours)
    // while nobody answers.
    let ends = [net.ifindex("b"), net.ifindex("server")];
    let picked: Vec<_> = net
        .conntrack()
        .into_iter()
        .filter(|flow| ends.contains(&flow.ifindex) && flow.destination == (server, 7000))
        .collect();
    assert_eq!(picked.len(), 2 * usize::from(PICKUPS), "{picked:#?}");
    for flow in &picked {
        assert_eq!(flow.state, CT_STATE_OPENING, "{flow:?}");
    }
}
