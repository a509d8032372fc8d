//! The allow entries as the kernel holds them: rule sets (`RULE_SETS`: endpoint,
//! class, direction -> set; `POLICY`: set, protocol, port -> rule), and the flat
//! (endpoint, class, direction, protocol, port) view tests and hand-written tables
//! use.

use std::collections::BTreeMap;

use super::{DatapathTables, Direction, PortBlock};

/// One allow entry with its wildcards made explicit (host byte order), as if
/// `RULE_SETS` and `POLICY` were one map: what a lookup of (endpoint, class,
/// direction, protocol, port) finds. `DatapathTables::allow_entries` lists them;
/// the tables store them as rule sets (`RuleSetMatch`, `PortMatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyMatch {
    /// Local endpoint identity.
    pub endpoint_id: u32,
    /// Peer class.
    pub class_id: u32,
    /// Direction relative to the local pod.
    pub direction: Direction,
    /// IP protocol number; `None` = every protocol (and then `port` is `None`).
    pub protocol: Option<u8>,
    /// Destination ports; `None` = every port of `protocol`.
    pub port: Option<PortBlock>,
}

impl PolicyMatch {
    /// The rule set part of the entry (its `RULE_SETS` key).
    pub fn rule_set(&self) -> RuleSetMatch {
        RuleSetMatch {
            endpoint_id: self.endpoint_id,
            class_id: self.class_id,
            direction: self.direction,
        }
    }

    /// The port part of the entry (its `POLICY` key within the rule set).
    pub fn port_match(&self) -> PortMatch {
        PortMatch {
            protocol: self.protocol,
            port: self.port,
        }
    }
}

/// A `RULE_SETS` key (host byte order): what the local endpoint allows with a peer
/// class in one direction is one rule set. `class_id` `RULE_SET_ANY_CLASS` is the
/// endpoint's any-class set: the lookup's fallback for a class without its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSetMatch {
    /// Local endpoint identity.
    pub endpoint_id: u32,
    /// Peer class.
    pub class_id: u32,
    /// Direction relative to the local pod.
    pub direction: Direction,
}

/// A `POLICY` key within one rule set, wildcards explicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMatch {
    /// IP protocol number; `None` = every protocol (and then `port` is `None`).
    pub protocol: Option<u8>,
    /// Destination ports; `None` = every port of `protocol`.
    pub port: Option<PortBlock>,
}

/// What one rule set decides: (protocol, port block) -> the decision, the
/// longest match deciding. Every rule of a set is an ingress rule or every one an
/// egress rule (`direction`).
///
/// A set of an endpoint only NetworkPolicies decide holds allows only, and what
/// none of them matches is dropped (or a would-drop, by the endpoint's audit
/// flag). A set of an endpoint a ClusterNetworkPolicy applies to holds an entry
/// for every protocol and port (its all-protocols entry at least): the walk
/// through the tiers, made once per entry by the compiler.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSet {
    /// The direction of its rules.
    pub direction: Direction,
    /// Its `POLICY` entries.
    pub entries: BTreeMap<PortMatch, Decision>,
}

/// What a `POLICY` entry decides (`policy_common::policy::PolicyValue`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Decision {
    /// Allowed by this rule: a NetworkPolicy rule, or a ClusterNetworkPolicy
    /// `Accept` rule. Counted in the rule's slot.
    Allow(RuleRef),
    /// Dropped by this ClusterNetworkPolicy `Deny` rule. Counted in its slot.
    Deny(RuleRef),
    /// Passes as a would-drop: this `Deny` rule of an audit-mode
    /// ClusterNetworkPolicy would drop it. Counted in its slot.
    WouldDeny(RuleRef),
    /// The endpoint's NetworkPolicies decide (after an Admin `Pass` or no Admin
    /// match) and none allows it: dropped as a miss is, in the endpoint's deny
    /// slot.
    NetworkDrop,
    /// As `NetworkDrop` for audit-mode NetworkPolicies: passes as a would-drop,
    /// in the endpoint's audit slot.
    NetworkWouldDrop,
    /// No tier decides: the default allows it, with no rule to count.
    Default,
}

impl Decision {
    /// The rule the decision names, if one.
    pub fn rule(&self) -> Option<RuleRef> {
        match self {
            Decision::Allow(rule) | Decision::Deny(rule) | Decision::WouldDeny(rule) => Some(*rule),
            Decision::NetworkDrop | Decision::NetworkWouldDrop | Decision::Default => None,
        }
    }

    /// The decision with its rule's policy id moved by `moved`; `None` when
    /// `moved` has no new id for it.
    pub fn renumbered(self, moved: impl Fn(u32) -> Option<u32>) -> Option<Decision> {
        let at = |rule: RuleRef| {
            Some(RuleRef {
                policy_id: moved(rule.policy_id)?,
                ..rule
            })
        };
        Some(match self {
            Decision::Allow(rule) => Decision::Allow(at(rule)?),
            Decision::Deny(rule) => Decision::Deny(at(rule)?),
            Decision::WouldDeny(rule) => Decision::WouldDeny(at(rule)?),
            other => other,
        })
    }

    /// The rule, when the decision is an allow by it.
    pub fn allowed_by(&self) -> Option<RuleRef> {
        match self {
            Decision::Allow(rule) => Some(*rule),
            _ => None,
        }
    }
}

/// Which policy rule an entry comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct RuleRef {
    /// Index into `DatapathTables::policy_names`.
    pub policy_id: u32,
    /// Index of the rule in that policy's ingress or egress list.
    pub rule_index: u32,
}

impl DatapathTables {
    /// `POLICY` entries: the entries of every rule set.
    pub fn policy_entries(&self) -> usize {
        self.policy.values().map(|set| set.entries.len()).sum()
    }

    /// Every allow entry as one (endpoint, class, direction, protocol, port) key:
    /// what the two lookups find together (any-class entries under
    /// `RULE_SET_ANY_CLASS`). For tests and displays; the kernel holds them as rule
    /// sets.
    pub fn allow_entries(&self) -> BTreeMap<PolicyMatch, RuleRef> {
        self.decision_entries()
            .into_iter()
            .filter_map(|(m, decision)| Some((m, decision.allowed_by()?)))
            .collect()
    }

    /// Every entry as one (endpoint, class, direction, protocol, port) key, as
    /// `allow_entries`, with its decision.
    pub fn decision_entries(&self) -> BTreeMap<PolicyMatch, Decision> {
        let mut out = BTreeMap::new();
        for (set_match, id) in &self.rule_sets {
            let Some(set) = self.policy.get(id) else {
                continue;
            };
            for (port, rule) in &set.entries {
                let m = PolicyMatch {
                    endpoint_id: set_match.endpoint_id,
                    class_id: set_match.class_id,
                    direction: set_match.direction,
                    protocol: port.protocol,
                    port: port.port,
                };
                out.insert(m, *rule);
            }
        }
        out
    }

    #[cfg(any(test, feature = "testing"))]
    /// Replaces every allow entry with `entries`, one rule set per (endpoint, class,
    /// direction) (for tables written by hand; `allow_entries` gives them back).
    pub fn set_allow_entries(&mut self, entries: BTreeMap<PolicyMatch, RuleRef>) {
        self.rule_sets.clear();
        self.policy.clear();
        for (m, rule) in entries {
            self.allow(m, rule);
        }
    }

    /// Adds the allow entry `m` -> `rule` (for tables written by hand): into the
    /// rule set of `m`'s (endpoint, class, direction), a new one if it has none
    /// (`m.class_id` may be `RULE_SET_ANY_CLASS`). An entry already there for `m`
    /// is kept.
    pub fn allow(&mut self, m: PolicyMatch, rule: RuleRef) {
        self.decide(m, Decision::Allow(rule));
    }

    /// Adds the entry `m` -> `decision` (for tables written by hand), as `allow`.
    pub fn decide(&mut self, m: PolicyMatch, decision: Decision) {
        let next = self.policy.keys().next_back().map_or(1, |id| id + 1);
        let id = *self.rule_sets.entry(m.rule_set()).or_insert(next);
        self.policy
            .entry(id)
            .or_insert_with(|| RuleSet {
                direction: m.direction,
                entries: BTreeMap::new(),
            })
            .entries
            .entry(m.port_match())
            .or_insert(decision);
    }
}
