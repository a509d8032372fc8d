//! Trimming watched objects to what `convert` reads, before the reflector stores
//! them (kube-rs's pod reflector example): memory for 10k pods stays small, and an
//! update that changes nothing policy reads (a status condition, a heartbeat
//! annotation, `resourceVersion`) leaves the stored object equal to the old one, so
//! it is recognised as no change and triggers no rebuild.
//!
//! Every function keeps exactly the fields its `convert` counterpart reads; the unit
//! tests check that converting a trimmed object gives what converting the original
//! gives. An object over a cap (`convert::caps`) keeps only what its fail-closed
//! stand-in needs and the reason (`caps::mark`), so the store never holds it whole.

use k8s_openapi::{
    api::{core::v1 as core, networking::v1 as net},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::slim::SlimPod;
use crate::source::convert::{
    caps, ClusterNetworkPolicy, ALLOW_TUNNELS_ANNOTATION, MODE_ANNOTATION,
};

/// Keeps a Pod's name, namespace and labels; `spec.nodeName`, `spec.hostNetwork`
/// and each container's `ports` only (the container's name too: the API requires
/// it); `status.phase`, `status.podIP` and `status.podIPs`.
pub fn pod(pod: &mut core::Pod) {
    if let Err(error) = caps::pod(pod) {
        caps::mark(&mut pod.metadata, &error, None);
        pod.spec = pod.spec.take().map(|spec| core::PodSpec {
            node_name: spec.node_name,
            host_network: spec.host_network,
            ..core::PodSpec::default()
        });
        pod.status = pod.status.take().map(|status| core::PodStatus {
            phase: status.phase,
            ..core::PodStatus::default()
        });
        return;
    }
    metadata(&mut pod.metadata, true, None);
    // Exactly the fields the Pod store's own type has room for.
    *pod = core::Pod::from(SlimPod::from(std::mem::take(pod)));
}

/// Keeps a Namespace's name, labels and the `podwall.io/allow-tunnels` annotation.
pub fn namespace(ns: &mut core::Namespace) {
    match caps::namespace(ns) {
        Err(error) => caps::mark(&mut ns.metadata, &error, None),
        Ok(()) => metadata(&mut ns.metadata, true, Some(ALLOW_TUNNELS_ANNOTATION)),
    }
    ns.spec = None;
    ns.status = None;
}

/// Keeps a Service's name and namespace; `spec.selector`, its addresses
/// (`spec.clusterIP`, `spec.clusterIPs`, `spec.externalIPs`, and each load balancer
/// ingress' `ip` and `ipMode`) and each port's name, port, targetPort and protocol.
/// Over a cap, only the addresses are kept, up to the cap.
pub fn service(svc: &mut core::Service) {
    let capped = caps::service(svc);
    let addresses = service_addresses(svc);
    if let Err(error) = capped {
        caps::mark(&mut svc.metadata, &error, None);
        svc.spec = svc.spec.take().map(|spec| core::ServiceSpec {
            cluster_ip: spec.cluster_ip,
            cluster_ips: spec.cluster_ips.map(|mut ips| {
                ips.truncate(caps::MAX_SERVICE_ADDRESSES);
                ips
            }),
            ..core::ServiceSpec::default()
        });
        svc.status = None;
        return;
    }
    metadata(&mut svc.metadata, false, None);
    svc.status = addresses;
    svc.spec = svc.spec.take().map(|spec| core::ServiceSpec {
        selector: spec.selector,
        cluster_ip: spec.cluster_ip,
        cluster_ips: spec.cluster_ips,
        external_ips: spec.external_ips,
        ports: spec.ports.map(|ports| {
            ports
                .into_iter()
                .map(|port| core::ServicePort {
                    name: port.name,
                    port: port.port,
                    target_port: port.target_port,
                    protocol: port.protocol,
                    ..core::ServicePort::default()
                })
                .collect()
        }),
        ..core::ServiceSpec::default()
    });
}

/// The part of a Service's status `convert` reads: each load balancer ingress'
/// `ip` and `ipMode`.
fn service_addresses(svc: &mut core::Service) -> Option<core::ServiceStatus> {
    let ingress = svc
        .status
        .take()?
        .load_balancer?
        .ingress?
        .into_iter()
        .map(|ingress| core::LoadBalancerIngress {
            ip: ingress.ip,
            ip_mode: ingress.ip_mode,
            ..core::LoadBalancerIngress::default()
        })
        .collect();
    Some(core::ServiceStatus {
        load_balancer: Some(core::LoadBalancerStatus {
            ingress: Some(ingress),
        }),
        ..core::ServiceStatus::default()
    })
}

/// Keeps a NetworkPolicy's name, namespace, the `podwall.io/mode` annotation and
/// the whole spec.
pub fn network_policy(np: &mut net::NetworkPolicy) {
    if let Err(error) = caps::network_policy(np) {
        caps::mark(&mut np.metadata, &error, Some(MODE_ANNOTATION));
        // The stand-in isolates the directions the policy names: spelled out, as
        // the defaulting that reads the rules cannot once they are gone.
        np.spec = np.spec.take().map(|spec| net::NetworkPolicySpec {
            policy_types: Some(explicit_policy_types(&spec)),
            ..net::NetworkPolicySpec::default()
        });
        return;
    }
    metadata(&mut np.metadata, false, Some(MODE_ANNOTATION));
}

/// Keeps a ClusterNetworkPolicy's name, the `podwall.io/mode` annotation and the
/// whole spec (all of it is read). Over a cap, only what its stand-in needs: the
/// subject (when it is small), and one empty rule in each direction that has
/// rules.
pub fn cluster_network_policy(cnp: &mut ClusterNetworkPolicy) {
    if let Err(error) = caps::cluster_network_policy(cnp) {
        caps::mark(&mut cnp.metadata, &error, Some(MODE_ANNOTATION));
        cnp.spec = cnp.spec.take().map(|spec| {
            let mut kept = serde_json::Map::new();
            if let Some(subject) = spec.get("subject") {
                if subject.to_string().len() <= SMALL_SUBJECT_BYTES {
                    kept.insert("subject".to_string(), subject.clone());
                }
            }
            for direction in ["ingress", "egress"] {
                let has_rules = spec
                    .get(direction)
                    .is_some_and(|rules| rules.as_array().is_none_or(|r| !r.is_empty()));
                if has_rules {
                    let rules = serde_json::json!([{}]);
                    kept.insert(direction.to_string(), rules);
                }
            }
            serde_json::Value::Object(kept)
        });
        return;
    }
    metadata(&mut cnp.metadata, false, Some(MODE_ANNOTATION));
}

/// The largest subject (as JSON text) kept on a ClusterNetworkPolicy over a cap.
const SMALL_SUBJECT_BYTES: usize = 16 * 1024;

/// Keeps a Node's name, labels and the `InternalIP` and `ExternalIP` entries of
/// `status.addresses` (so its heartbeats change nothing stored). Over a cap,
/// only its name and the reason: it is left out.
pub fn node(node: &mut core::Node) {
    if let Err(error) = caps::node(node) {
        caps::mark(&mut node.metadata, &error, None);
        node.spec = None;
        node.status = None;
        return;
    }
    metadata(&mut node.metadata, true, None);
    node.spec = None;
    node.status = node.status.take().map(|status| core::NodeStatus {
        addresses: status.addresses.map(|addresses| {
            addresses
                .into_iter()
                .filter(|a| matches!(a.type_.as_str(), "InternalIP" | "ExternalIP"))
                .collect()
        }),
        ..core::NodeStatus::default()
    });
}

/// `spec.policyTypes` as given, else as the API server defaults them (Ingress,
/// and Egress when there are egress rules).
fn explicit_policy_types(spec: &net::NetworkPolicySpec) -> Vec<String> {
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => types.to_vec(),
        _ => {
            let mut types = vec!["Ingress".to_string()];
            if spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()) {
                types.push("Egress".to_string());
            }
            types
        }
    }
}

/// Keeps name and namespace, the labels if `labels`, and the annotation
/// `annotation` if given and present. Everything else goes: managedFields (often
/// the largest part of an object), other annotations (last-applied-configuration),
/// resourceVersion, uid, owner references, timestamps.
fn metadata(meta: &mut ObjectMeta, labels: bool, annotation: Option<&str>) {
    let annotations = annotation.and_then(|key| {
        let value = meta.annotations.as_mut()?.remove(key)?;
        Some([(key.to_string(), value)].into())
    });
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        labels: if labels { meta.labels.take() } else { None },
        annotations,
        ..ObjectMeta::default()
    };
}

#[cfg(test)]
mod tests;
