//! The ClusterNetworkPolicy conformance cases (`tests/data/cluster-conformance`,
//! translated from kubernetes-sigs/network-policy-api) against podwall's reference
//! evaluator, no kernel involved: upstream's fixture with fixed addresses, two
//! nodes labelled as kind labels them and the host-network pods on them, each
//! step's policies read by the manifest reader, and for every probe of every
//! step `evaluate` compared with what upstream expects.
//!
//! Needs the ClusterNetworkPolicy conversion in the manifest reader and the
//! evaluator's tiers: without the first it fails at the first case that applies
//! a ClusterNetworkPolicy (saying the reader read none), without the second it
//! fails listing the probes the evaluator gets wrong. Nothing here is skipped.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use policy_agent::{
    causes::causes,
    lab::conformance::{
        case_files,
        cluster::{
            case::ClusterCase,
            fixture::{self, Policies},
        },
    },
    model::{ClusterState, ObjectRef},
    policy::evaluator::{evaluate, End, Query},
};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/cluster-conformance")
}

/// The fixture with addresses: pod-network pods in 10.244.<namespace>.0/24, two
/// nodes (172.18.0.2 and .3, as kind's network numbers them), and the
/// host-network pods on them with their node's address.
fn fixture_state() -> ClusterState {
    let mut state = fixture::cluster();
    let namespaces: Vec<String> = state.namespaces.keys().cloned().collect();
    let keys: Vec<ObjectRef> = state.pods.keys().cloned().collect();
    for key in keys {
        let Some(pod) = state.pods.get_mut(&key) else {
            continue;
        };
        let n = namespaces
            .iter()
            .position(|ns| *ns == key.namespace)
            .unwrap_or(0);
        let i = key
            .name
            .rsplit('-')
            .next()
            .and_then(|i| i.parse::<u8>().ok());
        let i = i.unwrap_or_else(|| panic!("{key}: no replica number"));
        pod.ips = vec![IpAddr::V4(Ipv4Addr::new(10, 244, n as u8, 10 + i))];
    }
    let nodes = [("kind-worker", 2), ("kind-worker2", 3)]
        .map(|(name, last)| fixture::node(name, vec![IpAddr::V4(Ipv4Addr::new(172, 18, 0, last))]));
    for pod in fixture::host_network_pods(&nodes) {
        state.pods.insert(pod.key.clone(), pod);
    }
    for node in nodes {
        state.nodes.insert(node.name.clone(), node);
    }
    state
}

/// How a probe names its ends: a pod-network pod as itself, a host-network pod
/// by its (node's) address, which is what upstream connects to.
fn end(state: &ClusterState, pod: &ObjectRef) -> End {
    match state.pods.get(pod) {
        Some(p) if p.host_network => match p.ips.first() {
            Some(ip) => End::Address(*ip),
            None => panic!("{pod}: a host-network pod without an address"),
        },
        _ => End::Pod(pod.clone()),
    }
}

#[test]
fn every_probe_of_every_cluster_case_agrees_with_the_reference_evaluator() {
    let files = case_files(&cases_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.len(), 24, "one case per upstream test");
    let base = fixture_state();
    let addresses = fixture::addresses(&base);
    let mut checked = 0;
    let mut disagreements = Vec::new();
    for file in &files {
        let case = ClusterCase::load(file)
            .unwrap_or_else(|e| panic!("{}: {}", file.display(), causes(&e)));
        let mut state = base.clone();
        let mut policies = Policies::default();
        for (index, step) in case.steps.iter().enumerate() {
            let field = format!("steps[{index}]");
            let fail = |e: policy_agent::lab::conformance::CaseError| {
                panic!("{}: {}", case.name, causes(&e))
            };
            policies
                .change(step, &addresses, &field)
                .unwrap_or_else(fail);
            policies.load_into(&mut state, &field).unwrap_or_else(fail);
            fixture::relabel(&mut state, step);
            for probe in &step.probes {
                let verdict = evaluate(
                    &state,
                    &Query {
                        src: end(&state, &probe.from),
                        dst: end(&state, &probe.to),
                        protocol: probe.protocol,
                        port: probe.port,
                    },
                );
                checked += 1;
                if verdict.allowed != probe.allowed {
                    disagreements.push(format!(
                        "{} step {} ({}): {} -> {} {}/{} expected {}, evaluator {:?}",
                        case.name,
                        index + 1,
                        step.subtest,
                        probe.from,
                        probe.to,
                        probe.port,
                        probe.protocol,
                        if probe.allowed { "allowed" } else { "dropped" },
                        verdict
                    ));
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {checked} probes disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert_eq!(checked, 301, "every upstream probe is checked");
}
