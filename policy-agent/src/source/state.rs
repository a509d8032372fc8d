//! Assembling a `ClusterState` from converted objects: what every source does the
//! same way, whatever it reads (manifest files, the API server's watch), caps on
//! how many objects of each kind are handled included (`convert::caps`); and
//! keeping one up to date object by object (`KeptState`), which must come to
//! what assembling it whole would.
//!
//! May import: `crate::model`, `super::convert` (its `ApiKind` table and caps).
//! Nothing that reads Kubernetes objects itself.

use std::collections::{BTreeMap, BTreeSet};

use super::convert::{
    caps::{
        MAX_CLUSTER_NETWORK_POLICIES, MAX_NAMESPACES, MAX_NETWORK_POLICIES, MAX_PODS, MAX_SERVICES,
    },
    conversion_error, deny_everything, over_cap_policy, ApiKind, ConvertError,
};
use crate::model::{
    change_each, ClusterState, Labels, Namespace, NetworkPolicy, ObjectRef, Pod, PolicyTypes,
};

/// Objects over a cap, by kind (`Pod`, `NetworkPolicy`, ...).
pub type OverCapCounts = BTreeMap<&'static str, usize>;

/// How many objects of each kind are handled (`caps::MAX_*` unless a test says).
#[derive(Clone, Copy, Debug)]
struct CountCaps {
    namespaces: usize,
    pods: usize,
    services: usize,
    policies: usize,
    cluster_policies: usize,
}

impl Default for CountCaps {
    fn default() -> Self {
        Self {
            namespaces: MAX_NAMESPACES,
            pods: MAX_PODS,
            services: MAX_SERVICES,
            policies: MAX_NETWORK_POLICIES,
            cluster_policies: MAX_CLUSTER_NETWORK_POLICIES,
        }
    }
}

/// Which object of a source a conversion error names: its kind and its
/// metadata's namespace and name, as the source keys it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceKey {
    /// `Resource::KIND`.
    pub kind: &'static str,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: Option<String>,
}

impl SourceKey {
    /// Whether the key is not the one-to-one image of a model key: a
    /// cluster-scoped object with a namespace (even an empty one), a namespaced object without one (`convert` puts it in
    /// `default`, where another object may have its name), or no name. The API
    /// server sends none of these; a state holding one is only rebuilt whole.
    pub(crate) fn odd(&self) -> bool {
        let no_name = self.name.as_deref().is_none_or(str::is_empty);
        let odd_namespace = if self.cluster_scoped() {
            self.namespace.is_some()
        } else {
            self.namespace.as_deref().is_none_or(str::is_empty)
        };
        no_name || odd_namespace
    }

    /// Whether its kind is cluster-scoped (Namespace, ClusterNetworkPolicy, Node).
    pub(crate) fn cluster_scoped(&self) -> bool {
        matches!(self.kind, "Namespace" | "ClusterNetworkPolicy" | "Node")
    }

    /// The key of `object`.
    pub fn of<K: ApiKind>(object: &K) -> Self {
        let meta = object.metadata();
        Self {
            kind: K::KIND,
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        }
    }
}

/// A `ClusterState` being filled, one converted object at a time.
#[derive(Debug, Default)]
pub struct StateBuilder {
    state: ClusterState,
    /// Conversion errors by the object they name (`add_or_record`).
    errors: Vec<(SourceKey, String)>,
    /// Whether `add_or_record` met an object whose key is odd
    /// (`SourceKey::odd`).
    odd: bool,
    /// Namespaces to isolate (`caps::OVER_CAP_POLICY`), and whether every pod of
    /// it stands in as a stub too (a Namespace over a cap: its labels are unknown).
    isolated: BTreeMap<String, bool>,
    over_cap: OverCapCounts,
    caps: CountCaps,
}

impl StateBuilder {
    /// Adds a converted object. An object of the same kind and key added before is
    /// kept, and its key is returned as the error (the caller says where each came
    /// from).
    pub fn add<K: ApiKind>(&mut self, model: K::Model) -> Result<(), ObjectRef> {
        let key = K::key(&model);
        if let Some(first) = K::insert(&mut self.state, model) {
            K::insert(&mut self.state, first);
            return Err(key);
        }
        Ok(())
    }

    /// Converts `object` and adds it, for sources that keep going past a bad object
    /// (the API server's watch): one that does not convert is recorded as an error
    /// naming it and the field, and replaced by its kind's fail-closed stand-in, if
    /// it has one (`ApiKind::fail_closed`), else left out.
    pub fn add_or_record<K: ApiKind>(&mut self, object: &K) {
        self.odd |= SourceKey::of(object).odd();
        let model = match object.convert() {
            Ok(model) => model,
            Err(error) => {
                let stand_in = object.fail_closed(&error);
                if matches!(error, ConvertError::OverCap { .. }) {
                    *self.over_cap.entry(K::KIND).or_default() += 1;
                }
                if let Some(namespace) = object.isolates_namespace(&error) {
                    let stub_pods = self.isolated.entry(namespace).or_default();
                    *stub_pods |= K::KIND == "Namespace";
                }
                let outcome = stand_in.as_ref().map(|(_, outcome)| *outcome);
                let line = conversion_error(object, &error, outcome);
                self.errors.push((SourceKey::of(object), line));
                match stand_in {
                    Some((stand_in, _)) => stand_in,
                    None => return,
                }
            }
        };
        if let Err(key) = self.add::<K>(model) {
            // The API server keys objects by kind, namespace and name: not reached.
            tracing::warn!(kind = K::KIND, %key, "object listed twice; keeping the first");
        }
    }

    /// The state, with an implicit Namespace for every namespace an object lives in
    /// but no Namespace declares, and the conversion errors `add_or_record` met,
    /// sorted.
    pub fn finish(self) -> (ClusterState, Vec<String>) {
        let (state, errors, _) = self.finish_counted();
        (state, errors)
    }

    /// `finish`, after the count caps (the objects of a kind past its cap, in key
    /// order, stand in as over-cap ones do), with how many objects of each kind
    /// were over a cap.
    pub fn finish_counted(self) -> (ClusterState, Vec<String>, OverCapCounts) {
        let kept = self.finish_kept();
        let errors = kept.errors();
        (kept.state, errors, kept.over_cap)
    }

    /// `finish_counted`, as a state to keep up to date object by object.
    pub fn finish_kept(mut self) -> KeptState {
        let count_lines = self.cap_counts();
        let Self {
            mut state,
            errors,
            odd,
            isolated,
            over_cap,
            caps,
        } = self;
        let stub_namespaces: BTreeSet<&String> = isolated
            .iter()
            .filter(|(_, stub_pods)| **stub_pods)
            .map(|(namespace, _)| namespace)
            .collect();
        if !stub_namespaces.is_empty() {
            change_each(&mut state.pods, |key, pod| {
                if stub_namespaces.contains(&key.namespace) {
                    *pod = stub(pod);
                }
            });
        }
        for namespace in isolated.keys() {
            let policy = over_cap_policy(namespace);
            state.policies.insert(policy.key.clone(), policy);
        }
        let declared = state.namespaces.keys().cloned().collect();
        state.add_implicit_namespaces();
        KeptState {
            state,
            errors: errors.into_iter().collect(),
            count_lines,
            over_cap,
            odd,
            caps,
            declared,
            touched: BTreeSet::new(),
        }
    }

    /// Applies `caps::MAX_*` counts: what is past a cap stands in as over-cap;
    /// returns one error line per kind over its cap.
    fn cap_counts(&mut self) -> Vec<String> {
        let caps = self.caps;
        let state = &mut self.state;
        let mut lines = Vec::new();
        let namespaces = excess(state.namespaces.keys().cloned(), caps.namespaces);
        for name in &namespaces {
            state
                .namespaces
                .insert(name.clone(), Namespace::implicit(name));
            self.isolated.insert(name.clone(), true);
        }
        lines.extend(count_line("Namespaces", state.namespaces.len(), caps.namespaces, "by name stand in with only their name label, their pods without addresses or labels, and are isolated both ways"));
        let pods = excess(state.pods.keys().cloned(), caps.pods);
        for key in &pods {
            if let Some(pod) = state.pods.get_mut(key) {
                *pod = stub(pod);
            }
            self.isolated.entry(key.namespace.clone()).or_default();
        }
        lines.extend(count_line("Pods", state.pods.len(), caps.pods, "by namespace/name stand in without addresses or labels, and their namespaces are isolated both ways"));
        for key in excess(state.services.keys().cloned(), caps.services) {
            if let Some(service) = state.services.get_mut(&key) {
                service.selector = None;
                service.ports.clear();
            }
        }
        lines.extend(count_line(
            "Services",
            state.services.len(),
            caps.services,
            "by namespace/name stand in with their ClusterIP alone",
        ));
        let policies = excess(state.policies.keys().cloned(), caps.policies);
        for key in &policies {
            state.policies.insert(key.clone(), namespace_stand_in(key));
        }
        lines.extend(count_line(
            "NetworkPolicies",
            state.policies.len(),
            caps.policies,
            "by namespace/name isolate every pod of their namespace both ways and allow nothing",
        ));
        let cluster_policies = excess(
            state.cluster_policies.keys().cloned(),
            caps.cluster_policies,
        );
        for name in &cluster_policies {
            if let Some(policy) = state.cluster_policies.get_mut(name) {
                let (ingress, egress) = (!policy.ingress.is_empty(), !policy.egress.is_empty());
                let reason = format!(
                    "over the cap of {} ClusterNetworkPolicies handled",
                    caps.cluster_policies
                );
                deny_everything(policy, ingress, egress, &reason);
            }
        }
        lines.extend(count_line(
            "ClusterNetworkPolicies",
            state.cluster_policies.len(),
            caps.cluster_policies,
            "by name stand in as Admin policies of priority 0 denying everything to and from \
             their pods in the directions they have rules in",
        ));
        for (kind, count) in [
            ("Namespace", namespaces.len()),
            ("Pod", pods.len()),
            (
                "Service",
                state.services.len().saturating_sub(caps.services),
            ),
            ("NetworkPolicy", policies.len()),
            ("ClusterNetworkPolicy", cluster_policies.len()),
        ] {
            if count > 0 {
                *self.over_cap.entry(kind).or_default() += count;
            }
        }
        lines
    }
}

/// A source's state kept between batches of changes: the state and its
/// conversion errors, as `StateBuilder` made them, brought up to date one
/// changed object at a time. Each change converts only that object, and the
/// state it gives shares every other object with the state before
/// (`model::ObjectMap`), so a change costs what it touches, not the cluster.
///
/// What is not one object's business is left to a whole rebuild
/// (`NeedsRebuild`): anything over a cap (a count cap, or an object whose
/// conversion is over one, which isolates its namespace), since which objects
/// stand in depends on all of them; and any object whose source key is odd
/// (`SourceKey::odd`), since two such objects may stand for one model object.
#[derive(Clone, Debug, Default)]
pub struct KeptState {
    state: ClusterState,
    errors: BTreeMap<SourceKey, String>,
    /// The lines of kinds over their count caps (`cap_counts`).
    count_lines: Vec<String>,
    over_cap: OverCapCounts,
    /// The source holds an object whose key is odd (`SourceKey::odd`).
    odd: bool,
    caps: CountCaps,
    /// The namespaces a converted Namespace declares (the others are implicit).
    declared: BTreeSet<String>,
    /// Namespaces of the objects changed since the last `settle`.
    touched: BTreeSet<String>,
}

/// A change a `KeptState` cannot take object by object: rebuild it whole
/// (`StateBuilder`) from the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedsRebuild;

impl KeptState {
    /// The state.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The conversion error lines, sorted, as `StateBuilder::finish` gives them.
    pub fn errors(&self) -> Vec<String> {
        let mut errors: Vec<String> = self
            .errors
            .values()
            .chain(&self.count_lines)
            .cloned()
            .collect();
        errors.sort();
        errors
    }

    /// The objects over a cap, by kind.
    pub fn over_cap(&self) -> &OverCapCounts {
        &self.over_cap
    }

    /// Whether it takes changes object by object at all: nothing is over a
    /// cap and no key is odd.
    pub fn takes_changes(&self) -> bool {
        self.over_cap.is_empty() && !self.odd
    }

    /// Takes `equal`, a state equal to its own, in its place: after a rebuild
    /// that changed nothing, the state handed on before stays the one that
    /// later states share their objects with.
    pub fn share(&mut self, equal: &ClusterState) {
        debug_assert!(*equal == self.state, "shares only an equal state");
        self.state = equal.clone();
    }

    /// Takes the change of the object the source keys as `key` (of kind `K`):
    /// `object` is what the source holds under it now, `None` once deleted.
    /// Call `settle` after the last change of a batch. On `NeedsRebuild` the
    /// kept state is part-way: rebuild it.
    pub fn apply<K: ApiKind>(
        &mut self,
        key: &SourceKey,
        object: Option<&K>,
    ) -> Result<(), NeedsRebuild> {
        if !self.takes_changes() || key.odd() {
            return Err(NeedsRebuild);
        }
        let is_namespace = K::KIND == "Namespace";
        self.errors.remove(key);
        if let Some(name) = &key.name {
            let stored = K::model_key(key.namespace.as_deref(), name);
            K::remove(&mut self.state, &stored);
            if is_namespace {
                self.declared.remove(&stored.name);
            }
            if is_namespace {
                self.touched.insert(stored.name);
            } else if !key.cluster_scoped() {
                self.touched.insert(stored.namespace);
            }
        }
        let Some(object) = object else {
            return Ok(());
        };
        let model = match object.convert() {
            Ok(model) => model,
            Err(error) => {
                let over_cap = matches!(error, ConvertError::OverCap { .. });
                if over_cap || object.isolates_namespace(&error).is_some() {
                    return Err(NeedsRebuild);
                }
                let stand_in = object.fail_closed(&error);
                let outcome = stand_in.as_ref().map(|(_, outcome)| *outcome);
                let line = conversion_error(object, &error, outcome);
                self.errors.insert(key.clone(), line);
                match stand_in {
                    Some((stand_in, _)) => stand_in,
                    None => return Ok(()),
                }
            }
        };
        let stored = K::key(&model);
        K::insert(&mut self.state, model);
        if is_namespace {
            self.declared.insert(stored.name);
        }
        Ok(())
    }

    /// Ends a batch of `apply`: each namespace a changed object lives in (or
    /// is) is the converted Namespace that declares it, if there is one; else
    /// an implicit one while some object lives in it, else none.
    /// `NeedsRebuild` when a kind is over its count cap.
    pub fn settle(&mut self) -> Result<(), NeedsRebuild> {
        for name in std::mem::take(&mut self.touched) {
            if self.declared.contains(&name) {
                continue;
            }
            if self.lives_in(&name) {
                let implicit = Namespace::implicit(&name);
                if self.state.namespaces.get(&name) != Some(&implicit) {
                    self.state.namespaces.insert(name, implicit);
                }
            } else {
                self.state.namespaces.remove(&name);
            }
        }
        let caps = self.caps;
        let over = self.declared.len() > caps.namespaces
            || self.state.pods.len() > caps.pods
            || self.state.services.len() > caps.services
            || self.state.policies.len() > caps.policies
            || self.state.cluster_policies.len() > caps.cluster_policies;
        if over {
            return Err(NeedsRebuild);
        }
        Ok(())
    }

    /// Whether a pod, policy or Service lives in `namespace`.
    fn lives_in(&self, namespace: &str) -> bool {
        let first = ObjectRef::new(namespace, "");
        let in_namespace = |key: Option<&ObjectRef>| key.is_some_and(|k| k.namespace == namespace);
        in_namespace(
            self.state
                .pods
                .range(first.clone()..)
                .next()
                .map(|(k, _)| k),
        ) || in_namespace(
            self.state
                .policies
                .range(first.clone()..)
                .next()
                .map(|(k, _)| k),
        ) || in_namespace(self.state.services.range(first..).next().map(|(k, _)| k))
    }
}

/// The keys past the first `cap` (in their order).
fn excess<K>(keys: impl Iterator<Item = K>, cap: usize) -> Vec<K> {
    keys.skip(cap).collect()
}

/// The error line of a kind over its count cap, if it is.
fn count_line(kind: &str, count: usize, cap: usize, outcome: &str) -> Option<String> {
    (count > cap).then(|| {
        format!(
            "{kind}: {count} in the cluster, over the cap of {cap} handled; the last {} \
             {outcome} (fail closed)",
            count - cap
        )
    })
}

/// `pod` without addresses, labels or ports: no selector matches it, no peer
/// lookup finds it and it is never an endpoint.
fn stub(pod: &Pod) -> Pod {
    Pod {
        labels: Labels::new(),
        ips: Vec::new(),
        ports: Vec::new(),
        ..pod.clone()
    }
}

/// A NetworkPolicy past the count cap: every pod of its namespace isolated both
/// ways, no rules.
fn namespace_stand_in(key: &ObjectRef) -> NetworkPolicy {
    NetworkPolicy {
        key: key.clone(),
        policy_types: PolicyTypes {
            ingress: true,
            egress: true,
        },
        ..over_cap_policy(&key.namespace)
    }
}

#[cfg(test)]
impl StateBuilder {
    /// A builder handling at most `namespaces`, `pods`, `services` and `policies`
    /// objects of each kind.
    pub(crate) fn with_count_caps(
        namespaces: usize,
        pods: usize,
        services: usize,
        policies: usize,
    ) -> Self {
        Self {
            caps: CountCaps {
                namespaces,
                pods,
                services,
                policies,
                cluster_policies: MAX_CLUSTER_NETWORK_POLICIES,
            },
            ..Self::default()
        }
    }

    /// This builder, handling at most `cap` ClusterNetworkPolicies.
    pub(crate) fn with_cluster_policy_cap(mut self, cap: usize) -> Self {
        self.caps.cluster_policies = cap;
        self
    }
}

#[cfg(test)]
mod tests;
