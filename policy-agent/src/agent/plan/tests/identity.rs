//! Rules 3-7 of `plan`: a pod keeps what it holds, no pod takes another's
//! interface, and neighbour entries never decide.

use std::collections::{BTreeMap, BTreeSet};

use super::{here, ip, key, keys, port, Case};
use crate::{agent::plan::Conflict, model::builders::cluster};

#[test]
fn a_pod_keeps_the_interface_it_holds_when_its_address_also_leads_elsewhere() {
    // A pod with CAP_NET_ADMIN put the victim's address on its own interface too.
    let state = cluster()
        .pod(here("victim").ip("10.0.0.5").ip("fd00::5").build())
        .pod(here("attacker").ip("10.0.0.6").build())
        .build();
    let plan = Case::new(state)
        .candidate(7, "veth-victim")
        .candidate(8, "veth-attacker")
        .route("10.0.0.5", 7)
        .route("fd00::5", 7)
        .route("10.0.0.5", 8)
        .route("10.0.0.6", 8)
        .held("victim", 7)
        .held("attacker", 8)
        .attached([7, 8])
        .plan();
    assert_eq!(
        plan.interfaces,
        BTreeMap::from([(key("victim"), 7), (key("attacker"), 8)])
    );
    assert!(plan.unmapped.is_empty() && plan.contested.is_empty());
    assert_eq!(
        plan.conflicts,
        BTreeSet::from([Conflict::AlsoElsewhere {
            pod: key("victim"),
            address: ip("10.0.0.5"),
            other: port(8, "veth-attacker"),
            kept: port(7, "veth-victim"),
        }])
    );
    assert!(plan.attach.is_empty() && plan.detach.is_empty());
}

#[test]
fn a_pod_is_never_mapped_to_an_interface_another_pod_holds() {
    let state = cluster()
        .pod(here("victim").ip("10.0.0.5").build())
        .pod(here("newcomer").ip("10.0.0.7").build())
        .build();
    let plan = Case::new(state)
        .candidate(7, "veth-victim")
        .route("10.0.0.5", 7)
        .route("10.0.0.7", 7)
        .held("victim", 7)
        .plan();
    assert_eq!(plan.interfaces, BTreeMap::from([(key("victim"), 7)]));
    assert_eq!(plan.unmapped, keys(["newcomer"]));
    assert_eq!(
        plan.conflicts,
        BTreeSet::from([Conflict::HeldByAnother {
            pod: key("newcomer"),
            address: ip("10.0.0.7"),
            interface: port(7, "veth-victim"),
            holder: key("victim"),
        }])
    );
    // Without the holder (a first plan), the same routes contest the interface.
    let first = Case::new(
        cluster()
            .pod(here("victim").ip("10.0.0.5").build())
            .pod(here("newcomer").ip("10.0.0.7").build())
            .build(),
    )
    .route("10.0.0.5", 7)
    .route("10.0.0.7", 7)
    .plan();
    assert!(first.interfaces.is_empty());
    assert_eq!(
        first.contested,
        BTreeMap::from([(7, keys(["newcomer", "victim"]))])
    );
}

#[test]
fn a_neighbour_entry_leading_to_another_port_is_a_conflict_and_moves_nobody() {
    // The attacker answered ARP for the victim's address and for its own with the
    // victim's MAC: the node's neighbour entries and the FDB are swapped.
    let state = cluster()
        .pod(here("victim").ip("10.0.0.5").build())
        .pod(here("attacker").ip("10.0.0.6").build())
        .build();
    let case = Case::new(state)
        .bridge(3, "cni0", true)
        .link(7, "veth-victim", Some(3))
        .link(8, "veth-attacker", Some(3))
        .route("10.0.0.5", 7)
        .route("10.0.0.6", 8)
        .neighbour("10.0.0.5", 8)
        .neighbour("10.0.0.6", 7)
        .held("victim", 7)
        .held("attacker", 8);
    let plan = case.plan();
    assert_eq!(
        plan.interfaces,
        BTreeMap::from([(key("victim"), 7), (key("attacker"), 8)])
    );
    let conflicts: Vec<String> = plan.conflicts.iter().map(ToString::to_string).collect();
    assert_eq!(
        conflicts,
        [
            "pod prod/attacker: the node's neighbour entry for 10.0.0.6 leads to bridge port \
             veth-victim (ifindex 7), not to its interface veth-attacker (ifindex 8) (a forged \
             ARP/NDP reply or MAC?); its identity is kept",
            "pod prod/victim: the node's neighbour entry for 10.0.0.5 leads to bridge port \
             veth-attacker (ifindex 8), not to its interface veth-victim (ifindex 7) (a forged \
             ARP/NDP reply or MAC?); its identity is kept",
        ]
    );
    // A first plan maps the same way: neighbours never decide.
    let first = Case {
        previous: BTreeMap::new(),
        ..case
    };
    assert_eq!(
        first.plan().interfaces,
        BTreeMap::from([(key("victim"), 7), (key("attacker"), 8)])
    );
}
