//! Upstream's fixture (`conformance/base/manifests.yaml` of network-policy-api)
//! as a `ClusterState`, the policies a case has applied so far, and a step's
//! mutations applied to both.
//!
//! Namespaces `network-policy-conformance-<house>` labelled `conformance-house:
//! <house>` (and `kubernetes.io/metadata.name`); in each of gryffindor,
//! slytherin, hufflepuff and ravenclaw a StatefulSet's two pods (`harry-potter-0`,
//! `harry-potter-1`, ...) labelled `conformance-house: <house>`, declaring the
//! container ports `web` (TCP 80) and `dns` (UDP 53) and serving TCP 80 and 8080,
//! UDP 53 and 5353 (and SCTP 9003 and 9005, which the lab cannot serve); in
//! forbidden-forrest two host-network pods `centaur-0` and `centaur-1`. Nodes
//! carry the labels kind gives its nodes.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::Value;

use super::{case::ClusterStep, CNP_KIND, NP_KIND};
use crate::{
    causes::causes,
    lab::conformance::{expand_value, Addresses, CaseError},
    model::{ClusterState, ContainerPort, Labels, Namespace, Node, ObjectRef, Pod, Protocol},
    source,
};

/// The namespaces, each with its `conformance-house` label.
pub const NAMESPACES: [(&str, &str); 5] = [
    ("network-policy-conformance-gryffindor", "gryffindor"),
    ("network-policy-conformance-slytherin", "slytherin"),
    ("network-policy-conformance-hufflepuff", "hufflepuff"),
    ("network-policy-conformance-ravenclaw", "ravenclaw"),
    (
        "network-policy-conformance-forbidden-forrest",
        "forbidden-forrest",
    ),
];
/// The StatefulSet of each pod-network namespace (its pods are `<name>-0` and
/// `<name>-1`).
pub const WORKLOADS: [(&str, &str); 4] = [
    ("network-policy-conformance-gryffindor", "harry-potter"),
    ("network-policy-conformance-slytherin", "draco-malfoy"),
    ("network-policy-conformance-hufflepuff", "cedric-diggory"),
    ("network-policy-conformance-ravenclaw", "luna-lovegood"),
];
/// The host-network StatefulSet.
pub const HOST_NETWORK_WORKLOAD: (&str, &str) =
    ("network-policy-conformance-forbidden-forrest", "centaur");
/// What every pod-network pod serves that the lab can serve.
pub const SERVED: [(u16, Protocol); 4] = [
    (80, Protocol::Tcp),
    (8080, Protocol::Tcp),
    (53, Protocol::Udp),
    (5353, Protocol::Udp),
];
/// The label upstream's StatefulSets give their pods and namespaces.
pub const HOUSE_LABEL: &str = "conformance-house";
const REPLICAS: usize = 2;

fn house(namespace: &str) -> &'static str {
    NAMESPACES
        .iter()
        .find(|(ns, _)| *ns == namespace)
        .map_or("", |(_, house)| house)
}

fn replicas(namespace: &'static str, workload: &'static str) -> Vec<ObjectRef> {
    (0..REPLICAS)
        .map(|i| ObjectRef::new(namespace, format!("{workload}-{i}")))
        .collect()
}

/// The pod-network pods, namespace by namespace.
pub fn pods() -> Vec<ObjectRef> {
    WORKLOADS
        .iter()
        .flat_map(|(ns, workload)| replicas(ns, workload))
        .collect()
}

/// Every fixture pod, the host-network ones last.
pub fn all_pods() -> Vec<ObjectRef> {
    let (ns, workload) = HOST_NETWORK_WORKLOAD;
    let mut pods = pods();
    pods.extend(replicas(ns, workload));
    pods
}

/// Whether `pod` is one of the host-network pods.
pub fn is_host_network(pod: &ObjectRef) -> bool {
    pod.namespace == HOST_NETWORK_WORKLOAD.0
}

fn pod_labels(key: &ObjectRef) -> Labels {
    Labels::from([
        (HOUSE_LABEL.to_string(), house(&key.namespace).to_string()),
        (
            "statefulset.kubernetes.io/pod-name".to_string(),
            key.name.clone(),
        ),
    ])
}

/// A clean cluster: the namespaces with their labels, the pod-network pods
/// without addresses (the lab or the caller gives them), no node, no policy.
pub fn cluster() -> ClusterState {
    let mut state = ClusterState::default();
    for (name, _) in NAMESPACES {
        state
            .namespaces
            .insert(name.to_string(), namespace(name, &Labels::new()));
    }
    let ports = vec![
        ContainerPort {
            name: Some("web".into()),
            port: 80,
            protocol: Protocol::Tcp,
        },
        ContainerPort {
            name: Some("dns".into()),
            port: 53,
            protocol: Protocol::Udp,
        },
    ];
    for key in pods() {
        let pod = Pod {
            key: key.clone(),
            labels: pod_labels(&key),
            ips: Vec::new(),
            node_name: None,
            host_network: false,
            finished: false,
            ports: ports.clone(),
        };
        state.pods.insert(key, pod);
    }
    state
}

/// A namespace of the fixture: upstream's labels unless `labels` replaces them,
/// plus the name label the API server always sets.
fn namespace(name: &str, labels: &Labels) -> Namespace {
    let mut namespace = Namespace::implicit(name);
    let house = [(HOUSE_LABEL.to_string(), house(name).to_string())];
    let labels = if labels.is_empty() {
        Labels::from(house)
    } else {
        labels.clone()
    };
    for (key, value) in labels.iter() {
        namespace.labels.insert(key.clone(), value.clone());
    }
    namespace
}

/// A node as kind makes it: `kubernetes.io/hostname`, `kubernetes.io/os: linux`
/// and `kubernetes.io/arch` labels, its own addresses.
pub fn node(name: &str, ips: Vec<IpAddr>) -> Node {
    let labels = Labels::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            std::env::consts::ARCH.to_string(),
        ),
    ]);
    Node {
        name: name.to_string(),
        labels,
        ips,
    }
}

/// The host-network pods, `centaur-<i>` on `nodes[i % len]` with that node's
/// addresses (upstream's StatefulSet puts them on any node; none if no node).
pub fn host_network_pods(nodes: &[Node]) -> Vec<Pod> {
    let (ns, workload) = HOST_NETWORK_WORKLOAD;
    replicas(ns, workload)
        .into_iter()
        .enumerate()
        .filter_map(|(i, key)| {
            let node = nodes.get(i % nodes.len().max(1))?;
            Some(Pod {
                labels: pod_labels(&key),
                key,
                ips: node.ips.clone(),
                node_name: Some(node.name.clone()),
                host_network: true,
                finished: false,
                ports: Vec::new(),
            })
        })
        .collect()
}

/// The kind, namespace (empty for a cluster-scoped object) and name of a policy.
type PolicyKey = (String, String, String);

/// The policies a case has applied so far, as objects: a step replaces or
/// deletes some, then all of them are read the way manifests are.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    objects: BTreeMap<PolicyKey, Value>,
}

fn key_of(object: &Value) -> PolicyKey {
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(object, |v, key| v.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (
        field(&["kind"]),
        field(&["metadata", "namespace"]),
        field(&["metadata", "name"]),
    )
}

/// Distinguishes the manifest files of one process.
static FILES: AtomicUsize = AtomicUsize::new(0);

/// A manifest file that is removed when dropped.
struct TempManifest(PathBuf);

impl TempManifest {
    fn write(objects: &[&Value]) -> std::io::Result<Self> {
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "podwall-cluster-conformance-{}-{n}.json",
            std::process::id()
        ));
        let mut text = String::new();
        for object in objects {
            text.push_str(&object.to_string());
            text.push('\n');
        }
        std::fs::write(&path, text)?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempManifest {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0) {
            tracing::debug!(path = %self.0.display(), %error, "removing a manifest file");
        }
    }
}

impl Policies {
    /// Applies `step`'s policy changes: objects created or replaced (CIDR
    /// placeholders expanded with `addresses`), then deleted. `field` is the
    /// step's path in the file, for errors.
    pub fn change(
        &mut self,
        step: &ClusterStep,
        addresses: &Addresses,
        field: &str,
    ) -> Result<(), CaseError> {
        for (i, object) in step.apply.iter().enumerate() {
            let mut object = object.clone();
            expand_value(&mut object, addresses).map_err(|message| CaseError::Invalid {
                field: format!("{field}.apply[{i}]"),
                message,
            })?;
            self.objects.insert(key_of(&object), object);
        }
        for deletion in &step.delete {
            let key = (
                deletion.kind.clone(),
                deletion.namespace.clone().unwrap_or_default(),
                deletion.name.clone(),
            );
            if self.objects.remove(&key).is_none() {
                tracing::warn!(kind = %key.0, name = %key.2, "{field}: deleting a policy that is not applied");
            }
        }
        Ok(())
    }

    /// How many ClusterNetworkPolicy objects are applied.
    fn cluster_policy_objects(&self) -> usize {
        self.objects
            .keys()
            .filter(|(kind, ..)| kind == CNP_KIND)
            .count()
    }

    /// Reads every applied object through the manifest reader (as
    /// `policy-agent --manifests` would) into `state`'s NetworkPolicies and
    /// ClusterNetworkPolicies, replacing what they held. An object the reader
    /// skips (a kind it does not read) is an error, never a silent gap.
    pub fn load_into(&self, state: &mut ClusterState, field: &str) -> Result<(), CaseError> {
        let invalid = |message: String| CaseError::Invalid {
            field: field.to_string(),
            message,
        };
        let objects: Vec<&Value> = self.objects.values().collect();
        let manifest = TempManifest::write(&objects)
            .map_err(|e| invalid(format!("writing the step's policies: {e}")))?;
        let loaded = source::load_manifests(manifest.path())
            .map_err(|e| invalid(format!("reading the step's policies: {}", causes(&e))))?;
        let expected = self.cluster_policy_objects();
        if loaded.cluster_policies.len() != expected {
            return Err(invalid(format!(
                "{expected} ClusterNetworkPolicy objects applied but the manifest reader read {}: \
                 {}",
                loaded.cluster_policies.len(),
                NO_CNP_READER_DETAIL
            )));
        }
        let networks = self
            .objects
            .keys()
            .filter(|(kind, ..)| kind == NP_KIND)
            .count();
        if loaded.policies.len() != networks {
            return Err(invalid(format!(
                "{networks} NetworkPolicy objects applied but the manifest reader read {}",
                loaded.policies.len()
            )));
        }
        state.policies = loaded.policies;
        state.cluster_policies = loaded.cluster_policies;
        Ok(())
    }
}

/// Why a ClusterNetworkPolicy might not be read.
const NO_CNP_READER_DETAIL: &str =
    "it skips kinds it does not read (is the ClusterNetworkPolicy conversion there?)";

/// Gives namespaces the labels `step` sets.
pub fn relabel(state: &mut ClusterState, step: &ClusterStep) {
    for (name, labels) in &step.relabel {
        state
            .namespaces
            .insert(name.clone(), namespace(name, labels));
    }
}

/// Whether the manifest reader reads ClusterNetworkPolicy objects: tried on a
/// minimal valid one rather than assumed.
pub fn cluster_policies_readable() -> bool {
    let object = serde_json::json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": CNP_KIND,
        "metadata": {"name": "probe"},
        "spec": {
            "tier": "Admin",
            "priority": 1,
            "subject": {"namespaces": {}},
            "ingress": [{"name": "deny", "action": "Deny", "from": [{"namespaces": {}}]}],
        },
    });
    let Ok(manifest) = TempManifest::write(&[&object]) else {
        return false;
    };
    match source::load_manifests(manifest.path()) {
        Ok(state) => state.cluster_policies.len() == 1,
        Err(error) => {
            tracing::debug!(error = %causes(&error), "reading a ClusterNetworkPolicy");
            false
        }
    }
}

/// The fixture pods' first IPv4 addresses in `state` (what placeholders expand to).
pub fn addresses(state: &ClusterState) -> Addresses {
    state
        .pods
        .iter()
        .filter_map(|(key, pod)| {
            let ip = pod.ipv4_addresses().next()?;
            Some((key.clone(), IpAddr::V4(ip)))
        })
        .collect()
}
