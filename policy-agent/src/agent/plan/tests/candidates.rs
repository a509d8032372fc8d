//! Rule 8 of `plan`: which links are attached on sight.

use std::collections::{BTreeMap, BTreeSet};

use super::{here, set, Case};
use crate::{
    agent::plan::{is_candidate, named_pod_bridges, PlanLink},
    dataplane::Frames,
    model::builders::cluster,
};

#[test]
fn veths_on_a_bridge_that_is_no_pod_bridge_are_never_attached_on_sight() {
    let state = cluster().pod(here("waiting").build()).build();
    let case = Case::new(state)
        // A container runtime's own bridge and its container's veth.
        .bridge(20, "podman0", false)
        .link(21, "veth-podman", Some(20))
        // The bridge CNI's bridge by name, before any pod's route goes there.
        .bridge(30, "cni0", false)
        .link(31, "veth-first-pod", Some(30))
        // A bridge some local pod's route goes through.
        .bridge(40, "pwbr0", true)
        .link(41, "pw1", Some(40))
        // A routed CNI's veth (no master).
        .candidate(50, "veth-routed")
        // The runtime's veth was attached before it was enslaved.
        .attached([21]);
    let plan = case.plan();
    assert_eq!(plan.pod_bridges, set([30, 40]));
    // What the loop uses between plans: a named bridge made since the last one.
    assert_eq!(
        named_pod_bridges(&case.links, &["cni0".to_string(), "pw1".to_string()]),
        set([30])
    );
    assert_eq!(
        plan.pending.keys().copied().collect::<BTreeSet<_>>(),
        set([31, 41, 50])
    );
    assert_eq!(plan.attach, set([31, 41, 50]));
    assert_eq!(plan.detach, set([21]));
}

#[test]
fn a_candidate_is_a_prefixed_link_not_enslaved_to_a_foreign_bridge() {
    let links = BTreeMap::from([
        (
            1,
            PlanLink {
                name: "docker0".into(),
                master: None,
                bridge: true,
                frames: Some(Frames::Ethernet),
            },
        ),
        (
            2,
            PlanLink {
                name: "bond0".into(),
                master: None,
                bridge: false,
                frames: Some(Frames::Ethernet),
            },
        ),
    ]);
    let link = |master| PlanLink {
        name: "veth9".into(),
        master,
        bridge: false,
        frames: Some(Frames::Ethernet),
    };
    let prefixes = ["veth"];
    assert!(is_candidate(&link(None), &links, &prefixes, &set([])));
    assert!(!is_candidate(&link(Some(1)), &links, &prefixes, &set([])));
    assert!(is_candidate(&link(Some(1)), &links, &prefixes, &set([1])));
    // A master that is no bridge (a bond, a VRF) says nothing about the pod.
    assert!(is_candidate(&link(Some(2)), &links, &prefixes, &set([])));
    let unprefixed = PlanLink {
        name: "eth0".into(),
        ..link(None)
    };
    assert!(!is_candidate(&unprefixed, &links, &prefixes, &set([])));
    let bridge = PlanLink {
        name: "veth-bridge".into(),
        master: None,
        bridge: true,
        frames: Some(Frames::Ethernet),
    };
    assert!(
        !is_candidate(&bridge, &links, &prefixes, &set([])),
        "a bridge is no pod's interface"
    );
}

#[test]
fn exits_are_the_links_a_packet_leaves_the_node_by_other_than_pod_interfaces() {
    let state = cluster().pod(here("waiting").build()).build();
    let mut case = Case::new(state)
        .link(1, "lo", None)
        // The uplink, a bond's slave, and the overlay's tunnel device.
        .link(2, "eth0", None)
        .link(3, "bond0", None)
        .link(4, "eth1", Some(3))
        .link(5, "flannel.1", None)
        // A container runtime's bridge and its veth; a pod bridge and its port.
        .bridge(20, "podman0", false)
        .link(21, "veth-podman", Some(20))
        .bridge(30, "cni0", false)
        .link(31, "veth-first-pod", Some(30))
        // A routed CNI's pod veth.
        .candidate(50, "veth-routed");
    // Calico's IP-in-IP device and a WireGuard one: bare IP packets; and a link
    // whose packets are neither Ethernet nor IP.
    for (index, name, frames) in [
        (6, "tunl0", Some(Frames::Ip)),
        (7, "wg0", Some(Frames::Ip)),
        (8, "ib0", None),
    ] {
        let link = PlanLink {
            name: name.into(),
            master: None,
            bridge: false,
            frames,
        };
        case.links.insert(index, link);
    }
    let plan = case.plan();
    let ethernet = Some(Frames::Ethernet);
    let exits: Vec<(u32, Option<Frames>)> = plan
        .exits
        .iter()
        .map(|(index, frames)| (*index, Some(*frames)))
        .collect();
    assert_eq!(
        exits,
        [
            (2, ethernet),
            (3, ethernet),
            (5, ethernet),
            (6, Some(Frames::Ip)),
            (7, Some(Frames::Ip)),
            (20, ethernet)
        ]
    );
    let exit_set: BTreeSet<u32> = plan.exits.keys().copied().collect();
    assert!(exit_set.is_disjoint(&plan.pending.keys().copied().collect()));
}
