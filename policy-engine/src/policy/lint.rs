//! `lint`: what is likely wrong in a set of NetworkPolicies, before they are
//! applied. Each finding has a stable code, a severity, the object and field it is
//! about and a one-line fix. Errors are what the API server would reject (and
//! podwall enforces as matching nothing); warnings are valid policies that
//! probably do not do what their author meant.
//!
//! Pure: it reads the cluster state as given (pods, namespaces and Services of
//! the manifests or the cluster), nothing else; whether the kernel has SCTP is
//! the caller's to say.

use std::{collections::BTreeSet, fmt, net::IpAddr};

use serde::Serialize;

use crate::{
    model::{
        ClusterState, LabelSelector, NamespaceScope, NetworkPolicy, ObjectRef, Peer, Peers, Pod,
        PolicyPort, PortRef, Protocol, Rule, SelectorOperator,
    },
    policy::{
        evaluator::{pod_matches, NamespaceMatch},
        isolation::applies_to,
        selector::matches,
        tables::Direction,
    },
};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The API server would reject it; podwall enforces it as matching nothing.
    Error,
    /// Valid, but probably not what was meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// What a finding is about: one kind of mistake, with its stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// A field the API server would reject (an ipBlock that is not a CIDR, ...).
    InvalidField,
    /// `endPort` without a numeric `port`, or below it.
    InvalidEndPort,
    /// A policy whose podSelector selects no pod.
    SelectsNoPod,
    /// Pods isolated for egress with no rule admitting DNS.
    EgressWithoutDns,
    /// An ipBlock covering pod addresses or Service ClusterIPs.
    IpBlockCoversCluster,
    /// A named port no pod the rule reaches declares.
    NamedPortUndefined,
    /// A rule another rule of the same policy already covers.
    RedundantRule,
    /// A policy another policy of the namespace already covers.
    RedundantPolicy,
    /// Two policies with the same selector, types and rules.
    EquivalentPolicies,
    /// A selector on a label key no pod (or namespace) carries.
    UnknownLabel,
    /// An SCTP port on a kernel without SCTP.
    SctpUnsupported,
}

impl Check {
    /// The stable code, as printed and in JSON.
    pub fn code(self) -> &'static str {
        match self {
            Check::InvalidField => "PW001",
            Check::InvalidEndPort => "PW002",
            Check::SelectsNoPod => "PW101",
            Check::EgressWithoutDns => "PW102",
            Check::IpBlockCoversCluster => "PW103",
            Check::NamedPortUndefined => "PW104",
            Check::RedundantRule => "PW105",
            Check::RedundantPolicy => "PW106",
            Check::EquivalentPolicies => "PW107",
            Check::UnknownLabel => "PW108",
            Check::SctpUnsupported => "PW109",
        }
    }

    /// A short name for the code.
    pub fn name(self) -> &'static str {
        match self {
            Check::InvalidField => "invalid-field",
            Check::InvalidEndPort => "invalid-end-port",
            Check::SelectsNoPod => "selects-no-pod",
            Check::EgressWithoutDns => "egress-without-dns",
            Check::IpBlockCoversCluster => "ip-block-covers-cluster",
            Check::NamedPortUndefined => "named-port-undefined",
            Check::RedundantRule => "redundant-rule",
            Check::RedundantPolicy => "redundant-policy",
            Check::EquivalentPolicies => "equivalent-policies",
            Check::UnknownLabel => "unknown-label",
            Check::SctpUnsupported => "sctp-unsupported",
        }
    }

    /// How bad it is.
    pub fn severity(self) -> Severity {
        match self {
            Check::InvalidField | Check::InvalidEndPort => Severity::Error,
            _ => Severity::Warning,
        }
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// What kind of mistake.
    pub check: Check,
    /// The NetworkPolicy it is about.
    pub policy: ObjectRef,
    /// The field, e.g. `spec.ingress[0].ports[1].endPort`.
    pub field: String,
    /// What is wrong, naming what it found.
    pub message: String,
    /// What to do about it, in one line.
    pub fix: String,
}

/// What `lint` needs to know beyond the state.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// Whether the kernel the policies will run on has SCTP.
    pub sctp_supported: bool,
}

/// Every finding on `state`'s NetworkPolicies, errors first, then by policy and
/// field.
pub fn lint(state: &ClusterState, context: Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    let policies: Vec<&NetworkPolicy> = state.policies.values().collect();
    for policy in &policies {
        let mut found = |check: Check, field: String, message: String, fix: &str| {
            findings.push(Finding {
                check,
                policy: policy.key.clone(),
                field,
                message,
                fix: fix.to_string(),
            });
        };
        fields(policy, context, &mut found);
        selection(state, policy, &mut found);
        ip_blocks(state, policy, &mut found);
        named_ports(state, policy, &mut found);
        redundant_rules(policy, &mut found);
        unknown_labels(state, policy, &mut found);
    }
    egress_without_dns(state, &policies, &mut findings);
    overlapping_policies(&policies, &mut findings);
    findings.sort_by(|a, b| {
        (a.check.severity(), &a.policy, &a.field, a.check).cmp(&(
            b.check.severity(),
            &b.policy,
            &b.field,
            b.check,
        ))
    });
    findings
}

type Found<'a> = dyn FnMut(Check, String, String, &str) + 'a;

/// `ingress` or `egress`, and the peer list's field.
fn lists(direction: Direction) -> (&'static str, &'static str) {
    match direction {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    }
}

/// Each rule of `policy` with its direction, index and field path.
fn rules(policy: &NetworkPolicy) -> impl Iterator<Item = (Direction, usize, &Rule, String)> {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(move |direction| {
            let list = match direction {
                Direction::Ingress => &policy.ingress,
                Direction::Egress => &policy.egress,
            };
            list.iter().enumerate().map(move |(index, rule)| {
                let path = format!("spec.{}[{index}]", lists(direction).0);
                (direction, index, rule, path)
            })
        })
}

/// Rejected fields, endPorts, and SCTP on a kernel without it.
fn fields(policy: &NetworkPolicy, context: Context, found: &mut Found<'_>) {
    for (_, _, rule, path) in rules(policy) {
        if let Peers::Only(peers) = &rule.peers {
            for peer in peers {
                if let Peer::Invalid { field, reason } = peer {
                    found(
                        Check::InvalidField,
                        field.clone(),
                        format!("{reason}; it matches nothing"),
                        "correct the field (the API server rejects it as it is)",
                    );
                }
            }
        }
        for (index, port) in rule.ports.iter().enumerate() {
            let field = format!("{path}.ports[{index}]");
            if let Some(reason) = port.rejected_end_port() {
                found(
                    Check::InvalidEndPort,
                    format!("{field}.endPort"),
                    format!("{reason}; the entry matches nothing"),
                    "give a numeric port and an endPort at or above it, or drop endPort",
                );
            }
            if port.protocol == Protocol::Sctp && !context.sctp_supported {
                found(
                    Check::SctpUnsupported,
                    format!("{field}.protocol"),
                    "SCTP, and this kernel has no SCTP: no SCTP traffic can flow to match it"
                        .to_string(),
                    "load the sctp module on the nodes, or drop the entry",
                );
            }
        }
    }
}

/// The pod-network pods of `policy`'s namespace its podSelector selects.
fn selected<'s>(state: &'s ClusterState, policy: &NetworkPolicy) -> Vec<&'s Pod> {
    state
        .pods
        .values()
        .filter(|pod| {
            !pod.host_network
                && pod.key.namespace == policy.key.namespace
                && matches(&policy.pod_selector, &pod.labels)
        })
        .collect()
}

/// A policy that selects no pod.
fn selection(state: &ClusterState, policy: &NetworkPolicy, found: &mut Found<'_>) {
    if selected(state, policy).is_empty() {
        found(
            Check::SelectsNoPod,
            "spec.podSelector".into(),
            format!(
                "selects no pod in namespace {}: it isolates nothing and allows nothing",
                policy.key.namespace
            ),
            "check the selector against the pods' labels, or delete the policy",
        );
    }
}

/// The pods, by name, and Service ClusterIPs in `cidr` less `except`.
fn covered(state: &ClusterState, cidr: &ipnet::IpNet, except: &[ipnet::IpNet]) -> Vec<String> {
    let inside = |ip: &IpAddr| cidr.contains(ip) && !except.iter().any(|net| net.contains(ip));
    let pods = state
        .pods
        .values()
        .filter(|pod| !pod.host_network && pod.ips.iter().any(inside))
        .map(|pod| format!("pod {}", pod.key));
    let services = state
        .services
        .values()
        .filter(|service| service.cluster_ip.as_ref().is_some_and(inside))
        .map(|service| format!("Service {}", service.key));
    pods.chain(services).collect()
}

/// ipBlocks that cover pod addresses or Service ClusterIPs.
fn ip_blocks(state: &ClusterState, policy: &NetworkPolicy, found: &mut Found<'_>) {
    for (direction, _, rule, path) in rules(policy) {
        let Peers::Only(peers) = &rule.peers else {
            continue;
        };
        for (index, peer) in peers.iter().enumerate() {
            let Peer::IpBlock { cidr, except } = peer else {
                continue;
            };
            let inside = covered(state, cidr, except);
            if inside.is_empty() {
                continue;
            }
            found(
                Check::IpBlockCoversCluster,
                format!("{path}.{}[{index}].ipBlock.cidr", lists(direction).1),
                format!(
                    "{cidr} covers {}: pod addresses change as pods come and go, and \
                     traffic to a Service is judged at its backends' addresses",
                    list(&inside)
                ),
                "select those pods with podSelector/namespaceSelector, or carve them out with except",
            );
        }
    }
}

/// At most three names, then how many more.
fn list(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    match names.len() {
        0..=3 => shown.join(", "),
        more => format!("{} and {} more", shown.join(", "), more - 3),
    }
}

/// The pods a `Peer::Pods` of `policy` matches.
fn peer_pods<'s>(
    state: &'s ClusterState,
    policy: &NetworkPolicy,
    namespaces: &NamespaceScope,
    pods: &LabelSelector,
) -> Vec<&'s Pod> {
    let scope = || match namespaces {
        NamespaceScope::PolicyNamespace => NamespaceMatch::Named(&policy.key.namespace),
        NamespaceScope::Matching(selector) => NamespaceMatch::Matching(selector),
    };
    state
        .pods
        .values()
        .filter(|pod| pod_matches(state, scope(), pods, pod))
        .collect()
}

/// Named ports no pod the rule reaches declares: for ingress the selected pods,
/// for egress the pods of its pod peers (an egress rule that may reach outside
/// the cluster is left alone).
fn named_ports(state: &ClusterState, policy: &NetworkPolicy, found: &mut Found<'_>) {
    for (direction, _, rule, path) in rules(policy) {
        let receivers: Vec<&Pod> = match direction {
            Direction::Ingress => selected(state, policy),
            Direction::Egress => {
                let Peers::Only(peers) = &rule.peers else {
                    continue;
                };
                let mut out = Vec::new();
                for peer in peers {
                    match peer {
                        Peer::Pods { namespaces, pods } => {
                            out.extend(peer_pods(state, policy, namespaces, pods));
                        }
                        Peer::IpBlock { .. } => {
                            out.clear();
                            break;
                        }
                        Peer::Invalid { .. } => {}
                    }
                }
                if out.is_empty() {
                    continue;
                }
                out
            }
        };
        if receivers.is_empty() {
            continue;
        }
        for (index, port) in rule.ports.iter().enumerate() {
            let Some(PortRef::Name(name)) = &port.port else {
                continue;
            };
            if receivers
                .iter()
                .any(|pod| pod.ports_named(name, port.protocol).next().is_some())
            {
                continue;
            }
            found(
                Check::NamedPortUndefined,
                format!("{path}.ports[{index}].port"),
                format!(
                    "no pod the rule reaches declares a {} port named {name:?}: the entry matches nothing",
                    port.protocol
                ),
                "name a containerPort the pods declare (with its protocol), or use the number",
            );
        }
    }
}

/// Whether `wide` admits every port `narrow` does.
fn port_covers(wide: &PolicyPort, narrow: &PolicyPort) -> bool {
    if wide.protocol != narrow.protocol || wide.rejected_end_port().is_some() {
        return false;
    }
    let range = |port: &PolicyPort| match (&port.port, port.end_port) {
        (Some(PortRef::Number(first)), Some(last)) => Some((*first, last)),
        (Some(PortRef::Number(first)), None) => Some((*first, *first)),
        _ => None,
    };
    match (&wide.port, range(wide), range(narrow)) {
        (None, _, _) => true,
        (_, Some((a, b)), Some((c, d))) => a <= c && d <= b,
        (Some(PortRef::Name(w)), _, _) => {
            narrow.port == Some(PortRef::Name(w.clone())) && narrow.end_port.is_none()
        }
        _ => false,
    }
}

/// Whether rule `wide` admits everything `narrow` does, read off their fields:
/// every peer (or the same peers and more), every port (or ports that cover
/// `narrow`'s).
fn rule_covers(wide: &Rule, narrow: &Rule) -> bool {
    let peers = match (&wide.peers, &narrow.peers) {
        (Peers::All, _) => true,
        (Peers::Only(_), Peers::All) => false,
        (Peers::Only(wide), Peers::Only(narrow)) => narrow
            .iter()
            .all(|peer| matches!(peer, Peer::Invalid { .. }) || wide.contains(peer)),
    };
    let ports = wide.ports.is_empty()
        || (!narrow.ports.is_empty()
            && narrow
                .ports
                .iter()
                .all(|n| wide.ports.iter().any(|w| port_covers(w, n))));
    peers && ports
}

/// Rules another rule of the same policy and direction covers (of two equal
/// rules, the later one).
fn redundant_rules(policy: &NetworkPolicy, found: &mut Found<'_>) {
    for (direction, index, rule, path) in rules(policy) {
        let siblings = match direction {
            Direction::Ingress => &policy.ingress,
            Direction::Egress => &policy.egress,
        };
        let by = siblings.iter().enumerate().find(|(other, wide)| {
            *other != index
                && rule_covers(wide, rule)
                && (!rule_covers(rule, wide) || *other < index)
        });
        if let Some((other, _)) = by {
            found(
                Check::RedundantRule,
                path,
                format!(
                    "spec.{}[{other}] admits everything this rule does",
                    lists(direction).0
                ),
                "delete this rule, or narrow the other one",
            );
        }
    }
}

/// Whether `wide` and `narrow` select the same pods for sure: the same
/// selector, or `wide` selecting every pod of the namespace.
fn selector_covers(wide: &LabelSelector, narrow: &LabelSelector) -> bool {
    wide == narrow || (wide.match_labels.is_empty() && wide.match_expressions.is_empty())
}

/// Policies another one of their namespace covers (its selector covers theirs,
/// its types include theirs, each of their rules is covered by one of its
/// rules), and policies equal to another in all but the name.
fn overlapping_policies(policies: &[&NetworkPolicy], findings: &mut Vec<Finding>) {
    let covers = |wide: &NetworkPolicy, narrow: &NetworkPolicy| {
        let each = |wide: &[Rule], narrow: &[Rule]| {
            narrow
                .iter()
                .all(|n| wide.iter().any(|w| rule_covers(w, n)))
        };
        wide.key.namespace == narrow.key.namespace
            && wide.mode == narrow.mode
            && selector_covers(&wide.pod_selector, &narrow.pod_selector)
            && (wide.policy_types.ingress || !narrow.policy_types.ingress)
            && (wide.policy_types.egress || !narrow.policy_types.egress)
            && each(&wide.ingress, &narrow.ingress)
            && each(&wide.egress, &narrow.egress)
    };
    let same = |a: &NetworkPolicy, b: &NetworkPolicy| {
        let set = |rules: &[Rule]| rules.iter().cloned().collect::<BTreeSet<Rule>>();
        a.key.namespace == b.key.namespace
            && a.mode == b.mode
            && a.pod_selector == b.pod_selector
            && a.policy_types == b.policy_types
            && set(&a.ingress) == set(&b.ingress)
            && set(&a.egress) == set(&b.egress)
    };
    for (index, policy) in policies.iter().enumerate() {
        if let Some(twin) = policies[..index].iter().find(|other| same(other, policy)) {
            findings.push(Finding {
                check: Check::EquivalentPolicies,
                policy: policy.key.clone(),
                field: "spec".into(),
                message: format!(
                    "equivalent to {}: the same selector, types and rules",
                    twin.key
                ),
                fix: "delete one of the two".into(),
            });
            continue;
        }
        // Of two policies that cover each other, only the later one is
        // redundant: deleting both would lose what they allow.
        let by = policies.iter().enumerate().find(|(other, wide)| {
            *other != index
                && !same(wide, policy)
                && covers(wide, policy)
                && (!covers(policy, wide) || *other < index)
        });
        if let Some((_, wide)) = by {
            findings.push(Finding {
                check: Check::RedundantPolicy,
                policy: policy.key.clone(),
                field: "spec".into(),
                message: format!(
                    "{} already selects these pods and admits everything this policy does",
                    wide.key
                ),
                fix: "delete this policy, or narrow the other one".into(),
            });
        }
    }
}

/// Pods isolated for egress by enforce-mode or audit-mode policies whose egress
/// rules admit no DNS (UDP 53, by number or by a name some pod gives its 53/UDP)
/// anywhere: reported on each egress policy that selects some of them.
fn egress_without_dns(
    state: &ClusterState,
    policies: &[&NetworkPolicy],
    findings: &mut Vec<Finding>,
) {
    let dns = PolicyPort {
        protocol: Protocol::Udp,
        port: Some(PortRef::Number(53)),
        end_port: None,
    };
    // A port named as some pod names its 53/UDP (`dns`, as CoreDNS's pods do)
    // admits DNS too.
    let dns_names: BTreeSet<&str> = state
        .pods
        .values()
        .flat_map(|pod| &pod.ports)
        .filter(|port| port.port == 53 && port.protocol == Protocol::Udp)
        .filter_map(|port| port.name.as_deref())
        .collect();
    let named_dns = |port: &PolicyPort| {
        port.protocol == Protocol::Udp
            && matches!(&port.port, Some(PortRef::Name(name)) if dns_names.contains(name.as_str()))
    };
    let admits_dns = |rule: &Rule| {
        rule.ports.is_empty()
            || rule
                .ports
                .iter()
                .any(|port| port_covers(port, &dns) || named_dns(port))
    };
    for policy in policies.iter().filter(|p| p.policy_types.egress) {
        let without: Vec<String> = selected(state, policy)
            .into_iter()
            .filter(|pod| {
                !policies
                    .iter()
                    .filter(|other| applies_to(other, pod, Direction::Egress))
                    .any(|other| other.egress.iter().any(admits_dns))
            })
            .map(|pod| pod.key.to_string())
            .collect();
        if without.is_empty() {
            continue;
        }
        findings.push(Finding {
            check: Check::EgressWithoutDns,
            policy: policy.key.clone(),
            field: "spec.policyTypes".into(),
            message: format!(
                "isolates the egress of {} and no egress rule of theirs admits DNS (53/UDP, \
                 by number or by a pod's name for it): name lookups will fail (or, in audit \
                 mode, would)",
                list(&without)
            ),
            fix: "add an egress rule to port 53 (UDP and TCP) of the cluster DNS pods".into(),
        });
    }
}

/// Selector keys no pod (for a pod selector) or namespace (for a namespace
/// selector) carries, where requiring the key can match nothing.
fn unknown_labels(state: &ClusterState, policy: &NetworkPolicy, found: &mut Found<'_>) {
    let pod_keys: BTreeSet<&str> = state
        .pods
        .values()
        .flat_map(|pod| pod.labels.keys().map(String::as_str))
        .collect();
    let namespace_keys: BTreeSet<String> = state
        .pods
        .values()
        .map(|pod| pod.key.namespace.clone())
        .chain(state.namespaces.keys().cloned())
        .flat_map(|namespace| {
            state
                .namespace_labels(&namespace)
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    let mut check = |selector: &LabelSelector,
                     field: String,
                     known: &dyn Fn(&str) -> bool,
                     what: &str| {
        let required = selector
            .match_labels
            .keys()
            .map(|key| (key.as_str(), "matchLabels"))
            .chain(
                selector
                    .match_expressions
                    .iter()
                    .filter(|e| {
                        matches!(e.operator, SelectorOperator::In | SelectorOperator::Exists)
                    })
                    .map(|e| (e.key.as_str(), "matchExpressions")),
            );
        for (key, list) in required {
            if !known(key) {
                found(
                    Check::UnknownLabel,
                    format!("{field}.{list}"),
                    format!("no {what} carries the label {key:?}: this selector matches nothing"),
                    "check the key's spelling against the labels in use",
                );
            }
        }
    };
    let pod_known = |key: &str| pod_keys.contains(key);
    let namespace_known = |key: &str| namespace_keys.contains(key);
    check(
        &policy.pod_selector,
        "spec.podSelector".into(),
        &pod_known,
        "pod",
    );
    for (direction, _, rule, path) in rules(policy) {
        let Peers::Only(peers) = &rule.peers else {
            continue;
        };
        for (index, peer) in peers.iter().enumerate() {
            let Peer::Pods { namespaces, pods } = peer else {
                continue;
            };
            let field = format!("{path}.{}[{index}]", lists(direction).1);
            check(pods, format!("{field}.podSelector"), &pod_known, "pod");
            if let NamespaceScope::Matching(selector) = namespaces {
                check(
                    selector,
                    format!("{field}.namespaceSelector"),
                    &namespace_known,
                    "namespace",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
