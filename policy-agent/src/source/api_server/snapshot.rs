//! Folding the kinds' notices into `SourceSnapshot`s. Notices that queue up while a
//! snapshot is being built form the next batch, and a batch rebuilds the state at
//! most once, so a burst of events (a relist of 10k pods, a rollout) costs a few
//! rebuilds, not one per event.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use k8s_openapi::api::{core::v1 as core, networking::v1 as net};
use kube::runtime::reflector::Store;
use tokio::sync::{mpsc::UnboundedReceiver, watch::Sender};

use super::{
    slim::{service::SlimService, SlimPod},
    watch::Notice,
    SourceSnapshot,
};
use crate::{
    model::ClusterState,
    source::{
        convert::ApiKind,
        state::{OverCapCounts, StateBuilder},
    },
};

/// The reflector stores of the watched kinds.
pub(super) struct Stores {
    pub namespaces: Store<core::Namespace>,
    pub pods: Store<SlimPod>,
    pub policies: Store<net::NetworkPolicy>,
    pub services: Store<SlimService>,
}

/// The kinds a snapshot waits for, by `Resource::KIND`.
fn kinds() -> [&'static str; 4] {
    [
        <core::Namespace as k8s_openapi::Resource>::KIND,
        <core::Pod as k8s_openapi::Resource>::KIND,
        <net::NetworkPolicy as k8s_openapi::Resource>::KIND,
        <core::Service as k8s_openapi::Resource>::KIND,
    ]
}

impl Stores {
    /// Converts every stored object (the one conversion point, through
    /// `StateBuilder`): the state, the conversion errors and the objects over a
    /// cap by kind.
    pub fn build(&self) -> (ClusterState, Vec<String>, OverCapCounts) {
        let mut builder = StateBuilder::default();
        add_all(&mut builder, &self.namespaces);
        add_all(&mut builder, &self.pods);
        add_all(&mut builder, &self.policies);
        add_all(&mut builder, &self.services);
        builder.finish_counted()
    }
}

fn add_all<K>(builder: &mut StateBuilder, store: &Store<K>)
where
    K: ApiKind + kube::Resource<DynamicType = ()> + Clone + 'static,
{
    for object in store.state() {
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
}

/// What one batch of notices says.
#[derive(Debug, Default)]
struct Batch {
    /// Arrival of the newest event that may have changed a store.
    changed: Option<Instant>,
    /// The newest error, as `Kind watch: error`.
    error: Option<String>,
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
    while let Some(first) = notices.recv().await {
        let mut batch = Batch::default();
        fold(&mut batch, &mut status, first);
        while let Ok(next) = notices.try_recv() {
            fold(&mut batch, &mut status, next);
        }
        let current = snapshots.borrow().clone();
        let next = next_snapshot(&stores, &status, batch, current);
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
        Notice::Changed { at } => batch.changed = Some(at),
        Notice::Listed { kind, at } => {
            let entry = status.entry(kind).or_default();
            if entry.failing {
                tracing::info!(kind, "watch recovered: listed again");
            }
            *entry = KindStatus {
                listed: true,
                failing: false,
            };
            batch.changed = Some(at);
        }
        Notice::Failed { kind, error } => {
            status.entry(kind).or_default().failing = true;
            batch.error = Some(format!("{kind} watch: {error}"));
        }
    }
}

/// The snapshot after `batch`: flags from `status`; the state rebuilt when every
/// kind has listed and the batch may have changed a store.
fn next_snapshot(
    stores: &Stores,
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
    if next.synced {
        if let Some(changed) = batch.changed {
            let started = Instant::now();
            let (state, errors, over_cap) = stores.build();
            tracing::debug!(
                pods = state.pods.len(),
                policies = state.policies.len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "converted the stores"
            );
            if state != *next.state {
                next.state = Arc::new(state);
                next.changed = Some(changed);
            }
            for error in errors
                .iter()
                .filter(|e| !next.conversion_errors.contains(e))
            {
                tracing::warn!(%error, "object could not be converted");
            }
            next.conversion_errors = errors;
            next.over_cap = over_cap;
        }
    }
    next
}

/// Whether two snapshots say the same (states compared by pointer: a rebuilt
/// state equal to the old one keeps the old `Arc`).
fn same(a: &SourceSnapshot, b: &SourceSnapshot) -> bool {
    Arc::ptr_eq(&a.state, &b.state)
        && a.synced == b.synced
        && a.stale == b.stale
        && a.last_error == b.last_error
        && a.conversion_errors == b.conversion_errors
        && a.over_cap == b.over_cap
        && a.changed == b.changed
}
