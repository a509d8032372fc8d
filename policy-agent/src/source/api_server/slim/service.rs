//! What the Service store holds: `SlimService`, the fields of a Service that
//! `trim::service` keeps, as `SlimPod` is for Pods. A k8s-openapi `Service` is
//! about 0.9 KiB of struct, most of it a `ServiceSpec` of fields the agent never
//! reads; the selector is the model's `Labels`, which the model Service converted
//! from it shares.

use k8s_openapi::{
    api::core::v1 as core, apimachinery::pkg::apis::meta::v1::ObjectMeta, Metadata,
    NamespaceResourceScope, Resource,
};
use serde::Deserialize;

use crate::{
    model::{self, ClusterState, Labels, ObjectRef},
    source::convert::{ApiKind, ConvertError},
};

/// A Service as the store keeps it: what `trim::service` keeps of `core::Service`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(from = "WatchedService")]
pub struct SlimService {
    /// Name and namespace (and, until trimmed, the rest of the metadata).
    pub metadata: ObjectMeta,
    /// `spec.selector`, shared with the model Service converted from this one.
    pub selector: Option<Labels>,
    /// `spec`, the other fields `convert::service` reads.
    pub spec: Option<SlimServiceSpec>,
    /// `status`: each load balancer ingress' `ip` and `ipMode` once trimmed.
    pub status: Option<core::ServiceStatus>,
}

/// `spec.clusterIP`, `spec.clusterIPs`, `spec.externalIPs` and `spec.ports`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SlimServiceSpec {
    /// `spec.clusterIP`.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// `spec.clusterIPs`.
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    /// `spec.externalIPs`.
    #[serde(rename = "externalIPs")]
    pub external_ips: Option<Vec<String>>,
    /// `spec.ports` (once trimmed, each port's name, port, targetPort and
    /// protocol).
    pub ports: Option<Vec<core::ServicePort>>,
}

/// A `SlimService` as the API server sends it: the selector still in the spec.
#[derive(Deserialize)]
struct WatchedService {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: Option<WatchedSpec>,
    status: Option<core::ServiceStatus>,
}

#[derive(Deserialize)]
struct WatchedSpec {
    selector: Option<std::collections::BTreeMap<String, String>>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Option<Vec<String>>,
    #[serde(rename = "externalIPs")]
    external_ips: Option<Vec<String>>,
    ports: Option<Vec<core::ServicePort>>,
}

impl From<WatchedService> for SlimService {
    fn from(svc: WatchedService) -> Self {
        let (selector, spec) = match svc.spec {
            None => (None, None),
            Some(spec) => (
                spec.selector.map(Labels::from),
                Some(SlimServiceSpec {
                    cluster_ip: spec.cluster_ip,
                    cluster_ips: spec.cluster_ips,
                    external_ips: spec.external_ips,
                    ports: spec.ports,
                }),
            ),
        };
        SlimService {
            metadata: svc.metadata,
            selector,
            spec,
            status: svc.status,
        }
    }
}

impl Resource for SlimService {
    const API_VERSION: &'static str = <core::Service as Resource>::API_VERSION;
    const GROUP: &'static str = <core::Service as Resource>::GROUP;
    const KIND: &'static str = <core::Service as Resource>::KIND;
    const VERSION: &'static str = <core::Service as Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <core::Service as Resource>::URL_PATH_SEGMENT;
    type Scope = NamespaceResourceScope;
}

impl Metadata for SlimService {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl From<SlimService> for core::Service {
    fn from(svc: SlimService) -> Self {
        let spec = match (svc.selector, svc.spec) {
            (None, None) => None,
            (selector, spec) => {
                let spec = spec.unwrap_or_default();
                Some(core::ServiceSpec {
                    selector: selector.map(Into::into),
                    cluster_ip: spec.cluster_ip,
                    cluster_ips: spec.cluster_ips,
                    external_ips: spec.external_ips,
                    ports: spec.ports,
                    ..core::ServiceSpec::default()
                })
            }
        };
        core::Service {
            metadata: svc.metadata,
            spec,
            status: svc.status,
        }
    }
}

impl From<core::Service> for SlimService {
    /// Keeps what `SlimService` has room for; the rest goes (as a watched one).
    fn from(svc: core::Service) -> Self {
        WatchedService {
            metadata: svc.metadata,
            spec: svc.spec.map(|spec| WatchedSpec {
                selector: spec.selector,
                cluster_ip: spec.cluster_ip,
                cluster_ips: spec.cluster_ips,
                external_ips: spec.external_ips,
                ports: spec.ports,
            }),
            status: svc.status,
        }
        .into()
    }
}

/// Trims a stored Service as `trim::service` trims a `core::Service` (the same
/// code: caps, metadata, the over-cap stand-in).
pub fn trim(svc: &mut SlimService) {
    let mut full = core::Service::from(std::mem::take(svc));
    super::super::trim::service(&mut full);
    *svc = SlimService::from(full);
}

/// A stored Service converts as the `core::Service` it holds
/// (`convert::service`), and the model Service shares the stored selector.
impl ApiKind for SlimService {
    type Model = model::Service;

    fn convert(&self) -> Result<model::Service, ConvertError> {
        let mut svc = core::Service::from(self.clone()).convert()?;
        // `convert::service` copies a non-empty selector as it is; the check
        // keeps the model right should it ever change it.
        if let (Some(stored), Some(converted)) = (&self.selector, &mut svc.selector) {
            if *converted == *stored {
                *converted = stored.clone();
            }
        }
        Ok(svc)
    }

    fn fail_closed(&self, error: &ConvertError) -> Option<(model::Service, &'static str)> {
        core::Service::from(self.clone()).fail_closed(error)
    }

    fn isolates_namespace(&self, error: &ConvertError) -> Option<String> {
        core::Service::from(self.clone()).isolates_namespace(error)
    }

    fn key(model: &model::Service) -> ObjectRef {
        core::Service::key(model)
    }

    fn insert(state: &mut ClusterState, model: model::Service) -> Option<model::Service> {
        core::Service::insert(state, model)
    }

    fn remove(state: &mut ClusterState, key: &ObjectRef) {
        core::Service::remove(state, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Service as the API server sends it, with fields the agent never reads.
    const SERVICE: &str = r#"{
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "prod", "uid": "1234",
                     "annotations": {"note": "x"}, "resourceVersion": "9"},
        "spec": {"selector": {"app": "web"}, "type": "LoadBalancer",
                 "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                 "externalIPs": ["192.0.2.7"], "sessionAffinity": "None",
                 "ports": [{"name": "http", "port": 80, "targetPort": "http",
                            "protocol": "TCP", "nodePort": 30080}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1", "ipMode": "VIP",
                                                  "hostname": "lb"}]},
                   "conditions": [{"type": "x", "status": "True", "reason": "r", "message": "m",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }"#;

    #[test]
    fn a_slim_service_converts_and_trims_as_the_whole_service_does() {
        let full: core::Service = serde_json::from_str(SERVICE).unwrap_or_default();
        let mut slim: SlimService = serde_json::from_str(SERVICE).unwrap_or_default();
        let converted = crate::source::convert::service(&full);
        assert!(converted.is_ok(), "{converted:?}");
        assert_eq!(ApiKind::convert(&slim), converted);
        let mut trimmed = full;
        super::super::super::trim::service(&mut trimmed);
        trim(&mut slim);
        assert_eq!(core::Service::from(slim.clone()), trimmed);
        assert_eq!(slim.metadata.uid, None, "metadata trimmed");
        let model = ApiKind::convert(&slim).unwrap_or_else(|e| panic!("{e}"));
        let (Some(stored), Some(shared)) = (&slim.selector, &model.selector) else {
            panic!("the selector is kept: {slim:?}, {model:?}");
        };
        assert!(shared.shares(stored), "one copy of the selector");
    }

    #[test]
    fn a_service_without_spec_or_with_an_empty_selector_round_trips_as_it_came() {
        let bare = core::Service {
            metadata: ObjectMeta {
                name: Some("a".into()),
                ..ObjectMeta::default()
            },
            ..core::Service::default()
        };
        let empty_selector = core::Service {
            spec: Some(core::ServiceSpec {
                selector: Some(Default::default()),
                ..core::ServiceSpec::default()
            }),
            ..bare.clone()
        };
        for svc in [bare, empty_selector] {
            assert_eq!(core::Service::from(SlimService::from(svc.clone())), svc);
        }
    }
}
