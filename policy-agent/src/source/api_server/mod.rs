//! The API server as a source: kube-runtime watchers and reflector stores for
//! Namespaces, Pods, NetworkPolicies, Services, ClusterNetworkPolicies and Nodes,
//! folded into one stream of
//! `SourceSnapshot`s (a converted `ClusterState` plus how current it is).
//!
//! - `trim`: what the stores keep of each object (what `convert` reads);
//! - `slim`: the Pod and Service stores' own types, that much and no room for
//!   more, sharing their labels and selectors with the converted model;
//! - `label_sets`: one map per distinct label set among the stored pods;
//! - `watch`: one task per kind: watcher (list, then watch from the list's
//!   resourceVersion; relist on 410 Gone), trimming, the reflector store, backoff;
//!   a kind whose CRD is not installed (ClusterNetworkPolicy) counts as none;
//! - `snapshot`: one task folding the kinds' notices into snapshots, converting the
//!   stores through `convert` (via `source::state`) at most once per batch.
//!
//! May import: `crate::model`, `super::convert`, `super::state`, kube, k8s-openapi
//! (trimming writes its fields; reading them is `convert`'s), tokio, futures,
//! backon, tracing.

mod client;
mod label_sets;
mod slim;
mod snapshot;
pub mod trim;
mod watch;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::watch as channel, task::JoinHandle};

pub use self::client::{client, ClientError};
use crate::model::ClusterState;

/// What the cluster looks like now, as far as the watches know.
#[derive(Clone, Debug, Default)]
pub struct SourceSnapshot {
    /// The converted cluster. Empty until `synced`; after that always the stores'
    /// whole content (a relist replaces a kind's objects at once, when it ends).
    pub state: Arc<ClusterState>,
    /// Every watch (Namespaces, Pods, NetworkPolicies, Services,
    /// ClusterNetworkPolicies, Nodes) has delivered its initial list at least once
    /// (a ClusterNetworkPolicy list answered 404, the CRD not installed, counts as
    /// an empty one). Stays true through later failures and relists.
    pub synced: bool,
    /// Some watch is failing right now: its latest result was an error (API server
    /// unreachable, a request refused, a watch ended with an error such as 410
    /// Gone) and it has not completed a list since. `state` is then the last state
    /// seen, which may be behind the cluster.
    pub stale: bool,
    /// The most recent watch error (`Pod watch: ...`), kept after recovery; `stale`
    /// says whether some watch is failing now.
    pub last_error: Option<String>,
    /// Some kind is refused right now (the API server answered 401 or 403: the
    /// credentials, or RBAC), with the newest such error; `None` once every
    /// refused kind has listed again.
    pub refused: Option<String>,
    /// One line per object of `state`'s sources that could not be converted, sorted,
    /// naming the object and the field (`NetworkPolicy prod/db: spec...: ...`). A
    /// NetworkPolicy or ClusterNetworkPolicy listed here is in `state` as its
    /// fail-closed stand-in (`convert::network_policy_fail_closed`,
    /// `convert::cluster_network_policy_fail_closed`); other kinds are left out.
    pub conversion_errors: Vec<String>,
    /// Objects over a cap (`convert::caps`), by kind (`Pod`, `NetworkPolicy`, ...):
    /// each stands in fail-closed and has its line in `conversion_errors` (or a
    /// kind over its count cap one line for all).
    pub over_cap: std::collections::BTreeMap<&'static str, usize>,
    /// When the newest event that changed `state` arrived (`None` before the first
    /// state): the start of the event-to-programmed latency.
    pub changed: Option<Instant>,
}

/// Why `read_once` got no state.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The API server refused to list a kind (401 or 403), which waiting does
    /// not mend.
    #[error("the API server refused the read ({error}); reading the cluster needs list and watch on namespaces, pods, services and nodes, networkpolicies (networking.k8s.io) and clusternetworkpolicies (policy.networking.k8s.io)")]
    Refused {
        /// The refusal, as `Kind watch: error`.
        error: String,
    },
    /// Some kind had not listed within the time allowed.
    #[error("the API server did not list every kind within {waited:?}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// The last watch error, if one happened.
        last_error: Option<String>,
    },
}

/// The cluster's objects as they are now, read once through `client`: the
/// watches of `watch_cluster_with` until every kind has listed (read-only:
/// list and watch), then stopped. Objects that do not convert are in
/// `conversion_errors` (and in the state as their fail-closed stand-ins, as the
/// node agent would enforce them).
pub async fn read_once(
    client: ::kube::Client,
    timeout: Duration,
) -> Result<SourceSnapshot, ReadError> {
    let watch = watch_cluster_with(client, WatchOptions::default());
    let mut snapshots = watch.receiver();
    // A refusal ends the wait: retrying does not mend credentials or RBAC.
    let done = snapshots.wait_for(|snapshot| snapshot.synced || snapshot.refused.is_some());
    let seen = tokio::time::timeout(timeout, done)
        .await
        .ok()
        .and_then(Result::ok)
        .map(|snapshot| snapshot.clone());
    match seen {
        Some(snapshot) if snapshot.synced => Ok(snapshot),
        Some(SourceSnapshot {
            refused: Some(error),
            ..
        }) => Err(ReadError::Refused { error }),
        _ => Err(ReadError::Timeout {
            waited: timeout,
            last_error: snapshots.borrow().last_error.clone(),
        }),
    }
}

/// Tuning of `watch_cluster_with`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// Delay before retrying a failed list or watch; it doubles (with jitter) on
    /// each further failure, up to `backoff_max`, and starts over after 120 s
    /// without failures. Default 800 ms, as kube-runtime's `DefaultBackoff`
    /// (client-go's reflector).
    pub backoff_min: Duration,
    /// The longest delay between retries. Default 30 s, as `DefaultBackoff`. Tests
    /// shorten both to see recovery quickly.
    pub backoff_max: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// The running watches; dropping it stops them.
#[derive(Debug)]
pub struct ClusterWatch {
    snapshots: channel::Receiver<SourceSnapshot>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterWatch {
    /// A receiver of the snapshots: it sees the latest one at once and is woken on
    /// each change (flags, errors or state). Snapshots stop (the receiver sees the
    /// channel closed) when this `ClusterWatch` is dropped.
    pub fn receiver(&self) -> channel::Receiver<SourceSnapshot> {
        self.snapshots.clone()
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Watches Namespaces, Pods, NetworkPolicies, Services, ClusterNetworkPolicies
/// and Nodes through `client`, each with kube-runtime's watcher (list, then watch from the
/// list's resourceVersion with bookmarks; relist after 410 Gone) into a reflector
/// store, retried with backoff (`options`). A watch error after which the watcher
/// would resume silently (a watch request refused, a stream failing) restarts that
/// kind's watcher with a fresh list after the backoff, so its recovery is seen:
/// `stale` clears when every failing kind has listed again. ClusterNetworkPolicies
/// whose CRD is not installed (the list answers 404) count as none, without
/// `stale`, and are listed again with the backoff until the CRD appears.
///
/// # Panics
/// Outside a Tokio runtime (it spawns the watch tasks).
pub fn watch_cluster_with(client: ::kube::Client, options: WatchOptions) -> ClusterWatch {
    let (notices, notices_rx) = tokio::sync::mpsc::unbounded_channel();
    let (sender, snapshots) = channel::channel(SourceSnapshot::default());
    let mut tasks = Vec::new();
    let label_sets = Arc::new(label_sets::LabelSets::default());
    let stores = snapshot::Stores {
        namespaces: watch::spawn(&client, &options, trim::namespace, &notices, &mut tasks),
        pods: watch::spawn(
            &client,
            &options,
            move |pod: &mut slim::SlimPod| slim::trim(pod, &label_sets),
            &notices,
            &mut tasks,
        ),
        policies: watch::spawn(
            &client,
            &options,
            trim::network_policy,
            &notices,
            &mut tasks,
        ),
        services: watch::spawn(&client, &options, slim::service::trim, &notices, &mut tasks),
        cluster_policies: watch::spawn_optional(
            &client,
            &options,
            trim::cluster_network_policy,
            &notices,
            &mut tasks,
        ),
        nodes: watch::spawn(&client, &options, trim::node, &notices, &mut tasks),
    };
    tasks.push(tokio::spawn(snapshot::run(stores, notices_rx, sender)));
    ClusterWatch { snapshots, tasks }
}
