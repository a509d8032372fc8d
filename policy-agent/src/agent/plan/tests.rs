//! One test per rule of `plan`; rules 3-7 (identity) in `tests/identity.rs`, rule 8
//! (candidates) in `tests/candidates.rs`.

mod candidates;
mod identity;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{local_addresses, matches_prefix, plan, Plan, PlanInput, PlanLink, Port};
use crate::dataplane::Frames;
use crate::{
    model::{
        builders::{cluster, cluster_rule, cnp, netpol, pod, selector, PodBuilder},
        ClusterState, ObjectRef,
    },
    policy::tables::EndpointEntry,
};

const NODE: &str = "node-1";
const PENDING: u32 = 4096;

fn key(name: &str) -> ObjectRef {
    ObjectRef::new("prod", name)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A pod of `prod` on this node.
fn here(name: &str) -> PodBuilder {
    pod("prod", name).node(NODE)
}

/// The inputs of one plan, with defaults a test overrides.
struct Case {
    state: ClusterState,
    routes: BTreeMap<IpAddr, BTreeSet<u32>>,
    neighbours: BTreeMap<IpAddr, u32>,
    route_bridges: BTreeSet<u32>,
    previous: BTreeMap<ObjectRef, u32>,
    attached: BTreeSet<u32>,
    links: BTreeMap<u32, PlanLink>,
}

impl Case {
    fn new(state: ClusterState) -> Self {
        Self {
            state,
            routes: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            route_bridges: BTreeSet::new(),
            previous: BTreeMap::new(),
            attached: BTreeSet::new(),
            links: BTreeMap::new(),
        }
    }

    /// `address` leads to `ifindex` (one more target if it led somewhere already).
    fn route(mut self, address: &str, ifindex: u32) -> Self {
        self.routes.entry(ip(address)).or_default().insert(ifindex);
        self
    }

    /// `address`'s neighbour entry and the FDB lead to bridge port `ifindex`.
    fn neighbour(mut self, address: &str, ifindex: u32) -> Self {
        self.neighbours.insert(ip(address), ifindex);
        self
    }

    /// The last plan mapped `pod` to `ifindex`.
    fn held(mut self, pod: &str, ifindex: u32) -> Self {
        self.previous.insert(key(pod), ifindex);
        self
    }

    fn attached(mut self, ifindexes: impl IntoIterator<Item = u32>) -> Self {
        self.attached.extend(ifindexes);
        self
    }

    /// A link without a master.
    fn candidate(self, ifindex: u32, name: &str) -> Self {
        self.link(ifindex, name, None)
    }

    fn link(mut self, ifindex: u32, name: &str, master: Option<u32>) -> Self {
        let link = PlanLink {
            name: name.to_string(),
            master,
            bridge: false,
            frames: Some(Frames::Ethernet),
        };
        self.links.insert(ifindex, link);
        self
    }

    /// A bridge; `routed`: a local pod address's route goes through it.
    fn bridge(mut self, ifindex: u32, name: &str, routed: bool) -> Self {
        let link = PlanLink {
            name: name.to_string(),
            master: None,
            bridge: true,
            frames: Some(Frames::Ethernet),
        };
        self.links.insert(ifindex, link);
        if routed {
            self.route_bridges.insert(ifindex);
        }
        self
    }

    fn plan(&self) -> Plan {
        plan(&PlanInput {
            state: &self.state,
            node_name: NODE,
            routes: &self.routes,
            neighbours: &self.neighbours,
            route_bridges: &self.route_bridges,
            previous: &self.previous,
            attached: &self.attached,
            links: &self.links,
            prefixes: &["veth".to_string(), "pw".to_string()],
            pod_bridge_names: &["cni0".to_string()],
            pending_endpoint_id: PENDING,
        })
    }
}

fn port(index: u32, name: &str) -> Port {
    Port {
        index,
        name: name.to_string(),
    }
}

fn keys<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<ObjectRef> {
    names.into_iter().map(key).collect()
}

fn set(ifindexes: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
    ifindexes.into_iter().collect()
}

fn pending_entry(ingress: (bool, bool), egress: (bool, bool)) -> EndpointEntry {
    EndpointEntry {
        endpoint_id: PENDING,
        isolated_ingress: ingress.0,
        audit_ingress: ingress.1,
        isolated_egress: egress.0,
        audit_egress: egress.1,
        allow_tunnels: false,
    }
}

#[test]
fn local_pods_are_this_nodes_pod_network_pods_with_an_address() {
    let state = cluster()
        .pod(here("web").ip("10.0.0.5").ip("fd00::5").build())
        .pod(here("starting").build())
        .pod(here("host").ip("192.168.0.10").host_network().build())
        .pod(
            pod("prod", "elsewhere")
                .node("node-2")
                .ip("10.0.1.5")
                .build(),
        )
        .pod(pod("prod", "unscheduled").build())
        .build();
    let plan = Case::new(state.clone()).plan();
    assert_eq!(plan.local_pods, keys(["web"]));
    assert_eq!(
        local_addresses(&state, NODE),
        BTreeSet::from([ip("10.0.0.5"), ip("fd00::5")])
    );
}

#[test]
fn a_pod_whose_addresses_route_to_one_interface_is_mapped_to_it() {
    let state = cluster()
        .pod(here("web").ip("10.0.0.5").ip("fd00::5").build())
        .pod(here("v4-only-routed").ip("10.0.0.6").ip("fd00::6").build())
        .build();
    let plan = Case::new(state)
        .route("10.0.0.5", 7)
        .route("fd00::5", 7)
        .route("10.0.0.6", 8)
        .plan();
    assert_eq!(
        plan.interfaces,
        BTreeMap::from([(key("web"), 7), (key("v4-only-routed"), 8)])
    );
    assert!(plan.unmapped.is_empty());
    assert_eq!(plan.attach, set([7, 8]));
}

#[test]
fn a_pod_without_a_route_is_unmapped_and_nothing_is_attached_for_it() {
    let state = cluster().pod(here("web").ip("10.0.0.5").build()).build();
    let plan = Case::new(state).plan();
    assert_eq!(plan.local_pods, keys(["web"]));
    assert_eq!(plan.unmapped, keys(["web"]));
    assert!(plan.interfaces.is_empty() && plan.attach.is_empty());
}

#[test]
fn an_interface_two_pods_route_to_maps_neither_and_is_pending() {
    // A finished pod still listed with the address a new pod reuses.
    let state = cluster()
        .pod(here("old").ip("10.0.0.5").build())
        .pod(here("new").ip("10.0.0.5").build())
        .pod(here("other").ip("10.0.0.6").build())
        .build();
    let plan = Case::new(state)
        .route("10.0.0.5", 7)
        .route("10.0.0.6", 8)
        .plan();
    assert_eq!(plan.interfaces, BTreeMap::from([(key("other"), 8)]));
    assert_eq!(plan.unmapped, keys(["new", "old"]));
    assert_eq!(plan.contested, BTreeMap::from([(7, keys(["new", "old"]))]));
    assert_eq!(
        plan.pending.keys().copied().collect::<BTreeSet<_>>(),
        set([7])
    );
    assert_eq!(plan.attach, set([7, 8]));
}

#[test]
fn a_pod_whose_addresses_route_to_two_interfaces_maps_to_neither() {
    let state = cluster()
        .pod(here("web").ip("10.0.0.5").ip("fd00::5").build())
        .build();
    let plan = Case::new(state)
        .route("10.0.0.5", 7)
        .route("fd00::5", 9)
        .plan();
    assert!(plan.interfaces.is_empty());
    assert_eq!(plan.unmapped, keys(["web"]));
    assert_eq!(
        plan.contested,
        BTreeMap::from([(7, keys(["web"])), (9, keys(["web"]))])
    );
    assert_eq!(
        plan.pending.keys().copied().collect::<BTreeSet<_>>(),
        set([7, 9])
    );
}

#[test]
fn candidates_are_pending_until_a_pod_maps_them() {
    let state = cluster().pod(here("web").ip("10.0.0.5").build()).build();
    let plan = Case::new(state)
        .route("10.0.0.5", 7)
        .candidate(7, "veth7")
        .candidate(11, "veth11")
        .plan();
    assert_eq!(plan.interfaces, BTreeMap::from([(key("web"), 7)]));
    assert_eq!(
        plan.pending.keys().copied().collect::<BTreeSet<_>>(),
        set([11])
    );
    assert_eq!(plan.attach, set([7, 11]));
}

#[test]
fn only_interfaces_not_attached_are_attached_and_only_unwanted_ones_detached() {
    let state = cluster()
        .pod(here("web").ip("10.0.0.5").build())
        .pod(here("db").ip("10.0.0.6").build())
        .build();
    let plan = Case::new(state)
        .route("10.0.0.5", 7)
        .route("10.0.0.6", 8)
        .candidate(11, "veth11")
        // 7 and 11 are attached already; 3 belonged to a pod that is gone.
        .attached([3, 7, 11])
        .plan();
    assert_eq!(plan.attach, set([8]));
    assert_eq!(plan.detach, set([3]));
}

#[test]
fn a_recreated_veth_is_attached_under_its_new_index_and_the_old_one_detached() {
    let state = cluster().pod(here("web").ip("10.0.0.5").build()).build();
    // The route moved whole: the pod follows it (nothing leads to 7 any more).
    let plan = Case::new(state)
        .route("10.0.0.5", 12)
        .candidate(12, "veth-web")
        .held("web", 7)
        .attached([7])
        .plan();
    assert_eq!(plan.interfaces, BTreeMap::from([(key("web"), 12)]));
    assert_eq!(plan.attach, set([12]));
    assert_eq!(plan.detach, set([7]));
}

#[test]
fn pending_interfaces_are_open_while_no_policy_selects_a_waiting_pod() {
    let state = cluster()
        .pod(here("web").labels([("app", "web")]).ip("10.0.0.5").build())
        .pod(here("new").labels([("app", "new")]).build())
        // Selects only the mapped pod, and a pod on another node.
        .policy(
            netpol("prod", "web-only")
                .select(selector().label("app", "web").build())
                .build(),
        )
        .pod(
            pod("prod", "far")
                .labels([("app", "far")])
                .node("node-2")
                .build(),
        )
        .policy(
            netpol("prod", "far-only")
                .select(selector().label("app", "far").build())
                .build(),
        )
        .build();
    let plan = Case::new(state)
        .route("10.0.0.5", 7)
        .candidate(11, "veth11")
        .plan();
    assert_eq!(
        plan.pending,
        BTreeMap::from([(11, pending_entry((false, false), (false, false)))])
    );
}

#[test]
fn pending_interfaces_are_isolated_in_the_directions_policies_select_waiting_pods() {
    let new = selector().label("app", "new").build();
    let state = cluster()
        // No address yet.
        .pod(here("new").labels([("app", "new")]).build())
        // Address, but no route yet.
        .pod(
            here("routing")
                .labels([("app", "routing")])
                .ip("10.0.0.9")
                .build(),
        )
        .policy(
            netpol("prod", "deny-new")
                .select(new)
                .types(true, false)
                .build(),
        )
        .policy(
            netpol("prod", "egress-routing")
                .select(selector().label("app", "routing").build())
                .types(false, true)
                .build(),
        )
        .build();
    let plan = Case::new(state).candidate(11, "veth11").plan();
    assert_eq!(
        plan.pending,
        BTreeMap::from([(11, pending_entry((true, false), (true, false)))])
    );
}

#[test]
fn pending_isolation_is_audit_only_when_every_isolating_policy_is_audit_mode() {
    let audit_only = cluster()
        .pod(here("new").build())
        .policy(netpol("prod", "audit-all").audit().build())
        .build();
    let plan = Case::new(audit_only).candidate(11, "veth11").plan();
    assert_eq!(
        plan.pending[&11],
        pending_entry((true, true), (false, false))
    );

    // One waiting pod under an enforce-mode policy: the pending entry enforces.
    let mixed = cluster()
        .pod(here("new").labels([("app", "new")]).build())
        .pod(pod("dev", "other").node(NODE).build())
        .policy(netpol("dev", "audit-all").audit().build())
        .policy(
            netpol("prod", "enforce-new")
                .select(selector().label("app", "new").build())
                .build(),
        )
        .build();
    let plan = Case::new(mixed).candidate(11, "veth11").plan();
    assert_eq!(
        plan.pending[&11],
        pending_entry((true, false), (false, false))
    );
}

#[test]
fn pending_interfaces_are_isolated_where_a_cluster_network_policy_applies_to_a_waiting_pod() {
    use crate::model::{RuleAction, Tier};
    // No NetworkPolicy: only a Baseline default-deny of ingress, enforced.
    let deny = cnp("default-deny", Tier::Baseline, 0)
        .ingress(
            cluster_rule(RuleAction::Deny)
                .namespaces(selector().build())
                .build(),
        )
        .build();
    let state = cluster()
        .pod(here("new").build())
        .cluster_policy(deny.clone())
        .build();
    let plan = Case::new(state).candidate(11, "veth11").plan();
    assert_eq!(
        plan.pending[&11],
        pending_entry((true, false), (false, false))
    );
    // In audit mode: isolated in audit.
    let audited = cluster()
        .pod(here("new").build())
        .cluster_policy(crate::model::ClusterNetworkPolicy {
            mode: crate::model::PolicyMode::Audit,
            ..deny
        })
        .build();
    let plan = Case::new(audited).candidate(11, "veth11").plan();
    assert_eq!(
        plan.pending[&11],
        pending_entry((true, true), (false, false))
    );
}

#[test]
fn pods_that_never_own_a_veth_never_make_pending_interfaces_isolated() {
    let mut done = here("done").build();
    done.finished = true;
    for pod in [here("host").host_network().build(), done] {
        let state = cluster()
            .pod(pod)
            .policy(netpol("prod", "deny-all").build())
            .build();
        let plan = Case::new(state).candidate(11, "veth11").plan();
        assert_eq!(
            plan.pending[&11],
            pending_entry((false, false), (false, false))
        );
    }
}

#[test]
fn interface_prefixes_match_name_starts_only() {
    let prefixes = ["veth", "cali", "lxc", "pw"];
    for name in ["veth1a2b", "cali12345", "lxc00aa", "pw3"] {
        assert!(matches_prefix(name, &prefixes), "{name}");
    }
    for name in ["eth0", "cni0", "lo", "xveth", "docker0"] {
        assert!(!matches_prefix(name, &prefixes), "{name}");
    }
    assert!(
        !matches_prefix("anything", &[""]),
        "an empty prefix matches nothing"
    );
}
