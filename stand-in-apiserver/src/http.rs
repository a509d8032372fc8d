//! The stand-in's HTTP/1.1 side: routes, list (with limit/continue pages) and
//! watch (newline-delimited events after a resourceVersion, bookmarks, 410 Gone),
//! and the failure modes the handle switches on.

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{
    body::{Frame, Incoming},
    header::{HeaderValue, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{mpsc, watch},
};
use tokio_rustls::TlsAcceptor;

use super::{
    store::{Event, Resource},
    Shared,
};

type Body = BoxBody<Bytes, io::Error>;
type Chunk = Result<Frame<Bytes>, io::Error>;

/// Accepts connections (TLS ones with `tls`) until the runtime stops. While the
/// server is unavailable a connection is closed as soon as it is accepted.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.unavailable.load(Ordering::SeqCst) {
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, shared).await,
                Some(tls) => {
                    // A client that gives up on the handshake is no failure here.
                    if let Ok(stream) = tls.accept(stream).await {
                        serve_connection(stream, shared).await;
                    }
                }
            }
        });
    }
}

/// Answers the requests of one connection until it ends.
async fn serve_connection(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    shared: Arc<Shared>,
) {
    let service = service_fn(move |request| handle(shared.clone(), request));
    // A connection ends with an error when a watch is dropped on purpose.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Where a request path points: a resource, maybe one namespace of it.
#[derive(Clone, Debug)]
struct Route {
    resource: Resource,
    namespace: Option<String>,
}

/// `/api/v1/{plural}`, `/api/v1/namespaces/{ns}/{plural}`,
/// `/apis/{group}/{version}/{plural}` and `/apis/{group}/{version}/namespaces/{ns}/{plural}`.
fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_version, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, plural) = match rest {
        [plural] => (None, *plural),
        ["namespaces", namespace, plural] => (Some(namespace.to_string()), *plural),
        _ => return None,
    };
    let resource = Resource::of_path(&group_version, plural)?;
    if namespace.is_some() && !resource.namespaced() {
        return None;
    }
    Some(Route {
        resource,
        namespace,
    })
}

fn query(request: &Request<Incoming>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    if shared.unavailable.load(Ordering::SeqCst) {
        // Closes the connection without an answer.
        return Err(io::Error::other("the stand-in API server is unavailable"));
    }
    if let Some(value) = request.headers().get(hyper::header::AUTHORIZATION) {
        *shared
            .authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    if request.method() != Method::GET {
        let message = "the stand-in API server only lists and watches";
        return Ok(status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            message,
        ));
    }
    let Some(route) = route(request.uri().path()) else {
        let message = format!("the stand-in does not serve {}", request.uri().path());
        return Ok(status(StatusCode::NOT_FOUND, "NotFound", &message));
    };
    let query = query(&request);
    if shared.refused(route.resource) {
        let verb = if query.get("watch").is_some_and(|watch| watch == "true") {
            "watch"
        } else {
            "list"
        };
        let message = format!(
            "{plural} is forbidden: User \"system:anonymous\" cannot {verb} resource \"{plural}\" at the cluster scope",
            plural = route.resource.plural()
        );
        return Ok(status(StatusCode::FORBIDDEN, "Forbidden", &message));
    }
    if !shared.served(route.resource) {
        // Counted, so tests see the retries.
        if query.get("watch").is_some_and(|watch| watch == "true") {
            shared.count(route.resource, |counts| counts.watches += 1);
        } else {
            shared.count(route.resource, |counts| counts.lists += 1);
        }
        let message = format!(
            "the server could not find the requested resource ({})",
            route.resource.plural()
        );
        return Ok(status(StatusCode::NOT_FOUND, "NotFound", &message));
    }
    if query.get("watch").is_some_and(|watch| watch == "true") {
        watch(shared, route, &query).await
    } else {
        Ok(list(&shared, &route, &query))
    }
}

/// A `Status` answer, as the API server writes errors.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status_object(code.as_u16(), reason, message))
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(value.to_string()))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A list: every object at the current revision, or one page of it (`limit`), the
/// rest kept for `continue` (410 Gone once compacted away).
fn list(shared: &Shared, route: &Route, query: &HashMap<String, String>) -> Response<Body> {
    let mut store = shared.store();
    let (revision, mut items) = match query.get("continue") {
        Some(token) => match store.resume(token) {
            Some(rest) => (rest.revision, rest.rest),
            None => {
                let message = "The provided continue parameter is too old to display a \
                               consistent list result.";
                return status(StatusCode::GONE, "Expired", message);
            }
        },
        None => {
            shared.count(route.resource, |counts| counts.lists += 1);
            let items = store.list(route.resource, route.namespace.as_deref());
            (store.revision, items)
        }
    };
    shared.count(route.resource, |counts| counts.pages += 1);
    let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if limit > 0 && items.len() > limit {
        let rest = items.split_off(limit);
        metadata["remainingItemCount"] = json!(rest.len());
        metadata["continue"] = json!(store.park(revision, rest));
    }
    let resource = route.resource;
    let body = json!({
        "kind": format!("{}List", resource.kind()),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
        "items": items,
    });
    json_response(StatusCode::OK, &body)
}

/// Decrements the held-watch count when a held request ends, however it ends.
struct HeldGuard<'a>(&'a Shared);

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A watch: answers at once (unless watches are held) and streams from a task.
async fn watch(
    shared: Arc<Shared>,
    route: Route,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, io::Error> {
    shared.count(route.resource, |counts| counts.watches += 1);
    let mut hold = shared.hold.subscribe();
    if *hold.borrow_and_update() {
        shared.held.fetch_add(1, Ordering::SeqCst);
        let _guard = HeldGuard(&shared);
        let _ = hold.wait_for(|held| !*held).await;
    }
    if shared.unavailable.load(Ordering::SeqCst) {
        return Err(io::Error::other("the stand-in API server is unavailable"));
    }
    // Absent or "0": start with the current objects as ADDED ("any" version).
    let from = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse::<u64>().ok())
        .filter(|rv| *rv != 0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    // From here on the watch is open: a `drop_watches` call ends it.
    let mut drops = shared.drops.subscribe();
    drops.borrow_and_update();
    shared.open.fetch_add(1, Ordering::SeqCst);
    let (sender, receiver) = mpsc::channel::<Chunk>(64);
    let stream = WatchStream {
        shared,
        route,
        timeout,
        bookmarks,
        sender,
    };
    tokio::spawn(stream.run(from, drops));
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Decrements the open-watch count when a watch stream ends.
struct OpenGuard<'a>(&'a Shared);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One open watch.
struct WatchStream {
    shared: Arc<Shared>,
    route: Route,
    timeout: Duration,
    bookmarks: bool,
    sender: mpsc::Sender<Chunk>,
}

impl WatchStream {
    async fn send_line(&self, line: String) -> bool {
        let chunk = Ok(Frame::data(Bytes::from(line + "\n")));
        self.sender.send(chunk).await.is_ok()
    }

    /// Streams events after `from` (or the current objects, then what follows)
    /// until the timeout (a clean end), the client leaves, a drop (an abrupt end)
    /// or history before `from` is gone (an ERROR event with 410, then a clean end).
    async fn run(self, from: Option<u64>, mut drops: watch::Receiver<u64>) {
        let _open = OpenGuard(&self.shared);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut changes = self.shared.changes.subscribe();
        let interval = self.shared.bookmark_interval;
        let mut bookmark =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let namespace = self.route.namespace.clone();
        let mut cursor = match from {
            Some(revision) => revision,
            None => {
                changes.borrow_and_update();
                let (objects, revision) = {
                    let store = self.shared.store();
                    let objects = store.list(self.route.resource, namespace.as_deref());
                    (objects, store.revision)
                };
                for object in objects {
                    let line = json!({"type": "ADDED", "object": object}).to_string();
                    if !self.send_line(line).await {
                        return;
                    }
                }
                revision
            }
        };
        loop {
            changes.borrow_and_update();
            let (events, revision) = {
                let store = self.shared.store();
                let events = store.events_after(self.route.resource, namespace.as_deref(), cursor);
                (events, store.revision)
            };
            let Some(events) = events else {
                let message = format!("too old resource version: {cursor} ({revision})");
                let error =
                    json!({"type": "ERROR", "object": status_object(410, "Expired", &message)});
                self.send_line(error.to_string()).await;
                return;
            };
            for event in events {
                if !self.send_line(Event::to_line(&event)).await {
                    return;
                }
            }
            cursor = revision;
            tokio::select! {
                _ = changes.changed() => {}
                _ = drops.changed() => {
                    // An error chunk makes hyper close the connection mid-body.
                    let _ = self.sender.send(Err(io::Error::other("watch dropped"))).await;
                    return;
                }
                _ = bookmark.tick(), if self.bookmarks => {
                    let resource = self.route.resource;
                    let line = json!({"type": "BOOKMARK", "object": {
                        "kind": resource.kind(), "apiVersion": resource.api_version(),
                        "metadata": {"resourceVersion": cursor.to_string()}
                    }});
                    if !self.send_line(line.to_string()).await {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.sender.closed() => return,
            }
        }
    }
}
