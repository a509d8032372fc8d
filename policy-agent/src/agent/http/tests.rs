//! The endpoints over a real socket on 127.0.0.1.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{bind, router, run, serve, HttpLimits};
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
    start_with(liveness, HttpLimits::default()).await
}

async fn start_with(liveness: Duration, limits: HttpLimits) -> Server {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(liveness));
    let listener = bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(metrics.clone(), health.clone());
    let served = metrics.clone();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        serve(listener, app, limits, served, shutdown).await;
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

/// Reads until the server closes `stream` (EOF or a reset); `None` if it stays
/// open for `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

#[tokio::test]
async fn a_client_that_sends_no_request_head_in_time_is_closed_idle_or_after_a_response() {
    let limits = HttpLimits {
        header_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let server = start_with(Duration::from_secs(30), limits).await;
    // Silent from the start.
    let mut silent = connect(server.addr).await;
    assert!(closed_within(&mut silent, Duration::from_secs(5))
        .await
        .is_some());
    // Half a request head, never finished.
    let mut slow = connect(server.addr).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: a")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(closed_within(&mut slow, Duration::from_secs(5))
        .await
        .is_some());
    // Kept alive after a response, then idle.
    let mut kept = connect(server.addr).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut head = [0u8; 12];
    kept.read_exact(&mut head)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(closed_within(&mut kept, Duration::from_secs(5))
        .await
        .is_some());
    assert_eq!(server.metrics.http_closed_count("header_timeout"), 3);
    // A client that sends in time is answered.
    let (status, _, _) = get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_a_new_connection_closes_the_oldest() {
    let limits = HttpLimits {
        max_connections: 3,
        ..HttpLimits::default()
    };
    let server = start_with(Duration::from_secs(30), limits).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect(server.addr).await);
        // Accepted in this order: the server sees them oldest first.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fourth, a request: the oldest idle one goes, the request is answered.
    let (status, _, _) = get(server.addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(closed_within(&mut idle[0], Duration::from_secs(2))
        .await
        .is_some());
    assert!(closed_within(&mut idle[2], Duration::from_millis(200))
        .await
        .is_none());
    assert_eq!(server.metrics.http_closed_count("evicted"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_port_in_use_is_retried_and_shown_until_it_is_free() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(Duration::from_secs(30)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        addr,
        router(metrics.clone(), health.clone()),
        HttpLimits::default(),
        metrics.clone(),
        health.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while metrics.errors("http_bind") == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.errors("http_bind") >= 1);
    let details = health.details();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with(&format!("http: cannot listen on {addr}"))),
        "{details:?}"
    );
    drop(taken);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never listened once the port was free"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
    assert!(health.details().is_empty(), "{:?}", health.details());
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
