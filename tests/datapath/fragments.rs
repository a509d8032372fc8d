//! IP fragments on hand-made frames (`BPF_PROG_TEST_RUN`): what a datagram's
//! non-first fragments meet after its first fragment passed or was dropped, in
//! order or not, at the same hook or another, overlapping it, past the lifetime of
//! its entry, and after a flood of first fragments; plus the fragment builders the
//! verdict table (`verdicts.rs`) and the real-packet tests (`fragments_on_veths.rs`)
//! share. Single-frame verdicts (orphans, tiny first fragments, IPv6 atomic
//! fragments) are rows of the verdict table.
//!
//! A case is a named sequence of frames, each at one hook of one pod, with the
//! verdict and the one verdict counter it must move by one. Every datagram has its
//! own identification and source port, so cases never share an entry of
//! `FRAGMENTS` or `CONNTRACK`.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU16, AtomicU32, Ordering},
    time::Duration,
};

use policy_agent::{
    dataplane::Hook::{self, PodEgress as Out, PodIngress as In},
    policy::tables::{DatapathTables, Direction},
};
use policy_common::frag::{FRAGMENTS_MAX, FRAGMENT_LIFETIME_NS};

use super::{
    addr,
    frames::{self, ICMP, ICMPV6, TCP, UDP},
    net::Net,
    pods::{three_pods, CLIENT_V4, CLIENT_V6, OTHER_V4, OTHER_V6, SERVER_V4, SERVER_V6},
    tables::Tables,
    verdicts::{every_case_holds, verdicts_moved},
};

/// The port the fixture's rules allow, and one they do not.
pub const ALLOWED_PORT: u16 = 7777;
pub const DENIED_PORT: u16 = 7778;

/// A fresh identification for every datagram (IPv4 uses its low 16 bits).
pub fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0x0f00);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A fresh source port for every flow.
pub fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(46000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One fragment of datagram `id` from `src` to `dst` (one family) carrying `data`,
/// the datagram's bytes from `offset` (a multiple of 8) on, with `more` fragments
/// following. IPv4: the identification's low 16 bits; IPv6: a fragment header
/// right after the fixed header.
pub fn fragment(
    (src, dst): (IpAddr, IpAddr),
    protocol: u8,
    id: u32,
    (offset, more): (u16, bool),
    data: &[u8],
) -> Vec<u8> {
    assert_eq!(offset % 8, 0, "fragment offsets are in 8-byte units");
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let field = (offset / 8) | if more { 0x2000 } else { 0 };
            let mut frame = frames::ipv4(s, d, protocol, field, data);
            frame[14 + 4..14 + 6].copy_from_slice(&(id as u16).to_be_bytes());
            frame
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => frames::ipv6(
            s,
            d,
            &[],
            44,
            &[&fragment_header(protocol, id, offset, more)[..], data].concat(),
        ),
        _ => panic!("mixed families: {src} -> {dst}"),
    }
}

/// An IPv6 fragment header: next header `protocol`, `offset` bytes, M flag `more`.
pub fn fragment_header(protocol: u8, id: u32, offset: u16, more: bool) -> [u8; 8] {
    let [hi, lo] = (offset | u16::from(more)).to_be_bytes();
    let [a, b, c, d] = id.to_be_bytes();
    [protocol, 0, hi, lo, a, b, c, d]
}

/// `datagram` (an upper-layer header and payload) cut into fragments of `size`
/// bytes (a multiple of 8; the last takes the rest), first fragment first.
pub fn fragments(
    ends: (IpAddr, IpAddr),
    protocol: u8,
    id: u32,
    datagram: &[u8],
    size: usize,
) -> Vec<Vec<u8>> {
    let pieces: Vec<&[u8]> = datagram.chunks(size).collect();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let offset = u16::try_from(i * size).unwrap_or(u16::MAX);
            fragment(ends, protocol, id, (offset, i + 1 < pieces.len()), piece)
        })
        .collect()
}

/// A UDP datagram from `sport` to `dport` with `len` bytes of payload.
pub fn udp_datagram(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut datagram = frames::udp(sport, dport);
    datagram.truncate(8);
    datagram[4..6].copy_from_slice(&u16::try_from(8 + len).unwrap_or(0).to_be_bytes());
    datagram.resize(8 + len, 0x5a);
    datagram
}

/// The server isolated for ingress (the client, class 3, may reach UDP
/// `ALLOWED_PORT` and TCP 80; the other pod, class 4, anything) and for egress (to
/// the client only TCP 80); the client isolated for egress (to the server, class
/// 5, UDP `ALLOWED_PORT`); the other pod open.
pub fn fixture(net: &Net) -> DatapathTables {
    Tables::new(net)
        .isolate("server", true, true)
        .isolate("client", false, true)
        .pod_class("server", 5)
        .pod_class("client", 3)
        .pod_class("other", 4)
        .allow_port("server", Direction::Ingress, 3, UDP, ALLOWED_PORT)
        .allow_port("server", Direction::Ingress, 3, TCP, 80)
        .allow("server", Direction::Ingress, 4, None, None)
        .allow_port("server", Direction::Egress, 3, TCP, 80)
        .allow_port("client", Direction::Egress, 5, UDP, ALLOWED_PORT)
        .build()
}

/// One step of a case.
enum Step {
    /// `frame` at `hook` of `pod`: passed or not, and the one counter that moves.
    Frame {
        hook: Hook,
        pod: &'static str,
        frame: Vec<u8>,
        passed: bool,
        counter: &'static str,
    },
    /// Waits until every entry written so far is past `FRAGMENT_LIFETIME_NS`.
    OutliveEntries,
}

fn passes(hook: Hook, pod: &'static str, frame: Vec<u8>, counter: &'static str) -> Step {
    Step::Frame {
        hook,
        pod,
        frame,
        passed: true,
        counter,
    }
}

fn dropped(hook: Hook, pod: &'static str, frame: Vec<u8>, counter: &'static str) -> Step {
    Step::Frame {
        hook,
        pod,
        frame,
        passed: false,
        counter,
    }
}

struct Case {
    name: String,
    steps: Vec<Step>,
}

/// The addresses of one family: (client, server, other).
fn family(ipv6: bool) -> (IpAddr, IpAddr, IpAddr) {
    if ipv6 {
        (addr(CLIENT_V6), addr(SERVER_V6), addr(OTHER_V6))
    } else {
        (addr(CLIENT_V4), addr(SERVER_V4), addr(OTHER_V4))
    }
}

/// The cases of one family.
fn cases(ipv6: bool) -> Vec<Case> {
    let (client, server, other) = family(ipv6);
    let name = if ipv6 { "IPv6" } else { "IPv4" };
    let icmp = if ipv6 { ICMPV6 } else { ICMP };
    // A three-fragment UDP datagram from the client to `dport`.
    let udp = |dport: u16| {
        let datagram = udp_datagram(next_port(), dport, 40);
        fragments((client, server), UDP, next_id(), &datagram, 16)
    };
    let mut cases = Vec::new();
    let mut case = |what: &str, steps: Vec<Step>| {
        cases.push(Case {
            name: format!("{name}: {what}"),
            steps,
        });
    };
    let [first, middle, last] = udp(ALLOWED_PORT).try_into().unwrap_or_else(|_| panic!());
    // An unanswered UDP flow is decided by policy packet by packet, so each
    // fragment is allowed by the rule, on the first fragment's ports.
    case(
        "the non-first fragments of an allowed datagram pass on its ports at the server's ingress",
        vec![
            passes(In, "server", first, "allow_policy"),
            passes(In, "server", middle, "allow_policy"),
            passes(In, "server", last, "allow_policy"),
        ],
    );
    let [first, middle, last] = udp(ALLOWED_PORT).try_into().unwrap_or_else(|_| panic!());
    case(
        "the non-first fragments of an allowed datagram pass on its ports at the client's egress",
        vec![
            passes(Out, "client", first, "allow_policy"),
            passes(Out, "client", middle, "allow_policy"),
            passes(Out, "client", last, "allow_policy"),
        ],
    );
    let syn = frames::tcp(next_port(), 80);
    let tcp = fragments(
        (client, server),
        TCP,
        next_id(),
        &[&syn[..], &[0; 24]].concat(),
        24,
    );
    case(
        "the non-first fragments of an allowed TCP SYN pass as its tracked flow",
        vec![
            passes(In, "server", tcp[0].clone(), "allow_policy"),
            passes(In, "server", tcp[1].clone(), "allow_tracked"),
        ],
    );
    let [first, middle, last] = udp(DENIED_PORT).try_into().unwrap_or_else(|_| panic!());
    case(
        "the non-first fragments of a denied datagram are dropped as unknown",
        vec![
            dropped(In, "server", first, "drop_policy"),
            dropped(In, "server", middle, "drop_fragment_unknown"),
            dropped(In, "server", last, "drop_fragment_unknown"),
        ],
    );
    let [first, middle, last] = udp(ALLOWED_PORT).try_into().unwrap_or_else(|_| panic!());
    case(
        "a non-first fragment ahead of its first fragment is dropped; the rest pass after it",
        vec![
            dropped(In, "server", last.clone(), "drop_fragment_unknown"),
            passes(In, "server", first, "allow_policy"),
            passes(In, "server", middle, "allow_policy"),
            passes(In, "server", last, "allow_policy"),
        ],
    );
    let [first, middle, last] = udp(ALLOWED_PORT).try_into().unwrap_or_else(|_| panic!());
    let mut other_id = middle.clone();
    other_id[if ipv6 { 14 + 40 + 4 } else { 14 + 4 }] ^= 0x80;
    // IPv4 names a datagram by its protocol too; IPv6 does not, and a non-first
    // fragment's Next Header may differ (RFC 8200): it is decided as UDP, its
    // first fragment's protocol, on that fragment's ports.
    let mut other_protocol = last.clone();
    other_protocol[if ipv6 { 14 + 40 } else { 14 + 9 }] = TCP;
    let (other_protocol_counter, other_protocol_passes) = if ipv6 {
        ("allow_policy", true)
    } else {
        ("drop_fragment_unknown", false)
    };
    case(
        "a non-first fragment of another identification is unknown, of another protocol as its receiver names datagrams",
        vec![
            passes(In, "server", first, "allow_policy"),
            dropped(In, "server", other_id, "drop_fragment_unknown"),
            Step::Frame {
                hook: In,
                pod: "server",
                frame: other_protocol,
                passed: other_protocol_passes,
                counter: other_protocol_counter,
            },
            passes(In, "server", middle, "allow_policy"),
        ],
    );
    let [first, middle, _] = udp(ALLOWED_PORT).try_into().unwrap_or_else(|_| panic!());
    case(
        "a datagram allowed at the client's egress is decided afresh at the server's ingress",
        vec![
            passes(Out, "client", first, "allow_policy"),
            passes(Out, "client", middle.clone(), "allow_policy"),
            dropped(In, "server", middle, "drop_fragment_unknown"),
        ],
    );
    // The other pod (open) sends a non-first fragment of the client's datagram:
    // from the client's address it is spoofed, from its own it is unknown.
    let [first, middle, _] = udp(ALLOWED_PORT).try_into().unwrap_or_else(|_| panic!());
    let datagram = udp_datagram(next_port(), ALLOWED_PORT, 40);
    let id = next_id();
    let own = fragment((other, server), UDP, id, (16, true), &datagram[16..32]);
    case(
        "another pod cannot send a non-first fragment of the client's datagram",
        vec![
            passes(Out, "client", first, "allow_policy"),
            dropped(Out, "other", middle, "drop_spoofed_source"),
            dropped(Out, "other", own, "drop_fragment_unknown"),
        ],
    );
    // First fragment: 24 bytes (8-byte UDP header, 16 of payload); a fragment at
    // 8 or 16 would rewrite part of it, one at 24 follows it.
    let datagram = udp_datagram(next_port(), ALLOWED_PORT, 40);
    let id = next_id();
    let piece = |offset: u16, more| {
        let at = usize::from(offset);
        fragment(
            (client, server),
            UDP,
            id,
            (offset, more),
            &datagram[at..at + 16],
        )
    };
    case(
        "a non-first fragment that overlaps its first fragment is dropped",
        vec![
            passes(
                In,
                "server",
                fragment((client, server), UDP, id, (0, true), &datagram[..24]),
                "allow_policy",
            ),
            dropped(In, "server", piece(8, true), "drop_fragment_overlap"),
            dropped(In, "server", piece(16, false), "drop_fragment_overlap"),
            passes(In, "server", piece(24, false), "allow_policy"),
        ],
    );
    // An echo request from the other pod, whose rule has no ports: the non-first
    // fragment passes on the echo identifier like its first.
    let request = if ipv6 {
        frames::icmpv6(128, next_port())
    } else {
        frames::icmp_echo(next_port())
    };
    let request = [&request[..], &[0; 16]].concat();
    let echo_fragments = fragments((other, server), icmp, next_id(), &request, 24);
    case(
        "the non-first fragment of an allowed echo request passes",
        vec![
            passes(In, "server", echo_fragments[0].clone(), "allow_policy"),
            passes(In, "server", echo_fragments[1].clone(), "allow_policy"),
        ],
    );
    // The server's "port unreachable" about the client's allowed datagram is
    // related; its non-first fragment has no quote and is plain ICMP, which the
    // server's egress (TCP 80 to the client only) denies. (The datagram is whole:
    // an IPv6 quote behind a fragment header is never related.)
    let whole = frames::ip(client, server, UDP, &frames::udp(next_port(), ALLOWED_PORT));
    let (kind, code) = if ipv6 { (1, 4) } else { (3, 3) };
    let mut error = frames::icmp_error(kind, code, &whole);
    let quote_len = error.len().next_multiple_of(8);
    error.resize(quote_len + 16, 0);
    let error_fragments = fragments((server, client), icmp, next_id(), &error, quote_len);
    case(
        "the non-first fragment of a related ICMP error is decided as plain ICMP",
        vec![
            passes(In, "server", whole, "allow_policy"),
            passes(Out, "server", error_fragments[0].clone(), "allow_related"),
            dropped(Out, "server", error_fragments[1].clone(), "drop_policy"),
        ],
    );
    cases
}

/// Runs `step`; what went wrong, if anything.
fn check(net: &mut Net, step: &Step) -> Result<(), String> {
    let Step::Frame {
        hook,
        pod,
        frame,
        passed,
        counter,
    } = step
    else {
        std::thread::sleep(Duration::from_nanos(FRAGMENT_LIFETIME_NS) + Duration::from_millis(100));
        return Ok(());
    };
    let before = net.stats();
    let out = net.run(*hook, pod, 0, frame);
    let moved = verdicts_moved(&before, &net.stats());
    if out.passed == *passed && moved == [(*counter, 1)] {
        Ok(())
    } else {
        Err(format!(
            "{hook:?} at {pod}: expected passed={passed} and {counter}, got passed={} and {moved:?}",
            out.passed
        ))
    }
}

#[test]
fn every_fragment_case_holds() {
    let mut net = three_pods();
    let tables = fixture(&net);
    net.apply(&tables);
    let cases: Vec<Case> = [false, true].into_iter().flat_map(cases).collect();
    every_case_holds(
        "fragment cases",
        &cases,
        |c| &c.name,
        |case| {
            for (i, step) in case.steps.iter().enumerate() {
                check(&mut net, step).map_err(|why| format!("step {}: {why}", i + 1))?;
            }
            Ok(())
        },
    );
}

#[test]
fn a_non_first_fragment_is_unknown_once_its_first_fragment_is_past_the_lifetime() {
    let mut net = three_pods();
    let tables = fixture(&net);
    net.apply(&tables);
    let mut steps = Vec::new();
    let mut late = Vec::new();
    for ipv6 in [false, true] {
        let (client, server, _) = family(ipv6);
        let datagram = udp_datagram(next_port(), ALLOWED_PORT, 40);
        let pieces = fragments((client, server), UDP, next_id(), &datagram, 16);
        steps.push(passes(In, "server", pieces[0].clone(), "allow_policy"));
        steps.push(passes(In, "server", pieces[1].clone(), "allow_policy"));
        late.push(dropped(
            In,
            "server",
            pieces[2].clone(),
            "drop_fragment_unknown",
        ));
    }
    steps.push(Step::OutliveEntries);
    steps.extend(late);
    for (i, step) in steps.iter().enumerate() {
        if let Err(why) = check(&mut net, step) {
            panic!("step {}: {why}", i + 1);
        }
    }
}

#[test]
fn a_flood_of_first_fragments_costs_only_datagrams_in_flight_meanwhile() {
    // The other pod (open) floods the table with twice its capacity of first
    // fragments, each of its own datagram: every one passes (a full LRU evicts, it
    // never fails). The client's datagrams in flight meanwhile lose the rest of
    // their fragments; its datagrams afterwards pass whole.
    let mut net = three_pods();
    let tables = fixture(&net);
    net.apply(&tables);
    let in_flight: Vec<Vec<Vec<u8>>> = [false, true]
        .map(|ipv6| {
            let (client, server, _) = family(ipv6);
            let datagram = udp_datagram(next_port(), ALLOWED_PORT, 40);
            fragments((client, server), UDP, next_id(), &datagram, 16)
        })
        .into();
    for pieces in &in_flight {
        let step = passes(Out, "client", pieces[0].clone(), "allow_policy");
        check(&mut net, &step).unwrap_or_else(|why| panic!("before the flood: {why}"));
    }
    let (_, server, other) = family(false);
    let datagram = udp_datagram(next_port(), 9, 16);
    let before = net.stats();
    for id in 0..2 * FRAGMENTS_MAX {
        let frame = fragment((other, server), UDP, id, (0, true), &datagram);
        assert!(
            net.run(Out, "other", 0, &frame).passed,
            "flood fragment {id}"
        );
    }
    let flood = verdicts_moved(&before, &net.stats());
    assert_eq!(flood, [("allow_unisolated", u64::from(2 * FRAGMENTS_MAX))]);
    for pieces in &in_flight {
        let step = dropped(Out, "client", pieces[1].clone(), "drop_fragment_unknown");
        check(&mut net, &step).unwrap_or_else(|why| panic!("in flight: {why}"));
    }
    for ipv6 in [false, true] {
        let (client, server, _) = family(ipv6);
        let datagram = udp_datagram(next_port(), ALLOWED_PORT, 40);
        for (i, piece) in fragments((client, server), UDP, next_id(), &datagram, 16)
            .iter()
            .enumerate()
        {
            let step = passes(Out, "client", piece.clone(), "allow_policy");
            if let Err(why) = check(&mut net, &step) {
                panic!("IPv6 {ipv6}, fragment {i}: {why}");
            }
        }
    }
}
