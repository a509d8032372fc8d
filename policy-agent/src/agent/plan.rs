//! What the sync loop does to interfaces, decided from data only: the local pods,
//! which interfaces to attach and detach, and the `ENDPOINTS` entry of pending
//! interfaces. Pure: imports only `model` and `policy`; the loop gathers the
//! inputs (route lookups, attached set, link watch) and carries the plan out.
//!
//! Rules (each has a unit test in `plan/tests.rs`):
//! 1. a pod is *scheduled here* if its `spec.nodeName` is this node and it is not
//!    `hostNetwork` (such pods share the node's interfaces: never endpoints);
//! 2. a scheduled pod is *local* (compiled as an endpoint) once it has an address;
//!    a finished pod (Succeeded or Failed) has no address, so it is never local
//!    (its old address may already be a new pod's);
//! 3. a local pod is *mapped* to interface i when every one of its addresses that
//!    has a pod route (`node::route_interfaces`) leads to i, at least one does,
//!    and no other pod's addresses lead to i;
//! 4. an interface two pods' routes lead to, or one of several a single pod's
//!    addresses lead to, maps no pod: it is *contested*;
//! 5. *pending* interfaces: the candidates (links whose names match
//!    `--interface-prefix`) and contested interfaces that map no pod;
//! 6. attach: mapped and pending interfaces not attached yet; detach: attached
//!    interfaces neither mapped nor pending (the pod is gone, or its veth was
//!    recreated under a new index);
//! 7. a pending interface's entry: isolated for direction d iff some policy
//!    applies for d to some pod scheduled here that is not mapped yet (no address
//!    yet, no route yet, contested) and has not finished (Succeeded or Failed: it
//!    will never own an interface again); audit-only for d iff every such pod isolated
//!    for d is isolated only by audit-mode policies (`isolation::isolating`). Its
//!    endpoint id has no `POLICY` entries, so what isolates it drops everything in
//!    that direction except what never meets policy (node ingress, ND/MLD).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    model::{ClusterState, ObjectRef, Pod, PolicyMode},
    policy::{
        isolation::isolating,
        tables::{Direction, EndpointEntry},
    },
};

/// What the loop knows when it plans.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// The cluster as the source sees it.
    pub state: &'a ClusterState,
    /// This node's name (`--node-name`).
    pub node_name: &'a str,
    /// Pod route lookups of the local pods' addresses (`node::route_interfaces`):
    /// each address that leads to a pod interface, with its ifindex.
    pub routes: &'a BTreeMap<IpAddr, u32>,
    /// Interfaces the datapath has programs on now.
    pub attached: &'a BTreeSet<u32>,
    /// Links present now whose names match `--interface-prefix`, ifindex -> name.
    pub candidates: &'a BTreeMap<u32, String>,
    /// The endpoint id pending interfaces get (one with no `POLICY` entries).
    pub pending_endpoint_id: u32,
}

/// What the loop does next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pods to compile as local endpoints (rule 2).
    pub local_pods: BTreeSet<ObjectRef>,
    /// Local pods' interfaces (rule 3): `apply`'s `interfaces`.
    pub interfaces: BTreeMap<ObjectRef, u32>,
    /// Local pods without an interface (no route yet, or contested): not yet
    /// enforced as themselves; readiness waits for them.
    pub unmapped: BTreeSet<ObjectRef>,
    /// Contested interfaces and the pods whose routes lead there (rule 4).
    pub contested: BTreeMap<u32, BTreeSet<ObjectRef>>,
    /// Interfaces to attach (rule 6), ascending.
    pub attach: BTreeSet<u32>,
    /// Interfaces to detach (rule 6), ascending.
    pub detach: BTreeSet<u32>,
    /// Pending interfaces and their entry (rules 5, 7): `apply`'s
    /// `extra_endpoints`.
    pub pending: BTreeMap<u32, EndpointEntry>,
    /// The entry any pending interface gets now (rule 7), also for one that
    /// appears before the next plan.
    pub pending_entry: EndpointEntry,
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

/// Computes the plan (see the module's rules).
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut out = Plan::default();
    // Rules 2-4: who claims which interface.
    let mut claims: BTreeMap<u32, BTreeSet<ObjectRef>> = BTreeMap::new();
    let mut single: BTreeMap<ObjectRef, u32> = BTreeMap::new();
    for pod in input
        .state
        .pods
        .values()
        .filter(|pod| is_local(pod, input.node_name))
    {
        out.local_pods.insert(pod.key.clone());
        let targets: BTreeSet<u32> = pod
            .ips
            .iter()
            .filter_map(|ip| input.routes.get(ip).copied())
            .collect();
        for ifindex in &targets {
            claims.entry(*ifindex).or_default().insert(pod.key.clone());
        }
        if let [only] = targets.iter().copied().collect::<Vec<_>>()[..] {
            single.insert(pod.key.clone(), only);
        } else if targets.len() > 1 {
            for ifindex in targets {
                out.contested
                    .entry(ifindex)
                    .or_default()
                    .insert(pod.key.clone());
            }
        }
    }
    for (ifindex, pods) in &claims {
        if pods.len() > 1 {
            out.contested
                .entry(*ifindex)
                .or_default()
                .extend(pods.iter().cloned());
        }
    }
    for (key, ifindex) in single {
        if !out.contested.contains_key(&ifindex) {
            out.interfaces.insert(key, ifindex);
        }
    }
    out.unmapped = out
        .local_pods
        .iter()
        .filter(|key| !out.interfaces.contains_key(*key))
        .cloned()
        .collect();

    // Rules 5-7.
    let mapped: BTreeSet<u32> = out.interfaces.values().copied().collect();
    let entry = pending_entry(input, &out.interfaces);
    out.pending_entry = entry;
    out.pending = input
        .candidates
        .keys()
        .chain(out.contested.keys())
        .filter(|ifindex| !mapped.contains(*ifindex))
        .map(|ifindex| (*ifindex, entry))
        .collect();
    let wanted: BTreeSet<u32> = mapped.iter().chain(out.pending.keys()).copied().collect();
    out.attach = wanted.difference(input.attached).copied().collect();
    out.detach = input.attached.difference(&wanted).copied().collect();
    out
}

/// Rule 7: the entry of every pending interface.
fn pending_entry(input: &PlanInput<'_>, interfaces: &BTreeMap<ObjectRef, u32>) -> EndpointEntry {
    let policies = || input.state.policies.values().map(|policy| ((), policy));
    let waiting = input.state.pods.values().filter(|pod| {
        scheduled_here(pod, input.node_name) && !pod.finished && !interfaces.contains_key(&pod.key)
    });
    let (mut ingress, mut egress) = (Isolation::default(), Isolation::default());
    for pod in waiting {
        ingress.add(isolating(policies(), pod, Direction::Ingress));
        egress.add(isolating(policies(), pod, Direction::Egress));
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

/// Rule 7 for one direction, folded over the waiting pods.
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
}

#[cfg(test)]
mod tests;
