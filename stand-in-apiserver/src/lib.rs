//! A stand-in Kubernetes API server: a real HTTP/1.1 server speaking list and
//! watch for Namespaces, Pods, Services, NetworkPolicies, Nodes and
//! ClusterNetworkPolicies (the CRD's objects), so podwall's
//! integration tests drive the real kube client (and the agent's
//! `source::api_server`) against it, and `cargo xtask bench agent` serves its
//! synthetic cluster to a real `policy-agent run` to measure the agent's memory.
//! Not a Kubernetes: no writes over HTTP, no admission, no defaulting, no auth
//! (a bearer token is only recorded).
//!
//! What it does as the API server does: one revision counter for all resources;
//! lists answer `{kind: XList, apiVersion, metadata: {resourceVersion}, items}`,
//! in pages with `limit`/`continue`; `?watch=true&resourceVersion=N` streams
//! newline-delimited `{type, object}` events after N (ADDED/MODIFIED/DELETED,
//! BOOKMARK every `bookmark_interval` with `allowWatchBookmarks=true`), ending
//! cleanly after `timeoutSeconds`; a watch from before the last `compact()` gets an
//! ERROR event with a 410 (Expired) Status, so the client relists.
//!
//! Controls, for the test or benchmark that owns it: create, update and delete
//! objects (k8s-openapi types or JSON); `compact()`; `drop_watches()` (every open watch connection closed mid-stream);
//! `hold_watches(true)` (watch requests wait unanswered until released);
//! `set_unavailable(true)` (open watches dropped, new connections closed at once,
//! requests on kept-alive ones closed unanswered); `set_served(resource, false)`
//! (its requests answered 404 Not Found, as for a CRD not installed; its open
//! watches dropped); request counts per resource.
//!
//! The server runs on its own Tokio runtime, on a listener the test gives (so it
//! can be bound inside a network namespace) or on 127.0.0.1; dropping the handle
//! stops it. `write_kubeconfig` points a client at it. Served over HTTPS
//! (`serve_https`, a CA made per server), it also writes what a pod's service
//! account mount holds (`write_service_account`), so an agent in a container
//! reaches it with in-cluster configuration; the bearer token it presents is
//! kept (`authorization`).

mod http;
mod store;
mod tls;

use std::{
    collections::BTreeMap,
    io::{self, Write},
    net::{SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::Value;
use tokio::{runtime::Runtime, sync::watch};

pub use self::store::Resource;
use self::store::{EventType, Store};

/// Requests seen for one resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Lists started (first pages).
    pub lists: usize,
    /// List pages served, first pages included.
    pub pages: usize,
    /// Watch requests.
    pub watches: usize,
}

/// Settings of a stand-in.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often an open watch that asked for bookmarks gets one. Default 1 s.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// Puts `resource` in `set` (`on`) or takes it out.
fn mark(set: &Mutex<std::collections::BTreeSet<Resource>>, resource: Resource, on: bool) {
    let mut set = set.lock().unwrap_or_else(PoisonError::into_inner);
    if on {
        set.insert(resource);
    } else {
        set.remove(&resource);
    }
}

/// Whether `resource` is in `set`.
fn marked(set: &Mutex<std::collections::BTreeSet<Resource>>, resource: Resource) -> bool {
    set.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&resource)
}

/// What the server task and the handle share.
struct Shared {
    store: Mutex<Store>,
    /// The revision after each change: wakes open watches.
    changes: watch::Sender<u64>,
    /// Bumped to drop every open watch.
    drops: watch::Sender<u64>,
    /// Whether watch requests are held unanswered.
    hold: watch::Sender<bool>,
    /// Watch requests being held now.
    held: AtomicUsize,
    /// Watches answered and not ended yet.
    open: AtomicUsize,
    unavailable: AtomicBool,
    /// Resources answered 404 Not Found (`set_served`).
    not_served: Mutex<std::collections::BTreeSet<Resource>>,
    /// Resources answered 403 Forbidden (`set_refused`).
    refused: Mutex<std::collections::BTreeSet<Resource>>,
    bookmark_interval: Duration,
    counts: Mutex<BTreeMap<Resource, Counts>>,
    /// The `Authorization` header of the latest request that had one.
    authorization: Mutex<Option<String>>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `resource` is served (`ApiServer::set_served`).
    fn refused(&self, resource: Resource) -> bool {
        marked(&self.refused, resource)
    }

    fn served(&self, resource: Resource) -> bool {
        !marked(&self.not_served, resource)
    }

    fn count(&self, resource: Resource, update: impl FnOnce(&mut Counts)) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        update(counts.entry(resource).or_default());
    }
}

/// A running stand-in API server; dropping it stops it.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The CA whose certificate an HTTPS server's clients trust (PEM).
    ca_pem: Option<String>,
    runtime: Option<Runtime>,
}

impl ApiServer {
    /// A stand-in on 127.0.0.1 (an ephemeral port) with default options.
    pub fn start() -> io::Result<ApiServer> {
        ApiServer::serve(TcpListener::bind("127.0.0.1:0")?, Options::default())
    }

    /// A stand-in answering HTTP on `listener`.
    pub fn serve(listener: TcpListener, options: Options) -> io::Result<ApiServer> {
        Self::serve_with(listener, options, false)
    }

    /// A stand-in answering HTTPS on `listener`, with a certificate for its
    /// address from a CA of its own (`write_service_account` hands it out).
    pub fn serve_https(listener: TcpListener, options: Options) -> io::Result<ApiServer> {
        Self::serve_with(listener, options, true)
    }

    fn serve_with(listener: TcpListener, options: Options, https: bool) -> io::Result<ApiServer> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let identity = if https {
            Some(tls::identity(addr.ip())?)
        } else {
            None
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stand-in-apiserver")
            .enable_all()
            .build()?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changes: watch::Sender::new(0),
            drops: watch::Sender::new(0),
            hold: watch::Sender::new(false),
            held: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            unavailable: AtomicBool::new(false),
            not_served: Mutex::new(std::collections::BTreeSet::new()),
            refused: Mutex::new(std::collections::BTreeSet::new()),
            bookmark_interval: options.bookmark_interval,
            counts: Mutex::new(BTreeMap::new()),
            authorization: Mutex::new(None),
        });
        let (ca_pem, acceptor) = match identity {
            Some(identity) => (Some(identity.ca_pem), Some(identity.acceptor)),
            None => (None, None),
        };
        runtime.spawn(http::serve(listener, shared.clone(), acceptor));
        Ok(ApiServer {
            shared,
            addr,
            ca_pem,
            runtime: Some(runtime),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`, or `https://addr`.
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Writes what the kubelet mounts at
    /// `/var/run/secrets/kubernetes.io/serviceaccount` into `dir`: `token`,
    /// `ca.crt` (this HTTPS server's CA) and `namespace`. Fails for an HTTP server.
    pub fn write_service_account(&self, dir: &std::path::Path, token: &str) -> io::Result<()> {
        let ca = self.ca_pem.as_deref().ok_or_else(|| {
            io::Error::other("an HTTP stand-in has no CA; start it with serve_https")
        })?;
        std::fs::write(dir.join("token"), token)?;
        std::fs::write(dir.join("ca.crt"), ca)?;
        std::fs::write(dir.join("namespace"), "podwall-system")
    }

    /// The `Authorization` header of the latest request that had one.
    pub fn authorization(&self) -> Option<String> {
        self.shared
            .authorization
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A kubeconfig file (removed when the returned value is dropped) whose
    /// current context points at this server, without credentials.
    pub fn write_kubeconfig(&self) -> io::Result<tempfile::NamedTempFile> {
        let mut file = tempfile::Builder::new()
            .prefix("stand-in-kubeconfig-")
            .suffix(".yaml")
            .tempfile()?;
        write!(
            file,
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: stand-in\n  cluster:\n    server: {url}\n{insecure}\
             users:\n- name: stand-in\n  user: {{}}\n\
             contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    \
             user: stand-in\n    namespace: default\n\
             current-context: stand-in\n",
            url = self.url(),
            // The CA is for in-cluster clients (`write_service_account`).
            insecure = if self.ca_pem.is_some() {
                "    insecure-skip-tls-verify: true\n"
            } else {
                ""
            },
        )?;
        file.flush()?;
        Ok(file)
    }

    fn change(&self, object: Value, kind: EventType) -> u64 {
        let described = format!("{kind:?} {}", object["metadata"]["name"]);
        let revision = self
            .shared
            .store()
            .change(object, kind)
            .unwrap_or_else(|error| panic!("stand-in API server: {described}: {error:?}"));
        self.shared.changes.send_replace(revision);
        revision
    }

    /// Creates `object` (JSON with `kind`, `metadata.name`, and `metadata.namespace`
    /// for namespaced kinds, default `default`); its revision. Panics if it exists.
    pub fn create_value(&self, object: Value) -> u64 {
        self.change(object, EventType::Added)
    }

    /// Replaces an existing object; its revision. Panics if it does not exist.
    pub fn update_value(&self, object: Value) -> u64 {
        self.change(object, EventType::Modified)
    }

    /// Creates a k8s-openapi object.
    pub fn create<K: Serialize>(&self, object: &K) -> u64 {
        self.create_value(to_value(object))
    }

    /// Replaces an existing k8s-openapi object.
    pub fn update<K: Serialize>(&self, object: &K) -> u64 {
        self.update_value(to_value(object))
    }

    /// Deletes the `K` named `name` in `namespace` ("" for a cluster-scoped kind); the
    /// revision of the deletion. Panics if it does not exist.
    pub fn delete<K: k8s_openapi::Resource>(&self, namespace: &str, name: &str) -> u64 {
        let object = serde_json::json!({
            "kind": K::KIND,
            "metadata": {"name": name, "namespace": namespace},
        });
        self.change(object, EventType::Deleted)
    }

    /// The latest revision.
    pub fn revision(&self) -> u64 {
        self.shared.store().revision
    }

    /// Forgets the event history and paged lists: a watch from an older
    /// resourceVersion gets 410 Gone (the open watches keep going).
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Closes every open watch connection mid-stream (no final chunk), as a
    /// broken connection or a restarting API server does.
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|generation| *generation += 1);
    }

    /// While `true`, watch requests wait unanswered; `false` answers them.
    pub fn hold_watches(&self, hold: bool) {
        self.shared.hold.send_replace(hold);
    }

    /// Watch requests waiting because of `hold_watches(true)`.
    pub fn held_watches(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Watches answered and still streaming (`drop_watches` ends exactly these).
    pub fn open_watches(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// While `true`, the server is down: open watches are dropped, new
    /// connections closed at once, requests on open connections closed unanswered.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.unavailable.store(unavailable, Ordering::SeqCst);
        if unavailable {
            self.drop_watches();
        }
    }

    /// While `true`, list and watch requests for `resource` are answered 403
    /// Forbidden, as the API server answers a client RBAC does not allow;
    /// switching it on drops every open watch.
    pub fn set_refused(&self, resource: Resource, refused: bool) {
        mark(&self.shared.refused, resource, refused);
        if refused {
            self.drop_watches();
        }
    }

    /// While `false`, list and watch requests for `resource` are answered 404 Not
    /// Found, as the API server answers for a CRD that is not installed;
    /// switching it off drops every open watch (so those of `resource` end).
    /// Objects created meanwhile are kept and served once it is back.
    pub fn set_served(&self, resource: Resource, served: bool) {
        mark(&self.shared.not_served, resource, !served);
        if !served {
            self.drop_watches();
        }
    }

    /// Requests seen so far for `resource`.
    pub fn counts(&self, resource: Resource) -> Counts {
        let counts = self
            .shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.get(&resource).copied().unwrap_or_default()
    }

    /// Waits up to `timeout` for `condition` on this server (polled every 10 ms);
    /// whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&ApiServer) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while !condition(self) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Not `drop`: that blocks, and panics inside a test's own runtime.
            runtime.shutdown_background();
        }
    }
}

fn to_value<K: Serialize>(object: &K) -> Value {
    serde_json::to_value(object)
        .unwrap_or_else(|error| panic!("stand-in API server: object does not serialize: {error}"))
}
