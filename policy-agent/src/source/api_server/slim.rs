//! What the Pod store holds: `SlimPod`, the fields of a Pod that `trim::pod` keeps,
//! in a type of its own. A k8s-openapi `Pod` is about 2.4 KiB of struct before any
//! string, and each `Container` another 2.3 KiB, almost all of it fields the agent
//! never reads; at 10k pods the trimmed `core::Pod`s held about 50 MiB. The
//! watcher deserializes Pods straight into this type (serde skips every other
//! field, so a whole Pod is never built either), trimming and conversion go
//! through `core::Pod` one object at a time, and the store keeps about 0.6 KiB
//! per pod. Its labels are the model's `Labels`, which the model pod converted
//! from it shares (`ApiKind for SlimPod`): one copy of each pod's labels, not two.
use k8s_openapi::{
    api::core::v1 as core, apimachinery::pkg::apis::meta::v1::ObjectMeta, Metadata,
    NamespaceResourceScope, Resource,
};
use serde::Deserialize;

use super::label_sets::LabelSets;
use crate::{
    model::{self, ClusterState, Labels, ObjectRef},
    source::convert::{ApiKind, ConvertError},
};

pub mod service;

/// A Pod as the store keeps it: what `trim::pod` keeps of `core::Pod`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(from = "WatchedPod")]
pub struct SlimPod {
    /// Name and namespace (and, until trimmed, the rest of the metadata but the
    /// labels).
    pub metadata: ObjectMeta,
    /// `metadata.labels`, shared with the model pod converted from this one.
    pub labels: Option<Labels>,
    /// `spec`, the fields `convert::pod` reads.
    pub spec: Option<SlimPodSpec>,
    /// `status`, the fields `convert::pod` reads.
    pub status: Option<SlimPodStatus>,
}

/// A `SlimPod` as the API server sends it: the labels still in the metadata.
#[derive(Deserialize)]
struct WatchedPod {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: Option<SlimPodSpec>,
    status: Option<SlimPodStatus>,
}

impl From<WatchedPod> for SlimPod {
    fn from(pod: WatchedPod) -> Self {
        let WatchedPod {
            mut metadata,
            spec,
            status,
        } = pod;
        SlimPod {
            labels: metadata.labels.take().map(Labels::from),
            metadata,
            spec,
            status,
        }
    }
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
            metadata: ObjectMeta {
                labels: pod.labels.map(Into::into),
                ..pod.metadata
            },
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
    fn from(mut pod: core::Pod) -> Self {
        SlimPod {
            labels: pod.metadata.labels.take().map(Labels::from),
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
/// metadata, the over-cap stub), and shares its labels with every stored pod
/// that has the same (`sets`).
pub fn trim(pod: &mut SlimPod, sets: &LabelSets) {
    let mut full = core::Pod::from(std::mem::take(pod));
    super::trim::pod(&mut full);
    *pod = SlimPod::from(full);
    pod.labels = pod.labels.take().map(|labels| sets.intern(labels));
}

/// A stored Pod converts as the `core::Pod` it holds (`convert::pod`), and the
/// model pod shares the stored labels instead of holding a copy.
impl ApiKind for SlimPod {
    type Model = model::Pod;

    fn convert(&self) -> Result<model::Pod, ConvertError> {
        let mut pod = core::Pod::from(self.clone()).convert()?;
        // `convert::pod` copies the labels as they are; the check keeps the
        // model right should it ever change them.
        if let Some(labels) = self.labels.as_ref().filter(|labels| pod.labels == **labels) {
            pod.labels = labels.clone();
        }
        Ok(pod)
    }

    fn fail_closed(&self, error: &ConvertError) -> Option<(model::Pod, &'static str)> {
        core::Pod::from(self.clone()).fail_closed(error)
    }

    fn isolates_namespace(&self, error: &ConvertError) -> Option<String> {
        core::Pod::from(self.clone()).isolates_namespace(error)
    }

    fn key(model: &model::Pod) -> ObjectRef {
        core::Pod::key(model)
    }

    fn insert(state: &mut ClusterState, model: model::Pod) -> Option<model::Pod> {
        core::Pod::insert(state, model)
    }

    fn remove(state: &mut ClusterState, key: &ObjectRef) {
        core::Pod::remove(state, key)
    }
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
        let sets = LabelSets::default();
        trim(&mut slim, &sets);
        assert_eq!(core::Pod::from(slim.clone()), trimmed);
        let mut twin: SlimPod = serde_json::from_str(POD).unwrap_or_default();
        trim(&mut twin, &sets);
        assert!(
            twin.labels
                .as_ref()
                .zip(slim.labels.as_ref())
                .is_some_and(|(a, b)| a.shares(b)),
            "two pods with the same labels share one map"
        );
        assert_eq!(slim.metadata.uid, None, "metadata trimmed");
        assert_eq!(slim.spec.as_ref().map(|s| s.containers.len()), Some(2));
        let model = ApiKind::convert(&slim).unwrap_or_else(|e| panic!("{e}"));
        let stored = slim.labels.unwrap_or_default();
        assert_eq!(model.labels.get("app").map(String::as_str), Some("web"));
        assert!(model.labels.shares(&stored), "one copy of the labels");
    }

    #[test]
    fn a_pod_without_labels_or_with_empty_ones_round_trips_as_it_came() {
        for labels in [None, Some(Labels::new())] {
            let slim = SlimPod {
                metadata: ObjectMeta {
                    name: Some("a".into()),
                    ..ObjectMeta::default()
                },
                labels: labels.clone(),
                ..SlimPod::default()
            };
            let full = core::Pod::from(slim.clone());
            assert_eq!(full.metadata.labels.is_some(), labels.is_some());
            assert_eq!(SlimPod::from(full), slim);
        }
    }
}
