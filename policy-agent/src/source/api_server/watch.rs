//! One kind's watch: kube-runtime's watcher, trimmed with `.modify()`, applied to a
//! reflector store, with backoff after errors; what changed goes to the snapshot
//! task as `Notice`s.
//!
//! Recovery must be visible, or `stale` would never clear: after an error the
//! watcher either relists by itself (a failed list, 410 Gone: its next events are
//! `Init` .. `InitDone`) or resumes silently (a refused watch request or a failed
//! stream: it re-watches from its resourceVersion and says nothing when that
//! works). In the second case the watcher is replaced by a fresh one, whose list
//! ends in `InitDone`. A watch that simply ends (a server timeout, a connection
//! closed mid-stream) is no error: the watcher resumes from its resourceVersion.

use std::{fmt::Debug, time::Instant};

use futures::StreamExt;
use kube::{
    api::Api,
    runtime::{
        reflector::{store::Writer, ObjectRef, Store},
        utils::ResetTimerBackoff,
        watcher::{self, watcher, Event, ExponentialBackoff},
        WatchStreamExt,
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::mpsc::UnboundedSender, task::JoinHandle};

use super::WatchOptions;
use crate::causes::causes;

/// Which stored object a `Notice::Changed` is about: its kind and its
/// metadata's namespace and name, as its store keys it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ChangedObject {
    /// `Resource::KIND`.
    pub kind: &'static str,
    /// `metadata.namespace`; `None` for a Namespace.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ChangedObject {
    fn of<K: Watched>(object: &ObjectRef<K>) -> Self {
        Self {
            kind: K::KIND,
            namespace: object.namespace.clone(),
            name: object.name.clone(),
        }
    }

    /// The store key of this object, if it is a `K`.
    pub fn store_key<K: Watched>(&self) -> Option<ObjectRef<K>> {
        (self.kind == K::KIND).then(|| {
            let key = ObjectRef::new(&self.name);
            match &self.namespace {
                Some(namespace) => key.within(namespace),
                None => key,
            }
        })
    }
}

/// What one kind's watch tells the snapshot task.
#[derive(Debug)]
pub(super) enum Notice {
    /// A stored object was added, changed (in a field the stores keep) or
    /// deleted: the store now holds its latest content, or nothing.
    Changed { at: Instant, object: ChangedObject },
    /// A list completed and replaced the kind's store.
    Listed { kind: &'static str, at: Instant },
    /// A list or watch failed; the watch retries after a backoff. `refused`:
    /// the API server answered 401 or 403 (credentials or RBAC).
    Failed {
        kind: &'static str,
        error: String,
        refused: bool,
    },
}

/// The bounds kube-runtime's watcher and store put on a kind, plus ours.
pub(super) trait Watched:
    k8s_openapi::Resource
    + kube::Resource<DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + PartialEq
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: k8s_openapi::Resource
        + kube::Resource<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + PartialEq
        + Send
        + Sync
        + 'static
{
}

/// Starts watching every `K` of the cluster into a new store, trimming each object
/// with `trim`; the task goes into `tasks`, its store is returned.
pub(super) fn spawn<K: Watched, F: Trim<K>>(
    client: &kube::Client,
    options: &WatchOptions,
    trim: F,
    notices: &UnboundedSender<Notice>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K> {
    spawn_with(client, options, trim, notices, tasks, false)
}

/// `spawn` for a kind that may not be served (a CRD that is not installed): a
/// list answered 404 Not Found counts as a list of nothing (the store is
/// emptied, the kind is listed and not failing; logged once at info), and the
/// list is retried with the backoff (at most `backoff_max` apart) until the
/// kind is served.
pub(super) fn spawn_optional<K: Watched, F: Trim<K>>(
    client: &kube::Client,
    options: &WatchOptions,
    trim: F,
    notices: &UnboundedSender<Notice>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K> {
    spawn_with(client, options, trim, notices, tasks, true)
}

fn spawn_with<K: Watched, F: Trim<K>>(
    client: &kube::Client,
    options: &WatchOptions,
    trim: F,
    notices: &UnboundedSender<Notice>,
    tasks: &mut Vec<JoinHandle<()>>,
    optional: bool,
) -> Store<K> {
    let writer = Writer::default();
    let store = writer.as_reader();
    let watch = KindWatch {
        api: Api::all(client.clone()),
        trim,
        writer,
        store: store.clone(),
        notices: notices.clone(),
        backoff: backoff(options),
        optional,
        absent: false,
        failed: false,
    };
    tasks.push(tokio::spawn(watch.run()));
    store
}

/// kube-runtime's default backoff (exponential with jitter, reset after 120 s
/// without failures) with `options`' bounds.
fn backoff(options: &WatchOptions) -> ResetTimerBackoff<ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(options.backoff_min)
        .with_max_delay(options.backoff_max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(
        ExponentialBackoff::from(exponential),
        std::time::Duration::from_secs(120),
    )
}

/// What trims a watched `K` before it is stored: a fresh watcher gets a clone.
pub(super) trait Trim<K>: FnMut(&mut K) + Clone + Send + 'static {}

impl<K, F> Trim<K> for F where F: FnMut(&mut K) + Clone + Send + 'static {}

struct KindWatch<K: Watched, F: Trim<K>> {
    api: Api<K>,
    trim: F,
    writer: Writer<K>,
    store: Store<K>,
    notices: UnboundedSender<Notice>,
    backoff: ResetTimerBackoff<ExponentialBackoff>,
    /// A 404 on the list means the kind is not served (`spawn_optional`).
    optional: bool,
    /// The latest list was answered 404 and counted as a list of nothing.
    absent: bool,
    /// A `Notice::Failed` was sent and no `Notice::Listed` since.
    failed: bool,
}

impl<K: Watched, F: Trim<K>> KindWatch<K, F> {
    /// Watches until the snapshot task is gone.
    async fn run(mut self) {
        loop {
            let mut events = watcher(self.api.clone(), watcher::Config::default())
                .modify(self.trim.clone())
                .boxed();
            while let Some(result) = events.next().await {
                match result {
                    Ok(event) => {
                        if let Some(notice) = self.apply(event) {
                            if self.notices.send(notice).is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) if self.optional && not_served(&error) => {
                        if !self.absent {
                            tracing::info!(
                                kind = K::KIND,
                                "the API server does not serve this kind (is its CRD \
                                 installed?); counting none and checking again with backoff"
                            );
                        }
                        // Once per absence, and again after a failure (so `stale`
                        // clears when the server answers 404 again).
                        if !self.absent || self.failed {
                            self.absent = true;
                            let notice = self.emptied();
                            if self.notices.send(notice).is_err() {
                                return;
                            }
                        }
                        let delay = self.backoff.next().unwrap_or_default();
                        tokio::time::sleep(delay).await;
                    }
                    Err(error) if self.optional && watch_not_served(&error) => {
                        // Gone since the list: a fresh list says so (above).
                        tracing::debug!(kind = K::KIND, "watch answered 404; listing again");
                        let delay = self.backoff.next().unwrap_or_default();
                        tokio::time::sleep(delay).await;
                        break;
                    }
                    Err(error) => {
                        let relists = relists_by_itself(&error);
                        tracing::warn!(kind = K::KIND, error = %causes(&error), relists, "watch failed; retrying");
                        let refused = refused(error_status(&error));
                        let error = causes(&error).to_string();
                        let notice = Notice::Failed {
                            kind: K::KIND,
                            error,
                            refused,
                        };
                        self.failed = true;
                        if self.notices.send(notice).is_err() {
                            return;
                        }
                        let delay = self.backoff.next().unwrap_or_default();
                        tokio::time::sleep(delay).await;
                        if !relists {
                            break;
                        }
                    }
                }
            }
            tracing::debug!(kind = K::KIND, "starting the watch afresh with a list");
        }
    }

    /// Empties the store, as a list of nothing would: the notice for it.
    fn emptied(&mut self) -> Notice {
        self.writer.apply_watcher_event(&Event::Init);
        self.writer.apply_watcher_event(&Event::InitDone);
        self.failed = false;
        Notice::Listed {
            kind: K::KIND,
            at: Instant::now(),
        }
    }

    /// Applies `event` to the store; the notice for it, if it changed anything.
    fn apply(&mut self, event: Event<K>) -> Option<Notice> {
        let at = Instant::now();
        // Not at `Init`: the watcher says that before each list request, 404 or not.
        if matches!(event, Event::InitDone) && self.absent {
            self.absent = false;
            tracing::info!(kind = K::KIND, "the API server serves this kind now");
        }
        let notice = match &event {
            Event::Apply(object) => {
                let key = ObjectRef::from_obj(object);
                let same = self
                    .store
                    .get(&key)
                    .is_some_and(|stored| *stored == *object);
                if same {
                    return None;
                }
                let object = ChangedObject::of(&key);
                Some(Notice::Changed { at, object })
            }
            Event::Delete(object) => {
                let key = ObjectRef::from_obj(object);
                self.store.get(&key).map(|_| Notice::Changed {
                    at,
                    object: ChangedObject::of(&key),
                })
            }
            Event::InitDone => {
                self.failed = false;
                Some(Notice::Listed { kind: K::KIND, at })
            }
            Event::Init | Event::InitApply(_) => None,
        };
        self.writer.apply_watcher_event(&event);
        notice
    }
}

/// Whether the watcher's next events after `error` are a fresh list (`Init` ..
/// `InitDone`): after a failed list, a list without resourceVersion, and a watch
/// ended by 410 Gone. After other errors it resumes its watch silently.
fn relists_by_itself(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(_) | watcher::Error::NoResourceVersion => true,
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(_) | watcher::Error::WatchFailed(_) => false,
    }
}

/// The HTTP status the API server answered with, if `error` carries one.
fn error_status(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    }
}

/// Whether an answer of `status` refuses the client: 401 (its credentials) or
/// 403 (RBAC). Retrying does not help until someone changes either.
fn refused(status: Option<u16>) -> bool {
    matches!(status, Some(401 | 403))
}

/// Whether `error` is a list answered 404 Not Found: the kind is not served.
fn not_served(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 404)
}

/// Whether `error` is a watch answered 404 Not Found: the kind is no longer
/// served (its CRD was removed).
fn watch_not_served(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        _ => false,
    }
}
