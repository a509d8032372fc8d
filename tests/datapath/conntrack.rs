//! Conntrack's lifecycle on hand-made frames (`BPF_PROG_TEST_RUN`): TCP states from
//! the flags, flows picked up mid-stream, each protocol's idle timeout, no state for
//! denied packets, ICMP and ICMPv6 errors related to tracked flows at both hooks,
//! and what a full table does.
//!
//! A case is a named sequence of steps at the server's interface (a few at the
//! client's): a frame and the verdict plus the one verdict counter that must move by
//! one, an ageing of the case's entries (`Datapath::age_conntrack` moves their
//! `last_seen_ns` back, so a timeout passes without waiting for it), or a look at the
//! case's entry. A dropped packet and a related error must leave the table's size as
//! it was. Each case has its own port (or echo identifier), so cases never share an
//! entry; `every_conntrack_case_holds` runs them all and names every failing case.
//! The cases are in `conntrack_lifecycle.rs` (TCP states, pickups, denials,
//! timeouts) and `conntrack_related.rs` (ICMP and ICMPv6 errors); this file holds
//! their harness. `conntrack_limits.rs` has the full table and the per-pod limit.
//!
//! The timeouts are set at load (`LoadOptions::config`), each a different length, so
//! a case shows which one applies: aged one second less than its timeout a flow
//! still passes, one second more and its next reply is decided by policy (the server
//! is isolated both ways, so it is dropped).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU16, Ordering},
    time::Duration,
};

use policy_agent::{
    dataplane::{Hook, LoadOptions, TrackedFlow},
    policy::tables::{DatapathTables, Direction},
};
use policy_common::config::Config;

use super::{
    addr, conntrack_lifecycle, conntrack_related,
    frames::{self, ICMP, ICMPV6, SCTP, TCP, UDP},
    net::Net,
    pods::{quiet_net, CLIENT_V4, CLIENT_V6, OTHER_V4, OTHER_V6, PODS, SERVER_V4, SERVER_V6},
    tables::Tables,
    verdicts::{every_case_holds, verdicts_moved as moved},
};

/// One second in `bpf_ktime_get_ns` units.
pub(super) const SECOND_NS: u64 = 1_000_000_000;
/// OSPF: a protocol with no ports, timed by `ct_other_ns` (not GRE: a pod's
/// egress drops tunnels before conntrack).
pub(super) const OSPF: u8 = 89;

/// Idle timeouts of these tests, all different.
pub(super) const TIMEOUTS: Config = Config {
    ct_tcp_opening_ns: 20 * SECOND_NS,
    ct_tcp_established_ns: 50 * SECOND_NS,
    ct_tcp_closing_ns: 5 * SECOND_NS,
    ct_udp_ns: 30 * SECOND_NS,
    ct_icmp_ns: 10 * SECOND_NS,
    ct_other_ns: 40 * SECOND_NS,
    ..Config::DEFAULT
};

/// One second less than `timeout_ns`: a flow idle this long still passes.
pub(super) fn just_before(timeout_ns: u64) -> Duration {
    Duration::from_nanos(timeout_ns - SECOND_NS)
}

/// One second more than `timeout_ns`: a flow idle this long is forgotten.
pub(super) fn just_after(timeout_ns: u64) -> Duration {
    Duration::from_nanos(timeout_ns + SECOND_NS)
}

/// The server isolated both ways. Ingress: the client (class 3) may reach TCP 80,
/// UDP 53, SCTP 5000 and OSPF; the other pod (class 4) may send ICMP and ICMPv6.
/// Egress: TCP to the client's port 80. The client is not isolated. Routers
/// (`Family::router`) are in no class: nothing allows them.
fn fixture(net: &Net) -> DatapathTables {
    Tables::new(net)
        .isolate("server", true, true)
        .pod_class("client", 3)
        .pod_class("other", 4)
        .allow_port("server", Direction::Ingress, 3, TCP, 80)
        .allow_port("server", Direction::Ingress, 3, UDP, 53)
        .allow_port("server", Direction::Ingress, 3, SCTP, 5000)
        .allow("server", Direction::Ingress, 3, Some(OSPF), None)
        .allow("server", Direction::Ingress, 4, Some(ICMP), None)
        .allow("server", Direction::Ingress, 4, Some(ICMPV6), None)
        .allow_port("server", Direction::Egress, 3, TCP, 80)
        .build()
}

/// The addresses and ICMP numbers of one address family.
pub(super) struct Family {
    pub name: &'static str,
    pub server: IpAddr,
    pub client: IpAddr,
    pub other: IpAddr,
    /// A router between the pods and the world: the source of ICMP errors.
    pub router: IpAddr,
    /// An address outside the cluster.
    pub stranger: IpAddr,
    /// `ICMP` or `ICMPV6`.
    pub icmp: u8,
    /// Echo request and reply types.
    pub echo: (u8, u8),
    /// The errors that relate to a flow: type, code and name.
    pub errors: [(u8, u8, &'static str); 4],
    /// An ICMP type that is no error (a redirect).
    pub redirect: u8,
}

pub(super) fn families() -> [Family; 2] {
    [
        Family {
            name: "IPv4",
            server: addr(SERVER_V4),
            client: addr(CLIENT_V4),
            other: addr(OTHER_V4),
            router: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            stranger: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            icmp: ICMP,
            echo: (8, 0),
            errors: [
                (3, 3, "ICMP port unreachable"),
                (3, 4, "ICMP fragmentation needed"),
                (11, 0, "ICMP time exceeded"),
                (12, 0, "ICMP parameter problem"),
            ],
            redirect: 5,
        },
        Family {
            name: "IPv6",
            server: addr(SERVER_V6),
            client: addr(CLIENT_V6),
            other: addr(OTHER_V6),
            router: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            stranger: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
            icmp: ICMPV6,
            echo: (128, 129),
            errors: [
                (1, 4, "ICMPv6 port unreachable"),
                (2, 0, "ICMPv6 packet too big"),
                (3, 0, "ICMPv6 time exceeded"),
                (4, 0, "ICMPv6 parameter problem"),
            ],
            redirect: 137,
        },
    ]
}

/// A fresh port (or echo identifier) for every case.
pub(super) fn port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(20000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What a packet step expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Passed, and this counter moved by one.
    Passed(&'static str),
    /// Dropped, and this counter moved by one.
    Dropped(&'static str),
}

pub(super) const POLICY: Verdict = Verdict::Passed("allow_policy");
pub(super) const TRACKED: Verdict = Verdict::Passed("allow_tracked");
pub(super) const RELATED: Verdict = Verdict::Passed("allow_related");
pub(super) const UNISOLATED: Verdict = Verdict::Passed("allow_unisolated");
pub(super) const DENIED: Verdict = Verdict::Dropped("drop_policy");

/// One step of a case.
#[derive(Debug)]
enum Step {
    /// `frame` through `hook` of `pod`'s interface.
    Packet {
        pod: &'static str,
        hook: Hook,
        frame: Vec<u8>,
        expect: Verdict,
    },
    /// The case's entries at the server look idle this much longer.
    Age(Duration),
    /// The case's entry at the server made by a first packet in this direction has
    /// this state (`None`: there is no such entry).
    State(Direction, Option<u8>),
    /// Whether that entry's `last_seen_ns` moved on since the last `Age` (a packet
    /// refreshed it) or stayed where `Age` put it.
    Refreshed(Direction, bool),
}

/// A named sequence of steps about the flows of `protocol` with `port` at the server.
pub(super) struct Case {
    name: String,
    ipv4: bool,
    protocol: u8,
    port: u16,
    steps: Vec<Step>,
}

impl Case {
    pub(super) fn new(name: String, family: &Family, protocol: u8, port: u16) -> Self {
        Case {
            name,
            ipv4: family.server.is_ipv4(),
            protocol,
            port,
            steps: Vec::new(),
        }
    }

    /// A packet at the server's `hook`.
    pub(super) fn send(self, hook: Hook, frame: Vec<u8>, expect: Verdict) -> Self {
        self.send_at("server", hook, frame, expect)
    }

    pub(super) fn send_at(
        mut self,
        pod: &'static str,
        hook: Hook,
        frame: Vec<u8>,
        expect: Verdict,
    ) -> Self {
        self.steps.push(Step::Packet {
            pod,
            hook,
            frame,
            expect,
        });
        self
    }

    pub(super) fn age(mut self, by: Duration) -> Self {
        self.steps.push(Step::Age(by));
        self
    }

    pub(super) fn state(mut self, direction: Direction, state: Option<u8>) -> Self {
        self.steps.push(Step::State(direction, state));
        self
    }

    pub(super) fn refreshed(mut self, direction: Direction, refreshed: bool) -> Self {
        self.steps.push(Step::Refreshed(direction, refreshed));
        self
    }

    /// Whether `flow` (at `server_if`) is one of this case's entries.
    fn picks(&self, server_if: u32, flow: &TrackedFlow) -> bool {
        flow.ifindex == server_if
            && flow.protocol == self.protocol
            && flow.source.0.is_ipv4() == self.ipv4
            && (flow.source.1 == self.port || flow.destination.1 == self.port)
    }
}

pub(super) fn tcp(from: IpAddr, to: IpAddr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    frames::ip(from, to, TCP, &frames::tcp_flags(sport, dport, flags))
}

pub(super) fn udp(from: IpAddr, to: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    frames::ip(from, to, UDP, &frames::udp(sport, dport))
}

pub(super) fn echo(f: &Family, from: IpAddr, to: IpAddr, request: bool, id: u16) -> Vec<u8> {
    let icmp_type = if request { f.echo.0 } else { f.echo.1 };
    frames::ip(from, to, f.icmp, &frames::icmpv6(icmp_type, id))
}

/// An error of `kind` (type, code) from `from` to `to` quoting `original`.
pub(super) fn error(
    f: &Family,
    from: IpAddr,
    to: IpAddr,
    kind: (u8, u8),
    original: &[u8],
) -> Vec<u8> {
    frames::ip(
        from,
        to,
        f.icmp,
        &frames::icmp_error(kind.0, kind.1, original),
    )
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for f in families() {
        cases.extend(conntrack_lifecycle::tcp_cases(&f));
        cases.extend(conntrack_lifecycle::timeout_cases(&f));
        cases.extend(conntrack_related::related_cases(&f));
        cases.extend(conntrack_related::unrelated_cases(&f));
    }
    cases
}

/// The case's entry at the server first seen in `direction`, if any.
fn entry(net: &mut Net, case: &Case, direction: Direction) -> Option<TrackedFlow> {
    let server_if = net.ifindex("server");
    net.conntrack()
        .into_iter()
        .find(|flow| case.picks(server_if, flow) && flow.direction == direction)
}

/// Runs the steps of `case`; the first that fails, described.
fn run(net: &mut Net, case: &Case) -> Result<(), String> {
    let server_if = net.ifindex("server");
    // (direction, last_seen_ns) of the case's entries right after the latest `Age`.
    let mut aged: Vec<(Direction, u64)> = Vec::new();
    for (i, step) in case.steps.iter().enumerate() {
        let n = i + 1;
        match step {
            Step::Packet {
                pod,
                hook,
                frame,
                expect,
            } => {
                let entries = net.conntrack().len();
                let before = net.stats();
                let outcome = net.run(*hook, pod, 0, frame);
                let after = net.stats();
                let counters = moved(&before, &after);
                let (passed, counter) = match *expect {
                    Verdict::Passed(c) => (true, c),
                    Verdict::Dropped(c) => (false, c),
                };
                if outcome.passed != passed || counters != [(counter, 1)] {
                    let got = if outcome.passed { "passed" } else { "dropped" };
                    return Err(format!(
                        "step {n} ({hook:?} at {pod}): expected {expect:?}, got {got} with counters {counters:?}"
                    ));
                }
                let now = net.conntrack().len();
                if (!passed || *expect == RELATED) && now != entries {
                    return Err(format!(
                        "step {n} ({hook:?} at {pod}): {expect:?} changed the table from {entries} to {now} entries"
                    ));
                }
            }
            Step::Age(by) => {
                let count = net
                    .datapath
                    .age_conntrack(*by, |flow| case.picks(server_if, flow))
                    .unwrap_or_else(|e| panic!("age: {e}"));
                if count == 0 {
                    return Err(format!("step {n}: no entry to age"));
                }
                aged = net
                    .conntrack()
                    .into_iter()
                    .filter(|flow| case.picks(server_if, flow))
                    .map(|flow| (flow.direction, flow.last_seen_ns))
                    .collect();
            }
            Step::State(direction, want) => {
                let got = entry(net, case, *direction).map(|flow| flow.state);
                if got != *want {
                    return Err(format!(
                        "step {n}: the {direction:?} entry's state is {got:?}, expected {want:?}"
                    ));
                }
            }
            Step::Refreshed(direction, want) => {
                let Some(was) = aged.iter().find(|(d, _)| d == direction).map(|a| a.1) else {
                    return Err(format!("step {n}: no {direction:?} entry was aged"));
                };
                let Some(now) = entry(net, case, *direction).map(|flow| flow.last_seen_ns) else {
                    return Err(format!("step {n}: no {direction:?} entry"));
                };
                // Ages are seconds or more; a refresh moves last_seen by about as much.
                let refreshed = now >= was + SECOND_NS;
                if refreshed != *want || (!want && now != was) {
                    return Err(format!(
                        "step {n}: last_seen_ns went from {was} to {now}, expected refreshed: {want}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A quiet server, client and other pod under `fixture`, the datapath loaded with
/// `options`.
pub(super) fn loaded(options: LoadOptions) -> Net {
    let mut net = quiet_net(&PODS, &options);
    let tables = fixture(&net);
    net.apply(&tables);
    net
}

#[test]
fn every_conntrack_case_holds() {
    let mut net = loaded(LoadOptions {
        config: TIMEOUTS,
        ..LoadOptions::default()
    });
    every_case_holds(
        "conntrack cases",
        &cases(),
        |case| &case.name,
        |case| run(&mut net, case),
    );
}
