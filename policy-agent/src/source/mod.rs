//! Where a `ClusterState` comes from. Today: a file or directory of YAML manifests
//! (`manifest`); later the API server. Every source converts Kubernetes objects in
//! `convert`, the one place that reads k8s-openapi types.
//!
//! May import: `crate::model`, k8s-openapi, serde_norway, serde_json,
//! serde_path_to_error. Never `policy`, `dataplane` or `lab`. Outside `convert`,
//! k8s-openapi types are only named as deserialization targets, never read.

pub mod convert;
pub mod manifest;

pub use convert::ConvertError;
pub use manifest::{load_manifests, ManifestError};
