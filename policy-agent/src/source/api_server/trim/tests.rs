//! Trimming keeps what `convert` reads and drops the rest.

#![expect(
    clippy::expect_used,
    reason = "a malformed test fixture should fail the test"
)]

use k8s_openapi::api::{core::v1 as core, networking::v1 as net};
use serde_json::json;

use super::*;
use crate::source::convert::{self, ALLOW_TUNNELS_ANNOTATION, MODE_ANNOTATION};

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("fixture has the shape of its kind")
}

/// A pod as the API server sends it: managedFields, annotations, several
/// containers with images, env and probes, an init container, a full status.
fn full_pod(resource_version: &str, ready: &str) -> core::Pod {
    from_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-1", "namespace": "prod", "uid": "u-1",
            "resourceVersion": resource_version, "generation": 3,
            "labels": {"app": "web", "pod-template-hash": "abc"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u-0"}],
            "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}]
        },
        "spec": {
            "nodeName": "node-a", "hostNetwork": false, "serviceAccountName": "web",
            "initContainers": [{"name": "init", "image": "busybox", "ports": [{"containerPort": 9}]}],
            "containers": [
                {"name": "app", "image": "nginx:1.27", "env": [{"name": "A", "value": "1"}],
                 "ports": [{"name": "http", "containerPort": 8080},
                           {"name": "dns", "containerPort": 53, "protocol": "UDP"}],
                 "readinessProbe": {"httpGet": {"port": 8080, "path": "/"}}},
                {"name": "sidecar", "image": "envoy", "args": ["--x"]}
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
            "tolerations": [{"operator": "Exists"}]
        },
        "status": {
            "phase": "Running", "hostIP": "192.168.1.10", "qosClass": "BestEffort",
            "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
            "conditions": [{"type": "Ready", "status": ready}],
            "containerStatuses": [{"name": "app", "image": "nginx", "imageID": "x", "ready": true,
                                   "restartCount": 0}]
        }
    }))
}

#[test]
fn a_trimmed_pod_converts_as_the_full_one_and_keeps_only_what_convert_reads() {
    let full = full_pod("41", "True");
    let mut trimmed = full.clone();
    pod(&mut trimmed);

    assert_eq!(convert::pod(&trimmed), convert::pod(&full));
    let meta = &trimmed.metadata;
    assert_eq!(meta.managed_fields, None);
    assert_eq!(meta.annotations, None);
    assert_eq!(meta.resource_version, None);
    assert_eq!(meta.owner_references, None);
    assert_eq!(meta.uid, None);
    let spec = trimmed.spec.as_ref().expect("spec kept");
    assert_eq!(spec.node_name.as_deref(), Some("node-a"));
    assert_eq!(spec.init_containers, None);
    assert_eq!(spec.volumes, None);
    assert_eq!(spec.service_account_name, None);
    assert_eq!(spec.containers.len(), 2);
    for container in &spec.containers {
        assert_eq!(container.image, None, "{}", container.name);
        assert_eq!(container.env, None, "{}", container.name);
        assert_eq!(container.readiness_probe, None, "{}", container.name);
    }
    assert_eq!(spec.containers[0].ports.as_ref().map(Vec::len), Some(2));
    let status = trimmed.status.as_ref().expect("status kept");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ips.as_ref().map(Vec::len), Some(2));
    assert_eq!(status.conditions, None);
    assert_eq!(status.container_statuses, None);
    assert_eq!(status.host_ip, None);
}

#[test]
fn pod_updates_that_policy_does_not_read_trim_to_equal_objects() {
    let mut before = full_pod("41", "True");
    let mut after = full_pod("42", "False");
    pod(&mut before);
    pod(&mut after);
    assert_eq!(before, after, "a readiness flip and a new resourceVersion");

    let mut relabelled = full_pod("43", "False");
    relabelled
        .metadata
        .labels
        .get_or_insert_default()
        .insert("tier".into(), "front".into());
    pod(&mut relabelled);
    assert_ne!(before, relabelled, "a label change is a change");
}

#[test]
fn a_trimmed_namespace_keeps_name_labels_and_only_the_tunnel_annotation() {
    let full: core::Namespace = from_json(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "prod", "resourceVersion": "7", "labels": {"team": "a"},
                     "annotations": {"x": "y", ALLOW_TUNNELS_ANNOTATION: "true"},
                     "managedFields": [{"manager": "m"}]},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
    }));
    let mut trimmed = full.clone();
    namespace(&mut trimmed);
    assert_eq!(convert::namespace(&trimmed), convert::namespace(&full));
    assert!(convert::namespace(&trimmed).is_ok_and(|ns| ns.allow_tunnels));
    assert_eq!(
        trimmed.metadata.annotations,
        Some([(ALLOW_TUNNELS_ANNOTATION.to_string(), "true".to_string())].into())
    );
    let mut plain = full.clone();
    plain.metadata.annotations = Some([("x".to_string(), "y".to_string())].into());
    namespace(&mut plain);
    assert_eq!(plain.metadata.annotations, None);
    assert_eq!(trimmed.metadata.managed_fields, None);
    assert_eq!(trimmed.spec, None);
    assert_eq!(trimmed.status, None);
}

#[test]
fn a_trimmed_service_keeps_selector_cluster_ip_and_ports() {
    let full: core::Service = from_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "prod", "labels": {"a": "b"},
                     "annotations": {"x": "y"}, "resourceVersion": "9"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                 "clusterIPs": ["10.96.0.10"], "type": "NodePort", "sessionAffinity": "None",
                 "ports": [{"name": "http", "port": 80, "targetPort": "http",
                            "protocol": "TCP", "nodePort": 30080}]},
        "status": {"loadBalancer": {}}
    }));
    let mut trimmed = full.clone();
    service(&mut trimmed);
    assert_eq!(convert::service(&trimmed), convert::service(&full));
    let spec = trimmed.spec.as_ref().expect("spec kept");
    assert_eq!(spec.type_, None);
    assert_eq!(spec.ports.as_ref().expect("ports kept")[0].node_port, None);
    assert_eq!(trimmed.metadata.labels, None);
}

#[test]
fn a_trimmed_service_keeps_every_address_kube_proxy_translates() {
    let full: core::Service = from_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd96::10"],
                 "externalIPs": ["198.51.100.7"], "type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [
            {"ip": "203.0.113.9", "hostname": "lb.example", "ports": [{"port": 80, "protocol": "TCP"}]},
            {"ip": "203.0.113.10", "ipMode": "Proxy"}]}}
    }));
    let mut trimmed = full.clone();
    service(&mut trimmed);
    assert_eq!(convert::service(&trimmed), convert::service(&full));
    let ingress = trimmed
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .expect("ingress kept");
    assert_eq!(ingress[0].hostname, None);
    assert_eq!(ingress[0].ports, None);
    assert_eq!(ingress[1].ip_mode.as_deref(), Some("Proxy"));
}

#[test]
fn a_trimmed_network_policy_keeps_its_spec_and_only_the_mode_annotation() {
    let full: net::NetworkPolicy = from_json(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "prod", "resourceVersion": "3",
                     "annotations": {MODE_ANNOTATION: "audit", "other": "x"},
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                 "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 5432}]}]}
    }));
    let mut trimmed = full.clone();
    network_policy(&mut trimmed);
    assert_eq!(
        convert::network_policy(&trimmed),
        convert::network_policy(&full)
    );
    assert_eq!(trimmed.spec, full.spec);
    assert_eq!(
        trimmed.metadata.annotations,
        Some([(MODE_ANNOTATION.to_string(), "audit".to_string())].into())
    );
    assert_eq!(trimmed.metadata.managed_fields, None);
}

/// A Node as the kubelet reports it, with a heartbeat at `beat`.
fn full_node(beat: &str) -> core::Node {
    from_json(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "resourceVersion": beat, "labels": {"role": "infra"},
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": "10.244.0.0/24", "providerID": "kind://n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"},
                                 {"type": "Hostname", "address": "n1"}],
                   "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": beat}],
                   "images": [{"names": ["nginx"], "sizeBytes": 1}]}
    }))
}

#[test]
fn a_trimmed_node_converts_as_the_full_one_and_heartbeats_trim_to_equal_objects() {
    let full = full_node("2026-01-01T00:00:00Z");
    let mut trimmed = full.clone();
    node(&mut trimmed);
    assert_eq!(convert::node(&trimmed), convert::node(&full));
    assert!(trimmed.spec.is_none() && trimmed.metadata.annotations.is_none());
    let addresses = trimmed.status.as_ref().and_then(|s| s.addresses.as_ref());
    assert_eq!(addresses.map(Vec::len), Some(1), "only the IP addresses");
    let mut later = full_node("2026-01-01T00:00:10Z");
    node(&mut later);
    assert_eq!(trimmed, later);
}

#[test]
fn a_trimmed_cluster_network_policy_keeps_its_spec_and_only_the_mode_annotation() {
    let full: convert::ClusterNetworkPolicy = from_json(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "g", "resourceVersion": "7",
                     "annotations": {MODE_ANNOTATION: "audit", "other": "x"}},
        "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
                 "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]}]},
        "status": {"conditions": [{"type": "Ready"}]}
    }));
    let mut trimmed = full.clone();
    cluster_network_policy(&mut trimmed);
    assert_eq!(
        convert::cluster_network_policy(&trimmed),
        convert::cluster_network_policy(&full)
    );
    let annotations = trimmed.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        vec![MODE_ANNOTATION]
    );
    assert_eq!(trimmed.metadata.resource_version, None);
}

#[test]
fn a_cluster_network_policy_over_a_cap_keeps_what_its_stand_in_needs() {
    let values: Vec<String> = (0..caps::MAX_CLUSTER_POLICY_SELECTOR_TERMS)
        .map(|i| i.to_string())
        .collect();
    let full: convert::ClusterNetworkPolicy = from_json(json!({
        "metadata": {"name": "g", "annotations": {MODE_ANNOTATION: "audit"}},
        "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {"matchLabels": {"a": "b"}}},
                 "ingress": [{"action": "Accept", "from": [{"namespaces": {"matchExpressions": [
                     {"key": "k", "operator": "In", "values": values}]}}]}]}
    }));
    let error = convert::cluster_network_policy(&full).expect_err("over the cap");
    assert!(error.to_string().contains("selector terms"), "{error}");
    let stand_in = convert::cluster_network_policy_fail_closed(&full, &error);
    let mut trimmed = full;
    cluster_network_policy(&mut trimmed);
    let spec = trimmed.spec.clone().unwrap_or_default();
    assert!(spec.to_string().len() < 200, "{spec}");
    let error = convert::cluster_network_policy(&trimmed).expect_err("still over");
    assert_eq!(
        convert::cluster_network_policy_fail_closed(&trimmed, &error).map(|p| (
            p.subject,
            p.ingress.len(),
            p.egress.len(),
            p.mode
        )),
        stand_in.map(|p| (p.subject, p.ingress.len(), p.egress.len(), p.mode))
    );
}
