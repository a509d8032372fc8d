//! Step 2: addresses and ipBlock regions -> peer classes (both families).
//!
//! The signature of an address is everything an applied rule can ask about it:
//! the pod peers matching the pod that owns it, the ipBlocks holding it, and the
//! owning pod's numbers for the port names applied egress rules use (egress named
//! ports resolve on the destination). Addresses with equal signatures share a class;
//! the empty signature is `CLASS_WORLD`, the BPF program's default on a miss.
//!
//! Prefixes in `peers`:
//! - every pod-network pod address claimed by one pod: a host prefix (/32, /128).
//!   An address two pods claim stays out, so it gets the class of its ipBlock
//!   region, which no pod peer or port name admits: never more than either pod.
//! - every cidr and except of an applied ipBlock: its class is the membership of
//!   the prefix itself. An address outside pods resolves (longest prefix) to the
//!   longest inserted prefix P holding it; any cidr or except holding the address is
//!   then either inside P (impossible, it would be longer) or holds all of P, so the
//!   address is in a block iff P is: P inside the cidr and inside no except.
//!   A region whose entry equals what the lookup would find without it is left out.
//! - node addresses (`node: true`) and Service ClusterIPs (`service: true`), host
//!   prefixes classed like any address outside pods; flags merge on equal prefixes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
};

use ipnet::IpNet;
use policy_common::peer::CLASS_WORLD;

use super::applied::{Applied, PeerId, PodPeer};
use crate::{
    model::{ClusterState, Labels, Pod},
    policy::tables::PeerEntry,
};

/// What every applied rule can tell about an address, by interned id.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Signature {
    /// Pod peers (`Applied::pod_peers`) matching the owning pod, ascending.
    pub pods: Vec<u32>,
    /// Blocks (`Applied::blocks`) holding the address, ascending.
    pub blocks: Vec<u32>,
    /// (egress name id, number) pairs of the owning pod, ascending.
    pub ports: Vec<(u32, u16)>,
}

/// A prefix before class ids are known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Candidate {
    /// What the rules can tell about the prefix's addresses.
    signature: Signature,
    /// A node address.
    node: bool,
    /// A Service ClusterIP.
    service: bool,
    /// Always kept (a pod, node or Service address), even when redundant.
    fixed: bool,
}

/// The class step's result.
#[derive(Clone, Debug, Default)]
pub(super) struct Classes {
    /// `DatapathTables::peers`.
    pub peers: BTreeMap<IpNet, PeerEntry>,
    /// Class id -> its signature, for every class but `CLASS_WORLD`.
    pub signatures: BTreeMap<u32, Signature>,
    /// Class id -> how many prefixes of `peers` have it, for every class but
    /// `CLASS_WORLD`.
    pub members: BTreeMap<u32, usize>,
    /// Pod peer id -> the classes it admits.
    by_pod_peer: BTreeMap<u32, Vec<u32>>,
    /// Block id -> the classes it admits.
    by_block: BTreeMap<u32, Vec<u32>>,
}

impl Classes {
    /// The classes a peer admits.
    pub fn admitted_by(&self, peer: PeerId) -> &[u32] {
        let found = match peer {
            PeerId::Pods(id) => self.by_pod_peer.get(&id),
            PeerId::Block(id) => self.by_block.get(&id),
            PeerId::Nothing => None,
        };
        found.map_or(&[], Vec::as_slice)
    }

    /// The classes whose members give egress name `name_id` a number.
    pub fn resolving(&self, name_id: u32) -> impl Iterator<Item = u32> + '_ {
        self.signatures
            .iter()
            .filter(move |(_, signature)| signature.ports.iter().any(|(id, _)| *id == name_id))
            .map(|(class_id, _)| *class_id)
    }

    /// The numbers the members of `class_id` map egress name `name_id` to.
    pub fn egress_numbers(&self, class_id: u32, name_id: u32) -> impl Iterator<Item = u16> + '_ {
        self.signatures
            .get(&class_id)
            .into_iter()
            .flat_map(|signature| &signature.ports)
            .filter(move |(id, _)| *id == name_id)
            .map(|(_, number)| *number)
    }
}

/// Classifies pod addresses, ipBlock regions, node addresses and Service
/// ClusterIPs. `owners` counts the pod-network pods claiming each address. Class
/// ids are dense from 1 in sorted signature order.
pub(super) fn assign(
    state: &ClusterState,
    applied: &Applied,
    owners: &BTreeMap<IpAddr, usize>,
    node_addresses: &[IpAddr],
) -> Classes {
    let mut candidates = pod_candidates(state, applied, owners);
    let outside = |prefix: IpNet| Candidate {
        signature: Signature {
            blocks: blocks_holding(applied, &prefix),
            ..Signature::default()
        },
        ..Candidate::default()
    };
    for ip in node_addresses {
        let net = IpNet::from(*ip);
        let candidate = candidates.entry(net).or_insert_with(|| outside(net));
        candidate.node = true;
        candidate.fixed = true;
    }
    for ip in state.services.values().flat_map(|svc| svc.addresses()) {
        let net = IpNet::from(ip);
        let candidate = candidates.entry(net).or_insert_with(|| outside(net));
        candidate.service = true;
        candidate.fixed = true;
    }
    for prefix in applied.blocks.iter().flat_map(|block| block.prefixes()) {
        candidates.entry(prefix).or_insert_with(|| outside(prefix));
    }
    prune_redundant_regions(&mut candidates);
    number(candidates)
}

/// A host-prefix candidate for every address one pod-network pod claims.
fn pod_candidates(
    state: &ClusterState,
    applied: &Applied,
    owners: &BTreeMap<IpAddr, usize>,
) -> BTreeMap<IpNet, Candidate> {
    // Pod peers depend only on a pod's namespace and labels: match once per pair,
    // and only the peers ranging over that namespace.
    let mut namespaces: BTreeMap<&str, InScope<'_>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for pod in state.pods.values().filter(|pod| !pod.host_network) {
        let unique = pod.ips.iter().filter(|ip| owners.get(ip) == Some(&1));
        let nets: Vec<IpNet> = unique.map(|ip| IpNet::from(*ip)).collect();
        if nets.is_empty() {
            continue;
        }
        let namespace = pod.key.namespace.as_str();
        let scope = namespaces.entry(namespace).or_insert_with(|| InScope {
            peers: (0..)
                .zip(&applied.pod_peers)
                .filter(|(_, peer)| peer.admits_namespace(state, namespace))
                .collect(),
            by_labels: HashMap::new(),
        });
        let peers = &scope.peers;
        let pods = scope
            .by_labels
            .entry(&pod.labels)
            .or_insert_with(|| {
                peers
                    .iter()
                    .filter(|(_, peer)| peer.selects(&pod.labels))
                    .map(|(id, _)| *id)
                    .collect()
            })
            .clone();
        let ports = egress_ports(applied, pod);
        for net in nets {
            let candidate = Candidate {
                signature: pod_signature(applied, pods.clone(), ports.clone(), &net),
                fixed: true,
                ..Candidate::default()
            };
            out.insert(net, candidate);
        }
    }
    out
}

/// The pod peers ranging over one namespace, and which of them match each label
/// set seen there.
struct InScope<'a> {
    /// (id, peer), ascending.
    peers: Vec<(u32, &'a PodPeer)>,
    /// Labels -> the ids of `peers` selecting them, ascending.
    by_labels: HashMap<&'a Labels, Vec<u32>>,
}

/// The signature of `net`, an address of a pod matching the pod peers `pods` whose
/// egress port pairs are `ports`.
pub(super) fn pod_signature(
    applied: &Applied,
    pods: Vec<u32>,
    ports: Vec<(u32, u16)>,
    net: &IpNet,
) -> Signature {
    Signature {
        pods,
        blocks: blocks_holding(applied, net),
        ports,
    }
}

/// The pod peers matching `pod`.
pub(super) fn matching_pod_peers(state: &ClusterState, applied: &Applied, pod: &Pod) -> Vec<u32> {
    (0..)
        .zip(&applied.pod_peers)
        .filter(|(_, peer)| peer.matches(state, pod))
        .map(|(id, _)| id)
        .collect()
}

/// `pod`'s (egress name id, number) pairs.
pub(super) fn egress_ports(applied: &Applied, pod: &Pod) -> Vec<(u32, u16)> {
    let mut out: Vec<(u32, u16)> = pod
        .ports
        .iter()
        .filter_map(|declared| {
            let name = declared.name.as_deref()?;
            let id = applied.egress_name_id(name, declared.protocol)?;
            Some((id, declared.port))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The blocks holding every address of `prefix`, ascending.
pub(super) fn blocks_holding(applied: &Applied, prefix: &IpNet) -> Vec<u32> {
    applied.blocks_holding(prefix)
}

/// Removes ipBlock regions whose entry equals the entry the lookup would find
/// without them (the longest shorter prefix holding them, else `CLASS_WORLD`
/// without flags): every address keeps its entry. Shorter prefixes go first, so a
/// removed prefix's parent is always one that stays.
fn prune_redundant_regions(candidates: &mut BTreeMap<IpNet, Candidate>) {
    let mut regions: Vec<IpNet> = candidates
        .iter()
        .filter(|(_, candidate)| !candidate.fixed)
        .map(|(net, _)| *net)
        .collect();
    regions.sort_by_key(IpNet::prefix_len);
    let world = Candidate::default();
    for net in regions {
        let parent = (0..net.prefix_len()).rev().find_map(|len| {
            let shorter = IpNet::new(net.addr(), len).ok()?.trunc();
            candidates.get(&shorter)
        });
        let parent = parent.unwrap_or(&world);
        let same = candidates.get(&net).is_some_and(|candidate| {
            candidate.signature == parent.signature
                && candidate.node == parent.node
                && candidate.service == parent.service
        });
        if same {
            candidates.remove(&net);
        }
    }
}

/// Numbers the signatures in use and builds the peer entries and indices.
fn number(candidates: BTreeMap<IpNet, Candidate>) -> Classes {
    // Distinct first (many prefixes, few signatures), then sorted.
    let distinct: HashSet<&Signature> = candidates
        .values()
        .map(|candidate| &candidate.signature)
        .filter(|signature| **signature != Signature::default())
        .collect();
    let used: BTreeSet<&Signature> = distinct.into_iter().collect();
    let ids: BTreeMap<&Signature, u32> = used.into_iter().zip(1..).collect();
    let lookup: HashMap<&Signature, u32> = ids.iter().map(|(s, id)| (*s, *id)).collect();
    let mut classes = Classes::default();
    for (signature, &class_id) in &ids {
        for &pod_peer in &signature.pods {
            classes
                .by_pod_peer
                .entry(pod_peer)
                .or_default()
                .push(class_id);
        }
        for &block in &signature.blocks {
            classes.by_block.entry(block).or_default().push(class_id);
        }
        classes.signatures.insert(class_id, (*signature).clone());
    }
    for (net, candidate) in &candidates {
        let class_id = lookup
            .get(&candidate.signature)
            .copied()
            .unwrap_or(CLASS_WORLD);
        if class_id != CLASS_WORLD {
            *classes.members.entry(class_id).or_default() += 1;
        }
        let entry = PeerEntry {
            class_id,
            node: candidate.node,
            service: candidate.service,
        };
        classes.peers.insert(*net, entry);
    }
    classes
}
