//! Caps: an object over one is a conversion error naming the field and the cap;
//! trimming strips it to what its stand-in needs and converts to the same error.

use k8s_openapi::api::core::v1 as core;
use serde_json::json;

use super::*;
use crate::source::{
    api_server::trim,
    convert::caps::{
        MAX_CONTAINER_PORTS, MAX_LABELS, MAX_LABEL_VALUE_BYTES, MAX_POLICY_PEERS, MAX_POLICY_RULES,
        OVER_CAP_ANNOTATION,
    },
};

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("fixture has the shape of its kind")
}

/// `prod/big` with `rules` empty ingress rules, each with `peers` pod peers, in
/// `mode` (the annotation), without policyTypes.
fn big_policy(rules: usize, peers: usize, egress: bool) -> net::NetworkPolicy {
    let peer = json!({"podSelector": {"matchLabels": {"app": "x"}}});
    let rule = json!({"from": vec![peer; peers]});
    let mut spec =
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": vec![rule; rules]});
    if egress {
        spec["egress"] = json!([{}]);
    }
    from_json(json!({
        "metadata": {"name": "big", "namespace": "prod", "annotations": {MODE_ANNOTATION: "audit"}},
        "spec": spec
    }))
}

fn over_cap(result: Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(error @ ConvertError::OverCap { .. }) => error.to_string(),
        other => panic!("want an over-cap error, got {other:?}"),
    }
}

#[test]
fn a_policy_at_a_cap_converts_and_one_past_it_is_an_error_naming_the_cap() {
    assert!(network_policy(&big_policy(MAX_POLICY_RULES - 1, 0, true)).is_ok());
    assert_eq!(
        over_cap(network_policy(&big_policy(MAX_POLICY_RULES, 0, true))),
        format!(
            "spec: {} rules, over the cap of {MAX_POLICY_RULES}",
            MAX_POLICY_RULES + 1
        )
    );
    assert!(network_policy(&big_policy(1, MAX_POLICY_PEERS, false)).is_ok());
    assert_eq!(
        over_cap(network_policy(&big_policy(
            2,
            MAX_POLICY_PEERS / 2 + 1,
            false
        ))),
        format!(
            "spec: {} peers, over the cap of {MAX_POLICY_PEERS}",
            MAX_POLICY_PEERS + 2
        )
    );
}

/// A pod with `labels` labels, `value_bytes` long values, and `ports` container
/// ports.
fn pod_with(labels: usize, value_bytes: usize, ports: usize) -> core::Pod {
    let labels: serde_json::Map<String, serde_json::Value> = (0..labels)
        .map(|i| (format!("k{i}"), json!("v".repeat(value_bytes))))
        .collect();
    let ports: Vec<serde_json::Value> = (0..ports)
        .map(|i| json!({"containerPort": 1000 + i}))
        .collect();
    from_json(json!({
        "metadata": {"name": "p", "namespace": "prod", "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
        "status": {"phase": "Running", "podIP": "10.0.0.9"}
    }))
}

#[test]
fn pods_over_a_label_or_port_cap_are_errors_naming_the_field() {
    assert!(pod(&pod_with(
        MAX_LABELS,
        MAX_LABEL_VALUE_BYTES,
        MAX_CONTAINER_PORTS
    ))
    .is_ok());
    assert_eq!(
        over_cap(pod(&pod_with(MAX_LABELS + 1, 1, 0))),
        "metadata.labels: 257 labels, over the cap of 256"
    );
    assert_eq!(
        over_cap(pod(&pod_with(1, MAX_LABEL_VALUE_BYTES + 1, 0))),
        "metadata.labels[\"k0\"]: 64 bytes of value, over the cap of 63"
    );
    assert_eq!(
        over_cap(pod(&pod_with(0, 1, MAX_CONTAINER_PORTS + 1))),
        "spec.containers[*].ports: 1025 container ports, over the cap of 1024"
    );
}

#[test]
fn trimming_an_object_over_a_cap_keeps_only_what_its_stand_in_needs_and_the_same_error() {
    let original = pod_with(MAX_LABELS + 1, 1, 3);
    let mut trimmed = original.clone();
    trim::pod(&mut trimmed);
    assert_eq!(trimmed.metadata.labels, None);
    assert!(trimmed
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(OVER_CAP_ANNOTATION)));
    let spec = trimmed.spec.as_ref().expect("spec kept");
    assert_eq!(spec.node_name.as_deref(), Some("n1"));
    assert!(spec.containers.is_empty());
    assert_eq!(over_cap(pod(&trimmed)), over_cap(pod(&original)));

    // A policy keeps its mode and the directions the API server defaults from its
    // rules, so its stand-in isolates what the policy would have.
    let original = big_policy(MAX_POLICY_RULES, 0, true);
    let mut trimmed = original.clone();
    trim::network_policy(&mut trimmed);
    assert_eq!(
        over_cap(network_policy(&trimmed)),
        over_cap(network_policy(&original))
    );
    let spec = trimmed.spec.as_ref().expect("spec kept");
    assert!(spec.ingress.is_none() && spec.egress.is_none());
    let stand_in = network_policy_fail_closed(&trimmed).expect("a stand-in");
    assert_eq!(
        stand_in.policy_types,
        PolicyTypes {
            ingress: true,
            egress: true
        }
    );
    assert_eq!(stand_in.mode, crate::model::PolicyMode::Audit);
}
