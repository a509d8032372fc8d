//! Restarts under traffic (docs/architecture.md, invariant 4): the agent is killed with
//! SIGKILL and started again, many times, while a denied pod keeps trying, an
//! allowed pod keeps opening connections and an established flow keeps talking.
//! Then a clean stop leaves enforcement in place, and `policy-agent uninstall`
//! removes it.

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use policy_agent::{
    lab::{netns::in_netns, probe::Family},
    model::ObjectRef,
};
use serde_json::json;

use super::harness::{db_from_web, namespace_json, Node, NAMESPACE, TCP_PORT, UDP_PORT};

/// Kill and restart rounds.
const ROUNDS: usize = 8;
/// How long an echo of the established flow may take.
const ECHO_TIMEOUT: Duration = Duration::from_secs(1);

/// What the traffic threads saw.
#[derive(Debug, Default)]
struct Seen {
    /// Connections of the denied pod that got through (must stay 0).
    denied_allowed: usize,
    /// Denied pod's attempts.
    denied_tries: usize,
    /// Allowed pod's new connections that failed.
    allowed_failed: Vec<String>,
    /// Allowed pod's attempts.
    allowed_tries: usize,
    /// Datagrams of the established flow without an echo.
    echoes_lost: Vec<u64>,
    /// Datagrams sent on it.
    echoes_sent: u64,
}

#[test]
fn kill_9_never_opens_a_denied_flow_and_established_flows_continue() {
    super::support::require_root_and_bpf();
    let node = Node::up(&[("web", "web"), ("db", "db"), ("other", "other")], &[]);
    node.api.create_value(namespace_json(NAMESPACE, &[]));
    for pod in ["web", "db", "other"] {
        node.create_pod(pod);
    }
    node.api.create_value(db_from_web(json!([
        {"protocol": "TCP", "port": TCP_PORT},
        {"protocol": "UDP", "port": UDP_PORT}
    ])));
    let mut agent = node.start_agent("restarts");
    agent.wait_ready(Duration::from_secs(60));
    node.expect(
        "enforcing before the restarts",
        &[("web", "db", true), ("other", "db", false)],
    );

    let db = |family| {
        node.net
            .pod_address(&ObjectRef::new(NAMESPACE, "db"), family)
    };
    let db_tcp = SocketAddr::new(db(Family::Ipv4).unwrap_or_else(|e| panic!("{e}")), TCP_PORT);
    let db_udp = SocketAddr::new(db(Family::Ipv4).unwrap_or_else(|e| panic!("{e}")), UDP_PORT);
    let netns = |pod: &str| {
        node.net
            .pod_netns(&ObjectRef::new(NAMESPACE, pod))
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    };
    let (web_ns, other_ns) = (netns("web"), netns("other"));

    // The established flow: one UDP socket in `web`, echoed by `db`.
    let flow = in_netns(&web_ns, || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect(db_udp)?;
        socket.set_read_timeout(Some(ECHO_TIMEOUT))?;
        Ok::<_, std::io::Error>(socket)
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("flow socket: {e}"));

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut seen = Seen::default();
            let connect = |ns: &str| {
                in_netns(ns, || {
                    std::net::TcpStream::connect_timeout(&db_tcp, Duration::from_millis(500))
                })
                .unwrap_or_else(|e| panic!("{e}"))
            };
            while !stop.load(Ordering::Relaxed) {
                seen.denied_tries += 1;
                if connect(&other_ns).is_ok() {
                    seen.denied_allowed += 1;
                }
                seen.allowed_tries += 1;
                if let Err(error) = connect(&web_ns) {
                    seen.allowed_failed.push(error.to_string());
                }
                seen.echoes_sent += 1;
                let n = seen.echoes_sent;
                let mut buf = [0u8; 8];
                let echoed = flow.send(&n.to_be_bytes()).is_ok()
                    && flow
                        .recv(&mut buf)
                        .is_ok_and(|len| len == 8 && buf == n.to_be_bytes());
                if !echoed {
                    seen.echoes_lost.push(n);
                }
            }
            seen
        })
    };

    let started = Instant::now();
    for round in 0..ROUNDS {
        thread::sleep(Duration::from_millis(300));
        agent.kill9();
        thread::sleep(Duration::from_millis(200));
        agent = node.start_agent("restarts");
        agent.wait_ready(Duration::from_secs(60));
        eprintln!("restart {round} done after {:?}", started.elapsed());
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = traffic
        .join()
        .unwrap_or_else(|_| panic!("the traffic thread panicked"));
    eprintln!("{seen:?}");
    assert_eq!(
        seen.denied_allowed, 0,
        "a denied pod got through during restarts: {seen:?}"
    );
    assert!(
        seen.allowed_failed.is_empty(),
        "allowed connections failed during restarts: {seen:?}"
    );
    assert!(
        seen.echoes_lost.is_empty(),
        "the established flow lost datagrams: {seen:?}"
    );
    assert!(
        seen.denied_tries >= ROUNDS && seen.echoes_sent >= ROUNDS as u64,
        "too little traffic: {seen:?}"
    );

    // A clean stop leaves enforcement in place ...
    assert!(agent.terminate(), "policy-agent run exits 0 on SIGTERM");
    node.expect(
        "after a clean stop",
        &[("web", "db", true), ("other", "db", false)],
    );
    // ... and uninstall removes it on purpose.
    let status = Command::new(env!("CARGO_BIN_EXE_policy-agent"))
        .args(["uninstall", "--instance", &node.instance("restarts")])
        .status()
        .unwrap_or_else(|e| panic!("policy-agent uninstall: {e}"));
    assert!(status.success(), "policy-agent uninstall failed: {status}");
    node.expect(
        "after uninstall nothing is enforced",
        &[("other", "db", true)],
    );
}
