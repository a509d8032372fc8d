//! The ClusterNetworkPolicy model (`policy.networking.k8s.io/v1alpha2`),
//! normalized: a cluster-scoped policy of the Admin or the Baseline tier whose
//! rules accept, deny or pass traffic, in order.
//!
//! Tiers are evaluated Admin (by priority), then NetworkPolicy, then Baseline (by
//! priority), then the default (allow); `policy::evaluator` says exactly how.
//! What the API server would reject is kept in a form that can only narrow
//! access (`ClusterPeer::Invalid`, `ClusterPort::Invalid`); the sources say which.

use std::fmt;

use ipnet::IpNet;

use super::{LabelSelector, PolicyMode, Protocol};

/// The most rules one direction of a ClusterNetworkPolicy may have.
pub const MAX_CLUSTER_RULES: usize = 25;
/// The most peers (`from`/`to`), protocols or networks one rule may have.
pub const MAX_CLUSTER_RULE_ITEMS: usize = 25;
/// The highest priority value (the lowest precedence).
pub const MAX_CLUSTER_PRIORITY: u16 = 1000;
/// The longest rule name.
pub const MAX_CLUSTER_RULE_NAME: usize = 100;

/// The tier a ClusterNetworkPolicy belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Tier {
    /// Before NetworkPolicy: cluster-wide rules namespace owners cannot override.
    Admin,
    /// After NetworkPolicy: defaults for pods no NetworkPolicy selects.
    Baseline,
}

impl fmt::Display for Tier {
    /// `Admin` or `Baseline`, as the API spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Admin => "Admin",
            Tier::Baseline => "Baseline",
        })
    }
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum RuleAction {
    /// Allowed: no rule of a later policy or tier in this direction is read.
    Accept,
    /// Dropped: no rule of a later policy or tier in this direction is read.
    Deny,
    /// The rest of this tier is skipped; the next tier decides.
    Pass,
}

impl fmt::Display for RuleAction {
    /// `Accept`, `Deny` or `Pass`, as the API spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleAction::Accept => "Accept",
            RuleAction::Deny => "Deny",
            RuleAction::Pass => "Pass",
        })
    }
}

/// Namespaces and pods in them, as `subject.pods` and the `pods` peer name them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedPods {
    /// Namespaces whose labels match (`{}`: every namespace).
    pub namespaces: LabelSelector,
    /// Pods of those namespaces whose labels match (`{}`: every pod).
    pub pods: LabelSelector,
}

/// The pods a ClusterNetworkPolicy applies to. Host-network pods never are.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterSubject {
    /// `subject.namespaces`: every pod of the matching namespaces.
    Namespaces(LabelSelector),
    /// `subject.pods`: the matching pods of the matching namespaces.
    Pods(NamespacedPods),
    /// A subject the API server would have rejected (neither or both fields set):
    /// it selects no pod, and the sources warn.
    Invalid {
        /// What is wrong with it.
        reason: String,
    },
}

/// One `from`/`to` entry of a ClusterNetworkPolicy rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterPeer {
    /// Every pod-network pod of the matching namespaces.
    Namespaces(LabelSelector),
    /// The matching pod-network pods of the matching namespaces.
    Pods(NamespacedPods),
    /// Addresses in any of these CIDRs, pods' included (egress only).
    Networks(Vec<IpNet>),
    /// The addresses of the matching nodes (egress only; experimental upstream).
    Nodes(LabelSelector),
    /// A peer the API server would have rejected, or one podwall does not enforce
    /// yet (`domainNames`). Upstream's "fail closed": its rule, when it accepts,
    /// matches nothing; when it denies or passes, it denies everything
    /// (`ClusterRule::fails_closed`).
    Invalid {
        /// Path of the offending field, e.g. `spec.egress[0].to[1]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One `protocols` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterPort {
    /// `tcp`/`udp`/`sctp` `destinationPort`: `first..=last` (one number: equal).
    Ports {
        /// The transport protocol.
        protocol: Protocol,
        /// The first port of the range.
        first: u16,
        /// The last port of the range, inclusive.
        last: u16,
    },
    /// `destinationNamedPort`: the port the receiving pod's containers give this
    /// name, with the protocol they declare for it.
    Named(String),
    /// An entry the API server would have rejected; as `ClusterPeer::Invalid`.
    Invalid {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One ingress or egress rule of a ClusterNetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterRule {
    /// `name`; may be empty (then counters and events name it by index).
    pub name: String,
    /// What it does to the traffic it matches.
    pub action: RuleAction,
    /// `from` or `to`: any of them matches (never empty in a valid rule).
    pub peers: Vec<ClusterPeer>,
    /// `protocols`: any of them matches; empty (absent) matches every protocol
    /// and port, ICMP included.
    pub ports: Vec<ClusterPort>,
}

impl ClusterRule {
    /// A rule that denies everything: a `Deny` whose one peer is invalid at
    /// `field` for `reason` (`fails_closed`). What stands in for rules podwall
    /// cannot enforce as written (a refused or unconvertible policy).
    pub fn deny_everything(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ClusterRule {
            name: String::new(),
            action: RuleAction::Deny,
            peers: vec![ClusterPeer::Invalid {
                field: field.into(),
                reason: reason.into(),
            }],
            ports: Vec::new(),
        }
    }

    /// Whether the API server would have rejected the rule (an invalid peer or
    /// port, or no peer at all): then an Accept rule matches nothing and a Deny
    /// or Pass rule denies everything, as upstream prescribes, so bad input only
    /// narrows access.
    pub fn fails_closed(&self) -> bool {
        self.peers.is_empty()
            || self
                .peers
                .iter()
                .any(|peer| matches!(peer, ClusterPeer::Invalid { .. }))
            || self
                .ports
                .iter()
                .any(|port| matches!(port, ClusterPort::Invalid { .. }))
    }
}

/// A ClusterNetworkPolicy, normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNetworkPolicy {
    /// The object's name (cluster-scoped: no namespace).
    pub name: String,
    /// Admin or Baseline.
    pub tier: Tier,
    /// 0..=1000; lower is read first within the tier.
    pub priority: u16,
    /// The pods it applies to.
    pub subject: ClusterSubject,
    /// Ingress rules, in order; none: the policy does not affect ingress.
    pub ingress: Vec<ClusterRule>,
    /// Egress rules, in order; none: the policy does not affect egress.
    pub egress: Vec<ClusterRule>,
    /// Enforced, or audited only (`podwall.io/mode`): an audited policy changes
    /// no verdict, and what enforcing it would drop is reported as a would-drop.
    pub mode: PolicyMode,
}

impl ClusterNetworkPolicy {
    /// The order policies of one tier are read in: priority, then name (the API
    /// leaves ties to the implementation; podwall reads them by name and warns).
    pub fn precedence(&self) -> (Tier, u16, &str) {
        (self.tier, self.priority, &self.name)
    }
}
