//! What a ClusterNetworkPolicy selects and matches: its subject, its peers and
//! its ports, and the order its tier reads it in. One definition for the
//! evaluator and the compiler, so both agree by construction.
//!
//! Pure; imports only `crate::model`, `policy::selector` and `policy::tables`'s
//! `Direction`. Each quoted sentence comes from the v1alpha2 API's documentation
//! (kubernetes-sigs/network-policy-api).

use std::{collections::BTreeMap, net::IpAddr};

use crate::{
    model::{
        ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, ClusterState, ClusterSubject,
        NamespacedPods, Pod, Protocol, RuleAction, Tier,
    },
    policy::{selector::matches, tables::Direction},
};

/// The rules of `policy` for `direction`.
pub fn cluster_rules(policy: &ClusterNetworkPolicy, direction: Direction) -> &[ClusterRule] {
    match direction {
        Direction::Ingress => &policy.ingress,
        Direction::Egress => &policy.egress,
    }
}

/// Whether `policy`'s subject holds `pod`: "Note that host-networked pods are
/// not included in subject selection." A policy without rules for a direction
/// does not affect it ("CNPs with no ingress rules do not affect ingress
/// traffic"); `applies_to` says both.
pub fn subject_selects(state: &ClusterState, policy: &ClusterNetworkPolicy, pod: &Pod) -> bool {
    if pod.host_network {
        return false;
    }
    match &policy.subject {
        ClusterSubject::Namespaces(namespaces) => in_namespaces(state, namespaces, pod),
        ClusterSubject::Pods(selected) => pods_match(state, selected, pod),
        ClusterSubject::Invalid { .. } => false,
    }
}

/// Whether `policy` selects `pod` and has rules for `direction`.
pub fn applies_to(
    state: &ClusterState,
    policy: &ClusterNetworkPolicy,
    pod: &Pod,
    direction: Direction,
) -> bool {
    !cluster_rules(policy, direction).is_empty() && subject_selects(state, policy, pod)
}

/// The policies of `tier` that apply to `pod` for `direction`, in the order the
/// tier reads them: "Policies with lower priority values have higher
/// precedence"; ties, which the API leaves to the implementation, by name.
pub fn applying<'s>(
    state: &'s ClusterState,
    tier: Tier,
    pod: &Pod,
    direction: Direction,
) -> Vec<&'s ClusterNetworkPolicy> {
    let mut policies: Vec<&ClusterNetworkPolicy> = state
        .cluster_policies
        .values()
        .filter(|policy| policy.tier == tier && applies_to(state, policy, pod, direction))
        .collect();
    policies.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
    policies
}

/// Every pair of policies of one tier with the same priority, named in the
/// order podwall reads them (by name): the API does not say which of them goes
/// first, so the sources warn about each.
pub fn priority_ties(state: &ClusterState) -> Vec<(Tier, u16, Vec<String>)> {
    let mut by_priority: std::collections::BTreeMap<(Tier, u16), Vec<String>> =
        std::collections::BTreeMap::new();
    for policy in state.cluster_policies.values() {
        by_priority
            .entry((policy.tier, policy.priority))
            .or_default()
            .push(policy.name.clone());
    }
    by_priority
        .into_iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|((tier, priority), names)| (tier, priority, names))
        .collect()
}

/// What the agent and the lab warn about in `state`'s ClusterNetworkPolicies,
/// one line each: every priority tie.
pub fn warnings(state: &ClusterState) -> Vec<String> {
    priority_ties(state)
        .into_iter()
        .map(|(tier, priority, names)| {
            format!(
                "ClusterNetworkPolicies {} share {tier} priority {priority}: the API leaves \
                 their order open; podwall reads them by name",
                names.join(", ")
            )
        })
        .collect()
}

/// Whether `pod` is in a namespace `namespaces` selects (a namespace nobody
/// declared has only its name label).
fn in_namespaces(
    state: &ClusterState,
    namespaces: &crate::model::LabelSelector,
    pod: &Pod,
) -> bool {
    matches(namespaces, &state.namespace_labels(&pod.key.namespace))
}

/// Whether `pod` is one of `selected`: in a matching namespace, with matching
/// labels.
fn pods_match(state: &ClusterState, selected: &NamespacedPods, pod: &Pod) -> bool {
    in_namespaces(state, &selected.namespaces, pod) && matches(&selected.pods, &pod.labels)
}

/// The other end of a connection as a peer sees it: the pod, if it is one, and
/// the addresses the connection may use.
#[derive(Clone, Copy, Debug)]
pub struct Remote<'a> {
    /// The pod at the other end, if it is one.
    pub pod: Option<&'a Pod>,
    /// The addresses to match networks and nodes against.
    pub ips: &'a [IpAddr],
}

/// Whether `peer` matches `remote`. "Note that host-networked pods are not
/// included in this type of peer" (namespaces, pods); `networks` and `nodes` see
/// addresses only. An invalid peer matches nothing here; its rule's action is
/// what fails closed (`ClusterRule::fails_closed`).
pub fn peer_matches(state: &ClusterState, peer: &ClusterPeer, remote: Remote<'_>) -> bool {
    let pod_network = remote.pod.filter(|pod| !pod.host_network);
    match peer {
        ClusterPeer::Namespaces(namespaces) => {
            pod_network.is_some_and(|pod| in_namespaces(state, namespaces, pod))
        }
        ClusterPeer::Pods(selected) => {
            pod_network.is_some_and(|pod| pods_match(state, selected, pod))
        }
        // "Networks defines a way to select peers via CIDR blocks. [...] note
        // that cluster-internal traffic will be checked against the rule as well."
        ClusterPeer::Networks(networks) => remote
            .ips
            .iter()
            .any(|ip| networks.iter().any(|net| net.contains(ip))),
        // "It selects the nodeIPs as the peer type by matching on the IPs present
        // in the node.Status.Addresses field of the node."
        ClusterPeer::Nodes(nodes) => state
            .nodes
            .values()
            .filter(|node| matches(nodes, &node.labels))
            .any(|node| remote.ips.iter().any(|ip| node.ips.contains(ip))),
        ClusterPeer::Invalid { .. } => false,
    }
}

/// The addresses two or more pod-network pods claim (a reused IP while the old
/// pod lingers), each with its claimants. Such an address is no pod: no
/// `namespaces` or `pods` peer matches it, except a `Deny` rule's, which matches
/// it when it matches any claimant (`denies_a_claimant`), so that a lingering
/// pod never lets another one past a `Deny`.
pub fn shared_addresses(state: &ClusterState) -> BTreeMap<IpAddr, Vec<&Pod>> {
    let mut claimed: BTreeMap<IpAddr, Vec<&Pod>> = BTreeMap::new();
    for pod in state.pods.values().filter(|pod| !pod.host_network) {
        for (index, ip) in pod.ips.iter().enumerate() {
            if !pod.ips[..index].contains(ip) {
                claimed.entry(*ip).or_default().push(pod);
            }
        }
    }
    claimed.retain(|_, pods| pods.len() > 1);
    claimed
}

/// Whether `peer`, a `namespaces` or `pods` peer of a `Deny` rule, matches one
/// of `claimants`, the pods that claim a shared address (`shared_addresses`).
pub fn denies_a_claimant(state: &ClusterState, peer: &ClusterPeer, claimants: &[&Pod]) -> bool {
    matches!(peer, ClusterPeer::Namespaces(_) | ClusterPeer::Pods(_))
        && claimants.iter().any(|pod| {
            let remote = Remote {
                pod: Some(pod),
                ips: &[],
            };
            peer_matches(state, peer, remote)
        })
}

/// Whether `port` matches `protocol`/`number` at `receiver`, the pod the
/// connection goes to (named ports resolve there, with the protocol its
/// container declares; without a receiving pod a name matches nothing).
pub fn port_matches(
    port: &ClusterPort,
    receiver: Option<&Pod>,
    protocol: Protocol,
    number: u16,
) -> bool {
    match port {
        ClusterPort::Ports {
            protocol: wanted,
            first,
            last,
        } => *wanted == protocol && (*first..=*last).contains(&number),
        ClusterPort::Named(name) => {
            receiver.is_some_and(|pod| pod.ports_named(name, protocol).any(|n| n == number))
        }
        ClusterPort::Invalid { .. } => false,
    }
}

/// How one rule fares against a connection, before its action is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterRuleMatch {
    /// Index of the rule in the policy's ingress or egress list.
    pub index: usize,
    /// Some `from`/`to` entry matches the remote end.
    pub peer_matched: bool,
    /// `protocols` is absent or some entry matches.
    pub port_matched: bool,
    /// The rule is one the API server would have rejected: it matches nothing
    /// (Accept) or everything, as a Deny (Deny, Pass).
    pub failed_closed: bool,
    /// The action taken when the rule matches: its own, or Deny for a Pass rule
    /// that fails closed.
    pub action: RuleAction,
}

impl ClusterRuleMatch {
    /// Whether the rule matches, and so decides (or passes) the connection.
    pub fn matched(&self) -> bool {
        if self.failed_closed {
            self.action == RuleAction::Deny
        } else {
            self.peer_matched && self.port_matched
        }
    }
}

/// How `rule` (number `index`) matches traffic with `remote` on
/// `protocol`/`number`, whose receiving pod is `receiver`.
pub fn rule_match(
    state: &ClusterState,
    rule: &ClusterRule,
    index: usize,
    remote: Remote<'_>,
    receiver: Option<&Pod>,
    protocol: Protocol,
    number: u16,
) -> ClusterRuleMatch {
    let failed_closed = rule.fails_closed();
    // "For "Accept" rules, "fail closed" means: "treat the rule as matching no
    // traffic". For "Deny" and "Pass" rules, "fail closed" means: "treat the
    // rule as a 'Deny all' rule"."
    let action = match (failed_closed, rule.action) {
        (true, RuleAction::Pass) => RuleAction::Deny,
        (_, action) => action,
    };
    // A shared address (no pod) is denied as any of its claimants would be.
    let claimants: Vec<&Pod> = match (action, remote.pod, remote.ips) {
        (RuleAction::Deny, None, [ip]) => state.pods_at(*ip).collect(),
        _ => Vec::new(),
    };
    let shared = claimants.len() > 1;
    ClusterRuleMatch {
        index,
        peer_matched: rule.peers.iter().any(|peer| {
            peer_matches(state, peer, remote)
                || shared && denies_a_claimant(state, peer, &claimants)
        }),
        // "If unspecified, protocol-specific attributes will not be used to match
        // traffic."
        port_matched: rule.ports.is_empty()
            || rule
                .ports
                .iter()
                .any(|port| port_matches(port, receiver, protocol, number)),
        failed_closed,
        action,
    }
}
