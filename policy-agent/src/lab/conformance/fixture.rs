//! The upstream fixture as a `ClusterState`, and a step's mutations applied to it.
//!
//! Namespaces x, y, z labelled `kubernetes.io/metadata.name=<ns>` and `ns=<ns>`;
//! pods a, b, c in each, labelled `pod=<name>`, with one container port per
//! (port, protocol) of the case named `serve-<port>-<proto>`; one Service
//! `s-<ns>-<pod>` per pod selecting `pod=<name>`, with one port per container port
//! named `service-port-<proto>-<port>` whose targetPort is that port.

use k8s_openapi::api::networking::v1::NetworkPolicy as ApiNetworkPolicy;
use serde_json::Value;

use super::{
    case::{CaseError, Relabel, Step},
    placeholders::{expand_value, Addresses},
};
use crate::{
    model::{
        ClusterState, ContainerPort, Labels, Namespace, ObjectRef, Pod, PortRef, Protocol, Service,
        ServicePort, NAMESPACE_NAME_LABEL,
    },
    source::convert,
};

/// The fixture's namespaces, sorted.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The pods in each namespace, sorted.
pub const PODS: [&str; 3] = ["a", "b", "c"];

/// Every fixture pod, in matrix order (x/a, x/b, ..., z/c).
pub fn pods() -> Vec<ObjectRef> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |pod| ObjectRef::new(*ns, *pod)))
        .collect()
}

fn lower(protocol: Protocol) -> String {
    protocol.to_string().to_lowercase()
}

/// A clean cluster: no policies, default labels, every pod serving `ports`.
pub fn cluster(ports: &[(u16, Protocol)]) -> ClusterState {
    let mut state = ClusterState::default();
    for ns in NAMESPACES {
        let mut namespace = Namespace::implicit(ns);
        namespace.labels.insert("ns".into(), ns.into());
        state.namespaces.insert(ns.into(), namespace);
    }
    let container_ports: Vec<ContainerPort> = ports
        .iter()
        .map(|&(port, protocol)| ContainerPort {
            name: Some(format!("serve-{port}-{}", lower(protocol))),
            port,
            protocol,
        })
        .collect();
    for key in pods() {
        let labels = Labels::from([("pod".to_string(), key.name.clone())]);
        let service = Service {
            key: ObjectRef::new(&key.namespace, format!("s-{}-{}", key.namespace, key.name)),
            selector: Some(labels.clone()),
            cluster_ip: None,
            extra_ips: Vec::new(),
            ports: container_ports
                .iter()
                .map(|c| ServicePort {
                    name: Some(format!("service-port-{}-{}", lower(c.protocol), c.port)),
                    port: c.port,
                    target_port: PortRef::Number(c.port),
                    protocol: c.protocol,
                })
                .collect(),
        };
        state.services.insert(service.key.clone(), service);
        let pod = Pod {
            key: key.clone(),
            labels,
            ips: Vec::new(),
            node_name: None,
            host_network: false,
            finished: false,
            ports: container_ports.clone(),
        };
        state.pods.insert(key, pod);
    }
    state
}

/// Applies a step's mutations in the documented order: apply (create or
/// replace, placeholders expanded with `addresses`), delete, relabel. `field` is
/// the step's path in the file, for errors.
pub fn mutate(
    state: &mut ClusterState,
    step: &Step,
    addresses: &Addresses,
    field: &str,
) -> Result<(), CaseError> {
    for (i, object) in step.apply.iter().enumerate() {
        let field = format!("{field}.apply[{i}]");
        let policy = policy(object, addresses, &field)?;
        state.policies.insert(policy.key.clone(), policy);
    }
    for key in &step.delete {
        if state.policies.remove(key).is_none() {
            tracing::warn!(policy = %key, "{field}: deleting a policy that does not exist");
        }
    }
    for change in &step.relabel {
        match change {
            Relabel::Pod(key, labels) => {
                if let Some(pod) = state.pods.get_mut(key) {
                    pod.labels = labels.clone();
                }
            }
            Relabel::Namespace(name, labels) => {
                let mut labels = labels.clone();
                // The API server always sets this label to the namespace's name.
                labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
                state.namespaces.insert(
                    name.clone(),
                    Namespace {
                        name: name.clone(),
                        labels,
                        allow_tunnels: false,
                    },
                );
            }
        }
    }
    Ok(())
}

/// One `apply` entry as a model policy, the way the manifest loader reads one.
fn policy(
    object: &Value,
    addresses: &Addresses,
    field: &str,
) -> Result<crate::model::NetworkPolicy, CaseError> {
    let invalid = |message: String| CaseError::Invalid {
        field: field.to_string(),
        message,
    };
    if object.get("kind").and_then(Value::as_str) != Some("NetworkPolicy") {
        return Err(invalid("only NetworkPolicy objects can be applied".into()));
    }
    let mut object = object.clone();
    expand_value(&mut object, addresses).map_err(invalid)?;
    let api: ApiNetworkPolicy = serde_path_to_error::deserialize(object)
        .map_err(|e| invalid(format!("{}: {}", e.path(), e.inner())))?;
    convert::network_policy(&api).map_err(|e| invalid(e.to_string()))
}
