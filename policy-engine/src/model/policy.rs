//! The NetworkPolicy model: selectors, peers, ports and rules, normalized.
//!
//! Empty and absent `from`/`to`/`ports` are already folded into one meaning each,
//! and `policyTypes` is defaulted, so the policy engine reads one shape only.

use std::fmt;

use ipnet::IpNet;

use super::{Labels, ObjectRef, Protocol};

/// `matchExpressions[].operator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SelectorOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent, or present with none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SelectorRequirement {
    /// Label key.
    pub key: String,
    /// How the key and values are compared.
    pub operator: SelectorOperator,
    /// Values for In/NotIn; empty for Exists/DoesNotExist.
    pub values: Vec<String>,
}

/// A Kubernetes label selector. The empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSelector {
    /// Every pair must be present.
    pub match_labels: Labels,
    /// Every requirement must hold.
    pub match_expressions: Vec<SelectorRequirement>,
}

/// Which namespaces a pod peer may come from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NamespaceScope {
    /// Only the policy's own namespace (no namespaceSelector given).
    PolicyNamespace,
    /// Namespaces whose labels match (namespaceSelector given; `{}` = all).
    Matching(LabelSelector),
}

/// One `from`/`to` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// podSelector and/or namespaceSelector: pods matching `pods` in `namespaces`.
    /// A missing podSelector is the empty selector (all pods of those namespaces).
    Pods {
        /// Namespaces the pods may be in.
        namespaces: NamespaceScope,
        /// Selector on the pods' labels.
        pods: LabelSelector,
    },
    /// ipBlock: addresses in `cidr` but in none of `except`.
    IpBlock {
        /// The allowed range.
        cidr: IpNet,
        /// Ranges inside `cidr` that are carved out.
        except: Vec<IpNet>,
    },
    /// An entry the API server would have rejected (an ipBlock that is not a CIDR,
    /// an except outside its cidr). It matches nothing, so bad input only narrows.
    Invalid {
        /// Path of the offending field, e.g. `spec.ingress[0].from[1].ipBlock.cidr`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The peers of a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peers {
    /// `from`/`to` absent or empty: every peer, in and outside the cluster.
    All,
    /// Any of these (a non-empty list).
    Only(Vec<Peer>),
}

/// A port number or a container port name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRef {
    /// A port number.
    Number(u16),
    /// A named container port, resolved on the pod that receives the traffic.
    Name(String),
}

/// One `ports` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyPort {
    /// Protocol, defaulted to TCP.
    pub protocol: Protocol,
    /// The port; `None` means every port of `protocol`.
    pub port: Option<PortRef>,
    /// `endPort`: with a numeric `port`, the inclusive end of a range. Below `port`,
    /// or with a named or absent `port`, the entry matches nothing (fail closed).
    pub end_port: Option<u16>,
}

impl PolicyPort {
    /// Why this entry matches nothing because the API server would have rejected its
    /// endPort (below `port`, or with a named or absent `port`), if it does: one
    /// wording for the load warning and the compiler's diagnostic.
    pub fn rejected_end_port(&self) -> Option<String> {
        match (&self.port, self.end_port) {
            (Some(PortRef::Number(first)), Some(last)) if last < *first => {
                Some(format!("endPort {last} is below port {first}"))
            }
            (Some(PortRef::Name(name)), Some(last)) => {
                Some(format!("endPort {last} with the named port {name:?}"))
            }
            (None, Some(last)) => Some(format!("endPort {last} without a port")),
            _ => None,
        }
    }
}

/// One ingress or egress rule: traffic to/from any of `peers` on any of `ports`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// Who the rule admits.
    pub peers: Peers,
    /// Which ports; empty (absent or `[]`) means every port and protocol.
    pub ports: Vec<PolicyPort>,
}

/// `policyTypes` after the API server's defaulting: Ingress always when the field is
/// absent, Egress when absent and `egress` has at least one rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyTypes {
    /// The policy isolates selected pods for ingress.
    pub ingress: bool,
    /// The policy isolates selected pods for egress.
    pub egress: bool,
}

/// Whether a policy's drops are enforced or only reported (podwall's audit mode,
/// annotation `podwall.io/mode`).
///
/// Per (pod, direction), audit-mode policies count only where no enforce-mode
/// policy selects the pod: there they isolate it, but what they would drop passes
/// and is reported as a would-drop. Where an enforce-mode policy selects the pod,
/// audit-mode ones are ignored, so audit can neither widen nor narrow enforced
/// access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Drops what the policy does not allow (the NetworkPolicy semantics).
    #[default]
    Enforce,
    /// Lets through what the policy would drop, and reports it as a would-drop.
    Audit,
}

impl fmt::Display for PolicyMode {
    /// `enforce` or `audit`, as the annotation spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Audit => "audit",
        })
    }
}

/// A NetworkPolicy (networking.k8s.io/v1), normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Namespace and name.
    pub key: ObjectRef,
    /// Pods of the policy's namespace it applies to.
    pub pod_selector: LabelSelector,
    /// Defaulted policyTypes.
    pub policy_types: PolicyTypes,
    /// Ingress rules (ignored unless `policy_types.ingress`).
    pub ingress: Vec<Rule>,
    /// Egress rules (ignored unless `policy_types.egress`).
    pub egress: Vec<Rule>,
    /// Enforced, or audited only (see `PolicyMode`).
    pub mode: PolicyMode,
}
