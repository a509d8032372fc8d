//! Where a `ClusterState` comes from: a file or directory of YAML manifests
//! (`manifest`), or the API server (`api_server`: watches and reflector stores,
//! named so as not to shadow the `kube` crate). Every
//! source converts Kubernetes objects in `convert`, the one place that reads
//! k8s-openapi types, and assembles the state in `state`. `yaml` is how any YAML
//! file is read (manifests here, conformance cases in the lab).
//!
//! May import: `crate::model`, k8s-openapi, kube, tokio, futures, backon,
//! serde-saphyr (in `yaml`, and tests for their fixtures), serde_json,
//! serde_path_to_error. Never `policy`, `dataplane` or `lab`. Outside `convert`,
//! k8s-openapi types are only named (deserialization targets, watched kinds) or
//! trimmed (`api_server::trim`), never read.

pub mod api_server;
pub mod convert;
pub mod manifest;
pub(crate) mod state;
pub mod yaml;

pub use convert::ConvertError;
pub use manifest::{load_all, load_manifests, ManifestError, SyntaxError};
pub use yaml::YamlError;
