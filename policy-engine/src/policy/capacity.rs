//! What the kernel's tables can hold, and which policies are refused when a
//! node's tables would not fit: a tenant's policy too big for the maps fails closed
//! for the pods it selects and stops nothing else.
//!
//! Two kinds of budget, both counted on one node's tables:
//! 1. per policy: no policy may take more than a quarter of any per-bank map
//!    (`Budgets::per_policy`), counted as if it were the only policy (its
//!    *standalone cost*);
//! 2. per bank: the node's tables must fit each banked map's bank and the rule
//!    counters.
//!
//! A refused policy keeps selecting and isolating its pods but allows nothing (its
//! rules are left out), exactly like a policy with no rules: its pods lose that
//! policy's allows only, everything else on the node keeps programming. Which
//! policies are refused is deterministic: first every policy over a per-policy
//! budget; then, while a bank overflows, the largest standalone users of the
//! overflowing map (ties: the later `namespace/name`), as many as cover the
//! overflow, and the node is compiled again without them.
//!
//! Pure; imports only `crate::model` and `policy_common`'s capacities.

use std::fmt;

use policy_common::{
    counters::RULE_COUNTERS_MAX,
    peer::PEERS_MAX,
    policy::{POLICY_MAX, RULE_SETS_MAX},
};

use crate::model::{ClusterState, ObjectRef};

/// A budgeted resource: a per-bank map, or the rule counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// Rules with entries: `RULE_COUNTERS` slots.
    Rules,
    /// `RULE_SETS` entries.
    RuleSets,
    /// `POLICY` entries.
    PolicyEntries,
    /// `PEERS_V4` prefixes.
    PeersV4,
    /// `PEERS_V6` prefixes.
    PeersV6,
}

impl Resource {
    /// Every resource, in the order budgets are checked.
    pub const ALL: [Resource; 5] = [
        Resource::Rules,
        Resource::RuleSets,
        Resource::PolicyEntries,
        Resource::PeersV4,
        Resource::PeersV6,
    ];

    /// A short, stable label for metrics (`podwall_policy_refusals_total{resource}`).
    pub fn label(self) -> &'static str {
        match self {
            Resource::Rules => "rules",
            Resource::RuleSets => "rule_sets",
            Resource::PolicyEntries => "policy_entries",
            Resource::PeersV4 => "peers_v4",
            Resource::PeersV6 => "peers_v6",
        }
    }

    /// How messages count it (`16,385 rules`).
    fn noun(self) -> &'static str {
        match self {
            Resource::Rules => "rules",
            Resource::RuleSets => "RULE_SETS entries",
            Resource::PolicyEntries => "POLICY entries",
            Resource::PeersV4 => "PEERS_V4 prefixes",
            Resource::PeersV6 => "PEERS_V6 prefixes",
        }
    }
}

/// How much of each resource the node's tables may use, and one policy alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// `RULE_COUNTERS` slots.
    pub rules: usize,
    /// One bank of `RULE_SETS`.
    pub rule_sets: usize,
    /// One bank of `POLICY`.
    pub policy_entries: usize,
    /// One bank of `PEERS_V4` (and of `PEERS_V6`).
    pub peers: usize,
    /// One policy may take at most 1/`per_policy_share` of each of the above.
    pub per_policy_share: usize,
}

impl Budgets {
    /// The kernel's capacities (`policy_common`), a quarter of each per policy.
    pub const fn kernel() -> Self {
        Self {
            rules: RULE_COUNTERS_MAX as usize,
            rule_sets: RULE_SETS_MAX as usize,
            policy_entries: POLICY_MAX as usize,
            peers: PEERS_MAX as usize,
            per_policy_share: 4,
        }
    }

    /// The node-wide budget of `resource`.
    pub fn node(&self, resource: Resource) -> usize {
        match resource {
            Resource::Rules => self.rules,
            Resource::RuleSets => self.rule_sets,
            Resource::PolicyEntries => self.policy_entries,
            Resource::PeersV4 | Resource::PeersV6 => self.peers,
        }
    }

    /// The budget of `resource` for one policy.
    pub fn per_policy(&self, resource: Resource) -> usize {
        self.node(resource) / self.per_policy_share.max(1)
    }

    /// The largest per-policy budget: where a policy's cost stops being counted.
    pub(crate) fn per_policy_ceiling(&self) -> usize {
        Resource::ALL
            .iter()
            .map(|r| self.per_policy(*r))
            .max()
            .unwrap_or(0)
    }

    /// The largest node budget: where the node's tables stop being built.
    pub(crate) fn node_ceiling(&self) -> usize {
        Resource::ALL
            .iter()
            .map(|r| self.node(*r))
            .max()
            .unwrap_or(0)
    }
}

impl Default for Budgets {
    fn default() -> Self {
        Self::kernel()
    }
}

/// Why a policy was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// Alone it would take more of `resource` than one policy may.
    PolicyBudget {
        /// What it would take too much of.
        resource: Resource,
        /// How much it would take alone.
        cost: usize,
        /// `Budgets::per_policy`.
        budget: usize,
    },
    /// With it the node's tables would take more of `resource` than a bank holds
    /// (`wanted` is at least the largest budget plus one when counting stopped),
    /// and it was among the largest users of it.
    Bank {
        /// The overflowing resource.
        resource: Resource,
        /// What the node's tables took (at least; counting stops past the budget).
        wanted: usize,
        /// `Budgets::node`.
        capacity: usize,
        /// How much of it the node's tables held for this policy.
        cost: usize,
    },
}

impl RefusalReason {
    /// The resource it names.
    pub fn resource(&self) -> Resource {
        match self {
            RefusalReason::PolicyBudget { resource, .. } | RefusalReason::Bank { resource, .. } => {
                *resource
            }
        }
    }
}

/// A policy left out of one node's tables (its pods fail closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The policy.
    pub policy: ObjectRef,
    /// Why.
    pub reason: RefusalReason,
    /// The local pods it selects, sorted: they keep being isolated by it and lose
    /// its allows.
    pub pods: Vec<ObjectRef>,
}

/// How many pods a message names before "and N more".
const PODS_NAMED: usize = 5;

impl fmt::Display for Refusal {
    /// `policy prod/db: 16,385 rules exceed the per-policy budget of 4,096; its
    /// pods on this node prod/db-0, prod/db-1 fail closed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {}: ", self.policy)?;
        match &self.reason {
            RefusalReason::PolicyBudget {
                resource,
                cost,
                budget,
            } => write!(
                f,
                "{} {} exceed the per-policy budget of {}",
                thousands(*cost),
                resource.noun(),
                thousands(*budget)
            )?,
            RefusalReason::Bank {
                resource,
                wanted,
                capacity,
                cost,
            } => write!(
                f,
                "the node's tables need {} {}, over the {} one bank holds; refused as \
                 one of their largest users ({} of them)",
                thousands(*wanted),
                resource.noun(),
                thousands(*capacity),
                thousands(*cost)
            )?,
        }
        let named: Vec<String> = self
            .pods
            .iter()
            .take(PODS_NAMED)
            .map(ToString::to_string)
            .collect();
        write!(f, "; its pods on this node {}", named.join(", "))?;
        if self.pods.len() > PODS_NAMED {
            write!(f, " and {} more", self.pods.len() - PODS_NAMED)?;
        }
        write!(f, " fail closed (isolated, none of its rules allow)")
    }
}

/// `n` with a comma every three digits: 16385 -> `16,385`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `state` as a node that refused `refusals` enforces it: each refused
/// NetworkPolicy without rules, each refused ClusterNetworkPolicy denying
/// everything in each direction it has rules for. The reference evaluator on
/// it agrees with the tables that refused them.
pub fn without_refused_rules(state: &ClusterState, refusals: &[Refusal]) -> ClusterState {
    let mut out = state.clone();
    for refusal in refusals {
        if let Some(policy) = out.policies.get_mut(&refusal.policy) {
            policy.ingress.clear();
            policy.egress.clear();
        }
        if !refusal.policy.is_cluster_scoped() {
            continue;
        }
        if let Some(policy) = out.cluster_policies.get_mut(&refusal.policy.name) {
            for rules in [&mut policy.ingress, &mut policy.egress] {
                if !rules.is_empty() {
                    *rules = vec![crate::model::ClusterRule::deny_everything("", "refused")];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated_by_commas() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(4096), "4,096");
        assert_eq!(thousands(16385), "16,385");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn a_refusal_names_the_policy_the_budget_and_its_pods() {
        let pods: Vec<ObjectRef> = (0..7)
            .map(|i| ObjectRef::new("prod", format!("db-{i}")))
            .collect();
        let refusal = Refusal {
            policy: ObjectRef::new("prod", "db"),
            reason: RefusalReason::PolicyBudget {
                resource: Resource::Rules,
                cost: 16385,
                budget: 4096,
            },
            pods,
        };
        assert_eq!(
            refusal.to_string(),
            "policy prod/db: 16,385 rules exceed the per-policy budget of 4,096; its pods \
             on this node prod/db-0, prod/db-1, prod/db-2, prod/db-3, prod/db-4 and 2 more \
             fail closed (isolated, none of its rules allow)"
        );
    }

    #[test]
    fn a_quarter_of_each_map_is_one_policy_s_budget() {
        let budgets = Budgets::kernel();
        assert_eq!(budgets.per_policy(Resource::Rules), 4096);
        assert_eq!(budgets.per_policy(Resource::PolicyEntries), 16384);
        assert_eq!(budgets.per_policy(Resource::RuleSets), 16384);
        assert_eq!(budgets.per_policy(Resource::PeersV4), 16384);
    }
}
