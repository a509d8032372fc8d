//! The reference evaluator: the verdict for one connection, straight from the
//! NetworkPolicy documentation, and the policy and rule that decided it.
//!
//! Pure; imports only `crate::model` and `policy::selector`. It is the oracle the
//! compiler is property-tested against, and what `explain`/`simulate` print, so it
//! favours being obviously right over being fast. Each quoted sentence comes from the
//! Kubernetes documentation (concepts/services-networking/network-policies and the
//! networking.k8s.io/v1 API reference).
//!
//! Out of scope here: traffic from the pod's own node (allowed by the dataplane by
//! default) and reply traffic (conntrack).

use std::net::IpAddr;

use crate::{
    model::{
        ClusterState, LabelSelector, NamespaceScope, NetworkPolicy, ObjectRef, Peer, Peers, Pod,
        PolicyPort, PortRef, Protocol, Rule,
    },
    policy::{selector::matches, tables::Direction},
};

/// One side of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A pod of the cluster. A reference to a pod the state does not hold is treated
    /// as an address-less endpoint outside the cluster.
    Pod(ObjectRef),
    /// An address; if a (pod-network) pod of the cluster has it, that pod.
    Address(IpAddr),
}

/// A new connection to judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Who opens the connection.
    pub src: Endpoint,
    /// Who it is opened to.
    pub dst: Endpoint,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
}

/// What one side's policies (egress of the source, ingress of the destination) say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideVerdict {
    /// The endpoint is not a pod of the cluster: no policy applies to it.
    NotAPod,
    /// A hostNetwork pod: it uses the node's network and policies never isolate it.
    HostNetwork,
    /// No policy selects the pod for this direction: everything is allowed.
    NotIsolated,
    /// Allowed by this rule (the first allowing one in sorted policy order).
    Allowed {
        /// The policy.
        policy: ObjectRef,
        /// Index of the rule in the policy's ingress or egress list.
        rule_index: usize,
    },
    /// The pod is isolated and no rule of these policies (all that apply) allows it.
    Denied {
        /// Every policy that applies to the pod for this direction.
        isolated_by: Vec<ObjectRef>,
    },
}

impl SideVerdict {
    /// Whether this side lets the connection through.
    pub fn allows(&self) -> bool {
        !matches!(self, SideVerdict::Denied { .. })
    }
}

/// The verdict for a query, with both sides explained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Both sides allow the connection.
    pub allowed: bool,
    /// The source's egress side.
    pub egress: SideVerdict,
    /// The destination's ingress side.
    pub ingress: SideVerdict,
}

/// An endpoint resolved against the state.
#[derive(Clone, Copy, Debug)]
struct Resolved<'a> {
    /// The pod, if the endpoint is one.
    pod: Option<&'a Pod>,
    /// The address the query named, if it named one.
    address: Option<IpAddr>,
}

impl Resolved<'_> {
    /// The endpoint's IPs: the queried address, else all of the pod's IPs.
    fn ips(&self) -> Vec<IpAddr> {
        match (self.address, self.pod) {
            (Some(ip), _) => vec![ip],
            (None, Some(pod)) => pod.ips.clone(),
            (None, None) => Vec::new(),
        }
    }
}

/// Resolves an endpoint: a pod reference to the pod, an address to the pod-network
/// pod that has it (first in sorted order), if any.
fn resolve<'a>(state: &'a ClusterState, endpoint: &Endpoint) -> Resolved<'a> {
    match endpoint {
        Endpoint::Pod(key) => Resolved {
            pod: state.pods.get(key),
            address: None,
        },
        Endpoint::Address(ip) => Resolved {
            pod: state
                .pods
                .values()
                .find(|pod| !pod.host_network && pod.ips.contains(ip)),
            address: Some(*ip),
        },
    }
}

/// The verdict for `query` under the policies of `state`.
pub fn evaluate(state: &ClusterState, query: &Query) -> Verdict {
    let src = resolve(state, &query.src);
    let dst = resolve(state, &query.dst);
    let egress = side_verdict(state, query, Direction::Egress, src, dst);
    let ingress = side_verdict(state, query, Direction::Ingress, dst, src);
    // "For a connection from a source pod to a destination pod to be allowed, both
    // the egress policy on the source pod and the ingress policy on the destination
    // pod need to allow the connection. If either side does not allow the
    // connection, it will not happen."
    Verdict {
        allowed: egress.allows() && ingress.allows(),
        egress,
        ingress,
    }
}

/// The verdict of `local`'s policies for `direction` on traffic with `remote`.
fn side_verdict(
    state: &ClusterState,
    query: &Query,
    direction: Direction,
    local: Resolved<'_>,
    remote: Resolved<'_>,
) -> SideVerdict {
    let Some(pod) = local.pod else {
        return SideVerdict::NotAPod;
    };
    // "The network plugin cannot properly distinguish hostNetwork pod traffic, and
    // so it ignores hostNetwork pods when matching podSelector and
    // namespaceSelector. Traffic to/from hostNetwork pods is treated the same as all
    // other traffic to/from the node IP."
    if pod.host_network {
        return SideVerdict::HostNetwork;
    }
    // "A pod is isolated for ingress if there is any NetworkPolicy that both selects
    // the pod and has "Ingress" in its policyTypes; we say that such a policy applies
    // to the pod for ingress." (Likewise for egress.)
    let applying: Vec<&NetworkPolicy> = state
        .policies
        .values()
        .filter(|policy| applies_to(policy, pod, direction))
        .collect();
    if applying.is_empty() {
        // "By default, a pod is non-isolated for ingress; all inbound connections
        // are allowed." (Likewise for egress.)
        return SideVerdict::NotIsolated;
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
    for policy in &applying {
        let rules = match direction {
            Direction::Ingress => &policy.ingress,
            Direction::Egress => &policy.egress,
        };
        let allowing = rules
            .iter()
            .position(|rule| rule_matches(state, policy, rule, remote, receiver.pod, query));
        if let Some(rule_index) = allowing {
            return SideVerdict::Allowed {
                policy: policy.key.clone(),
                rule_index,
            };
        }
    }
    SideVerdict::Denied {
        isolated_by: applying.iter().map(|policy| policy.key.clone()).collect(),
    }
}

/// Whether `policy` applies to `pod` for `direction`, i.e. isolates it; shared with
/// the compiler so both define isolation alike.
pub(crate) fn applies_to(policy: &NetworkPolicy, pod: &Pod, direction: Direction) -> bool {
    // "podSelector: Each NetworkPolicy includes a podSelector which selects the
    // grouping of pods to which the policy applies. [...] An empty podSelector
    // selects all pods in the namespace." hostNetwork pods are never selected.
    let has_type = match direction {
        Direction::Ingress => policy.policy_types.ingress,
        Direction::Egress => policy.policy_types.egress,
    };
    has_type
        && !pod.host_network
        && policy.key.namespace == pod.key.namespace
        && matches(&policy.pod_selector, &pod.labels)
}

/// Whether `rule` admits traffic with `remote` on the query's protocol and port.
fn rule_matches(
    state: &ClusterState,
    policy: &NetworkPolicy,
    rule: &Rule,
    remote: Resolved<'_>,
    receiver: Option<&Pod>,
    query: &Query,
) -> bool {
    // "Each rule allows traffic which matches both the from and ports sections."
    // from/to: "If this field is empty or missing, this rule matches all sources
    // (traffic not restricted by source). If this field is present and contains at
    // least one item, this rule allows traffic only if the traffic matches at least
    // one item in the from list."
    let peers_match = match &rule.peers {
        Peers::All => true,
        Peers::Only(peers) => peers
            .iter()
            .any(|peer| peer_matches(state, policy, peer, remote)),
    };
    // ports: "If this field is empty or missing, this rule matches all ports
    // (traffic not restricted by port). If this field is present and contains at
    // least one item, then this rule allows traffic only if the traffic matches at
    // least one port in the list."
    let ports_match = rule.ports.is_empty()
        || rule
            .ports
            .iter()
            .any(|port| port_matches(port, receiver, query));
    peers_match && ports_match
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
    }
}

/// Whether a `Peer::Pods` of `policy` matches `pod`: a pod-network pod whose
/// namespace is in scope and whose labels match; shared with the compiler.
pub(crate) fn pod_peer_matches(
    state: &ClusterState,
    policy: &NetworkPolicy,
    namespaces: &NamespaceScope,
    pods: &LabelSelector,
    pod: &Pod,
) -> bool {
    let namespace_matches = match namespaces {
        NamespaceScope::PolicyNamespace => pod.key.namespace == policy.key.namespace,
        NamespaceScope::Matching(selector) => {
            matches(selector, &state.namespace_labels(&pod.key.namespace))
        }
    };
    !pod.host_network && namespace_matches && matches(pods, &pod.labels)
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
        None => true,
        // "endPort indicates that the range of ports from port to endPort if set,
        // inclusive, should be allowed by the policy."
        Some(PortRef::Number(first)) => {
            let last = port.end_port.unwrap_or(*first);
            (*first..=last).contains(&query.port)
        }
        // "port represents the port on the given protocol. This can either be a
        // numerical or named port on a pod." A name resolves on the pod receiving
        // the traffic; one that does not resolve matches nothing.
        Some(PortRef::Name(name)) => receiver.is_some_and(|pod| {
            pod.ports.iter().any(|declared| {
                declared.name.as_deref() == Some(name.as_str())
                    && declared.protocol == query.protocol
                    && declared.port == query.port
            })
        }),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests parse address literals")]
mod tests {
    use super::*;
    use crate::model::{
        builders::{cluster, namespace, netpol, pod, rule, selector},
        Protocol::{Sctp, Tcp, Udp},
    };

    /// prod (team=a): web, db, client, a hostNetwork pod; dev (team=b): client, tool.
    #[rustfmt::skip]
    fn base() -> crate::model::builders::ClusterBuilder {
        cluster()
            .namespace(namespace("prod").labels([("team", "a")]).build())
            .namespace(namespace("dev").labels([("team", "b")]).build())
            .pod(pod("prod", "web").labels([("app", "web")]).ip("10.0.0.1").named_port("http", 8080, Tcp).build())
            .pod(pod("prod", "db").labels([("app", "db")]).ip("10.0.0.2").build())
            .pod(pod("prod", "client").labels([("app", "client")]).ip("10.0.0.3").build())
            .pod(pod("prod", "host").labels([("app", "client")]).ip("192.168.0.10").host_network().build())
            .pod(pod("dev", "client").labels([("app", "client")]).ip("10.0.1.3").build())
            .pod(pod("dev", "tool").labels([("app", "tool")]).ip("10.0.1.4").build())
    }

    /// `ns/name` is a pod, anything else an address.
    fn endpoint(text: &str) -> Endpoint {
        match text.split_once('/') {
            Some((ns, name)) => Endpoint::Pod(ObjectRef::new(ns, name)),
            None => Endpoint::Address(text.parse().unwrap()),
        }
    }

    fn query(src: &str, dst: &str, protocol: Protocol, port: u16) -> Query {
        Query {
            src: endpoint(src),
            dst: endpoint(dst),
            protocol,
            port,
        }
    }

    fn sel(key: &str, value: &str) -> crate::model::LabelSelector {
        selector().label(key, value).build()
    }

    type Probe = (&'static str, &'static str, Protocol, u16, bool);

    #[test]
    #[rustfmt::skip]
    fn verdicts_follow_the_network_policy_semantics() {
        let web = || netpol("prod", "web").select(sel("app", "web"));
        let cases: Vec<(&str, Vec<NetworkPolicy>, Vec<Probe>)> = vec![
            ("no_policy_allows_everything", vec![],
             vec![("prod/client", "prod/web", Tcp, 80, true), ("dev/tool", "8.8.8.8", Udp, 53, true)]),
            ("default_deny_ingress_isolates_only_selected_pods", vec![web().build()],
             vec![("prod/client", "prod/web", Tcp, 80, false), ("prod/client", "prod/db", Tcp, 80, true),
                  ("prod/web", "prod/db", Tcp, 80, true)]),
            ("default_deny_egress_blocks_only_outgoing_traffic", vec![netpol("prod", "deny").types(false, true).build()],
             vec![("prod/client", "dev/tool", Tcp, 80, false), ("prod/client", "8.8.8.8", Tcp, 443, false),
                  ("dev/tool", "prod/client", Tcp, 80, true)]),
            ("policies_in_other_namespaces_do_not_isolate", vec![netpol("dev", "deny").types(true, true).build()],
             vec![("prod/client", "prod/web", Tcp, 80, true)]),
            ("pod_selector_admits_matching_pods_of_the_same_namespace", vec![web().ingress(rule().from_pods(sel("app", "client")).build()).build()],
             vec![("prod/client", "prod/web", Tcp, 80, true), ("dev/client", "prod/web", Tcp, 80, false),
                  ("prod/db", "prod/web", Tcp, 80, false)]),
            ("namespace_selector_admits_every_pod_of_matching_namespaces", vec![web().ingress(rule().from_namespaces(sel("team", "b")).build()).build()],
             vec![("dev/tool", "prod/web", Tcp, 80, true), ("dev/client", "prod/web", Tcp, 80, true),
                  ("prod/client", "prod/web", Tcp, 80, false)]),
            ("empty_namespace_selector_admits_pods_of_all_namespaces_but_not_addresses", vec![web().ingress(rule().from_namespaces(selector().build()).build()).build()],
             vec![("dev/tool", "prod/web", Tcp, 80, true), ("prod/db", "prod/web", Tcp, 80, true),
                  ("8.8.8.8", "prod/web", Tcp, 80, false)]),
            ("namespace_name_label_selects_a_namespace_by_name", vec![web().ingress(rule().from_namespaces(sel("kubernetes.io/metadata.name", "dev")).build()).build()],
             vec![("dev/tool", "prod/web", Tcp, 80, true), ("prod/db", "prod/web", Tcp, 80, false)]),
            ("pod_and_namespace_selector_in_one_peer_are_anded", vec![web().ingress(rule().from_pods_in_namespaces(sel("app", "client"), sel("team", "b")).build()).build()],
             vec![("dev/client", "prod/web", Tcp, 80, true), ("dev/tool", "prod/web", Tcp, 80, false),
                  ("prod/client", "prod/web", Tcp, 80, false)]),
            ("pod_and_namespace_selectors_in_two_peers_are_ored", vec![web().ingress(rule().from_pods(sel("app", "client")).from_namespaces(sel("team", "b")).build()).build()],
             vec![("dev/tool", "prod/web", Tcp, 80, true), ("prod/client", "prod/web", Tcp, 80, true),
                  ("prod/db", "prod/web", Tcp, 80, false)]),
            ("a_port_admits_only_that_protocol_and_port", vec![web().ingress(rule().port(80, Tcp).build()).build()],
             vec![("prod/client", "prod/web", Tcp, 80, true), ("prod/client", "prod/web", Tcp, 81, false),
                  ("prod/client", "prod/web", Udp, 80, false)]),
            ("a_protocol_without_port_admits_all_its_ports", vec![web().ingress(rule().protocol(Udp).build()).build()],
             vec![("prod/client", "prod/web", Udp, 53, true), ("prod/client", "prod/web", Tcp, 53, false)]),
            ("a_rule_without_ports_admits_every_protocol", vec![web().ingress(rule().from_pods(sel("app", "client")).build()).build()],
             vec![("prod/client", "prod/web", Sctp, 9, true), ("prod/client", "prod/web", Udp, 9, true)]),
            ("peers_and_ports_of_one_rule_must_both_match", vec![web().ingress(rule().from_pods(sel("app", "client")).port(80, Tcp).build()).build()],
             vec![("prod/client", "prod/web", Tcp, 80, true), ("prod/db", "prod/web", Tcp, 80, false),
                  ("prod/client", "prod/web", Tcp, 443, false)]),
            ("two_policies_add_up", vec![web().ingress(rule().from_pods(sel("app", "client")).port(80, Tcp).build()).build(),
                                         netpol("prod", "web-db").select(sel("app", "web")).ingress(rule().from_pods(sel("app", "db")).port(5432, Tcp).build()).build()],
             vec![("prod/client", "prod/web", Tcp, 80, true), ("prod/db", "prod/web", Tcp, 5432, true),
                  ("prod/db", "prod/web", Tcp, 80, false), ("prod/client", "prod/web", Tcp, 5432, false)]),
            ("egress_of_the_client_and_ingress_of_the_server_are_both_required",
             vec![web().ingress(rule().from_pods(sel("app", "client")).build()).build(),
                  netpol("prod", "client").select(sel("app", "client")).egress(rule().to_pods(sel("app", "db")).build()).build()],
             vec![("prod/client", "prod/web", Tcp, 80, false), ("prod/client", "prod/db", Tcp, 80, true),
                  ("dev/client", "prod/web", Tcp, 80, false), ("prod/db", "prod/web", Tcp, 80, false)]),
            ("ingress_rules_are_ignored_without_the_ingress_type", vec![web().ingress(rule().build()).types(false, true).build()],
             vec![("prod/client", "prod/web", Tcp, 80, true), ("prod/web", "prod/db", Tcp, 80, false)]),
            ("egress_rules_are_ignored_without_the_egress_type", vec![web().egress(rule().to_pods(sel("app", "db")).build()).types(true, false).build()],
             vec![("prod/web", "dev/tool", Tcp, 80, true), ("prod/client", "prod/web", Tcp, 80, false)]),
            ("addresses_outside_the_cluster_match_only_rules_without_peers_or_ip_blocks",
             vec![web().ingress(rule().from_pods(sel("app", "client")).build()).ingress(rule().port(443, Tcp).build()).build()],
             vec![("8.8.8.8", "prod/web", Tcp, 80, false), ("8.8.8.8", "prod/web", Tcp, 443, true)]),
            ("an_address_of_a_pod_is_that_pod", vec![web().ingress(rule().from_pods(sel("app", "client")).build()).build()],
             vec![("10.0.0.3", "prod/web", Tcp, 80, true), ("10.0.0.2", "prod/web", Tcp, 80, false),
                  ("10.0.0.3", "10.0.0.1", Tcp, 80, true), ("10.0.0.2", "10.0.0.1", Tcp, 80, false)]),
            ("host_network_pods_are_never_matched_by_pod_selectors", vec![web().ingress(rule().from_namespaces(selector().build()).build()).build()],
             vec![("prod/host", "prod/web", Tcp, 80, false), ("192.168.0.10", "prod/web", Tcp, 80, false)]),
            ("host_network_pods_are_never_isolated", vec![netpol("prod", "deny").types(true, true).build()],
             vec![("dev/tool", "prod/host", Tcp, 80, true), ("prod/host", "dev/tool", Tcp, 80, true),
                  ("dev/tool", "prod/web", Tcp, 80, false)]),
            ("ingress_named_ports_resolve_on_the_selected_pod", vec![netpol("prod", "http").ingress(rule().named_port("http", Tcp).build()).build()],
             vec![("prod/client", "prod/web", Tcp, 8080, true), ("prod/client", "prod/web", Tcp, 80, false),
                  ("prod/client", "prod/web", Udp, 8080, false), ("prod/client", "prod/db", Tcp, 8080, false)]),
            ("an_unknown_port_name_matches_nothing", vec![web().ingress(rule().named_port("metrics", Tcp).build()).build()],
             vec![("prod/client", "prod/web", Tcp, 8080, false)]),
            ("egress_named_ports_resolve_on_the_destination_pod", vec![netpol("prod", "out").select(sel("app", "client")).egress(rule().named_port("http", Tcp).build()).build()],
             vec![("prod/client", "prod/web", Tcp, 8080, true), ("prod/client", "prod/db", Tcp, 8080, false),
                  ("prod/client", "8.8.8.8", Tcp, 8080, false)]),
            ("end_port_admits_an_inclusive_range", vec![web().ingress(rule().port_range(8000, 8100, Tcp).build()).build()],
             vec![("prod/client", "prod/web", Tcp, 8000, true), ("prod/client", "prod/web", Tcp, 8100, true),
                  ("prod/client", "prod/web", Tcp, 7999, false), ("prod/client", "prod/web", Tcp, 8101, false)]),
            ("ip_block_admits_its_cidr_minus_the_excepts", vec![web().ingress(rule().from_ip_block("10.0.0.0/16", ["10.0.1.0/24"]).build()).build()],
             vec![("prod/client", "prod/web", Tcp, 80, true), ("dev/client", "prod/web", Tcp, 80, false),
                  ("10.0.200.1", "prod/web", Tcp, 80, true), ("10.0.1.200", "prod/web", Tcp, 80, false),
                  ("8.8.8.8", "prod/web", Tcp, 80, false)]),
            ("egress_ip_block_applies_to_the_destination", vec![netpol("prod", "out").egress(rule().to_ip_block("0.0.0.0/0", ["10.0.0.0/8"]).build()).build()],
             vec![("prod/client", "8.8.8.8", Tcp, 443, true), ("prod/client", "dev/tool", Tcp, 443, false)]),
        ];
        for (name, policies, probes) in cases {
            let state = policies.into_iter().fold(base(), |c, p| c.policy(p)).build();
            for (src, dst, protocol, port, allowed) in probes {
                let verdict = evaluate(&state, &query(src, dst, protocol, port));
                assert_eq!(verdict.allowed, allowed, "{name}: {src} -> {dst} {protocol}/{port}: {verdict:?}");
            }
        }
    }

    #[test]
    fn the_first_allowing_rule_in_sorted_policy_order_explains_the_verdict() {
        let allow = |name: &str| {
            netpol("prod", name)
                .ingress(rule().port(1, Tcp).build())
                .ingress(rule().build())
                .build()
        };
        let state = base().policy(allow("b")).policy(allow("a")).build();
        let verdict = evaluate(&state, &query("prod/client", "prod/web", Tcp, 80));
        let expected = SideVerdict::Allowed {
            policy: ObjectRef::new("prod", "a"),
            rule_index: 1,
        };
        assert_eq!(
            verdict,
            Verdict {
                allowed: true,
                egress: SideVerdict::NotIsolated,
                ingress: expected
            }
        );
    }

    #[test]
    fn a_denied_side_names_every_policy_that_isolates_it() {
        let deny = |name: &str| netpol("prod", name).select(sel("app", "web")).build();
        let state = base().policy(deny("b")).policy(deny("a")).build();
        let verdict = evaluate(&state, &query("8.8.8.8", "prod/web", Tcp, 80));
        let isolated_by = vec![ObjectRef::new("prod", "a"), ObjectRef::new("prod", "b")];
        assert_eq!(
            verdict,
            Verdict {
                allowed: false,
                egress: SideVerdict::NotAPod,
                ingress: SideVerdict::Denied { isolated_by }
            }
        );
    }

    #[test]
    fn host_network_pods_and_unknown_pods_are_explained() {
        let state = base().build();
        let verdict = evaluate(&state, &query("prod/host", "prod/gone", Tcp, 80));
        assert_eq!(
            (verdict.egress, verdict.ingress),
            (SideVerdict::HostNetwork, SideVerdict::NotAPod)
        );
    }
}
