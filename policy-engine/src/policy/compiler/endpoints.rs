//! Step 1: local pods -> endpoint ids, isolation and addresses.
//!
//! Endpoint ids identify a set of local pods that every policy treats alike, so the
//! `POLICY` map grows with distinct (namespace, deciding policies, ingress port-name
//! resolution), not with pods. Ingress named ports resolve on the selected pod, so
//! two pods that map a name their ingress rules use to different numbers need
//! different ids.
//!
//! Only the deciding policies of `isolation::isolating` count (`Deciding`): where
//! an enforce-mode policy selects a pod, audit-mode ones leave no trace in its
//! tables; where only audit-mode ones do, they isolate it with an `AUDIT_*` flag.
//! A pod may tunnel when its namespace allows it (`Namespace::allow_tunnels`);
//! ids are per namespace, so every pod of an id agrees.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{
    applied::named_ports,
    cluster::Subjects,
    ports::{resolve, Resolution},
    DIRECTIONS,
};
use crate::{
    model::{ClusterState, NetworkPolicy, ObjectRef, Pod, PolicyMode},
    policy::{
        isolation::isolating,
        rules,
        tables::{Direction, EndpointEntry},
    },
};

/// The policies whose rules decide for one endpoint id, per direction, as indices
/// into the sorted policies: `isolation::isolating`'s deciding sets (the
/// enforce-mode policies that apply, else the audit-mode ones), not every policy
/// that applies; and whether each direction decides in audit mode.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Deciding {
    /// Policies deciding ingress, ascending; empty: not isolated for ingress.
    pub ingress: Vec<u32>,
    /// Policies deciding egress, ascending; empty: not isolated for egress.
    pub egress: Vec<u32>,
    /// The ingress policies are audit-mode ones (no enforce-mode one applies).
    pub audit_ingress: bool,
    /// The egress policies are audit-mode ones.
    pub audit_egress: bool,
}

impl Deciding {
    /// The policies deciding `direction`.
    pub fn get(&self, direction: Direction) -> &[u32] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// The ClusterNetworkPolicies that apply to the pods of one endpoint id, per
/// direction, as their stand-ins' policy ids, ascending (the order the tiers
/// read them in).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Tiered {
    /// Applying for ingress.
    pub ingress: Vec<u32>,
    /// Applying for egress.
    pub egress: Vec<u32>,
}

impl Tiered {
    /// The policies applying for `direction`.
    pub fn get(&self, direction: Direction) -> &[u32] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// What the pods of one endpoint id share.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Group {
    /// The policies deciding for them.
    pub deciding: Deciding,
    /// The ClusterNetworkPolicies applying to them.
    pub tiered: Tiered,
    /// Their numbers for the port names their ingress rules use.
    pub ingress_ports: Resolution,
}

impl Group {
    /// The `ENDPOINTS` entry of the pods of this group in `namespace`, as id
    /// `endpoint_id`.
    pub fn entry(&self, state: &ClusterState, namespace: &str, endpoint_id: u32) -> EndpointEntry {
        EndpointEntry {
            endpoint_id,
            isolated_ingress: !self.deciding.ingress.is_empty() || !self.tiered.ingress.is_empty(),
            isolated_egress: !self.deciding.egress.is_empty() || !self.tiered.egress.is_empty(),
            audit_ingress: self.deciding.audit_ingress,
            audit_egress: self.deciding.audit_egress,
            allow_tunnels: state.namespace_allows_tunnels(namespace),
        }
    }
}

/// The endpoint step's result.
#[derive(Clone, Debug, Default)]
pub(super) struct Endpoints {
    /// `DatapathTables::endpoints`.
    pub entries: BTreeMap<ObjectRef, EndpointEntry>,
    /// `DatapathTables::endpoint_addresses`.
    pub addresses: BTreeMap<IpAddr, ObjectRef>,
    /// Endpoint id -> what its pods share.
    pub by_id: BTreeMap<u32, Group>,
    /// Endpoint id -> how many local pods have it.
    pub members: BTreeMap<u32, usize>,
    /// (namespace, group) -> its endpoint id.
    pub ids: BTreeMap<(String, Group), u32>,
    /// (policy index, direction) pairs that decide for at least one local
    /// endpoint (ClusterNetworkPolicies' stand-ins included): only their rules
    /// shape peer classes and entries.
    pub applied: BTreeSet<(u32, Direction)>,
}

/// Assigns endpoint ids to the local pods: pod-network pods with an address of
/// either family. `shared` holds the addresses more than one pod-network pod
/// claims.
///
/// Ids are dense from 1 in sorted (namespace, group) order.
pub(super) fn assign(
    state: &ClusterState,
    (policies, subjects): (&[&NetworkPolicy], &Subjects<'_>),
    shared: &BTreeSet<IpAddr>,
    is_local: impl Fn(&Pod) -> bool,
) -> Endpoints {
    let pods = state
        .pods
        .values()
        .filter(|pod| is_endpoint(pod, &is_local));
    assign_tiered(state, (policies, subjects), shared, pods)
}

/// `assign` when the local endpoints are known to be `pods`, in key order: the
/// endpoints of the last compile when no pod changed, or none but in its labels
/// (no scan of every pod of the cluster).
pub(super) fn assign_among<'s>(
    state: &ClusterState,
    policies: &[&NetworkPolicy],
    shared: &BTreeSet<IpAddr>,
    pods: impl Iterator<Item = &'s Pod>,
) -> Endpoints {
    assign_tiered(state, (policies, &Subjects::default()), shared, pods)
}

/// `assign_among` with the ClusterNetworkPolicies of `subjects`, whose
/// stand-ins follow the NetworkPolicies in `policies`.
fn assign_tiered<'s>(
    state: &ClusterState,
    (policies, subjects): (&[&NetworkPolicy], &Subjects<'_>),
    shared: &BTreeSet<IpAddr>,
    pods: impl Iterator<Item = &'s Pod>,
) -> Endpoints {
    // Only a policy of a pod's own namespace can apply to it. Policies come
    // sorted by key, so a namespace's are one run of ids, found by bisection
    // rather than by sorting every policy into a map (checked: out of order,
    // every id is a candidate).
    // ClusterNetworkPolicies' stand-ins follow the NetworkPolicies and never
    // isolate as NetworkPolicies: only the latter are candidates.
    let network = policies
        .iter()
        .take_while(|policy| !policy.key.is_cluster_scoped())
        .count();
    let network = policies.get(..network).unwrap_or(policies);
    let sorted = network
        .windows(2)
        .all(|pair| pair[0].key.namespace <= pair[1].key.namespace);
    let every: Vec<u32> = (0..).zip(network).map(|(id, _)| id).collect();
    let of_namespace = |namespace: &str| -> &[u32] {
        if !sorted {
            return &every;
        }
        let first = network.partition_point(|policy| policy.key.namespace.as_str() < namespace);
        let end = network.partition_point(|policy| policy.key.namespace.as_str() <= namespace);
        every.get(first..end).unwrap_or(&every)
    };
    let mut groups: BTreeMap<(&str, Group), Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        let candidates = of_namespace(pod.key.namespace.as_str());
        let group = group_among(policies, candidates, pod, subjects);
        groups
            .entry((pod.key.namespace.as_str(), group))
            .or_default()
            .push(pod);
    }
    let mut out = Endpoints::default();
    for (endpoint_id, ((namespace, group), pods)) in (1..).zip(groups) {
        for direction in DIRECTIONS {
            for &policy in group.deciding.get(direction) {
                out.applied.insert((policy, direction));
            }
            for &policy in group.tiered.get(direction) {
                out.applied.insert((policy, direction));
            }
        }
        let entry = group.entry(state, namespace, endpoint_id);
        out.members.insert(endpoint_id, pods.len());
        out.ids
            .insert((namespace.to_string(), group.clone()), endpoint_id);
        for pod in pods {
            out.entries.insert(pod.key.clone(), entry);
            // An address two pods claim cannot name a source pod: leaving it out
            // makes the deferred egress check drop (fail closed).
            for ip in pod.ips.iter().filter(|ip| !shared.contains(ip)) {
                out.addresses.insert(*ip, pod.key.clone());
            }
        }
        out.by_id.insert(endpoint_id, group);
    }
    out
}

/// Whether `pod` is a local endpoint: a pod-network pod `is_local` accepts, with
/// an address.
pub(super) fn is_endpoint(pod: &Pod, is_local: impl Fn(&Pod) -> bool) -> bool {
    !pod.host_network && !pod.ips.is_empty() && is_local(pod)
}

/// The policies deciding for `pod` and its numbers for their ingress port names.
pub(super) fn group(policies: &[&NetworkPolicy], pod: &Pod) -> Group {
    let every: Vec<u32> = (0..).zip(policies).map(|(id, _)| id).collect();
    group_among(policies, &every, pod, &Subjects::default())
}

/// `group` when only the policies `candidates` (ids, ascending) can apply to
/// `pod`: every policy of its namespace among them.
fn group_among(
    policies: &[&NetworkPolicy],
    candidates: &[u32],
    pod: &Pod,
    subjects: &Subjects<'_>,
) -> Group {
    let decide = |direction| {
        let among = candidates
            .iter()
            .filter_map(|id| Some((*id, *policies.get(*id as usize)?)));
        let found = isolating(among, pod, direction);
        (found.deciding, found.mode == PolicyMode::Audit)
    };
    let (ingress, audit_ingress) = decide(Direction::Ingress);
    let (egress, audit_egress) = decide(Direction::Egress);
    let deciding = Deciding {
        ingress,
        egress,
        audit_ingress,
        audit_egress,
    };
    let tiered = Tiered {
        ingress: subjects.applying(pod, Direction::Ingress),
        egress: subjects.applying(pod, Direction::Egress),
    };
    let names: BTreeSet<_> = deciding
        .ingress
        .iter()
        .chain(&tiered.ingress)
        .filter_map(|id| policies.get(*id as usize))
        .flat_map(|policy| rules(policy, Direction::Ingress))
        .flat_map(|rule| named_ports(&rule.ports))
        .collect();
    Group {
        ingress_ports: resolve(pod, &names),
        deciding,
        tiered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builders::{cluster, netpol, pod, rule, selector};

    #[test]
    fn a_pod_is_decided_by_every_policy_of_its_namespace_in_any_order() {
        let policy = |namespace: &str, name: &str| {
            netpol(namespace, name)
                .select(selector().build())
                .ingress(rule().build())
                .build()
        };
        let (a1, a2, b1) = (policy("a", "p1"), policy("a", "p2"), policy("b", "p1"));
        let web = pod("a", "web").ip("10.0.0.2").build();
        let state = cluster().pod(web.clone()).build();
        let deciding = |policies: &[&NetworkPolicy]| {
            let endpoints = assign_among(&state, policies, &BTreeSet::new(), [&web].into_iter());
            let group = endpoints.by_id.get(&1).map(|group| &group.deciding.ingress);
            group
                .into_iter()
                .flatten()
                .filter_map(|id| policies.get(*id as usize))
                .map(|policy| policy.key.to_string())
                .collect::<Vec<_>>()
        };
        let both = vec!["a/p1".to_string(), "a/p2".to_string()];
        // Sorted by key, as the compiler passes them: one run per namespace.
        assert_eq!(deciding(&[&a1, &a2, &b1]), both);
        // Out of order, every policy is a candidate: still both of a's.
        let mut names = deciding(&[&a1, &b1, &a2]);
        names.sort();
        assert_eq!(names, both);
    }
}
