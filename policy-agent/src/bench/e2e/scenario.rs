//! The e2e bench's pods and policies (pure). In namespace `bench`:
//!
//! - `client` and `server` (node 1), `server-far` (node 2): the isolated pair.
//!   `server-ingress` isolates the servers for ingress and allows the client on
//!   the bench ports; `client-egress` isolates the client for egress and allows
//!   the servers on them. Every enforcer must let this traffic through.
//! - `open-client`, `open-server` (node 1), `open-server-far` (node 2): the pair
//!   no policy selects.
//! - `intruder` (node 1): selected by nothing, allowed by nothing; every enforcer
//!   must drop its connections to the servers (the enforcement check).
//!
//! The lab builds these pods alone; podwall's tables compile them merged into the
//! synthetic cluster of a scale (`merged`), so the maps hold that cluster too.

use std::net::Ipv4Addr;

use super::{Pair, Placement};
use crate::{
    bench::cluster::{self, ClusterSpec},
    lab::addresses,
    model::{
        builders::{cluster as cluster_builder, namespace, netpol, pod, rule, selector},
        ClusterState, ObjectRef, Pod, Protocol,
    },
};

/// The namespace of the bench pods.
pub const NAMESPACE: &str = "bench";
/// TCP_RR, TCP_CRR and UDP_RR go to this port (echo, TCP and UDP).
pub const ECHO_PORT: u16 = 5001;
/// TCP_STREAM goes to this port (discards what it reads).
pub const SINK_PORT: u16 = 5002;
/// The ports policies allow the isolated pair, as the enforcers see them.
pub const PORTS: [(u16, Protocol); 3] = [
    (ECHO_PORT, Protocol::Tcp),
    (SINK_PORT, Protocol::Tcp),
    (ECHO_PORT, Protocol::Udp),
];

/// The bench pod `name`.
pub fn pod_ref(name: &str) -> ObjectRef {
    ObjectRef::new(NAMESPACE, name)
}

/// The client and the server of `pair` at `placement`.
pub fn pair(placement: Placement, pair: Pair) -> (ObjectRef, ObjectRef) {
    let (client, server) = match (pair, placement) {
        (Pair::Isolated, Placement::SameNode) => ("client", "server"),
        (Pair::Isolated, Placement::AcrossNodes) => ("client", "server-far"),
        (Pair::Unisolated, Placement::SameNode) => ("open-client", "open-server"),
        (Pair::Unisolated, Placement::AcrossNodes) => ("open-client", "open-server-far"),
    };
    (pod_ref(client), pod_ref(server))
}

/// The pod whose connections to the isolated servers must be dropped.
pub fn intruder() -> ObjectRef {
    pod_ref("intruder")
}

/// Every bench pod with its role label and lab node (1-based), the far ones only
/// in a lab of two nodes.
fn pods(nodes: usize) -> Vec<(&'static str, &'static str, usize)> {
    let mut pods = vec![
        ("client", "client", 1),
        ("server", "server", 1),
        ("open-client", "open", 1),
        ("open-server", "open", 1),
        ("intruder", "intruder", 1),
    ];
    if nodes > 1 {
        pods.extend([("server-far", "server", 2), ("open-server-far", "open", 2)]);
    }
    pods
}

/// The servers (listeners on the bench ports) of a lab of `nodes` nodes.
pub fn servers(nodes: usize) -> Vec<ObjectRef> {
    pods(nodes)
        .into_iter()
        .filter(|(name, _, _)| name.contains("server"))
        .map(|(name, _, _)| pod_ref(name))
        .collect()
}

/// The isolated servers (the intruder's targets) of a lab of `nodes` nodes.
pub fn isolated_servers(nodes: usize) -> Vec<ObjectRef> {
    pods(nodes)
        .into_iter()
        .filter(|(_, role, _)| *role == "server")
        .map(|(name, _, _)| pod_ref(name))
        .collect()
}

/// The clients of a lab (whose sysctls allow fast connection reuse).
pub fn clients() -> Vec<ObjectRef> {
    vec![pod_ref("client"), pod_ref("open-client")]
}

/// The bench namespace, pods and policies for a lab of `nodes` nodes (1 or 2):
/// what the lab builds, with no addresses yet.
pub fn lab_state(nodes: usize) -> ClusterState {
    let mut builder = cluster_builder().namespace(namespace(NAMESPACE).build());
    for (name, role, node) in pods(nodes) {
        builder = builder.pod(
            pod(NAMESPACE, name)
                .labels([("role", role)])
                .node(&addresses::node_name(node - 1))
                .build(),
        );
    }
    let by_role = |role| selector().label("role", role).build();
    let allowed = |r: crate::model::builders::RuleBuilder| {
        PORTS
            .iter()
            .fold(r, |r, (port, protocol)| r.port(*port, *protocol))
            .build()
    };
    builder
        .policy(
            netpol(NAMESPACE, "server-ingress")
                .select(by_role("server"))
                .ingress(allowed(rule().from_pods(by_role("client"))))
                .build(),
        )
        .policy(
            netpol(NAMESPACE, "client-egress")
                .select(by_role("client"))
                .egress(allowed(rule().to_pods(by_role("server"))))
                .build(),
        )
        .build()
}

/// The synthetic cluster `spec` with the bench namespace, pods (as the lab
/// addressed them) and policies added: what podwall compiles at that scale.
pub fn merged(bench: &ClusterState, spec: &ClusterSpec) -> ClusterState {
    let mut state = cluster::generate(spec);
    state.namespaces.extend(bench.namespaces.clone());
    state.pods.extend(bench.pods.clone());
    state.policies.extend(bench.policies.clone());
    state
}

/// Whether `pod` is local to lab node `node` (0-based) at scale `spec`: a bench
/// pod the lab placed there, or a synthetic pod of the synthetic node of the
/// same index, so each lab node holds about a node's worth of endpoints.
pub fn is_local(pod: &Pod, node: usize) -> bool {
    let name = pod.node_name.as_deref();
    name == Some(addresses::node_name(node).as_str())
        || name == Some(cluster::node_name(node).as_str())
}

/// The first IPv4 address of `pod` in `state`.
pub fn ipv4_of(state: &ClusterState, pod: &ObjectRef) -> Option<Ipv4Addr> {
    state.pods.get(pod)?.ips.iter().find_map(|ip| match ip {
        std::net::IpAddr::V4(v4) => Some(*v4),
        std::net::IpAddr::V6(_) => None,
    })
}

/// `lab_state(nodes)` with made-up lab addresses, for tests.
#[cfg(test)]
pub(super) fn addressed(nodes: usize) -> ClusterState {
    let mut state = lab_state(nodes);
    let mut next = 10u8;
    crate::model::change_each(&mut state.pods, |_, pod| {
        pod.ips = vec![std::net::IpAddr::V4(Ipv4Addr::new(10, 244, 0, next))];
        next += 1;
    });
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::evaluator::{self, End};

    #[test]
    fn the_far_pods_exist_only_with_two_nodes() {
        assert_eq!(lab_state(1).pods.len(), 5);
        assert_eq!(lab_state(2).pods.len(), 7);
        assert_eq!(
            isolated_servers(2),
            vec![pod_ref("server"), pod_ref("server-far")]
        );
        assert_eq!(servers(1).len(), 2);
    }

    #[test]
    fn the_reference_evaluator_allows_both_pairs_and_drops_the_intruder() {
        let state = addressed(2);
        let merged = merged(&state, &ClusterSpec::new(200, 20));
        let allowed = |from: &ObjectRef, to: &ObjectRef, port, protocol| {
            let query = evaluator::Query {
                src: End::Pod(from.clone()),
                dst: End::Pod(to.clone()),
                protocol,
                port,
            };
            evaluator::evaluate(&merged, &query).allowed
        };
        for placement in Placement::ALL {
            for p in Pair::ALL {
                let (client, server) = pair(placement, p);
                for (port, protocol) in PORTS {
                    assert!(
                        allowed(&client, &server, port, protocol),
                        "{client} -> {server} {port}"
                    );
                }
            }
        }
        for server in isolated_servers(2) {
            assert!(!allowed(&intruder(), &server, ECHO_PORT, Protocol::Tcp));
        }
        assert!(allowed(
            &intruder(),
            &pod_ref("open-server"),
            ECHO_PORT,
            Protocol::Tcp
        ));
    }
}
