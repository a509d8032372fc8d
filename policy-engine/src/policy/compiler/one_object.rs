//! A Service's, a namespace's or a policy's change, made on its own when the
//! guards below rule out everything else (else `Incremental` compiles in full).
//!
//! - **Services** shape the tables through their addresses alone (`classes`: a
//!   host prefix with the `service` flag, classed like any address outside pods).
//!   An address gaining its first Service or losing its last changes that one peer
//!   entry, when it is no pod's, node's or ipBlock boundary's address (its entry
//!   would carry more) and its class exists and keeps other members (class ids are
//!   dense). A change that leaves the set of Service addresses alone (ports,
//!   selectors) changes nothing.
//! - **Namespaces** shape the tables through the applied pod peers that range over
//!   them by labels (`Applied::pod_peers`) and the `allow_tunnels` of their local
//!   endpoints. A change that flips no applied peer's verdict on the namespace and
//!   leaves `allow_tunnels` of its local endpoints alone changes nothing.
//! - **Policies** shape the tables through the local endpoints they apply to (only
//!   their rules are applied) and their place in the sorted policies (policy ids).
//!   One that applies to no local endpoint, before and after, changes nothing but
//!   the ids after it: added or removed, the later ids move by one in every table
//!   that holds ids (`policy_names`, `POLICY`'s rule references, `isolation`); the
//!   order of ids, and so every endpoint, class and rule set id, stays.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use policy_common::peer::CLASS_WORLD;

use super::{
    classes::{blocks_holding, Signature},
    endpoints::Group,
    one_pod::{family, Done, Index},
    DIRECTIONS,
};
use crate::{
    model::{ClusterState, Namespace, NetworkPolicy, ObjectRef, Service},
    policy::{
        isolation::applies_to,
        tables::{DatapathTables, PeerEntry},
    },
};

/// One Service's change: its key and what it was (`None`: it did not exist).
pub type ServiceChange = (ObjectRef, Option<Service>);
/// One namespace's change: its name and what it was (`None`: not declared).
pub type NamespaceChange = (String, Option<Namespace>);
/// One policy's change: its key and what it was (`None`: it did not exist).
pub type PolicyChange = (ObjectRef, Option<NetworkPolicy>);

/// Distinct addresses of a Service.
fn service_addresses(service: Option<&Service>) -> BTreeSet<IpAddr> {
    service
        .map(|service| service.addresses().collect())
        .unwrap_or_default()
}

impl Index {
    /// Makes `changes` of Services (`state` differs from the last state in those
    /// alone) in `tables`: the peer entries of addresses gaining their first
    /// Service or losing their last. `None`, with nothing changed, when a full
    /// compile is needed.
    pub fn services_changed(
        &mut self,
        state: &ClusterState,
        changes: &[ServiceChange],
        tables: &mut Arc<DatapathTables>,
    ) -> Option<Done> {
        let mut services = self.services.clone();
        for (key, before) in changes {
            for ip in service_addresses(before.as_ref()) {
                let count = services.get_mut(&ip)?;
                *count = count.checked_sub(1)?;
            }
            for ip in service_addresses(state.services.get(key)) {
                *services.entry(ip).or_default() += 1;
            }
        }
        let was = |ip: &IpAddr| self.services.get(ip).is_some_and(|n| *n > 0);
        let is = |ip: &IpAddr| services.get(ip).is_some_and(|n| *n > 0);
        let flipped: Vec<IpAddr> = self
            .services
            .keys()
            .chain(services.keys())
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|ip| was(ip) != is(ip))
            .collect();
        let mut members = self.members.clone();
        let mut counts = self.peers;
        let mut entries: Vec<(IpNet, Option<PeerEntry>)> = Vec::new();
        for ip in flipped {
            let net = IpNet::from(ip);
            if self.owners.contains_key(&ip) || self.fixed.contains(&net) {
                return None;
            }
            if is(&ip) {
                if tables.peers.contains_key(&net) {
                    return None;
                }
                let signature = Signature {
                    blocks: blocks_holding(&self.applied, &net),
                    ..Signature::default()
                };
                let class_id = if signature == Signature::default() {
                    CLASS_WORLD
                } else {
                    *self.class_of.get(&signature)?
                };
                if class_id != CLASS_WORLD {
                    *members.get_mut(&class_id)? += 1;
                }
                counts[family(&net)] += 1;
                let entry = PeerEntry {
                    class_id,
                    node: false,
                    service: true,
                };
                entries.push((net, Some(entry)));
            } else {
                let entry = tables.peers.get(&net)?;
                if !entry.service || entry.node {
                    return None;
                }
                if entry.class_id != CLASS_WORLD {
                    let left = members.get_mut(&entry.class_id)?;
                    *left = left.checked_sub(1)?;
                }
                counts[family(&net)] = counts[family(&net)].checked_sub(1)?;
                entries.push((net, None));
            }
        }
        let budget = self.peer_budget;
        if members.values().any(|n| *n == 0) || counts[0] > budget[0] || counts[1] > budget[1] {
            return None;
        }
        // Everything checked: from here on the change is made, in a copy of
        // the tables only when an entry changes (not for a port edited, say).
        let mut changed = Vec::new();
        if !entries.is_empty() {
            let tables = Arc::make_mut(tables);
            for (net, entry) in entries {
                match entry {
                    Some(entry) => tables.peers.insert(net, entry),
                    None => tables.peers.remove(&net),
                };
                changed.push(net);
            }
        }
        services.retain(|_, count| *count > 0);
        self.services = services;
        self.members = members;
        self.peers = counts;
        Some(Done::Peers(changed))
    }

    /// Whether `changes` of namespaces (`state` differs from the last state in
    /// those alone) leave `tables` as they are: no applied pod peer's verdict on a
    /// changed namespace flips, and no local endpoint's namespace changes whether
    /// it allows tunnels.
    pub fn namespaces_unchanging(
        &self,
        state: &ClusterState,
        changes: &[NamespaceChange],
        tables: &DatapathTables,
    ) -> bool {
        changes.iter().all(|(name, before)| {
            let old_labels = before
                .as_ref()
                .map_or_else(|| Namespace::implicit(name).labels, |ns| ns.labels.clone());
            let new_labels = state.namespace_labels(name);
            let old_tunnels = before.as_ref().is_some_and(|ns| ns.allow_tunnels);
            let tunnels_kept = old_tunnels == state.namespace_allows_tunnels(name)
                || !tables.endpoints.keys().any(|pod| pod.namespace == *name);
            tunnels_kept
                && self.applied.pod_peers.iter().all(|peer| {
                    peer.admits_labelled(name, &old_labels)
                        == peer.admits_labelled(name, &new_labels)
                })
        })
    }

    /// Makes `changes` of policies (`state` differs from the last state in those
    /// alone) in `tables` when none of them, before or after, applies to a local
    /// endpoint: the policy ids move, nothing else. `None`, with nothing changed,
    /// otherwise. `tables` are copied (if shared) only once the change is made.
    pub fn policies_changed(
        &mut self,
        state: &ClusterState,
        changes: &[PolicyChange],
        tables: &mut Arc<DatapathTables>,
    ) -> Option<Done> {
        let local: Vec<_> = tables
            .endpoints
            .keys()
            .map(|key| state.pods.get(key))
            .collect::<Option<_>>()?;
        let applies_locally = |policy: &NetworkPolicy| {
            local.iter().any(|pod| {
                DIRECTIONS
                    .iter()
                    .any(|direction| applies_to(policy, pod, *direction))
            })
        };
        for (key, before) in changes {
            let versions = [before.as_ref(), state.policies.get(key)];
            if versions.into_iter().flatten().any(applies_locally) {
                return None;
            }
        }
        // Old id -> new id, through the names of the sorted policies.
        let new_ids: BTreeMap<&ObjectRef, u32> = (0..)
            .zip(state.policies.keys())
            .map(|(id, key)| (key, id))
            .collect();
        let renumber: Vec<Option<u32>> = tables
            .policy_names
            .iter()
            .map(|key| new_ids.get(key).copied())
            .collect();
        // No id moved (a policy edited in place): nothing changes, nothing is
        // copied.
        let renumbered = tables.policy_names.len() != state.policies.len()
            || renumber
                .iter()
                .enumerate()
                .any(|(old, new)| *new != Some(old as u32));
        if !renumbered {
            return Some(Done::Peers(Vec::new()));
        }
        let moved = |id: u32| renumber.get(id as usize).copied().flatten();
        // Every id the tables hold must have a new one (a removed policy's never
        // appears: it applied to no local endpoint).
        let mut policy = tables.policy.clone();
        for set in policy.values_mut() {
            for decision in set.entries.values_mut() {
                *decision = decision.renumbered(moved)?;
            }
        }
        let mut isolation = tables.isolation.clone();
        for entry in isolation.values_mut() {
            for id in entry.ingress.iter_mut().chain(entry.egress.iter_mut()) {
                *id = moved(*id)?;
            }
        }
        let mut endpoint_ids = BTreeMap::new();
        for ((namespace, group), endpoint_id) in &self.endpoint_ids {
            let mut group: Group = group.clone();
            for id in group
                .deciding
                .ingress
                .iter_mut()
                .chain(group.deciding.egress.iter_mut())
            {
                *id = moved(*id)?;
            }
            endpoint_ids.insert((namespace.clone(), group), *endpoint_id);
        }
        let tables = Arc::make_mut(tables);
        tables.policy = policy;
        tables.isolation = isolation;
        tables.policy_names = state.policies.keys().cloned().collect();
        self.endpoint_ids = endpoint_ids;
        Some(Done::Endpoint)
    }
}
