//! A decision whose lookups may combine entries of two states is not trusted.
//! Writes in place end with a move of `ACTIVE`, so lookups on both sides of one
//! may combine entries of two writes: `BPF_PROG_TEST_RUN` frames at the server's
//! ingress while another thread moves `ACTIVE` on as fast as it can; some
//! decisions see it move and are dropped as `drop_state_changed`, nothing tracked
//! for them, and none is dropped as a policy denial (the rule admits the flow
//! throughout). And while the agent writes whole tables in place
//! (`CONFIG_FLAG_TABLES_WRITING`), a denial is not trusted either: a tracked flow
//! is not revoked for it. The flag is the datapath's own: `set_config` cannot set
//! or clear it.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use policy_agent::dataplane::Hook::PodIngress as In;
use policy_common::config::{Config, CONFIG_FLAG_TABLES_WRITING};

use super::{
    net::Net,
    pods::{ack, server_admits_port_80, server_and_client, syn, CLIENT_V4, SERVER_V4},
    support,
    tables::Tables,
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

#[test]
fn a_denial_reached_while_tables_are_written_in_place_revokes_nothing() {
    support::require_root_and_bpf();
    let mut net = server_and_client();
    let admits = server_admits_port_80(&net).build();
    let admits_nobody = Tables::new(&net).isolate("server", true, false).build();
    net.apply(&admits);
    let (syn_80, ack_80) = (
        syn(CLIENT_V4, SERVER_V4, 40001, 80),
        ack(CLIENT_V4, SERVER_V4, 40001, 80),
    );
    assert!(net.run(In, "server", 0, &syn_80).passed, "tracked");
    // The new state denies the flow: its next packet would revoke it, were the
    // denial trusted.
    net.apply(&admits_nobody);
    let set = |net: &mut Net, on: bool| {
        net.datapath
            .set_tables_writing(on)
            .unwrap_or_else(|e| panic!("write CONFIG: {e}"));
    };
    set(&mut net, true);
    let before = net.stats();
    assert!(!net.run(In, "server", 0, &ack_80).passed);
    let new_flow = syn(CLIENT_V4, SERVER_V4, 40002, 80);
    assert!(!net.run(In, "server", 0, &new_flow).passed);
    let after = net.stats();
    let moved = |name: &str| after.get(name) - before.get(name);
    assert_eq!(
        moved("drop_state_changed"),
        2,
        "both dropped, neither trusted"
    );
    assert_eq!(moved("drop_revoked") + moved("drop_policy"), 0);
    let server_if = net.ifindex("server");
    let entry = net
        .conntrack()
        .into_iter()
        .find(|flow| flow.ifindex == server_if && flow.source.1 == 40001)
        .unwrap_or_else(|| panic!("the flow's entry is gone"));
    assert!(!entry.revoked, "revoked on an untrusted denial: {entry:?}");

    // Once written, the denial stands and revokes the flow.
    set(&mut net, false);
    let before = net.stats();
    assert!(!net.run(In, "server", 0, &ack_80).passed);
    assert_eq!(
        net.stats().get("drop_revoked") - before.get("drop_revoked"),
        1
    );
}

/// Whether `config` (as a `Datapath::config_reader` read it) carries
/// `CONFIG_FLAG_TABLES_WRITING`.
pub(super) fn tables_writing(config: Option<Config>) -> bool {
    config.is_some_and(|config| config.flags & CONFIG_FLAG_TABLES_WRITING != 0)
}

#[test]
fn set_config_neither_sets_nor_clears_the_tables_writing_flag() {
    support::require_root_and_bpf();
    let mut net = server_and_client();
    let mut kernel = net
        .datapath
        .config_reader()
        .unwrap_or_else(|e| panic!("a reader of CONFIG: {e}"));
    let mut config = *net.datapath.config();
    config.flags |= CONFIG_FLAG_TABLES_WRITING;
    net.datapath
        .set_config(&config)
        .unwrap_or_else(|e| panic!("write CONFIG: {e}"));
    assert!(!tables_writing(kernel()), "set_config set the flag");
    // A settings write (it reads CONFIG back) keeps the flag as it stands.
    for (on, port) in [(true, 4789), (false, 8472)] {
        net.datapath
            .set_tables_writing(on)
            .unwrap_or_else(|e| panic!("write CONFIG: {e}"));
        net.datapath
            .set_tunnel_ports(&[port])
            .unwrap_or_else(|e| panic!("tunnel ports: {e}"));
        assert_eq!(tables_writing(kernel()), on, "after a settings write");
    }
}
