//! Folding the kinds' notices into `SourceSnapshot`s. Notices that queue up while a
//! snapshot is being built form the next batch. A batch of changed objects
//! converts only those, into the state kept from the last batch
//! (`state::KeptState`); a relist, or a change that touches something over a
//! cap, converts every stored object once instead.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Instant,
};

use k8s_openapi::api::{core::v1 as core, networking::v1 as net};
use kube::runtime::reflector::Store;
use tokio::sync::{mpsc::UnboundedReceiver, watch::Sender};

use super::{
    slim::{service::SlimService, SlimPod},
    watch::{ChangedObject, Notice, Watched},
    SourceSnapshot,
};
use crate::source::{
    convert::{ApiKind, ClusterNetworkPolicy},
    state::{KeptState, NeedsRebuild, SourceKey, StateBuilder},
};

/// The reflector stores of the watched kinds.
pub(super) struct Stores {
    pub namespaces: Store<core::Namespace>,
    pub pods: Store<SlimPod>,
    pub policies: Store<net::NetworkPolicy>,
    pub services: Store<SlimService>,
    pub cluster_policies: Store<ClusterNetworkPolicy>,
    pub nodes: Store<core::Node>,
}

/// The kinds a snapshot waits for, by `Resource::KIND`.
fn kinds() -> [&'static str; 6] {
    [
        <core::Namespace as k8s_openapi::Resource>::KIND,
        <core::Pod as k8s_openapi::Resource>::KIND,
        <net::NetworkPolicy as k8s_openapi::Resource>::KIND,
        <core::Service as k8s_openapi::Resource>::KIND,
        <ClusterNetworkPolicy as k8s_openapi::Resource>::KIND,
        <core::Node as k8s_openapi::Resource>::KIND,
    ]
}

impl Stores {
    /// Converts every stored object (the one conversion point, through
    /// `StateBuilder`): the state, its conversion errors and the objects over a
    /// cap by kind.
    pub fn build(&self) -> KeptState {
        self.build_with(StateBuilder::default())
    }

    /// `build`, into `builder`.
    fn build_with(&self, mut builder: StateBuilder) -> KeptState {
        add_all(&mut builder, &self.namespaces);
        add_all(&mut builder, &self.pods);
        add_all(&mut builder, &self.policies);
        add_all(&mut builder, &self.services);
        add_all(&mut builder, &self.cluster_policies);
        add_all(&mut builder, &self.nodes);
        builder.finish_kept()
    }

    /// Brings `kept` up to date with the stores after `changed` changed in them.
    fn update(
        &self,
        kept: &mut KeptState,
        changed: &BTreeSet<ChangedObject>,
    ) -> Result<(), NeedsRebuild> {
        for object in changed {
            apply_one(kept, &self.namespaces, object)?;
            apply_one(kept, &self.pods, object)?;
            apply_one(kept, &self.policies, object)?;
            apply_one(kept, &self.services, object)?;
            apply_one(kept, &self.cluster_policies, object)?;
            apply_one(kept, &self.nodes, object)?;
        }
        kept.settle()
    }
}

impl From<&ChangedObject> for SourceKey {
    fn from(object: &ChangedObject) -> Self {
        SourceKey {
            kind: object.kind,
            namespace: object.namespace.clone(),
            name: Some(object.name.clone()),
        }
    }
}

/// `KeptState::apply` of `object` as `store` holds it now (nothing once
/// deleted), if it is a `K`.
fn apply_one<K>(
    kept: &mut KeptState,
    store: &Store<K>,
    object: &ChangedObject,
) -> Result<(), NeedsRebuild>
where
    K: ApiKind + Watched,
{
    let Some(key) = object.store_key::<K>() else {
        return Ok(());
    };
    let source_key = SourceKey::from(object);
    // `Store::get` falls back to a cluster-scoped object of the name when the
    // namespaced one is gone: that is another object.
    let stored = store
        .get(&key)
        .filter(|stored| stored.meta().namespace == object.namespace);
    kept.apply(&source_key, stored.as_deref())
}

/// Adds every object of `store`, in key order with odd keys last
/// (`SourceKey::odd`): of two objects that convert to one key the builder keeps
/// the first, which must not depend on the store's hash order, and is the one
/// the API server would send.
fn add_all<K>(builder: &mut StateBuilder, store: &Store<K>)
where
    K: ApiKind + kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let mut objects = store.state();
    objects.sort_by_cached_key(|object| {
        let key = SourceKey::of(&**object);
        (key.odd(), key)
    });
    for object in objects {
        builder.add_or_record(&*object);
    }
}

/// How each kind's watch is doing.
#[derive(Clone, Debug, Default)]
struct KindStatus {
    /// It has completed a list at least once.
    listed: bool,
    /// Its latest result was an error, and no list has completed since.
    failing: bool,
    /// That error was a refusal (401 or 403).
    refused: bool,
}

/// What one batch of notices says.
#[derive(Debug, Default)]
struct Batch {
    /// Arrival of the newest event that may have changed a store.
    changed: Option<Instant>,
    /// The objects that changed.
    objects: BTreeSet<ChangedObject>,
    /// A list completed: a kind's store was replaced whole.
    listed: bool,
    /// The newest error, as `Kind watch: error`.
    error: Option<String>,
    /// The newest refusal (401 or 403), as `error`.
    refusal: Option<String>,
}

/// Builds snapshots until every watch task is gone or the receivers are.
pub(super) async fn run(
    stores: Stores,
    mut notices: UnboundedReceiver<Notice>,
    snapshots: Sender<SourceSnapshot>,
) {
    let mut status: BTreeMap<&'static str, KindStatus> = kinds()
        .into_iter()
        .map(|kind| (kind, KindStatus::default()))
        .collect();
    let mut kept = None;
    while let Some(first) = notices.recv().await {
        let mut batch = Batch::default();
        fold(&mut batch, &mut status, first);
        while let Ok(next) = notices.try_recv() {
            fold(&mut batch, &mut status, next);
        }
        let current = snapshots.borrow().clone();
        let next = next_snapshot(&stores, &mut kept, &status, batch, current);
        snapshots.send_if_modified(|snapshot| {
            let modified = !same(snapshot, &next);
            if modified {
                *snapshot = next;
            }
            modified
        });
        if snapshots.is_closed() {
            return;
        }
    }
}

fn fold(batch: &mut Batch, status: &mut BTreeMap<&'static str, KindStatus>, notice: Notice) {
    match notice {
        Notice::Changed { at, object } => {
            batch.changed = Some(at);
            batch.objects.insert(object);
        }
        Notice::Listed { kind, at } => {
            batch.listed = true;
            let entry = status.entry(kind).or_default();
            if entry.failing {
                tracing::info!(kind, "watch recovered: listed again");
            }
            *entry = KindStatus {
                listed: true,
                failing: false,
                refused: false,
            };
            batch.changed = Some(at);
        }
        Notice::Failed {
            kind,
            error,
            refused,
        } => {
            let entry = status.entry(kind).or_default();
            entry.failing = true;
            entry.refused = refused;
            let error = format!("{kind} watch: {error}");
            if refused {
                batch.refusal = Some(error.clone());
            }
            batch.error = Some(error);
        }
    }
}

/// The snapshot after `batch`: flags from `status`; once every kind has listed,
/// the state brought up to date with the batch's changes, in `kept` (rebuilt
/// whole after a list, before the first state, or when it cannot take them).
fn next_snapshot(
    stores: &Stores,
    kept: &mut Option<KeptState>,
    status: &BTreeMap<&'static str, KindStatus>,
    batch: Batch,
    current: SourceSnapshot,
) -> SourceSnapshot {
    let mut next = current;
    next.synced = status.values().all(|kind| kind.listed);
    next.stale = status.values().any(|kind| kind.failing);
    if batch.error.is_some() {
        next.last_error = batch.error;
    }
    next.refused = if status.values().any(|kind| kind.refused) {
        batch.refusal.or(next.refused)
    } else {
        None
    };
    let Some(changed) = batch.changed.filter(|_| next.synced) else {
        return next;
    };
    let started = Instant::now();
    let updated = match kept.as_mut().filter(|_| !batch.listed) {
        Some(state) => stores.update(state, &batch.objects).is_ok(),
        None => false,
    };
    let kept = match kept {
        Some(state) if updated => state,
        _ => kept.insert(stores.build()),
    };
    let state = kept.state();
    tracing::debug!(
        pods = state.pods.len(),
        policies = state.policies.len(),
        objects = batch.objects.len(),
        whole = !updated,
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "converted the stores"
    );
    if *state != *next.state {
        next.state = Arc::new(state.clone());
        next.changed = Some(changed);
    } else {
        kept.share(&next.state);
    }
    let errors = kept.errors();
    let known: BTreeSet<&String> = next.conversion_errors.iter().collect();
    for error in errors.iter().filter(|e| !known.contains(e)) {
        tracing::warn!(%error, "object could not be converted");
    }
    next.conversion_errors = errors;
    next.over_cap = kept.over_cap().clone();
    next
}

/// Whether two snapshots say the same (states compared by pointer: a rebuilt
/// state equal to the old one keeps the old `Arc`).
fn same(a: &SourceSnapshot, b: &SourceSnapshot) -> bool {
    Arc::ptr_eq(&a.state, &b.state)
        && a.synced == b.synced
        && a.stale == b.stale
        && a.last_error == b.last_error
        && a.refused == b.refused
        && a.conversion_errors == b.conversion_errors
        && a.over_cap == b.over_cap
        && a.changed == b.changed
}

#[cfg(test)]
mod tests;
