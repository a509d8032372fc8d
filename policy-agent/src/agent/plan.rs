//! What the sync loop does to interfaces, decided from data only: the local pods,
//! which interface is which pod's, which interfaces to attach and detach, and the
//! `ENDPOINTS` entry of pending interfaces. Pure: imports only `model` and
//! `policy`; the loop gathers the inputs (route lookups, the last plan's mapping,
//! links, the attached set) and carries the plan out.
//!
//! Rules (each has a unit test in `plan/tests.rs`):
//! 1. a pod is *scheduled here* if its `spec.nodeName` is this node and it is not
//!    `hostNetwork` (such pods share the node's interfaces: never endpoints);
//! 2. a scheduled pod is *local* (compiled as an endpoint) once it has an address;
//!    a finished pod (Succeeded or Failed) has no address, so it is never local
//!    (its old address may already be a new pod's);
//! 3. a local pod's *targets* are the interfaces its addresses lead to
//!    (`node::RouteResolver::resolve_pod`: the veth a route goes through, or behind
//!    a bridge each port whose veth peer holds the address in the pod's own
//!    namespace). Never a neighbour entry or the bridge's forwarding database:
//!    a pod can forge ARP/NDP replies and source MACs, not its peer's addresses;
//! 4. a pod *holds* interface i when the last plan mapped it to i and i is still
//!    one of its targets: it stays mapped to i whatever else its addresses lead to,
//!    and each other target is a conflict. A pod whose address leads to an
//!    interface another pod holds is not mapped there: a conflict too. Conflicts
//!    are reported (log, metric, `/readyz` detail) and never followed, so no pod
//!    moves onto another pod's port;
//! 5. a pod that holds nothing is *mapped* to interface i when i is its only target
//!    and no other pod that holds nothing targets i;
//! 6. an interface two such pods target, or one of several a single pod's
//!    addresses lead to, maps no pod: it is *contested* (fail closed);
//! 7. behind a bridge, a mapped pod's address whose neighbour entry and FDB lead to
//!    another port (a forged ARP/NDP reply or MAC, or a stale entry) is a conflict:
//!    reported, the mapping stays;
//! 8. *candidates* are the links whose names match `--interface-prefix`, except
//!    bridges themselves and the ports of a bridge that is no *pod bridge* (one named in `--pod-bridge`,
//!    or one a local pod address's route goes through): such a veth belongs to
//!    something else on the node (a container runtime's own bridge) and is never
//!    attached on sight;
//! 9. *pending* interfaces: the candidates and contested interfaces that map no
//!    pod;
//! 10. attach: mapped and pending interfaces not attached yet; detach: attached
//!     interfaces neither mapped nor pending (the pod is gone, its veth was
//!     recreated under a new index, or it turned out to be no pod's);
//! 11. a pending interface's entry: isolated for direction d iff some policy
//!     applies for d to some pod scheduled here that is not mapped yet (no address
//!     yet, no route yet, contested) and has not finished (Succeeded or Failed: it
//!     will never own an interface again); audit-only for d iff every such pod isolated
//!     for d is isolated only by audit-mode policies (`isolation::isolating`). Its
//!     endpoint id has no `POLICY` entries, so what isolates it drops everything in
//!     that direction except what never meets policy (node ingress, ND/MLD);
//! 12. *exits* (`node_exit`/`node_entry`: a Service egress deferred at a local client
//!     leaving for a backend elsewhere) are every other link through which a packet
//!     can leave the node: not the loopback, not enslaved to another device (its
//!     master carries them: a bridge, a bond), not a pod bridge (its ports are pod
//!     interfaces, which decide there), and neither mapped nor pending. A bridge
//!     that is no pod bridge (a container runtime's) is an exit. Only links whose
//!     packets start with an Ethernet header (`node_exit`) or with the IP header
//!     itself (an IP-in-IP, WireGuard or tun device: `node_exit_ip`): the
//!     classifiers parse nothing else.

mod identity;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

pub use self::identity::{Conflict, Port};
use crate::{
    dataplane::Frames,
    model::{ClusterState, ObjectRef, Pod, PolicyMode},
    policy::{
        isolation::isolating,
        tables::{Direction, EndpointEntry},
    },
};

/// A link of the node as the plan sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanLink {
    /// Its name.
    pub name: String,
    /// The device it is enslaved to, if any.
    pub master: Option<u32>,
    /// Whether it is a bridge.
    pub bridge: bool,
    /// What its packets start with, if exit classifiers parse it
    /// (`node::Link::frames`).
    pub frames: Option<Frames>,
}

/// What the loop knows when it plans.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// The cluster as the source sees it.
    pub state: &'a ClusterState,
    /// This node's name (`--node-name`).
    pub node_name: &'a str,
    /// The local pods' addresses that lead to pod interfaces, with those
    /// interfaces (`node::PodRoute::interfaces`).
    pub routes: &'a BTreeMap<IpAddr, BTreeSet<u32>>,
    /// Behind a bridge: the port each local pod address's neighbour entry and
    /// the bridge FDB lead to now (`node::PodRoute::neighbour_port`); evidence only.
    pub neighbours: &'a BTreeMap<IpAddr, u32>,
    /// Bridges a route to a local pod address goes through.
    pub route_bridges: &'a BTreeSet<u32>,
    /// The last plan's `interfaces` (what each pod holds).
    pub previous: &'a BTreeMap<ObjectRef, u32>,
    /// Interfaces the datapath has programs on now.
    pub attached: &'a BTreeSet<u32>,
    /// Every link present now, by ifindex.
    pub links: &'a BTreeMap<u32, PlanLink>,
    /// `--interface-prefix`.
    pub prefixes: &'a [String],
    /// `--pod-bridge`: bridges whose veth ports are pods' before any route says so.
    pub pod_bridge_names: &'a [String],
    /// The endpoint id pending interfaces get (one with no `POLICY` entries).
    pub pending_endpoint_id: u32,
}

/// What the loop does next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pods to compile as local endpoints (rule 2).
    pub local_pods: BTreeSet<ObjectRef>,
    /// Local pods' interfaces (rules 4, 5): `apply`'s `interfaces`.
    pub interfaces: BTreeMap<ObjectRef, u32>,
    /// Local pods without an interface (no route yet, contested, or a conflict):
    /// not yet enforced as themselves; readiness waits for them.
    pub unmapped: BTreeSet<ObjectRef>,
    /// Contested interfaces and the pods whose routes lead there (rule 6).
    pub contested: BTreeMap<u32, BTreeSet<ObjectRef>>,
    /// What says a pod address belongs elsewhere, not followed (rules 4, 7).
    pub conflicts: BTreeSet<Conflict>,
    /// Pod bridges (rule 8).
    pub pod_bridges: BTreeSet<u32>,
    /// Interfaces to attach (rule 10), ascending.
    pub attach: BTreeSet<u32>,
    /// Interfaces to detach (rule 10), ascending.
    pub detach: BTreeSet<u32>,
    /// Pending interfaces and their entry (rules 9, 11): `apply`'s
    /// `extra_endpoints`.
    pub pending: BTreeMap<u32, EndpointEntry>,
    /// The entry any pending interface gets now (rule 11), also for one that
    /// appears before the next plan.
    pub pending_entry: EndpointEntry,
    /// The node's exits (rule 12), ascending, and what their packets start with.
    pub exits: BTreeMap<u32, Frames>,
}

/// Rule 1: whether `pod` is scheduled to `node_name` on the pod network.
pub fn scheduled_here(pod: &Pod, node_name: &str) -> bool {
    !pod.host_network && pod.node_name.as_deref() == Some(node_name)
}

/// Rule 2: whether `pod` is a local endpoint of `node_name`.
pub fn is_local(pod: &Pod, node_name: &str) -> bool {
    scheduled_here(pod, node_name) && !pod.ips.is_empty()
}

/// The addresses of the local pods: what the loop looks routes up for.
pub fn local_addresses(state: &ClusterState, node_name: &str) -> BTreeSet<IpAddr> {
    state
        .pods
        .values()
        .filter(|pod| is_local(pod, node_name))
        .flat_map(|pod| pod.ips.iter().copied())
        .collect()
}

/// Whether an interface called `name` is attached on sight (`--interface-prefix`).
pub fn matches_prefix(name: &str, prefixes: &[impl AsRef<str>]) -> bool {
    prefixes
        .iter()
        .any(|prefix| !prefix.as_ref().is_empty() && name.starts_with(prefix.as_ref()))
}

/// Rule 8: whether `link` is a candidate, given every link and the pod bridges
/// (`Plan::pod_bridges`, or the last plan's).
pub fn is_candidate(
    link: &PlanLink,
    links: &BTreeMap<u32, PlanLink>,
    prefixes: &[impl AsRef<str>],
    pod_bridges: &BTreeSet<u32>,
) -> bool {
    if link.bridge || !matches_prefix(&link.name, prefixes) {
        return false;
    }
    match link.master {
        Some(master) => {
            let on_bridge = links.get(&master).is_some_and(|m| m.bridge);
            !on_bridge || pod_bridges.contains(&master)
        }
        None => true,
    }
}

/// Rule 8: the bridges among `links` named in `names` (`--pod-bridge`).
pub fn named_pod_bridges(links: &BTreeMap<u32, PlanLink>, names: &[String]) -> BTreeSet<u32> {
    links
        .iter()
        .filter(|(_, link)| link.bridge && names.contains(&link.name))
        .map(|(index, _)| *index)
        .collect()
}

/// Rule 8: the pod bridges.
fn pod_bridges(input: &PlanInput<'_>) -> BTreeSet<u32> {
    let mut out = named_pod_bridges(input.links, input.pod_bridge_names);
    out.extend(input.route_bridges);
    out
}

/// Computes the plan (see the module's rules).
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let local: Vec<&Pod> = input
        .state
        .pods
        .values()
        .filter(|pod| is_local(pod, input.node_name))
        .collect();
    let port = |index: u32| Port {
        index,
        name: input
            .links
            .get(&index)
            .map(|l| l.name.clone())
            .unwrap_or_default(),
    };
    // Rules 2-7.
    let mapping = identity::map(
        &local,
        input.routes,
        input.previous,
        input.neighbours,
        &port,
    );
    let mut out = Plan {
        local_pods: local.iter().map(|pod| pod.key.clone()).collect(),
        interfaces: mapping.interfaces,
        contested: mapping.contested,
        conflicts: mapping.conflicts,
        pod_bridges: pod_bridges(input),
        ..Plan::default()
    };
    out.unmapped = out
        .local_pods
        .iter()
        .filter(|key| !out.interfaces.contains_key(*key))
        .cloned()
        .collect();

    // Rules 8-11.
    let mapped: BTreeSet<u32> = out.interfaces.values().copied().collect();
    let entry = pending_entry(input, &out.interfaces);
    out.pending_entry = entry;
    let candidates = input
        .links
        .iter()
        .filter(|(_, link)| is_candidate(link, input.links, input.prefixes, &out.pod_bridges));
    out.pending = candidates
        .map(|(index, _)| index)
        .chain(out.contested.keys())
        .filter(|ifindex| !mapped.contains(*ifindex))
        .map(|ifindex| (*ifindex, entry))
        .collect();
    let wanted: BTreeSet<u32> = mapped.iter().chain(out.pending.keys()).copied().collect();
    out.attach = wanted.difference(input.attached).copied().collect();
    out.detach = input.attached.difference(&wanted).copied().collect();
    // Rule 12.
    out.exits = input
        .links
        .iter()
        .filter(|(index, link)| is_exit(**index, link, &out.pod_bridges, &wanted))
        .filter_map(|(index, link)| Some((*index, link.frames?)))
        .collect();
    out
}

/// Rule 12: whether link `index` is an exit of the node, given the pod bridges and
/// the pod interfaces (mapped and pending).
pub fn is_exit(
    index: u32,
    link: &PlanLink,
    pod_bridges: &BTreeSet<u32>,
    pod_interfaces: &BTreeSet<u32>,
) -> bool {
    link.name != "lo"
        && link.frames.is_some()
        && link.master.is_none()
        && !pod_bridges.contains(&index)
        && !pod_interfaces.contains(&index)
}

/// Rule 11: the entry of every pending interface.
fn pending_entry(input: &PlanInput<'_>, interfaces: &BTreeMap<ObjectRef, u32>) -> EndpointEntry {
    let policies = || input.state.policies.values().map(|policy| ((), policy));
    let waiting = input.state.pods.values().filter(|pod| {
        scheduled_here(pod, input.node_name) && !pod.finished && !interfaces.contains_key(&pod.key)
    });
    let (mut ingress, mut egress) = (Isolation::default(), Isolation::default());
    for pod in waiting {
        ingress.add(isolating(policies(), pod, Direction::Ingress));
        egress.add(isolating(policies(), pod, Direction::Egress));
        // A ClusterNetworkPolicy that applies isolates it too (its pending
        // entry has no rule sets, so it drops everything: fail closed).
        ingress.add_tiered(input.state, pod, Direction::Ingress);
        egress.add_tiered(input.state, pod, Direction::Egress);
    }
    EndpointEntry {
        endpoint_id: input.pending_endpoint_id,
        isolated_ingress: ingress.isolated,
        isolated_egress: egress.isolated,
        audit_ingress: ingress.isolated && !ingress.enforced,
        audit_egress: egress.isolated && !egress.enforced,
        // Not its pod's yet: no namespace lets it tunnel.
        allow_tunnels: false,
    }
}

/// Rule 11 for one direction, folded over the waiting pods.
#[derive(Default)]
struct Isolation {
    /// Some waiting pod is isolated.
    isolated: bool,
    /// Some waiting pod is isolated by an enforce-mode policy.
    enforced: bool,
}

impl Isolation {
    fn add(&mut self, found: crate::policy::isolation::Isolating<()>) {
        if !found.deciding.is_empty() {
            self.isolated = true;
            self.enforced |= found.mode == PolicyMode::Enforce;
        }
    }

    /// Folds in the ClusterNetworkPolicies that apply to `pod` for `direction`.
    fn add_tiered(&mut self, state: &ClusterState, pod: &Pod, direction: Direction) {
        for policy in state.cluster_policies.values() {
            if crate::policy::cluster::applies_to(state, policy, pod, direction) {
                self.isolated = true;
                self.enforced |= policy.mode == PolicyMode::Enforce;
            }
        }
    }
}

#[cfg(test)]
mod tests;
