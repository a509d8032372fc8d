//! One side of a connection across the tiers: the Admin tier's
//! ClusterNetworkPolicies, then NetworkPolicy (`SideExplanation`), then the
//! Baseline tier's, then the default (allowed).
//!
//! "If Admin tier has made a final decision (Accept or Deny) on a connection,
//! then no further evaluation is done. [...] v1.NetworkPolicy always makes a
//! final decision for selected pods. Further evaluation only happens for Pods
//! not selected by a v1.NetworkPolicy. [...] If a given connection wasn't
//! allowed or denied by any of the tiers, the default kubernetes policy is
//! applied, which says that all pods can communicate with each other."
//!
//! Audit mode: a side is decided twice, once by the enforce-mode policies only
//! and once by every policy as if enforced. The first decides; where it passes
//! and the second drops, the side is a would-drop naming what would drop it. So
//! audit-mode policies of any tier change no verdict, and a NetworkPolicy-only
//! cluster is decided exactly as `SideExplanation::verdict` says.

use super::{SideExplanation, SideVerdict};
use crate::{
    model::{PolicyMode, RuleAction, Tier},
    policy::cluster::ClusterRuleMatch,
};

/// One ClusterNetworkPolicy read for a side, with how each of its rules for
/// that direction matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPolicyExplanation {
    /// The policy's name.
    pub name: String,
    /// Its tier.
    pub tier: Tier,
    /// Its priority.
    pub priority: u16,
    /// Enforced or audited.
    pub mode: PolicyMode,
    /// Its rules for the direction, in order, with their names (empty: none).
    pub rules: Vec<(String, ClusterRuleMatch)>,
}

/// A ClusterNetworkPolicy rule that decided a side.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterRuleRef {
    /// The policy's tier.
    pub tier: Tier,
    /// The policy's name.
    pub policy: String,
    /// Index of the rule in the policy's ingress or egress list.
    pub rule_index: usize,
    /// The rule's name (empty: none).
    pub rule_name: String,
}

/// Everything one side (egress of the source, ingress of the destination) knows
/// about a query, tier by tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Side {
    /// The Admin tier's policies that apply to the pod for this direction, in
    /// the order the tier reads them.
    pub admin: Vec<ClusterPolicyExplanation>,
    /// The NetworkPolicy tier.
    pub network: SideExplanation,
    /// The Baseline tier's policies that apply, in order.
    pub baseline: Vec<ClusterPolicyExplanation>,
}

/// What a tier's walk ended with.
enum Walked {
    /// A rule matched and did this.
    Matched(ClusterRuleRef, RuleAction),
    /// No rule matched.
    Nothing,
}

/// The first matching rule of `policies`, in order, skipping audit-mode
/// policies unless `audit_counts`.
fn walk(policies: &[ClusterPolicyExplanation], audit_counts: bool) -> Walked {
    first_match(policies, audit_counts).map_or(Walked::Nothing, |(rule, action)| {
        Walked::Matched(rule, action)
    })
}

/// The first rule of `policies` (a tier's, in the order it reads them) that
/// matches, and what it does; audit-mode policies are read only when
/// `audit_counts`.
pub fn first_match(
    policies: &[ClusterPolicyExplanation],
    audit_counts: bool,
) -> Option<(ClusterRuleRef, RuleAction)> {
    policies
        .iter()
        .filter(|policy| audit_counts || policy.mode == PolicyMode::Enforce)
        .find_map(|policy| {
            policy
                .rules
                .iter()
                .find(|(_, rule)| rule.matched())
                .map(|(name, rule)| {
                    let at = ClusterRuleRef {
                        tier: policy.tier,
                        policy: policy.name.clone(),
                        rule_index: rule.index,
                        rule_name: name.clone(),
                    };
                    (at, rule.action)
                })
        })
}

impl Side {
    /// A side no policy of any tier can apply to (not a pod, a hostNetwork pod).
    pub fn network_only(network: SideExplanation) -> Self {
        Side {
            admin: Vec::new(),
            network,
            baseline: Vec::new(),
        }
    }

    /// The side's verdict: decided by the enforce-mode policies of every tier;
    /// a would-drop where those pass and every policy enforced would drop.
    pub fn verdict(&self) -> SideVerdict {
        let enforced = self.decide(false);
        if !enforced.allows() {
            return enforced;
        }
        let audited = self.decide(true);
        match audited {
            SideVerdict::Denied(rule) => SideVerdict::WouldDeny(rule),
            SideVerdict::Dropped { isolated_by } => SideVerdict::WouldDrop {
                audited_by: isolated_by,
            },
            would @ (SideVerdict::WouldDrop { .. } | SideVerdict::WouldDeny(_)) => would,
            // Nothing enforced decided it: name what audit-mode policies allow
            // it by, as a NetworkPolicy-only cluster always has.
            allowed if enforced == SideVerdict::Unisolated => allowed,
            _ => enforced,
        }
    }

    /// The verdict with audit-mode policies read (`audit_counts`) or skipped.
    fn decide(&self, audit_counts: bool) -> SideVerdict {
        if matches!(
            self.network,
            SideExplanation::NotAPod | SideExplanation::HostNetwork
        ) {
            return self.network.verdict();
        }
        match walk(&self.admin, audit_counts) {
            Walked::Matched(rule, RuleAction::Accept) => return SideVerdict::Accepted(rule),
            Walked::Matched(rule, RuleAction::Deny) => return SideVerdict::Denied(rule),
            Walked::Matched(_, RuleAction::Pass) | Walked::Nothing => {}
        }
        let selected = match &self.network {
            SideExplanation::Isolated { mode, .. } => audit_counts || *mode == PolicyMode::Enforce,
            _ => false,
        };
        if selected {
            return match self.network.verdict() {
                SideVerdict::WouldDrop { audited_by } => SideVerdict::Dropped {
                    isolated_by: audited_by,
                },
                verdict => verdict,
            };
        }
        match walk(&self.baseline, audit_counts) {
            Walked::Matched(rule, RuleAction::Accept) => SideVerdict::Accepted(rule),
            Walked::Matched(rule, RuleAction::Deny) => SideVerdict::Denied(rule),
            Walked::Matched(_, RuleAction::Pass) | Walked::Nothing => SideVerdict::Unisolated,
        }
    }
}
