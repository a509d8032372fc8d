//! The two lookups a new flow no longer pays, and what keeps them exact:
//! single-port allow entries in the hash `POLICY_PORTS`, looked up before the
//! `POLICY` trie, which holds only the shorter prefixes; and a pod's own addresses
//! claimed in its `ENDPOINTS` value (`OwnAddresses`), compared instead of looking
//! `ENDPOINT_ADDRS` up. `BPF_PROG_TEST_RUN` frames for the ports, real datagrams
//! between pod namespaces for the addresses.

use std::{collections::BTreeMap, net::IpAddr};

use policy_agent::{
    dataplane::{address_key, Hook, InterfaceIndex},
    model::{builders::pod, ClusterState, ObjectRef, Pod},
    policy::{
        capacity::Budgets,
        compiler::{Incremental, Recompiled},
        tables::{DatapathTables, Direction, EndpointEntry, PortBlock},
    },
};
use policy_common::endpoint::{OWN_V4, OWN_V6, PENDING_ENDPOINT_ID};

use super::{
    frames::TCP,
    net::{moved, Net},
    pods::{self, syn, CLIENT_V4, CLIENT_V6, OTHER_V4, OTHER_V6, PODS, SERVER_V4},
    probe,
    tables::Tables,
};

/// Class of the client's addresses.
const CLIENT_CLASS: u32 = 3;
/// A block of 16 ports, 8064-8079.
const BLOCK: PortBlock = PortBlock {
    first: 8064,
    bits: 12,
};
/// A single port inside `BLOCK`, and one outside it.
const INSIDE: u16 = 8070;
const OUTSIDE: u16 = 9000;

/// The server isolated for ingress, admitting the client on TCP `BLOCK` when
/// `block`, and on TCP `INSIDE` and `OUTSIDE` one port each when `singles`.
fn port_tables(net: &Net, block: bool, singles: bool) -> DatapathTables {
    let mut tables = Tables::new(net)
        .isolate("server", true, false)
        .pod_class("client", CLIENT_CLASS);
    if block {
        tables = tables.allow(
            "server",
            Direction::Ingress,
            CLIENT_CLASS,
            Some(TCP),
            Some(BLOCK),
        );
    }
    if singles {
        for port in [INSIDE, OUTSIDE] {
            tables = tables.allow_port("server", Direction::Ingress, CLIENT_CLASS, TCP, port);
        }
    }
    tables.build()
}

/// Whether a SYN from the client to the server's `port` passes the server's
/// ingress (a new flow each time).
fn admitted(net: &mut Net, port: u16) -> bool {
    let frame = syn(CLIENT_V4, SERVER_V4, pods::fresh_sport(), port);
    net.run(Hook::PodIngress, "server", 0, &frame).passed
}

#[test]
fn single_ports_and_a_block_over_them_decide_as_one_trie_of_every_entry_would() {
    let mut net = pods::quiet_net(&PODS[..2], &Default::default());
    let ports = [
        INSIDE,
        BLOCK.first,
        BLOCK.first + 15,
        OUTSIDE,
        OUTSIDE + 1,
        8080,
    ];
    // (block, singles) -> the ports admitted, in `ports` order. Every change is a
    // flip into the other bank, whose single ports (in the hash) and blocks (in
    // the trie) must come and go with the tables.
    let cases = [
        ((true, true), [true, true, true, true, false, false]),
        ((false, true), [true, false, false, true, false, false]),
        ((true, false), [true, true, true, false, false, false]),
        ((false, false), [false; 6]),
        ((true, true), [true, true, true, true, false, false]),
        ((true, false), [true, true, true, false, false, false]),
    ];
    for ((block, singles), want) in cases {
        let tables = port_tables(&net, block, singles);
        net.apply(&tables);
        let got = ports.map(|port| admitted(&mut net, port));
        assert_eq!(
            got, want,
            "block {block}, single ports {singles}: {ports:?}"
        );
        // What the kernel holds, both maps read back as one table, is what the
        // agent wrote.
        let banks = net.read_banks();
        for b in [0, 1] {
            assert_eq!(&banks[b as usize], net.datapath.bank_shadow(b), "bank {b}");
        }
    }
}

#[test]
fn a_single_port_inside_a_block_counts_in_its_own_rule_as_the_longest_match() {
    let mut net = pods::quiet_net(&PODS[..2], &Default::default());
    // Rule 0 the block, rules 1 and 2 the single ports (`port_tables`).
    let tables = port_tables(&net, true, true);
    net.apply(&tables);
    for port in [INSIDE, INSIDE, BLOCK.first + 1] {
        assert!(admitted(&mut net, port), "port {port}");
    }
    let counters = net.policy_counters(&tables);
    let packets = |rule_index: u32| {
        counters
            .rules
            .iter()
            .find(|r| r.direction == Direction::Ingress && r.rule_index == rule_index)
            .map_or(0, |r| r.traffic.packets)
    };
    // The single port is the longest match: its rule, not the block's, allowed
    // it, as one trie of every entry answers.
    assert_eq!(
        [packets(0), packets(1), packets(2)],
        [1, 2, 0],
        "{counters:#?}"
    );
}

/// The server (`app=web`) and the client, neither isolated, and pod `x/other`
/// on this node when `other`.
fn state(other: bool) -> ClusterState {
    let mut built = pods::server_and_client_cluster();
    if other {
        built = built.pod(other_pod());
    }
    built.build()
}

/// Pod `x/other` with its `Net` addresses.
fn other_pod() -> Pod {
    pod("x", "other")
        .labels([("app", "web")])
        .ip(OTHER_V4)
        .ip(OTHER_V6)
        .build()
}

/// Pods without a node are this node's.
fn is_local(pod: &Pod) -> bool {
    pod.node_name.is_none()
}

/// Whether a datagram from the other pod's namespace, sent from `source`
/// (IPv4), reaches the client (whose ingress is open).
fn reaches_client(net: &Net, source: &str) -> bool {
    let source: IpAddr = source.parse().unwrap_or_else(|e| panic!("{source}: {e}"));
    let to: IpAddr = CLIENT_V4.parse().unwrap_or_else(|e| panic!("{e}"));
    probe::udp(
        &net.pod("other").netns,
        Some(source),
        &net.pod("client").netns,
        to,
        7300,
    )
}

/// Whether a SYN from `from` to `to` passes the other pod's egress
/// (`BPF_PROG_TEST_RUN`: its IPv6 address may still be tentative on its eth0).
fn sends(net: &mut Net, from: &str, to: &str) -> bool {
    let frame = syn(from, to, pods::fresh_sport(), 80);
    net.run(Hook::PodEgress, "other", 0, &frame).passed
}

/// Every claim in every bank's `ENDPOINTS` values rests on an `ENDPOINT_ADDRS`
/// entry naming the same interface, and the claims are what the agent shadows.
fn claims_hold(net: &mut Net) {
    let own = net
        .datapath
        .read_own_addresses()
        .unwrap_or_else(|e| panic!("read own addresses: {e}"));
    let banks = net.read_banks();
    for b in 0..2 {
        for (ifindex, claims) in &own[b] {
            let mut v4 = address_key(IpAddr::from([0, 0, 0, 0]));
            v4[12..].copy_from_slice(&claims.v4);
            for (flag, key) in [(OWN_V4, v4), (OWN_V6, claims.v6)] {
                if claims.flags & flag != 0 {
                    assert_eq!(
                        banks[b].addresses.get(&key),
                        Some(ifindex),
                        "bank {b}: interface {ifindex} claims {key:?}"
                    );
                }
            }
        }
    }
}

/// The claims of interface `ifindex` in the active bank.
fn claims_of(net: &mut Net, ifindex: InterfaceIndex) -> u32 {
    let active = net.active_in_kernel() as usize;
    let own = net
        .datapath
        .read_own_addresses()
        .unwrap_or_else(|e| panic!("read own addresses: {e}"));
    own[active].get(&ifindex).map_or(0, |claims| claims.flags)
}

#[test]
fn a_pod_that_left_cannot_send_from_its_address_though_its_interface_stays() {
    let mut net = Net::up(&PODS);
    net.quiet();
    let mut state = state(false);
    let mut compiler = Incremental::new(&state, &[], is_local, &Budgets::kernel());
    let ifindex = net.ifindex("other");
    // Its veth is attached before its pod is known: pending, not isolated.
    let pending = EndpointEntry {
        endpoint_id: PENDING_ENDPOINT_ID,
        ..EndpointEntry::default()
    };
    let extra = BTreeMap::from([(ifindex, pending)]);
    let without: BTreeMap<ObjectRef, InterfaceIndex> = net.interfaces_without("other");
    net.datapath
        .apply(compiler.tables(), &without, &extra)
        .unwrap_or_else(|e| panic!("apply: {e}"));
    claims_hold(&mut net);
    assert_eq!(claims_of(&mut net, ifindex), 0);
    assert!(
        !reaches_client(&net, OTHER_V4),
        "pending: no address is its own"
    );

    // Its pod comes, in place: its addresses are its own, claimed in its entry.
    let added = other_pod();
    state.pods.insert(added.key.clone(), added.clone());
    let Recompiled::Endpoint(change) =
        compiler.pod_changed(&state, &added.key, None, is_local, is_local)
    else {
        panic!("expected the pod's own entries");
    };
    let interfaces = net.interfaces.clone();
    net.datapath
        .update_endpoint(compiler.tables(), &interfaces, &extra, &change, ifindex)
        .unwrap_or_else(|e| panic!("update_endpoint: {e}"));
    claims_hold(&mut net);
    assert_eq!(claims_of(&mut net, ifindex), OWN_V4 | OWN_V6);
    assert!(reaches_client(&net, OTHER_V4), "from its own address");
    assert!(
        sends(&mut net, OTHER_V6, CLIENT_V6),
        "from its own IPv6 address"
    );

    // It goes, in place; its interface stays, pending again. From the same
    // namespace, with the same addresses still on its eth0, nothing gets out:
    // neither `ENDPOINT_ADDRS` nor its entry vouches for them any more.
    let gone = state.pods.remove(&added.key);
    let Recompiled::Endpoint(change) =
        compiler.pod_changed(&state, &added.key, gone.as_ref(), is_local, is_local)
    else {
        panic!("expected the pod's own entries");
    };
    net.datapath
        .update_endpoint(compiler.tables(), &without, &extra, &change, ifindex)
        .unwrap_or_else(|e| panic!("update_endpoint: {e}"));
    claims_hold(&mut net);
    assert_eq!(claims_of(&mut net, ifindex), 0, "its entry claims nothing");
    let before = net.stats();
    assert!(!reaches_client(&net, OTHER_V4), "no longer its own address");
    assert!(
        !sends(&mut net, OTHER_V6, CLIENT_V6),
        "no longer its own IPv6 address"
    );
    let after = net.stats();
    assert!(
        moved(&before, &after).contains(&("drop_spoofed_source", 2)),
        "{:?}",
        moved(&before, &after)
    );
}
