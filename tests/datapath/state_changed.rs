//! A decision whose lookups span a move of `ACTIVE` is not trusted: writes in
//! place end with such a move, so lookups on both sides of one may combine
//! entries of two writes. `BPF_PROG_TEST_RUN` frames at the server's ingress
//! while another thread moves `ACTIVE` on as fast as it can: some decisions see
//! it move and are dropped as `drop_state_changed`, nothing tracked for them, and
//! none is dropped as a policy denial (the rule admits the flow throughout).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use policy_agent::dataplane::Hook::PodIngress as In;

use super::{
    pods::{server_admits_port_80, server_and_client, syn, CLIENT_V4, SERVER_V4},
    support,
};

/// Frames run while `ACTIVE` moves: enough for thousands of moves to fall inside
/// a decision (each run takes microseconds, a decision a few hundred ns of it).
const RUNS: u32 = 20_000;

#[test]
fn a_rule_that_allows_a_flow_while_active_moves_is_not_trusted() {
    support::require_root_and_bpf();
    let mut net = server_and_client();
    let tables = server_admits_port_80(&net).build();
    net.apply(&tables);
    let frame = syn(CLIENT_V4, SERVER_V4, 40000, 80);
    let before = net.stats();

    let mut mover = net
        .datapath
        .active_mover()
        .unwrap_or_else(|e| panic!("a handle on ACTIVE: {e}"));
    let stop = AtomicBool::new(false);
    let (passed, moves) = thread::scope(|scope| {
        let moving = scope.spawn(|| {
            let mut moves = 0u64;
            while !stop.load(Ordering::Relaxed) {
                mover
                    .move_on()
                    .unwrap_or_else(|e| panic!("move ACTIVE on: {e}"));
                moves += 1;
            }
            moves
        });
        let passed = (0..RUNS)
            .filter(|_| net.run(In, "server", 0, &frame).passed)
            .count();
        stop.store(true, Ordering::Relaxed);
        (
            passed,
            moving
                .join()
                .unwrap_or_else(|_| panic!("the mover panicked")),
        )
    });

    let after = net.stats();
    let moved = |name: &str| after.get(name) - before.get(name);
    let changed = moved("drop_state_changed");
    assert!(moves > 1000, "ACTIVE moved only {moves} times");
    assert!(
        changed > 0,
        "no decision of {RUNS} saw ACTIVE move ({moves} moves): drop_state_changed did not count"
    );
    assert_eq!(
        moved("drop_policy"),
        0,
        "the rule admits the flow throughout"
    );
    assert_eq!(
        moved("drop_revoked"),
        0,
        "a distrusted decision revokes nothing"
    );
    assert_eq!(
        passed as u64 + changed,
        u64::from(RUNS),
        "every run passed or was distrusted"
    );
}
