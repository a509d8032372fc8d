//! Owned, normalized cluster objects: what every later stage reads.
//!
//! Sources (`source::*`) are the only producers; nothing here knows about
//! k8s-openapi, YAML or the kernel. Defaults the API server would apply (policyTypes,
//! the `kubernetes.io/metadata.name` namespace label, protocol TCP) are already
//! applied, so downstream code never re-derives them.

#[cfg(any(test, feature = "testing"))]
pub mod builders;
mod cluster_policy;
mod labels;
mod policy;

use std::{collections::BTreeSet, fmt, net::IpAddr};

use imbl::ordmap::DiffItem;

pub use cluster_policy::{
    ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, ClusterSubject, NamespacedPods,
    RuleAction, Tier, MAX_CLUSTER_PRIORITY, MAX_CLUSTER_RULES, MAX_CLUSTER_RULE_ITEMS,
    MAX_CLUSTER_RULE_NAME,
};
pub use labels::Labels;
pub use policy::{
    LabelSelector, NamespaceScope, NetworkPolicy, Peer, Peers, PolicyMode, PolicyPort, PolicyTypes,
    PortRef, Rule, SelectorOperator, SelectorRequirement,
};

/// Label key the API server sets on every namespace to its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectRef {
    /// Namespace the object lives in.
    pub namespace: String,
    /// Object name, unique within its namespace and kind.
    pub name: String,
}

impl ObjectRef {
    /// Builds a reference from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl ObjectRef {
    /// A cluster-scoped object (a ClusterNetworkPolicy): no namespace.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self::new("", name)
    }

    /// Whether the object is cluster-scoped (`ObjectRef::cluster`).
    pub fn is_cluster_scoped(&self) -> bool {
        self.namespace.is_empty()
    }
}

impl fmt::Display for ObjectRef {
    /// `namespace/name`, or the name alone for a cluster-scoped object.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_cluster_scoped() {
            return f.write_str(&self.name);
        }
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Transport protocols NetworkPolicy ports can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// SCTP (IP protocol 132).
    Sctp,
}

impl Protocol {
    /// The IP protocol number, as the datapath sees it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`), case-insensitively.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A namespace and its labels (always including `NAMESPACE_NAME_LABEL`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// Namespace name.
    pub name: String,
    /// Labels, with `kubernetes.io/metadata.name` set to `name`.
    pub labels: Labels,
    /// Its pods may send encapsulated traffic (IP-in-IP, GRE, VXLAN, ...), which is
    /// otherwise dropped at their egress whatever policy allows: the annotation
    /// `podwall.io/allow-tunnels: "true"`. A namespace's, not a pod's: whoever may
    /// create pods must not be able to grant it to them.
    pub allow_tunnels: bool,
}

impl Namespace {
    /// A namespace with only the label the API server always sets.
    pub fn implicit(name: &str) -> Self {
        Self {
            name: name.to_string(),
            labels: Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())]),
            allow_tunnels: false,
        }
    }
}

/// A node of the cluster, trimmed to what ClusterNetworkPolicy's `nodes` peer
/// reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's name.
    pub name: String,
    /// The node's labels.
    pub labels: Labels,
    /// `status.addresses` that are IP addresses (InternalIP, ExternalIP), sorted,
    /// no repeats.
    pub ips: Vec<IpAddr>,
}

/// A port a container declares; named ones are what NetworkPolicy names refer to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerPort {
    /// `ports[].name`, if any.
    pub name: Option<String>,
    /// `containerPort`.
    pub port: u16,
    /// `protocol`, defaulted to TCP.
    pub protocol: Protocol,
}

/// A pod, trimmed to what policy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// Namespace and name.
    pub key: ObjectRef,
    /// Pod labels.
    pub labels: Labels,
    /// `status.podIPs` (or `status.podIP`); may be empty for a pod not yet running.
    pub ips: Vec<IpAddr>,
    /// `spec.nodeName`, if scheduled.
    pub node_name: Option<String>,
    /// `spec.hostNetwork`: such pods share the node's address and are not endpoints.
    pub host_network: bool,
    /// Ports of all containers.
    pub ports: Vec<ContainerPort>,
    /// `status.phase` is `Succeeded` or `Failed`: its containers have stopped for
    /// good, it has no addresses, and no new interface can be its.
    pub finished: bool,
}

impl Pod {
    /// The pod's IPv4 addresses, in `ips` order.
    pub fn ipv4_addresses(&self) -> impl Iterator<Item = std::net::Ipv4Addr> + '_ {
        self.ips.iter().filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    /// The pod's IPv6 addresses, in `ips` order.
    pub fn ipv6_addresses(&self) -> impl Iterator<Item = std::net::Ipv6Addr> + '_ {
        self.ips.iter().filter_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
    }

    /// The pod's first address of `family`, if it has one.
    pub fn address(&self, family: IpFamily) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| family.matches(ip))
    }

    /// The numbers the pod's containers give the port `name` for `protocol`: what a
    /// named NetworkPolicy port or Service targetPort resolves to on this pod.
    pub fn ports_named<'a>(
        &'a self,
        name: &'a str,
        protocol: Protocol,
    ) -> impl Iterator<Item = u16> + 'a {
        self.ports
            .iter()
            .filter(move |declared| {
                declared.protocol == protocol && declared.name.as_deref() == Some(name)
            })
            .map(|declared| declared.port)
    }
}

/// An IP family: which of a dual-stack pod's addresses a connection uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    #[default]
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl fmt::Display for IpFamily {
    /// `IPv4` or `IPv6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::Ipv4 => "IPv4",
            IpFamily::Ipv6 => "IPv6",
        })
    }
}

impl IpFamily {
    /// Whether `ip` is of this family.
    pub fn matches(self, ip: &IpAddr) -> bool {
        match self {
            IpFamily::Ipv4 => ip.is_ipv4(),
            IpFamily::Ipv6 => ip.is_ipv6(),
        }
    }
}

/// A port a Service exposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `ports[].name`, if any.
    pub name: Option<String>,
    /// The Service port.
    pub port: u16,
    /// `targetPort`: a number, or a name resolved on each backend pod.
    pub target_port: PortRef,
    /// `protocol`, defaulted to TCP.
    pub protocol: Protocol,
}

/// A Service, kept for the lab and later the Service-aware datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Namespace and name.
    pub key: ObjectRef,
    /// `spec.selector`; `None` for a Service without a selector.
    pub selector: Option<Labels>,
    /// `spec.clusterIP`, if set and not `None`.
    pub cluster_ip: Option<IpAddr>,
    /// Every other address kube-proxy translates for this Service: the rest of
    /// `spec.clusterIPs` (a dual-stack Service's other family), `spec.externalIPs`,
    /// and `status.loadBalancer.ingress[].ip` unless its `ipMode` is `Proxy`
    /// (then the traffic really goes to the load balancer). Sorted, no repeats,
    /// never `cluster_ip`.
    pub extra_ips: Vec<IpAddr>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// Every address a pod's packet to this Service may be sent to and that the
    /// node translates to a backend: `cluster_ip`, then `extra_ips`.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.cluster_ip
            .into_iter()
            .chain(self.extra_ips.iter().copied())
    }
}

/// The map a `ClusterState` keeps each kind of object in: sorted by key, as a
/// `BTreeMap` is, and persistent: a clone shares every node with its original
/// and a change copies only the path to it, so the source hands each new state
/// on in O(1) and `ClusterState::changes` between two states that share most
/// objects visits only what differs.
pub type ObjectMap<K, V> = imbl::OrdMap<K, V>;

/// Calls `change` on every value of `map`, in key order: what
/// `BTreeMap::values_mut` is for, which a persistent map has not (each value
/// may be shared with another map's copy). Rebuilds the map whole: for
/// changes to most values, not to a few (`ObjectMap::get_mut`).
pub fn change_each<K: Ord + Clone, V: Clone>(
    map: &mut ObjectMap<K, V>,
    mut change: impl FnMut(&K, &mut V),
) {
    *map = std::mem::take(map)
        .into_iter()
        .map(|(key, mut value)| {
            change(&key, &mut value);
            (key, value)
        })
        .collect();
}

/// `audited` (`last`'s policies put in audit mode by `audit`) brought to `now`:
/// the policies that differ between `last` and `now` are taken from `now` and put
/// in audit mode again, the rest is shared with `audited`.
fn audited_after<K: Ord + Clone, V: PartialEq + Clone>(
    audited: &ObjectMap<K, V>,
    last: &ObjectMap<K, V>,
    now: &ObjectMap<K, V>,
    audit: impl Fn(&mut V),
) -> ObjectMap<K, V> {
    let mut policies = audited.clone();
    for item in last.diff(now) {
        match item {
            DiffItem::Add(key, policy)
            | DiffItem::Update {
                new: (key, policy), ..
            } => {
                let mut policy = policy.clone();
                audit(&mut policy);
                policies.insert(key.clone(), policy);
            }
            DiffItem::Remove(key, _) => {
                policies.remove(key);
            }
        }
    }
    policies
}

/// Everything policy is computed from, keyed for deterministic iteration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Namespaces by name.
    pub namespaces: ObjectMap<String, Namespace>,
    /// Pods by namespace/name.
    pub pods: ObjectMap<ObjectRef, Pod>,
    /// NetworkPolicies by namespace/name.
    pub policies: ObjectMap<ObjectRef, NetworkPolicy>,
    /// Services by namespace/name.
    pub services: ObjectMap<ObjectRef, Service>,
    /// ClusterNetworkPolicies by name.
    pub cluster_policies: ObjectMap<String, ClusterNetworkPolicy>,
    /// Nodes by name (what `nodes` peers select).
    pub nodes: ObjectMap<String, Node>,
}

/// One pod's change between two states: its key and what it was (`None`: it did
/// not exist); what it is now is in the newer state.
pub type PodChange = (ObjectRef, Option<Pod>);

/// What differs between two states, kind by kind: each changed object's key and
/// what it was (`None`: it did not exist); what it is now is in the newer state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateChanges {
    /// Namespaces by name.
    pub namespaces: Vec<(String, Option<Namespace>)>,
    /// Pods.
    pub pods: Vec<PodChange>,
    /// NetworkPolicies.
    pub policies: Vec<(ObjectRef, Option<NetworkPolicy>)>,
    /// Services.
    pub services: Vec<(ObjectRef, Option<Service>)>,
    /// ClusterNetworkPolicies by name.
    pub cluster_policies: Vec<(String, Option<ClusterNetworkPolicy>)>,
    /// Nodes by name.
    pub nodes: Vec<(String, Option<Node>)>,
}

impl StateChanges {
    /// How many kinds of object changed.
    pub fn kinds(&self) -> usize {
        [
            self.namespaces.is_empty(),
            self.pods.is_empty(),
            self.policies.is_empty(),
            self.services.is_empty(),
            self.cluster_policies.is_empty(),
            self.nodes.is_empty(),
        ]
        .iter()
        .filter(|empty| !**empty)
        .count()
    }
}

/// The entries that differ between `old` and `new`, each with what it was: the
/// changed and removed ones in key order, then the added ones in key order.
/// `ObjectMap::diff` walks both maps side by side and skips the nodes they
/// share, so two states one made from the other by a few changes cost about
/// those changes.
fn differing<K: Ord + Clone, V: PartialEq + Clone>(
    old: &ObjectMap<K, V>,
    new: &ObjectMap<K, V>,
) -> Vec<(K, Option<V>)> {
    let mut changes: Vec<(K, Option<V>)> = Vec::new();
    let mut added = Vec::new();
    for item in old.diff(new) {
        match item {
            DiffItem::Remove(key, value)
            | DiffItem::Update {
                old: (key, value), ..
            } => {
                changes.push((key.clone(), Some(value.clone())));
            }
            DiffItem::Add(key, _) => added.push((key.clone(), None)),
        }
    }
    changes.extend(added);
    changes
}

impl ClusterState {
    /// Every object that differs between this state and `next`: what
    /// `policy::compiler::Incremental::changed` takes.
    pub fn changes(&self, next: &ClusterState) -> StateChanges {
        StateChanges {
            namespaces: differing(&self.namespaces, &next.namespaces),
            pods: differing(&self.pods, &next.pods),
            policies: differing(&self.policies, &next.policies),
            services: differing(&self.services, &next.services),
            cluster_policies: differing(&self.cluster_policies, &next.cluster_policies),
            nodes: differing(&self.nodes, &next.nodes),
        }
    }

    /// The pods that differ between this state and `next`, when nothing but pods
    /// does (`None` otherwise).
    pub fn pod_changes(&self, next: &ClusterState) -> Option<Vec<PodChange>> {
        let changes = self.changes(next);
        let only_pods = changes.kinds() == usize::from(!changes.pods.is_empty());
        only_pods.then_some(changes.pods)
    }

    /// Adds an implicit `Namespace` for every namespace a pod, policy or Service
    /// lives in but no Namespace object declares, as a cluster would have one.
    pub fn add_implicit_namespaces(&mut self) {
        let used: BTreeSet<String> = self
            .pods
            .keys()
            .chain(self.policies.keys())
            .chain(self.services.keys())
            .map(|key| key.namespace.clone())
            .collect();
        for name in used {
            self.namespaces
                .entry(name.clone())
                .or_insert_with(|| Namespace::implicit(&name));
        }
    }

    /// This state with every NetworkPolicy and ClusterNetworkPolicy in audit mode:
    /// the agent-wide audit mode
    /// (`--audit`). A transformation of the model rather than a compiler option, so
    /// the evaluator, the compiler and every report see the same policies; the CLI
    /// edge applies it once, right after loading the state.
    pub fn with_every_policy_in_audit(mut self) -> Self {
        change_each(&mut self.policies, |_, policy| {
            policy.mode = PolicyMode::Audit;
        });
        change_each(&mut self.cluster_policies, |_, policy| {
            policy.mode = PolicyMode::Audit;
        });
        self
    }

    /// `self.clone().with_every_policy_in_audit()`, made from `audited`, which
    /// is that of `last`: only the policies that differ between `last` and
    /// this state are put in audit mode again, so the result shares every other
    /// object with this state and `audited`, and the agent's diff of two such
    /// results costs what changed.
    pub fn in_audit_after(&self, last: &ClusterState, audited: &ClusterState) -> ClusterState {
        ClusterState {
            namespaces: self.namespaces.clone(),
            pods: self.pods.clone(),
            policies: audited_after(&audited.policies, &last.policies, &self.policies, |p| {
                p.mode = PolicyMode::Audit
            }),
            services: self.services.clone(),
            cluster_policies: audited_after(
                &audited.cluster_policies,
                &last.cluster_policies,
                &self.cluster_policies,
                |p| p.mode = PolicyMode::Audit,
            ),
            nodes: self.nodes.clone(),
        }
    }

    /// Whether the pods of `namespace` may send encapsulated traffic
    /// (`Namespace::allow_tunnels`); not for a namespace nobody declared.
    pub fn namespace_allows_tunnels(&self, namespace: &str) -> bool {
        self.namespaces
            .get(namespace)
            .is_some_and(|ns| ns.allow_tunnels)
    }

    /// Labels of a namespace; a namespace nobody declared has only its name label.
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        self.namespaces
            .get(namespace)
            .map(|ns| ns.labels.clone())
            .unwrap_or_else(|| Namespace::implicit(namespace).labels)
    }
}

impl ClusterState {
    /// The pod-network pods that hold `ip`: one, or none, or (a reused address
    /// while the old pod lingers) several.
    pub fn pods_at(&self, ip: IpAddr) -> impl Iterator<Item = &Pod> {
        self.pods
            .values()
            .filter(move |pod| !pod.host_network && pod.ips.contains(&ip))
    }

    /// Adds every object of `other`, replacing objects with the same kind and key
    /// (as `kubectl apply` of `other` would). A namespace `other` only implies (one
    /// with nothing but its name label) does not replace one this state declares.
    pub fn merge(&mut self, other: ClusterState) {
        for (name, namespace) in other.namespaces {
            let implied = namespace == Namespace::implicit(&name);
            if !(implied && self.namespaces.contains_key(&name)) {
                self.namespaces.insert(name, namespace);
            }
        }
        self.pods.extend(other.pods);
        self.policies.extend(other.policies);
        self.services.extend(other.services);
        self.cluster_policies.extend(other.cluster_policies);
        self.nodes.extend(other.nodes);
    }

    /// `Kind namespace/name` of every object, for messages; namespaces that carry
    /// nothing but their name label (as implied ones do) are left out.
    pub fn object_names(&self) -> Vec<String> {
        let namespaces = self
            .namespaces
            .values()
            .filter(|ns| **ns != Namespace::implicit(&ns.name))
            .map(|ns| format!("Namespace {}", ns.name));
        let pods = self.pods.keys().map(|k| format!("Pod {k}"));
        let policies = self.policies.keys().map(|k| format!("NetworkPolicy {k}"));
        let services = self.services.keys().map(|k| format!("Service {k}"));
        let cluster_policies = self
            .cluster_policies
            .keys()
            .map(|k| format!("ClusterNetworkPolicy {k}"));
        let nodes = self.nodes.keys().map(|k| format!("Node {k}"));
        namespaces
            .chain(pods)
            .chain(policies)
            .chain(services)
            .chain(cluster_policies)
            .chain(nodes)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::builders::{cluster, namespace, netpol, pod, rule, selector};
    use super::{ObjectMap, ObjectRef};
    use proptest::prelude::*;

    #[test]
    fn a_merge_keeps_the_labels_of_namespaces_the_other_state_only_uses() {
        let mut live = cluster()
            .namespace(namespace("shop").labels([("team", "a")]).build())
            .build();
        let changes = cluster()
            .pod(pod("shop", "web").build())
            .namespace(namespace("new").labels([("team", "b")]).build())
            .build();
        live.merge(changes);
        assert_eq!(
            live.namespaces["shop"]
                .labels
                .get("team")
                .map(String::as_str),
            Some("a")
        );
        assert!(live.namespaces.contains_key("new"));
        assert!(live.pods.contains_key(&ObjectRef::new("shop", "web")));
    }

    /// What `differing` must say: each key of `old` whose value `new` does not
    /// hold, with its old value, then each key only `new` has, both in key order.
    fn by_lookups(old: &ObjectMap<u16, u8>, new: &ObjectMap<u16, u8>) -> Vec<(u16, Option<u8>)> {
        let mut expected: Vec<(u16, Option<u8>)> = old
            .iter()
            .filter(|(key, value)| new.get(*key) != Some(*value))
            .map(|(key, value)| (*key, Some(*value)))
            .collect();
        expected.extend(
            new.keys()
                .filter(|key| !old.contains_key(*key))
                .map(|key| (*key, None)),
        );
        expected
    }

    proptest! {
        /// Two unrelated maps: `differing` says what looking each key up in
        /// the other map says, in the same order.
        #[test]
        fn differing_names_what_lookups_name_in_the_same_order(
            old in proptest::collection::btree_map(0u16..40, 0u8..4, 0..30),
            new in proptest::collection::btree_map(0u16..40, 0u8..4, 0..30),
        ) {
            let old: ObjectMap<u16, u8> = old.into_iter().collect();
            let new: ObjectMap<u16, u8> = new.into_iter().collect();
            prop_assert_eq!(super::differing(&old, &new), by_lookups(&old, &new));
        }

        /// A map and its copy after a few edits share most of their nodes,
        /// which the walk skips: it must still name every edit, and only them.
        #[test]
        fn differing_of_a_copy_after_edits_names_each_edit(
            base in proptest::collection::btree_map(0u16..2000, 0u8..4, 0..1500),
            edits in proptest::collection::vec((0u16..2000, proptest::option::of(0u8..4)), 0..12),
        ) {
            let old: ObjectMap<u16, u8> = base.into_iter().collect();
            let mut new = old.clone();
            for (key, value) in edits {
                match value {
                    Some(value) => new.insert(key, value),
                    None => new.remove(&key),
                };
            }
            prop_assert_eq!(super::differing(&old, &new), by_lookups(&old, &new));
        }
    }

    #[test]
    fn differing_of_equal_maps_is_empty_and_of_disjoint_ones_is_everything() {
        let a: ObjectMap<u8, u8> = [(1, 1), (3, 3)].into_iter().collect();
        let b: ObjectMap<u8, u8> = [(2, 2)].into_iter().collect();
        assert!(super::differing(&a, &a).is_empty());
        assert!(super::differing(&a, &a.clone()).is_empty());
        assert_eq!(
            super::differing(&a, &b),
            [(1, Some(1)), (3, Some(3)), (2, None)]
        );
    }

    proptest! {
        /// Audit mode made from the last state's is audit mode made afresh,
        /// whatever the policies did in between.
        #[test]
        fn audit_mode_after_a_change_is_audit_mode_made_afresh(
            last in proptest::collection::btree_map(0u8..12, (0u16..3, any::<bool>()), 0..10),
            edits in proptest::collection::vec((0u8..12, proptest::option::of((0u16..3, any::<bool>()))), 0..8),
        ) {
            let policy = |name: u8, (port, audit): (u16, bool)| {
                let built = netpol("ns", &format!("p{name}"))
                    .select(selector().build())
                    .ingress(rule().port(8000 + port, super::Protocol::Tcp).build());
                if audit { built.audit().build() } else { built.build() }
            };
            let mut last_state = cluster().pod(pod("ns", "a").ip("10.0.0.1").build()).build();
            for (name, shape) in &last {
                let made = policy(*name, *shape);
                last_state.policies.insert(made.key.clone(), made);
            }
            let mut next = last_state.clone();
            for (name, shape) in edits {
                let made = policy(name, shape.unwrap_or((0, false)));
                match shape {
                    Some(_) => next.policies.insert(made.key.clone(), made),
                    None => next.policies.remove(&made.key),
                };
            }
            let audited = last_state.clone().with_every_policy_in_audit();
            prop_assert_eq!(
                next.in_audit_after(&last_state, &audited),
                next.clone().with_every_policy_in_audit()
            );
        }
    }

    #[test]
    fn pod_changes_name_each_changed_pod_with_what_it_was_and_nothing_else() {
        let a = pod("ns", "a").ip("10.0.0.1").build();
        let b = pod("ns", "b").ip("10.0.0.2").build();
        let before = cluster().pod(a.clone()).pod(b.clone()).build();
        let mut after = before.clone();
        assert_eq!(before.pod_changes(&after), Some(Vec::new()));
        after.pods.remove(&a.key);
        let relabelled = pod("ns", "b").ip("10.0.0.2").labels([("x", "y")]).build();
        after.pods.insert(b.key.clone(), relabelled);
        let c = pod("ns", "c").ip("10.0.0.3").build();
        after.pods.insert(c.key.clone(), c.clone());
        assert_eq!(
            before.pod_changes(&after),
            Some(vec![
                (a.key.clone(), Some(a)),
                (b.key.clone(), Some(b)),
                (c.key.clone(), None),
            ])
        );
        let policy = netpol("ns", "p").select(selector().build()).build();
        after.policies.insert(policy.key.clone(), policy);
        assert_eq!(before.pod_changes(&after), None, "a policy changed too");
    }
}
