//! The agent beside other things on the node: another agent's TC programs on a
//! pod interface (podwall's go first; one attached ahead later is reported), a
//! container runtime's own bridge (its veths are never blackholed), and
//! `policy-agent uninstall` while the agent runs (refused, or the agent stopped
//! first).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::Command,
    time::Duration,
};

use aya::{
    programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType},
    Ebpf,
};
use policy_agent::{
    agent::run::pin_dir,
    dataplane::object,
    lab::{netns, netns::in_netns},
    model::ObjectRef,
};
use serde_json::json;

use super::{
    harness::{db_from_web, eventually, namespace_json, Node, NAMESPACE, TCP_PORT},
    support,
};

/// `db` admits TCP `TCP_PORT` from `app=web` only.
fn db_from_web_tcp() -> serde_json::Value {
    db_from_web(json!([{"protocol": "TCP", "port": TCP_PORT}]))
}

/// Another agent's classifier (podwall's empty `bench_floor`, which lets every
/// packet go on to the next program), loaded on its own.
pub(super) fn other_agent() -> Ebpf {
    let path = object::find().unwrap_or_else(|e| panic!("{e}"));
    let mut ebpf =
        Ebpf::load_file(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    let program: &mut SchedClassifier = ebpf
        .program_mut("bench_floor")
        .unwrap_or_else(|| panic!("no bench_floor"))
        .try_into()
        .unwrap_or_else(|e| panic!("{e}"));
    program.load().unwrap_or_else(|e| panic!("{e}"));
    ebpf
}

/// Attaches `ebpf`'s program at TC ingress of `interface` in namespace `netns`,
/// first or last in the chain.
pub(super) fn attach_other(ebpf: &mut Ebpf, netns: &str, interface: &str, order: LinkOrder) {
    let program: &mut SchedClassifier = ebpf
        .program_mut("bench_floor")
        .unwrap_or_else(|| panic!("no bench_floor"))
        .try_into()
        .unwrap_or_else(|e| panic!("{e}"));
    in_netns(netns, || {
        program.attach_with_options(
            interface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(order),
        )
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("attaching the other program to {interface}: {e}"));
}

#[test]
fn podwall_runs_first_and_a_program_attached_ahead_later_is_reported() {
    support::require_root_and_bpf();
    let node = Node::up(&[("web", "web"), ("db", "db")], &[]);
    node.api.create_value(namespace_json(NAMESPACE, &[]));
    for pod in ["web", "db"] {
        node.create_pod(pod);
    }
    node.api.create_value(db_from_web_tcp());
    let interface = |pod: &str| {
        node.net
            .host_interface(&ObjectRef::new(NAMESPACE, pod))
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    };
    let (web_if, db_if) = (interface("web"), interface("db"));
    // Another agent was there first on web's veth; podwall attaches ahead of it.
    let mut before = other_agent();
    attach_other(
        &mut before,
        node.net.node_netns(),
        &web_if,
        LinkOrder::last(),
    );
    let mut agent = node.start_agent("order");
    agent.wait_ready(Duration::from_secs(60));
    let (_, ready) = agent.get("/readyz").unwrap_or_else(|| panic!("no /readyz"));
    assert!(!ready.contains("ahead:"), "podwall runs first:\n{ready}");

    // Another agent attaches ahead of podwall on db's veth later: reported.
    let mut after = other_agent();
    attach_other(
        &mut after,
        node.net.node_netns(),
        &db_if,
        LinkOrder::first(),
    );
    let wanted = format!("ahead: {db_if} (ifindex ");
    eventually(
        "the program ahead is reported",
        Duration::from_secs(20),
        || {
            agent
                .get("/readyz")
                .is_some_and(|(status, body)| status == 200 && body.contains(&wanted))
        },
    );
    let (_, ready) = agent.get("/readyz").unwrap_or_else(|| panic!("no /readyz"));
    assert!(
        ready.contains("tc ingress: program bench_floor (id ")
            && ready.contains("runs before podwall's pod_egress"),
        "{ready}"
    );
    assert!(!ready.contains(&format!("ahead: {web_if} ")), "{ready}");
    let (_, metrics) = agent
        .get("/metrics")
        .unwrap_or_else(|| panic!("no /metrics"));
    assert!(metrics.contains("podwall_programs_ahead 1"), "{metrics}");
    // Gone again, the report goes too.
    drop(after);
    eventually(
        "the report ends with the program",
        Duration::from_secs(20),
        || {
            agent
                .get("/readyz")
                .is_some_and(|(_, body)| !body.contains("ahead:"))
        },
    );
    drop(before);
}

#[test]
fn uninstall_refuses_while_the_agent_runs_unless_told_to_stop_it() {
    support::require_root_and_bpf();
    let node = Node::up(&[("web", "web"), ("db", "db"), ("other", "other")], &[]);
    node.api.create_value(namespace_json(NAMESPACE, &[]));
    for pod in ["web", "db", "other"] {
        node.create_pod(pod);
    }
    node.api.create_value(db_from_web_tcp());
    let mut agent = node.start_agent("uninstall");
    agent.wait_ready(Duration::from_secs(60));
    let instance = node.instance("uninstall");
    let uninstall = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_policy-agent"))
            .args(["uninstall", "--instance", &instance])
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("policy-agent uninstall: {e}"))
    };
    let refused = uninstall(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "uninstall must refuse: {stderr}");
    assert!(
        stderr.contains("another policy-agent runs instance")
            && stderr.contains("refusing to take enforcement off under a running agent")
            && stderr.contains("--stop-agent"),
        "{stderr}"
    );
    assert!(agent.running(), "the agent keeps running");
    assert!(pin_dir(&instance).join("maps").exists());
    node.expect(
        "still enforcing after the refusal",
        &[("web", "db", true), ("other", "db", false)],
    );

    let stopped = uninstall(&["--stop-agent"]);
    assert!(
        stopped.status.success(),
        "uninstall --stop-agent: {}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    eventually("the agent exits", Duration::from_secs(10), || {
        !agent.running()
    });
    assert!(
        !Path::new(&pin_dir(&instance)).exists(),
        "the pins are gone"
    );
    node.expect("nothing enforced after uninstall", &[("other", "db", true)]);
}

/// A container runtime's own network in the node namespace: bridge `podman0`
/// (10.88.0.1/16) with one container (10.88.0.2) listening on `TCP_PORT`. The
/// veth is made first and enslaved after, as runtimes do.
fn runtime_bridge(node: &Node) -> (String, TcpListener) {
    let container = format!("{}-rt", node.net.instance());
    netns::ip_batch(None, &[format!("netns add {container}")]).unwrap_or_else(|e| panic!("{e}"));
    let lines = [
        "link add podman0 type bridge".to_string(),
        "addr add 10.88.0.1/16 dev podman0".to_string(),
        "link set podman0 up".to_string(),
        format!("link add veth-rt0 type veth peer name eth0 netns {container}"),
        "link set veth-rt0 up".to_string(),
        "link set veth-rt0 master podman0".to_string(),
    ];
    netns::ip_batch(Some(node.net.node_netns()), &lines).unwrap_or_else(|e| panic!("{e}"));
    let inside = [
        "link set lo up",
        "link set eth0 up",
        "addr add 10.88.0.2/16 dev eth0",
        "route add default via 10.88.0.1",
    ]
    .map(String::from);
    netns::ip_batch(Some(&container), &inside).unwrap_or_else(|e| panic!("{e}"));
    let listener = in_netns(&container, || TcpListener::bind(("0.0.0.0", TCP_PORT)))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    (container, listener)
}

#[test]
fn a_runtime_bridges_veth_is_never_blackholed_and_a_new_pods_veth_still_is_isolated() {
    support::require_root_and_bpf();
    let mut node = Node::up(&[("web", "web"), ("late-db", "db")], &["late-db"]);
    node.api.create_value(namespace_json(NAMESPACE, &[]));
    node.create_pod("web");
    node.create_pod_without_ip("late-db");
    node.api.create_value(db_from_web_tcp());
    let mut agent = node.start_agent("late");
    agent.wait_ready(Duration::from_secs(60));

    // While a pod waits for its interface (the pending rule isolates), the
    // runtime starts a container on its own bridge.
    let (_container, listener) = runtime_bridge(&node);
    let accepting = std::thread::spawn(move || {
        while let Ok((stream, _)) = listener.accept() {
            drop(stream);
        }
    });
    let container = SocketAddr::from(([10, 88, 0, 2], TCP_PORT));
    let node_netns = node.net.node_netns().to_string();
    let reach = || {
        in_netns(&node_netns, || {
            TcpStream::connect_timeout(&container, Duration::from_millis(300)).is_ok()
        })
        .unwrap_or_else(|e| panic!("{e}"))
    };
    // Give the agent time to see the veth and its master.
    std::thread::sleep(Duration::from_secs(2));
    for attempt in 0..10 {
        assert!(
            reach(),
            "the runtime's container is unreachable (attempt {attempt})"
        );
    }
    let veth = in_netns(node.net.node_netns(), || {
        nix::net::if_::if_nametoindex("veth-rt0")
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    let pin = pin_dir(&node.instance("late"))
        .join("links")
        .join(format!("{veth}-ingress"));
    assert!(!pin.exists(), "the runtime's veth has no podwall programs");

    // A pod's veth is still isolated before the agent knows its address.
    node.connect(&["late-db"]);
    node.wait_attached("late-db");
    node.expect("the new pod's veth, pending", &[("web", "late-db", false)]);
    node.set_pod_ip("late-db");
    node.expect("the new pod, known", &[("web", "late-db", true)]);
    assert!(reach(), "the runtime's container is still reachable");
    drop(agent);
    drop(accepting);
}
