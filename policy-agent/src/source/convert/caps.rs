//! Caps on what one object may hold and on how many objects of a kind the agent
//! handles: a tenant (or an API server gone wrong) cannot make the agent's memory
//! and compile time grow without bound. The API server already limits an object to
//! about 1.5 MiB; these caps are far above any real policy or pod, and below what
//! such an object could hold.
//!
//! What is over a cap fails closed (`state::StateBuilder` applies it):
//! - a NetworkPolicy: its fail-closed stand-in (`network_policy_fail_closed`), as
//!   for one that does not convert: every pod of its namespace isolated in the
//!   directions it names, no allow;
//! - a Pod or a Namespace: the pod (every pod of the namespace) stands in as an
//!   address-less stub that no selector matches and that is never an endpoint,
//!   and its namespace gets `OVER_CAP_POLICY`: every pod there isolated both ways,
//!   no allow (a local stub's veth stays pending: isolated, its sources unknown);
//! - a Service: its ClusterIP alone (Service egress stays deferred to the backend);
//! - a ClusterNetworkPolicy: its fail-closed stand-in
//!   (`cluster_network_policy_fail_closed`): Admin tier, priority 0, a Deny rule
//!   that denies everything in each direction it has rules in. The CRD bounds
//!   rules, peers and CIDRs (25 each); its selectors and the JSON it carries
//!   besides are what is capped here;
//! - a Node: left out (its addresses are then no `nodes` peer's).
//!
//! `trim` strips an object over a cap before the reflector stores it, leaving
//! `OVER_CAP_ANNOTATION` with the reason, so the stores stay small too.
//!
//! May import: k8s-openapi, `super` (`ConvertError`).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{core::v1 as core, networking::v1 as net},
    apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, ObjectMeta},
};

use super::ConvertError;

/// Rules (ingress and egress) of one NetworkPolicy.
pub const MAX_POLICY_RULES: usize = 32_768;
/// `from`/`to` peers in all rules of one NetworkPolicy.
pub const MAX_POLICY_PEERS: usize = 32_768;
/// `ports` entries in all rules of one NetworkPolicy.
pub const MAX_POLICY_PORTS: usize = 32_768;
/// ipBlock `except` entries in all rules of one NetworkPolicy.
pub const MAX_POLICY_EXCEPTS: usize = 32_768;
/// matchLabels pairs, matchExpressions and their values in all selectors of one
/// NetworkPolicy.
pub const MAX_POLICY_SELECTOR_TERMS: usize = 65_536;
/// Labels of one Pod or Namespace.
pub const MAX_LABELS: usize = 256;
/// Bytes of one label key: the API server's 253-byte prefix, `/` and 63-byte name.
pub const MAX_LABEL_KEY_BYTES: usize = 317;
/// Bytes of one label value (the API server's limit).
pub const MAX_LABEL_VALUE_BYTES: usize = 63;
/// Container ports of one Pod, all containers together.
pub const MAX_CONTAINER_PORTS: usize = 1_024;
/// Ports of one Service.
pub const MAX_SERVICE_PORTS: usize = 1_024;
/// Addresses of one Service besides `spec.clusterIP`: `spec.clusterIPs`,
/// `spec.externalIPs` and load balancer ingress IPs together.
pub const MAX_SERVICE_ADDRESSES: usize = 1_024;
/// Namespaces handled; the ones past it (by name) are over the cap.
pub const MAX_NAMESPACES: usize = 20_000;
/// Pods handled; the ones past it (by namespace/name) are over the cap.
pub const MAX_PODS: usize = 250_000;
/// Services handled.
pub const MAX_SERVICES: usize = 100_000;
/// NetworkPolicies handled.
pub const MAX_NETWORK_POLICIES: usize = 100_000;
/// ClusterNetworkPolicies handled (cluster-wide, written by administrators: far
/// fewer than NetworkPolicies).
pub const MAX_CLUSTER_NETWORK_POLICIES: usize = 10_000;

/// matchLabels pairs, matchExpressions and their values in all selectors of one
/// ClusterNetworkPolicy (as `MAX_POLICY_SELECTOR_TERMS`).
pub const MAX_CLUSTER_POLICY_SELECTOR_TERMS: usize = MAX_POLICY_SELECTOR_TERMS;
/// JSON values (objects, lists, strings, numbers...) in one ClusterNetworkPolicy's
/// spec: a valid one holds at most 50 rules of 25 peers of 25 CIDRs and their
/// selectors.
pub const MAX_CLUSTER_POLICY_VALUES: usize = 262_144;
/// Addresses in one Node's `status.addresses`.
pub const MAX_NODE_ADDRESSES: usize = 1_024;

/// Annotation `trim` leaves on an object it stripped for being over a cap: the
/// field and what was over, as `field: what`.
pub const OVER_CAP_ANNOTATION: &str = "podwall.io/over-cap";

/// Name of the policy that isolates a namespace holding an object over a cap. The
/// colon is not allowed in Kubernetes names, so it never meets a real policy.
pub const OVER_CAP_POLICY: &str = "podwall:over-cap";

/// `count` of something at `field` against `cap`, as an error when over.
fn check(field: &str, count: usize, cap: usize, what: &str) -> Result<(), ConvertError> {
    if count > cap {
        Err(ConvertError::OverCap {
            field: field.to_string(),
            what: format!("{count} {what}, over the cap of {cap}"),
        })
    } else {
        Ok(())
    }
}

/// The over-cap error `trim` left on `meta`, if any.
fn marked(meta: &ObjectMeta) -> Result<(), ConvertError> {
    match meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(OVER_CAP_ANNOTATION))
    {
        None => Ok(()),
        Some(text) => {
            let (field, what) = text.split_once(": ").unwrap_or(("metadata", text.as_str()));
            Err(ConvertError::OverCap {
                field: field.to_string(),
                what: what.to_string(),
            })
        }
    }
}

/// Labels within `MAX_LABELS`, each key and value within its size.
fn labels(labels: Option<&BTreeMap<String, String>>) -> Result<(), ConvertError> {
    let Some(labels) = labels else {
        return Ok(());
    };
    check("metadata.labels", labels.len(), MAX_LABELS, "labels")?;
    for (key, value) in labels {
        let field = || format!("metadata.labels[{:?}]", truncated(key));
        if key.len() > MAX_LABEL_KEY_BYTES {
            check(&field(), key.len(), MAX_LABEL_KEY_BYTES, "bytes of key")?;
        }
        check(
            &field(),
            value.len(),
            MAX_LABEL_VALUE_BYTES,
            "bytes of value",
        )?;
    }
    Ok(())
}

/// The first 32 characters of `text` (for messages about text that is too long).
fn truncated(text: &str) -> String {
    text.chars().take(32).collect()
}

/// Whether a Pod is within its caps (labels, container ports).
pub fn pod(pod: &core::Pod) -> Result<(), ConvertError> {
    marked(&pod.metadata)?;
    labels(pod.metadata.labels.as_ref())?;
    let ports = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .map(|c| c.ports.as_ref().map_or(0, Vec::len))
        .sum();
    check(
        "spec.containers[*].ports",
        ports,
        MAX_CONTAINER_PORTS,
        "container ports",
    )
}

/// Whether a Namespace is within its caps (labels).
pub fn namespace(ns: &core::Namespace) -> Result<(), ConvertError> {
    marked(&ns.metadata)?;
    labels(ns.metadata.labels.as_ref())
}

/// Whether a Service is within its caps (ports).
pub fn service(svc: &core::Service) -> Result<(), ConvertError> {
    marked(&svc.metadata)?;
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map_or(0, Vec::len);
    check("spec.ports", ports, MAX_SERVICE_PORTS, "ports")?;
    let spec = svc.spec.as_ref();
    let addresses = spec
        .and_then(|s| s.cluster_ips.as_ref())
        .map_or(0, Vec::len)
        + spec
            .and_then(|s| s.external_ips.as_ref())
            .map_or(0, Vec::len)
        + svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map_or(0, Vec::len);
    check("spec", addresses, MAX_SERVICE_ADDRESSES, "addresses")
}

/// Whether a NetworkPolicy is within its caps (rules, peers, ports, excepts,
/// selector terms).
pub fn network_policy(np: &net::NetworkPolicy) -> Result<(), ConvertError> {
    marked(&np.metadata)?;
    let Some(spec) = np.spec.as_ref() else {
        return Ok(());
    };
    let ingress = spec.ingress.iter().flatten();
    let egress = spec.egress.iter().flatten();
    let rules = ingress.clone().count() + egress.clone().count();
    check("spec", rules, MAX_POLICY_RULES, "rules")?;
    let peers: Vec<&net::NetworkPolicyPeer> = ingress
        .clone()
        .flat_map(|r| r.from.iter().flatten())
        .chain(egress.clone().flat_map(|r| r.to.iter().flatten()))
        .collect();
    check("spec", peers.len(), MAX_POLICY_PEERS, "peers")?;
    let ports = ingress
        .map(|r| r.ports.as_ref().map_or(0, Vec::len))
        .sum::<usize>()
        + egress
            .map(|r| r.ports.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
    check("spec", ports, MAX_POLICY_PORTS, "ports entries")?;
    let excepts = peers
        .iter()
        .filter_map(|p| p.ip_block.as_ref()?.except.as_ref())
        .map(Vec::len)
        .sum();
    check("spec", excepts, MAX_POLICY_EXCEPTS, "ipBlock excepts")?;
    let terms = selector_terms(spec.pod_selector.as_ref())
        + peers
            .iter()
            .map(|p| {
                selector_terms(p.pod_selector.as_ref())
                    + selector_terms(p.namespace_selector.as_ref())
            })
            .sum::<usize>();
    check("spec", terms, MAX_POLICY_SELECTOR_TERMS, "selector terms")
}

/// Whether a ClusterNetworkPolicy is within its caps (JSON values, selector terms).
pub fn cluster_network_policy(cnp: &super::ClusterNetworkPolicy) -> Result<(), ConvertError> {
    marked(&cnp.metadata)?;
    let Some(spec) = cnp.spec.as_ref() else {
        return Ok(());
    };
    let (values, terms) = json_counts(spec);
    check("spec", values, MAX_CLUSTER_POLICY_VALUES, "JSON values")?;
    check(
        "spec",
        terms,
        MAX_CLUSTER_POLICY_SELECTOR_TERMS,
        "selector terms",
    )
}

/// JSON values in `value`, and the selector terms among them (matchLabels pairs,
/// matchExpressions entries and their values).
fn json_counts(value: &serde_json::Value) -> (usize, usize) {
    use serde_json::Value;
    let mut values = 0;
    let mut terms = 0;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        values += 1;
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("matchLabels", Value::Object(labels)) => terms += labels.len(),
                        ("matchExpressions", Value::Array(exprs)) => terms += exprs.len(),
                        ("values", Value::Array(items)) => terms += items.len(),
                        _ => {}
                    }
                    stack.push(child);
                }
            }
            _ => {}
        }
    }
    (values, terms)
}

/// Whether a Node is within its caps (labels, addresses).
pub fn node(node: &core::Node) -> Result<(), ConvertError> {
    marked(&node.metadata)?;
    labels(node.metadata.labels.as_ref())?;
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map_or(0, Vec::len);
    check(
        "status.addresses",
        addresses,
        MAX_NODE_ADDRESSES,
        "addresses",
    )
}

/// matchLabels pairs, matchExpressions and their values of one selector.
fn selector_terms(selector: Option<&K8sSelector>) -> usize {
    selector.map_or(0, |s| {
        s.match_labels.as_ref().map_or(0, BTreeMap::len)
            + s.match_expressions
                .iter()
                .flatten()
                .map(|e| 1 + e.values.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    })
}

/// Strips `meta` of an object over a cap, leaving its name, namespace, the
/// annotation `keep` if present and the reason as `OVER_CAP_ANNOTATION` (for
/// `trim`, before the store keeps it).
pub fn mark(meta: &mut ObjectMeta, error: &ConvertError, keep: Option<&str>) {
    let reason = match error {
        ConvertError::OverCap { field, what } => format!("{field}: {what}"),
        other => other.to_string(),
    };
    let mut annotations = BTreeMap::from([(OVER_CAP_ANNOTATION.to_string(), reason)]);
    if let Some((key, value)) = keep.and_then(|key| {
        let value = meta.annotations.as_mut()?.remove(key)?;
        Some((key.to_string(), value))
    }) {
        annotations.insert(key, value);
    }
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
}
