use std::net::{IpAddr, Ipv4Addr};

use super::{
    case::ClusterCase,
    fixture::{self, Policies},
    skip_reason, NO_CNP_READER, NO_HOST_NETWORK,
};
use crate::model::{ObjectRef, Protocol, NAMESPACE_NAME_LABEL};

const GRYFFINDOR: &str = "network-policy-conformance-gryffindor";

/// A case of `steps` (YAML list items, indented by two spaces).
fn case(steps: &str) -> ClusterCase {
    let text = format!("fixture: network-policy-api\nupstream: {{test: T}}\nsteps:\n{steps}");
    ClusterCase::parse("t", "t.yaml".as_ref(), &text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn probe(to: &str, protocol: &str) -> String {
    format!(
        "  - {{from: {GRYFFINDOR}/harry-potter-0, to: {to}, protocol: {protocol}, port: 80, expect: dropped}}\n"
    )
}

fn policy(name: &str, cidr: &str) -> String {
    format!(
        "  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    \
         metadata: {{name: {name}, namespace: {GRYFFINDOR}}}\n    \
         spec: {{podSelector: {{}}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: '{cidr}'}}}}]}}]}}\n"
    )
}

#[test]
fn steps_replace_policies_by_kind_and_name_and_delete_them_through_the_manifest_reader() {
    let luna = "network-policy-conformance-ravenclaw/luna-lovegood-0";
    let case = case(&format!(
        "- subtest: a\n  apply:\n{}{}  probes:\n{}\
         - subtest: b\n  apply:\n{}  probes:\n{}\
         - subtest: c\n  delete:\n  - {{kind: NetworkPolicy, namespace: {GRYFFINDOR}, name: one}}\n  probes:\n{}",
        policy("one", &format!("{{host-cidr:{luna}}}")),
        policy("two", "10.0.0.0/8"),
        probe(luna, "TCP"),
        policy("one", "192.168.0.0/16"),
        probe(luna, "TCP"),
        probe(luna, "TCP"),
    ));
    let luna_ip = IpAddr::V4(Ipv4Addr::new(10, 244, 3, 10));
    let addresses = [(
        ObjectRef::new("network-policy-conformance-ravenclaw", "luna-lovegood-0"),
        luna_ip,
    )]
    .into();
    let mut state = fixture::cluster();
    let mut policies = Policies::default();
    let mut cidrs = Vec::new();
    for (i, step) in case.steps.iter().enumerate() {
        policies
            .change(step, &addresses, "s")
            .unwrap_or_else(|e| panic!("{e}"));
        policies
            .load_into(&mut state, "s")
            .unwrap_or_else(|e| panic!("{e}"));
        let one = state.policies.get(&ObjectRef::new(GRYFFINDOR, "one"));
        cidrs.push((
            i,
            state.policies.len(),
            one.map(|p| format!("{:?}", p.egress)),
        ));
    }
    let has = |text: &Option<String>, cidr: &str| text.as_deref().is_some_and(|t| t.contains(cidr));
    assert_eq!(cidrs[0].1, 2);
    assert!(has(&cidrs[0].2, "10.244.3.10/32"), "{cidrs:?}");
    assert_eq!(cidrs[1].1, 2, "a re-applied policy replaces its namesake");
    assert!(has(&cidrs[1].2, "192.168.0.0/16"), "{cidrs:?}");
    assert_eq!((cidrs[2].1, cidrs[2].2.is_none()), (1, true), "{cidrs:?}");
}

#[test]
fn a_relabelled_namespace_keeps_its_name_label_and_loses_the_others() {
    let case = case(&format!(
        "- subtest: a\n  relabel:\n  - {{namespace: {GRYFFINDOR}, labels: {{conformance-house: elsewhere}}}}\n  probes:\n{}",
        probe("network-policy-conformance-slytherin/draco-malfoy-0", "TCP")
    ));
    let mut state = fixture::cluster();
    fixture::relabel(&mut state, &case.steps[0]);
    let labels = state
        .namespaces
        .get(GRYFFINDOR)
        .map(|ns| ns.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        labels.get(fixture::HOUSE_LABEL).map(String::as_str),
        Some("elsewhere")
    );
    assert_eq!(
        labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
        Some(GRYFFINDOR)
    );
    assert_eq!(labels.len(), 2);
}

#[test]
fn host_network_pods_sit_on_the_nodes_with_their_addresses() {
    let nodes =
        ["a", "b"].map(|name| fixture::node(name, vec![IpAddr::V4(Ipv4Addr::new(172, 18, 0, 2))]));
    let pods = fixture::host_network_pods(&nodes);
    let placed: Vec<(String, Option<String>, bool)> = pods
        .iter()
        .map(|p| {
            (
                p.key.to_string(),
                p.node_name.clone(),
                p.host_network && p.ips == nodes[0].ips,
            )
        })
        .collect();
    assert_eq!(
        placed,
        [
            (
                "network-policy-conformance-forbidden-forrest/centaur-0".into(),
                Some("a".into()),
                true
            ),
            (
                "network-policy-conformance-forbidden-forrest/centaur-1".into(),
                Some("b".into()),
                true
            ),
        ]
    );
    assert_eq!(
        nodes[0].labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    assert!(fixture::host_network_pods(&[]).is_empty());
}

#[test]
fn skips_say_why_and_a_runnable_case_is_not_skipped() {
    let centaur = "network-policy-conformance-forbidden-forrest/centaur-1";
    let draco = "network-policy-conformance-slytherin/draco-malfoy-0";
    let cnp = "  apply:\n  - {apiVersion: policy.networking.k8s.io/v1alpha2, kind: ClusterNetworkPolicy, metadata: {name: x}, spec: {}}\n";
    let host = case(&format!(
        "- subtest: a\n{cnp}  probes:\n{}",
        probe(centaur, "TCP")
    ));
    let from_host = case(&format!(
        "- subtest: a\n{cnp}  probes:\n  - {{from: {centaur}, to: {draco}, protocol: TCP, port: 80, expect: allowed}}\n"
    ));
    let sctp = case(&format!(
        "- subtest: a\n{cnp}  probes:\n{}",
        probe(draco, "SCTP")
    ));
    let mixed = case(&format!(
        "- subtest: a\n{cnp}  probes:\n{}{}",
        probe(draco, "SCTP"),
        probe(draco, "UDP")
    ));
    let plain = case(&format!("- subtest: a\n  probes:\n{}", probe(draco, "TCP")));
    assert_eq!(skip_reason(&host, true, "S"), None);
    assert_eq!(host.host_network_ports(), vec![(80, Protocol::Tcp)]);
    assert_eq!(
        skip_reason(&from_host, true, "S").as_deref(),
        Some(NO_HOST_NETWORK)
    );
    assert_eq!(skip_reason(&sctp, false, "S").as_deref(), Some("S"));
    assert_eq!(
        skip_reason(&mixed, false, "S").as_deref(),
        Some(NO_CNP_READER)
    );
    assert_eq!(skip_reason(&mixed, true, "S"), None);
    assert_eq!(skip_reason(&plain, false, "S"), None);
}
