//! ClusterNetworkPolicies and Nodes through the watch: converted like the other
//! kinds, a rejected policy standing in fail-closed, a Node's heartbeat changing
//! nothing, and a CRD that is not installed (404) counting as no policies until
//! it is.

use serde_json::{json, Value};

use super::{summary, Harness, PATIENCE};
use crate::support::apiserver::{ApiServer, Resource};
use policy_agent::{
    model::{ClusterSubject, RuleAction, Tier},
    source::convert::{self, ClusterNetworkPolicy},
};

/// An Admin ClusterNetworkPolicy `name` at `priority` denying ingress from the
/// namespaces labelled `team: monitoring`.
fn cnp(name: &str, tier: &str, priority: i64) -> Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name, "annotations": {"note": "dropped by trimming"},
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"tier": tier, "priority": priority, "subject": {"namespaces": {}},
                 "ingress": [{"action": "Deny",
                              "from": [{"namespaces": {"matchLabels": {"team": "monitoring"}}}]}]},
        "status": {"conditions": []}
    })
}

/// A Node `name` at `ip` with a Ready condition whose heartbeat is `beat`.
fn node(name: &str, ip: &str, beat: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"role": "infra"}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                 {"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastHeartbeatTime": beat}]}
    })
}

#[tokio::test]
async fn cluster_network_policies_and_nodes_are_watched_and_converted() {
    let server = ApiServer::start().unwrap_or_else(|e| panic!("stand-in: {e}"));
    server.create_value(cnp("guardrails", "Admin", 10));
    server.create_value(node("n1", "10.0.0.2", "2026-01-01T00:00:00Z"));
    let mut h = Harness::new(server).await;

    let snapshot = h.synced().await;
    assert!(!snapshot.stale, "{}", summary(&snapshot));
    let wire: ClusterNetworkPolicy = serde_json::from_value(cnp("guardrails", "Admin", 10))
        .unwrap_or_else(|e| panic!("fixture: {e}"));
    let expected = convert::cluster_network_policy(&wire).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        snapshot.state.cluster_policies.get("guardrails"),
        Some(&expected)
    );
    let ips = snapshot.state.nodes.get("n1").map(|n| n.ips.clone());
    assert_eq!(ips, "10.0.0.2".parse().ok().map(|ip| vec![ip]));

    // A heartbeat changes nothing policy reads.
    let state = snapshot.state.clone();
    h.server
        .update_value(node("n1", "10.0.0.2", "2026-01-01T00:00:10Z"));
    h.server.update_value(cnp("guardrails", "Admin", 20));
    let moved = h
        .wait_for("the priority change", |s| {
            s.state
                .cluster_policies
                .get("guardrails")
                .map(|p| p.priority)
                == Some(20)
        })
        .await;
    assert_eq!(
        moved.state.nodes, state.nodes,
        "the heartbeat changed no node"
    );

    h.server.delete::<ClusterNetworkPolicy>("", "guardrails");
    h.server
        .delete::<k8s_openapi::api::core::v1::Node>("", "n1");
    h.wait_for("both deleted", |s| {
        s.state.cluster_policies.is_empty() && s.state.nodes.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_rejected_cluster_network_policy_stands_in_as_an_admin_deny_until_fixed() {
    let mut h = Harness::start().await;
    h.synced().await;

    h.server.create_value(cnp("guardrails", "Middle", 10));
    let snapshot = h
        .wait_for("the stand-in", |s| {
            s.state.cluster_policies.contains_key("guardrails")
        })
        .await;
    let stand_in = &snapshot.state.cluster_policies["guardrails"];
    assert_eq!((stand_in.tier, stand_in.priority), (Tier::Admin, 0));
    assert!(matches!(stand_in.subject, ClusterSubject::Namespaces(_)));
    assert_eq!(stand_in.ingress.len(), 1);
    assert_eq!(stand_in.ingress[0].action, RuleAction::Deny);
    assert!(stand_in.ingress[0].fails_closed());
    assert!(stand_in.egress.is_empty(), "it has no egress rules");
    assert!(
        snapshot.conversion_errors.iter().any(|e| e.starts_with(
            "ClusterNetworkPolicy guardrails: spec.tier: \"Middle\" is not Admin or Baseline"
        )),
        "{:?}",
        snapshot.conversion_errors
    );

    h.server.update_value(cnp("guardrails", "Baseline", 10));
    let fixed = h
        .wait_for("the fixed policy", |s| {
            s.state.cluster_policies.get("guardrails").map(|p| p.tier) == Some(Tier::Baseline)
        })
        .await;
    assert!(
        fixed.conversion_errors.is_empty(),
        "{:?}",
        fixed.conversion_errors
    );
}

#[tokio::test]
async fn without_the_crd_the_source_syncs_with_no_cluster_policies_and_picks_them_up_later() {
    let server = ApiServer::start().unwrap_or_else(|e| panic!("stand-in: {e}"));
    server.set_served(Resource::ClusterNetworkPolicies, false);
    server.create_value(node("n1", "10.0.0.2", "2026-01-01T00:00:00Z"));
    let mut h = Harness::new(server).await;

    let snapshot = h.synced().await;
    assert!(
        !snapshot.stale,
        "a missing CRD is no failure: {}",
        summary(&snapshot)
    );
    assert_eq!(snapshot.last_error, None);
    assert!(snapshot.state.cluster_policies.is_empty());
    assert_eq!(snapshot.state.nodes.len(), 1, "the other kinds are there");
    // It keeps asking (with the backoff), without going stale.
    let retried = h
        .server
        .wait_until(PATIENCE, |s| {
            s.counts(Resource::ClusterNetworkPolicies).lists >= 3
        })
        .await;
    assert!(
        retried,
        "{:?}",
        h.server.counts(Resource::ClusterNetworkPolicies)
    );
    assert!(!h.snapshots.borrow().stale);

    // The server goes down and comes back, still without the CRD: stale, then
    // fresh again.
    h.server.set_unavailable(true);
    h.wait_for("the policy list failing while the server is down", |s| {
        s.stale
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("ClusterNetworkPolicy watch"))
    })
    .await;
    h.server.set_unavailable(false);
    h.wait_for("fresh once it answers (404) again", |s| !s.stale)
        .await;

    // The CRD is installed and a policy created: it shows up.
    h.server.create_value(cnp("guardrails", "Admin", 10));
    h.server.set_served(Resource::ClusterNetworkPolicies, true);
    let snapshot = h
        .wait_for("the policy once the CRD is there", |s| {
            s.state.cluster_policies.contains_key("guardrails")
        })
        .await;
    assert!(!snapshot.stale);

    // The CRD is removed: its policies go, and the source stays fresh.
    h.server.set_served(Resource::ClusterNetworkPolicies, false);
    let snapshot = h
        .wait_for("no policies once the CRD is gone", |s| {
            s.state.cluster_policies.is_empty() && !s.stale
        })
        .await;
    assert_eq!(snapshot.state.nodes.len(), 1);
}
