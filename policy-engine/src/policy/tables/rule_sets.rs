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

/// What one rule set allows: (protocol, port block) -> the rule. Every rule of a set
/// is an ingress rule or every one an egress rule (`direction`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSet {
    /// The direction of its rules.
    pub direction: Direction,
    /// Its `POLICY` entries.
    pub allows: BTreeMap<PortMatch, RuleRef>,
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
    /// `POLICY` entries: the allows of every rule set.
    pub fn policy_entries(&self) -> usize {
        self.policy.values().map(|set| set.allows.len()).sum()
    }

    /// Every allow entry as one (endpoint, class, direction, protocol, port) key:
    /// what the two lookups find together (any-class entries under
    /// `RULE_SET_ANY_CLASS`). For tests and displays; the kernel holds them as rule
    /// sets.
    pub fn allow_entries(&self) -> BTreeMap<PolicyMatch, RuleRef> {
        let mut out = BTreeMap::new();
        for (set_match, id) in &self.rule_sets {
            let Some(set) = self.policy.get(id) else {
                continue;
            };
            for (port, rule) in &set.allows {
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
        let next = self.policy.keys().next_back().map_or(1, |id| id + 1);
        let id = *self.rule_sets.entry(m.rule_set()).or_insert(next);
        self.policy
            .entry(id)
            .or_insert_with(|| RuleSet {
                direction: m.direction,
                allows: BTreeMap::new(),
            })
            .allows
            .entry(m.port_match())
            .or_insert(rule);
    }
}
