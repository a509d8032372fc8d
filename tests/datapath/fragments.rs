//! IP fragments on hand-made frames (`BPF_PROG_TEST_RUN`): what a datagram's
//! non-first fragments meet after its first fragment passed or was dropped, in
//! order or not, at the same hook or another, overlapping it, past the lifetime of
//! its record, and after a flood of first fragments. Single-frame verdicts
//! (orphans, tiny first fragments, IPv6 atomic fragments) are rows of the verdict
//! table (`verdicts.rs`).
//!
//! A case is a named sequence of frames, each at one hook of one pod, with the
//! verdict and the one verdict counter it must move by one. Every datagram has its
//! own identification and source port, so cases never share an entry of
//! `FRAGMENTS` or `CONNTRACK`.

use std::{net::IpAddr, time::Duration};

use nix::{
    sched::{sched_setaffinity, CpuSet},
    unistd::Pid,
};

use policy_agent::{
    dataplane::Hook::{self, PodEgress as Out, PodIngress as In},
    policy::tables::{DatapathTables, Direction},
};
use policy_common::frag::{FRAGMENTS_MAX, FRAGMENT_LIFETIME_NS};

use super::{
    addr,
    fragment_frames::{
        fragment, fragments, next_id, next_port, udp_datagram, ALLOWED_PORT, DENIED_PORT,
    },
    frames::{self, ICMP, ICMPV6, TCP, UDP},
    net::Net,
    pods::{three_pods, CLIENT_V4, CLIENT_V6, OTHER_V4, OTHER_V6, SERVER_V4, SERVER_V6},
    tables::Tables,
    verdicts::{every_case_holds, verdicts_moved},
};

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

/// One family's cases are built with this.
struct Family {
    ipv6: bool,
    client: IpAddr,
    server: IpAddr,
    other: IpAddr,
    cases: Vec<Case>,
}

impl Family {
    fn new(ipv6: bool) -> Family {
        let (client, server, other) = family(ipv6);
        Family {
            ipv6,
            client,
            server,
            other,
            cases: Vec::new(),
        }
    }

    fn case(&mut self, what: &str, steps: Vec<Step>) {
        let family = if self.ipv6 { "IPv6" } else { "IPv4" };
        self.cases.push(Case {
            name: format!("{family}: {what}"),
            steps,
        });
    }

    /// A new UDP datagram of 48 bytes from the client to the server's `dport`, as
    /// its three fragments.
    fn udp(&self, dport: u16) -> [Vec<u8>; 3] {
        let datagram = udp_datagram(next_port(), dport, 40);
        let pieces = fragments((self.client, self.server), UDP, next_id(), &datagram, 16);
        pieces
            .try_into()
            .unwrap_or_else(|_| panic!("three fragments"))
    }

    /// ICMP or ICMPv6.
    fn icmp(&self) -> u8 {
        if self.ipv6 {
            ICMPV6
        } else {
            ICMP
        }
    }
}

/// Datagrams whose first fragment passes, their other fragments in order.
fn in_order(f: &mut Family) {
    // An unanswered UDP flow is decided by policy packet by packet, so each
    // fragment is allowed by the rule, on the first fragment's ports.
    let [first, middle, last] = f.udp(ALLOWED_PORT);
    f.case(
        "the non-first fragments of an allowed datagram pass on its ports at the server's ingress",
        vec![
            passes(In, "server", first, "allow_policy"),
            passes(In, "server", middle, "allow_policy"),
            passes(In, "server", last, "allow_policy"),
        ],
    );
    let [first, middle, last] = f.udp(ALLOWED_PORT);
    f.case(
        "the non-first fragments of an allowed datagram pass on its ports at the client's egress",
        vec![
            passes(Out, "client", first, "allow_policy"),
            passes(Out, "client", middle, "allow_policy"),
            passes(Out, "client", last, "allow_policy"),
        ],
    );
    let syn = [&frames::tcp(next_port(), 80)[..], &[0; 24]].concat();
    let tcp = fragments((f.client, f.server), TCP, next_id(), &syn, 24);
    f.case(
        "the non-first fragments of an allowed TCP SYN pass as its tracked flow",
        vec![
            passes(In, "server", tcp[0].clone(), "allow_policy"),
            passes(In, "server", tcp[1].clone(), "allow_tracked"),
        ],
    );
    // An echo request from the other pod, whose rule has no ports: the non-first
    // fragment passes on the echo identifier like its first.
    let request = if f.ipv6 {
        frames::icmpv6(128, next_port())
    } else {
        frames::icmp_echo(next_port())
    };
    let request = [&request[..], &[0; 16]].concat();
    let echo = fragments((f.other, f.server), f.icmp(), next_id(), &request, 24);
    f.case(
        "the non-first fragment of an allowed echo request passes",
        vec![
            passes(In, "server", echo[0].clone(), "allow_policy"),
            passes(In, "server", echo[1].clone(), "allow_policy"),
        ],
    );
}

/// Non-first fragments whose first fragment did not pass where they are.
fn unknown(f: &mut Family) {
    let [first, middle, last] = f.udp(DENIED_PORT);
    f.case(
        "the non-first fragments of a denied datagram are dropped as unknown",
        vec![
            dropped(In, "server", first, "drop_policy"),
            dropped(In, "server", middle, "drop_fragment_unknown"),
            dropped(In, "server", last, "drop_fragment_unknown"),
        ],
    );
    let [first, middle, last] = f.udp(ALLOWED_PORT);
    f.case(
        "a non-first fragment ahead of its first fragment is dropped; the rest pass after it",
        vec![
            dropped(In, "server", last.clone(), "drop_fragment_unknown"),
            passes(In, "server", first, "allow_policy"),
            passes(In, "server", middle, "allow_policy"),
            passes(In, "server", last, "allow_policy"),
        ],
    );
    let [first, middle, _] = f.udp(ALLOWED_PORT);
    f.case(
        "a datagram allowed at the client's egress is decided afresh at the server's ingress",
        vec![
            passes(Out, "client", first, "allow_policy"),
            passes(Out, "client", middle.clone(), "allow_policy"),
            dropped(In, "server", middle, "drop_fragment_unknown"),
        ],
    );
    // The other pod (open) sends a non-first fragment of the client's datagram:
    // from the client's address it is spoofed, from its own it is unknown.
    let [first, middle, _] = f.udp(ALLOWED_PORT);
    let datagram = udp_datagram(next_port(), ALLOWED_PORT, 40);
    let own = fragment(
        (f.other, f.server),
        UDP,
        next_id(),
        (16, true),
        &datagram[16..32],
    );
    f.case(
        "another pod cannot send a non-first fragment of the client's datagram",
        vec![
            passes(Out, "client", first, "allow_policy"),
            dropped(Out, "other", middle, "drop_spoofed_source"),
            dropped(Out, "other", own, "drop_fragment_unknown"),
        ],
    );
}

/// What names a datagram: its identification always, its protocol in IPv4 only.
fn identity(f: &mut Family) {
    let [first, middle, last] = f.udp(ALLOWED_PORT);
    let mut other_id = middle.clone();
    other_id[if f.ipv6 { 14 + 40 + 4 } else { 14 + 4 }] ^= 0x80;
    // IPv4 names a datagram by its protocol too; IPv6 does not, and a non-first
    // fragment's Next Header may differ (RFC 8200): it is decided as UDP, its
    // first fragment's protocol, on that fragment's ports.
    let mut other_protocol = last;
    other_protocol[if f.ipv6 { 14 + 40 } else { 14 + 9 }] = TCP;
    let other_protocol = if f.ipv6 {
        passes(In, "server", other_protocol, "allow_policy")
    } else {
        dropped(In, "server", other_protocol, "drop_fragment_unknown")
    };
    f.case(
        "a non-first fragment of another identification is unknown, of another protocol as its receiver names datagrams",
        vec![
            passes(In, "server", first, "allow_policy"),
            dropped(In, "server", other_id, "drop_fragment_unknown"),
            other_protocol,
            passes(In, "server", middle, "allow_policy"),
        ],
    );
}

/// Crafted fragments: overlapping the first, or the rest of an ICMP error.
fn crafted(f: &mut Family) {
    // First fragment: 24 bytes (8-byte UDP header, 16 of payload); a fragment at
    // 8 or 16 would rewrite part of it, one at 24 follows it.
    let datagram = udp_datagram(next_port(), ALLOWED_PORT, 40);
    let (ends, id) = ((f.client, f.server), next_id());
    let piece = |offset: u16, len: usize, more| {
        let at = usize::from(offset);
        fragment(ends, UDP, id, (offset, more), &datagram[at..at + len])
    };
    f.case(
        "a non-first fragment that overlaps its first fragment is dropped",
        vec![
            passes(In, "server", piece(0, 24, true), "allow_policy"),
            dropped(In, "server", piece(8, 16, true), "drop_fragment_overlap"),
            dropped(In, "server", piece(16, 16, false), "drop_fragment_overlap"),
            passes(In, "server", piece(24, 16, false), "allow_policy"),
        ],
    );
    // The server's "port unreachable" about the client's allowed datagram is
    // related; its non-first fragment has no quote and is plain ICMP, which the
    // server's egress (TCP 80 to the client only) denies. (The datagram is whole:
    // an IPv6 quote behind a fragment header is never related.)
    let whole = frames::ip(
        f.client,
        f.server,
        UDP,
        &frames::udp(next_port(), ALLOWED_PORT),
    );
    let (kind, code) = if f.ipv6 { (1, 4) } else { (3, 3) };
    let mut error = frames::icmp_error(kind, code, &whole);
    let quote_len = error.len().next_multiple_of(8);
    error.resize(quote_len + 16, 0);
    let error = fragments((f.server, f.client), f.icmp(), next_id(), &error, quote_len);
    f.case(
        "the non-first fragment of a related ICMP error is decided as plain ICMP",
        vec![
            passes(In, "server", whole, "allow_policy"),
            passes(Out, "server", error[0].clone(), "allow_related"),
            dropped(Out, "server", error[1].clone(), "drop_policy"),
        ],
    );
}

/// The cases of one family.
fn cases(ipv6: bool) -> Vec<Case> {
    let mut f = Family::new(ipv6);
    in_order(&mut f);
    unknown(&mut f);
    identity(&mut f);
    crafted(&mut f);
    f.cases
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
    // their fragments; its datagrams afterwards pass whole. Every run on CPU 0 (the
    // threads that enter the node namespace inherit this one's CPUs): the LRU
    // keeps a few entries per CPU aside, and a client's entry left on another CPU
    // could outlive a flood made on this one.
    let mut cpus = CpuSet::new();
    cpus.set(0).unwrap_or_else(|e| panic!("cpu set: {e}"));
    sched_setaffinity(Pid::from_raw(0), &cpus).unwrap_or_else(|e| panic!("pin to CPU 0: {e}"));
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
