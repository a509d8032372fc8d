//! Hole-free updates (docs/architecture.md, invariant 3): `apply` writes only the entries that
//! differ into the bank no packet reads, then flips `ACTIVE`; the bank it left
//! keeps the old state, and every packet is decided by the bank `ACTIVE` named
//! when it arrived, for every map it looks up.

use std::{collections::BTreeMap, net::IpAddr};

use policy_agent::{
    dataplane::{key_address, ApplyReport, BankContent, DataplaneError, Hook, LoadOptions},
    model::{
        builders::{netpol, pod, rule, selector},
        ClusterState, Protocol,
    },
    policy::{
        compiler::compile,
        tables::{DatapathTables, Direction},
    },
};
use policy_common::{
    endpoint::{ENDPOINTS_MAX, PENDING_ENDPOINT_ID},
    maps,
    policy::POLICY_MAX,
};

use super::{
    addr,
    frames::TCP,
    net::Net,
    pods::{self, syn, CLIENT_V4, CLIENT_V6, OTHER_V4, PODS, SERVER_V4, SERVER_V6},
    tables::Tables,
};

/// Pods elsewhere in the cluster: peers only, enough of them that a table holds
/// far more entries than one label change touches.
const REMOTE_PODS: u8 = 16;

/// The three local pods and `REMOTE_PODS` remote ones labelled `role=client`
/// (`remote-0` as `remote0_role` says), `other` labelled `role=<other_role>`;
/// policy `x/web` admits `role=client` pods to `app=web` (the server) on TCP 80.
fn cluster_state(other_role: &str, remote0_role: &str) -> ClusterState {
    cluster_state_with(other_role, remote0_role, REMOTE_PODS)
}

/// `cluster_state` with `remote_pods` remote pods.
fn cluster_state_with(other_role: &str, remote0_role: &str, remote_pods: u8) -> ClusterState {
    let mut state = pods::labelled(other_role).policy(
        netpol("x", "web")
            .select(selector().label("app", "web").build())
            .ingress(
                rule()
                    .from_pods(selector().label("role", "client").build())
                    .port(80, Protocol::Tcp)
                    .build(),
            )
            .build(),
    );
    for i in 0..remote_pods {
        let role = if i == 0 { remote0_role } else { "client" };
        state = state.pod(
            pod("x", &format!("remote-{i}"))
                .labels([("role", role)])
                .ip(&format!("10.9.0.{}", i + 1))
                .ip(&format!("fd00:9::{}", i + 1))
                .node("elsewhere")
                .build(),
        );
    }
    state.build()
}

/// Entries of every banked map.
fn total(bank: &BankContent) -> usize {
    bank.entries().iter().map(|(_, n)| n).sum()
}

/// Entries that one bank holds and the other lacks or holds with another value.
fn differing(a: &BankContent, b: &BankContent) -> usize {
    fn count<K: Ord, V: PartialEq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> usize {
        let changed_or_gone = a.iter().filter(|(k, v)| b.get(k) != Some(v)).count();
        changed_or_gone + b.keys().filter(|k| !a.contains_key(k)).count()
    }
    count(&a.endpoints, &b.endpoints)
        + count(&a.addresses, &b.addresses)
        + count(&a.peers_v4, &b.peers_v4)
        + count(&a.peers_v6, &b.peers_v6)
        + count(&a.rule_sets, &b.rule_sets)
        + count(&a.policy, &b.policy)
}

/// Whether a SYN from `from` to the server's port 80 passes the server's ingress.
fn admitted_to_web(net: &mut Net, from: &str) -> bool {
    let frame = syn(from, SERVER_V4, pods::fresh_sport(), 80);
    net.run(Hook::PodIngress, "server", 0, &frame).passed
}

#[test]
fn an_apply_writes_only_what_differs_into_the_idle_bank_and_the_bank_it_left_keeps_the_old_state() {
    let mut net = pods::three_pods();
    let local = |p: &policy_agent::model::Pod| net.pods.iter().any(|n| n.key == p.key);
    let t0 = compile(&cluster_state("other", "client"), &[], local);
    let t1 = compile(&cluster_state("client", "client"), &[], local);
    let t2 = compile(&cluster_state("client", "nobody"), &[], local);

    // A fresh datapath reads bank 0, empty: the first apply fills bank 1.
    let r0 = net.apply(&t0);
    let after_t0 = net.read_banks();
    assert_eq!(net.active_in_kernel(), 1);
    assert_eq!(after_t0[0], BankContent::default());
    assert!(total(&after_t0[1]) >= 40, "{:?}", after_t0[1].entries());
    assert_eq!(
        r0,
        ApplyReport {
            written: total(&after_t0[1]),
            removed: 0,
            bank: 1
        }
    );
    assert_eq!(&after_t0[1], net.datapath.bank_shadow(1));
    assert!(admitted_to_web(&mut net, CLIENT_V4));
    assert!(!admitted_to_web(&mut net, OTHER_V4));

    // `other` becomes a client: bank 0 gets the new state, bank 1 keeps the old.
    let r1 = net.apply(&t1);
    let after_t1 = net.read_banks();
    assert_eq!((r1.bank, net.active_in_kernel()), (0, 0));
    assert_eq!(
        after_t1[1], after_t0[1],
        "the bank left must keep the old state"
    );
    assert!(admitted_to_web(&mut net, OTHER_V4));

    // One more label change: bank 1 (t0) becomes t2 by a handful of writes.
    let r2 = net.apply(&t2);
    let after_t2 = net.read_banks();
    assert_eq!((r2.bank, net.active_in_kernel()), (1, 1));
    assert_eq!(after_t2[0], after_t1[0]);
    let changed = differing(&after_t0[1], &after_t2[1]);
    assert_eq!(r2.written + r2.removed, changed, "{r2:?}");
    assert!(
        (1..=8).contains(&changed) && total(&after_t2[1]) >= 40,
        "{r2:?} of {:?}",
        after_t2[1].entries()
    );
    assert_eq!(&after_t2[1], net.datapath.bank_shadow(1));
    assert!(admitted_to_web(&mut net, OTHER_V4));
    assert!(admitted_to_web(&mut net, CLIENT_V4));

    // What metrics report: the active bank's entries, per-bank capacity.
    let usage = net.datapath.map_usage();
    for (map, entries) in after_t2[1].entries() {
        let found = usage.iter().find(|u| u.map == map);
        assert_eq!(found.map(|u| u.entries), Some(entries), "{map}: {usage:?}");
    }
    let capacity = |map: &str| usage.iter().find(|u| u.map == map).map(|u| u.capacity);
    assert_eq!(capacity("ENDPOINTS"), Some(ENDPOINTS_MAX));
    assert_eq!(capacity("POLICY"), Some(POLICY_MAX));

    // The same tables again: nothing to write, no flip.
    assert_eq!(
        net.apply(&t2),
        ApplyReport {
            written: 0,
            removed: 0,
            bank: 1
        }
    );
    assert_eq!(net.active_in_kernel(), 1);
}

#[test]
fn each_packet_is_decided_by_the_bank_active_named_for_every_map_it_looks_up() {
    let mut net = pods::server_and_client();
    // Bank A: the client is a registered pod of class 3, admitted on TCP 80.
    let a = Tables::new(&net)
        .isolate("server", true, false)
        .pod_class("client", 3)
        .allow_port("server", Direction::Ingress, 3, TCP, 80)
        .build();
    // Bank B differs in every banked map: the client is of class 4 (PEERS_*),
    // admitted on 81 only (POLICY), without its addresses (ENDPOINT_ADDRS: its
    // egress is spoofed), and the server is isolated for egress too (ENDPOINTS).
    let mut b = Tables::new(&net)
        .isolate("server", true, true)
        .pod_class("client", 4)
        .allow_port("server", Direction::Ingress, 4, TCP, 81)
        .build();
    let client = net.pod("client").key.clone();
    b.endpoint_addresses.retain(|_, pod| *pod != client);
    assert_eq!(net.apply(&a).bank, 1);
    assert_eq!(net.apply(&b).bank, 0);

    // (hook, pod, from, to, port, passes with A, passes with B)
    let cases: [(Hook, &str, &str, &str, u16, bool, bool); 7] = [
        (
            Hook::PodIngress,
            "server",
            CLIENT_V4,
            SERVER_V4,
            80,
            true,
            false,
        ),
        (
            Hook::PodIngress,
            "server",
            CLIENT_V6,
            SERVER_V6,
            80,
            true,
            false,
        ),
        (
            Hook::PodIngress,
            "server",
            CLIENT_V4,
            SERVER_V4,
            81,
            false,
            true,
        ),
        (
            Hook::PodIngress,
            "server",
            CLIENT_V6,
            SERVER_V6,
            81,
            false,
            true,
        ),
        (
            Hook::PodEgress,
            "client",
            CLIENT_V4,
            SERVER_V4,
            80,
            true,
            false,
        ),
        (
            Hook::PodEgress,
            "client",
            CLIENT_V6,
            SERVER_V6,
            80,
            true,
            false,
        ),
        (
            Hook::PodEgress,
            "server",
            SERVER_V4,
            CLIENT_V4,
            80,
            true,
            false,
        ),
    ];
    for (active, bank_is_a) in [(0, false), (1, true), (0, false)] {
        net.datapath
            .activate_bank(active)
            .unwrap_or_else(|e| panic!("activate bank {active}: {e}"));
        assert_eq!(net.active_in_kernel(), active);
        for (hook, at, from, to, port, with_a, with_b) in cases {
            let frame = syn(from, to, pods::fresh_sport(), port);
            let passed = net.run(hook, at, 0, &frame).passed;
            let want = if bank_is_a { with_a } else { with_b };
            assert_eq!(
                passed,
                want,
                "bank {active} ({}): {hook:?} at {at}, {from} -> {to}:{port}",
                if bank_is_a { "A" } else { "B" }
            );
        }
    }
    // Nothing was written by the flips: each bank still holds its own tables.
    let banks = net.read_banks();
    let addresses = |bank: &BankContent| -> Vec<IpAddr> {
        bank.addresses.keys().map(|k| key_address(*k)).collect()
    };
    assert_eq!(addresses(&banks[0]).len(), 2, "{:?}", addresses(&banks[0]));
    assert!(addresses(&banks[1]).contains(&addr(CLIENT_V4)));
}

/// `PEERS_V4` prefixes per bank in the test below: fewer than the large tables
/// want, but enough for both banks' worth of them in the map as a whole.
const PEERS_PER_BANK: u32 = 12;

#[test]
fn tables_that_do_not_fit_one_bank_or_reuse_the_pending_id_are_refused_before_any_write() {
    let options = LoadOptions {
        peers_capacity: Some(PEERS_PER_BANK),
        ..LoadOptions::default()
    };
    let mut net = pods::quiet_net(&PODS, &options);
    let local = |p: &policy_agent::model::Pod| net.pods.iter().any(|n| n.key == p.key);
    let large = compile(
        &cluster_state_with("other", "client", REMOTE_PODS),
        &[],
        local,
    );
    let small = compile(&cluster_state_with("other", "client", 2), &[], local);
    let v4 = |t: &DatapathTables| t.peers.keys().filter(|p| p.addr().is_ipv4()).count();
    let per_bank = PEERS_PER_BANK as usize;
    // The large tables fit the map (both banks' entries) but not one bank.
    assert!(
        (per_bank + 1..=2 * per_bank).contains(&v4(&large)),
        "{} v4 peers",
        v4(&large)
    );
    assert!(small.peers.len() <= per_bank, "{} peers", small.peers.len());
    let interfaces = net.interfaces.clone();
    let apply = |net: &mut Net, tables: &DatapathTables| {
        net.datapath.apply(tables, &interfaces, &BTreeMap::new())
    };
    // Nothing written, nothing flipped, the shadows still what the kernel holds.
    let refused_without_a_trace = |net: &mut Net, active: u32| {
        assert_eq!(net.active_in_kernel(), active);
        assert_eq!(net.datapath.active_bank(), active);
        let banks = net.read_banks();
        assert_eq!(&banks[0], net.datapath.bank_shadow(0));
        assert_eq!(&banks[1], net.datapath.bank_shadow(1));
        banks
    };
    let too_large = |result: Result<ApplyReport, DataplaneError>| match result {
        Err(DataplaneError::BankFull {
            map,
            entries,
            capacity,
        }) => {
            assert_eq!(
                (map, entries, capacity),
                (maps::PEERS_V4.name, v4(&large), PEERS_PER_BANK)
            );
        }
        other => panic!("want BankFull for {}, got {other:?}", maps::PEERS_V4.name),
    };

    // On a fresh datapath, whose other bank is empty.
    too_large(apply(&mut net, &large));
    let banks = refused_without_a_trace(&mut net, 0);
    assert_eq!(banks, [BankContent::default(), BankContent::default()]);

    // Tables that fit are applied as ever.
    assert_eq!(apply(&mut net, &small).map(|r| r.bank).ok(), Some(1));
    let applied = net.read_banks();
    assert!(admitted_to_web(&mut net, CLIENT_V4));
    assert!(!admitted_to_web(&mut net, OTHER_V4));

    // Refused again with a full bank beside it; the state applied goes on.
    too_large(apply(&mut net, &large));
    assert_eq!(refused_without_a_trace(&mut net, 1), applied);
    assert!(admitted_to_web(&mut net, CLIENT_V4));

    // An endpoint id a pending interface carries would hand it the pod's allows.
    let mut reused = small.clone();
    let entry = reused
        .endpoints
        .values_mut()
        .next()
        .unwrap_or_else(|| panic!("no endpoint in the tables"));
    entry.endpoint_id = PENDING_ENDPOINT_ID;
    match apply(&mut net, &reused) {
        Err(DataplaneError::EndpointId {
            endpoint_id, limit, ..
        }) => assert_eq!(
            (endpoint_id, limit),
            (PENDING_ENDPOINT_ID, PENDING_ENDPOINT_ID)
        ),
        other => panic!("want EndpointId, got {other:?}"),
    }
    assert_eq!(refused_without_a_trace(&mut net, 1), applied);
}
