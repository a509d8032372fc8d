//! The agent survives hostile load. A NetworkPolicy over a cap (more rules than
//! the agent handles) stands in fail-closed and is reported without making the
//! node unready. And its HTTP endpoint holds: 10,000 idle connections
//! from inside the node namespace, against an agent whose descriptor limit is
//! 1,024 (what many container runtimes give), while a policy change still
//! programs (its verdict checked on real packets). The server keeps at most its
//! cap open (closing the oldest), closes every idle one after the header timeout,
//! and still answers, during the flood and after it.

use std::{
    io::Read,
    net::TcpStream,
    os::unix::process::CommandExt,
    time::{Duration, Instant},
};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use policy_agent::{lab::netns::in_netns, source::convert::caps::MAX_POLICY_RULES};

use super::harness::{db_from_web, eventually, namespace_json, Node, TCP_PORT};

/// Idle connections the test holds.
const CONNECTIONS: u64 = 10_000;
/// Descriptors the test keeps for itself beside them (the lab, probes, the API
/// server's runtime).
const SPARE_FDS: u64 = 512;
/// The agent's descriptor limit.
const AGENT_FDS: u64 = 1_024;
/// The agent's header timeout (`--http-header-timeout-s`).
const HEADER_TIMEOUT_S: u64 = 2;

/// Raises this process's soft descriptor limit to what the test needs, within the
/// hard limit; returns how many connections it can hold.
fn connections_within_the_limit() -> u64 {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).unwrap_or_else(|e| panic!("getrlimit: {e}"));
    let wanted = (CONNECTIONS + SPARE_FDS).min(hard);
    if wanted > soft {
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard)
            .unwrap_or_else(|e| panic!("raising RLIMIT_NOFILE to {wanted}: {e}"));
    }
    let connections = wanted.saturating_sub(SPARE_FDS).min(CONNECTIONS);
    if connections < CONNECTIONS {
        eprintln!(
            "the hard descriptor limit is {hard}: holding {connections} connections, not {CONNECTIONS}"
        );
    }
    assert!(
        connections >= 2 * AGENT_FDS,
        "too few descriptors for the test: {hard}"
    );
    connections
}

/// Whether the server has closed `stream` (a read gives EOF or a reset now).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// The value of the unlabelled or labelled metric line `name` in `text`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("/metrics lacks {name}:\n{text}"))
}

#[test]
fn an_over_cap_policy_and_ten_thousand_idle_connections_do_not_stop_a_policy_change() {
    super::support::require_root_and_bpf();
    let connections = connections_within_the_limit();
    let node = Node::up(&[("web", "web"), ("db", "db"), ("other", "other")], &[]);
    node.api.create_value(namespace_json("prod", &[]));
    for pod in ["web", "db", "other"] {
        node.create_pod(pod);
    }
    node.api.create_value(db_from_web(
        serde_json::json!([{"protocol": "TCP", "port": TCP_PORT}]),
    ));
    let rules = vec![serde_json::json!({}); MAX_POLICY_RULES + 1];
    node.api.create_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "big", "namespace": "flood"},
        "spec": {"podSelector": {}, "ingress": rules}
    }));
    let mut agent = node.start_agent_with("hostile", |command| {
        command.args(["--http-header-timeout-s", &HEADER_TIMEOUT_S.to_string()]);
        // SAFETY: setrlimit is async-signal-safe and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                setrlimit(Resource::RLIMIT_NOFILE, AGENT_FDS, AGENT_FDS)
                    .map_err(std::io::Error::from)
            });
        }
    });
    agent.wait_ready(Duration::from_secs(60));
    node.expect(
        "before the flood",
        &[("web", "db", true), ("other", "db", false)],
    );

    let addr = agent.metrics;
    let started = Instant::now();
    let mut held: Vec<TcpStream> = in_netns(&agent.node_netns, || {
        (0..connections)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("connecting to the agent: {e}"));
    eprintln!(
        "{} connections opened in {:?}",
        held.len(),
        started.elapsed()
    );

    // A policy change programs while they are held.
    node.relabel("other", "web");
    node.expect(
        "other relabelled app=web during the flood",
        &[("other", "db", true)],
    );
    // The endpoint answers: a new connection closes the oldest idle one.
    let (status, _) = agent
        .get("/readyz")
        .unwrap_or_else(|| panic!("no /readyz during the flood"));
    assert_eq!(status, 200);
    let (_, text) = agent
        .get("/metrics")
        .unwrap_or_else(|| panic!("no /metrics"));
    assert!(metric(&text, "podwall_http_connections") <= 64, "{text}");
    // Each beyond the cap was closed: evicted by a newer one, or, when opening
    // 10,000 takes longer than the header timeout on a busy machine, timed out.
    let closed = |reason: &str| {
        metric(
            &text,
            &format!("podwall_http_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(
        closed("evicted") + closed("header_timeout") >= connections - 64,
        "{text}"
    );

    // Every idle connection is closed by the server, the last ones by the header
    // timeout.
    for stream in &held {
        stream
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    eventually(
        "the server closes every idle connection",
        Duration::from_secs(10 * HEADER_TIMEOUT_S),
        || held.iter_mut().all(closed_by_server),
    );
    drop(held);
    let (status, text) = agent
        .get("/metrics")
        .unwrap_or_else(|| panic!("no /metrics after"));
    assert_eq!(status, 200);
    assert!(
        metric(
            &text,
            "podwall_http_connections_closed_total{reason=\"header_timeout\"}"
        ) > 0
    );
    node.relabel("other", "other");
    node.expect(
        "after the flood",
        &[("other", "db", false), ("web", "db", true)],
    );
    assert!(matches!(agent.get("/readyz"), Some((200, _))));
    assert!(agent.terminate(), "policy-agent run exits 0 on SIGTERM");
}
