//! The lab's bridge topology (`--topology bridge`: pod veths are ports of one
//! bridge holding the pod subnet, as the bridge CNI and flannel make them) gives
//! the routed topology's verdicts: the tutorial's matrix in both families, and
//! Services (whose answers between two pods of the bridge are bridged) with egress
//! decided at the backend, and the node's probes.

use std::{path::Path, time::Duration};

use policy_agent::{
    lab::{
        probe::{Family, ProbeRoute},
        report::ProbeResult,
        topology::{Layout, TopologyKind},
        Lab, LabOptions,
    },
    model::{ObjectRef, Protocol},
    source::load_manifests,
};

use super::{
    clients_of_a_service_backend, probe_the_backend_through_its_services, result_of, support,
    TIMEOUT,
};

/// `(from, to, port, protocol, allowed)` of each result, for comparing runs.
fn verdicts(results: &[ProbeResult]) -> Vec<(String, String, u16, Protocol, bool)> {
    results
        .iter()
        .map(|r| (r.from.clone(), r.to.clone(), r.port, r.protocol, r.allowed))
        .collect()
}

#[test]
fn the_bridge_topology_gives_the_routed_matrix_of_the_tutorial_in_both_families() {
    support::require_root_and_bpf();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/secure-app");
    // The directory: the cluster with every step applied, as `lab run -f` reads it.
    let state = load_manifests(&example).unwrap_or_else(|e| panic!("{e}"));
    let mut matrices = Vec::new();
    for kind in [TopologyKind::Routed, TopologyKind::Bridge] {
        let options = LabOptions::of_layout(Layout::single(kind));
        let lab = Lab::up_with(state.clone(), &[], &options).unwrap_or_else(|e| panic!("lab: {e}"));
        let specs = lab.probe_specs(&[]);
        for family in [Family::Ipv4, Family::Ipv6] {
            let results = lab
                .probe_via(&specs, ProbeRoute::Pod(family), TIMEOUT)
                .unwrap_or_else(|e| panic!("probe: {e}"));
            matrices.push((kind, family, verdicts(&results)));
        }
    }
    let routed_v4 = &matrices[0].2;
    assert!(
        routed_v4.iter().any(|v| v.4) && routed_v4.iter().any(|v| !v.4),
        "the tutorial allows some and denies some: {routed_v4:?}"
    );
    for (kind, family, matrix) in &matrices[1..] {
        assert_eq!(
            matrix, routed_v4,
            "{kind:?} over {family:?} differs from the routed IPv4 matrix"
        );
    }
}

#[test]
fn on_a_bridge_services_decide_egress_at_the_backend_and_the_node_reaches_pods() {
    support::require_root_and_bpf();
    // Both clients are egress-isolated; only one may reach the backend pod, which
    // is isolated for ingress (the node's probes still pass).
    let options = LabOptions::of_layout(Layout::single(TopologyKind::Bridge));
    let lab = Lab::up_with(clients_of_a_service_backend(true), &[], &options)
        .unwrap_or_else(|e| panic!("lab: {e}"));
    let results = probe_the_backend_through_its_services(&lab);
    assert!(
        result_of(&results, "x/allowed", "x/backend", 80),
        "TCP through DNAT, its answer bridged back and un-DNATed"
    );
    assert!(
        result_of(&results, "x/allowed", "x/backend", 53),
        "a UDP echo through the Service"
    );
    assert!(!result_of(&results, "x/denied", "x/backend", 80));
    for family in [Family::Ipv4, Family::Ipv6] {
        let backend = ObjectRef::new("x", "backend");
        let reached = lab
            .probe_from_node(&backend, 80, Protocol::Tcp, family, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            reached,
            "the node reaches the isolated backend over {family:?}"
        );
    }
}
