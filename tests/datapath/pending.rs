//! Interfaces no pod of the tables owns (a new veth before its pod is known): the
//! extra `ENDPOINTS` entry `apply` writes for them, and `add_endpoints`, which puts
//! one on top of the active bank when there are no tables of the agent's own to
//! write (an adopted datapath whose first sync failed).

use std::collections::BTreeMap;

use policy_agent::{
    dataplane::{ApplyReport, Hook, InterfaceIndex},
    model::ObjectRef,
    policy::tables::{DatapathTables, EndpointEntry},
};
use policy_common::endpoint::PENDING_ENDPOINT_ID;

use super::{
    net::Net,
    pods::{self, syn, CLIENT_V4, SERVER_V4},
    tables::Tables,
};

/// A quiet server and client whose client veth no pod of the tables owns: the
/// tables without the client, the interfaces as `apply` takes them then, and the
/// client's interface with a pending entry for it, isolated for ingress if
/// `isolated_ingress`.
pub fn pending_client(
    isolated_ingress: bool,
) -> (
    Net,
    DatapathTables,
    BTreeMap<ObjectRef, InterfaceIndex>,
    (InterfaceIndex, EndpointEntry),
) {
    let net = pods::server_and_client();
    let tables = Tables::new(&net).unregistered("client").build();
    let interfaces = net.interfaces_without("client");
    let pending = EndpointEntry {
        endpoint_id: PENDING_ENDPOINT_ID,
        isolated_ingress,
        ..EndpointEntry::default()
    };
    let client = net.ifindex("client");
    (net, tables, interfaces, (client, pending))
}

#[test]
fn an_interface_no_pod_of_the_tables_owns_is_decided_by_its_extra_endpoint_entry() {
    let (mut net, tables, interfaces, (client, pending)) = pending_client(true);
    let into_client = |net: &mut Net| {
        let frame = syn(SERVER_V4, CLIENT_V4, pods::fresh_sport(), 80);
        net.run(Hook::PodIngress, "client", 0, &frame).passed
    };
    let out_of_client = |net: &mut Net| {
        let frame = syn(CLIENT_V4, SERVER_V4, pods::fresh_sport(), 80);
        net.run(Hook::PodEgress, "client", 0, &frame).passed
    };
    let apply = |net: &mut Net, extra: &BTreeMap<u32, EndpointEntry>| {
        net.datapath
            .apply(&tables, &interfaces, extra)
            .unwrap_or_else(|e| panic!("apply: {e}"))
    };

    // Without an entry the interface is unknown: everything drops.
    apply(&mut net, &BTreeMap::new());
    let before = net.stats();
    assert!(!into_client(&mut net));
    assert_eq!(
        net.stats().verdict_growth_since(&before),
        [("drop_unknown_endpoint", 1)]
    );

    // Pending and isolated for ingress: ingress drops by policy (no POLICY entry
    // names the pending id). Its egress is not isolated, but no address of it is
    // registered, so its source counts as spoofed.
    let report = apply(&mut net, &BTreeMap::from([(client, pending)]));
    let banks = net.read_banks();
    let entry = banks[report.bank as usize].endpoints.get(&client).copied();
    assert_eq!(entry.map(|e| e.endpoint_id), Some(PENDING_ENDPOINT_ID));
    let before = net.stats();
    assert!(!into_client(&mut net));
    assert_eq!(
        net.stats().verdict_growth_since(&before),
        [("drop_policy", 1)]
    );
    assert!(
        !out_of_client(&mut net),
        "an unregistered source is spoofed"
    );

    // A pod of the tables on the same interface wins over the extra entry.
    let registered = Tables::new(&net).build();
    net.datapath
        .apply(
            &registered,
            &net.interfaces.clone(),
            &BTreeMap::from([(client, pending)]),
        )
        .unwrap_or_else(|e| panic!("apply: {e}"));
    assert!(into_client(&mut net));
    assert!(out_of_client(&mut net));
}

/// The pending entry of an interface whose unknown pod a policy isolates for
/// ingress.
fn isolated_ingress_pending() -> EndpointEntry {
    EndpointEntry {
        endpoint_id: PENDING_ENDPOINT_ID,
        isolated_ingress: true,
        ..EndpointEntry::default()
    }
}

/// Programs the server admitting the client on TCP 80 only, the client unknown
/// (no entry for its interface).
fn client_unknown(net: &mut Net) -> ApplyReport {
    let tables = pods::server_admits_port_80(net)
        .unregistered("client")
        .build();
    let interfaces = net.interfaces_without("client");
    net.datapath
        .apply(&tables, &interfaces, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("apply: {e}"))
}

#[test]
fn endpoints_added_without_tables_go_on_top_of_the_active_bank_in_one_flip() {
    // The state an adopted datapath enforces when its agent's first sync fails:
    // the client unknown, the server admitting the client on TCP 80 only.
    let mut net = pods::server_and_client();
    let (server, client) = (net.ifindex("server"), net.ifindex("client"));
    let first = client_unknown(&mut net);
    let into_client = |net: &mut Net| {
        let frame = syn(SERVER_V4, CLIENT_V4, pods::fresh_sport(), 80);
        net.run(Hook::PodIngress, "client", 0, &frame).passed
    };
    let before = net.stats();
    assert!(!into_client(&mut net));
    assert_eq!(
        net.stats().verdict_growth_since(&before),
        [("drop_unknown_endpoint", 1)]
    );

    // The client's veth appears: a pending entry isolated for ingress goes on
    // top, nothing else changes, and ACTIVE flips once.
    let pending = isolated_ingress_pending();
    let extra = BTreeMap::from([(client, pending), (server, pending)]);
    let report = net
        .datapath
        .add_endpoints(&extra)
        .unwrap_or_else(|e| panic!("add_endpoints: {e}"));
    assert_ne!(report.bank, first.bank, "one flip");
    assert_eq!(net.active_in_kernel(), report.bank);
    let banks = net.read_banks();
    let (old, new) = (&banks[first.bank as usize], &banks[report.bank as usize]);
    assert_eq!(
        new.endpoints.get(&client).map(|e| e.endpoint_id),
        Some(PENDING_ENDPOINT_ID)
    );
    assert_eq!(
        new.endpoints.len(),
        old.endpoints.len() + 1,
        "only the new entry"
    );
    assert_eq!(new.addresses, old.addresses);
    assert_eq!(
        new.endpoints.get(&server),
        old.endpoints.get(&server),
        "an entry it had is kept"
    );
    assert_eq!(
        (&new.policy, &new.rule_sets, &new.peers_v4),
        (&old.policy, &old.rule_sets, &old.peers_v4)
    );
    let before = net.stats();
    assert!(!into_client(&mut net));
    assert_eq!(
        net.stats().verdict_growth_since(&before),
        [("drop_policy", 1)]
    );
    // Nothing new: nothing written, no flip.
    let again = net
        .datapath
        .add_endpoints(&extra)
        .unwrap_or_else(|e| panic!("add_endpoints: {e}"));
    assert_eq!((again.bank, again.written), (report.bank, 0));
}

#[test]
fn an_unattached_interface_gets_its_pending_entry_in_both_banks_without_a_flip() {
    // The server admits the client on TCP 80 only; the client's veth is new: no
    // classifier runs on it (a pod veth the agent is about to attach).
    let mut net = pods::server_and_client();
    let (server, client) = (net.ifindex("server"), net.ifindex("client"));
    net.datapath
        .detach(client)
        .unwrap_or_else(|e| panic!("detach: {e}"));
    let first = client_unknown(&mut net);
    let before_banks = net.read_banks();
    let pending = isolated_ingress_pending();
    let extra = BTreeMap::from([(client, pending), (server, pending)]);
    let report = net
        .datapath
        .add_unattached_endpoints(&BTreeMap::from([(client, pending)]))
        .unwrap_or_else(|e| panic!("add_unattached_endpoints: {e}"));
    assert_eq!((report.bank, report.written), (first.bank, 1), "no flip");
    assert_eq!(net.active_in_kernel(), first.bank);
    let banks = net.read_banks();
    for (bank, before) in banks.iter().zip(&before_banks) {
        assert_eq!(
            bank.endpoints.get(&client).map(|e| e.endpoint_id),
            Some(PENDING_ENDPOINT_ID),
            "in both banks: the next flip keeps it"
        );
        assert_eq!(bank.endpoints.len(), before.endpoints.len() + 1);
        assert_eq!(
            (&bank.policy, &bank.addresses),
            (&before.policy, &before.addresses)
        );
    }
    let before = net.stats();
    let frame = syn(SERVER_V4, CLIENT_V4, pods::fresh_sport(), 80);
    assert!(!net.run(Hook::PodIngress, "client", 0, &frame).passed);
    assert_eq!(
        net.stats().verdict_growth_since(&before),
        [("drop_policy", 1)],
        "decided by its pending entry"
    );
    // An interface with classifiers goes through a flip instead, and keeps the
    // entry it has.
    let classified = net
        .datapath
        .add_unattached_endpoints(&extra)
        .unwrap_or_else(|e| panic!("add_unattached_endpoints: {e}"));
    assert_eq!(classified.bank, first.bank, "nothing new to write: no flip");
    assert_eq!(
        net.read_banks()[first.bank as usize].endpoints.get(&server),
        before_banks[first.bank as usize].endpoints.get(&server)
    );
}
