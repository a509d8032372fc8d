//! Assembling states, and D6: a NetworkPolicy that does not convert fails closed.
//!
//! The last tests run the policy engine on the state (test-only: `source` code
//! never imports `policy`) to show the stand-in isolates its namespace's pods.

#![expect(
    clippy::expect_used,
    reason = "a malformed test fixture should fail the test"
)]

use k8s_openapi::api::{core::v1 as core, networking::v1 as net};
use serde_json::json;

use super::*;
use crate::source::state::OverCapCounts;
use crate::{
    model::{LabelSelector, ObjectRef, PolicyMode, PolicyTypes, Protocol},
    policy::{
        compiler::compile,
        evaluator::{evaluate, End, Query, SideVerdict},
        tables::Direction,
    },
    source::convert::MODE_ANNOTATION,
};

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("fixture has the shape of its kind")
}

fn pod(namespace: &str, name: &str, ip: &str) -> core::Pod {
    from_json(json!({
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": ip}
    }))
}

/// `db` in `prod` with a port name the API server would reject.
fn bad_policy(extra: serde_json::Value) -> net::NetworkPolicy {
    let mut value = json!({
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                 "ingress": [{"ports": [{"port": "Not_A_Name"}]}]}
    });
    if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        for (key, extra) in extra {
            match (base.get_mut(key), extra) {
                (Some(serde_json::Value::Object(base)), serde_json::Value::Object(extra)) => {
                    base.extend(extra.clone())
                }
                _ => {
                    base.insert(key.clone(), extra.clone());
                }
            }
        }
    }
    from_json(value)
}

/// prod/web, prod/db, other/client and the policy `np`, through `add_or_record`.
fn state_with(np: &net::NetworkPolicy) -> (ClusterState, Vec<String>) {
    let mut builder = StateBuilder::default();
    builder.add_or_record(&pod("prod", "web", "10.0.0.1"));
    builder.add_or_record(&pod("prod", "db", "10.0.0.2"));
    builder.add_or_record(&pod("other", "client", "10.0.1.1"));
    builder.add_or_record(np);
    builder.finish()
}

fn key(text: &str) -> ObjectRef {
    let (namespace, name) = text.split_once('/').expect("namespace/name");
    ObjectRef::new(namespace, name)
}

#[test]
fn a_policy_that_does_not_convert_stands_in_as_isolating_its_whole_namespace() {
    let np = bad_policy(json!({"spec": {"policyTypes": ["Ingress"]}}));
    let (state, errors) = state_with(&np);

    let stand_in = state.policies.get(&key("prod/db")).expect("the stand-in");
    assert_eq!(stand_in.pod_selector, LabelSelector::default());
    assert_eq!(
        stand_in.policy_types,
        PolicyTypes {
            ingress: true,
            egress: false
        }
    );
    assert!(stand_in.ingress.is_empty() && stand_in.egress.is_empty());
    assert_eq!(stand_in.mode, PolicyMode::Enforce);
    assert_eq!(errors.len(), 1, "{errors:?}");
    for expected in [
        "NetworkPolicy prod/db",
        "spec.ingress[0].ports[0].port",
        "fail closed",
    ] {
        assert!(errors[0].contains(expected), "{expected} in {}", errors[0]);
    }
}

#[test]
fn unknown_policy_types_isolate_both_directions_and_audit_mode_is_kept() {
    let np = bad_policy(json!({
        "metadata": {"annotations": {MODE_ANNOTATION: "audit"}},
        "spec": {"policyTypes": ["Ingress", "Sideways"]}
    }));
    let (state, errors) = state_with(&np);
    let stand_in = state.policies.get(&key("prod/db")).expect("the stand-in");
    assert_eq!(
        stand_in.policy_types,
        PolicyTypes {
            ingress: true,
            egress: true
        }
    );
    assert_eq!(stand_in.mode, PolicyMode::Audit);
    assert!(
        errors[0].contains("spec.ingress[0].ports[0].port"),
        "{errors:?}"
    );
}

#[test]
fn a_pod_that_does_not_convert_is_left_out_and_named() {
    let mut builder = StateBuilder::default();
    builder.add_or_record(&pod("prod", "web", "10.0.0.1"));
    builder.add_or_record(&pod("prod", "broken", "10.0.0.999"));
    let (state, errors) = builder.finish();
    assert_eq!(state.pods.keys().collect::<Vec<_>>(), [&key("prod/web")]);
    assert_eq!(
        errors,
        [
            "Pod prod/broken: status.podIP: \"10.0.0.999\" is not an IPv4 or IPv6 address; \
          the object is left out"
        ]
    );
    assert!(state.namespaces.contains_key("prod"), "implicit namespace");
}

#[test]
fn the_same_key_twice_keeps_the_first_and_names_the_key() {
    let mut builder = StateBuilder::default();
    let first = crate::model::builders::pod("prod", "web")
        .ip("10.0.0.1")
        .build();
    let second = crate::model::builders::pod("prod", "web")
        .ip("10.0.0.2")
        .build();
    assert_eq!(builder.add::<core::Pod>(first.clone()), Ok(()));
    assert_eq!(builder.add::<core::Pod>(second), Err(key("prod/web")));
    let (state, _) = builder.finish();
    assert_eq!(state.pods.get(&key("prod/web")), Some(&first));
}

fn query(src: &str, dst: &str) -> Query {
    Query {
        src: End::Pod(key(src)),
        dst: End::Pod(key(dst)),
        protocol: Protocol::Tcp,
        port: 80,
    }
}

#[test]
fn the_evaluator_denies_what_the_stand_in_isolates_and_nothing_else() {
    let np = bad_policy(json!({"spec": {"policyTypes": ["Ingress", "Egress"]}}));
    let (state, _) = state_with(&np);
    let prod_db = vec![key("prod/db")];

    // Both pods of prod are isolated for ingress, even web, which db's own
    // podSelector would not have selected.
    for dst in ["prod/web", "prod/db"] {
        let verdict = evaluate(&state, &query("other/client", dst));
        assert!(!verdict.allowed, "other/client -> {dst}");
        assert_eq!(
            verdict.ingress,
            SideVerdict::Dropped {
                isolated_by: prod_db.clone()
            }
        );
    }
    let verdict = evaluate(&state, &query("prod/web", "other/client"));
    assert!(!verdict.allowed, "egress from prod/web");
    assert_eq!(
        verdict.egress,
        SideVerdict::Dropped {
            isolated_by: prod_db
        }
    );
    // The other namespace is untouched.
    let verdict = evaluate(&state, &query("other/client", "other/client"));
    assert!(verdict.allowed);
}

#[test]
fn the_compiled_tables_drop_what_the_stand_in_isolates() {
    let np = bad_policy(json!({"spec": {"policyTypes": ["Ingress", "Egress"]}}));
    let (state, _) = state_with(&np);
    let tables = compile(&state, &[], |_| true);
    let client = "10.0.1.1".parse().expect("ip");
    let web = "10.0.0.1".parse().expect("ip");
    for pod in ["prod/web", "prod/db"] {
        for direction in [Direction::Ingress, Direction::Egress] {
            assert_eq!(
                tables.lookup(&key(pod), direction, client, 6, 80),
                None,
                "{pod} {direction:?}"
            );
        }
    }
    assert!(tables
        .lookup(&key("other/client"), Direction::Ingress, web, 6, 80)
        .is_some());
}

/// `pod`, with `labels` labels more than `caps::MAX_LABELS` allows when `over`.
fn labelled(namespace: &str, name: &str, ip: &str, over: bool) -> core::Pod {
    let mut pod = pod(namespace, name, ip);
    if over {
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        for i in 0..crate::source::convert::caps::MAX_LABELS {
            labels.insert(format!("extra-{i}"), "x".into());
        }
    }
    pod
}

/// A policy in `other` admitting TCP 80 to every pod there from pods whose `app`
/// is not `evil`, in namespaces whose `team` is not `evil`: a pod or namespace
/// whose labels were dropped would match it.
fn not_evil() -> net::NetworkPolicy {
    from_json(json!({
        "metadata": {"name": "not-evil", "namespace": "other"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{
            "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["evil"]}]},
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["evil"]}]}
        }], "ports": [{"port": 80}]}]}
    }))
}

#[test]
fn a_pod_over_a_cap_is_an_address_less_stub_and_its_namespace_is_isolated() {
    let mut builder = StateBuilder::default();
    builder.add_or_record(&labelled("prod", "evil", "10.0.0.3", true));
    builder.add_or_record(&pod("prod", "web", "10.0.0.1"));
    builder.add_or_record(&pod("other", "client", "10.0.1.1"));
    builder.add_or_record(&not_evil());
    let (state, errors, over_cap) = builder.finish_counted();
    assert_eq!(
        errors,
        [
            "Pod prod/evil: metadata.labels: 257 labels, over the cap of 256; the pod stands in \
          without addresses or labels, and every pod of its namespace is isolated both ways \
          with no allow from podwall (fail closed)"
        ]
    );
    assert_eq!(over_cap, OverCapCounts::from([("Pod", 1)]));
    let stub = state.pods.get(&key("prod/evil")).expect("the stub");
    assert!(stub.ips.is_empty() && stub.labels.is_empty());
    assert_eq!(
        stub.node_name.as_deref(),
        Some("node-a"),
        "still scheduled there"
    );
    let isolating = state
        .policies
        .get(&key("prod/podwall:over-cap"))
        .expect("the namespace's isolation");
    assert!(isolating.policy_types.ingress && isolating.policy_types.egress);
    // Its old address is no pod: the NotIn selectors cannot admit it.
    let from_old_address = Query {
        src: End::Address("10.0.0.3".parse().expect("ip")),
        ..query("prod/web", "other/client")
    };
    assert!(!evaluate(&state, &from_old_address).allowed);
    // Its namespace is isolated both ways; other namespaces are not touched.
    assert!(!evaluate(&state, &query("other/client", "prod/web")).allowed);
    assert!(!evaluate(&state, &query("prod/web", "other/client")).allowed);
    let tables = compile(&state, &[], |pod| {
        pod.node_name.as_deref() == Some("node-a")
    });
    assert!(
        !tables.endpoints.contains_key(&key("prod/evil")),
        "never an endpoint"
    );
}

#[test]
fn a_namespace_over_a_cap_stubs_every_pod_of_it() {
    let mut team: core::Namespace = from_json(json!({
        "metadata": {"name": "prod", "labels": {"team": "evil"}}
    }));
    let labels = team.metadata.labels.get_or_insert_with(Default::default);
    labels.insert("k".into(), "v".repeat(64));
    let mut builder = StateBuilder::default();
    builder.add_or_record(&team);
    builder.add_or_record(&pod("prod", "web", "10.0.0.1"));
    builder.add_or_record(&pod("other", "client", "10.0.1.1"));
    builder.add_or_record(&not_evil());
    let (state, errors, over_cap) = builder.finish_counted();
    assert_eq!(over_cap, OverCapCounts::from([("Namespace", 1)]));
    assert!(
        errors[0].starts_with("Namespace prod: metadata.labels[\"k\"]: 64 bytes of value"),
        "{errors:?}"
    );
    let web = state.pods.get(&key("prod/web")).expect("the stub");
    assert!(web.ips.is_empty() && web.labels.is_empty());
    // With the namespace's labels unknown, team NotIn [evil] must not admit it.
    let from_web = Query {
        src: End::Address("10.0.0.1".parse().expect("ip")),
        ..query("prod/web", "other/client")
    };
    assert!(!evaluate(&state, &from_web).allowed);
}

#[test]
fn objects_past_a_count_cap_stand_in_as_over_cap_ones_in_key_order() {
    let mut builder = StateBuilder::with_count_caps(10, 2, 10, 1);
    for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
        builder.add_or_record(&pod("prod", name, ip));
    }
    builder.add_or_record(&not_evil());
    builder.add_or_record(&bad_policy(
        json!({"metadata": {"name": "a-first"}, "spec": {"ingress": []}}),
    ));
    let (state, errors, over_cap) = builder.finish_counted();
    assert_eq!(
        over_cap,
        OverCapCounts::from([("NetworkPolicy", 1), ("Pod", 1)])
    );
    assert!(
        state.pods[&key("prod/c")].ips.is_empty(),
        "the last pod by name"
    );
    assert!(!state.pods[&key("prod/b")].ips.is_empty());
    // `prod/a-first` sorts after `other/not-evil`: it is past the cap of one.
    let stand_in = &state.policies[&key("prod/a-first")];
    assert!(stand_in.ingress.is_empty() && stand_in.policy_types.egress);
    assert!(!state.policies[&key("other/not-evil")].ingress.is_empty());
    assert!(state.policies.contains_key(&key("prod/podwall:over-cap")));
    assert_eq!(
        errors,
        [
            "NetworkPolicies: 2 in the cluster, over the cap of 1 handled; the last 1 by \
             namespace/name isolate every pod of their namespace both ways and allow nothing \
             (fail closed)",
            "Pods: 3 in the cluster, over the cap of 2 handled; the last 1 by namespace/name \
             stand in without addresses or labels, and their namespaces are isolated both \
             ways (fail closed)",
        ]
    );
}

#[test]
fn a_kept_state_leaves_a_kind_over_its_count_cap_to_a_whole_rebuild() {
    let mut builder = StateBuilder::with_count_caps(10, 2, 10, 10);
    builder.add_or_record(&pod("prod", "a", "10.0.0.1"));
    builder.add_or_record(&pod("prod", "b", "10.0.0.2"));
    let mut kept = builder.finish_kept();
    let third = pod("prod", "c", "10.0.0.3");
    assert_eq!(kept.apply(&SourceKey::of(&third), Some(&third)), Ok(()));
    assert_eq!(kept.settle(), Err(NeedsRebuild));
}

#[test]
fn a_kept_state_built_over_a_cap_takes_no_change_object_by_object() {
    let mut builder = StateBuilder::with_count_caps(10, 1, 10, 10);
    builder.add_or_record(&pod("prod", "a", "10.0.0.1"));
    builder.add_or_record(&pod("prod", "b", "10.0.0.2"));
    let mut kept = builder.finish_kept();
    assert_eq!(kept.over_cap().get("Pod"), Some(&1));
    let gone = pod("prod", "b", "10.0.0.2");
    assert_eq!(
        kept.apply::<core::Pod>(&SourceKey::of(&gone), None),
        Err(NeedsRebuild)
    );
}

#[test]
fn cluster_network_policies_past_their_count_cap_stand_in_as_admin_deny_everything() {
    let mut builder = StateBuilder::default().with_cluster_policy_cap(1);
    for name in ["a", "b"] {
        let cnp: crate::source::convert::ClusterNetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"tier": "Baseline", "priority": 7, "subject": {"namespaces": {}},
                     "egress": [{"action": "Accept", "to": [{"namespaces": {}}]}]}
        }))
        .expect("fixture");
        builder.add_or_record(&cnp);
    }
    let (state, errors, over_cap) = builder.finish_counted();
    assert_eq!(over_cap, OverCapCounts::from([("ClusterNetworkPolicy", 1)]));
    let kept = &state.cluster_policies["a"];
    assert_eq!((kept.priority, kept.egress[0].fails_closed()), (7, false));
    let stand_in = &state.cluster_policies["b"];
    assert_eq!(stand_in.priority, 0, "the last by name stands in");
    assert!(stand_in.ingress.is_empty(), "it had no ingress rules");
    assert_eq!(stand_in.egress.len(), 1);
    assert_eq!(stand_in.egress[0].action, crate::model::RuleAction::Deny);
    assert!(stand_in.egress[0].fails_closed());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("ClusterNetworkPolicies: 2 in the cluster, over the cap of 1"),
        "{errors:?}"
    );
}
