//! A synthetic cluster for `bench agent` (pure, deterministic): `pods` pods over
//! `namespaces` namespaces, spread over one node per `pods_per_node` pods, so the
//! benchmarked node (`LOCAL_NODE`) holds about `pods_per_node` of them (100 by
//! default, a common kubelet limit is 110); `policies` NetworkPolicies of ten
//! kinds, each namespace getting the kinds in turn: default-deny for ingress and
//! for egress, podSelector rules on named ports, namespaceSelector and combined
//! selectors, an egress ipBlock with excepts, an ingress ipBlock, and a port range.
//!
//! Every namespace runs the same five apps, each in two versions (ten label sets
//! per namespace); the first namespace is the infrastructure one (DNS, monitoring)
//! that the other namespaces' policies name. Pods are single-stack IPv4, one /24
//! per node as common CNIs allocate; every app has a Service (`generate`), and
//! `generate_with_services` adds more per namespace, one app version each, for a
//! cluster with as many Services as the memory benchmark names. Which app, version
//! and node a pod gets is spread by a fixed hash of its index, so the local node's
//! pods come from every namespace and app.

use std::net::{IpAddr, Ipv4Addr};

use crate::model::{
    builders::{cluster, namespace, netpol, pod, rule, selector, service},
    ClusterState, LabelSelector, NetworkPolicy, ObjectRef, Pod, PortRef, Protocol,
    SelectorOperator, Service,
};

/// The node the benchmark compiles for.
pub const LOCAL_NODE: &str = "node-0000";
/// Apps of an ordinary namespace, with the tier label each carries.
pub const APPS: [(&str, &str); 5] = [
    ("web", "frontend"),
    ("api", "backend"),
    ("worker", "backend"),
    ("db", "data"),
    ("cache", "data"),
];
/// Apps of the infrastructure namespace (the first one).
pub const INFRA_APPS: [(&str, &str); 5] = [
    ("kube-dns", "infra"),
    ("prometheus", "infra"),
    ("grafana", "infra"),
    ("ingress", "infra"),
    ("metrics-server", "infra"),
];
/// Policy kinds; namespace by namespace, policy `j` gets kind `j / namespaces % 10`.
pub const POLICY_KINDS: usize = 10;
/// The first pod address; node `k`'s pods are `10.128.k.2` upwards (a /24 each).
const POD_BASE: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 2);
/// The first Service ClusterIP.
const SERVICE_BASE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The first ClusterIP of the Services beyond one per app: namespace `n`'s
/// Service `s` is this plus `n * 256 + s`.
const MORE_SERVICES_BASE: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 0);
/// Services per namespace of `generate`: one per app.
pub const APP_SERVICES: usize = 5;
/// Most Services per namespace `generate_with_services` makes (their addresses
/// are a /24 per namespace).
pub const MAX_SERVICES_PER_NAMESPACE: usize = 250;
/// The first node address: node `k` is this plus `k`.
const NODE_BASE: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

/// The shape of a synthetic cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterSpec {
    /// Pods in the cluster.
    pub pods: usize,
    /// NetworkPolicies in the cluster.
    pub policies: usize,
    /// Namespaces (at least 1); the first is the infrastructure namespace.
    pub namespaces: usize,
    /// Pods per node (at most 250): the cluster has `ceil(pods / pods_per_node)`
    /// nodes and the local node about this many pods.
    pub pods_per_node: usize,
}

impl ClusterSpec {
    /// `pods` pods and `policies` policies, one namespace per 100 pods (at least
    /// two), 100 pods per node.
    pub fn new(pods: usize, policies: usize) -> Self {
        Self {
            pods,
            policies,
            namespaces: (pods / 100).max(2),
            pods_per_node: 100,
        }
    }

    /// Nodes in the cluster (at least 1).
    pub fn nodes(&self) -> usize {
        self.pods.div_ceil(self.pods_per_node.clamp(1, 250)).max(1)
    }
}

/// A fixed 64-bit mix of `x` (SplitMix64's finalizer): spreads indices without a
/// generator's state, so pod `i` is the same whatever else the cluster holds.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Namespace `n`'s name.
pub fn namespace_name(n: usize) -> String {
    format!("ns-{n:03}")
}

/// Node `k`'s name.
pub fn node_name(k: usize) -> String {
    format!("node-{k:04}")
}

/// Node `k`'s address.
pub fn node_address(k: usize) -> IpAddr {
    IpAddr::V4(offset(NODE_BASE, k))
}

fn offset(base: Ipv4Addr, by: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(by as u32))
}

/// The apps of namespace `n`.
pub fn apps_of(n: usize) -> &'static [(&'static str, &'static str); 5] {
    if n == 0 {
        &INFRA_APPS
    } else {
        &APPS
    }
}

/// Builds the cluster `spec` describes, with a Service per app. Equal specs give
/// equal states.
pub fn generate(spec: &ClusterSpec) -> ClusterState {
    generate_with_services(spec, APP_SERVICES)
}

/// `generate` with `services_per_namespace` Services in every namespace (at least
/// one per app, at most `MAX_SERVICES_PER_NAMESPACE`): the first are the apps',
/// the rest `service_at` adds.
pub fn generate_with_services(spec: &ClusterSpec, services_per_namespace: usize) -> ClusterState {
    let namespaces = spec.namespaces.max(1);
    let services = services_per_namespace.clamp(APP_SERVICES, MAX_SERVICES_PER_NAMESPACE);
    let mut builder = cluster();
    for n in 0..namespaces {
        let role = if n == 0 { "infra" } else { "apps" };
        let team = format!("team-{}", n % 8);
        let env = ["prod", "staging", "dev"][n % 3];
        builder = builder.namespace(
            namespace(&namespace_name(n))
                .labels([("role", role), ("team", team.as_str()), ("env", env)])
                .build(),
        );
        for s in 0..services {
            builder = builder.service(service_at(n, s));
        }
    }
    for i in 0..spec.pods {
        builder = builder.pod(pod_at(spec, i));
    }
    for j in 0..spec.policies {
        builder = builder.policy(policy(spec, j));
    }
    builder.build()
}

/// Service `s` of namespace `n`: below `APP_SERVICES`, app `s`'s Service (named
/// after it, port 80 to its `http` port); above, `{app}-{s}` for app `s % 5`, one
/// version of it, on port `8000 + s` to its `http` port.
pub fn service_at(n: usize, s: usize) -> Service {
    let apps = apps_of(n);
    let (app, _) = apps[s % apps.len()];
    let ns = namespace_name(n);
    let http = PortRef::Name("http".into());
    if s < APP_SERVICES {
        let ip = offset(SERVICE_BASE, n * apps.len() + s);
        return service(&ns, app)
            .selector([("app", app)])
            .cluster_ip(&ip.to_string())
            .port(80, http, Protocol::Tcp)
            .build();
    }
    let ip = offset(MORE_SERVICES_BASE, n * 256 + s);
    let version = if s.is_multiple_of(2) { "v1" } else { "v2" };
    service(&ns, &format!("{app}-{s:03}"))
        .selector([("app", app), ("version", version)])
        .cluster_ip(&ip.to_string())
        .port(8000 + s as u16, http, Protocol::Tcp)
        .build()
}

/// Pod `i` of the cluster: its namespace is `i`'s block of `pods / namespaces`
/// consecutive indices, its node `i % nodes`, its app and version hashed from `i`.
pub fn pod_at(spec: &ClusterSpec, i: usize) -> Pod {
    let namespaces = spec.namespaces.max(1);
    let per_namespace = spec.pods.div_ceil(namespaces).max(1);
    let n = (i / per_namespace).min(namespaces - 1);
    let nodes = spec.nodes();
    let (node, slot) = (i % nodes, i / nodes);
    let hash = mix(i as u64);
    let (app, tier) = apps_of(n)[(hash % 5) as usize];
    let version = if hash >> 32 & 1 == 0 { "v1" } else { "v2" };
    let ip = offset(POD_BASE, node * 256 + slot % 250);
    labelled_pod(
        &namespace_name(n),
        &format!("{app}-{i:05}"),
        app,
        tier,
        version,
    )
    .ip(&ip.to_string())
    .node(&node_name(node))
    .build()
}

/// A pod of `app` with the labels and named ports every pod of that app has (no
/// address, no node).
pub fn labelled_pod(
    namespace: &str,
    name: &str,
    app: &str,
    tier: &str,
    version: &str,
) -> crate::model::builders::PodBuilder {
    let (http, grpc) = match app {
        "web" => (8080, None),
        "api" => (8000, Some(9000)),
        "db" => (5432, None),
        "cache" => (6379, None),
        "kube-dns" => (53, None),
        _ => (8080, None),
    };
    let built = pod(namespace, name)
        .labels([("app", app), ("tier", tier), ("version", version)])
        .named_port("http", http, Protocol::Tcp)
        .named_port("metrics", 9090, Protocol::Tcp);
    match grpc {
        Some(port) => built.named_port("grpc", port, Protocol::Tcp),
        None => built,
    }
}

fn sel(key: &str, value: &str) -> LabelSelector {
    selector().label(key, value).build()
}

/// Policy `j`: in namespace `j % namespaces`, of kind `j / namespaces % 10`.
pub fn policy(spec: &ClusterSpec, j: usize) -> NetworkPolicy {
    let namespaces = spec.namespaces.max(1);
    let (n, kind) = (j % namespaces, j / namespaces % POLICY_KINDS);
    let ns = namespace_name(n);
    let name = format!("p{j:05}-k{kind}");
    // Repeats of a kind in one namespace (more policies than 10 per namespace)
    // narrow to one version, so they differ.
    let round = j / (namespaces * POLICY_KINDS);
    let pick = |app: &str| {
        let s = selector().label("app", app);
        match round {
            0 => s.build(),
            r => s
                .label("version", if r % 2 == 1 { "v1" } else { "v2" })
                .build(),
        }
    };
    let tcp = Protocol::Tcp;
    let base = netpol(&ns, &name);
    match kind {
        0 => base.types(true, false).build(),
        1 => base
            .select(pick("web"))
            .ingress(rule().named_port("http", tcp).build())
            .build(),
        2 => base
            .select(pick("api"))
            .ingress(
                rule()
                    .from_pods(sel("app", "web"))
                    .named_port("http", tcp)
                    .named_port("grpc", tcp)
                    .build(),
            )
            .build(),
        3 => base
            .select(pick("db"))
            .ingress(
                rule()
                    .from_pods(sel("tier", "backend"))
                    .named_port("http", tcp)
                    .build(),
            )
            .build(),
        4 => base
            .ingress(
                rule()
                    .from_pods_in_namespaces(sel("app", "prometheus"), sel("role", "infra"))
                    .named_port("metrics", tcp)
                    .build(),
            )
            .build(),
        5 => base.types(false, true).build(),
        6 => base
            .egress(
                rule()
                    .to_pods_in_namespaces(sel("app", "kube-dns"), sel("role", "infra"))
                    .port(53, Protocol::Udp)
                    .port(53, tcp)
                    .build(),
            )
            .build(),
        7 => base
            .select(pick("api"))
            .egress(
                rule()
                    .to_ip_block("0.0.0.0/0", ["10.0.0.0/8", "172.16.0.0/12"])
                    .port(443, tcp)
                    .build(),
            )
            .egress(
                rule()
                    .to_pods(
                        selector()
                            .expr("app", SelectorOperator::In, ["db", "cache"])
                            .build(),
                    )
                    .build(),
            )
            .build(),
        8 => base
            .select(pick("api"))
            .ingress(
                rule()
                    .from_namespaces(sel("team", &format!("team-{}", (n + 1) % 8)))
                    .port_range(8000, 8100, tcp)
                    .build(),
            )
            .build(),
        _ => {
            let lb = format!("192.168.{}.0/24", n % 256);
            let except = format!("192.168.{}.128/25", n % 256);
            base.select(pick("web"))
                .ingress(
                    rule()
                        .from_ip_block(&lb, [except.as_str()])
                        .port(443, tcp)
                        .port(80, tcp)
                        .build(),
                )
                .build()
        }
    }
}

/// The pods of `state` on `LOCAL_NODE`, sorted.
pub fn local_pods(state: &ClusterState) -> Vec<ObjectRef> {
    state
        .pods
        .values()
        .filter(|pod| pod.node_name.as_deref() == Some(LOCAL_NODE))
        .map(|pod| pod.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::{Peer, Peers};

    #[test]
    fn the_cluster_has_the_counts_its_spec_names() {
        for (pods, policies) in [(1_000, 100), (10_000, 1_000)] {
            let spec = ClusterSpec::new(pods, policies);
            let state = generate(&spec);
            assert_eq!(state.pods.len(), pods);
            assert_eq!(state.policies.len(), policies);
            assert_eq!(state.namespaces.len(), pods / 100);
            assert_eq!(state.services.len(), 5 * pods / 100);
            let nodes: BTreeSet<_> = state.pods.values().map(|p| p.node_name.clone()).collect();
            assert_eq!(nodes.len(), pods / 100);
            assert_eq!(local_pods(&state).len(), 100, "100 pods on the local node");
            let addresses: BTreeSet<_> = state.pods.values().flat_map(|p| p.ips.clone()).collect();
            assert_eq!(addresses.len(), pods, "one distinct address per pod");
        }
    }

    #[test]
    fn more_services_keep_the_app_services_and_add_distinct_addresses() {
        let spec = ClusterSpec::new(10_000, 1_000);
        let plain = generate(&spec);
        let more = generate_with_services(&spec, 20);
        assert_eq!(more.services.len(), 2_000, "20 per namespace x 100");
        for (key, service) in &plain.services {
            assert_eq!(more.services.get(key), Some(service), "{key:?} unchanged");
        }
        let addresses: BTreeSet<_> = more.services.values().flat_map(|s| s.addresses()).collect();
        assert_eq!(addresses.len(), 2_000, "one distinct ClusterIP per Service");
        assert_eq!((more.pods, more.policies), (plain.pods, plain.policies));
    }

    #[test]
    fn equal_specs_give_equal_clusters() {
        let spec = ClusterSpec::new(2_000, 200);
        assert_eq!(generate(&spec), generate(&spec));
        assert_ne!(generate(&spec), generate(&ClusterSpec::new(2_000, 201)));
    }

    #[test]
    fn the_local_node_holds_pods_of_every_namespace_and_several_label_sets() {
        let state = generate(&ClusterSpec::new(10_000, 1_000));
        let local: Vec<&Pod> = local_pods(&state)
            .iter()
            .filter_map(|key| state.pods.get(key))
            .collect();
        let namespaces: BTreeSet<_> = local.iter().map(|p| &p.key.namespace).collect();
        let label_sets: BTreeSet<_> = local.iter().map(|p| &p.labels).collect();
        assert_eq!(namespaces.len(), 100);
        assert!(label_sets.len() >= 10, "{} label sets", label_sets.len());
    }

    #[test]
    fn every_policy_kind_appears_in_every_namespace_at_ten_per_namespace() {
        let spec = ClusterSpec::new(1_000, 100);
        let state = generate(&spec);
        for n in 0..spec.namespaces {
            let kinds: BTreeSet<_> = state
                .policies
                .keys()
                .filter(|key| key.namespace == namespace_name(n))
                .filter_map(|key| key.name.rsplit_once("-k").map(|(_, k)| k.to_string()))
                .collect();
            assert_eq!(kinds.len(), POLICY_KINDS, "namespace {n}: {kinds:?}");
        }
        let rules = state
            .policies
            .values()
            .flat_map(|p| p.ingress.iter().chain(&p.egress));
        let peers: Vec<&Peer> = rules
            .filter_map(|rule| match &rule.peers {
                Peers::Only(peers) => Some(peers),
                Peers::All => None,
            })
            .flatten()
            .collect();
        assert!(peers.iter().any(|p| matches!(p, Peer::IpBlock { .. })));
        assert!(peers.iter().any(|p| matches!(
            p,
            Peer::Pods {
                namespaces: crate::model::NamespaceScope::Matching(_),
                ..
            }
        )));
        let deny_all = state
            .policies
            .values()
            .filter(|p| p.ingress.is_empty() && p.egress.is_empty())
            .count();
        assert_eq!(
            deny_all,
            2 * spec.namespaces,
            "a default-deny per direction"
        );
    }
}
