//! The agent's HTTP endpoints: `/metrics` (OpenMetrics text), `/healthz` (200
//! while the loop ticks), `/readyz` (200 only when ready; else 503 and why).
//!
//! Anyone who can reach the node can connect, so the server holds what it must
//! and no more (`HttpLimits`): a client has `header_timeout` to send a request's
//! head, from connecting and again after each response (the read and idle
//! timeout), a connection lives at most `max_age`, and at most `max_connections`
//! are open: a new one beyond that closes the oldest, so a flood of idle
//! connections never locks out the kubelet's probes. A listener that cannot be
//! bound is retried with backoff (`run`): enforcement never waits for it.
//! hyper serves each connection (HTTP/1.1, keep-alive); axum routes.

use std::{
    collections::VecDeque,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::oneshot};

use super::{health::Health, metrics::Metrics, metrics::CONTENT_TYPE};
use crate::causes::causes;

/// What can stop the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (--metrics-addr)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What one client may hold of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; one more closes the oldest.
    pub max_connections: usize,
    /// Time to send a request's head, from connecting or from the last response.
    pub header_timeout: Duration,
    /// The longest a connection lives, whatever it does.
    pub max_age: Duration,
}

impl Default for HttpLimits {
    /// 64 connections (a scrape and two probes need three), 10 s for a request
    /// head (the kubelet's probe timeout is 1 s, a Prometheus scrape's 10 s), 60 s
    /// per connection (Prometheus reconnects when a kept-alive one is closed).
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(60),
        }
    }
}

/// What the handlers read.
#[derive(Clone, Debug)]
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The routes, over the loop's metrics and health.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Shared { metrics, health })
}

/// Binds `addr` (port 0: any free port; the listener's `local_addr` tells which).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// The first wait after a failed bind; it doubles up to `BIND_RETRY_MAX`.
const BIND_RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest wait between binds.
const BIND_RETRY_MAX: Duration = Duration::from_secs(30);

/// Binds `addr` and serves `router` on it until `shutdown` completes. A failed bind
/// is logged, counted (`podwall_errors_total{kind="http_bind"}`), shown as a
/// `/readyz` detail and retried with backoff, so a port in use never stops
/// enforcement.
pub async fn run(
    addr: SocketAddr,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    let mut delay = BIND_RETRY_MIN;
    let listener = loop {
        match bind(addr).await {
            Ok(listener) => break listener,
            Err(error) => {
                tracing::warn!(error = %causes(&error), retry_in_s = delay.as_secs(), "metrics/health endpoint not listening; enforcement goes on");
                metrics.error("http_bind");
                health.set_http(Some(format!("{}; retrying", causes(&error))));
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(BIND_RETRY_MAX);
            }
        }
    };
    health.set_http(None);
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    serve(listener, router, limits, metrics, &mut shutdown).await;
}

/// The open connections, oldest first: each one's id and what closes it.
#[derive(Default)]
struct Open {
    next_id: u64,
    connections: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors or memory: wait rather than spin.
                tracing::warn!(error = %causes(&error), "accepting a metrics/health connection");
                metrics.error("http_accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (close, closed) = oneshot::channel();
        let id = {
            let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
            if open.connections.len() >= limits.max_connections.max(1) {
                if let Some((_, oldest)) = open.connections.pop_front() {
                    let _ = oldest.send(());
                    metrics.http_closed("evicted");
                }
            }
            open.next_id += 1;
            let id = open.next_id;
            open.connections.push_back((id, close));
            metrics.set_http_connections(open.connections.len());
            id
        };
        let service = TowerToHyperService::new(router.clone());
        let (open, metrics) = (Arc::clone(&open), Arc::clone(&metrics));
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        if error.is_timeout() {
                            metrics.http_closed("header_timeout");
                        } else {
                            tracing::debug!(error = %causes(&error), "metrics/health connection");
                        }
                    }
                }
                () = tokio::time::sleep(limits.max_age) => metrics.http_closed("max_age"),
                _ = closed => {}
            }
            let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
            open.connections.retain(|(other, _)| *other != id);
            metrics.set_http_connections(open.connections.len());
        });
    }
}

async fn metrics_handler(State(shared): State<Shared>) -> Response {
    match shared.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(error = %causes(&error), "encoding metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}

async fn healthz(State(shared): State<Shared>) -> Response {
    if shared.health.live() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let since = shared.health.since_tick();
        let body = format!(
            "sync loop stuck: last tick {:.1}s ago\n",
            since.as_secs_f64()
        );
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// 200 `ready` or 503 with one reason per line; then one line per detail
/// (`Health::details`: `refused: ...`, `not converted: ...`, `identity: ...`,
/// `ahead: ...`, `http: ...`), which never make it 503.
async fn readyz(State(shared): State<Shared>) -> Response {
    let details = shared.health.details();
    let (status, mut lines) = match shared.health.readiness() {
        Ok(()) => (StatusCode::OK, vec!["ready".to_string()]),
        Err(reasons) => (StatusCode::SERVICE_UNAVAILABLE, reasons),
    };
    lines.extend(details);
    let body = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    (status, body).into_response()
}

#[cfg(test)]
mod tests;
