//! What the applied rules refer to, interned: distinct pod peers, distinct ipBlocks
//! and the port names egress rules use.
//!
//! Only rules of (policy, direction) pairs that apply to some local endpoint shape
//! the tables. Equal peers of different rules or policies match the same addresses,
//! so they get one id each: class signatures are made of these ids, and the number
//! of classes follows distinct peers, not rules.

use std::collections::{btree_map::Entry, BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::{
    model::{
        ClusterState, LabelSelector, Labels, NamespaceScope, NetworkPolicy, Peer, Peers, Pod,
        PolicyPort, PortRef, Protocol,
    },
    policy::{
        evaluator::{namespace_labelled_matches, namespace_matches, pod_matches, NamespaceMatch},
        rules,
        selector::matches,
        tables::Direction,
    },
};

/// The namespaces a pod peer ranges over, independent of the policy it is in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// One namespace by name (a peer without namespaceSelector).
    Named(String),
    /// Namespaces whose labels match.
    Matching(LabelSelector),
}

/// A `Peer::Pods`, made independent of its policy: equal peers of different
/// policies are one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PodPeer {
    scope: Scope,
    pods: LabelSelector,
}

impl PodPeer {
    /// The peer `namespaces` and `pods` of `policy` admit.
    fn of(policy: &NetworkPolicy, namespaces: &NamespaceScope, pods: &LabelSelector) -> Self {
        let scope = match namespaces {
            NamespaceScope::PolicyNamespace => Scope::Named(policy.key.namespace.clone()),
            NamespaceScope::Matching(selector) => Scope::Matching(selector.clone()),
        };
        Self {
            scope,
            pods: pods.clone(),
        }
    }

    /// The namespaces the peer ranges over, as the evaluator takes them.
    fn namespaces(&self) -> NamespaceMatch<'_> {
        match &self.scope {
            Scope::Named(name) => NamespaceMatch::Named(name),
            Scope::Matching(selector) => NamespaceMatch::Matching(selector),
        }
    }

    /// Whether the peer admits `pod` (`evaluator::pod_matches`).
    pub fn matches(&self, state: &ClusterState, pod: &Pod) -> bool {
        pod_matches(state, self.namespaces(), &self.pods, pod)
    }

    /// Whether the peer ranges over `namespace` (`evaluator::namespace_matches`):
    /// it then admits the pod-network pods there whose labels `selects`.
    pub fn admits_namespace(&self, state: &ClusterState, namespace: &str) -> bool {
        namespace_matches(state, self.namespaces(), namespace)
    }

    /// Whether the peer ranges over the namespace `name` when its labels are
    /// `labels` (`admits_namespace` with the labels given).
    pub fn admits_labelled(&self, name: &str, labels: &Labels) -> bool {
        namespace_labelled_matches(self.namespaces(), name, labels)
    }

    /// The one namespace the peer ranges over, when it names it (no
    /// namespaceSelector).
    pub fn named(&self) -> Option<&str> {
        match &self.scope {
            Scope::Named(name) => Some(name),
            Scope::Matching(_) => None,
        }
    }

    /// Whether the peer's pod selector selects `labels`.
    pub fn selects(&self, labels: &Labels) -> bool {
        matches(&self.pods, labels)
    }
}

/// An ipBlock with its prefixes truncated to their network and its excepts sorted:
/// membership depends on nothing else.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Block {
    /// The range.
    pub cidr: IpNet,
    /// Ranges carved out of it.
    pub except: Vec<IpNet>,
}

impl Block {
    /// The normalized block of an ipBlock peer.
    pub fn new(cidr: &IpNet, except: &[IpNet]) -> Self {
        let mut except: Vec<IpNet> = except.iter().map(IpNet::trunc).collect();
        except.sort();
        except.dedup();
        Self {
            cidr: cidr.trunc(),
            except,
        }
    }

    /// Whether every address of `prefix` is in the block.
    ///
    /// For a prefix that is the longest peer prefix holding an address, this is
    /// exactly whether that address is in the block (see `classes`).
    pub fn holds(&self, prefix: &IpNet) -> bool {
        self.cidr.contains(prefix) && !self.except.iter().any(|out| out.contains(prefix))
    }

    /// The block's boundary prefixes: its cidr and its excepts.
    pub fn prefixes(&self) -> impl Iterator<Item = IpNet> + '_ {
        std::iter::once(self.cidr).chain(self.except.iter().copied())
    }
}

/// What one `from`/`to` entry admits, by interned id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PeerId {
    /// A pod peer: index into `Applied::pod_peers`.
    Pods(u32),
    /// An ipBlock: index into `Applied::blocks`.
    Block(u32),
    /// A `Peer::Invalid`: nothing.
    Nothing,
}

/// A port name with the protocol it is used with.
pub(super) type PortName = (String, Protocol);

/// The interned content of the applied rules. Owned, so a node's compile can keep
/// it to classify a pod of another node on its own (`remote`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Applied {
    /// Distinct pod peers.
    pub pod_peers: Vec<PodPeer>,
    /// Distinct ipBlocks.
    pub blocks: Vec<Block>,
    /// Port names (with protocol) that applied egress rules use, sorted; they
    /// resolve on the destination, so classes carry their resolution.
    pub egress_names: Vec<PortName>,
    /// Pod peer -> its index in `pod_peers`.
    pod_peer_ids: BTreeMap<PodPeer, u32>,
    /// Block -> its index in `blocks`.
    block_ids: BTreeMap<Block, u32>,
    /// Cidr -> the blocks with it, ascending: the blocks that can hold a prefix
    /// are those whose cidr is the prefix cut to one of `cidr_lengths`.
    by_cidr: BTreeMap<IpNet, Vec<u32>>,
    /// (IPv6, length) of every cidr of `blocks`.
    cidr_lengths: BTreeSet<(bool, u8)>,
}

impl Applied {
    /// Interns the peers and egress port names of the rules of every `applied`
    /// (policy index, direction) pair.
    pub fn collect(policies: &[&NetworkPolicy], applied: &BTreeSet<(u32, Direction)>) -> Self {
        let mut out = Applied::default();
        let mut egress_names = BTreeSet::new();
        for &(policy_id, direction) in applied {
            let Some(policy) = policies.get(policy_id as usize).copied() else {
                continue;
            };
            for rule in rules(policy, direction) {
                if direction == Direction::Egress {
                    egress_names.extend(named_ports(&rule.ports));
                }
                let Peers::Only(peers) = &rule.peers else {
                    continue;
                };
                for peer in peers {
                    out.intern(policy, peer);
                }
            }
        }
        out.egress_names = egress_names.into_iter().collect();
        for (id, block) in (0..).zip(&out.blocks) {
            out.by_cidr.entry(block.cidr).or_default().push(id);
            let v6 = matches!(block.cidr, IpNet::V6(_));
            out.cidr_lengths.insert((v6, block.cidr.prefix_len()));
        }
        out
    }

    /// The blocks holding every address of `prefix` (`Block::holds`), ascending.
    /// Only blocks whose cidr holds the prefix are asked: the prefix cut to
    /// their length is their cidr.
    pub fn blocks_holding(&self, prefix: &IpNet) -> Vec<u32> {
        let v6 = matches!(prefix, IpNet::V6(_));
        let mut out: Vec<u32> = self
            .cidr_lengths
            .iter()
            .filter(|(family, len)| *family == v6 && *len <= prefix.prefix_len())
            .filter_map(|(_, len)| IpNet::new(prefix.addr(), *len).ok())
            .filter_map(|cut| self.by_cidr.get(&cut.trunc()))
            .flatten()
            .copied()
            .filter(|id| {
                self.blocks
                    .get(*id as usize)
                    .is_some_and(|block| block.holds(prefix))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Adds `peer` of `policy` if it is new.
    fn intern(&mut self, policy: &NetworkPolicy, peer: &Peer) {
        match peer {
            Peer::Pods { namespaces, pods } => {
                let next = self.pod_peers.len() as u32;
                let key = PodPeer::of(policy, namespaces, pods);
                if let Entry::Vacant(slot) = self.pod_peer_ids.entry(key.clone()) {
                    slot.insert(next);
                    self.pod_peers.push(key);
                }
            }
            Peer::IpBlock { cidr, except } => {
                let next = self.blocks.len() as u32;
                let block = Block::new(cidr, except);
                if let Entry::Vacant(slot) = self.block_ids.entry(block.clone()) {
                    slot.insert(next);
                    self.blocks.push(block);
                }
            }
            Peer::Invalid { .. } => {}
        }
    }

    /// The id of `peer`, when some applied rule names it.
    pub fn pod_peer_id(&self, peer: &PodPeer) -> Option<u32> {
        self.pod_peer_ids.get(peer).copied()
    }

    /// The id of `block`, when some applied rule names it.
    pub fn block_id(&self, block: &Block) -> Option<u32> {
        self.block_ids.get(block).copied()
    }

    /// The id of `peer` of `policy`; `None` for a peer of a rule that is not applied.
    pub fn peer_id(&self, policy: &NetworkPolicy, peer: &Peer) -> Option<PeerId> {
        match peer {
            Peer::Pods { namespaces, pods } => self
                .pod_peer_ids
                .get(&PodPeer::of(policy, namespaces, pods))
                .map(|id| PeerId::Pods(*id)),
            Peer::IpBlock { cidr, except } => self
                .block_ids
                .get(&Block::new(cidr, except))
                .map(|id| PeerId::Block(*id)),
            Peer::Invalid { .. } => Some(PeerId::Nothing),
        }
    }

    /// The index of an egress port name in `egress_names`.
    pub fn egress_name_id(&self, name: &str, protocol: Protocol) -> Option<u32> {
        self.egress_names
            .binary_search_by(|(n, p)| (n.as_str(), *p).cmp(&(name, protocol)))
            .ok()
            .map(|index| index as u32)
    }
}

/// The names (with protocol) `ports` refers to. A name with an endPort matches
/// nothing and is left out.
pub(super) fn named_ports(ports: &[PolicyPort]) -> impl Iterator<Item = PortName> + '_ {
    ports
        .iter()
        .filter_map(|port| match (&port.port, port.end_port) {
            (Some(PortRef::Name(name)), None) => Some((name.clone(), port.protocol)),
            _ => None,
        })
}
