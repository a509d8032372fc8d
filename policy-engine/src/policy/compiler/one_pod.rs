//! One pod's change, made on its own.
//!
//! A pod shapes a node's tables through its own entries only, when nothing else
//! moves: the peer entries of its addresses (the class of their signature,
//! `classes`) and, for a local endpoint, its `ENDPOINTS` entry and addresses (the id
//! of its namespace and group, `endpoints`). When the class and the group already
//! exist and keep other members, the change is exactly those entries. `Index` keeps
//! what the last full compile knew (the interned rules, the class of each
//! signature and the endpoint id of each group, how many prefixes each class and
//! pods each id has, who claims each address) and says whether that holds;
//! anything it cannot rule out is left to a full compile:
//! - an address two pods claim, before or after (its entries are not the pod's);
//! - an address that is also a node or Service address or an ipBlock boundary
//!   (its entry carries more than the pod);
//! - a signature no class has or a group no endpoint id has, or the last member of
//!   one leaving (ids are dense, in sorted order: others would be renumbered);
//! - a port name that appears in or disappears from the cluster (diagnostics);
//! - a peer map over its budget, or refusals already in the tables (the budget
//!   step decides those).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use policy_common::peer::CLASS_WORLD;

use super::{
    applied::{Applied, PortName},
    classes::{egress_ports, matching_pod_peers, pod_signature, Classes, FastMap, Signature},
    endpoints::{group, is_endpoint, Endpoints, Group},
    incremental::EndpointChange,
};
use crate::{
    model::{ClusterState, NetworkPolicy, Pod, Protocol},
    policy::{
        capacity::{Budgets, Resource},
        tables::{DatapathTables, EndpointEntry, PeerEntry},
    },
};

/// What a pod's change did to the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Done {
    /// Only the peer entries of these prefixes changed.
    Peers(Vec<IpNet>),
    /// A local endpoint's entries changed too (`ENDPOINTS`, `ENDPOINT_ADDRS`).
    Endpoint,
    /// A pod became or stopped being a local endpoint: these entries alone
    /// changed.
    Pod(EndpointChange),
    /// Only the peer entries of these addresses changed, each its class alone
    /// (`Recompiled::Reclassed`).
    Classes(Vec<IpNet>),
}

/// What making one object's change on its own needs from the last full compile
/// (this module for pods, `one_object` for Services, namespaces and policies).
#[derive(Clone, Debug)]
pub(super) struct Index {
    /// The applied rules' interned peers and egress port names.
    pub(super) applied: Applied,
    /// Signature -> class id, for every class but `CLASS_WORLD`.
    pub(super) class_of: BTreeMap<Signature, u32>,
    /// Class id -> prefixes having it (`Classes::members`).
    pub(super) members: BTreeMap<u32, usize>,
    /// (namespace, group) -> endpoint id.
    pub(super) endpoint_ids: BTreeMap<(String, Group), u32>,
    /// Endpoint id -> local pods having it.
    endpoint_members: BTreeMap<u32, usize>,
    /// Pod-network pods claiming each address.
    pub(super) owners: BTreeMap<IpAddr, usize>,
    /// Prefixes whose entry is more than a pod's or a Service's: node addresses,
    /// the cidrs and excepts of applied ipBlocks.
    pub(super) fixed: BTreeSet<IpNet>,
    /// The node's addresses, as prefixes.
    nodes: BTreeSet<IpNet>,
    /// Services claiming each Service address (`Service::addresses`).
    pub(super) services: BTreeMap<IpAddr, usize>,
    /// (name, protocol) -> container ports declaring it, over every pod.
    declared: BTreeMap<PortName, usize>,
    /// Prefixes in the peer maps, IPv4 and IPv6.
    pub(super) peers: [usize; 2],
    /// The most prefixes each peer map may hold (`Budgets`).
    pub(super) peer_budget: [usize; 2],
}

/// The addresses of `pod` that classes see: every distinct address of a
/// pod-network pod.
fn addresses(pod: Option<&Pod>) -> BTreeSet<IpAddr> {
    pod.filter(|pod| !pod.host_network)
        .map(|pod| pod.ips.iter().copied().collect())
        .unwrap_or_default()
}

/// The port names `pod` declares, one per container port.
fn names(pod: Option<&Pod>) -> impl Iterator<Item = PortName> + '_ {
    pod.into_iter()
        .flat_map(|pod| &pod.ports)
        .filter_map(|port| Some((port.name.clone()?, port.protocol)))
}

/// `Index::fixed`: the node's addresses and the cidrs and excepts of the applied
/// ipBlocks.
fn fixed_prefixes(nodes: &BTreeSet<IpNet>, applied: &Applied) -> BTreeSet<IpNet> {
    let mut fixed = nodes.clone();
    fixed.extend(applied.blocks.iter().flat_map(|block| block.prefixes()));
    fixed
}

/// `Index::peers`: the prefixes of `classes` per family.
fn peer_counts(classes: &Classes) -> [usize; 2] {
    let mut peers = [0, 0];
    for net in classes.peers.keys() {
        peers[family(net)] += 1;
    }
    peers
}

/// 0 for IPv4, 1 for IPv6.
pub(super) fn family(net: &IpNet) -> usize {
    usize::from(matches!(net, IpNet::V6(_)))
}

impl Index {
    /// The index of a full compile of `state` whose tables have `endpoints` and
    /// `classes`.
    pub fn new(
        state: &ClusterState,
        endpoints: &Endpoints,
        applied: Applied,
        classes: &Classes,
        owners: BTreeMap<IpAddr, usize>,
        node_addresses: &[IpAddr],
        budgets: &Budgets,
    ) -> Self {
        let nodes: BTreeSet<IpNet> = node_addresses.iter().map(|ip| IpNet::from(*ip)).collect();
        let fixed = fixed_prefixes(&nodes, &applied);
        let mut services: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for service in state.services.values() {
            for ip in service.addresses().collect::<BTreeSet<_>>() {
                *services.entry(ip).or_default() += 1;
            }
        }
        // Counted by reference: a name is copied once, not once per pod.
        let mut counts: FastMap<(&str, Protocol), usize> = FastMap::default();
        for port in state.pods.values().flat_map(|pod| &pod.ports) {
            if let Some(name) = &port.name {
                *counts.entry((name.as_str(), port.protocol)).or_default() += 1;
            }
        }
        let declared: BTreeMap<PortName, usize> = counts
            .into_iter()
            .map(|((name, protocol), count)| ((name.to_string(), protocol), count))
            .collect();
        let peers = peer_counts(classes);
        Self {
            applied,
            class_of: classes
                .signatures
                .iter()
                .map(|(id, signature)| (signature.clone(), *id))
                .collect(),
            members: classes.members.clone(),
            endpoint_ids: endpoints.ids.clone(),
            endpoint_members: endpoints.members.clone(),
            owners,
            fixed,
            nodes,
            services,
            declared,
            peers,
            peer_budget: [Resource::PeersV4, Resource::PeersV6].map(|r| budgets.node(r)),
        }
    }

    /// Makes the change of one pod that was `before` and is `after` in `state`
    /// (`None`: absent) in `tables`, changing only that pod's entries; the pods
    /// `was_local` accepted were the node's and those `is_local` accepts are
    /// (the same for every pod but the changed one's). Returns what changed, or `None`, with
    /// nothing changed, when a full compile is needed (see the module comment).
    /// `tables` are copied (if shared) only once the change is made.
    pub fn pod_changed(
        &mut self,
        state: &ClusterState,
        before: Option<&Pod>,
        after: Option<&Pod>,
        was_local: impl Fn(&Pod) -> bool,
        is_local: impl Fn(&Pod) -> bool,
        tables: &mut Arc<DatapathTables>,
    ) -> Option<Done> {
        let declared = self.declared_after(before, after)?;
        let (gone, came) = (addresses(before), addresses(after));
        let mut owners = Vec::new();
        for ip in gone.union(&came) {
            let old = self.owners.get(ip).copied().unwrap_or(0);
            let new =
                old.checked_sub(usize::from(gone.contains(ip)))? + usize::from(came.contains(ip));
            if old > 1 || new > 1 || self.is_reserved(ip) {
                return None;
            }
            owners.push((*ip, new));
        }
        let was = before.filter(|pod| is_endpoint(pod, &was_local));
        let now = after.filter(|pod| is_endpoint(pod, &is_local));
        let (endpoint_members, entry) = self.endpoint_after(state, tables, was, now)?;
        let mut members = self.members.clone();
        let mut counts = self.peers;
        for ip in &gone {
            let net = IpNet::from(*ip);
            let class_id = tables.peers.get(&net)?.class_id;
            if class_id != CLASS_WORLD {
                let left = members.get_mut(&class_id)?;
                *left = left.checked_sub(1)?;
            }
            counts[family(&net)] = counts[family(&net)].checked_sub(1)?;
        }
        let mut entries = Vec::new();
        if let Some(pod) = after.filter(|_| !came.is_empty()) {
            let pods = matching_pod_peers(state, &self.applied, pod);
            let ports = egress_ports(&self.applied, pod);
            for ip in &came {
                let net = IpNet::from(*ip);
                let signature = pod_signature(&self.applied, pods.clone(), ports.clone(), &net);
                let class_id = if signature == Signature::default() {
                    CLASS_WORLD
                } else {
                    *self.class_of.get(&signature)?
                };
                if class_id != CLASS_WORLD {
                    *members.get_mut(&class_id)? += 1;
                }
                counts[family(&net)] += 1;
                entries.push((net, class_id));
            }
        }
        let budget = self.peer_budget;
        if members.values().any(|n| *n == 0) || counts[0] > budget[0] || counts[1] > budget[1] {
            return None;
        }
        // Everything checked: from here on the change is made.
        let tables = Arc::make_mut(tables);
        if let Some(pod) = was {
            tables.endpoints.remove(&pod.key);
            for ip in &gone {
                tables.endpoint_addresses.remove(ip);
            }
        }
        if let (Some(pod), Some(entry)) = (now, entry) {
            tables.endpoints.insert(pod.key.clone(), entry);
            for ip in &came {
                tables.endpoint_addresses.insert(*ip, pod.key.clone());
            }
        }
        let mut changed: BTreeSet<IpNet> = BTreeSet::new();
        for ip in &gone {
            let net = IpNet::from(*ip);
            tables.peers.remove(&net);
            changed.insert(net);
        }
        for (net, class_id) in entries {
            let entry = PeerEntry {
                class_id,
                node: false,
                service: false,
            };
            if tables.peers.insert(net, entry) == Some(entry) {
                changed.remove(&net);
            } else {
                changed.insert(net);
            }
        }
        for (ip, count) in owners {
            if count == 0 {
                self.owners.remove(&ip);
            } else {
                self.owners.insert(ip, count);
            }
        }
        self.members = members;
        self.endpoint_members = endpoint_members;
        self.peers = counts;
        self.declared = declared;
        match (was, now) {
            // The pod came or went alone: its endpoint entry, the address entries
            // of the addresses it has (had), the peer entries that moved.
            (None, Some(pod)) | (Some(pod), None) => Some(Done::Pod(EndpointChange {
                pod: pod.key.clone(),
                addresses: if now.is_some() { &came } else { &gone }
                    .iter()
                    .copied()
                    .collect(),
                peers: changed.into_iter().collect(),
            })),
            (Some(_), Some(_)) => Some(Done::Endpoint),
            (None, None) => Some(Done::Peers(changed.into_iter().collect())),
        }
    }

    /// The addresses more than one pod-network pod claims.
    pub(super) fn shared(&self) -> BTreeSet<IpAddr> {
        self.owners
            .iter()
            .filter(|(_, count)| **count > 1)
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Class id -> signature, for every class but `CLASS_WORLD`.
    pub(super) fn signatures(&self) -> BTreeMap<u32, Signature> {
        self.class_of
            .iter()
            .map(|(signature, id)| (*id, signature.clone()))
            .collect()
    }

    /// The classes of the last compile, whose peer entries are `peers`.
    pub(super) fn classes(&self, peers: BTreeMap<IpNet, PeerEntry>) -> Classes {
        Classes::of(&self.signatures(), self.members.clone(), peers)
    }

    /// Takes in `applied`, the rules the classes were made again with
    /// (`reclassed`), and the prefixes its ipBlocks reserve.
    pub(super) fn applied_changed(&mut self, applied: Applied) {
        self.fixed = fixed_prefixes(&self.nodes, &applied);
        self.applied = applied;
    }

    /// Takes in `classes`, made again (`classes::reclass`); the caller takes in
    /// the applied rules they were made with (`applied_changed`).
    pub(super) fn reclassed(&mut self, classes: &Classes) {
        self.peers = peer_counts(classes);
        self.class_of = classes
            .signatures
            .iter()
            .map(|(id, signature)| (signature.clone(), *id))
            .collect();
        self.members = classes.members.clone();
    }

    /// Takes in `endpoints`, made again for the same pods (`relabel_pod`).
    pub(super) fn endpoints_made(&mut self, endpoints: &Endpoints) {
        self.endpoint_ids = endpoints.ids.clone();
        self.endpoint_members = endpoints.members.clone();
    }

    /// Whether the entry of `ip`'s host prefix is more than a pod's: a node or
    /// Service address, or an applied ipBlock's cidr or except.
    pub(super) fn is_reserved(&self, ip: &IpAddr) -> bool {
        self.services.contains_key(ip) || self.fixed.contains(&IpNet::from(*ip))
    }

    /// The pods per endpoint id once local endpoint `was` became `now`, and the
    /// entry of `now`; `None` when its group has no id or the last pod of an id
    /// leaves (ids would be renumbered).
    fn endpoint_after(
        &self,
        state: &ClusterState,
        tables: &DatapathTables,
        was: Option<&Pod>,
        now: Option<&Pod>,
    ) -> Option<(BTreeMap<u32, usize>, Option<EndpointEntry>)> {
        if was.is_none() && now.is_none() {
            return Some((self.endpoint_members.clone(), None));
        }
        let mut members = self.endpoint_members.clone();
        let mut entry = None;
        // Additions first: a pod that keeps its id never empties it on the way.
        if let Some(pod) = now {
            let policies: Vec<&NetworkPolicy> = state.policies.values().collect();
            let group = group(&policies, pod);
            let namespace = pod.key.namespace.clone();
            let id = *self.endpoint_ids.get(&(namespace, group.clone()))?;
            *members.get_mut(&id)? += 1;
            entry = Some(group.entry(state, &pod.key.namespace, id));
        }
        if let Some(pod) = was {
            let id = tables.endpoints.get(&pod.key)?.endpoint_id;
            let count = members.get_mut(&id)?;
            *count = count.checked_sub(1).filter(|left| *left > 0)?;
        }
        Some((members, entry))
    }

    /// The declared port names once `before` became `after`; `None` when a name
    /// appears or disappears (the diagnostics would change).
    fn declared_after(
        &self,
        before: Option<&Pod>,
        after: Option<&Pod>,
    ) -> Option<BTreeMap<PortName, usize>> {
        let mut declared = self.declared.clone();
        // Additions first: a name the pod keeps never drops to zero on the way.
        for name in names(after) {
            *declared.get_mut(&name)? += 1;
        }
        for name in names(before) {
            let count = declared.get_mut(&name)?;
            *count = count.checked_sub(1).filter(|left| *left > 0)?;
        }
        Some(declared)
    }
}
