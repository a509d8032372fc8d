//! Builders for ClusterNetworkPolicies and nodes:
//! `cnp("guardrails", Tier::Admin, 10).subject_namespaces(selector().build())
//! .ingress(cluster_rule(RuleAction::Deny).namespaces(selector().build()).build())`.

use crate::model::{
    ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, ClusterSubject, LabelSelector,
    NamespacedPods, Node, PolicyMode, Protocol, RuleAction, Tier,
};

use super::{labels, parse_ip, parse_net};

/// Starts a ClusterNetworkPolicy `name` of `tier` at `priority`, whose subject
/// is every namespace, without rules, enforced.
pub fn cnp(name: &str, tier: Tier, priority: u16) -> CnpBuilder {
    CnpBuilder(ClusterNetworkPolicy {
        name: name.to_string(),
        tier,
        priority,
        subject: ClusterSubject::Namespaces(LabelSelector::default()),
        ingress: Vec::new(),
        egress: Vec::new(),
        mode: PolicyMode::Enforce,
    })
}

/// Builds a `ClusterNetworkPolicy`; see `cnp`.
#[derive(Clone, Debug)]
pub struct CnpBuilder(ClusterNetworkPolicy);

impl CnpBuilder {
    /// `subject.namespaces`: every pod of the matching namespaces.
    pub fn subject_namespaces(mut self, namespaces: LabelSelector) -> Self {
        self.0.subject = ClusterSubject::Namespaces(namespaces);
        self
    }

    /// `subject.pods`: the matching pods of the matching namespaces.
    pub fn subject_pods(mut self, namespaces: LabelSelector, pods: LabelSelector) -> Self {
        self.0.subject = ClusterSubject::Pods(NamespacedPods { namespaces, pods });
        self
    }

    /// Sets the subject as given (an invalid one, say).
    pub fn subject(mut self, subject: ClusterSubject) -> Self {
        self.0.subject = subject;
        self
    }

    /// Adds an ingress rule.
    pub fn ingress(mut self, rule: ClusterRule) -> Self {
        self.0.ingress.push(rule);
        self
    }

    /// Adds an egress rule.
    pub fn egress(mut self, rule: ClusterRule) -> Self {
        self.0.egress.push(rule);
        self
    }

    /// Puts the policy in audit mode (annotation `podwall.io/mode: audit`).
    pub fn audit(mut self) -> Self {
        self.0.mode = PolicyMode::Audit;
        self
    }

    /// The policy.
    pub fn build(self) -> ClusterNetworkPolicy {
        self.0
    }
}

/// Starts an unnamed rule that does `action`, with no peers (add one: a rule
/// without peers fails closed) and no protocols (every protocol and port).
pub fn cluster_rule(action: RuleAction) -> ClusterRuleBuilder {
    ClusterRuleBuilder(ClusterRule {
        name: String::new(),
        action,
        peers: Vec::new(),
        ports: Vec::new(),
    })
}

/// Builds a `ClusterRule`; see `cluster_rule`.
#[derive(Clone, Debug)]
pub struct ClusterRuleBuilder(ClusterRule);

impl ClusterRuleBuilder {
    /// Sets `name`.
    pub fn name(mut self, name: &str) -> Self {
        self.0.name = name.to_string();
        self
    }

    /// Adds a peer as given.
    pub fn peer(mut self, peer: ClusterPeer) -> Self {
        self.0.peers.push(peer);
        self
    }

    /// Adds a `namespaces` peer.
    pub fn namespaces(self, namespaces: LabelSelector) -> Self {
        self.peer(ClusterPeer::Namespaces(namespaces))
    }

    /// Adds a `pods` peer.
    pub fn pods(self, namespaces: LabelSelector, pods: LabelSelector) -> Self {
        self.peer(ClusterPeer::Pods(NamespacedPods { namespaces, pods }))
    }

    /// Adds a `networks` peer. Panics if a CIDR does not parse.
    pub fn networks<'a>(self, cidrs: impl IntoIterator<Item = &'a str>) -> Self {
        let networks = cidrs.into_iter().map(parse_net).collect();
        self.peer(ClusterPeer::Networks(networks))
    }

    /// Adds a `nodes` peer.
    pub fn nodes(self, nodes: LabelSelector) -> Self {
        self.peer(ClusterPeer::Nodes(nodes))
    }

    /// Adds a peer the API server would have rejected.
    pub fn invalid_peer(self, field: &str, reason: &str) -> Self {
        self.peer(ClusterPeer::Invalid {
            field: field.to_string(),
            reason: reason.to_string(),
        })
    }

    /// Adds a `destinationPort.number`.
    pub fn port(self, port: u16, protocol: Protocol) -> Self {
        self.port_range(port, port, protocol)
    }

    /// Adds a `destinationPort.range`.
    pub fn port_range(mut self, first: u16, last: u16, protocol: Protocol) -> Self {
        self.0.ports.push(ClusterPort::Ports {
            protocol,
            first,
            last,
        });
        self
    }

    /// Adds a `destinationNamedPort`.
    pub fn named_port(mut self, name: &str) -> Self {
        self.0.ports.push(ClusterPort::Named(name.to_string()));
        self
    }

    /// The rule.
    pub fn build(self) -> ClusterRule {
        self.0
    }
}

/// A node `name` with `ips` and labels `pairs`. Panics if an address does not
/// parse.
pub fn node<'a>(
    name: &str,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ips: impl IntoIterator<Item = &'a str>,
) -> Node {
    let mut ips: Vec<_> = ips.into_iter().map(parse_ip).collect();
    ips.sort();
    ips.dedup();
    Node {
        name: name.to_string(),
        labels: labels(pairs),
        ips,
    }
}
