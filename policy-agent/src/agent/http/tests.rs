//! The endpoints over a real socket on 127.0.0.1.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{bind, router, serve};
use crate::agent::{health::Health, metrics::Metrics};

/// Status code, headers and body of `GET path`.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_ascii_lowercase(), body.to_string())
}

struct Server {
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(liveness: Duration) -> Server {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(liveness));
    let listener = bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(metrics.clone(), health.clone());
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        serve(listener, app, shutdown)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
    Server {
        addr,
        metrics,
        health,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

#[tokio::test]
async fn readyz_is_503_with_every_reason_until_ready() {
    let server = start(Duration::from_secs(30)).await;
    let (status, _, body) = get(server.addr, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body, "initial lists not done\nmaps not programmed\n");

    server.health.set_synced(true);
    server.health.set_programmed(true);
    server.health.set_pods_without_programs(3);
    server
        .health
        .set_stale(Some("watch pods: 410 Gone".to_string()));
    let (status, _, body) = get(server.addr, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "stale: watch pods: 410 Gone\n3 pods without programs\n"
    );

    server.health.set_stale(None);
    server.health.set_pods_without_programs(0);
    let (status, _, body) = get(server.addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    server.stop().await;
}

#[tokio::test]
async fn healthz_is_200_while_the_loop_ticks_and_503_when_it_stops() {
    let server = start(Duration::from_millis(200)).await;
    let (status, _, body) = get(server.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, body) = get(server.addr, "/healthz").await;
    assert_eq!(status, 503);
    assert!(body.starts_with("sync loop stuck"), "{body}");
    server.health.tick();
    let (status, _, _) = get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let server = start(Duration::from_secs(30)).await;
    server.metrics.set_endpoints(4);
    let (status, head, body) = get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.lines().any(|l| l == "podwall_endpoints 4"), "{body}");
    let (status, _, _) = get(server.addr, "/nothing").await;
    assert_eq!(status, 404);
    server.stop().await;
}
