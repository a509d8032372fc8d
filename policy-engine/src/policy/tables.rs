//! `DatapathTables`: the compiler's output, the desired content of the kernel maps
//! in host byte order, plus the lookup the BPF program performs on it.
//!
//! This is the whole contract between the policy engine and the dataplane: the
//! dataplane converts it to `policy_common` layouts and wire byte order; tests look
//! it up with `verdict` (or `lookup`) exactly as `policy-ebpf` does.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use ipnet::IpNet;
use policy_common::{peer::CLASS_WORLD, policy::RULE_SET_ANY_CLASS};

pub use self::rule_sets::{Decision, PolicyMatch, PortMatch, RuleRef, RuleSet, RuleSetMatch};
use crate::{model::ObjectRef, policy::capacity::Refusal};

mod display;
mod rule_sets;

/// Traffic direction relative to the local pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Direction {
    /// Into the pod.
    Ingress,
    /// Out of the pod.
    Egress,
}

impl Direction {
    /// The `policy_common::verdict::DIRECTION_*` code.
    pub fn code(self) -> u8 {
        match self {
            Direction::Ingress => policy_common::verdict::DIRECTION_INGRESS,
            Direction::Egress => policy_common::verdict::DIRECTION_EGRESS,
        }
    }
}

/// What `ENDPOINTS` holds for one local pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointEntry {
    /// Shared by local pods that every policy treats alike.
    pub endpoint_id: u32,
    /// Some policy selects the pod for ingress.
    pub isolated_ingress: bool,
    /// Some policy selects the pod for egress.
    pub isolated_egress: bool,
    /// Every policy isolating the pod for ingress is in audit mode: what they would
    /// drop passes and is reported as would-drop.
    pub audit_ingress: bool,
    /// As `audit_ingress`, for egress.
    pub audit_egress: bool,
    /// The pod may send encapsulated traffic (its namespace allows tunnels): its
    /// egress hook lets policy decide it instead of dropping it.
    pub allow_tunnels: bool,
}

impl EndpointEntry {
    /// Whether the pod is isolated in `direction`.
    pub fn isolated(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.isolated_ingress,
            Direction::Egress => self.isolated_egress,
        }
    }

    /// Whether the pod's isolation in `direction` is audit only.
    pub fn audit(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.audit_ingress,
            Direction::Egress => self.audit_egress,
        }
    }
}

/// The policies isolating the pods of one endpoint id, as indices into
/// `DatapathTables::policy_names`: the policies a drop there names. Serialized as
/// is into a flow log's names file (`telemetry::flows::FlowNames`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Isolation {
    /// Policies isolating for ingress, ascending.
    pub ingress: Vec<u32>,
    /// Policies isolating for egress, ascending.
    pub egress: Vec<u32>,
}

impl Isolation {
    /// The policies isolating in `direction`.
    pub fn get(&self, direction: Direction) -> &[u32] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// What a rule's entries in `POLICY` do, and so what its `RULE_COUNTERS` slot
/// counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleVerdict {
    /// Allows: a NetworkPolicy rule or a ClusterNetworkPolicy `Accept` rule.
    Allowed,
    /// Drops: an enforced ClusterNetworkPolicy `Deny` rule.
    Dropped,
    /// Passes as a would-drop: an audit-mode ClusterNetworkPolicy `Deny` rule.
    WouldDrop,
}

impl RuleVerdict {
    /// `allowed`, `dropped` or `would-drop`, as flows and metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            RuleVerdict::Allowed => "allowed",
            RuleVerdict::Dropped => "dropped",
            RuleVerdict::WouldDrop => "would-drop",
        }
    }
}

/// One rule with entries in `POLICY` (an allow, or a ClusterNetworkPolicy
/// `Deny`): what a `RULE_COUNTERS` slot counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct CountedRule {
    /// Index into `DatapathTables::policy_names`.
    pub policy_id: u32,
    /// Whether the rule is an ingress or an egress rule.
    pub direction: Direction,
    /// Index of the rule in that policy's ingress or egress list.
    pub rule_index: u32,
    /// What its entries do: what its slot counts.
    pub verdict: RuleVerdict,
}

impl CountedRule {
    /// The rule behind a `POLICY` entry's `decision` in a rule set of
    /// `direction`; `None` for a decision that names no rule.
    pub fn of(direction: Direction, decision: &Decision) -> Option<Self> {
        let (rule, verdict) = match decision {
            Decision::Allow(rule) => (rule, RuleVerdict::Allowed),
            Decision::Deny(rule) => (rule, RuleVerdict::Dropped),
            Decision::WouldDeny(rule) => (rule, RuleVerdict::WouldDrop),
            Decision::NetworkDrop | Decision::NetworkWouldDrop | Decision::Default => return None,
        };
        Some(Self {
            policy_id: rule.policy_id,
            direction,
            rule_index: rule.rule_index,
            verdict,
        })
    }
}

/// `spec.ingress[N]` or `spec.egress[N]`: where a rule sits in its policy.
pub fn rule_path(direction: Direction, rule_index: u32) -> String {
    let list = match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    format!("spec.{list}[{rule_index}]")
}

/// What `PEERS_V4`/`PEERS_V6` hold for one prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerEntry {
    /// Peer class (`CLASS_WORLD` for a prefix only the flags single out).
    pub class_id: u32,
    /// An address of the local node: ingress from it always passes.
    pub node: bool,
    /// A Service ClusterIP: egress to it is decided after DNAT, on the backend.
    pub service: bool,
}

/// An aligned block of destination ports: the ports whose high `bits` bits equal
/// those of `first` (`bits` = 16: exactly `first`). endPort ranges become a few such
/// blocks, each one LPM prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortBlock {
    /// The lowest port of the block (its low `16 - bits` bits are zero).
    pub first: u16,
    /// How many high bits are fixed, 0..=16.
    pub bits: u8,
}

impl PortBlock {
    /// The block holding exactly `port`.
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            bits: 16,
        }
    }

    /// Whether `port` lies in the block.
    pub fn contains(self, port: u16) -> bool {
        let mask = if self.bits == 0 {
            0
        } else {
            u16::MAX << (16 - u32::from(self.bits))
        };
        port & mask == self.first
    }

    /// The fewest aligned blocks covering exactly `first..=last` (empty if
    /// `last < first`); at most 30 for any range.
    pub fn split_range(first: u16, last: u16) -> Vec<PortBlock> {
        let mut blocks = Vec::new();
        let (mut low, high) = (u32::from(first), u32::from(last));
        while low <= high {
            // The largest aligned block starting at `low` that stays within `high`.
            let mut size_log2 = if low == 0 {
                16
            } else {
                low.trailing_zeros().min(16)
            };
            while low + (1 << size_log2) - 1 > high {
                size_log2 -= 1;
            }
            blocks.push(PortBlock {
                first: low as u16,
                bits: (16 - size_log2) as u8,
            });
            low += 1 << size_log2;
        }
        blocks
    }
}

/// What the BPF program decides for a new flow at one pod's interface, in one
/// direction (conntrack aside): `DatapathTables::verdict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableVerdict {
    /// Passes without a policy lookup: the pod is not isolated in this direction,
    /// the packet is ingress from the node, or egress to a Service ClusterIP (decided
    /// after DNAT, by a lookup on the backend's address).
    Unisolated,
    /// Passes: this rule allows it (its `RULE_COUNTERS` slot counts it).
    Allowed(RuleRef),
    /// Dropped: the pod is isolated and no rule allows it.
    Dropped,
    /// Passes, as a would-drop: no rule allows it, but the direction is isolated
    /// only by audit-mode policies (the endpoint's `AUDIT_*` flag, or a
    /// `Decision::NetworkWouldDrop` entry).
    WouldDrop,
    /// Dropped by this ClusterNetworkPolicy `Deny` rule (its slot counts it).
    Denied(RuleRef),
    /// Passes, as a would-drop: this audit-mode `Deny` rule would drop it.
    WouldDeny(RuleRef),
    /// The pod has no `ENDPOINTS` entry (not a local endpoint): no program of these
    /// tables sees its packets.
    NotLocal,
}

impl TableVerdict {
    /// Whether the packet passes (a would-drop does).
    pub fn passes(self) -> bool {
        matches!(
            self,
            TableVerdict::Unisolated
                | TableVerdict::Allowed(_)
                | TableVerdict::WouldDrop
                | TableVerdict::WouldDeny(_)
        )
    }

    /// Whether it passes only because the direction is in audit mode.
    pub fn would_drop(self) -> bool {
        matches!(self, TableVerdict::WouldDrop | TableVerdict::WouldDeny(_))
    }
}

/// Something the compiler could not enforce exactly; the affected pods fail closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The policy concerned.
    pub policy: ObjectRef,
    /// What was not enforced and what happens instead.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {}: {}", self.policy, self.message)
    }
}

/// The desired content of every policy map, for the pods of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathTables {
    /// Local pods and their identity and isolation.
    pub endpoints: BTreeMap<ObjectRef, EndpointEntry>,
    /// Every address of every local endpoint (both families), for `ENDPOINT_ADDRS`.
    pub endpoint_addresses: BTreeMap<IpAddr, ObjectRef>,
    /// Peer prefixes of both families (pod addresses as host prefixes, ipBlock
    /// boundaries, node and Service addresses); the rest is `CLASS_WORLD`.
    pub peers: BTreeMap<IpNet, PeerEntry>,
    /// `RULE_SETS`: (endpoint, class, direction) -> the id of its rule set, for
    /// every triple with some allow. Triples the rules treat alike share a set.
    pub rule_sets: BTreeMap<RuleSetMatch, u32>,
    /// `POLICY`: rule set id -> what it allows.
    pub policy: BTreeMap<u32, RuleSet>,
    /// Policy names by `RuleRef::policy_id`.
    pub policy_names: Vec<ObjectRef>,
    /// The `name` of each named ClusterNetworkPolicy rule, by policy, direction
    /// and index: what counters, metrics and events call it (`rule_label`).
    pub rule_names: BTreeMap<(ObjectRef, Direction, u32), String>,
    /// Endpoint id -> the policies isolating its pods, per direction.
    pub isolation: BTreeMap<u32, Isolation>,
    /// What could not be enforced exactly (fail closed).
    pub diagnostics: Vec<Diagnostic>,
    /// Policies whose rules were left out because the tables could not hold them
    /// (their pods fail closed), in the order they were refused.
    pub refusals: Vec<Refusal>,
}

impl DatapathTables {
    /// The rules that have `POLICY` entries, sorted, each counted in its own
    /// `RULE_COUNTERS` slot (`PolicyValue::rule_slot`; the dataplane keeps a rule's
    /// slot across updates).
    pub fn counted_rules(&self) -> Vec<CountedRule> {
        let rules: std::collections::BTreeSet<CountedRule> = self
            .policy
            .values()
            .flat_map(|set| {
                set.entries
                    .values()
                    .filter_map(|decision| CountedRule::of(set.direction, decision))
            })
            .collect();
        rules.into_iter().collect()
    }

    /// What a rule is called: a ClusterNetworkPolicy rule by its `name`, any
    /// other by where it sits (`rule_path`).
    pub fn rule_label(&self, policy: &ObjectRef, direction: Direction, rule_index: u32) -> String {
        self.rule_names
            .get(&(policy.clone(), direction, rule_index))
            .cloned()
            .unwrap_or_else(|| rule_path(direction, rule_index))
    }

    /// The entry of the longest peer prefix holding `addr`, as the LPM lookup in
    /// `PEERS_V4`/`PEERS_V6` finds it; `CLASS_WORLD` without flags when none does.
    pub fn peer(&self, addr: IpAddr) -> PeerEntry {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max)
            .rev()
            .find_map(|len| {
                let net = IpNet::new(addr, len).ok()?.trunc();
                self.peers.get(&net).copied()
            })
            .unwrap_or(PeerEntry {
                class_id: CLASS_WORLD,
                ..PeerEntry::default()
            })
    }

    /// The verdict the BPF program reaches at `pod`'s interface for a new flow (not
    /// conntrack) with the remote address `peer`. Follows the lookup order
    /// documented in `policy-ebpf`'s `decide`.
    pub fn verdict(
        &self,
        pod: &ObjectRef,
        direction: Direction,
        peer: IpAddr,
        protocol: u8,
        port: u16,
    ) -> TableVerdict {
        self.verdict_for_peer(pod, direction, self.peer(peer), protocol, port)
    }

    /// `verdict` after the peer lookup: for a remote address whose
    /// `PEERS_V4`/`PEERS_V6` entry is `peer` (as `DatapathTables::peer` finds it).
    /// Lets callers that judge many flows of one address look its prefix up once.
    pub fn verdict_for_peer(
        &self,
        pod: &ObjectRef,
        direction: Direction,
        peer: PeerEntry,
        protocol: u8,
        port: u16,
    ) -> TableVerdict {
        let Some(endpoint) = self.endpoints.get(pod) else {
            return TableVerdict::NotLocal;
        };
        if !endpoint.isolated(direction) {
            return TableVerdict::Unisolated;
        }
        let passes_unjudged = match direction {
            Direction::Ingress => peer.node,
            Direction::Egress => peer.service,
        };
        if passes_unjudged {
            return TableVerdict::Unisolated;
        }
        let set_match = RuleSetMatch {
            endpoint_id: endpoint.endpoint_id,
            class_id: peer.class_id,
            direction,
        };
        let dropped = if endpoint.audit(direction) {
            TableVerdict::WouldDrop
        } else {
            TableVerdict::Dropped
        };
        let any_class = RuleSetMatch {
            class_id: RULE_SET_ANY_CLASS,
            ..set_match
        };
        let Some(set) = self
            .rule_sets
            .get(&set_match)
            .or_else(|| self.rule_sets.get(&any_class))
            .and_then(|id| self.policy.get(id))
        else {
            return dropped;
        };
        // Longest prefix first: exact port, shorter port blocks, all ports, then all
        // protocols.
        let port_blocks = (0..=16u8).rev().map(|bits| PortBlock {
            first: port
                & if bits == 0 {
                    0
                } else {
                    u16::MAX << (16 - bits)
                },
            bits,
        });
        port_blocks
            .map(|block| PortMatch {
                protocol: Some(protocol),
                port: Some(block),
            })
            .chain([
                PortMatch {
                    protocol: Some(protocol),
                    port: None,
                },
                PortMatch {
                    protocol: None,
                    port: None,
                },
            ])
            .find_map(|key| set.entries.get(&key))
            .map_or(dropped, |decision| match *decision {
                Decision::Allow(rule) => TableVerdict::Allowed(rule),
                Decision::Deny(rule) => TableVerdict::Denied(rule),
                Decision::WouldDeny(rule) => TableVerdict::WouldDeny(rule),
                Decision::NetworkDrop => TableVerdict::Dropped,
                Decision::NetworkWouldDrop => TableVerdict::WouldDrop,
                Decision::Default => TableVerdict::Unisolated,
            })
    }

    /// `verdict` as whether and by which rule the packet passes: `Some(None)` when
    /// it passes without a rule (`TableVerdict::Unisolated`, or a would-drop),
    /// `Some(Some(rule))` when a rule allows it, `None` when it is dropped (or `pod`
    /// is not local). For callers that need no audit distinction.
    pub fn lookup(
        &self,
        pod: &ObjectRef,
        direction: Direction,
        peer: IpAddr,
        protocol: u8,
        port: u16,
    ) -> Option<Option<RuleRef>> {
        self.lookup_peer(pod, direction, self.peer(peer), protocol, port)
    }

    /// `lookup` after the peer lookup, as `verdict_for_peer`.
    pub fn lookup_peer(
        &self,
        pod: &ObjectRef,
        direction: Direction,
        peer: PeerEntry,
        protocol: u8,
        port: u16,
    ) -> Option<Option<RuleRef>> {
        match self.verdict_for_peer(pod, direction, peer, protocol, port) {
            TableVerdict::Allowed(rule) => Some(Some(rule)),
            TableVerdict::Unisolated | TableVerdict::WouldDrop | TableVerdict::WouldDeny(_) => {
                Some(None)
            }
            TableVerdict::Dropped | TableVerdict::Denied(_) | TableVerdict::NotLocal => None,
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests parse address literals")]
mod tests;
