//! The Kubernetes kinds a `ClusterState` holds, as one table shared by every source:
//! how each converts, what stands in for an object that does not convert, and
//! where the model object goes.

use k8s_openapi::{
    api::{core::v1 as core, networking::v1 as net},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    Metadata, Resource,
};

use super::{ConvertError, Result};
use crate::model::{self, ClusterState, ObjectRef};

/// A Kubernetes kind the model holds (Namespace, Pod, Service, NetworkPolicy).
pub trait ApiKind: Resource + Metadata<Ty = ObjectMeta> {
    /// The model type it converts to.
    type Model;

    /// Converts the object (the functions of `convert`).
    fn convert(&self) -> Result<Self::Model>;

    /// What stands in for this object when `convert` fails, if anything. Only a
    /// NetworkPolicy has a stand-in (fail closed, see
    /// `convert::network_policy_fail_closed`); other kinds are left out.
    fn fail_closed(&self) -> Option<Self::Model> {
        None
    }

    /// The key the model object is stored under (a Namespace's is `("", name)`).
    fn key(model: &Self::Model) -> ObjectRef;

    /// Stores `model` in `state`, returning the object it replaced, if any.
    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model>;

    /// How messages name the object: `Pod prod/web`, `Namespace prod`; a missing
    /// namespace is `default`, a missing name `(no name)`.
    fn describe(&self) -> String {
        describe_namespaced(Self::KIND, self.metadata())
    }
}

fn describe_namespaced(kind: &str, meta: &ObjectMeta) -> String {
    let namespace = meta
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default");
    format!("{kind} {namespace}/{}", name_or_placeholder(meta))
}

fn name_or_placeholder(meta: &ObjectMeta) -> &str {
    meta.name
        .as_deref()
        .filter(|name| !name.is_empty())
        .unwrap_or("(no name)")
}

/// Why an object was left out of (or stood in for in) a state: `describe` and the
/// conversion error, plus what happened instead for a NetworkPolicy.
pub fn conversion_error<K: ApiKind>(object: &K, error: &ConvertError, stand_in: bool) -> String {
    let mut message = format!("{}: {error}", object.describe());
    if stand_in {
        message.push_str(
            "; every pod of its namespace is isolated in the directions it names (both if \
             unknown) and this policy allows nothing (fail closed)",
        );
    } else {
        message.push_str("; the object is left out");
    }
    message
}

impl ApiKind for core::Namespace {
    type Model = model::Namespace;

    fn convert(&self) -> Result<Self::Model> {
        super::namespace(self)
    }

    fn key(model: &Self::Model) -> ObjectRef {
        ObjectRef::new("", model.name.clone())
    }

    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model> {
        state.namespaces.insert(model.name.clone(), model)
    }

    fn describe(&self) -> String {
        format!("Namespace {}", name_or_placeholder(&self.metadata))
    }
}

impl ApiKind for core::Pod {
    type Model = model::Pod;

    fn convert(&self) -> Result<Self::Model> {
        super::pod(self)
    }

    fn key(model: &Self::Model) -> ObjectRef {
        model.key.clone()
    }

    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model> {
        state.pods.insert(model.key.clone(), model)
    }
}

impl ApiKind for core::Service {
    type Model = model::Service;

    fn convert(&self) -> Result<Self::Model> {
        super::service(self)
    }

    fn key(model: &Self::Model) -> ObjectRef {
        model.key.clone()
    }

    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model> {
        state.services.insert(model.key.clone(), model)
    }
}

impl ApiKind for net::NetworkPolicy {
    type Model = model::NetworkPolicy;

    fn convert(&self) -> Result<Self::Model> {
        super::network_policy(self)
    }

    fn fail_closed(&self) -> Option<Self::Model> {
        super::network_policy_fail_closed(self)
    }

    fn key(model: &Self::Model) -> ObjectRef {
        model.key.clone()
    }

    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model> {
        state.policies.insert(model.key.clone(), model)
    }
}
