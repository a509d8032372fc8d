//! The watch through the stand-in's failure modes: bookmarks, connections dropped
//! mid-stream (resumed from the resourceVersion), history compacted while
//! disconnected (410 Gone, then a relist), and a server that is down.

use std::{net::TcpListener, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1 as core;
use serde_json::json;

use super::{namespace, pair, pod, service, summary, Harness, PATIENCE};
use crate::support::apiserver::{ApiServer, Options, Resource};

fn pods_a_and_b(server: &ApiServer) {
    server.create(&pod("prod", "a", json!({"app": "a"}), "10.0.0.1"));
    server.create(&pod("prod", "b", json!({"app": "b"}), "10.0.0.2"));
}

/// Waits until every kind's watch is open.
async fn all_watching(server: &ApiServer) {
    let all_open = server
        .wait_until(PATIENCE, |s| s.open_watches() == Resource::ALL.len())
        .await;
    assert!(all_open, "open watches: {}", server.open_watches());
}

/// Once every kind watches, holds watch requests, drops the open watches and
/// waits until each kind's watch has come back and is held: the client is now
/// disconnected, each kind having watched twice.
async fn disconnect(server: &ApiServer) {
    all_watching(server).await;
    server.hold_watches(true);
    server.drop_watches();
    let all_held = server
        .wait_until(PATIENCE, |s| s.held_watches() == Resource::ALL.len())
        .await;
    assert!(all_held, "held watches: {}", server.held_watches());
}

#[tokio::test]
async fn bookmarks_publish_nothing_and_spare_a_resumed_watch_a_relist() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let options = Options {
        bookmark_interval: Duration::from_millis(20),
    };
    let server = ApiServer::serve(listener, options).unwrap_or_else(|e| panic!("stand-in: {e}"));
    pods_a_and_b(&server);
    let mut h = Harness::new(server).await;
    h.synced().await;

    h.snapshots.borrow_and_update();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !h.snapshots.has_changed().unwrap_or(true),
        "bookmarks published a snapshot: {}",
        summary(&h.snapshots.borrow())
    );

    // A Service moves the revision past every other kind's last event; only
    // bookmarks tell their watches. After compaction, a watch resumed from a
    // bookmark's resourceVersion is still valid: no 410, no relist.
    h.server
        .create(&service("prod", "a", json!({"app": "a"}), "10.96.0.1"));
    h.wait_for("the Service", |s| s.state.services.len() == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    all_watching(&h.server).await;
    h.server.compact();
    h.server.drop_watches();
    h.server
        .create(&pod("prod", "c", json!({"app": "c"}), "10.0.0.3"));
    let snapshot = h
        .pods_become(&["prod/a", "prod/b", "prod/c"], |_| true)
        .await;

    let resumed = h
        .server
        .wait_until(PATIENCE, |s| {
            s.open_watches() == Resource::ALL.len()
                && Resource::ALL.iter().all(|r| s.counts(*r).watches == 2)
        })
        .await;
    assert!(resumed, "{:?}", Resource::ALL.map(|r| h.server.counts(r)));
    for resource in Resource::ALL {
        let counts = h.server.counts(resource);
        assert_eq!(counts.lists, 1, "{resource:?} relisted: {counts:?}");
    }
    assert_eq!(snapshot.last_error, None, "{}", summary(&snapshot));
    assert_eq!(h.snapshots.borrow().last_error, None);
}

#[tokio::test]
async fn dropped_watch_connections_resume_from_their_resource_version() {
    let mut h = Harness::start().await;
    pods_a_and_b(&h.server);
    h.synced().await;

    disconnect(&h.server).await;
    h.server.delete::<core::Pod>("prod", "a");
    h.server
        .create(&pod("prod", "c", json!({"app": "c"}), "10.0.0.3"));
    h.server.hold_watches(false);
    h.pods_become(&["prod/b", "prod/c"], |_| true).await;

    // Dropped while watching, nothing held back: the next event still arrives.
    all_watching(&h.server).await;
    h.server.drop_watches();
    h.server
        .create(&pod("prod", "d", json!({"app": "d"}), "10.0.0.4"));
    let snapshot = h
        .pods_become(&["prod/b", "prod/c", "prod/d"], |_| true)
        .await;

    assert_eq!(
        snapshot.last_error, None,
        "a dropped connection is no error"
    );
    // Every kind's watch came back a third time (some may still be on their way).
    let resumed = h
        .server
        .wait_until(PATIENCE, |s| {
            s.open_watches() == Resource::ALL.len()
                && Resource::ALL.iter().all(|r| s.counts(*r).watches == 3)
        })
        .await;
    assert!(resumed, "{:?}", Resource::ALL.map(|r| h.server.counts(r)));
    for resource in Resource::ALL {
        let counts = h.server.counts(resource);
        assert_eq!(counts.lists, 1, "{resource:?} relisted: {counts:?}");
    }
    assert_eq!(h.snapshots.borrow().last_error, None);
}

#[tokio::test]
async fn history_compacted_while_disconnected_means_410_and_a_relist_that_converges() {
    let mut h = Harness::start().await;
    pods_a_and_b(&h.server);
    h.server.create(&namespace("prod", json!({"team": "a"})));
    h.synced().await;

    disconnect(&h.server).await;
    h.server.delete::<core::Pod>("prod", "a");
    h.server
        .update(&pod("prod", "b", json!({"app": "b", "v": "2"}), "10.0.0.2"));
    h.server
        .create(&pod("prod", "c", json!({"app": "c"}), "10.0.0.3"));
    h.server.delete::<core::Namespace>("", "prod");
    h.server.compact();
    h.server.hold_watches(false);

    let snapshot = h
        .pods_become(&["prod/b", "prod/c"], |state| {
            let b_labels = state.pods.get(&super::key("prod/b")).map(|b| &b.labels);
            let prod_labels = state.namespaces.get("prod").map(|ns| &ns.labels);
            b_labels.is_some_and(|labels| labels.contains_key("v"))
                && prod_labels.is_some_and(|labels| !labels.contains_key("team"))
        })
        .await;

    let error = snapshot.last_error.clone().unwrap_or_default();
    assert!(error.contains("too old resource version"), "{error}");
    // Every kind relists once (those without changes may still be on their way).
    let relisted = h
        .server
        .wait_until(PATIENCE, |s| {
            Resource::ALL.iter().all(|r| s.counts(*r).lists == 2)
        })
        .await;
    assert!(relisted, "{:?}", Resource::ALL.map(|r| h.server.counts(r)));
    assert_eq!(
        snapshot
            .state
            .namespaces
            .get("prod")
            .map(|ns| ns.labels.clone()),
        Some(
            [pair("kubernetes.io/metadata.name", "prod")]
                .into_iter()
                .collect()
        ),
        "the deleted Namespace object is gone; only the implied one is left"
    );
}

#[tokio::test]
async fn an_unavailable_server_makes_the_snapshot_stale_keeping_the_last_state_until_it_recovers() {
    let mut h = Harness::start().await;
    pods_a_and_b(&h.server);
    let before = h.synced().await;

    h.server.set_unavailable(true);
    let stale = h.wait_for("stale", |s| s.stale).await;
    assert!(
        Arc::ptr_eq(&stale.state, &before.state),
        "the last state is kept"
    );
    assert!(stale.synced, "synced stays true");
    assert!(stale.last_error.is_some());

    h.server.delete::<core::Pod>("prod", "b");
    h.server
        .create(&pod("prod", "c", json!({"app": "c"}), "10.0.0.3"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = h.snapshots.borrow().clone();
    assert!(during.stale, "{}", summary(&during));
    assert!(Arc::ptr_eq(&during.state, &before.state));

    h.server.set_unavailable(false);
    let recovered = h.pods_become(&["prod/a", "prod/c"], |_| true).await;
    assert!(
        recovered.last_error.is_some(),
        "the last error is kept after recovery"
    );
}
