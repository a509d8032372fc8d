//! A local pod that comes or goes in an endpoint id that stays, written in place
//! (`Datapath::update_endpoint`, the compiler's `Recompiled::Endpoint`): compiled
//! tables, real lookups (`BPF_PROG_TEST_RUN` on the attached classifiers). After
//! an add, the new pod's own verdicts and the verdicts of others towards it are
//! the new state's; the active bank holds exactly what `apply` would write (it
//! then finds nothing to write), the kernel equals the shadows, and the next flips
//! (into the bank not written, then back) write what each bank lacks. After a
//! delete its entries are gone from the active bank, and from the other at the
//! next flip; its old address, taken by a
//! pod of another node, is that pod and no longer the one that went.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use policy_agent::{
    dataplane::{address_key, BankContent, Hook, InterfaceIndex},
    model::{
        builders::{netpol, pod, rule, selector},
        ClusterState, ObjectRef, Pod, Protocol,
    },
    policy::{
        capacity::Budgets,
        compiler::{EndpointChange, Incremental, Recompiled},
        tables::{DatapathTables, PeerEntry},
    },
};

use super::{
    net::Net,
    pods::{self, syn, CLIENT_V4, CLIENT_V6, OTHER_V4, OTHER_V6, PODS, SERVER_V4},
};

/// Pods without a node are this node's (`Net`'s veths); others are not.
fn is_local(pod: &Pod) -> bool {
    pod.node_name.is_none()
}

/// The server (`app=web`) and client (`role=client`); web pods admit the client
/// on TCP 80, and the client may send only to web pods on TCP 80.
fn state() -> ClusterState {
    pods::server_and_client_cluster()
        .policy(
            netpol("x", "web")
                .select(selector().label("app", "web").build())
                .ingress(
                    rule()
                        .from_pods(selector().label("role", "client").build())
                        .port(80, Protocol::Tcp)
                        .build(),
                )
                .build(),
        )
        .policy(
            netpol("x", "client-out")
                .select(selector().label("role", "client").build())
                .egress(
                    rule()
                        .to_pods(selector().label("app", "web").build())
                        .port(80, Protocol::Tcp)
                        .build(),
                )
                .build(),
        )
        .build()
}

/// Pod `x/other` with its `Net` addresses, labelled `app=web` (a second server),
/// on `node` (`None`: this one).
fn other(labels: [(&'static str, &'static str); 1], node: Option<&str>) -> Pod {
    let mut built = pod("x", "other").labels(labels).ip(OTHER_V4).ip(OTHER_V6);
    if let Some(node) = node {
        built = built.node(node);
    }
    built.build()
}

/// A probe: a SYN from `from` to `to`:`port` through `pod`'s classifier at `hook`.
type Probe<'a> = (Hook, &'a str, &'a str, &'a str, u16);

/// Whether the probe's SYN passes.
fn passes(net: &mut Net, (hook, pod, from, to, port): Probe<'_>) -> bool {
    let frame = syn(from, to, pods::fresh_sport(), port);
    net.run(hook, pod, 0, &frame).passed
}

/// The other pod's entries in `bank`: its `ENDPOINTS` entry, its address entries,
/// its peer entries.
fn other_entries(bank: &BankContent, ifindex: InterfaceIndex) -> (bool, usize, usize) {
    let addresses =
        [OTHER_V4, OTHER_V6].map(|a| address_key(a.parse().unwrap_or_else(|e| panic!("{a}: {e}"))));
    let v4: [u8; 4] = OTHER_V4
        .parse::<std::net::Ipv4Addr>()
        .unwrap_or_else(|e| panic!("{e}"))
        .octets();
    let v6: [u8; 16] = OTHER_V6
        .parse::<std::net::Ipv6Addr>()
        .unwrap_or_else(|e| panic!("{e}"))
        .octets();
    (
        bank.endpoints.contains_key(&ifindex),
        addresses
            .iter()
            .filter(|a| bank.addresses.contains_key(*a))
            .count(),
        usize::from(bank.peers_v4.contains_key(&(32, v4)))
            + usize::from(bank.peers_v6.contains_key(&(128, v6))),
    )
}

/// The change `pod_changed` made, which must be a pod's own entries.
fn endpoint_change(recompiled: Recompiled) -> EndpointChange {
    match recompiled {
        Recompiled::Endpoint(change) => change,
        other => panic!("expected Recompiled::Endpoint, got {other:?}"),
    }
}

/// Writes `change` in place and checks what any in-place write keeps: no flip,
/// the generation two on, the kernel equal to the shadows, and the active bank
/// what `apply` would write (so `apply` finds nothing to write).
fn in_place(
    net: &mut Net,
    tables: &DatapathTables,
    interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
    change: &EndpointChange,
) {
    let bank = net.active_in_kernel();
    let generation = net.datapath.generation();
    let ifindex = net.ifindex("other");
    let report = net
        .datapath
        .update_endpoint(tables, interfaces, &BTreeMap::new(), change, ifindex)
        .unwrap_or_else(|e| panic!("update_endpoint: {e}"));
    assert_eq!(report.bank, bank);
    assert!(report.written + report.removed > 0, "{report:?}");
    assert_eq!(net.active_in_kernel(), bank, "no flip");
    assert_eq!(net.datapath.generation(), generation + 2);
    let banks = net.read_banks();
    for b in [0, 1] {
        assert_eq!(&banks[b as usize], net.datapath.bank_shadow(b), "bank {b}");
    }
    let full = net
        .datapath
        .apply(tables, interfaces, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("apply: {e}"));
    assert_eq!(
        (full.written, full.removed, full.bank),
        (0, 0, bank),
        "the active bank must hold what a full apply writes"
    );
}

#[test]
fn a_local_pod_added_and_deleted_in_place_gets_and_loses_its_verdicts_in_both_banks() {
    let mut net = pods::quiet_net(&PODS, &Default::default());
    let mut state = state();
    let mut compiler = Incremental::new(&state, &[], is_local, &Budgets::kernel());
    let without = net.interfaces_without("other");
    net.datapath
        .apply(compiler.tables(), &without, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let tables_before = compiler.tables().clone();
    let ifindex = net.ifindex("other");
    // Before: the other veth is no endpoint, its address nobody's.
    assert!(!passes(
        &mut net,
        (Hook::PodIngress, "other", CLIENT_V4, OTHER_V4, 80)
    ));
    assert!(!passes(
        &mut net,
        (Hook::PodEgress, "client", CLIENT_V4, OTHER_V4, 80)
    ));
    assert!(!passes(
        &mut net,
        (Hook::PodEgress, "other", OTHER_V4, SERVER_V4, 80)
    ));

    // A second web pod comes: its own entries, in place.
    let added = other([("app", "web")], None);
    state.pods.insert(added.key.clone(), added.clone());
    let change =
        endpoint_change(compiler.pod_changed(&state, &added.key, None, is_local, is_local));
    let idle = (net.active_in_kernel() ^ 1) as usize;
    let idle_before = net.read_banks()[idle].clone();
    let interfaces = net.interfaces.clone();
    in_place(&mut net, compiler.tables(), &interfaces, &change);
    assert_eq!(
        net.read_banks()[idle],
        idle_before,
        "an add writes only the active bank"
    );
    for (client, other) in [(CLIENT_V4, OTHER_V4), (CLIENT_V6, OTHER_V6)] {
        // Its ingress is the web pods': the client on 80, nothing else.
        assert!(passes(
            &mut net,
            (Hook::PodIngress, "other", client, other, 80)
        ));
        assert!(!passes(
            &mut net,
            (Hook::PodIngress, "other", client, other, 81)
        ));
        // The client's egress sees it as a web pod.
        assert!(passes(
            &mut net,
            (Hook::PodEgress, "client", client, other, 80)
        ));
        assert!(!passes(
            &mut net,
            (Hook::PodEgress, "client", client, other, 81)
        ));
        // Its own egress is not isolated, and its addresses are its own.
        assert!(passes(
            &mut net,
            (Hook::PodEgress, "other", other, client, 80)
        ));
        // Not the client's: a spoofed source is dropped.
        assert!(!passes(
            &mut net,
            (Hook::PodEgress, "other", client, other, 80)
        ));
    }
    // A web pod is not a client: the server does not admit it.
    assert!(!passes(
        &mut net,
        (Hook::PodIngress, "server", OTHER_V4, SERVER_V4, 80)
    ));

    // Flips after the in-place write: into the bank not written (from its own
    // shadow), then back into the written one, which lacks nothing.
    let tables_after = compiler.tables().clone();
    let back = net
        .datapath
        .apply(&tables_before, &without, &BTreeMap::new());
    let back = back.unwrap_or_else(|e| panic!("apply: {e}"));
    assert!(back.written + back.removed > 0);
    assert!(!passes(
        &mut net,
        (Hook::PodIngress, "other", CLIENT_V4, OTHER_V4, 80)
    ));
    let forth = net
        .datapath
        .apply(&tables_after, &interfaces, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("apply: {e}"));
    assert_eq!((forth.written, forth.removed), (0, 0), "{forth:?}");
    assert!(passes(
        &mut net,
        (Hook::PodIngress, "other", CLIENT_V4, OTHER_V4, 80)
    ));
    // Once more through the other bank (a peer entry more, then back), so
    // that both hold the pod before it goes.
    let mut widened = tables_after.clone();
    let extra: IpNet = "192.0.2.0/24".parse().unwrap_or_else(|e| panic!("{e}"));
    widened.peers.insert(extra, PeerEntry::default());
    for tables in [&widened, &tables_after] {
        net.datapath
            .apply(tables, &interfaces, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("apply: {e}"));
    }
    let banks = net.read_banks();
    for b in [0, 1] {
        assert_eq!(&banks[b as usize], net.datapath.bank_shadow(b), "bank {b}");
        assert_eq!(
            other_entries(&banks[b as usize], ifindex),
            (true, 2, 2),
            "bank {b}"
        );
    }

    // It goes: its entries leave the active bank at once; the bank not read
    // loses its interface's entry (a removal there only narrows) and keeps its
    // addresses and peer entries (packets of the last flip's grace period may
    // still read it) until the next flip writes it from its shadow, and then
    // neither holds them.
    let before = state.pods.remove(&added.key);
    let change = endpoint_change(compiler.pod_changed(
        &state,
        &added.key,
        before.as_ref(),
        is_local,
        is_local,
    ));
    let active = net.active_in_kernel() as usize;
    in_place(&mut net, compiler.tables(), &without, &change);
    let banks = net.read_banks();
    assert_eq!(other_entries(&banks[active], ifindex), (false, 0, 0));
    assert_eq!(other_entries(&banks[active ^ 1], ifindex), (false, 2, 2));
    let mut widened = compiler.tables().clone();
    widened.peers.insert(extra, PeerEntry::default());
    for tables in [&widened, compiler.tables()] {
        net.datapath
            .apply(tables, &without, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("apply: {e}"));
    }
    let banks = net.read_banks();
    for b in [0, 1] {
        assert_eq!(
            other_entries(&banks[b as usize], ifindex),
            (false, 0, 0),
            "bank {b}"
        );
    }
    for (client, other) in [(CLIENT_V4, OTHER_V4), (CLIENT_V6, OTHER_V6)] {
        assert!(!passes(
            &mut net,
            (Hook::PodIngress, "other", client, other, 80)
        ));
        assert!(!passes(
            &mut net,
            (Hook::PodEgress, "other", other, client, 80)
        ));
        assert!(!passes(
            &mut net,
            (Hook::PodEgress, "client", client, other, 80)
        ));
    }

    // Its address goes to a client pod of another node: that pod's peer entry,
    // in place; the server admits it, and the client may no longer send to it.
    let reused = other([("role", "client")], Some("n1"));
    state.pods.insert(reused.key.clone(), reused.clone());
    let prefixes = match compiler.pod_changed(&state, &reused.key, None, is_local, is_local) {
        Recompiled::Peers(prefixes) => prefixes,
        other => panic!("expected Recompiled::Peers, got {other:?}"),
    };
    let expected: Vec<IpNet> = [OTHER_V4, OTHER_V6]
        .iter()
        .map(|a| IpNet::from(a.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"))))
        .collect();
    assert_eq!(prefixes, expected);
    net.datapath
        .update_peers(compiler.tables(), &prefixes)
        .unwrap_or_else(|e| panic!("update_peers: {e}"));
    assert!(passes(
        &mut net,
        (Hook::PodIngress, "server", OTHER_V4, SERVER_V4, 80)
    ));
    assert!(!passes(
        &mut net,
        (Hook::PodEgress, "client", CLIENT_V4, OTHER_V4, 80)
    ));
    assert!(!passes(
        &mut net,
        (Hook::PodIngress, "other", CLIENT_V4, OTHER_V4, 80)
    ));
}
