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
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use policy_common::peer::CLASS_WORLD;

use super::applied::{Applied, Block, PeerId, PodPeer};
use crate::{
    model::{ClusterState, ContainerPort, Labels, ObjectRef, Pod},
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Candidate {
    /// What the rules can tell about the prefix's addresses: an index into
    /// `Interned::signatures` (0: the empty signature).
    signature: u32,
    /// A node address.
    node: bool,
    /// A Service ClusterIP.
    service: bool,
    /// Always kept (a pod, node or Service address), even when redundant.
    fixed: bool,
}

/// Signatures seen so far, each stored once: candidates carry an index, so equal
/// signatures are compared and numbered once, not once per address.
struct Interned {
    /// Index -> signature; index 0 is the empty one.
    signatures: Vec<Signature>,
    /// Signature -> index.
    ids: FastMap<Signature, u32>,
    /// (pod peers, egress ports) index, blocks -> index: what a pod address adds.
    by_parts: FastMap<(u32, Vec<u32>), u32>,
    /// (pod peers, egress ports) -> its index in `parts`.
    part_ids: FastMap<PodPart, u32>,
    /// Index -> (pod peers, egress ports).
    parts: Vec<PodPart>,
}

/// What a pod's addresses share in their signatures: the pod peers matching it,
/// its (egress name id, number) pairs.
type PodPart = (Vec<u32>, Vec<(u32, u16)>);

impl Interned {
    fn new() -> Self {
        let mut ids = FastMap::default();
        ids.insert(Signature::default(), 0);
        Self {
            signatures: vec![Signature::default()],
            ids,
            by_parts: FastMap::default(),
            part_ids: FastMap::default(),
            parts: Vec::new(),
        }
    }

    /// The index of `signature`.
    fn intern(&mut self, signature: Signature) -> u32 {
        if let Some(id) = self.ids.get(&signature) {
            return *id;
        }
        let id = self.signatures.len() as u32;
        self.signatures.push(signature.clone());
        self.ids.insert(signature, id);
        id
    }

    /// The index of the (pod peers, egress ports) pair of a pod.
    fn part(&mut self, pods: Vec<u32>, ports: Vec<(u32, u16)>) -> u32 {
        let key = (pods, ports);
        if let Some(id) = self.part_ids.get(&key) {
            return *id;
        }
        let id = self.parts.len() as u32;
        self.parts.push(key.clone());
        self.part_ids.insert(key, id);
        id
    }

    /// The index of the signature of an address held by `blocks` of a pod whose
    /// (pod peers, egress ports) pair is `part`.
    fn of_pod_address(&mut self, part: u32, blocks: Vec<u32>) -> u32 {
        let key = (part, blocks);
        if let Some(id) = self.by_parts.get(&key) {
            return *id;
        }
        let (pods, ports) = self.parts.get(part as usize).cloned().unwrap_or_default();
        let id = self.intern(Signature {
            pods,
            blocks: key.1.clone(),
            ports,
        });
        self.by_parts.insert(key, id);
        id
    }
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

impl Classes {
    /// The classes of `signatures` (class id -> signature, ids dense from 1 in
    /// ascending signature order, as `assign` numbers them) with `members` and
    /// `peers`.
    pub(super) fn of(
        signatures: &BTreeMap<u32, Signature>,
        members: BTreeMap<u32, usize>,
        peers: BTreeMap<IpNet, PeerEntry>,
    ) -> Self {
        let mut classes = Self::numbered(signatures.values());
        classes.members = members;
        classes.peers = peers;
        classes
    }

    /// Classes numbered from 1 in the order of `sorted` (ascending signatures, the
    /// empty one left out), with no peers yet.
    fn numbered<'s>(sorted: impl Iterator<Item = &'s Signature>) -> Self {
        let mut classes = Classes::default();
        for (signature, class_id) in sorted.zip(1..) {
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
            classes.signatures.insert(class_id, signature.clone());
        }
        classes
    }
}

/// The pod-network pods of `namespaces`.
pub(super) fn pods_of<'s>(state: &'s ClusterState, namespaces: &[&str]) -> Vec<&'s Pod> {
    let mut out = Vec::new();
    for namespace in namespaces {
        let first = ObjectRef::new(*namespace, "");
        out.extend(
            state
                .pods
                .range(first..)
                .take_while(|(key, _)| key.namespace == *namespace)
                .map(|(_, pod)| pod)
                .filter(|pod| !pod.host_network),
        );
    }
    out
}

/// The last compile's classes, which `reclass` starts from.
pub(super) struct LastClasses<'a> {
    /// The applied rules they were made with.
    pub applied: &'a Applied,
    /// Class id -> signature, for every class but `CLASS_WORLD`.
    pub signatures: &'a BTreeMap<u32, Signature>,
    /// The peer entries.
    pub peers: &'a BTreeMap<IpNet, PeerEntry>,
    /// Pod-network pods claiming each address (an address one pod claims has a
    /// pod's entry).
    pub owners: &'a BTreeMap<IpAddr, usize>,
}

impl LastClasses<'_> {
    /// Whether the entry of `net` is a pod's, a node's or a Service's (`fixed`
    /// in `assign`), not an ipBlock region's.
    fn is_fixed(&self, net: &IpNet, entry: &PeerEntry) -> bool {
        let host = net.prefix_len() == net.max_prefix_len();
        entry.node || entry.service || (host && self.owners.get(&net.addr()) == Some(&1))
    }
}

/// The classes once the addresses of `pods` may have new signatures and the
/// applied rules may have gained or lost pod peers and ipBlocks (their egress
/// port names as before), from the last compile's (`last`): what `assign` makes
/// of `state`, ids included. That holds when nothing changed but the labels of
/// these pods or of their namespaces (a pod peer reads a pod's own labels and
/// its namespace's; no region, node or Service address depends on them) and the
/// policies: the pod, node and Service prefixes are the same, every last
/// signature is put in the new peer and block ids (a lost one leaves it), the
/// addresses of pods a gained peer matches and those a gained block holds take
/// it in, `pods`' addresses are signed afresh, the ipBlock regions are made
/// again when the blocks differ, and the classes are numbered again. `shared`
/// holds the addresses more than one pod-network pod claims. `None` when the
/// egress names differ, more than 64 pod peers or blocks are gained, or an
/// address is not where the last compile put it.
pub(super) fn reclass(
    state: &ClusterState,
    applied: &Applied,
    shared: &BTreeSet<IpAddr>,
    last: &LastClasses<'_>,
    pods: &[&Pod],
) -> Option<Classes> {
    if applied.egress_names != last.applied.egress_names {
        return None;
    }
    let gained: Vec<u32> = (0..)
        .zip(&applied.pod_peers)
        .filter(|(_, peer)| last.applied.pod_peer_id(peer).is_none())
        .map(|(id, _)| id)
        .collect();
    let blocks_changed = applied.blocks != last.applied.blocks;
    let gained_blocks: Vec<(u32, &Block)> = (0..)
        .zip(&applied.blocks)
        .filter(|(_, block)| last.applied.block_id(block).is_none())
        .collect();
    if gained.len() > 64 || gained_blocks.len() > 64 {
        return None;
    }
    let translated = translated(last, applied);
    let taken = gained_by_address(state, applied, shared, &gained);
    let fresh = signed(state, applied, shared, pods);
    // Each prefix's candidate, its new signature interned as `assign` interns
    // them: the last class and the gained peers and blocks decide it, except for
    // `fresh` addresses.
    let mut interned = Interned::new();
    let mut by_last: FastMap<(u32, u64, u64), u32> = FastMap::default();
    let (mut found_taken, mut found_fresh) = (0, 0);
    let mut candidates: Vec<(IpNet, Candidate)> = Vec::with_capacity(last.peers.len());
    // Both in prefix order: one walk.
    let mut taken_left = taken.iter().peekable();
    for (net, entry) in last.peers {
        let mut mask = 0;
        if let Some((_, bits)) = taken_left.next_if(|(at, _)| at == net) {
            mask = *bits;
            found_taken += 1;
        }
        // The regions are made again below when the blocks changed.
        if blocks_changed && !last.is_fixed(net, entry) {
            continue;
        }
        let held = (0..)
            .zip(&gained_blocks)
            .filter(|(_, (_, block))| block.holds(net))
            .fold(0u64, |held, (bit, _)| held | 1 << bit);
        let index = if let Some(signature) = fresh.get(net) {
            found_fresh += 1;
            interned.intern(signature.clone())
        } else {
            match by_last.get(&(entry.class_id, mask, held)) {
                Some(index) => *index,
                None => {
                    let mut signature = if entry.class_id == CLASS_WORLD {
                        Signature::default()
                    } else {
                        translated.get(&entry.class_id)?.clone()
                    };
                    let bits =
                        |mask: u64, len: usize| (0..len).filter(move |bit| mask & (1 << bit) != 0);
                    let pod_ids = bits(mask, gained.len()).filter_map(|bit| gained.get(bit));
                    signature.pods.extend(pod_ids);
                    signature.pods.sort_unstable();
                    let block_ids = bits(held, gained_blocks.len())
                        .filter_map(|bit| gained_blocks.get(bit).map(|(id, _)| id));
                    signature.blocks.extend(block_ids);
                    signature.blocks.sort_unstable();
                    let index = interned.intern(signature);
                    by_last.insert((entry.class_id, mask, held), index);
                    index
                }
            }
        };
        let candidate = Candidate {
            signature: index,
            node: entry.node,
            service: entry.service,
            fixed: true,
        };
        candidates.push((*net, candidate));
    }
    if found_taken != taken.len() || found_fresh != fresh.len() {
        return None;
    }
    if blocks_changed {
        // As `assign` makes them: a region's entry only where no pod, node or
        // Service has that prefix; a region's parent is always a region (those
        // are full-length prefixes). Pod, node and Service addresses do not
        // change on the callers' paths, so every one of them is in `last.peers`.
        let mut regions: BTreeMap<IpNet, Candidate> = BTreeMap::new();
        for prefix in applied.blocks.iter().flat_map(Block::prefixes) {
            if last
                .peers
                .get(&prefix)
                .is_some_and(|e| last.is_fixed(&prefix, e))
            {
                continue;
            }
            regions.entry(prefix).or_insert_with(|| Candidate {
                signature: interned.intern(Signature {
                    blocks: blocks_holding(applied, &prefix),
                    ..Signature::default()
                }),
                ..Candidate::default()
            });
        }
        prune_redundant_regions(&mut regions);
        candidates.extend(regions);
        candidates.sort_unstable_by_key(|(net, _)| *net);
    }
    let candidates = candidates.iter().map(|(net, candidate)| (net, candidate));
    Some(number(candidates, &interned.signatures))
}

/// Class id -> its signature in the peer and block ids of `applied` (a peer or
/// block it lacks leaves the signature).
fn translated(last: &LastClasses<'_>, applied: &Applied) -> BTreeMap<u32, Signature> {
    let peer_ids: Vec<Option<u32>> = last
        .applied
        .pod_peers
        .iter()
        .map(|peer| applied.pod_peer_id(peer))
        .collect();
    let block_ids: Vec<Option<u32>> = last
        .applied
        .blocks
        .iter()
        .map(|block| applied.block_id(block))
        .collect();
    let rename = |ids: &[u32], to: &[Option<u32>]| {
        let mut out: Vec<u32> = ids
            .iter()
            .filter_map(|old| to.get(*old as usize).copied().flatten())
            .collect();
        out.sort_unstable();
        out
    };
    last.signatures
        .iter()
        .map(|(id, signature)| {
            let signature = Signature {
                pods: rename(&signature.pods, &peer_ids),
                blocks: rename(&signature.blocks, &block_ids),
                ports: signature.ports.clone(),
            };
            (*id, signature)
        })
        .collect()
}

/// Which of the `gained` pod peers (as bits) match the pod holding each address
/// some of them match (pod-network pods, none of `shared`, as `pod_candidates`
/// takes them), in prefix order, each address once.
fn gained_by_address(
    state: &ClusterState,
    applied: &Applied,
    shared: &BTreeSet<IpAddr>,
    gained: &[u32],
) -> Vec<(IpNet, u64)> {
    let mut out = Vec::new();
    if gained.is_empty() {
        return out;
    }
    let peers: Vec<(u64, &PodPeer)> = gained
        .iter()
        .zip(0..)
        .filter_map(|(id, bit)| Some((1u64 << bit, applied.pod_peers.get(*id as usize)?)))
        .collect();
    // Peers that name their namespace look at its pods alone; one that matches
    // namespaces by label, at every pod.
    let named: Option<BTreeSet<&str>> = peers.iter().map(|(_, peer)| peer.named()).collect();
    let pods: Vec<&Pod> = match named {
        Some(names) => pods_of(state, &names.into_iter().collect::<Vec<_>>()),
        None => state
            .pods
            .values()
            .filter(|pod| !pod.host_network)
            .collect(),
    };
    // Pods come sorted by namespace: which peers range over it, once per namespace.
    let mut scope: Option<(&str, Vec<(u64, &PodPeer)>)> = None;
    for pod in pods {
        let namespace = pod.key.namespace.as_str();
        if scope.as_ref().is_none_or(|(name, _)| *name != namespace) {
            let admitting = peers
                .iter()
                .filter(|(_, peer)| peer.admits_namespace(state, namespace))
                .copied()
                .collect();
            scope = Some((namespace, admitting));
        }
        let Some((_, admitting)) = scope.as_ref() else {
            continue;
        };
        let mask = admitting
            .iter()
            .filter(|(_, peer)| peer.selects(&pod.labels))
            .fold(0, |mask, (bit, _)| mask | bit);
        if mask == 0 {
            continue;
        }
        out.extend(
            pod.ips
                .iter()
                .filter(|ip| !shared.contains(ip))
                .map(|ip| (IpNet::from(*ip), mask)),
        );
    }
    // An address repeated within a pod is one; one that two pods claim is in
    // `shared`.
    out.sort_unstable();
    out.dedup();
    out
}

/// The signature of every address of `pods` (pod-network pods, none of
/// `shared`), made afresh.
fn signed(
    state: &ClusterState,
    applied: &Applied,
    shared: &BTreeSet<IpAddr>,
    pods: &[&Pod],
) -> BTreeMap<IpNet, Signature> {
    // (pod peers, egress ports) per (namespace, labels, ports): they depend on
    // nothing else, and a namespace's pods mostly share a few label sets, so a
    // namespace of many pods is not matched pod by pod against every applied pod
    // peer. An ordered map: the keys are the cluster's labels.
    type Part = (Vec<u32>, Vec<(u32, u16)>);
    let mut parts: BTreeMap<(&str, &Labels, &[ContainerPort]), Part> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for pod in pods.iter().filter(|pod| !pod.host_network) {
        let (pod_peers, ports) = parts
            .entry((pod.key.namespace.as_str(), &pod.labels, &pod.ports))
            .or_insert_with(|| {
                (
                    matching_pod_peers(state, applied, pod),
                    egress_ports(applied, pod),
                )
            });
        for ip in pod.ips.iter().filter(|ip| !shared.contains(ip)) {
            let net = IpNet::from(*ip);
            let signature = pod_signature(applied, pod_peers.clone(), ports.clone(), &net);
            out.insert(net, signature);
        }
    }
    out
}

/// Classifies pod addresses, ipBlock regions, node addresses and Service
/// ClusterIPs. `shared` holds the addresses more than one pod-network pod claims.
/// Class ids are dense from 1 in sorted signature order.
pub(super) fn assign(
    state: &ClusterState,
    applied: &Applied,
    shared: &BTreeSet<IpAddr>,
    node_addresses: &[IpAddr],
) -> Classes {
    let mut interned = Interned::new();
    let mut candidates = pod_candidates(state, applied, shared, &mut interned);
    let mut outside = |prefix: IpNet| Candidate {
        signature: interned.intern(Signature {
            blocks: blocks_holding(applied, &prefix),
            ..Signature::default()
        }),
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
    number(candidates.iter(), &interned.signatures)
}

/// A host-prefix candidate for every address one pod-network pod claims (none of
/// `shared`).
fn pod_candidates(
    state: &ClusterState,
    applied: &Applied,
    shared: &BTreeSet<IpAddr>,
    interned: &mut Interned,
) -> BTreeMap<IpNet, Candidate> {
    // Pod peers depend only on a pod's namespace and labels: match once per pair,
    // and only the peers ranging over that namespace. Pods come sorted by
    // namespace, so one namespace's scope is made once and then dropped.
    let mut scope: Option<(&str, InScope<'_>)> = None;
    // The last pod's (pod peers, egress ports) pair: pods of one workload come
    // one after the other and mostly share it, which saves hashing their labels.
    let mut last: Option<(&Pod, u32)> = None;
    let mut out: Vec<(IpNet, Candidate)> = Vec::with_capacity(state.pods.len());
    for pod in state.pods.values().filter(|pod| !pod.host_network) {
        let namespace = pod.key.namespace.as_str();
        let mut part = last
            .filter(|(previous, _)| {
                previous.key.namespace == pod.key.namespace
                    && previous.labels == pod.labels
                    && previous.ports == pod.ports
            })
            .map(|(_, part)| part);
        if part.is_none() && scope.as_ref().is_none_or(|(name, _)| *name != namespace) {
            let peers = (0..)
                .zip(&applied.pod_peers)
                .filter(|(_, peer)| peer.admits_namespace(state, namespace))
                .collect();
            scope = Some((
                namespace,
                InScope {
                    peers,
                    by_labels: FastMap::default(),
                },
            ));
        }
        let Some((_, in_scope)) = scope.as_mut() else {
            continue;
        };
        for (index, ip) in pod.ips.iter().enumerate() {
            // Repeats of an address within the pod are one candidate.
            if shared.contains(ip) || pod.ips[..index].contains(ip) {
                continue;
            }
            let part = *part.get_or_insert_with(|| {
                let peers = &in_scope.peers;
                let pods = in_scope
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
                interned.part(pods, egress_ports(applied, pod))
            });
            last = Some((pod, part));
            let net = IpNet::from(*ip);
            let candidate = Candidate {
                signature: interned.of_pod_address(part, blocks_holding(applied, &net)),
                fixed: true,
                ..Candidate::default()
            };
            out.push((net, candidate));
        }
    }
    // Sorted once and built in bulk: cheaper than inserting address by address.
    out.into_iter().collect()
}

/// The pod peers ranging over one namespace, and which of them match each label
/// set seen there.
struct InScope<'a> {
    /// (id, peer), ascending.
    peers: Vec<(u32, &'a PodPeer)>,
    /// Labels -> the ids of `peers` selecting them, ascending.
    by_labels: FastMap<&'a Labels, Vec<u32>>,
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

/// Numbers the signatures in use (`signatures`: the candidates' interned ones)
/// and builds the peer entries and indices. `candidates` come in prefix order,
/// each prefix once (`assign`'s map, or `reclass`'s list).
fn number<'c>(
    candidates: impl Iterator<Item = (&'c IpNet, &'c Candidate)> + Clone,
    signatures: &[Signature],
) -> Classes {
    // Distinct first (many prefixes, few signatures), then sorted.
    let mut in_use = vec![false; signatures.len()];
    for (_, candidate) in candidates.clone() {
        if let Some(slot) = in_use.get_mut(candidate.signature as usize) {
            *slot = true;
        }
    }
    let mut used: Vec<u32> = (1..)
        .zip(in_use.iter().skip(1))
        .filter(|(_, used)| **used)
        .map(|(id, _)| id)
        .collect();
    let empty = Signature::default();
    let signature = |id: u32| signatures.get(id as usize).unwrap_or(&empty);
    used.sort_by(|a, b| signature(*a).cmp(signature(*b)));
    // Interned index -> class id (`CLASS_WORLD` for the empty signature).
    let mut class_of = vec![CLASS_WORLD; signatures.len()];
    for (&id, class_id) in used.iter().zip(1..) {
        if let Some(slot) = class_of.get_mut(id as usize) {
            *slot = class_id;
        }
    }
    let mut classes = Classes::numbered(used.iter().map(|id| signature(*id)));
    classes.peers = candidates
        .map(|(net, candidate)| {
            let class_id = class_of
                .get(candidate.signature as usize)
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
            (*net, entry)
        })
        .collect();
    classes
}

/// A `HashMap` with a fast, non-cryptographic hash (foldhash), seeded at
/// random per map: its keys include the cluster's labels, which tenants choose,
/// so a fixed hash would let crafted label sets collide on purpose and slow
/// every compile of the node; the map lives for one compile.
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
