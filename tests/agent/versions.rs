//! Upgrades across datapath versions: the programs an older podwall left on a pod
//! interface, pinned under that version's directory, are removed once the agent
//! is ready, so what their frozen tables still drop stops being dropped.

use std::time::Duration;

use policy_agent::{
    dataplane::{object, Datapath, LoadOptions},
    lab::netns::in_netns,
    model::ObjectRef,
    telemetry::flows::publish::FlowPaths,
};
use policy_common::ABI_VERSION;
use serde_json::json;

use super::{
    harness::{db_from_web, eventually, namespace_json, Node, NAMESPACE, TCP_PORT},
    support,
};

#[test]
fn another_versions_datapath_is_removed_once_the_agent_is_ready() {
    support::require_root_and_bpf();
    let node = Node::up(&[("web", "web"), ("db", "db")], &[]);
    node.api.create_value(namespace_json(NAMESPACE, &[]));
    for pod in ["web", "db"] {
        node.create_pod(pod);
    }
    node.api
        .create_value(db_from_web(json!([{"protocol": "TCP", "port": TCP_PORT}])));
    let instance = node.claim_instance_on(0, "versions");
    let db_if = node
        .net
        .host_interface(&ObjectRef::new(NAMESPACE, "db"))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();

    // What an agent of the previous datapath version left: its programs pinned
    // under that version's directory and attached to db's veth, with tables that
    // know no endpoint (so they drop everything there).
    let older = FlowPaths::system()
        .bpffs
        .join("podwall")
        .join(format!("v{}", ABI_VERSION - 1))
        .join(&instance);
    let object = object::find().unwrap_or_else(|e| panic!("{e}"));
    in_netns(node.net.node_netns(), || {
        let (mut datapath, _) = Datapath::open_pinned(&object, &LoadOptions::default(), &older)
            .unwrap_or_else(|e| panic!("loading the older datapath: {e}"));
        datapath
            .attach(&db_if)
            .unwrap_or_else(|e| panic!("attaching the older datapath to {db_if}: {e}"));
        // Dropped here: its pinned links stay attached.
    })
    .unwrap_or_else(|e| panic!("{e}"));
    node.expect("the older datapath drops", &[("web", "db", false)]);

    let mut agent = node.start_agent("versions");
    agent.wait_ready(Duration::from_secs(60));
    eventually(
        "the older datapath's pins are removed",
        Duration::from_secs(20),
        || !older.exists(),
    );
    node.expect(
        "allowed once the older programs are gone",
        &[("web", "db", true)],
    );
    assert!(agent.terminate(), "policy-agent run exits 0 on SIGTERM");
}
