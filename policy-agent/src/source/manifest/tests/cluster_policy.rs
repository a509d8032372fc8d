//! ClusterNetworkPolicies and Nodes in manifests, next to NetworkPolicies.

use super::{assert_load_fails, load, POLICY};
use crate::model::{ClusterPeer, ClusterSubject, PolicyMode, RuleAction, Tier};

const CNP: &str = "apiVersion: policy.networking.k8s.io/v1alpha2\n\
                   kind: ClusterNetworkPolicy\n\
                   metadata: {name: tenant-guardrails, annotations: {podwall.io/mode: audit}}\n\
                   spec:\n  tier: Admin\n  priority: 10\n  subject: {namespaces: {}}\n\
                   \x20 ingress:\n  - {name: no-monitoring, action: Deny, \
                   from: [{namespaces: {matchLabels: {team: monitoring}}}]}\n";

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {role: infra}}\n\
                    status: {addresses: [{type: InternalIP, address: 10.0.0.2}]}\n";

#[test]
fn network_policies_cluster_network_policies_and_nodes_load_together() {
    let text = format!("{POLICY}---\n{CNP}---\n{NODE}");
    let state = load(&[("all.yaml", &text)]).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(state.policies.len(), 1);
    let cnp = &state.cluster_policies["tenant-guardrails"];
    assert_eq!((cnp.tier, cnp.priority), (Tier::Admin, 10));
    assert_eq!(cnp.mode, PolicyMode::Audit);
    assert_eq!(cnp.ingress[0].action, RuleAction::Deny);
    assert!(matches!(cnp.subject, ClusterSubject::Namespaces(_)));
    assert_eq!(state.nodes["n1"].ips.len(), 1);
    // Cluster-scoped objects imply no namespace.
    assert_eq!(
        state.namespaces.keys().collect::<Vec<_>>(),
        vec!["prod"],
        "only the NetworkPolicy's namespace"
    );
    let names = state.object_names();
    assert!(
        names.contains(&"ClusterNetworkPolicy tenant-guardrails".to_string())
            && names.contains(&"Node n1".to_string()),
        "{names:?}"
    );
}

#[test]
fn a_cluster_scoped_object_with_a_namespace_is_an_error() {
    let with_namespace = CNP.replace(
        "{name: tenant-guardrails,",
        "{name: tenant-guardrails, namespace: prod,",
    );
    assert_load_fails(
        &[("cnp.yaml", &with_namespace)],
        "cnp.yaml: ClusterNetworkPolicy tenant-guardrails: metadata.namespace: this kind is \
         cluster-scoped",
    );
    let node = NODE.replace("{name: n1,", "{name: n1, namespace: prod,");
    assert_load_fails(
        &[("node.yaml", &node)],
        "node.yaml: Node n1: metadata.namespace",
    );
}

#[test]
fn a_rejected_cluster_network_policy_stops_the_load_naming_object_and_field() {
    let bad_tier = CNP.replace("tier: Admin", "tier: admin");
    assert_load_fails(
        &[("cnp.yaml", &bad_tier)],
        "cnp.yaml: ClusterNetworkPolicy tenant-guardrails: spec.tier: \"admin\" is not Admin \
         or Baseline",
    );
    let old_version = CNP.replace("v1alpha2", "v1alpha1");
    assert_load_fails(
        &[("cnp.yaml", &old_version)],
        "cnp.yaml: ClusterNetworkPolicy tenant-guardrails: apiVersion",
    );
    assert_load_fails(
        &[("a.yaml", CNP), ("b.yaml", CNP)],
        "b.yaml: ClusterNetworkPolicy tenant-guardrails is defined twice (first in",
    );
}

#[test]
fn a_rejected_peer_loads_as_an_invalid_peer_naming_its_field() {
    let two_fields = CNP.replace(
        "from: [{namespaces: {matchLabels: {team: monitoring}}}]",
        "from: [{namespaces: {}}, {namespaces: {}, pods: {podSelector: {}}}]",
    );
    let state = load(&[("cnp.yaml", &two_fields)]).unwrap_or_else(|err| panic!("{err}"));
    let rule = &state.cluster_policies["tenant-guardrails"].ingress[0];
    match &rule.peers[1] {
        ClusterPeer::Invalid { field, reason } => {
            assert_eq!(field, "spec.ingress[0].from[1]");
            assert!(
                reason.starts_with("exactly one of namespaces or pods must be set"),
                "{reason}"
            );
        }
        other => panic!("converted to {other:?}"),
    }
    assert!(rule.fails_closed());
}
