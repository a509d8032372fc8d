//! What the Pod store holds: `SlimPod`, the fields of a Pod that `trim::pod` keeps,
//! in a type of its own. A k8s-openapi `Pod` is about 2.4 KiB of struct before any
//! string, and each `Container` another 2.3 KiB, almost all of it fields the agent
//! never reads; at 10k pods the trimmed `core::Pod`s held about 50 MiB. The
//! watcher deserializes Pods straight into this type (serde skips every other
//! field, so a whole Pod is never built either), trimming and conversion go
//! through `core::Pod` one object at a time, and the store keeps about 0.6 KiB
//! per pod.

use k8s_openapi::{
    api::core::v1 as core, apimachinery::pkg::apis::meta::v1::ObjectMeta, Metadata,
    NamespaceResourceScope, Resource,
};
use serde::Deserialize;

/// A Pod as the store keeps it: what `trim::pod` keeps of `core::Pod`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SlimPod {
    /// Name, namespace, labels (and, until trimmed, the rest of the metadata).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `spec`, the fields `convert::pod` reads.
    pub spec: Option<SlimPodSpec>,
    /// `status`, the fields `convert::pod` reads.
    pub status: Option<SlimPodStatus>,
}

/// `spec.nodeName`, `spec.hostNetwork` and each container's name and ports.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodSpec {
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `spec.hostNetwork`.
    pub host_network: Option<bool>,
    /// `spec.containers`, name and ports only.
    #[serde(default)]
    pub containers: Vec<SlimContainer>,
}

/// A container's name and ports.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SlimContainer {
    /// `name` (the API requires it).
    #[serde(default)]
    pub name: String,
    /// `ports`.
    pub ports: Option<Vec<core::ContainerPort>>,
}

/// `status.phase`, `status.podIP` and `status.podIPs`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SlimPodStatus {
    /// `status.phase`.
    pub phase: Option<String>,
    /// `status.podIP`.
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    /// `status.podIPs`.
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<core::PodIP>>,
}

impl Resource for SlimPod {
    const API_VERSION: &'static str = <core::Pod as Resource>::API_VERSION;
    const GROUP: &'static str = <core::Pod as Resource>::GROUP;
    const KIND: &'static str = <core::Pod as Resource>::KIND;
    const VERSION: &'static str = <core::Pod as Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <core::Pod as Resource>::URL_PATH_SEGMENT;
    type Scope = NamespaceResourceScope;
}

impl Metadata for SlimPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl From<SlimPod> for core::Pod {
    fn from(pod: SlimPod) -> Self {
        core::Pod {
            metadata: pod.metadata,
            spec: pod.spec.map(|spec| core::PodSpec {
                node_name: spec.node_name,
                host_network: spec.host_network,
                containers: spec
                    .containers
                    .into_iter()
                    .map(|container| core::Container {
                        name: container.name,
                        ports: container.ports,
                        ..core::Container::default()
                    })
                    .collect(),
                ..core::PodSpec::default()
            }),
            status: pod.status.map(|status| core::PodStatus {
                phase: status.phase,
                pod_ip: status.pod_ip,
                pod_ips: status.pod_ips,
                ..core::PodStatus::default()
            }),
        }
    }
}

impl From<core::Pod> for SlimPod {
    /// Keeps what `SlimPod` has room for; the rest goes.
    fn from(pod: core::Pod) -> Self {
        SlimPod {
            metadata: pod.metadata,
            spec: pod.spec.map(|spec| SlimPodSpec {
                node_name: spec.node_name,
                host_network: spec.host_network,
                containers: spec
                    .containers
                    .into_iter()
                    .map(|container| SlimContainer {
                        name: container.name,
                        ports: container.ports,
                    })
                    .collect(),
            }),
            status: pod.status.map(|status| SlimPodStatus {
                phase: status.phase,
                pod_ip: status.pod_ip,
                pod_ips: status.pod_ips,
            }),
        }
    }
}

/// Trims a stored Pod as `trim::pod` trims a `core::Pod` (the same code: caps,
/// metadata, the over-cap stub).
pub fn trim(pod: &mut SlimPod) {
    let mut full = core::Pod::from(std::mem::take(pod));
    super::trim::pod(&mut full);
    *pod = SlimPod::from(full);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Pod as the API server sends it, with fields the agent never reads.
    const POD: &str = r#"{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "prod", "labels": {"app": "web"},
                     "uid": "1234", "annotations": {"note": "x"},
                     "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
        "spec": {"nodeName": "node-1", "hostNetwork": false, "serviceAccountName": "default",
                 "containers": [{"name": "web", "image": "nginx",
                                 "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                                 "env": [{"name": "A", "value": "b"}]},
                                {"name": "sidecar", "image": "envoy"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                   "hostIP": "172.16.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    }"#;

    #[test]
    fn a_slim_pod_converts_and_trims_as_the_whole_pod_does() {
        let full: core::Pod = serde_json::from_str(POD).unwrap_or_default();
        let mut slim: SlimPod = serde_json::from_str(POD).unwrap_or_default();
        assert_eq!(
            crate::source::convert::pod(&core::Pod::from(slim.clone())).ok(),
            crate::source::convert::pod(&full).ok(),
        );
        assert!(crate::source::convert::pod(&full).is_ok());
        let mut trimmed = full;
        super::super::trim::pod(&mut trimmed);
        trim(&mut slim);
        assert_eq!(core::Pod::from(slim.clone()), trimmed);
        assert_eq!(slim.metadata.uid, None, "metadata trimmed");
        assert_eq!(slim.spec.map(|s| s.containers.len()), Some(2));
    }
}
