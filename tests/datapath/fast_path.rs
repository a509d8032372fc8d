//! What the conntrack fast path (`policy-ebpf/src/fast.rs`) relies on, on
//! `BPF_PROG_TEST_RUN` frames through the attached classifiers: a tracked flow's
//! packet passes on its entry alone only when the entry carries
//! `CT_FLAG_LOCAL_OWNED` (`TrackedFlow::local_owned`) and the packet's own
//! generation, and at ingress only with a mark that says nothing; everything else
//! gets `decide`'s verdict, with its counters. Each row checks the verdict
//! counter, the per-policy counters and the tracked entry, and each would change
//! if the fast path skipped the check it names: a flow to an address the pod does
//! not own (a broadcast-like address of its subnet, a pending interface's) is
//! tracked without the flag and the pod's reply from that address is spoofed; an
//! entry whose address moved to another pod in a later `apply` no longer vouches
//! for it; a tracked ACK with another generation's stamp or the deferred-egress
//! bit decides its source's egress, and a reply with the reply-verified bit is
//! not counted twice. And a hit refreshes its entry with the time of the hit,
//! though each CPU reads the coarse clock once per tick only.

use std::collections::BTreeMap;

use policy_agent::{
    dataplane::{Hook, LoadOptions, PolicyCounters, TrackedFlow},
    policy::tables::{DatapathTables, Direction},
};
use policy_common::verdict::{MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED};

use super::{
    addr,
    frames::{self, ACK, SYN, TCP, UDP},
    net::Net,
    pending,
    pods::{self, ack, quiet_net, syn, udp, CLIENT_V4, CLIENT_V6, PODS, SERVER_V4, SERVER_V6},
    tables::Tables,
};

/// Addresses of no pod, off the node (a remote client), per family.
const REMOTE: [&str; 2] = ["192.0.2.7", "2001:db8::7"];
/// Addresses in the server's subnet that no pod owns, a broadcast-like address
/// per family.
const SERVER_SUBNET_BROADCAST: [&str; 2] = ["10.1.0.255", "fd00:1::ff"];

/// The first packet of a flow `from -> to` and the other side's answer: a UDP
/// datagram and its response, or a TCP SYN and its SYN/ACK.
fn opening_and_answer(protocol: u8, from: &str, to: &str, sport: u16) -> (Vec<u8>, Vec<u8>) {
    let dport = 80;
    if protocol == UDP {
        (udp(from, to, sport, dport), udp(to, from, dport, sport))
    } else {
        let syn_ack = frames::tcp_flags(dport, sport, SYN | ACK);
        (
            syn(from, to, sport, dport),
            frames::ip(addr(to), addr(from), TCP, &syn_ack),
        )
    }
}

/// What one frame did: whether it passed, the verdict counter that moved, and
/// how the per-policy counters moved: `(allowed by rule, direction, rule index,
/// packets)` and `(denied, direction, 0, packets)` for each that grew.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    passed: bool,
    verdicts: Vec<(&'static str, u64)>,
    policy: Vec<(&'static str, Direction, u32, u64)>,
}

/// The per-policy counters as `(kind, direction, rule index, packets)`, in the
/// order `Datapath::policy_counters` names them.
fn packets(counters: &PolicyCounters) -> Vec<(&'static str, Direction, u32, u64)> {
    let allowed = counters
        .rules
        .iter()
        .map(|r| ("allowed", r.direction, r.rule_index, r.traffic.packets));
    let denied = counters
        .denied
        .iter()
        .map(|d| ("denied", d.direction, 0, d.denied.packets));
    allowed.chain(denied).collect()
}

/// Runs `frame` through `hook` of `pod` with `mark`; `tables` are those last
/// applied (they name the per-policy counters).
fn run(
    net: &mut Net,
    tables: &DatapathTables,
    (hook, pod): (Hook, &str),
    mark: u32,
    frame: &[u8],
) -> Outcome {
    let (stats, counters) = (net.stats(), packets(&net.policy_counters(tables)));
    let out = net.run(hook, pod, mark, frame);
    let after = packets(&net.policy_counters(tables));
    assert_eq!(after.len(), counters.len(), "the counters' names changed");
    let policy = after
        .iter()
        .zip(&counters)
        .filter(|(now, then)| now.3 > then.3)
        .map(|(&(kind, direction, rule, now), then)| (kind, direction, rule, now - then.3))
        .collect();
    Outcome {
        passed: out.passed,
        verdicts: net.stats().verdict_growth_since(&stats),
        policy,
    }
}

/// A frame that passed or was dropped with `verdict`, no per-policy counter moved.
fn uncounted(passed: bool, verdict: &'static str) -> Outcome {
    Outcome {
        passed,
        verdicts: vec![(verdict, 1)],
        policy: vec![],
    }
}

/// The entry at `ifindex` of the flow whose first packet came from `source` port
/// `sport`.
fn entry(net: &mut Net, ifindex: u32, source: &str, sport: u16) -> TrackedFlow {
    let flows = net.conntrack();
    flows
        .iter()
        .find(|f| f.ifindex == ifindex && f.source == (addr(source), sport))
        .cloned()
        .unwrap_or_else(|| panic!("no flow from {source}:{sport} at {ifindex}: {flows:#?}"))
}

/// At `pod`'s ingress, a flow from `REMOTE` to `local` (per family) is tracked
/// with `local_owned` as given; the pod's answer from `local` then gets `answer`.
/// Both families, UDP and TCP.
fn remote_flows_to(
    net: &mut Net,
    tables: &DatapathTables,
    pod: &str,
    local: [&str; 2],
    local_owned: bool,
    answer: &Outcome,
) {
    let ifindex = net.ifindex(pod);
    for (remote, local) in REMOTE.into_iter().zip(local) {
        for protocol in [UDP, TCP] {
            let sport = pods::fresh_sport();
            let (opening, reply) = opening_and_answer(protocol, remote, local, sport);
            let what = format!("{protocol} {remote} -> {local}");
            assert_eq!(
                run(net, tables, (Hook::PodIngress, pod), 0, &opening),
                uncounted(true, "allow_unisolated"),
                "{what}"
            );
            let tracked = entry(net, ifindex, remote, sport);
            assert_eq!(
                (tracked.local_owned, tracked.generation),
                (local_owned, net.datapath.generation()),
                "{what}: {tracked:?}"
            );
            assert_eq!(
                &run(net, tables, (Hook::PodEgress, pod), 0, &reply),
                answer,
                "{what}: the answer"
            );
        }
    }
}

#[test]
fn a_flow_to_an_address_the_pod_does_not_own_is_tracked_unowned_and_its_answer_is_spoofed() {
    let mut net = quiet_net(&PODS[..1], &LoadOptions::default());
    let tables = Tables::new(&net).build();
    net.apply(&tables);
    // Control: to the pod's own addresses the entry vouches for them, and the
    // answer passes on it.
    let own = [SERVER_V4, SERVER_V6];
    let tracked = uncounted(true, "allow_tracked");
    remote_flows_to(&mut net, &tables, "server", own, true, &tracked);
    // An ingress-unisolated pod receives what is sent to a broadcast-like address
    // of its subnet, but that address is not its own: answering from it is
    // spoofing, though the flow is tracked.
    let spoofed = uncounted(false, "drop_spoofed_source");
    let broadcast = SERVER_SUBNET_BROADCAST;
    remote_flows_to(&mut net, &tables, "server", broadcast, false, &spoofed);
}

#[test]
fn a_pending_interfaces_answer_is_spoofed_though_its_flow_is_tracked() {
    // Not isolated: its ingress passes and is tracked, but no address is its own.
    let (mut net, tables, interfaces, pending) = pending::pending_client(false);
    net.datapath
        .apply(&tables, &interfaces, &BTreeMap::from([pending]))
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let spoofed = uncounted(false, "drop_spoofed_source");
    let addresses = [CLIENT_V4, CLIENT_V6];
    remote_flows_to(&mut net, &tables, "client", addresses, false, &spoofed);
}

#[test]
fn an_entry_stops_vouching_for_an_address_that_moved_to_another_pod() {
    let mut net = pods::three_pods();
    let before = Tables::new(&net).build();
    net.apply(&before);
    // The server's addresses belong to the other pod from the next generation on.
    let mut after = Tables::new(&net).build();
    let other = net.pod("other").key.clone();
    for address in [SERVER_V4, SERVER_V6] {
        after
            .endpoint_addresses
            .insert(addr(address), other.clone());
    }
    let server = net.ifindex("server");
    for (remote, local) in REMOTE.into_iter().zip([SERVER_V4, SERVER_V6]) {
        // Back to the server's own addresses (a flip after the first family).
        net.apply(&before);
        let sport = pods::fresh_sport();
        let (opening, answer) = opening_and_answer(TCP, remote, local, sport);
        let later = ack(local, remote, 80, sport);
        let (into, out_of) = ((Hook::PodIngress, "server"), (Hook::PodEgress, "server"));
        assert_eq!(
            run(&mut net, &before, into, 0, &opening),
            uncounted(true, "allow_unisolated")
        );
        assert_eq!(
            run(&mut net, &before, out_of, 0, &answer),
            uncounted(true, "allow_tracked"),
            "{local}: the answer while the address is the server's"
        );
        let generation = net.datapath.generation();
        assert!(entry(&mut net, server, remote, sport).local_owned);
        net.apply(&after);
        assert_ne!(net.datapath.generation(), generation);
        assert_eq!(
            run(&mut net, &after, out_of, 0, &later),
            uncounted(false, "drop_spoofed_source"),
            "{local}: the server's next packet from an address now the other pod's"
        );
        let tracked = entry(&mut net, server, remote, sport);
        assert_eq!(
            (tracked.generation, tracked.local_owned),
            (generation, true),
            "dropped before conntrack: the entry is untouched"
        );
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock conntrack entries are stamped with.
fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or_else(|e| panic!("clock_gettime: {e}"));
    let (secs, nanos) = (now.tv_sec(), now.tv_nsec());
    u64::try_from(secs * 1_000_000_000 + nanos).unwrap_or_else(|e| panic!("{secs}: {e}"))
}

/// How far behind CLOCK_MONOTONIC an entry's `last_seen_ns` may be when written:
/// the coarse clock lags by up to a tick, and a CPU serves a cached reading at
/// most two ticks behind it (`policy-ebpf/src/clock.rs`). Three ticks at the
/// lowest HZ (100), and 20 ms to spare: far below the 200 ms sleep a reading
/// that is never renewed would show.
const CLOCK_LAG_NS: u64 = 50_000_000;

#[test]
fn a_hit_refreshes_its_entry_with_the_time_of_the_hit_not_an_older_reading() {
    let mut net = quiet_net(&PODS[..1], &LoadOptions::default());
    let tables = Tables::new(&net).build();
    net.apply(&tables);
    let server = net.ifindex("server");
    for (remote, local) in REMOTE.into_iter().zip([SERVER_V4, SERVER_V6]) {
        let sport = pods::fresh_sport();
        let (opening, answer) = opening_and_answer(TCP, remote, local, sport);
        assert_eq!(
            run(&mut net, &tables, (Hook::PodIngress, "server"), 0, &opening),
            uncounted(true, "allow_unisolated")
        );
        let opened = entry(&mut net, server, remote, sport).last_seen_ns;
        // Many ticks later: each CPU's clock reading must have been renewed.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let before = monotonic_ns();
        assert_eq!(
            run(&mut net, &tables, (Hook::PodEgress, "server"), 0, &answer),
            uncounted(true, "allow_tracked")
        );
        let after = monotonic_ns();
        let seen = entry(&mut net, server, remote, sport).last_seen_ns;
        assert!(
            seen >= opened + 150_000_000,
            "{local}: refreshed at {seen}, opened at {opened}: the reading of the opening kept"
        );
        assert!(
            seen + CLOCK_LAG_NS >= before && seen <= after,
            "{local}: refreshed at {seen}, the hit between {before} and {after}"
        );
    }
}

/// The client isolated for egress by policy 0 with no rule; the server isolated
/// for ingress by policy 0, whose rule 0 admits the client (class 3) on TCP 80,
/// and, with `extra`, rule 1 on TCP 81 (different tables, one more generation).
fn server_admits_what_the_client_may_not_send(net: &Net, extra: bool) -> DatapathTables {
    let tables = pods::server_admits_port_80(net)
        .isolate("client", false, true)
        .isolated_by("client", &[], &[0]);
    if extra {
        tables.allow_port("server", Direction::Ingress, 3, TCP, 81)
    } else {
        tables
    }
    .build()
}

#[test]
fn a_tracked_ack_with_another_generations_stamp_or_the_deferred_bit_decides_its_source() {
    let mut net = pods::server_and_client();
    net.apply(&server_admits_what_the_client_may_not_send(&net, true));
    let stale = net.stamp();
    let tables = server_admits_what_the_client_may_not_send(&net, false);
    net.apply(&tables);
    let current = net.stamp();
    assert_ne!(stale, current);
    let server = net.ifindex("server");
    let into = (Hook::PodIngress, "server");
    let rule = |verdict| Outcome {
        passed: true,
        verdicts: vec![(verdict, 1)],
        policy: vec![("allowed", Direction::Ingress, 0, 1)],
    };
    let source_denies = |verdict| Outcome {
        passed: false,
        verdicts: vec![(verdict, 1)],
        policy: vec![("denied", Direction::Egress, 0, 1)],
    };
    for (client, server_addr) in [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)] {
        let sport = pods::fresh_sport();
        let opening = syn(client, server_addr, sport, 80);
        let later = ack(client, server_addr, sport, 80);
        // As it arrives from the client's egress, stamped with this generation.
        let first = run(&mut net, &tables, into, current, &opening);
        assert_eq!(first, rule("allow_policy"), "{client}");
        let tracked = entry(&mut net, server, client, sport);
        assert!(tracked.local_owned, "{tracked:?}");
        assert_eq!(
            run(&mut net, &tables, into, current, &later),
            rule("allow_tracked"),
            "{client}: a tracked ACK of this generation"
        );
        // The client's egress denies the server: decided again here, each drops.
        assert_eq!(
            run(&mut net, &tables, into, stale, &later),
            source_denies("drop_source_egress"),
            "{client}: another generation's stamp"
        );
        let deferred = current | MARK_DEFERRED_EGRESS;
        assert_eq!(
            run(&mut net, &tables, into, deferred, &later),
            source_denies("drop_deferred_egress"),
            "{client}: the deferred-egress bit"
        );
        assert_eq!(
            run(&mut net, &tables, into, current, &later),
            rule("allow_tracked"),
            "{client}: the flow itself is untouched"
        );
    }
}

#[test]
fn a_tracked_reply_with_the_verified_bit_is_not_counted_again_at_the_client() {
    let mut net = pods::server_and_client();
    let tables = Tables::new(&net)
        .isolate("client", false, true)
        .isolated_by("client", &[], &[0])
        .pod_class("server", 5)
        .allow_port("client", Direction::Egress, 5, TCP, 80)
        .build();
    net.apply(&tables);
    let client_if = net.ifindex("client");
    let (out_of, into) = ((Hook::PodEgress, "client"), (Hook::PodIngress, "client"));
    let counted = |verdict| Outcome {
        passed: true,
        verdicts: vec![(verdict, 1)],
        policy: vec![("allowed", Direction::Egress, 0, 1)],
    };
    for (client, server) in [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)] {
        let sport = pods::fresh_sport();
        let opening = syn(client, server, sport, 80);
        let reply = ack(server, client, 80, sport);
        assert_eq!(
            run(&mut net, &tables, out_of, 0, &opening),
            counted("allow_policy")
        );
        assert!(entry(&mut net, client_if, client, sport).local_owned);
        assert_eq!(
            run(&mut net, &tables, into, 0, &reply),
            counted("allow_tracked"),
            "{client}: a reply without marks counts in the client's rule"
        );
        // The server's side counted a verified reply in the same rule already
        // (`service::verify_reply`).
        assert_eq!(
            run(&mut net, &tables, into, MARK_REPLY_VERIFIED, &reply),
            uncounted(true, "allow_tracked"),
            "{client}: a verified reply"
        );
    }
}
