//! The watch events the latency benchmark replays (pure): each is a model change and
//! its undo, applied in turns so the state does not grow, and a probe packet whose
//! verdict the change flips, found with the reference lookup on the tables before
//! and after (`DatapathTables::verdict`, the lookup the classifiers perform).

use std::net::{IpAddr, Ipv4Addr};

use super::super::cluster::{self, labelled_pod, ClusterSpec, LOCAL_NODE};
use crate::{
    model::{
        builders::rule, ClusterState, Labels, NetworkPolicy, ObjectRef, Pod, Protocol, Service,
        StateChanges,
    },
    policy::{
        capacity::Budgets,
        compiler,
        tables::{DatapathTables, Direction, TableVerdict},
    },
};

/// TCP's protocol number: every probe packet is a TCP SYN.
pub const TCP: u8 = 6;
/// Destination ports probe packets try.
const PORTS: [u16; 10] = [53, 80, 443, 5432, 6379, 7000, 8000, 8080, 9000, 9090];
/// The port the benchmark's added policy opens (no generated policy names it).
const ADDED_POLICY_PORT: u16 = 7000;

/// A change to the cluster state, as one watch event makes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A pod appears (ADDED).
    AddPod(Pod),
    /// A pod is gone (DELETED).
    RemovePod(ObjectRef),
    /// A pod's labels are replaced (MODIFIED).
    SetLabels(ObjectRef, Labels),
    /// A NetworkPolicy appears, or replaces the one of its name (an edit).
    AddPolicy(NetworkPolicy),
    /// A NetworkPolicy is gone.
    RemovePolicy(ObjectRef),
    /// A namespace's labels are replaced.
    SetNamespaceLabels(String, Labels),
    /// A Service appears.
    AddService(Service),
    /// A Service is gone.
    RemoveService(ObjectRef),
}

impl Change {
    /// Applies the change to `state` and returns it as `ClusterState::changes`
    /// would find it (without comparing the whole state).
    pub fn apply_recorded(&self, state: &mut ClusterState) -> StateChanges {
        let mut changes = StateChanges::default();
        match self {
            Change::AddPod(pod) => changes
                .pods
                .push((pod.key.clone(), state.pods.get(&pod.key).cloned())),
            Change::RemovePod(key) | Change::SetLabels(key, _) => changes
                .pods
                .push((key.clone(), state.pods.get(key).cloned())),
            Change::AddPolicy(policy) => changes
                .policies
                .push((policy.key.clone(), state.policies.get(&policy.key).cloned())),
            Change::RemovePolicy(key) => changes
                .policies
                .push((key.clone(), state.policies.get(key).cloned())),
            Change::SetNamespaceLabels(name, _) => changes
                .namespaces
                .push((name.clone(), state.namespaces.get(name).cloned())),
            Change::AddService(service) => changes.services.push((
                service.key.clone(),
                state.services.get(&service.key).cloned(),
            )),
            Change::RemoveService(key) => changes
                .services
                .push((key.clone(), state.services.get(key).cloned())),
        }
        self.apply(state);
        changes
    }

    /// Applies the change to `state`, as the agent does when the event arrives.
    pub fn apply(&self, state: &mut ClusterState) {
        match self {
            Change::AddPod(pod) => {
                state.pods.insert(pod.key.clone(), pod.clone());
            }
            Change::RemovePod(key) => {
                state.pods.remove(key);
            }
            Change::SetLabels(key, labels) => {
                if let Some(pod) = state.pods.get_mut(key) {
                    pod.labels.clone_from(labels);
                }
            }
            Change::AddPolicy(policy) => {
                state.policies.insert(policy.key.clone(), policy.clone());
            }
            Change::RemovePolicy(key) => {
                state.policies.remove(key);
            }
            Change::SetNamespaceLabels(name, labels) => {
                if let Some(namespace) = state.namespaces.get_mut(name) {
                    namespace.labels.clone_from(labels);
                }
            }
            Change::AddService(service) => {
                state.services.insert(service.key.clone(), service.clone());
            }
            Change::RemoveService(key) => {
                state.services.remove(key);
            }
        }
    }
}

/// One kind of event: a change, its undo, and how the report names each.
#[derive(Clone, Debug, PartialEq)]
pub struct EventKind {
    /// Report label of `forward`.
    pub forward_label: &'static str,
    /// Report label of `backward` (the same as `forward_label` for a label change
    /// and its reverse, which are both label changes).
    pub backward_label: &'static str,
    /// The change measured first.
    pub forward: Change,
    /// Its undo.
    pub backward: Change,
}

/// The kinds the benchmark replays on the cluster `spec` describes (`state` is
/// that cluster): a pod added on this node, a pod added on another node, a label
/// change of a pod on this node, a policy added, a policy edited (a port added to
/// a rule), a namespace's labels changed (it leaves the namespaceSelector of a
/// local pod's policy), a Service added.
pub fn kinds(spec: &ClusterSpec, state: &ClusterState) -> Result<Vec<EventKind>, String> {
    let local: Vec<&Pod> = cluster::local_pods(state)
        .iter()
        .filter_map(|key| state.pods.get(key))
        .collect();
    let of_app = |app: &str| {
        local
            .iter()
            .find(|pod| pod.key.namespace != cluster::namespace_name(0) && has_app(pod, app))
            .copied()
            .ok_or_else(|| format!("no pod of app {app} on {LOCAL_NODE}"))
    };
    let (web, api) = (of_app("web")?, of_app("api")?);
    // Free addresses: slot 252 and up of node 0's and node 1's /24 (pods use 0-249).
    let free = |node: usize| Ipv4Addr::new(10, 128, node as u8, 254);
    let new_local = labelled_pod(
        &web.key.namespace,
        "bench-new-local",
        "web",
        "frontend",
        "v1",
    )
    .ip(&free(0).to_string())
    .node(LOCAL_NODE)
    .build();
    let remote_node = cluster::node_name(1 % spec.nodes());
    let new_remote = labelled_pod(
        &api.key.namespace,
        "bench-new-remote",
        "web",
        "frontend",
        "v1",
    )
    .ip(&free(1).to_string())
    .node(&remote_node)
    .build();
    let mut relabelled = web.labels.clone();
    relabelled.insert("app".into(), "api".into());
    relabelled.insert("tier".into(), "backend".into());
    let added = crate::model::builders::netpol(&web.key.namespace, "bench-added")
        .select(
            crate::model::builders::selector()
                .label("app", "web")
                .build(),
        )
        .ingress(
            rule()
                .from_namespaces(crate::model::builders::selector().build())
                .port(ADDED_POLICY_PORT, Protocol::Tcp)
                .build(),
        )
        .build();
    let edited = state
        .policies
        .values()
        .find(|policy| {
            policy.key.namespace == web.key.namespace && policy.key.name.ends_with("-k1")
        })
        .ok_or_else(|| format!("no policy of kind 1 in {}", web.key.namespace))?;
    let mut opened = edited.clone();
    opened.ingress.push(
        rule()
            .from_namespaces(crate::model::builders::selector().build())
            .port(ADDED_POLICY_PORT, Protocol::Tcp)
            .build(),
    );
    // The policy of kind 8 in `api`'s namespace admits namespaces of the next
    // team: the first other one of that team leaves it.
    let namespaces = spec.namespaces.max(1);
    let api_index = (0..namespaces)
        .find(|n| cluster::namespace_name(*n) == api.key.namespace)
        .ok_or_else(|| format!("no namespace {}", api.key.namespace))?;
    let teammate = (1..namespaces)
        .find(|m| m % 8 == (api_index + 1) % 8)
        .map(cluster::namespace_name)
        .ok_or("no namespace of the next team")?;
    let team_labels = state
        .namespaces
        .get(&teammate)
        .map(|namespace| namespace.labels.clone())
        .ok_or_else(|| format!("no namespace {teammate}"))?;
    let mut teamless = team_labels.clone();
    teamless.insert("team".into(), "team-none".into());
    let web_index = (0..namespaces)
        .find(|n| cluster::namespace_name(*n) == web.key.namespace)
        .ok_or_else(|| format!("no namespace {}", web.key.namespace))?;
    let service = cluster::service_at(web_index, cluster::APP_SERVICES);
    Ok(vec![
        EventKind {
            forward_label: "pod add, this node",
            backward_label: "pod delete, this node",
            forward: Change::AddPod(new_local.clone()),
            backward: Change::RemovePod(new_local.key),
        },
        EventKind {
            forward_label: "pod add, another node",
            backward_label: "pod delete, another node",
            forward: Change::AddPod(new_remote.clone()),
            backward: Change::RemovePod(new_remote.key),
        },
        EventKind {
            forward_label: "pod label change, this node",
            backward_label: "pod label change, this node",
            forward: Change::SetLabels(web.key.clone(), relabelled),
            backward: Change::SetLabels(web.key.clone(), web.labels.clone()),
        },
        EventKind {
            forward_label: "policy add",
            backward_label: "policy delete",
            forward: Change::AddPolicy(added.clone()),
            backward: Change::RemovePolicy(added.key),
        },
        EventKind {
            forward_label: "policy edit",
            backward_label: "policy edit",
            forward: Change::AddPolicy(opened),
            backward: Change::AddPolicy(edited.clone()),
        },
        EventKind {
            forward_label: "namespace label change",
            backward_label: "namespace label change",
            forward: Change::SetNamespaceLabels(teammate.clone(), teamless),
            backward: Change::SetNamespaceLabels(teammate, team_labels),
        },
        EventKind {
            forward_label: "Service add",
            backward_label: "Service delete",
            forward: Change::AddService(service.clone()),
            backward: Change::RemoveService(service.key),
        },
    ])
}

fn has_app(pod: &Pod, app: &str) -> bool {
    pod.labels.get("app").map(String::as_str) == Some(app)
}

/// A packet whose verdict an event flips: a TCP SYN between the local pod `pod`
/// and `peer`, decided at `pod`'s `direction` hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The local pod whose hook decides it.
    pub pod: ObjectRef,
    /// Its address (the packet's source for egress, destination for ingress).
    pub pod_address: IpAddr,
    /// Ingress or egress of `pod`.
    pub direction: Direction,
    /// The remote address.
    pub peer: IpAddr,
    /// The destination port.
    pub port: u16,
    /// Whether it passes before the forward change.
    pub passes_before: bool,
}

/// The local node's tables for `state`, as the benchmark compiles them.
pub fn compile(state: &ClusterState) -> DatapathTables {
    compiler::compile(state, &[cluster::node_address(0)], is_local)
}

/// The benchmarked node's tables of `state`, kept across changes.
pub fn incremental(state: &ClusterState) -> compiler::Incremental {
    compiler::Incremental::new(
        state,
        &[cluster::node_address(0)],
        is_local,
        &Budgets::kernel(),
    )
}

/// Whether `pod` runs on the benchmarked node.
pub fn is_local(pod: &Pod) -> bool {
    pod.node_name.as_deref() == Some(LOCAL_NODE)
}

/// Whether a packet with this verdict passes the classifier. A pod without an
/// `ENDPOINTS` entry is dropped (`STAT_DROP_UNKNOWN_ENDPOINT`): its hook only runs
/// when an interface nobody mapped is attached.
fn passes(verdict: TableVerdict) -> bool {
    verdict.passes()
}

/// The first probe, in a fixed order (local pods, then peers, directions, ports),
/// whose verdict differs between `before` and `after`. Peers are one pod per
/// namespace and app, the pods `kind` adds, and some addresses outside the cluster;
/// Service ClusterIPs are left out (egress to them is decided after DNAT) but for
/// those of the Services `kind` adds (egress to them stops being judged).
pub fn find_probe(
    state: &ClusterState,
    kind: &EventKind,
    before: &DatapathTables,
    after: &DatapathTables,
) -> Option<Probe> {
    let added: Vec<&Pod> = [&kind.forward, &kind.backward]
        .into_iter()
        .filter_map(|change| match change {
            Change::AddPod(pod) => Some(pod),
            _ => None,
        })
        .collect();
    let mut peers: Vec<IpAddr> = added.iter().flat_map(|pod| pod.ips.clone()).collect();
    for change in [&kind.forward, &kind.backward] {
        if let Change::AddService(service) = change {
            peers.extend(service.addresses());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for pod in state.pods.values() {
        if seen.insert((&pod.key.namespace, pod.labels.get("app"))) {
            peers.extend(pod.ips.iter().copied());
        }
    }
    for n in 0..state.namespaces.len().min(256) {
        peers.push(IpAddr::V4(Ipv4Addr::new(192, 168, n as u8, 1)));
    }
    peers.extend([
        IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
        IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
    ]);
    let mut pods: Vec<&Pod> = added
        .into_iter()
        .filter(|pod| pod.node_name.as_deref() == Some(LOCAL_NODE))
        .collect();
    if pods.is_empty() {
        pods = cluster::local_pods(state)
            .iter()
            .filter_map(|key| state.pods.get(key))
            .collect();
    }
    for pod in pods {
        let Some(pod_address) = pod.ips.first().copied() else {
            continue;
        };
        for &peer in peers.iter().filter(|peer| **peer != pod_address) {
            for direction in [Direction::Ingress, Direction::Egress] {
                for port in PORTS {
                    let verdict = |tables: &DatapathTables| {
                        passes(tables.verdict(&pod.key, direction, peer, TCP, port))
                    };
                    let passes_before = verdict(before);
                    if passes_before != verdict(after) {
                        return Some(Probe {
                            pod: pod.key.clone(),
                            pod_address,
                            direction,
                            peer,
                            port,
                            passes_before,
                        });
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::cluster::generate;

    #[test]
    fn every_event_flips_some_packet_and_its_undo_restores_the_tables() {
        let spec = ClusterSpec::new(1_000, 100);
        let mut state = generate(&spec);
        let Ok(kinds) = kinds(&spec, &state) else {
            panic!("the cluster has the pods the events need");
        };
        let before = compile(&state);
        for kind in &kinds {
            kind.forward.apply(&mut state);
            let after = compile(&state);
            assert_ne!(before, after, "{} changes the tables", kind.forward_label);
            let probe = find_probe(&state, kind, &before, &after);
            assert!(probe.is_some(), "{}: no packet flips", kind.forward_label);
            kind.backward.apply(&mut state);
            assert_eq!(compile(&state), before, "{} undone", kind.backward_label);
        }
        assert_eq!(state, generate(&spec));
    }

    #[test]
    fn a_pod_added_on_this_node_is_probed_on_its_own_hook() {
        let spec = ClusterSpec::new(1_000, 100);
        let mut state = generate(&spec);
        let Some(kind) = kinds(&spec, &state).ok().and_then(|k| k.into_iter().next()) else {
            panic!("events");
        };
        let before = compile(&state);
        kind.forward.apply(&mut state);
        let after = compile(&state);
        let Some(probe) = find_probe(&state, &kind, &before, &after) else {
            panic!("no probe");
        };
        assert_eq!(probe.pod.name, "bench-new-local");
        assert!(!probe.passes_before, "no ENDPOINTS entry: dropped before");
    }
}
