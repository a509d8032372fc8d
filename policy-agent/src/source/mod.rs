//! Where a `ClusterState` comes from: a file or directory of YAML manifests
//! (`manifest`), or the API server (`kube`: watches and reflector stores). Every
//! source converts Kubernetes objects in `convert`, the one place that reads
//! k8s-openapi types, and assembles the state in `state`.
//!
//! May import: `crate::model`, k8s-openapi, kube, tokio, futures, backon,
//! serde_norway, serde_json, serde_path_to_error. Never `policy`, `dataplane` or
//! `lab`. Outside `convert`, k8s-openapi types are only named (deserialization
//! targets, watched kinds) or trimmed (`kube::trim`), never read.

pub mod convert;
pub mod kube;
pub mod manifest;
mod state;

pub use convert::ConvertError;
pub use manifest::{load_all, load_manifests, ManifestError};
