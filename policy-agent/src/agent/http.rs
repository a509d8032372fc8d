//! The agent's HTTP endpoints: `/metrics` (OpenMetrics text), `/healthz` (200
//! while the loop ticks), `/readyz` (200 only when ready; else 503 and why).

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::net::TcpListener;

use super::{health::Health, metrics::Metrics, metrics::CONTENT_TYPE};

/// What can stop the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (--metrics-addr): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("metrics/health server: {source}")]
    Serve {
        /// The error.
        #[source]
        source: std::io::Error,
    },
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

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| HttpError::Serve { source })
}

async fn metrics_handler(State(shared): State<Shared>) -> Response {
    match shared.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics");
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
/// (`Health::details`: `refused: ...`, `not converted: ...`), which never make it 503.
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
