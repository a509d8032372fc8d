//! The Kubernetes kinds a `ClusterState` holds, as one table shared by every source:
//! how each converts, what stands in for an object that does not convert, and
//! where the model object goes.

use k8s_openapi::{
    api::{core::v1 as core, networking::v1 as net},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    Metadata, Resource,
};

use super::{caps::OVER_CAP_POLICY, ConvertError, Result};
use crate::model::{self, ClusterState, ObjectRef};

/// A Kubernetes kind the model holds (Namespace, Pod, Service, NetworkPolicy,
/// ClusterNetworkPolicy, Node).
pub trait ApiKind: Resource + Metadata<Ty = ObjectMeta> {
    /// The model type it converts to.
    type Model;

    /// Converts the object (the functions of `convert`).
    fn convert(&self) -> Result<Self::Model>;

    /// What stands in for this object when `convert` fails with `error`, if
    /// anything, and what that means for a message (fail closed): a
    /// NetworkPolicy's stand-in (`convert::network_policy_fail_closed`); for an
    /// object over a cap (`caps`), a Pod's address-less stub, a Namespace with only
    /// its name label, a Service's ClusterIP alone. Otherwise it is left out.
    fn fail_closed(&self, _error: &ConvertError) -> Option<(Self::Model, &'static str)> {
        None
    }

    /// The namespace whose every pod `error` isolates (`caps::OVER_CAP_POLICY`),
    /// if any: a Pod's or a Namespace's over a cap.
    fn isolates_namespace(&self, _error: &ConvertError) -> Option<String> {
        None
    }

    /// The key the model object is stored under (a Namespace's is `("", name)`).
    fn key(model: &Self::Model) -> ObjectRef;

    /// Stores `model` in `state`, returning the object it replaced, if any.
    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model>;

    /// Removes the object stored under `key` (as `key` gives it) from `state`.
    fn remove(state: &mut ClusterState, key: &ObjectRef);

    /// The key a converted object with this metadata namespace and name is
    /// stored under (`key`): a namespaced object without a namespace lives in
    /// `default`, as `convert` puts it.
    fn model_key(namespace: Option<&str>, name: &str) -> ObjectRef {
        let namespace = namespace.filter(|ns| !ns.is_empty()).unwrap_or("default");
        ObjectRef::new(namespace, name)
    }

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

/// Why an object was left out of (or stood in for in) a state: `describe`, the
/// conversion error and what happened instead (`outcome`, from `fail_closed`).
pub fn conversion_error<K: ApiKind>(
    object: &K,
    error: &ConvertError,
    outcome: Option<&str>,
) -> String {
    format!(
        "{}: {error}; {}",
        object.describe(),
        outcome.unwrap_or("the object is left out")
    )
}

/// What a NetworkPolicy's stand-in means.
const POLICY_STAND_IN: &str = "every pod of its namespace is isolated in the directions it \
                               names (both if unknown) and this policy allows nothing (fail \
                               closed)";
/// What an address-less stub means.
const STUB: &str = "the pod stands in without addresses or labels, and every pod of its \
                    namespace is isolated both ways with no allow from podwall (fail closed)";
/// What a Namespace over a cap means.
const NAMESPACE_STUB: &str = "the namespace stands in with only its name label, its pods \
                              without addresses or labels, and every pod of it is isolated \
                              both ways with no allow from podwall (fail closed)";
/// What a ClusterNetworkPolicy's stand-in means.
const CLUSTER_POLICY_STAND_IN: &str = "it stands in as an Admin policy of priority 0 that \
                                       denies everything to and from its pods in the \
                                       directions it has rules in (both if unknown) (fail \
                                       closed)";
/// What a Service over a cap means.
const SERVICE_STUB: &str = "the Service stands in with its ClusterIP alone";

/// The policy `caps::OVER_CAP_POLICY` of `namespace`: every pod there isolated
/// both ways, no rules.
pub fn over_cap_policy(namespace: &str) -> model::NetworkPolicy {
    model::NetworkPolicy {
        key: ObjectRef::new(namespace, OVER_CAP_POLICY),
        pod_selector: model::LabelSelector::default(),
        policy_types: model::PolicyTypes {
            ingress: true,
            egress: true,
        },
        ingress: Vec::new(),
        egress: Vec::new(),
        mode: model::PolicyMode::Enforce,
    }
}

/// Whether `error` is an object over a cap.
fn over_cap(error: &ConvertError) -> bool {
    matches!(error, ConvertError::OverCap { .. })
}

/// A Pod over a cap as a stub: its name, node, hostNetwork and phase, nothing a
/// selector or a peer lookup can match.
pub fn pod_stub(pod: &core::Pod) -> Option<model::Pod> {
    let key = super::object_ref(&pod.metadata).ok()?;
    let spec = pod.spec.as_ref();
    Some(model::Pod {
        key,
        labels: model::Labels::new(),
        ips: Vec::new(),
        node_name: spec.and_then(|spec| spec.node_name.clone()),
        host_network: spec.and_then(|spec| spec.host_network).unwrap_or(false),
        ports: Vec::new(),
        finished: super::finished(pod.status.as_ref()),
    })
}

impl ApiKind for core::Namespace {
    type Model = model::Namespace;

    fn convert(&self) -> Result<Self::Model> {
        super::namespace(self)
    }

    fn fail_closed(&self, error: &ConvertError) -> Option<(Self::Model, &'static str)> {
        let name = self.metadata.name.as_deref().filter(|n| !n.is_empty())?;
        over_cap(error).then(|| (model::Namespace::implicit(name), NAMESPACE_STUB))
    }

    fn isolates_namespace(&self, error: &ConvertError) -> Option<String> {
        let name = self.metadata.name.as_deref().filter(|n| !n.is_empty())?;
        over_cap(error).then(|| name.to_string())
    }

    fn key(model: &Self::Model) -> ObjectRef {
        ObjectRef::new("", model.name.clone())
    }

    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model> {
        state.namespaces.insert(model.name.clone(), model)
    }

    fn remove(state: &mut ClusterState, key: &ObjectRef) {
        state.namespaces.remove(&key.name);
    }

    fn model_key(_namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef::new("", name)
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

    fn fail_closed(&self, error: &ConvertError) -> Option<(Self::Model, &'static str)> {
        if !over_cap(error) {
            return None;
        }
        pod_stub(self).map(|stub| (stub, STUB))
    }

    fn isolates_namespace(&self, error: &ConvertError) -> Option<String> {
        let key = super::object_ref(&self.metadata).ok()?;
        over_cap(error).then_some(key.namespace)
    }

    fn key(model: &Self::Model) -> ObjectRef {
        model.key.clone()
    }

    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model> {
        state.pods.insert(model.key.clone(), model)
    }

    fn remove(state: &mut ClusterState, key: &ObjectRef) {
        state.pods.remove(key);
    }
}

impl ApiKind for core::Service {
    type Model = model::Service;

    fn convert(&self) -> Result<Self::Model> {
        super::service(self)
    }

    fn fail_closed(&self, error: &ConvertError) -> Option<(Self::Model, &'static str)> {
        if !over_cap(error) {
            return None;
        }
        let key = super::object_ref(&self.metadata).ok()?;
        let cluster_ip = self
            .spec
            .as_ref()
            .and_then(|spec| spec.cluster_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        // Its addresses stay Service addresses (deferred), as far as they parse
        // and up to the cap.
        let mut extra_ips = super::extra_ips(self, cluster_ip).unwrap_or_default();
        extra_ips.truncate(super::caps::MAX_SERVICE_ADDRESSES);
        let stub = model::Service {
            key,
            selector: None,
            cluster_ip,
            extra_ips,
            ports: Vec::new(),
        };
        Some((stub, SERVICE_STUB))
    }

    fn key(model: &Self::Model) -> ObjectRef {
        model.key.clone()
    }

    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model> {
        state.services.insert(model.key.clone(), model)
    }

    fn remove(state: &mut ClusterState, key: &ObjectRef) {
        state.services.remove(key);
    }
}

impl ApiKind for net::NetworkPolicy {
    type Model = model::NetworkPolicy;

    fn convert(&self) -> Result<Self::Model> {
        super::network_policy(self)
    }

    fn fail_closed(&self, _error: &ConvertError) -> Option<(Self::Model, &'static str)> {
        super::network_policy_fail_closed(self).map(|stand_in| (stand_in, POLICY_STAND_IN))
    }

    fn key(model: &Self::Model) -> ObjectRef {
        model.key.clone()
    }

    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model> {
        state.policies.insert(model.key.clone(), model)
    }

    fn remove(state: &mut ClusterState, key: &ObjectRef) {
        state.policies.remove(key);
    }
}

impl ApiKind for super::ClusterNetworkPolicy {
    type Model = model::ClusterNetworkPolicy;

    fn convert(&self) -> Result<Self::Model> {
        super::cluster_network_policy(self)
    }

    fn fail_closed(&self, error: &ConvertError) -> Option<(Self::Model, &'static str)> {
        super::cluster_network_policy_fail_closed(self, error)
            .map(|stand_in| (stand_in, CLUSTER_POLICY_STAND_IN))
    }

    fn key(model: &Self::Model) -> ObjectRef {
        ObjectRef::new("", model.name.clone())
    }

    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model> {
        state.cluster_policies.insert(model.name.clone(), model)
    }

    fn remove(state: &mut ClusterState, key: &ObjectRef) {
        state.cluster_policies.remove(&key.name);
    }

    fn model_key(_namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef::new("", name)
    }

    fn describe(&self) -> String {
        format!(
            "ClusterNetworkPolicy {}",
            name_or_placeholder(&self.metadata)
        )
    }
}

impl ApiKind for core::Node {
    type Model = model::Node;

    fn convert(&self) -> Result<Self::Model> {
        super::node(self)
    }

    fn key(model: &Self::Model) -> ObjectRef {
        ObjectRef::new("", model.name.clone())
    }

    fn insert(state: &mut ClusterState, model: Self::Model) -> Option<Self::Model> {
        state.nodes.insert(model.name.clone(), model)
    }

    fn remove(state: &mut ClusterState, key: &ObjectRef) {
        state.nodes.remove(&key.name);
    }

    fn model_key(_namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef::new("", name)
    }

    fn describe(&self) -> String {
        format!("Node {}", name_or_placeholder(&self.metadata))
    }
}
