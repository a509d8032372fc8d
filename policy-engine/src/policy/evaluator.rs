//! The reference evaluator: the verdict for one connection, straight from the
//! NetworkPolicy documentation, and the policy and rule that decided it.
//!
//! `explain` does the work: for each side, every policy that applies and, for each
//! of its rules, whether the peer and the port matched. `evaluate` is `explain`
//! reduced to a verdict, so the two can never disagree.
//!
//! Pure; imports only `crate::model` and `policy::selector`. It is the oracle the
//! compiler is property-tested against, and what `explain`/`simulate` print, so it
//! favours being obviously right over being fast. Each quoted sentence comes from the
//! Kubernetes documentation (concepts/services-networking/network-policies and the
//! networking.k8s.io/v1 API reference).
//!
//! Audit mode (`PolicyMode::Audit`) is podwall's, not the documentation's: which
//! policies decide a side is `isolation::isolating`'s rule, and a side only
//! audit-mode policies isolate lets through what they would drop, as a would-drop.
//!
//! ClusterNetworkPolicies (`tiers`): each side is read Admin tier, then
//! NetworkPolicy, then Baseline tier, then the default; `policy::cluster` says
//! what their subjects, peers and ports match.
//!
//! Out of scope here: traffic from the pod's own node (allowed by the dataplane by
//! default) and reply traffic (conntrack).

use std::{fmt, net::IpAddr};

mod tiers;

pub use self::tiers::{first_match, ClusterPolicyExplanation, ClusterRuleRef, Side};
use crate::{
    model::{
        ClusterState, LabelSelector, Labels, NamespaceScope, NetworkPolicy, ObjectRef, Peer, Peers,
        Pod, PolicyMode, PolicyPort, PortRef, Protocol, Rule, Tier,
    },
    policy::{
        cluster::{self, Remote},
        isolation::isolating,
        rules,
        selector::matches,
        tables::Direction,
    },
};

/// One end of a connection, as a query names it (not an "endpoint": that word
/// means a local pod's interface entry in the datapath).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// A pod of the cluster. A reference to a pod the state does not hold is treated
    /// as an address-less end outside the cluster. ipBlocks match it when any of
    /// its addresses is in them.
    Pod(ObjectRef),
    /// A pod judged at one of its addresses, the one a packet carries: ipBlocks see
    /// that address only, as in the kernel (a dual-stack pod can be in a v4 block
    /// and not in a v6 one).
    PodAt(ObjectRef, IpAddr),
    /// An address; if exactly one (pod-network) pod of the cluster has it, that pod.
    Address(IpAddr),
}

impl fmt::Display for End {
    /// `namespace/name` for a pod, the address itself for an address: the keys
    /// `simulate` prints in `from`/`to`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Pod(key) | End::PodAt(key, _) => key.fmt(f),
            End::Address(ip) => ip.fmt(f),
        }
    }
}

impl End {
    /// The pod this end stands for in `state`, resolved as `evaluate` resolves
    /// it: a reference to that pod, an address to the one pod-network pod that has it.
    pub fn pod<'a>(&self, state: &'a ClusterState) -> Option<&'a Pod> {
        resolve(state, self).pod
    }
}

/// A new connection to judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Who opens the connection.
    pub src: End,
    /// Who it is opened to.
    pub dst: End,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
}

/// What one side's policies (egress of the source, ingress of the destination) say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideVerdict {
    /// The end is not a pod of the cluster: no policy applies to it.
    NotAPod,
    /// A hostNetwork pod: it uses the node's network and policies never isolate it.
    HostNetwork,
    /// No policy selects the pod for this direction: everything is allowed.
    Unisolated,
    /// Allowed by this rule (the first allowing one in sorted policy order).
    Allowed {
        /// The policy.
        policy: ObjectRef,
        /// Index of the rule in the policy's ingress or egress list.
        rule_index: usize,
    },
    /// The pod is isolated and no rule of these policies (all that decide) allows it.
    Dropped {
        /// Every enforce-mode policy that applies to the pod for this direction.
        isolated_by: Vec<ObjectRef>,
    },
    /// Only audit-mode policies isolate the pod for this direction and none of
    /// their rules allows it: it passes, but enforcing them would drop it.
    WouldDrop {
        /// Every audit-mode policy that applies to the pod for this direction.
        audited_by: Vec<ObjectRef>,
    },
    /// A ClusterNetworkPolicy rule accepts it.
    Accepted(ClusterRuleRef),
    /// A ClusterNetworkPolicy rule denies it.
    Denied(ClusterRuleRef),
    /// It passes, but this rule of an audit-mode ClusterNetworkPolicy would deny
    /// it were the policy enforced.
    WouldDeny(ClusterRuleRef),
}

impl SideVerdict {
    /// Whether this side lets the connection through (a would-drop does).
    pub fn allows(&self) -> bool {
        !matches!(self, SideVerdict::Dropped { .. } | SideVerdict::Denied(_))
    }

    /// Whether it passes only because the policies deciding it are in audit mode.
    pub fn would_drop(&self) -> bool {
        matches!(
            self,
            SideVerdict::WouldDrop { .. } | SideVerdict::WouldDeny(_)
        )
    }
}

/// The verdict for a query, with both sides explained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Both sides let the connection through: it passes (would-drops included).
    pub allowed: bool,
    /// It passes only because of audit mode: it is `allowed`, and a side's
    /// audit-mode policies would drop it (`SideVerdict::WouldDrop`). A connection
    /// the other side drops is no would-drop: it does not pass.
    pub would_drop: bool,
    /// The source's egress side.
    pub egress: SideVerdict,
    /// The destination's ingress side.
    pub ingress: SideVerdict,
}

/// How one rule fared against a query: each half of "Each rule allows traffic which
/// matches both the from and ports sections" on its own, so a deny can say which
/// half failed (both can).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    /// Index of the rule in the policy's ingress or egress list.
    pub index: usize,
    /// `from`/`to` admits the remote end (absent or empty admits everyone).
    pub peer_matched: bool,
    /// `ports` admits the protocol and port (absent or empty admits all).
    pub port_matched: bool,
}

impl RuleMatch {
    /// Whether the rule admits the connection: peer and port both match.
    pub fn allows(&self) -> bool {
        self.peer_matched && self.port_matched
    }
}

/// One policy that applies to a side, with every rule it has for that direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyExplanation {
    /// The policy.
    pub policy: ObjectRef,
    /// Its ingress or egress rules, in order; empty for a default-deny policy.
    pub rules: Vec<RuleMatch>,
}

impl PolicyExplanation {
    /// The first of its rules that admits the connection.
    pub fn allowing_rule(&self) -> Option<usize> {
        self.rules
            .iter()
            .find(|rule| rule.allows())
            .map(|rule| rule.index)
    }
}

/// Everything one side (egress of the source, ingress of the destination) knows
/// about a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideExplanation {
    /// The end is not a pod of the cluster: no policy applies to it.
    NotAPod,
    /// A hostNetwork pod: policies never isolate it.
    HostNetwork,
    /// No policy selects the pod for this direction.
    Unisolated,
    /// These policies isolate the pod: every one that decides, in sorted order.
    Isolated {
        /// `Audit` when only audit-mode policies apply (they decide, in audit);
        /// `Enforce` when enforce-mode ones do (audit-mode ones are then ignored).
        mode: PolicyMode,
        /// The deciding policies and how each of their rules matched.
        policies: Vec<PolicyExplanation>,
        /// Audit-mode policies that apply too but are ignored in this direction,
        /// because enforce-mode ones decide it; sorted.
        ignored_audit: Vec<ObjectRef>,
    },
}

impl SideExplanation {
    /// The side's verdict: allowed by the first allowing rule in sorted policy
    /// order, else denied by every deciding policy, or, when they are in audit
    /// mode, a would-drop naming them.
    pub fn verdict(&self) -> SideVerdict {
        match self {
            SideExplanation::NotAPod => SideVerdict::NotAPod,
            SideExplanation::HostNetwork => SideVerdict::HostNetwork,
            SideExplanation::Unisolated => SideVerdict::Unisolated,
            SideExplanation::Isolated { mode, policies, .. } => {
                let allowed = policies.iter().find_map(|explained| {
                    explained
                        .allowing_rule()
                        .map(|rule_index| SideVerdict::Allowed {
                            policy: explained.policy.clone(),
                            rule_index,
                        })
                });
                let deciding = || policies.iter().map(|p| p.policy.clone()).collect();
                allowed.unwrap_or_else(|| match mode {
                    PolicyMode::Enforce => SideVerdict::Dropped {
                        isolated_by: deciding(),
                    },
                    PolicyMode::Audit => SideVerdict::WouldDrop {
                        audited_by: deciding(),
                    },
                })
            }
        }
    }
}

/// Both sides of a query explained; what `policy-agent explain` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The source's egress side.
    pub egress: Side,
    /// The destination's ingress side.
    pub ingress: Side,
}

impl Explanation {
    /// The verdict these explanations amount to.
    pub fn verdict(&self) -> Verdict {
        let egress = self.egress.verdict();
        let ingress = self.ingress.verdict();
        // "For a connection from a source pod to a destination pod to be allowed,
        // both the egress policy on the source pod and the ingress policy on the
        // destination pod need to allow the connection. If either side does not
        // allow the connection, it will not happen."
        let allowed = egress.allows() && ingress.allows();
        Verdict {
            allowed,
            would_drop: allowed && (egress.would_drop() || ingress.would_drop()),
            egress,
            ingress,
        }
    }
}

/// An end resolved against the state.
#[derive(Clone, Copy, Debug)]
struct Resolved<'a> {
    /// The pod, if the end is one.
    pod: Option<&'a Pod>,
    /// The address the query named, if it named one.
    address: Option<IpAddr>,
}

impl Resolved<'_> {
    /// The end's IPs: the queried address, else all of the pod's IPs.
    fn ips(&self) -> &[IpAddr] {
        match (&self.address, self.pod) {
            (Some(ip), _) => std::slice::from_ref(ip),
            (None, Some(pod)) => &pod.ips,
            (None, None) => &[],
        }
    }
}

/// Resolves an end: a pod reference to the pod, an address to the pod-network
/// pod that has it (first in sorted order), if any.
fn resolve<'a>(state: &'a ClusterState, end: &End) -> Resolved<'a> {
    match end {
        End::Pod(key) => Resolved {
            pod: state.pods.get(key),
            address: None,
        },
        End::PodAt(key, ip) => Resolved {
            pod: state.pods.get(key),
            address: Some(*ip),
        },
        End::Address(ip) => {
            let mut owners = state.pods_at(*ip);
            // An address two pods claim (a stale pod, a reused IP) cannot be told
            // apart, so it is no pod, as the compiler treats it: never more access
            // than either pod would have.
            let pod = match (owners.next(), owners.next()) {
                (Some(pod), None) => Some(pod),
                _ => None,
            };
            Resolved {
                pod,
                address: Some(*ip),
            }
        }
    }
}

/// The verdict for `query` under the policies of `state`.
pub fn evaluate(state: &ClusterState, query: &Query) -> Verdict {
    explain(state, query).verdict()
}

/// Why `query` gets its verdict: for each side, the policies that apply and how
/// each of their rules matched.
pub fn explain(state: &ClusterState, query: &Query) -> Explanation {
    let src = resolve(state, &query.src);
    let dst = resolve(state, &query.dst);
    Explanation {
        egress: explain_side(state, query, Direction::Egress, src, dst),
        ingress: explain_side(state, query, Direction::Ingress, dst, src),
    }
}

/// What `local`'s policies of every tier for `direction` say about traffic with
/// `remote`.
fn explain_side(
    state: &ClusterState,
    query: &Query,
    direction: Direction,
    local: Resolved<'_>,
    remote: Resolved<'_>,
) -> Side {
    let network = explain_network(state, query, direction, local, remote);
    let Some(pod) = local.pod.filter(|pod| !pod.host_network) else {
        return Side::network_only(network);
    };
    let receiver = match direction {
        Direction::Ingress => local,
        Direction::Egress => remote,
    };
    let peer = Remote {
        pod: remote.pod,
        ips: remote.ips(),
    };
    let tier = |tier: Tier| {
        cluster::applying(state, tier, pod, direction)
            .into_iter()
            .map(|policy| ClusterPolicyExplanation {
                name: policy.name.clone(),
                tier: policy.tier,
                priority: policy.priority,
                mode: policy.mode,
                rules: cluster::cluster_rules(policy, direction)
                    .iter()
                    .enumerate()
                    .map(|(index, rule)| {
                        let matched = cluster::rule_match(
                            state,
                            rule,
                            index,
                            peer,
                            receiver.pod,
                            query.protocol,
                            query.port,
                        );
                        (rule.name.clone(), matched)
                    })
                    .collect(),
            })
            .collect()
    };
    Side {
        admin: tier(Tier::Admin),
        network,
        baseline: tier(Tier::Baseline),
    }
}

/// What `local`'s NetworkPolicies for `direction` say about traffic with
/// `remote`.
fn explain_network(
    state: &ClusterState,
    query: &Query,
    direction: Direction,
    local: Resolved<'_>,
    remote: Resolved<'_>,
) -> SideExplanation {
    let Some(pod) = local.pod else {
        return SideExplanation::NotAPod;
    };
    // "The network plugin cannot properly distinguish hostNetwork pod traffic, and
    // so it ignores hostNetwork pods when matching podSelector and
    // namespaceSelector. Traffic to/from hostNetwork pods is treated the same as all
    // other traffic to/from the node IP."
    if pod.host_network {
        return SideExplanation::HostNetwork;
    }
    // "A pod is isolated for ingress if there is any NetworkPolicy that both selects
    // the pod and has "Ingress" in its policyTypes; we say that such a policy applies
    // to the pod for ingress." (Likewise for egress.) Audit mode decides which of
    // them count (`isolating`).
    let isolating = isolating(
        state.policies.values().map(|policy| (policy, policy)),
        pod,
        direction,
    );
    let deciding = isolating.deciding;
    if deciding.is_empty() {
        // "By default, a pod is non-isolated for ingress; all inbound connections
        // are allowed." (Likewise for egress.)
        return SideExplanation::Unisolated;
    }
    // "When a pod is isolated for ingress, the only allowed connections into the pod
    // are those [...] allowed by the ingress list of some NetworkPolicy that applies
    // to the pod for ingress. [...] The effects of those ingress lists combine
    // additively." (Likewise for egress.)
    // The port receiving the traffic is always on the destination.
    let receiver = match direction {
        Direction::Ingress => local,
        Direction::Egress => remote,
    };
    let explained = deciding.iter().map(|policy| PolicyExplanation {
        policy: policy.key.clone(),
        rules: rules(policy, direction)
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                rule_match(state, policy, rule, remote, receiver.pod, query, index)
            })
            .collect(),
    });
    SideExplanation::Isolated {
        mode: isolating.mode,
        policies: explained.collect(),
        ignored_audit: isolating
            .ignored_audit
            .iter()
            .map(|policy| policy.key.clone())
            .collect(),
    }
}

/// How `rule` (number `index` of its list) matches traffic with `remote` on the
/// query's protocol and port.
fn rule_match(
    state: &ClusterState,
    policy: &NetworkPolicy,
    rule: &Rule,
    remote: Resolved<'_>,
    receiver: Option<&Pod>,
    query: &Query,
    index: usize,
) -> RuleMatch {
    // "Each rule allows traffic which matches both the from and ports sections."
    // from/to: "If this field is empty or missing, this rule matches all sources
    // (traffic not restricted by source). If this field is present and contains at
    // least one item, this rule allows traffic only if the traffic matches at least
    // one item in the from list."
    let peer_matched = match &rule.peers {
        Peers::All => true,
        Peers::Only(peers) => peers
            .iter()
            .any(|peer| peer_matches(state, policy, peer, remote)),
    };
    // ports: "If this field is empty or missing, this rule matches all ports
    // (traffic not restricted by port). If this field is present and contains at
    // least one item, then this rule allows traffic only if the traffic matches at
    // least one port in the list."
    let port_matched = rule.ports.is_empty()
        || rule
            .ports
            .iter()
            .any(|port| port_matches(port, receiver, query));
    RuleMatch {
        index,
        peer_matched,
        port_matched,
    }
}

/// Whether one `from`/`to` entry of `policy` matches `remote`.
fn peer_matches(
    state: &ClusterState,
    policy: &NetworkPolicy,
    peer: &Peer,
    remote: Resolved<'_>,
) -> bool {
    match peer {
        // "podSelector: This selects particular Pods in the same namespace as the
        // NetworkPolicy [...]. namespaceSelector: This selects particular namespaces
        // for which all Pods should be allowed [...]. namespaceSelector and
        // podSelector: A single to/from entry that specifies both namespaceSelector
        // and podSelector selects particular Pods within particular namespaces."
        Peer::Pods { namespaces, pods } => remote
            .pod
            .is_some_and(|pod| pod_peer_matches(state, policy, namespaces, pods, pod)),
        // "IPBlock describes a particular CIDR [...] that is allowed to the pods
        // matched by a NetworkPolicySpec's podSelector. The except entry describes
        // CIDRs that should not be included within this rule."
        Peer::IpBlock { cidr, except } => remote
            .ips()
            .iter()
            .any(|ip| cidr.contains(ip) && !except.iter().any(|out| out.contains(ip))),
        // Input the API server would have rejected matches nothing: it can only
        // narrow what a rule admits.
        Peer::Invalid { .. } => false,
    }
}

/// Whether a `Peer::Pods` of `policy` matches `pod` (`pod_matches`).
fn pod_peer_matches(
    state: &ClusterState,
    policy: &NetworkPolicy,
    namespaces: &NamespaceScope,
    pods: &LabelSelector,
    pod: &Pod,
) -> bool {
    let namespaces = match namespaces {
        NamespaceScope::PolicyNamespace => NamespaceMatch::Named(&policy.key.namespace),
        NamespaceScope::Matching(selector) => NamespaceMatch::Matching(selector),
    };
    pod_matches(state, namespaces, pods, pod)
}

/// The namespaces a pod peer ranges over, once its policy is known.
pub(crate) enum NamespaceMatch<'a> {
    /// The namespace of this name.
    Named(&'a str),
    /// Namespaces whose labels match.
    Matching(&'a LabelSelector),
}

/// Whether a pod peer ranging over `namespaces` and selecting `pods` matches `pod`:
/// a pod-network pod whose namespace is in scope and whose labels match; shared
/// with the compiler.
pub(crate) fn pod_matches(
    state: &ClusterState,
    namespaces: NamespaceMatch<'_>,
    pods: &LabelSelector,
    pod: &Pod,
) -> bool {
    !pod.host_network
        && namespace_matches(state, namespaces, &pod.key.namespace)
        && matches(pods, &pod.labels)
}

/// Whether a pod peer ranging over `namespaces` admits pods of `namespace` (the
/// namespace half of `pod_matches`; a namespace nobody declared has only its name
/// label).
pub(crate) fn namespace_matches(
    state: &ClusterState,
    namespaces: NamespaceMatch<'_>,
    namespace: &str,
) -> bool {
    match state.namespaces.get(namespace) {
        Some(declared) => namespace_labelled_matches(namespaces, namespace, &declared.labels),
        None => {
            namespace_labelled_matches(namespaces, namespace, &state.namespace_labels(namespace))
        }
    }
}

/// `namespace_matches` for the namespace `name` whose labels are `labels`.
pub(crate) fn namespace_labelled_matches(
    namespaces: NamespaceMatch<'_>,
    name: &str,
    labels: &Labels,
) -> bool {
    match namespaces {
        NamespaceMatch::Named(named) => name == named,
        NamespaceMatch::Matching(selector) => matches(selector, labels),
    }
}

/// Whether one `ports` entry matches the query; named ports resolve on `receiver`.
fn port_matches(port: &PolicyPort, receiver: Option<&Pod>, query: &Query) -> bool {
    // "protocol represents the protocol (TCP, UDP, or SCTP) which traffic must
    // match."
    if port.protocol != query.protocol {
        return false;
    }
    match &port.port {
        // "If this field is not provided, this matches all port names and numbers."
        // endPort without a numeric port is rejected by the API server: fail closed.
        None => port.end_port.is_none(),
        // "endPort indicates that the range of ports from port to endPort if set,
        // inclusive, should be allowed by the policy."
        Some(PortRef::Number(first)) => {
            let last = port.end_port.unwrap_or(*first);
            (*first..=last).contains(&query.port)
        }
        // "port represents the port on the given protocol. This can either be a
        // numerical or named port on a pod." A name resolves on the pod receiving
        // the traffic; one that does not resolve matches nothing, nor does a name
        // with an endPort (rejected by the API server).
        Some(PortRef::Name(name)) => {
            port.end_port.is_none()
                && receiver.is_some_and(|pod| {
                    pod.ports_named(name, query.protocol)
                        .any(|number| number == query.port)
                })
        }
    }
}

#[cfg(test)]
mod tests;
