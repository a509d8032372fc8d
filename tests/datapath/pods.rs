//! The server, client and other pod that the frame tests (`audit.rs`,
//! `counters.rs`, `events.rs`, `conntrack.rs`, `verdicts.rs`) run between: their
//! addresses and endpoint ids, a quiet `Net` of them, the tables several tests
//! start from, and frames between them by address text.

use std::sync::atomic::{AtomicU16, Ordering};

use policy_agent::{
    dataplane::{EventVerdict, Hook, InterfaceIndex, LoadOptions, Traffic, VerdictRecord},
    model::builders::{cluster, pod, ClusterBuilder},
    policy::tables::{DatapathTables, Direction},
};

use super::{
    addr,
    frames::{self, TCP, UDP},
    net::{moved, Net},
    support,
    tables::Tables,
};

/// Source ports for frames that must each be a new flow (a SYN is decided afresh
/// anyway), fresh for every call.
pub fn fresh_sport() -> u16 {
    static SPORT: AtomicU16 = AtomicU16::new(41000);
    SPORT.fetch_add(1, Ordering::Relaxed)
}

/// The server and client as a cluster for the compiler: `x/server` (`app=web`)
/// and `x/client` (`role=client`), at their addresses.
pub fn server_and_client_cluster() -> ClusterBuilder {
    cluster()
        .pod(
            pod("x", "server")
                .labels([("app", "web")])
                .ip(SERVER_V4)
                .ip(SERVER_V6)
                .build(),
        )
        .pod(
            pod("x", "client")
                .labels([("role", "client")])
                .ip(CLIENT_V4)
                .ip(CLIENT_V6)
                .build(),
        )
}

/// The three pods as a cluster for the compiler: `server_and_client_cluster`
/// and `x/other` (`role=<other_role>`), at its addresses.
pub fn labelled(other_role: &str) -> ClusterBuilder {
    server_and_client_cluster().pod(
        pod("x", "other")
            .labels([("role", other_role)])
            .ip(OTHER_V4)
            .ip(OTHER_V6)
            .build(),
    )
}

/// The server's addresses.
pub const SERVER_V4: &str = "10.1.0.10";
pub const SERVER_V6: &str = "fd00:1::10";
/// The client's addresses.
pub const CLIENT_V4: &str = "10.2.0.5";
pub const CLIENT_V6: &str = "fd00:2::5";
/// The other pod's addresses.
pub const OTHER_V4: &str = "10.3.0.6";
pub const OTHER_V6: &str = "fd00:3::6";

/// The pods as `Net::up` takes them, in endpoint id order.
pub const PODS: [(&str, &str, &str); 3] = [
    ("server", SERVER_V4, SERVER_V6),
    ("client", CLIENT_V4, CLIENT_V6),
    ("other", OTHER_V4, OTHER_V6),
];

/// Endpoint ids `Tables::new` gives: position in `PODS` (and `Net::up`) + 1.
pub const SERVER_ID: u32 = 1;
pub const CLIENT_ID: u32 = 2;

/// Both families' (client, server) addresses.
pub const FAMILIES: [(&str, &str); 2] = [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)];

/// The ClusterIP of each family in `client_egress_through_services`, in
/// `FAMILIES` order.
pub const CLUSTER_IPS: [&str; 2] = ["10.96.0.10", "fd96::10"];

/// `pods` up with the datapath loaded with `options`, then silenced
/// (`Net::quiet`): only a test's own frames move counters and emit events.
pub fn quiet_net(pods: &[(&str, &str, &str)], options: &LoadOptions) -> Net {
    support::require_root_and_bpf();
    let mut net = Net::up_with(pods, options);
    net.quiet();
    net
}

/// A quiet server and client.
pub fn server_and_client() -> Net {
    quiet_net(&PODS[..2], &LoadOptions::default())
}

/// A quiet server, client and other pod.
pub fn three_pods() -> Net {
    quiet_net(&PODS, &LoadOptions::default())
}

/// The server isolated for ingress by policy 0, whose rule 0 admits the client
/// (class 3) on TCP 80.
pub fn server_admits_port_80(net: &Net) -> Tables<'_> {
    Tables::new(net)
        .isolate("server", true, false)
        .isolated_by("server", &[0], &[])
        .pod_class("client", 3)
        .allow_port("server", Direction::Ingress, 3, TCP, 80)
}

/// The client isolated for egress (class 3) and the server for ingress (class
/// 5): with `egress_open` the client's egress admits the server on `protocol`
/// `port` and the server's ingress admits nobody there, else the other way
/// round. Either state alone drops the client's packets to that port, so a
/// packet must not pass by mixing them.
pub fn one_side_open(net: &Net, egress_open: bool, protocol: u8, port: u16) -> Tables<'_> {
    let tables = Tables::new(net)
        .isolate("client", false, true)
        .isolate("server", true, false)
        .pod_class("server", 5)
        .pod_class("client", 3);
    if egress_open {
        tables.allow_port("client", Direction::Egress, 5, protocol, port)
    } else {
        tables.allow_port("server", Direction::Ingress, 3, protocol, port)
    }
}

/// The client isolated for egress by policy 0, whose rule 0 admits the server
/// (class 5) on TCP 8080 only; a ClusterIP per family (`CLUSTER_IPS`) defers the
/// client's egress to the server's side, as with a Service whose backend it is.
pub fn client_egress_through_services(net: &Net) -> DatapathTables {
    let [vip_v4, vip_v6] = CLUSTER_IPS;
    Tables::new(net)
        .isolate("client", false, true)
        .isolated_by("client", &[], &[0])
        .pod_class("server", 5)
        .service(&format!("{vip_v4}/32"))
        .service(&format!("{vip_v6}/128"))
        .allow_port("client", Direction::Egress, 5, TCP, 8080)
        .build()
}

/// A TCP SYN between two addresses of one family.
pub fn syn(from: &str, to: &str, sport: u16, dport: u16) -> Vec<u8> {
    frames::ip(addr(from), addr(to), TCP, &frames::tcp(sport, dport))
}

/// A TCP ACK between two addresses of one family.
pub fn ack(from: &str, to: &str, sport: u16, dport: u16) -> Vec<u8> {
    frames::ip(addr(from), addr(to), TCP, &frames::tcp_ack(sport, dport))
}

/// A UDP datagram between two addresses of one family.
pub fn udp(from: &str, to: &str, sport: u16, dport: u16) -> Vec<u8> {
    frames::ip(addr(from), addr(to), UDP, &frames::udp(sport, dport))
}

/// What `frames` weigh as a counter counts them: packets and bytes.
pub fn traffic<F: AsRef<[u8]>>(frames: &[F]) -> Traffic {
    Traffic {
        packets: frames.len() as u64,
        bytes: frames.iter().map(|f| f.as_ref().len() as u64).sum(),
    }
}

/// Where and how a verdict event says its packet was decided: interface, endpoint
/// id, direction, verdict and reason.
pub fn decision(
    event: &VerdictRecord,
) -> (InterfaceIndex, u32, Direction, EventVerdict, &'static str) {
    (
        event.ifindex,
        event.endpoint_id,
        event.direction,
        event.verdict,
        event.reason,
    )
}

/// Runs `frame` and checks the verdict and the one counter that moved; the mark
/// the frame left with.
pub fn expect(
    net: &mut Net,
    hook: Hook,
    pod: &str,
    mark: u32,
    frame: &[u8],
    passed: bool,
    counter: &str,
) -> u32 {
    let before = net.stats();
    let out = net.run(hook, pod, mark, frame);
    let after = net.stats();
    assert_eq!(out.passed, passed, "{hook:?} {pod}: {counter}");
    assert_eq!(moved(&before, &after), vec![(counter, 1)], "{hook:?} {pod}");
    out.mark
}
