//! The stand-in's data: objects by resource, one revision counter shared by all
//! resources (etcd's), the event history watches replay, compaction, and the
//! snapshots of paginated lists.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

/// A resource the stand-in serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// core/v1 namespaces (cluster-scoped).
    Namespaces,
    /// core/v1 pods.
    Pods,
    /// core/v1 services.
    Services,
    /// networking.k8s.io/v1 networkpolicies.
    NetworkPolicies,
    /// policy.networking.k8s.io/v1alpha2 clusternetworkpolicies (a CRD;
    /// cluster-scoped).
    ClusterNetworkPolicies,
    /// core/v1 nodes (cluster-scoped).
    Nodes,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Resource; 6] = [
        Resource::Namespaces,
        Resource::Pods,
        Resource::Services,
        Resource::NetworkPolicies,
        Resource::ClusterNetworkPolicies,
        Resource::Nodes,
    ];

    /// The resource whose objects have `kind`.
    pub fn of_kind(kind: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.kind() == kind)
    }

    /// The resource of the URL segment `plural` under `group_version`.
    pub fn of_path(group_version: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.api_version() == group_version && r.plural() == plural)
    }

    /// `kind` of its objects.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Namespaces => "Namespace",
            Resource::Pods => "Pod",
            Resource::Services => "Service",
            Resource::NetworkPolicies => "NetworkPolicy",
            Resource::ClusterNetworkPolicies => "ClusterNetworkPolicy",
            Resource::Nodes => "Node",
        }
    }

    /// `apiVersion` of its objects.
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::NetworkPolicies => "networking.k8s.io/v1",
            Resource::ClusterNetworkPolicies => "policy.networking.k8s.io/v1alpha2",
            _ => "v1",
        }
    }

    /// The URL segment.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Namespaces => "namespaces",
            Resource::Pods => "pods",
            Resource::Services => "services",
            Resource::NetworkPolicies => "networkpolicies",
            Resource::ClusterNetworkPolicies => "clusternetworkpolicies",
            Resource::Nodes => "nodes",
        }
    }

    /// Whether its objects live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Resource::Namespaces | Resource::ClusterNetworkPolicies | Resource::Nodes
        )
    }
}

/// A watch event's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// ADDED.
    Added,
    /// MODIFIED.
    Modified,
    /// DELETED.
    Deleted,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches replay it.
#[derive(Clone, Debug)]
pub struct Event {
    /// The revision the change made.
    pub revision: u64,
    /// Whose object changed.
    pub resource: Resource,
    /// The object's namespace ("" for a cluster-scoped one).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (before it, for a deletion, with the new
    /// resourceVersion, as the API server sends it).
    pub object: Value,
}

impl Event {
    /// The event as a watch stream line (without the newline).
    pub fn to_line(&self) -> String {
        json!({"type": self.kind.name(), "object": self.object}).to_string()
    }
}

/// Why an object change was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    /// `kind` is missing or not one the stand-in serves.
    UnknownKind(String),
    /// `metadata.name` is missing.
    NoName,
    /// Create of an object that exists.
    Exists(String),
    /// Update or delete of an object that does not.
    NotFound(String),
}

type ObjectKey = (String, String);

/// A list being paged through: the items of the first page's revision.
#[derive(Debug)]
pub struct Continuation {
    /// The revision the list was taken at.
    pub revision: u64,
    /// The items not yet returned.
    pub rest: Vec<Value>,
}

/// Objects, history and revision.
#[derive(Debug)]
pub struct Store {
    /// The latest revision (0 before any change).
    pub revision: u64,
    /// Watches from a revision older than this get 410 Gone.
    pub compacted: u64,
    objects: BTreeMap<Resource, BTreeMap<ObjectKey, Value>>,
    history: Vec<Event>,
    continuations: HashMap<u64, Continuation>,
    next_continuation: u64,
}

impl Default for Store {
    /// An empty store at revision 1: a list never says resourceVersion "0", which
    /// a watch would read as "any" rather than "after revision 0".
    fn default() -> Self {
        Self {
            revision: 1,
            compacted: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            continuations: HashMap::new(),
            next_continuation: 0,
        }
    }
}

impl Store {
    /// Creates, updates (`replace`) or deletes an object. Returns the new revision.
    pub fn change(&mut self, mut object: Value, kind: EventType) -> Result<u64, StoreError> {
        let type_name = object["kind"].as_str().unwrap_or_default().to_string();
        let resource = Resource::of_kind(&type_name).ok_or(StoreError::UnknownKind(type_name))?;
        let name = object["metadata"]["name"]
            .as_str()
            .filter(|name| !name.is_empty())
            .ok_or(StoreError::NoName)?
            .to_string();
        let namespace = if resource.namespaced() {
            let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
            if namespace.is_empty() {
                "default"
            } else {
                namespace
            }
            .to_string()
        } else {
            String::new()
        };
        let key = (namespace.clone(), name);
        let label = format!("{} {}/{}", resource.kind(), key.0, key.1);
        let objects = self.objects.entry(resource).or_default();
        let exists = objects.contains_key(&key);
        match kind {
            EventType::Added if exists => return Err(StoreError::Exists(label)),
            EventType::Modified | EventType::Deleted if !exists => {
                return Err(StoreError::NotFound(label))
            }
            _ => {}
        }
        self.revision += 1;
        let revision = self.revision;
        let metadata = &mut object["metadata"];
        if resource.namespaced() {
            metadata["namespace"] = json!(namespace);
        }
        metadata["resourceVersion"] = json!(revision.to_string());
        let object = match kind {
            EventType::Deleted => {
                let mut gone = objects.remove(&key).unwrap_or(object);
                gone["metadata"]["resourceVersion"] = json!(revision.to_string());
                gone
            }
            EventType::Added | EventType::Modified => {
                objects.insert(key, object.clone());
                object
            }
        };
        self.history.push(Event {
            revision,
            resource,
            namespace,
            kind,
            object,
        });
        Ok(revision)
    }

    /// The current objects of `resource` (in `namespace` if given), sorted.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .get(&resource)
            .into_iter()
            .flat_map(|objects| objects.iter())
            .filter(|((ns, _), _)| namespace.is_none_or(|wanted| ns == wanted))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// The events of `resource` (in `namespace` if given) after `revision`; `None`
    /// when history before it was compacted away (410 Gone).
    pub fn events_after(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        revision: u64,
    ) -> Option<Vec<Event>> {
        if revision < self.compacted {
            return None;
        }
        let start = self.history.partition_point(|e| e.revision <= revision);
        Some(
            self.history[start..]
                .iter()
                .filter(|e| e.resource == resource)
                .filter(|e| namespace.is_none_or(|wanted| e.namespace == wanted))
                .cloned()
                .collect(),
        )
    }

    /// Forgets the history (and the lists being paged): a watch or list continue
    /// from before now gets 410 Gone.
    pub fn compact(&mut self) {
        self.compacted = self.revision;
        self.history.clear();
        self.continuations.clear();
    }

    /// Keeps `rest` of a list taken at `revision` for a later page; its token.
    pub fn park(&mut self, revision: u64, rest: Vec<Value>) -> String {
        self.next_continuation += 1;
        let id = self.next_continuation;
        self.continuations
            .insert(id, Continuation { revision, rest });
        id.to_string()
    }

    /// The rest of the list `token` names, if it is still kept.
    pub fn resume(&mut self, token: &str) -> Option<Continuation> {
        let id = token.parse().ok()?;
        self.continuations.remove(&id)
    }
}
