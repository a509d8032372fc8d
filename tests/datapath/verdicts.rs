//! The verdict table: one row per case, each a sentence naming what happens to one
//! hand-made frame at one hook of one pod under one of a few named table fixtures,
//! run through the real classifiers with `BPF_PROG_TEST_RUN`. A row expects the
//! verdict (passed or dropped) and the one verdict counter that moves, by exactly
//! one, with every other verdict counter still (side counters such as
//! `events_rate_limited` may move on top). `every_row_of_the_verdict_table_holds` runs all rows
//! and names every row that fails.
//!
//! Fragments: a first fragment is decided on its ports like a whole packet; a
//! non-first fragment alone (its first fragment never passed) is dropped, whatever
//! the rules; what it meets after its first fragment is in `fragments.rs`.
//!
//! Rows are independent: each new flow gets its own source port or echo identifier,
//! and a row whose frame matched an earlier row's conntrack entry would move
//! `allow_tracked` instead of its counter and fail. IPv6 is switched off on the
//! namespaces' interfaces (the frames do not need it), so no neighbour discovery or
//! MLD of the pods moves a counter during a row.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU16, Ordering},
};

use policy_agent::{
    dataplane::{Hook, Stats},
    policy::tables::{DatapathTables, Direction},
};

#[path = "bypass_rows.rs"]
mod bypass_rows;

use super::{
    fragment_frames,
    frames::{self, Ext, ICMP, ICMPV6, SCTP, TCP, UDP},
    net::Net,
    pods::three_pods,
    probe,
    tables::Tables,
};

const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 5);
const OTHER_V4: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 6);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x10);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 5);
const OTHER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 3, 0, 0, 0, 0, 0, 6);
const SERVER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x10);
const CLIENT_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 5);
/// An address of no local pod and not the node's.
const WORLD_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 9);
/// The server's solicited-node multicast address.
const SOLICITED: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x10);
/// All MLDv2-capable routers: where MLDv2 reports go.
const MLDV2_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);
/// Destination options: the fifth header of a chain past the walk's limit, which
/// a rule of the `Rules` fixture names to show that such a chain never matches.
const DEST_OPTIONS: u8 = 60;

/// The tables a row runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fixture {
    /// Every pod registered, none isolated.
    Open,
    /// The server isolated both ways. Ingress: the client (class 3) may reach TCP 80,
    /// UDP 53, SCTP 5000 and, only to show that an over-long IPv6 extension chain
    /// matches no rule, protocol 60 port 0; the other pod (class 4) anything (a rule
    /// without ports). Egress: to the client TCP 80, to the other pod anything.
    Rules,
    /// As `Rules`, but the server's interface is not a registered endpoint.
    Unregistered,
    /// As `Rules`, and the server may tunnel (its namespace allows it).
    Tunnels,
}

impl Fixture {
    fn tables(self, net: &Net) -> DatapathTables {
        if self == Fixture::Open {
            return Tables::new(net)
                .pod_class("client", 3)
                .pod_class("other", 4)
                .build();
        }
        let rules = Tables::new(net)
            .isolate("server", true, true)
            .pod_class("client", 3)
            .pod_class("other", 4)
            .allow_port("server", Direction::Ingress, 3, TCP, 80)
            .allow_port("server", Direction::Ingress, 3, UDP, 53)
            .allow_port("server", Direction::Ingress, 3, SCTP, 5000)
            .allow_port("server", Direction::Ingress, 3, DEST_OPTIONS, 0)
            .allow("server", Direction::Ingress, 4, None, None)
            .allow_port("server", Direction::Egress, 3, TCP, 80)
            .allow("server", Direction::Egress, 4, None, None);
        match self {
            Fixture::Unregistered => rules.unregistered("server").build(),
            Fixture::Tunnels => rules.allow_tunnels("server").build(),
            _ => rules.build(),
        }
    }
}

/// What a row expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The program passes the frame and this counter moves by one.
    Passed(&'static str),
    /// The program drops the frame and this counter moves by one.
    Dropped(&'static str),
    /// `BPF_PROG_TEST_RUN` refuses the frame (`EINVAL`) before any program runs:
    /// the kernel wants a whole fixed L3 header in a test frame. No counter moves.
    Refused,
}

fn passed(counter: &'static str) -> Expect {
    Expect::Passed(counter)
}

fn dropped(counter: &'static str) -> Expect {
    Expect::Dropped(counter)
}

/// One case: `frame` through `hook` of `pod`'s interface under `fixture`.
struct Row {
    name: String,
    fixture: Fixture,
    hook: Hook,
    pod: &'static str,
    frame: Vec<u8>,
    expect: Expect,
}

/// A fresh source port (and echo identifier) for every flow of the table.
fn port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(30000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    frames::ipv4(src, dst, protocol, 0, l4)
}

fn v6(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    frames::ipv6(src, dst, &[], protocol, l4)
}

/// The L4 header a row names by protocol, to `dport` from a fresh port.
fn l4(protocol: u8, dport: u16) -> Vec<u8> {
    match protocol {
        TCP => frames::tcp(port(), dport),
        UDP => frames::udp(port(), dport),
        SCTP => probe::sctp_init(port(), dport, 7),
        ICMP => frames::icmp_echo(port()),
        ICMPV6 => frames::icmpv6(128, port()),
        _ => panic!("no L4 header for protocol {protocol}"),
    }
}

/// The server's address of `from`'s family.
fn server_of(from: IpAddr) -> IpAddr {
    if from.is_ipv4() {
        IpAddr::V4(SERVER_V4)
    } else {
        IpAddr::V6(SERVER_V6)
    }
}

fn truncated(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

/// `frame` with byte `at` set to `value`.
fn poke(mut frame: Vec<u8>, at: usize, value: u8) -> Vec<u8> {
    frame[at] = value;
    frame
}

/// An ICMPv6 ND (or MLD) message of `nd_type` with hop limit `hops`.
fn nd(src: Ipv6Addr, dst: Ipv6Addr, nd_type: u8, hops: u8) -> Vec<u8> {
    frames::hop_limit(v6(src, dst, ICMPV6, &frames::icmpv6(nd_type, 0)), hops)
}

/// Builds the rows, each with `row(name, fixture, hook, pod, frame, expected)`.
fn rows() -> Vec<Row> {
    use Fixture::{Open, Rules, Unregistered};
    use Hook::{PodEgress as Out, PodIngress as In};
    let mut rows = Vec::new();
    let mut row = |name: String, fixture, hook, pod, frame, expect| {
        rows.push(Row {
            name,
            fixture,
            hook,
            pod,
            frame,
            expect,
        });
    };
    let allowed = passed("allow_policy");
    let denied = dropped("drop_policy");
    let malformed = dropped("drop_malformed");
    let non_ip = passed("allow_non_ip");

    // Each protocol in both families, to an isolated pod: the rule's port and peer
    // pass, another port or a peer with only other rules drops.
    for (family, ip) in [("IPv4", false), ("IPv6", true)] {
        let to_server = |from: &str, protocol: u8, dport: u16| {
            let l4 = l4(protocol, dport);
            match (from, ip) {
                ("client", false) => v4(CLIENT_V4, SERVER_V4, protocol, &l4),
                ("other", false) => v4(OTHER_V4, SERVER_V4, protocol, &l4),
                ("client", true) => v6(CLIENT_V6, SERVER_V6, protocol, &l4),
                _ => v6(OTHER_V6, SERVER_V6, protocol, &l4),
            }
        };
        let echo = if ip { ICMPV6 } else { ICMP };
        let echo_name = if ip {
            "ICMPv6 echo request"
        } else {
            "ICMP echo request"
        };
        for (what, from, protocol, dport, expect) in [
            (
                "TCP SYN on the allowed port passes",
                "client",
                TCP,
                80,
                allowed,
            ),
            (
                "TCP SYN on another port is dropped",
                "client",
                TCP,
                81,
                denied,
            ),
            (
                "TCP SYN to the SCTP rule's port is dropped",
                "client",
                TCP,
                5000,
                denied,
            ),
            (
                "UDP datagram on the allowed port passes",
                "client",
                UDP,
                53,
                allowed,
            ),
            (
                "UDP datagram on another port is dropped",
                "client",
                UDP,
                54,
                denied,
            ),
            (
                "UDP datagram to the SCTP rule's port is dropped",
                "client",
                UDP,
                5000,
                denied,
            ),
            (
                "SCTP INIT on the allowed port passes",
                "client",
                SCTP,
                5000,
                allowed,
            ),
            (
                "SCTP INIT on another port is dropped",
                "client",
                SCTP,
                5001,
                denied,
            ),
            (
                "SCTP INIT to the TCP rule's port is dropped",
                "client",
                SCTP,
                80,
                denied,
            ),
            (
                "TCP SYN from a peer with a rule without ports passes",
                "other",
                TCP,
                9999,
                allowed,
            ),
        ] {
            let name = format!("an {family} {what} (ingress, isolated pod)");
            row(
                name,
                Rules,
                In,
                "server",
                to_server(from, protocol, dport),
                expect,
            );
        }
        row(
            format!("an {family} {echo_name} from a peer whose rules all name ports is dropped"),
            Rules,
            In,
            "server",
            to_server("client", echo, 0),
            denied,
        );
        row(
            format!("an {family} {echo_name} from a peer with a rule without ports passes"),
            Rules,
            In,
            "server",
            to_server("other", echo, 0),
            allowed,
        );
        row(
            format!("an {family} TCP SYN to a pod that is not isolated passes"),
            Open,
            In,
            "server",
            to_server("client", TCP, 81),
            passed("allow_unisolated"),
        );
        // Egress of the isolated server.
        let (server, client, other) = if ip {
            (
                IpAddr::V6(SERVER_V6),
                IpAddr::V6(CLIENT_V6),
                IpAddr::V6(OTHER_V6),
            )
        } else {
            (
                IpAddr::V4(SERVER_V4),
                IpAddr::V4(CLIENT_V4),
                IpAddr::V4(OTHER_V4),
            )
        };
        for (what, to, protocol, dport, expect) in [
            (
                "TCP SYN to the allowed peer and port passes",
                client,
                TCP,
                80,
                allowed,
            ),
            (
                "TCP SYN to the allowed peer on another port is dropped",
                client,
                TCP,
                81,
                denied,
            ),
            (
                "UDP datagram to a peer only TCP is allowed to is dropped",
                client,
                UDP,
                80,
                denied,
            ),
            (
                "UDP datagram to a peer allowed without ports passes",
                other,
                UDP,
                4242,
                allowed,
            ),
            (
                "echo request to a peer whose rule names a port is dropped",
                client,
                echo,
                0,
                denied,
            ),
            (
                "echo request to a peer allowed without ports passes",
                other,
                echo,
                0,
                allowed,
            ),
        ] {
            let name = format!("an {family} {what} (egress, isolated pod)");
            row(
                name,
                Rules,
                Out,
                "server",
                frames::ip(server, to, protocol, &l4(protocol, dport)),
                expect,
            );
        }
        row(
            format!(
                "an {family} TCP SYN a pod sends from another pod's address is dropped as spoofed"
            ),
            Open,
            Out,
            "client",
            frames::ip(server, other, TCP, &l4(TCP, 80)),
            dropped("drop_spoofed_source"),
        );
        row(
            format!(
                "an {family} TCP SYN handed to a pod but addressed to another local pod is dropped as misdelivered"
            ),
            Open,
            In,
            "client",
            frames::ip(other, server, TCP, &l4(TCP, 80)),
            dropped("drop_misdelivered"),
        );
        row(
            format!(
                "an {family} TCP SYN at an interface that is no registered endpoint is dropped"
            ),
            Unregistered,
            In,
            "server",
            to_server("client", TCP, 80),
            dropped("drop_unknown_endpoint"),
        );
    }

    // IPv4 options: the L4 header starts after IHL words, not after 20 bytes.
    let client_syn = |dport| v4(CLIENT_V4, SERVER_V4, TCP, &l4(TCP, dport));
    for (words, dport, expect, verdict) in [
        (1, 80, "passes", allowed),
        (10, 80, "passes", allowed),
        (10, 81, "is dropped", denied),
    ] {
        row(
            format!(
                "an IPv4 TCP SYN with {} bytes of options (IHL {}) to port {dport} {expect}",
                4 * words,
                5 + words
            ),
            Rules,
            In,
            "server",
            frames::ipv4_options(client_syn(dport), words),
            verdict,
        );
    }
    row(
        "an IPv4 UDP datagram with 8 bytes of options to the allowed port passes".into(),
        Rules,
        In,
        "server",
        frames::ipv4_options(v4(CLIENT_V4, SERVER_V4, UDP, &l4(UDP, 53)), 2),
        allowed,
    );

    // IPv6 extension headers: up to four are walked to the upper-layer header.
    let four = [
        Ext::HopByHop,
        Ext::DestOptions { units: 2 },
        Ext::Routing,
        Ext::DestOptions { units: 0 },
    ];
    let five = [four.as_slice(), &[Ext::DestOptions { units: 0 }]].concat();
    let ext = |from: Ipv6Addr, exts: &[Ext], protocol: u8, dport: u16| {
        frames::ipv6(from, SERVER_V6, exts, protocol, &l4(protocol, dport))
    };
    for (name, frame, expect) in [
        ("an IPv6 TCP SYN behind a hop-by-hop header to the allowed port passes", ext(CLIENT_V6, &[Ext::HopByHop], TCP, 80), allowed),
        ("an IPv6 UDP datagram behind a routing header to the allowed port passes", ext(CLIENT_V6, &[Ext::Routing], UDP, 53), allowed),
        ("an IPv6 TCP SYN behind four extension headers (the walk's limit) to the allowed port passes", ext(CLIENT_V6, &four, TCP, 80), allowed),
        ("an IPv6 TCP SYN behind four extension headers to another port is dropped", ext(CLIENT_V6, &four, TCP, 81), denied),
        ("an IPv6 SCTP INIT behind a hop-by-hop header to the allowed port passes", ext(CLIENT_V6, &[Ext::HopByHop], SCTP, 5000), allowed),
        ("an IPv6 SCTP INIT behind a hop-by-hop header to another port is dropped", ext(CLIENT_V6, &[Ext::HopByHop], SCTP, 5001), denied),
        ("an IPv6 ICMPv6 echo request behind a destination options header from a peer allowed without ports passes", ext(OTHER_V6, &[Ext::DestOptions { units: 1 }], ICMPV6, 0), allowed),
        // Past the limit the protocol and ports are unknown: dropped, even where
        // the client's "protocol 60 port 0" rule would match the fifth header.
        ("an IPv6 TCP SYN behind five extension headers is dropped, whatever rule names the fifth header", ext(CLIENT_V6, &five, TCP, 81), dropped("drop_ipv6_extension_chain")),
    ] {
        row(name.into(), Rules, In, "server", frame, expect);
    }

    // Fragments: a first fragment on its ports; a non-first fragment whose first
    // fragment never passed is dropped, even where a rule without ports or no
    // isolation would pass any packet; a first fragment must hold 16 bytes of its
    // upper-layer header; an IPv6 atomic fragment is a whole packet.
    let v4_fragment =
        |from, field: u16, dport| frames::ipv4(from, SERVER_V4, TCP, field, &l4(TCP, dport));
    let v6_fragment =
        |from, exts: &[Ext], dport| frames::ipv6(from, SERVER_V6, exts, TCP, &l4(TCP, dport));
    let orphan = |from: IpAddr, more| {
        let id = fragment_frames::next_id();
        fragment_frames::fragment((from, server_of(from)), UDP, id, (1480, more), &[0; 64])
    };
    let first_of = |from: IpAddr, data: &[u8]| {
        let id = fragment_frames::next_id();
        fragment_frames::fragment((from, server_of(from)), UDP, id, (0, true), data)
    };
    // A TCP SYN's bytes as a fragment of a datagram of its own (a fresh id: the
    // first fragment of no other row), the flags and offset field `field`.
    let high_offset = |field: u16| {
        let mut frame = v4_fragment(CLIENT_V4, field, 80);
        let id = fragment_frames::next_id() as u16;
        frame[14 + 4..14 + 6].copy_from_slice(&id.to_be_bytes());
        frame
    };
    let udp8 = |dport| fragment_frames::udp_datagram(port(), dport, 0);
    let udp16 = |dport| fragment_frames::udp_datagram(port(), dport, 8);
    let (client4, other4) = (IpAddr::V4(CLIENT_V4), IpAddr::V4(OTHER_V4));
    let (client6, other6) = (IpAddr::V6(CLIENT_V6), IpAddr::V6(OTHER_V6));
    let unknown = dropped("drop_fragment_unknown");
    let tiny = dropped("drop_fragment_tiny");
    // An IPv6 first fragment whose payload length ends with a destination options
    // header: the UDP header after it lies past the packet, in the frame's tail.
    let mut header_past_end = frames::ipv6(
        CLIENT_V6,
        SERVER_V6,
        &[Ext::Fragment { offset: 0 }, Ext::DestOptions { units: 0 }],
        UDP,
        &udp16(53),
    );
    header_past_end[14 + 4..14 + 6].copy_from_slice(&16u16.to_be_bytes());
    let atomic = |dport| {
        let mut frame = v6_fragment(CLIENT_V6, &[Ext::Fragment { offset: 0 }], dport);
        frame[14 + 40 + 3] &= !1;
        frame
    };
    for (name, fixture, frame, expect) in [
        ("an IPv4 first fragment (more fragments, offset 0) of a TCP SYN to the allowed port passes on its ports", Rules, v4_fragment(CLIENT_V4, 0x2000, 80), allowed),
        ("an IPv4 first fragment of a TCP SYN to another port is dropped", Rules, v4_fragment(CLIENT_V4, 0x2000, 81), denied),
        ("an IPv6 first fragment of a TCP SYN to the allowed port passes on its ports", Rules, v6_fragment(CLIENT_V6, &[Ext::Fragment { offset: 0 }], 80), allowed),
        ("an IPv6 first fragment of a TCP SYN to another port is dropped", Rules, v6_fragment(CLIENT_V6, &[Ext::HopByHop, Ext::Fragment { offset: 0 }], 81), denied),
        ("an IPv4 non-first fragment whose first fragment never passed is dropped", Rules, orphan(client4, true), unknown),
        ("an IPv4 last fragment whose first fragment never passed is dropped", Rules, orphan(client4, false), unknown),
        ("an IPv4 non-first fragment whose first never passed is dropped from a peer allowed without ports", Rules, orphan(other4, true), unknown),
        ("an IPv4 non-first fragment whose first never passed is dropped at a pod that is not isolated", Open, orphan(client4, true), unknown),
        ("an IPv6 non-first fragment whose first fragment never passed is dropped", Rules, orphan(client6, true), unknown),
        ("an IPv6 non-first fragment whose first never passed is dropped from a peer allowed without ports", Rules, orphan(other6, false), unknown),
        ("an IPv6 non-first fragment whose first never passed is dropped at a pod that is not isolated", Open, orphan(client6, true), unknown),
        ("an IPv6 non-first fragment behind a hop-by-hop header whose first never passed is dropped", Rules, v6_fragment(OTHER_V6, &[Ext::HopByHop, Ext::Fragment { offset: 185 }], 80), unknown),
        // The offset's high bits alone (2048 bytes: flags byte 0x01), with more
        // fragments, and with don't-fragment: a check that read only the low
        // byte of the offset would take these for whole packets.
        ("an IPv4 non-first fragment whose offset lies in the high byte alone is dropped at a pod that is not isolated", Open, high_offset(0x0100), unknown),
        ("an IPv4 non-first fragment (more fragments) whose offset lies in the high byte alone is dropped at a pod that is not isolated", Open, high_offset(0x2100), unknown),
        ("an IPv4 non-first fragment with don't-fragment set and its offset in the high byte alone is dropped at a pod that is not isolated", Open, high_offset(0x4100), unknown),
        ("an IPv4 non-first fragment whose offset lies in the high byte alone is dropped where its ports are allowed", Rules, high_offset(0x0100), unknown),
        ("an IPv4 first fragment holding 16 bytes of UDP to the allowed port passes", Rules, first_of(client4, &udp16(53)), allowed),
        ("an IPv4 first fragment holding only 8 bytes of UDP is dropped as tiny", Rules, first_of(client4, &udp8(53)), tiny),
        ("an IPv4 first fragment holding only 8 bytes is dropped as tiny at a pod that is not isolated", Open, first_of(client4, &udp8(53)), tiny),
        ("an IPv6 first fragment holding 16 bytes of UDP to the allowed port passes", Rules, first_of(client6, &udp16(53)), allowed),
        ("an IPv6 first fragment holding only 8 bytes of UDP is dropped as tiny", Rules, first_of(client6, &udp8(53)), tiny),
        ("an IPv6 first fragment whose UDP header lies past its payload length is dropped as tiny", Rules, header_past_end, tiny),
        ("an IPv6 atomic fragment (offset 0, no more fragments) to the allowed port passes as a whole packet", Rules, atomic(80), allowed),
        ("an IPv6 atomic fragment to another port is dropped as a whole packet", Rules, atomic(81), denied),
    ] {
        row(name.into(), fixture, In, "server", frame, expect);
    }

    // Neighbour discovery: on-link ND passes an isolated pod both ways, no rule
    // needed; routed ND, or ND between global addresses unless a solicitation or
    // advertisement with a local pod at the other end, is plain ICMPv6.
    let neighbour = |nd_type: u8| nd_type == 135 || nd_type == 136;
    for nd_type in 133..=137 {
        for (src, dst, hops, hook, expect, what) in [
            (
                CLIENT_V6,
                SOLICITED,
                255,
                In,
                non_ip,
                "to a multicast address passes in",
            ),
            (
                CLIENT_V6,
                SERVER_LL,
                255,
                In,
                non_ip,
                "to a link-local address passes in",
            ),
            (
                CLIENT_LL,
                SERVER_V6,
                255,
                In,
                non_ip,
                "from a link-local address passes in",
            ),
            (
                SERVER_V6,
                SOLICITED,
                255,
                Out,
                non_ip,
                "to a multicast address passes out",
            ),
            (
                SERVER_V6,
                CLIENT_LL,
                255,
                Out,
                non_ip,
                "to a link-local address passes out",
            ),
            (
                SERVER_LL,
                CLIENT_V6,
                255,
                Out,
                non_ip,
                "from a link-local address passes out",
            ),
            (
                CLIENT_LL,
                SERVER_LL,
                254,
                In,
                denied,
                "with hop limit 254 (routed) is ICMPv6 and dropped in",
            ),
            (
                WORLD_V6,
                SERVER_V6,
                255,
                In,
                denied,
                "from a global address of no local pod is ICMPv6 and dropped in",
            ),
            (
                SERVER_V6,
                WORLD_V6,
                255,
                Out,
                denied,
                "to a global address of no local pod is ICMPv6 and dropped out",
            ),
            // Pods of one bridge resolve each other's global addresses with
            // unicast solicitations and advertisements; other ND types between
            // them are ICMPv6.
            (
                CLIENT_V6,
                SERVER_V6,
                255,
                In,
                if neighbour(nd_type) { non_ip } else { denied },
                "between two local pods' global addresses comes in",
            ),
            (
                SERVER_V6,
                CLIENT_V6,
                255,
                Out,
                if neighbour(nd_type) { non_ip } else { denied },
                "between two local pods' global addresses goes out",
            ),
        ] {
            let name = format!("IPv6 neighbour discovery type {nd_type} {what} (isolated pod)");
            row(
                name,
                Rules,
                hook,
                "server",
                nd(src, dst, nd_type, hops),
                expect,
            );
        }
    }
    // Multicast listener discovery: on-link MLD (hop limit 1, link-local or
    // unspecified source, multicast destination) passes an isolated pod both ways.
    for mld_type in [130, 131, 132, 143] {
        for (src, dst, hops, hook, expect, what) in [
            (CLIENT_LL, MLDV2_ROUTERS, 1, In, non_ip, "passes in"),
            (SERVER_LL, MLDV2_ROUTERS, 1, Out, non_ip, "passes out"),
            (
                Ipv6Addr::UNSPECIFIED,
                MLDV2_ROUTERS,
                1,
                Out,
                non_ip,
                "from the unspecified address passes out",
            ),
            (
                CLIENT_LL,
                MLDV2_ROUTERS,
                2,
                In,
                denied,
                "with hop limit 2 is ICMPv6 and dropped in",
            ),
            (
                CLIENT_V6,
                MLDV2_ROUTERS,
                1,
                In,
                denied,
                "from a global address is ICMPv6 and dropped in",
            ),
            (
                CLIENT_LL,
                SERVER_LL,
                1,
                In,
                denied,
                "to a unicast address is ICMPv6 and dropped in",
            ),
        ] {
            let name =
                format!("IPv6 multicast listener discovery type {mld_type} {what} (isolated pod)");
            row(
                name,
                Rules,
                hook,
                "server",
                nd(src, dst, mld_type, hops),
                expect,
            );
        }
    }
    row(
        "an off-link ND redirect passes as ICMPv6 with ports 0 from a peer allowed without ports"
            .into(),
        Rules,
        In,
        "server",
        nd(OTHER_V6, SERVER_V6, 137, 255),
        allowed,
    );
    row(
        "a neighbour solicitation from another pod's global address is dropped as spoofed".into(),
        Open,
        Out,
        "client",
        nd(OTHER_V6, SOLICITED, 135, 255),
        dropped("drop_spoofed_source"),
    );

    // ARP passes an isolated pod both ways; other frames that are not IP, and ARP
    // at an interface podwall does not know, do not (more in `bypass_rows`).
    for (name, fixture, hook, frame, expect) in [
        (
            "an ARP request to an isolated pod passes",
            Rules,
            In,
            frames::arp(CLIENT_V4, SERVER_V4, false),
            non_ip,
        ),
        (
            "an ARP reply from an isolated pod passes",
            Rules,
            Out,
            frames::arp(SERVER_V4, CLIENT_V4, true),
            non_ip,
        ),
        (
            "an ARP request at an interface that is no registered endpoint is dropped",
            Unregistered,
            In,
            frames::arp(CLIENT_V4, SERVER_V4, false),
            dropped("drop_unknown_endpoint"),
        ),
        (
            "an LLDP frame (EtherType 0x88cc) to an isolated pod is dropped",
            Rules,
            In,
            [frames::ethernet(0x88cc), vec![0; 32]].concat(),
            dropped("drop_ether_type"),
        ),
    ] {
        row(name.into(), fixture, hook, "server", frame, expect);
    }

    // Truncated and malformed headers: dropped as malformed, even for an open pod.
    let syn_v4 = client_syn(80);
    let syn_v6 = v6(CLIENT_V6, SERVER_V6, TCP, &l4(TCP, 80));
    let mut options_past_end = syn_v4.clone();
    options_past_end.truncate(14 + 20 + 8);
    let options_past_end = poke(options_past_end, 14, 0x4f);
    let mut dest_options_past_end = frames::ipv6(
        CLIENT_V6,
        SERVER_V6,
        &[Ext::DestOptions { units: 0 }],
        TCP,
        &l4(TCP, 80),
    );
    dest_options_past_end[14 + 40 + 1] = 30; // the options now claim 248 bytes
    let syn_mapped = l4(TCP, 80);
    for (name, frame) in [
        ("an IPv4 header with IHL 4", poke(syn_v4.clone(), 14, 0x44)),
        ("an IPv4 header with IHL 0", poke(syn_v4.clone(), 14, 0x40)),
        (
            "version 6 in a frame with the IPv4 EtherType",
            poke(syn_v4.clone(), 14, 0x65),
        ),
        (
            "an IPv4 TCP segment cut before its destination port",
            truncated(syn_v4.clone(), 14 + 20 + 2),
        ),
        (
            "an IPv4 TCP segment cut before its flags",
            truncated(syn_v4.clone(), 14 + 20 + 8),
        ),
        (
            "an IPv4 TCP segment cut right before its flags byte",
            truncated(syn_v4.clone(), 14 + 20 + 13),
        ),
        (
            "an IPv4 UDP datagram cut before its ports",
            truncated(v4(CLIENT_V4, SERVER_V4, UDP, &l4(UDP, 53)), 14 + 20 + 1),
        ),
        (
            "an IPv4 UDP datagram cut one byte into its destination port",
            truncated(v4(CLIENT_V4, SERVER_V4, UDP, &l4(UDP, 53)), 14 + 20 + 3),
        ),
        (
            "an IPv4 ICMP echo request cut before its identifier",
            truncated(v4(CLIENT_V4, SERVER_V4, ICMP, &l4(ICMP, 0)), 14 + 20 + 4),
        ),
        (
            "IPv4 options (IHL 15) that run past the end of the frame",
            options_past_end,
        ),
        (
            "version 4 in a frame with the IPv6 EtherType",
            poke(syn_v6.clone(), 14, 0x40),
        ),
        (
            "an IPv6 TCP segment cut before its ports",
            truncated(syn_v6.clone(), 14 + 40 + 2),
        ),
        (
            "an IPv6 TCP segment cut right before its flags byte",
            truncated(syn_v6.clone(), 14 + 40 + 13),
        ),
        (
            "an IPv6 UDP datagram cut one byte into its destination port",
            truncated(v6(CLIENT_V6, SERVER_V6, UDP, &l4(UDP, 53)), 14 + 40 + 3),
        ),
        (
            "an IPv6 hop-by-hop header announced with nothing after the fixed header",
            v6(CLIENT_V6, SERVER_V6, 0, &[]),
        ),
        (
            "an IPv6 fragment header cut short",
            truncated(
                frames::ipv6(
                    CLIENT_V6,
                    SERVER_V6,
                    &[Ext::Fragment { offset: 0 }],
                    TCP,
                    &[],
                ),
                14 + 40 + 3,
            ),
        ),
        (
            "an IPv6 destination options header that claims to run past the end",
            dest_options_past_end,
        ),
        (
            "an IPv6 ICMPv6 echo request cut before its identifier",
            truncated(
                v6(CLIENT_V6, SERVER_V6, ICMPV6, &l4(ICMPV6, 0)),
                14 + 40 + 4,
            ),
        ),
        (
            "an IPv6 packet from an IPv4-mapped source",
            frames::ipv6(CLIENT_V4.to_ipv6_mapped(), SERVER_V6, &[], TCP, &syn_mapped),
        ),
        (
            "an IPv6 packet to an IPv4-mapped destination",
            frames::ipv6(CLIENT_V6, SERVER_V4.to_ipv6_mapped(), &[], TCP, &syn_mapped),
        ),
    ] {
        row(
            format!("{name} is dropped as malformed (open pod)"),
            Open,
            In,
            "server",
            frame,
            malformed,
        );
    }
    // Shorter than the fixed L3 header: the test run cannot carry these (the row
    // fails, to be turned into a `drop_malformed` row, if a kernel ever does).
    for (name, frame) in [
        (
            "an Ethernet header cut short (13 bytes)",
            truncated(syn_v4.clone(), 13),
        ),
        (
            "an IPv4 frame that ends with its Ethernet header",
            truncated(syn_v4.clone(), 14),
        ),
        (
            "an IPv4 header cut short (19 bytes)",
            truncated(syn_v4.clone(), 14 + 19),
        ),
        (
            "an IPv6 header cut short (39 bytes)",
            truncated(syn_v6.clone(), 14 + 39),
        ),
    ] {
        let name = format!("{name} is refused by the kernel's test run before the program");
        row(name, Open, In, "server", frame, Expect::Refused);
    }
    row(
        "an IPv6 packet to an IPv4-mapped destination is dropped as malformed on its way out"
            .into(),
        Open,
        Out,
        "client",
        frames::ipv6(
            CLIENT_V6,
            SERVER_V4.to_ipv6_mapped(),
            &[],
            TCP,
            &l4(TCP, 80),
        ),
        malformed,
    );
    rows.extend(bypass_rows::rows());
    rows
}

/// How the verdict counters moved between `before` and `after` (side counters,
/// such as events held back, are left out).
pub(super) fn verdicts_moved(before: &Stats, after: &Stats) -> Vec<(&'static str, u64)> {
    after.verdict_growth_since(before)
}

/// Runs `check` on every case of a table (`name` names a case; no two may share
/// a name) and fails naming each case that failed and why; `what` says what the
/// cases are ("verdict rows").
pub(super) fn every_case_holds<C>(
    what: &str,
    cases: &[C],
    name: impl Fn(&C) -> &str,
    mut check: impl FnMut(&C) -> Result<(), String>,
) {
    let mut names = BTreeSet::new();
    let (mut failed, mut failures) = (0, String::new());
    for case in cases {
        let name = name(case);
        assert!(names.insert(name), "two {what} named {name:?}");
        if let Err(why) = check(case) {
            failed += 1;
            let _ = writeln!(failures, "- {name}: {why}");
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} {what} failed:\n{failures}",
        cases.len()
    );
    eprintln!("{} {what} hold", cases.len());
}

/// Runs `row`'s frame; what happened, unless it is what the row expects.
fn check(net: &mut Net, row: &Row) -> Result<(), String> {
    let ifindex = net.ifindex(row.pod);
    let before = net.stats();
    let node = net.node.clone();
    let datapath = &mut net.datapath;
    let outcome = Net::in_ns(&node, || {
        datapath.test_run(row.hook, ifindex, 0, &row.frame)
    });
    let after = net.stats();
    let counters = verdicts_moved(&before, &after);
    let got = match (outcome, row.expect) {
        (Err(_), Expect::Refused) if counters.is_empty() => return Ok(()),
        (Err(error), _) => format!("a failed test run ({error})"),
        (Ok(_), Expect::Refused) => "a run".to_string(),
        (Ok(outcome), expect) => {
            let counter = match expect {
                Expect::Passed(c) | Expect::Dropped(c) => c,
                Expect::Refused => "",
            };
            if counters == [(counter, 1)] && outcome.passed == matches!(expect, Expect::Passed(_)) {
                return Ok(());
            }
            let verdict = if outcome.passed { "Passed" } else { "Dropped" };
            verdict.to_string()
        }
    };
    Err(format!(
        "expected {:?}, got {got} with counters {counters:?}",
        row.expect
    ))
}

#[test]
fn every_row_of_the_verdict_table_holds() {
    let mut net = three_pods();
    let mut applied = None;
    every_case_holds(
        "verdict rows",
        &rows(),
        |row| &row.name,
        |row| {
            if applied != Some(row.fixture) {
                let tables = row.fixture.tables(&net);
                net.apply(&tables);
                applied = Some(row.fixture);
            }
            check(&mut net, row)
        },
    );
}
