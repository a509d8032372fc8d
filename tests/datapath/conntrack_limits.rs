//! What bounds the conntrack table, on hand-made frames (`BPF_PROG_TEST_RUN`): a
//! full table drops new flows and keeps every tracked one (nothing is evicted), a
//! pod at its limit of flows drops its own new flows and no other pod's, and the
//! sweep gives the room of idle flows back. `flood.rs` shows the same with real
//! packets.

use policy_agent::dataplane::{
    Hook::{PodEgress as Out, PodIngress as In},
    LoadOptions,
};
use policy_common::config::Config;

use super::{
    conntrack::{families, just_after, loaded, port, tcp, TIMEOUTS},
    frames::{ACK, SYN},
    net::Net,
    verdicts::verdicts_moved as moved,
};

/// Whether the table holds a flow at pod `pod`'s interface with source port `p`.
fn tracked(net: &mut Net, pod: &str, p: u16) -> bool {
    let ifindex = net.ifindex(pod);
    net.conntrack()
        .iter()
        .any(|flow| flow.ifindex == ifindex && flow.source.1 == p)
}

/// Runs `frame` through `pod`'s `hook`: whether it passed.
fn passes(net: &mut Net, hook: policy_agent::dataplane::Hook, pod: &str, frame: &[u8]) -> bool {
    net.run(hook, pod, 0, frame).passed
}

#[test]
fn a_full_table_drops_new_flows_keeps_every_tracked_one_and_the_sweep_makes_room_again() {
    const CAPACITY: usize = 16;
    let mut net = loaded(LoadOptions {
        config: TIMEOUTS,
        conntrack_capacity: Some(CAPACITY as u32),
        ..LoadOptions::default()
    });
    let [f, _] = families();
    let (s, c) = (f.server, f.client);
    let before = net.stats();
    // Fill the table; the first four flows stay in use from then on.
    let first: Vec<u16> = (0..CAPACITY).map(|_| port()).collect();
    for &p in &first {
        assert!(
            passes(&mut net, In, "server", &tcp(c, s, p, 80, SYN)),
            "SYN {p}"
        );
    }
    assert_eq!(net.conntrack().len(), CAPACITY, "the table is full");
    let (in_use, idle) = first.split_at(4);
    // Twice the capacity in new flows: each is dropped, no tracked flow is
    // evicted for it, and the flows in use (and their answers) keep passing.
    let refused: Vec<u16> = (0..2 * CAPACITY).map(|_| port()).collect();
    for &p in &refused {
        assert!(
            !passes(&mut net, In, "server", &tcp(c, s, p, 80, SYN)),
            "new flow {p}"
        );
        for &p in in_use {
            assert!(
                passes(&mut net, In, "server", &tcp(c, s, p, 80, ACK)),
                "flow {p} in use"
            );
        }
    }
    for &p in &first {
        assert!(tracked(&mut net, "server", p), "flow {p} was evicted");
    }
    for &p in idle {
        let answer = tcp(s, c, 80, p, SYN | ACK);
        assert!(
            passes(&mut net, Out, "server", &answer),
            "answer of idle flow {p}"
        );
    }
    let after = net.stats();
    let uses = in_use.len() * refused.len();
    for (counter, n) in [
        ("allow_policy", CAPACITY),
        ("drop_ct_full", refused.len()),
        ("allow_tracked", uses + idle.len()),
    ] {
        assert_eq!(
            after.get(counter) - before.get(counter),
            n as u64,
            "{counter}: {:?}",
            moved(&before, &after)
        );
    }
    // The idle flows outlive their timeout; the sweep removes them (and only them),
    // and new flows have room again.
    let server_if = net.ifindex("server");
    let aged = net
        .datapath
        .age_conntrack(just_after(TIMEOUTS.ct_tcp_opening_ns), |flow| {
            flow.ifindex == server_if && idle.contains(&flow.source.1)
        })
        .unwrap_or_else(|e| panic!("age: {e}"));
    assert_eq!(aged, idle.len());
    let swept = net
        .datapath
        .sweep_conntrack()
        .unwrap_or_else(|e| panic!("sweep: {e}"));
    assert_eq!((swept.entries, swept.reclaimed), (CAPACITY, idle.len()));
    for &p in in_use {
        assert!(tracked(&mut net, "server", p), "flow {p} in use was swept");
    }
    for &p in &refused[..idle.len()] {
        assert!(
            passes(&mut net, In, "server", &tcp(c, s, p, 80, SYN)),
            "new flow {p} after the sweep"
        );
    }
}

/// Whether the agent's sweeper finds the table short of room
/// (`ConntrackSweeper::pressed`).
fn pressed(net: &Net) -> bool {
    net.datapath
        .conntrack_sweeper()
        .and_then(|sweeper| sweeper.pressed())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A loaded datapath whose pods may each track `limit` flows.
fn limited(limit: usize) -> Net {
    loaded(LoadOptions {
        config: Config {
            ct_endpoint_flows: limit as u32,
            ..TIMEOUTS
        },
        ..LoadOptions::default()
    })
}

#[test]
fn the_sweeper_finds_the_table_pressed_from_half_a_pods_limit_of_flows() {
    const LIMIT: usize = 8;
    let mut net = limited(LIMIT);
    let [f, _] = families();
    let (s, c) = (f.server, f.client);
    for n in 1..=LIMIT / 2 {
        assert!(!pressed(&net), "{} flows", n - 1);
        assert!(passes(&mut net, Out, "client", &tcp(c, s, port(), 80, SYN)));
    }
    assert!(pressed(&net), "half the limit");
}

#[test]
fn a_pod_at_its_limit_drops_its_own_new_flows_and_other_pods_open_theirs() {
    const LIMIT: usize = 8;
    let mut net = limited(LIMIT);
    let [f, _] = families();
    let (s, c, o) = (f.server, f.client, f.other);
    let (client_if, other_if) = (net.ifindex("client"), net.ifindex("other"));
    let before = net.stats();
    // The client (not isolated) opens flows to the server until it holds its limit;
    // past it, each new flow is dropped at its own interface.
    let opened: Vec<u16> = (0..3 * LIMIT).map(|_| port()).collect();
    let passed: Vec<bool> = opened
        .iter()
        .map(|&p| passes(&mut net, Out, "client", &tcp(c, s, p, 80, SYN)))
        .collect();
    assert_eq!(passed.iter().filter(|&&p| p).count(), LIMIT, "{passed:?}");
    assert!(passed[..LIMIT].iter().all(|&p| p), "{passed:?}");
    let held = net
        .datapath
        .conntrack_held()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held.get(&client_if), Some(&(LIMIT as i64)), "{held:?}");
    assert!(pressed(&net), "a pod at its limit: the agent sweeps sooner");
    // Its tracked flows go on; another pod opens flows as ever.
    for &p in &opened[..LIMIT] {
        assert!(
            passes(&mut net, Out, "client", &tcp(c, s, p, 80, ACK)),
            "tracked {p}"
        );
    }
    for _ in 0..LIMIT {
        let p = port();
        assert!(
            passes(&mut net, Out, "other", &tcp(o, s, p, 80, SYN)),
            "other pod {p}"
        );
    }
    let after = net.stats();
    for (counter, n) in [
        ("allow_unisolated", 2 * LIMIT),
        ("drop_ct_endpoint_limit", 2 * LIMIT),
        ("allow_tracked", LIMIT),
    ] {
        assert_eq!(
            after.get(counter) - before.get(counter),
            n as u64,
            "{counter}: {:?}",
            moved(&before, &after)
        );
    }
    // Once its flows are idle past their timeout and swept, the client has room.
    net.datapath
        .age_conntrack(just_after(TIMEOUTS.ct_tcp_opening_ns), |flow| {
            flow.ifindex == client_if
        })
        .unwrap_or_else(|e| panic!("age: {e}"));
    let swept = net
        .datapath
        .sweep_conntrack()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(swept.reclaimed, LIMIT);
    let held = net
        .datapath
        .conntrack_held()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held.get(&client_if), Some(&0), "{held:?}");
    assert_eq!(held.get(&other_if), Some(&(LIMIT as i64)), "{held:?}");
    let p = opened[2 * LIMIT];
    assert!(
        passes(&mut net, Out, "client", &tcp(c, s, p, 80, SYN)),
        "after the sweep"
    );
}
