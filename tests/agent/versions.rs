//! Upgrades across datapath versions: the programs an older podwall left on a pod
//! interface, pinned under that version's directory, are removed once the agent
//! is ready, so what their frozen tables still drop stops being dropped.

use std::time::Duration;

use policy_agent::{
    agent::run::pin_dir,
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
    let node = Node::up(&[("web", "web"), ("db", "db"), ("other", "other")], &[]);
    node.api.create_value(namespace_json(NAMESPACE, &[]));
    for pod in ["web", "db", "other"] {
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
    let _cleanup = Uninstall(older.clone());
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
        "allowed once the older programs are gone, and this version still enforces",
        &[("web", "db", true), ("other", "db", false)],
    );
    let own_links = pin_dir(&instance).join("links");
    let pinned = std::fs::read_dir(&own_links)
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert!(
        pinned >= 4,
        "this version's links stay pinned ({pinned} under {})",
        own_links.display()
    );
    assert!(agent.terminate(), "policy-agent run exits 0 on SIGTERM");
}

/// Removes the older datapath's pins (and its empty version directory) however
/// the test ends.
struct Uninstall(std::path::PathBuf);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = Datapath::uninstall(&self.0);
        if let Some(version) = self.0.parent() {
            let _ = std::fs::remove_dir(version);
        }
    }
}
