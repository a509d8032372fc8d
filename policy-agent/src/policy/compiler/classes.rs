//! Step 2: pod addresses -> peer classes.
//!
//! A pod's signature is the set of `Peer::Pods` peers (of rules that apply to some
//! local endpoint) that match it. Pods with equal non-empty signatures are treated
//! alike by every such rule, so they share a class; pods with an empty signature,
//! hostNetwork pods and every address outside the cluster are `CLASS_WORLD`, which
//! only `Peers::All` rules admit, and which is the BPF program's default on a miss.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use crate::{
    model::{ClusterState, NetworkPolicy, Peer, Peers, Pod},
    policy::{evaluator::pod_peer_matches, rules, tables::Direction},
};

/// One `Peer::Pods` entry of one rule: what class signatures are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct PeerRef {
    /// Index into the sorted policies.
    pub policy_id: u32,
    /// Which rule list.
    pub direction: Direction,
    /// Index in that list.
    pub rule_index: u32,
    /// Index in the rule's `from`/`to`.
    pub peer_index: u32,
}

/// The class step's result.
#[derive(Clone, Debug, Default)]
pub(super) struct Classes {
    /// `DatapathTables::peers_v4`.
    pub peers_v4: BTreeMap<Ipv4Addr, u32>,
    /// Class id -> its signature: the peers that match its members.
    pub signatures: BTreeMap<u32, BTreeSet<PeerRef>>,
}

impl Classes {
    /// The classes whose members `peer` matches.
    pub fn admitted_by(&self, peer: PeerRef) -> impl Iterator<Item = u32> + '_ {
        self.signatures
            .iter()
            .filter(move |(_, signature)| signature.contains(&peer))
            .map(|(class_id, _)| *class_id)
    }
}

/// Classifies every pod-network pod's IPv4 addresses against the rules of the
/// `applied` (policy, direction) pairs. Class ids are dense from 1 in sorted
/// signature order.
pub(super) fn assign(
    state: &ClusterState,
    policies: &[&NetworkPolicy],
    applied: &BTreeSet<(u32, Direction)>,
) -> Classes {
    let peers = pod_peers(policies, applied);
    let mut by_signature: BTreeMap<BTreeSet<PeerRef>, Vec<&Pod>> = BTreeMap::new();
    let mut owners: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for pod in state.pods.values().filter(|pod| !pod.host_network) {
        for ip in pod.ipv4_addresses() {
            *owners.entry(ip).or_default() += 1;
        }
        let signature: BTreeSet<PeerRef> = peers
            .iter()
            .filter(|(_, policy, peer)| peer_matches(state, policy, peer, pod))
            .map(|(peer_ref, _, _)| *peer_ref)
            .collect();
        if !signature.is_empty() && pod.ipv4_addresses().next().is_some() {
            by_signature.entry(signature).or_default().push(pod);
        }
    }
    let mut classes = Classes::default();
    for (class_id, (signature, pods)) in (1..).zip(by_signature) {
        for ip in pods.iter().flat_map(|pod| pod.ipv4_addresses()) {
            // An address two pods claim (a stale pod, a reused IP) cannot be told
            // apart: leave it in CLASS_WORLD, which only `Peers::All` admits, so
            // it never gets more than either pod would.
            if owners.get(&ip) == Some(&1) {
                classes.peers_v4.insert(ip, class_id);
            }
        }
        classes.signatures.insert(class_id, signature);
    }
    classes
}

/// Every `Peer::Pods` of the applied rules, with its reference and policy.
fn pod_peers<'a>(
    policies: &[&'a NetworkPolicy],
    applied: &BTreeSet<(u32, Direction)>,
) -> Vec<(PeerRef, &'a NetworkPolicy, &'a Peer)> {
    let mut out = Vec::new();
    for &(policy_id, direction) in applied {
        let Some(policy) = policies.get(policy_id as usize).copied() else {
            continue;
        };
        for (rule_index, rule) in (0..).zip(rules(policy, direction)) {
            let Peers::Only(list) = &rule.peers else {
                continue;
            };
            for (peer_index, peer) in (0..).zip(list) {
                if matches!(peer, Peer::Pods { .. }) {
                    let peer_ref = PeerRef {
                        policy_id,
                        direction,
                        rule_index,
                        peer_index,
                    };
                    out.push((peer_ref, policy, peer));
                }
            }
        }
    }
    out
}

/// Whether a `Peer::Pods` matches `pod` (any other peer never does here).
fn peer_matches(state: &ClusterState, policy: &NetworkPolicy, peer: &Peer, pod: &Pod) -> bool {
    match peer {
        Peer::Pods { namespaces, pods } => pod_peer_matches(state, policy, namespaces, pods, pod),
        Peer::IpBlock { .. } | Peer::Invalid { .. } => false,
    }
}
