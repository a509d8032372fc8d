//! Small builders for model objects, so tests read like the manifests they stand for:
//! `pod("prod", "web-1").labels([("app", "web")]).ip("10.0.0.5").build()`.
//!
//! Used by unit tests and integration tests; imports only `crate::model` and `ipnet`.
//! The builders panic on malformed literals (an IP or CIDR that does not parse),
//! since they are meant for hand-written test data only.

mod cluster_policy;

use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    ClusterState, ContainerPort, LabelSelector, Labels, Namespace, NamespaceScope, NetworkPolicy,
    ObjectRef, Peer, Peers, Pod, PolicyMode, PolicyPort, PolicyTypes, PortRef, Protocol, Rule,
    SelectorOperator, SelectorRequirement, Service, ServicePort, NAMESPACE_NAME_LABEL,
};
use crate::model::{ClusterNetworkPolicy, Node};
pub use cluster_policy::{cluster_rule, cnp, node, ClusterRuleBuilder, CnpBuilder};

/// Labels from `(key, value)` pairs.
pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Parses an IP literal.
///
/// # Panics
/// When `text` is not an IP address: test data is wrong and should fail loudly.
fn parse_ip(text: &str) -> IpAddr {
    match text.parse() {
        Ok(ip) => ip,
        Err(err) => panic!("builder: {text:?} is not an IP address: {err}"),
    }
}

/// Parses a CIDR literal.
///
/// # Panics
/// When `text` is not a CIDR.
fn parse_net(text: &str) -> IpNet {
    match text.parse() {
        Ok(net) => net,
        Err(err) => panic!("builder: {text:?} is not a CIDR: {err}"),
    }
}

/// Starts a pod `namespace/name`: no labels, no IPs, not scheduled, pod network.
pub fn pod(namespace: &str, name: &str) -> PodBuilder {
    PodBuilder(Pod {
        key: ObjectRef::new(namespace, name),
        labels: Labels::new(),
        ips: Vec::new(),
        node_name: None,
        host_network: false,
        finished: false,
        ports: Vec::new(),
    })
}

/// Builds a `Pod`; see `pod`.
#[derive(Clone, Debug)]
pub struct PodBuilder(Pod);

impl PodBuilder {
    /// Adds labels.
    pub fn labels<'a>(mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.0.labels.extend(labels(pairs));
        self
    }

    /// Adds one IP address (`"10.0.0.5"` or `"fd00::5"`). Panics if it does not parse.
    pub fn ip(mut self, ip: &str) -> Self {
        self.0.ips.push(parse_ip(ip));
        self
    }

    /// Sets `spec.nodeName`.
    pub fn node(mut self, node: &str) -> Self {
        self.0.node_name = Some(node.to_string());
        self
    }

    /// Sets `spec.hostNetwork: true`.
    pub fn host_network(mut self) -> Self {
        self.0.host_network = true;
        self
    }

    /// Declares an unnamed container port.
    pub fn port(mut self, port: u16, protocol: Protocol) -> Self {
        self.0.ports.push(ContainerPort {
            name: None,
            port,
            protocol,
        });
        self
    }

    /// Declares a named container port, which policies can refer to by name.
    pub fn named_port(mut self, name: &str, port: u16, protocol: Protocol) -> Self {
        self.0.ports.push(ContainerPort {
            name: Some(name.to_string()),
            port,
            protocol,
        });
        self
    }

    /// The pod.
    pub fn build(self) -> Pod {
        self.0
    }
}

/// Starts a namespace with only the `kubernetes.io/metadata.name` label.
pub fn namespace(name: &str) -> NamespaceBuilder {
    NamespaceBuilder(Namespace::implicit(name))
}

/// Builds a `Namespace`; see `namespace`.
#[derive(Clone, Debug)]
pub struct NamespaceBuilder(Namespace);

impl NamespaceBuilder {
    /// Adds labels (the name label stays, as the API server enforces it).
    pub fn labels<'a>(mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.0.labels.extend(labels(pairs));
        let name = self.0.name.clone();
        self.0.labels.insert(NAMESPACE_NAME_LABEL.to_string(), name);
        self
    }

    /// Lets its pods send encapsulated traffic (`podwall.io/allow-tunnels: "true"`).
    pub fn allow_tunnels(mut self) -> Self {
        self.0.allow_tunnels = true;
        self
    }

    /// The namespace.
    pub fn build(self) -> Namespace {
        self.0
    }
}

/// Starts an empty label selector (which selects everything).
pub fn selector() -> SelectorBuilder {
    SelectorBuilder(LabelSelector::default())
}

/// Builds a `LabelSelector`; see `selector`.
#[derive(Clone, Debug)]
pub struct SelectorBuilder(LabelSelector);

impl SelectorBuilder {
    /// Adds a `matchLabels` pair.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0
            .match_labels
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Adds a `matchExpressions` entry; pass no values (`[""; 0]`) for
    /// Exists/DoesNotExist.
    pub fn expr<'a>(
        mut self,
        key: &str,
        operator: SelectorOperator,
        values: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        self.0.match_expressions.push(SelectorRequirement {
            key: key.to_string(),
            operator,
            values: values.into_iter().map(str::to_string).collect(),
        });
        self
    }

    /// The selector.
    pub fn build(self) -> LabelSelector {
        self.0
    }
}

/// Starts a rule with no peers (= every peer) and no ports (= every port).
pub fn rule() -> RuleBuilder {
    RuleBuilder {
        peers: Vec::new(),
        ports: Vec::new(),
    }
}

/// Builds an ingress or egress `Rule`; see `rule`. `from_*` and `to_*` are the same
/// peers, named for the direction the rule is used in.
#[derive(Clone, Debug)]
pub struct RuleBuilder {
    peers: Vec<Peer>,
    ports: Vec<PolicyPort>,
}

impl RuleBuilder {
    /// Adds a peer as is.
    pub fn peer(mut self, peer: Peer) -> Self {
        self.peers.push(peer);
        self
    }

    /// Adds a `podSelector`-only peer: matching pods of the policy's namespace.
    pub fn from_pods(self, pods: LabelSelector) -> Self {
        self.peer(Peer::Pods {
            namespaces: NamespaceScope::PolicyNamespace,
            pods,
        })
    }

    /// Adds a `namespaceSelector`-only peer: every pod of matching namespaces.
    pub fn from_namespaces(self, namespaces: LabelSelector) -> Self {
        self.from_pods_in_namespaces(LabelSelector::default(), namespaces)
    }

    /// Adds one peer with both selectors: matching pods in matching namespaces.
    pub fn from_pods_in_namespaces(self, pods: LabelSelector, namespaces: LabelSelector) -> Self {
        self.peer(Peer::Pods {
            namespaces: NamespaceScope::Matching(namespaces),
            pods,
        })
    }

    /// Adds an `ipBlock` peer. Panics if a CIDR does not parse.
    pub fn from_ip_block<'a>(self, cidr: &str, except: impl IntoIterator<Item = &'a str>) -> Self {
        self.peer(Peer::IpBlock {
            cidr: parse_net(cidr),
            except: except.into_iter().map(parse_net).collect(),
        })
    }

    /// Adds a peer the API server would have rejected (`Peer::Invalid`): it matches
    /// nothing. `field` is the path of the offending field.
    pub fn invalid_peer(self, field: &str, reason: &str) -> Self {
        self.peer(Peer::Invalid {
            field: field.to_string(),
            reason: reason.to_string(),
        })
    }

    /// Same as `from_pods`, for egress rules.
    pub fn to_pods(self, pods: LabelSelector) -> Self {
        self.from_pods(pods)
    }

    /// Same as `from_namespaces`, for egress rules.
    pub fn to_namespaces(self, namespaces: LabelSelector) -> Self {
        self.from_namespaces(namespaces)
    }

    /// Same as `from_pods_in_namespaces`, for egress rules.
    pub fn to_pods_in_namespaces(self, pods: LabelSelector, namespaces: LabelSelector) -> Self {
        self.from_pods_in_namespaces(pods, namespaces)
    }

    /// Same as `from_ip_block`, for egress rules.
    pub fn to_ip_block<'a>(self, cidr: &str, except: impl IntoIterator<Item = &'a str>) -> Self {
        self.from_ip_block(cidr, except)
    }

    /// Adds a numeric port.
    pub fn port(self, port: u16, protocol: Protocol) -> Self {
        self.policy_port(protocol, Some(PortRef::Number(port)), None)
    }

    /// Adds a numeric port range `port..=end_port` (`endPort`).
    pub fn port_range(self, port: u16, end_port: u16, protocol: Protocol) -> Self {
        self.policy_port(protocol, Some(PortRef::Number(port)), Some(end_port))
    }

    /// Adds a named port, resolved on the pod receiving the traffic.
    pub fn named_port(self, name: &str, protocol: Protocol) -> Self {
        self.policy_port(protocol, Some(PortRef::Name(name.to_string())), None)
    }

    /// Adds a `ports` entry as is, e.g. an `endPort` with a named or absent port.
    pub fn port_entry(mut self, port: PolicyPort) -> Self {
        self.ports.push(port);
        self
    }

    /// Adds every port of one protocol (a ports entry with only `protocol`).
    pub fn protocol(self, protocol: Protocol) -> Self {
        self.policy_port(protocol, None, None)
    }

    fn policy_port(mut self, protocol: Protocol, port: Option<PortRef>, end: Option<u16>) -> Self {
        self.ports.push(PolicyPort {
            protocol,
            port,
            end_port: end,
        });
        self
    }

    /// The rule; no peers added means `Peers::All`.
    pub fn build(self) -> Rule {
        Rule {
            peers: if self.peers.is_empty() {
                Peers::All
            } else {
                Peers::Only(self.peers)
            },
            ports: self.ports,
        }
    }
}

/// Starts a NetworkPolicy `namespace/name` selecting every pod of its namespace.
pub fn netpol(namespace: &str, name: &str) -> NetpolBuilder {
    NetpolBuilder {
        policy: NetworkPolicy {
            key: ObjectRef::new(namespace, name),
            pod_selector: LabelSelector::default(),
            policy_types: PolicyTypes::default(),
            ingress: Vec::new(),
            egress: Vec::new(),
            mode: PolicyMode::Enforce,
        },
        types: None,
    }
}

/// Builds a `NetworkPolicy`; see `netpol`.
#[derive(Clone, Debug)]
pub struct NetpolBuilder {
    policy: NetworkPolicy,
    types: Option<PolicyTypes>,
}

impl NetpolBuilder {
    /// Sets `spec.podSelector`.
    pub fn select(mut self, pods: LabelSelector) -> Self {
        self.policy.pod_selector = pods;
        self
    }

    /// Adds an ingress rule.
    pub fn ingress(mut self, rule: Rule) -> Self {
        self.policy.ingress.push(rule);
        self
    }

    /// Adds an egress rule.
    pub fn egress(mut self, rule: Rule) -> Self {
        self.policy.egress.push(rule);
        self
    }

    /// Sets `policyTypes` explicitly (e.g. `types(false, true)` for deny-all egress).
    pub fn types(mut self, ingress: bool, egress: bool) -> Self {
        self.types = Some(PolicyTypes { ingress, egress });
        self
    }

    /// Puts the policy in audit mode (annotation `podwall.io/mode: audit`).
    pub fn audit(self) -> Self {
        self.mode(PolicyMode::Audit)
    }

    /// Sets the policy's mode.
    pub fn mode(mut self, mode: PolicyMode) -> Self {
        self.policy.mode = mode;
        self
    }

    /// The policy; without `types`, defaulted as the API server does: Ingress, plus
    /// Egress iff there are egress rules.
    pub fn build(mut self) -> NetworkPolicy {
        self.policy.policy_types = self.types.unwrap_or(PolicyTypes {
            ingress: true,
            egress: !self.policy.egress.is_empty(),
        });
        self.policy
    }
}

/// Starts a Service `namespace/name`: no selector, no ClusterIP, no ports.
pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder(Service {
        key: ObjectRef::new(namespace, name),
        selector: None,
        cluster_ip: None,
        extra_ips: Vec::new(),
        ports: Vec::new(),
    })
}

/// Builds a `Service`; see `service`.
#[derive(Clone, Debug)]
pub struct ServiceBuilder(Service);

impl ServiceBuilder {
    /// Sets `spec.selector`.
    pub fn selector<'a>(mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.0.selector = Some(labels(pairs));
        self
    }

    /// Sets `spec.clusterIP`. Panics if it does not parse.
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.0.cluster_ip = Some(parse_ip(ip));
        self
    }

    /// Adds an address kube-proxy also translates (`Service::extra_ips`). Panics if
    /// it does not parse.
    pub fn extra_ip(mut self, ip: &str) -> Self {
        self.0.extra_ips.push(parse_ip(ip));
        self.0.extra_ips.sort();
        self.0.extra_ips.dedup();
        self
    }

    /// Adds a port forwarding `port` to `target` on the backends.
    pub fn port(mut self, port: u16, target: PortRef, protocol: Protocol) -> Self {
        self.0.ports.push(ServicePort {
            name: None,
            port,
            target_port: target,
            protocol,
        });
        self
    }

    /// The Service.
    pub fn build(self) -> Service {
        self.0
    }
}

/// Starts an empty cluster.
pub fn cluster() -> ClusterBuilder {
    ClusterBuilder(ClusterState::default())
}

/// Builds a `ClusterState`; see `cluster`.
#[derive(Clone, Debug)]
pub struct ClusterBuilder(ClusterState);

impl ClusterBuilder {
    /// Adds (or replaces) a namespace.
    pub fn namespace(mut self, namespace: Namespace) -> Self {
        self.0.namespaces.insert(namespace.name.clone(), namespace);
        self
    }

    /// Adds (or replaces) a pod.
    pub fn pod(mut self, pod: Pod) -> Self {
        self.0.pods.insert(pod.key.clone(), pod);
        self
    }

    /// Adds (or replaces) a NetworkPolicy.
    pub fn policy(mut self, policy: NetworkPolicy) -> Self {
        self.0.policies.insert(policy.key.clone(), policy);
        self
    }

    /// Adds (or replaces) a Service.
    pub fn service(mut self, service: Service) -> Self {
        self.0.services.insert(service.key.clone(), service);
        self
    }

    /// Adds (or replaces) a ClusterNetworkPolicy.
    pub fn cluster_policy(mut self, policy: ClusterNetworkPolicy) -> Self {
        self.0.cluster_policies.insert(policy.name.clone(), policy);
        self
    }

    /// Adds (or replaces) a node.
    pub fn node(mut self, node: Node) -> Self {
        self.0.nodes.insert(node.name.clone(), node);
        self
    }

    /// The state, with an implicit Namespace for every namespace used but not added.
    pub fn build(mut self) -> ClusterState {
        self.0.add_implicit_namespaces();
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netpol_defaults_policy_types_like_the_api_server() {
        let ingress_only = netpol("a", "p").ingress(rule().build()).build();
        assert_eq!(
            ingress_only.policy_types,
            PolicyTypes {
                ingress: true,
                egress: false
            }
        );
        let with_egress = netpol("a", "p").egress(rule().build()).build();
        assert_eq!(
            with_egress.policy_types,
            PolicyTypes {
                ingress: true,
                egress: true
            }
        );
        let deny_egress = netpol("a", "p").types(false, true).build();
        assert_eq!(
            deny_egress.policy_types,
            PolicyTypes {
                ingress: false,
                egress: true
            }
        );
    }

    #[test]
    fn netpol_enforces_unless_put_in_audit() {
        assert_eq!(netpol("a", "p").build().mode, PolicyMode::Enforce);
        assert_eq!(netpol("a", "p").audit().build().mode, PolicyMode::Audit);
    }

    #[test]
    fn every_policy_in_audit_changes_the_mode_and_nothing_else() {
        let enforced = netpol("a", "p").ingress(rule().build()).build();
        let state = cluster()
            .pod(pod("a", "x").ip("10.0.0.1").build())
            .policy(enforced.clone())
            .policy(netpol("a", "q").audit().build())
            .build();
        let audited = state.clone().with_every_policy_in_audit();
        assert!(audited
            .policies
            .values()
            .all(|policy| policy.mode == PolicyMode::Audit));
        let key = ObjectRef::new("a", "p");
        assert_eq!(
            audited.policies[&key],
            NetworkPolicy {
                mode: PolicyMode::Audit,
                ..enforced
            }
        );
        assert_eq!(audited.pods, state.pods);
        assert_eq!(audited.namespaces, state.namespaces);
    }

    #[test]
    fn rule_without_peers_admits_every_peer() {
        assert_eq!(rule().build().peers, Peers::All);
        let one = rule()
            .from_pods(selector().label("app", "web").build())
            .build();
        assert!(matches!(one.peers, Peers::Only(ref peers) if peers.len() == 1));
    }

    #[test]
    fn namespace_keeps_its_name_label() {
        let ns = namespace("prod").labels([("team", "a")]).build();
        assert_eq!(
            ns.labels,
            labels([(NAMESPACE_NAME_LABEL, "prod"), ("team", "a")])
        );
    }

    #[test]
    fn cluster_adds_implicit_namespaces() {
        let state = cluster().pod(pod("a", "x").ip("10.0.0.1").build()).build();
        assert_eq!(state.namespaces.get("a"), Some(&Namespace::implicit("a")));
        assert_eq!(
            state.pods[&ObjectRef::new("a", "x")].ips,
            vec![parse_ip("10.0.0.1")]
        );
    }
}
