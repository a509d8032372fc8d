//! `source::api_server::watch_cluster_with` driving the real kube client against the stand-in
//! API server (`support::apiserver`, crate `stand-in-apiserver`) on 127.0.0.1: the initial sync, each kind's
//! changes, trimming, fail-closed conversion and objects over a cap here; resumed watches, 410 Gone,
//! dropped connections, bookmarks and an unavailable server in
//! `source/failures.rs`. No root needed: no lab, no BPF.

mod support;

#[path = "source/failures.rs"]
mod failures;

#[path = "source/cluster_policies.rs"]
mod cluster_policies;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{core::v1 as core, networking::v1 as net};
use kube::config::{KubeConfigOptions, Kubeconfig};
use policy_agent::{
    model::{ClusterState, ObjectRef, PolicyTypes, Protocol},
    policy::evaluator::{evaluate, End, Query},
    source::{
        api_server::{watch_cluster_with, ClusterWatch, SourceSnapshot, WatchOptions},
        convert,
    },
};
use serde_json::{json, Value};
use support::apiserver::{ApiServer, Resource};
use tokio::sync::watch::Receiver;

/// How long a test waits for the snapshot to reach what it expects.
const PATIENCE: Duration = Duration::from_secs(10);

/// A stand-in with a watch on it.
struct Harness {
    server: ApiServer,
    watch: ClusterWatch,
    snapshots: Receiver<SourceSnapshot>,
    _kubeconfig: tempfile::NamedTempFile,
}

impl Harness {
    /// Watches `server` through a client built from its kubeconfig, with a short
    /// backoff (20-200 ms) so recovery shows quickly.
    async fn new(server: ApiServer) -> Harness {
        let kubeconfig = server
            .write_kubeconfig()
            .unwrap_or_else(|e| panic!("kubeconfig: {e}"));
        let config = Kubeconfig::read_from(kubeconfig.path())
            .unwrap_or_else(|e| panic!("reading the kubeconfig: {e}"));
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("kube config from the kubeconfig: {e}"));
        let client = kube::Client::try_from(config).unwrap_or_else(|e| panic!("client: {e}"));
        let options = WatchOptions {
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
        };
        let watch = watch_cluster_with(client, options);
        let snapshots = watch.receiver();
        Harness {
            server,
            watch,
            snapshots,
            _kubeconfig: kubeconfig,
        }
    }

    /// Starts a stand-in with default options and watches it.
    async fn start() -> Harness {
        Harness::new(ApiServer::start().unwrap_or_else(|e| panic!("stand-in: {e}"))).await
    }

    /// Waits for a snapshot for which `condition` holds, failing the test with
    /// `what` and the last snapshot after `PATIENCE`.
    async fn wait_for(
        &mut self,
        what: &str,
        condition: impl Fn(&SourceSnapshot) -> bool,
    ) -> SourceSnapshot {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            {
                let snapshot = self.snapshots.borrow_and_update();
                if condition(&snapshot) {
                    return snapshot.clone();
                }
            }
            let changed = tokio::time::timeout_at(deadline, self.snapshots.changed()).await;
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("{what}: the snapshot channel closed"),
                Err(_) => panic!(
                    "{what}: not reached within {PATIENCE:?}; last snapshot: {}",
                    summary(&self.snapshots.borrow())
                ),
            }
        }
    }

    /// Waits for the first synced snapshot.
    async fn synced(&mut self) -> SourceSnapshot {
        self.wait_for("initial sync", |s| s.synced).await
    }

    /// Waits until the state holds exactly the pods `names` (`namespace/name`),
    /// the watch is not stale, and `also` holds.
    async fn pods_become(
        &mut self,
        names: &[&str],
        also: impl Fn(&ClusterState) -> bool,
    ) -> SourceSnapshot {
        let wanted: Vec<ObjectRef> = names.iter().map(|name| key(name)).collect();
        let what = format!("pods {names:?}, not stale");
        self.wait_for(&what, |s| {
            !s.stale && s.state.pods.keys().cloned().collect::<Vec<_>>() == wanted && also(&s.state)
        })
        .await
    }
}

fn ok<T>(result: Result<T, convert::ConvertError>) -> T {
    result.unwrap_or_else(|e| panic!("fixture converts: {e}"))
}

/// A snapshot in one line, for failure messages.
fn summary(snapshot: &SourceSnapshot) -> String {
    let state = &snapshot.state;
    format!(
        "synced={} stale={} last_error={:?} errors={:?} namespaces={:?} pods={:?} \
         policies={:?} services={:?} cluster_policies={:?} nodes={:?}",
        snapshot.synced,
        snapshot.stale,
        snapshot.last_error,
        snapshot.conversion_errors,
        state.namespaces.keys().collect::<Vec<_>>(),
        state
            .pods
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        state
            .policies
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        state
            .services
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        state.cluster_policies.keys().collect::<Vec<_>>(),
        state.nodes.keys().collect::<Vec<_>>(),
    )
}

fn key(text: &str) -> ObjectRef {
    match text.split_once('/') {
        Some((namespace, name)) => ObjectRef::new(namespace, name),
        None => ObjectRef::new("", text),
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("fixture: {e}"))
}

fn namespace(name: &str, labels: Value) -> core::Namespace {
    typed(json!({"metadata": {"name": name, "labels": labels}}))
}

/// A running pod on node-a with `ip` and a named port `http` (8080).
fn pod(namespace: &str, name: &str, labels: Value, ip: &str) -> core::Pod {
    typed(json!({
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "annotations": {"note": "dropped by trimming"}},
        "spec": {"nodeName": "node-a", "containers": [
            {"name": "app", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}
        ]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
}

fn service(namespace: &str, name: &str, selector: Value, cluster_ip: &str) -> core::Service {
    typed(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector, "clusterIP": cluster_ip,
                 "ports": [{"port": 80, "targetPort": "http"}]}
    }))
}

/// Ingress to pods labelled `app: <app>` from pods labelled `role: client`.
fn policy(namespace: &str, name: &str, app: &str) -> net::NetworkPolicy {
    typed(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                              "ports": [{"port": "http"}]}]}
    }))
}

fn labels(snapshot: &SourceSnapshot, pod: &str) -> Option<Vec<(String, String)>> {
    let pod = snapshot.state.pods.get(&key(pod))?;
    Some(pod.labels.clone().into_iter().collect())
}

/// The value of `label` on the namespace `name`, if both exist.
fn namespace_label<'a>(snapshot: &'a SourceSnapshot, name: &str, label: &str) -> Option<&'a str> {
    let namespace = snapshot.state.namespaces.get(name)?;
    namespace.labels.get(label).map(String::as_str)
}

/// The value of `label` in the selector of the Service `name`, if all exist.
fn service_selector<'a>(snapshot: &'a SourceSnapshot, name: &str, label: &str) -> Option<&'a str> {
    let service = snapshot.state.services.get(&key(name))?;
    service.selector.as_ref()?.get(label).map(String::as_str)
}

fn pair(key: &str, value: &str) -> (String, String) {
    (key.to_string(), value.to_string())
}

#[tokio::test]
async fn the_initial_sync_converts_every_kind_through_convert() {
    let server = ApiServer::start().unwrap_or_else(|e| panic!("stand-in: {e}"));
    server.create(&namespace("prod", json!({"team": "a"})));
    let web = pod("prod", "web", json!({"app": "web"}), "10.0.0.1");
    server.create(&web);
    server.create(&pod("dev", "tool", json!({"app": "tool"}), "10.0.1.1"));
    let svc = service("prod", "web", json!({"app": "web"}), "10.96.0.10");
    server.create(&svc);
    let np = policy("prod", "web-in", "web");
    server.create(&np);
    let mut harness = Harness::new(server).await;

    let snapshot = harness.synced().await;

    assert!(!snapshot.stale, "{}", summary(&snapshot));
    assert_eq!(snapshot.last_error, None);
    assert!(snapshot.conversion_errors.is_empty());
    assert!(snapshot.changed.is_some());
    let state = &snapshot.state;
    assert_eq!(
        state.pods.get(&key("prod/web")),
        Some(&ok(convert::pod(&web)))
    );
    assert_eq!(
        state.services.get(&key("prod/web")),
        Some(&ok(convert::service(&svc)))
    );
    assert_eq!(
        state.policies.get(&key("prod/web-in")),
        Some(&ok(convert::network_policy(&np)))
    );
    let prod = state.namespaces.get("prod").map(|ns| ns.labels.clone());
    let expected = [
        pair("kubernetes.io/metadata.name", "prod"),
        pair("team", "a"),
    ];
    assert_eq!(prod, Some(expected.into_iter().collect()));
    assert!(
        state.namespaces.contains_key("dev"),
        "a namespace only a pod names is implied"
    );
    for resource in Resource::ALL {
        assert_eq!(harness.server.counts(resource).lists, 1, "{resource:?}");
    }
}

#[tokio::test]
async fn a_list_longer_than_a_page_is_read_whole() {
    let server = ApiServer::start().unwrap_or_else(|e| panic!("stand-in: {e}"));
    for i in 0..1201 {
        let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        server.create(&pod(
            "bulk",
            &format!("p{i:04}"),
            json!({"i": i.to_string()}),
            &ip,
        ));
    }
    let mut harness = Harness::new(server).await;

    let snapshot = harness.synced().await;

    assert_eq!(snapshot.state.pods.len(), 1201);
    // kube-runtime's watcher lists 500 objects a page.
    let counts = harness.server.counts(Resource::Pods);
    assert_eq!((counts.lists, counts.pages), (1, 3));
}

#[tokio::test]
async fn creates_updates_and_deletes_of_every_kind_reach_the_snapshot() {
    let mut h = Harness::start().await;
    h.synced().await;

    h.server.create(&namespace("prod", json!({"team": "a"})));
    h.server
        .create(&pod("prod", "web", json!({"app": "web"}), "10.0.0.1"));
    h.server
        .create(&service("prod", "web", json!({"app": "web"}), "10.96.0.10"));
    h.server.create(&policy("prod", "web-in", "web"));
    let created = h
        .wait_for("one object of each kind", |s| {
            s.state.pods.len() == 1
                && s.state.services.len() == 1
                && s.state.policies.len() == 1
                && namespace_label(s, "prod", "team") == Some("a")
        })
        .await;

    h.server.update(&namespace("prod", json!({"team": "b"})));
    h.server.update(&pod(
        "prod",
        "web",
        json!({"app": "web", "v": "2"}),
        "10.0.0.1",
    ));
    h.server
        .update(&service("prod", "web", json!({"app": "api"}), "10.96.0.10"));
    h.server.update(&policy("prod", "web-in", "api"));
    let updated = h
        .wait_for("every object updated", |s| {
            let selects_api = |np: &policy_agent::model::NetworkPolicy| {
                np.pod_selector.match_labels.get("app").map(String::as_str) == Some("api")
            };
            namespace_label(s, "prod", "team") == Some("b")
                && labels(s, "prod/web").is_some_and(|l| l.contains(&pair("v", "2")))
                && service_selector(s, "prod/web", "app") == Some("api")
                && s.state
                    .policies
                    .get(&key("prod/web-in"))
                    .is_some_and(selects_api)
        })
        .await;
    assert!(updated.changed > created.changed, "changed moves forward");

    h.server.delete::<net::NetworkPolicy>("prod", "web-in");
    h.server.delete::<core::Service>("prod", "web");
    h.server.delete::<core::Pod>("prod", "web");
    h.server.delete::<core::Namespace>("", "prod");
    let emptied = h
        .wait_for("everything deleted", |s| {
            s.state.pods.is_empty()
                && s.state.services.is_empty()
                && s.state.policies.is_empty()
                && s.state.namespaces.is_empty()
        })
        .await;
    assert!(
        !emptied.stale && emptied.last_error.is_none(),
        "{}",
        summary(&emptied)
    );
}

#[tokio::test]
async fn a_pod_label_change_publishes_and_a_status_only_change_does_not() {
    let mut h = Harness::start().await;
    h.server
        .create(&pod("prod", "web", json!({"app": "web"}), "10.0.0.1"));
    let synced = h.synced().await;

    // Readiness flips: nothing convert reads changes, so no new snapshot.
    let mut not_ready = pod("prod", "web", json!({"app": "web"}), "10.0.0.1");
    if let Some(status) = not_ready.status.as_mut() {
        status.conditions = Some(vec![typed(json!({"type": "Ready", "status": "False"}))]);
    }
    h.server.update(&not_ready);
    h.server.update(&pod(
        "prod",
        "web",
        json!({"app": "web", "tier": "front"}),
        "10.0.0.1",
    ));
    let relabelled = h
        .wait_for("the new label", |s| {
            labels(s, "prod/web").is_some_and(|l| l.contains(&pair("tier", "front")))
        })
        .await;
    assert!(relabelled.changed > synced.changed);

    let before = h.snapshots.borrow_and_update().clone();
    h.server.update(&not_ready_with(&["app=web", "tier=front"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !h.snapshots.has_changed().unwrap_or(true),
        "a status-only update published a snapshot"
    );
    assert!(Arc::ptr_eq(&before.state, &h.snapshots.borrow().state));
}

/// prod/web with `labels` (`k=v`), not ready.
fn not_ready_with(labels: &[&str]) -> core::Pod {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut pod = pod("prod", "web", Value::Object(labels), "10.0.0.1");
    if let Some(status) = pod.status.as_mut() {
        status.conditions = Some(vec![typed(json!({"type": "Ready", "status": "False"}))]);
    }
    pod
}

/// `db` in prod whose port name the API server would reject.
fn bad_policy() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                 "policyTypes": ["Ingress", "Egress"],
                 "ingress": [{"ports": [{"port": "Not_A_Name"}]}]}
    })
}

fn query(src: &str, dst: &str) -> Query {
    Query {
        src: End::Pod(key(src)),
        dst: End::Pod(key(dst)),
        protocol: Protocol::Tcp,
        port: 8080,
    }
}

#[tokio::test]
async fn a_network_policy_that_does_not_convert_isolates_its_namespace_until_fixed() {
    let mut h = Harness::start().await;
    h.server
        .create(&pod("prod", "web", json!({"app": "web"}), "10.0.0.1"));
    h.server
        .create(&pod("prod", "db", json!({"app": "db"}), "10.0.0.2"));
    h.server.create(&pod(
        "other",
        "client",
        json!({"role": "client"}),
        "10.0.1.1",
    ));
    h.server.create_value(bad_policy());
    let mut broken_pod = pod("prod", "broken", json!({}), "10.0.0.3");
    if let Some(status) = broken_pod.status.as_mut() {
        status.pod_ip = Some("not-an-ip".into());
        status.pod_ips = None;
    }
    h.server.create(&broken_pod);

    let snapshot = h.synced().await;

    let errors = &snapshot.conversion_errors;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("NetworkPolicy prod/db: spec.ingress[0].ports[0].port:")
            && errors[0].contains("fail closed"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("Pod prod/broken: status.podIP:"),
        "{errors:?}"
    );
    assert!(!snapshot.state.pods.contains_key(&key("prod/broken")));
    let stand_in = &snapshot.state.policies[&key("prod/db")];
    let both = PolicyTypes {
        ingress: true,
        egress: true,
    };
    assert_eq!(stand_in.policy_types, both);
    for (src, dst) in [("other/client", "prod/web"), ("prod/web", "other/client")] {
        let verdict = evaluate(&snapshot.state, &query(src, dst));
        assert!(!verdict.allowed, "{src} -> {dst} passes: {verdict:?}");
    }
    assert!(evaluate(&snapshot.state, &query("other/client", "other/client")).allowed);

    let mut fixed = bad_policy();
    fixed["spec"]["ingress"][0]["ports"][0]["port"] = json!("http");
    h.server.update_value(fixed);
    let snapshot = h
        .wait_for("the fixed policy", |s| s.conversion_errors.len() == 1)
        .await;
    assert!(
        snapshot.conversion_errors[0].starts_with("Pod prod/broken"),
        "{:?}",
        snapshot.conversion_errors
    );
    // The fixed policy selects only app=db: web is no longer isolated.
    for (src, dst) in [("other/client", "prod/web"), ("prod/web", "other/client")] {
        let verdict = evaluate(&snapshot.state, &query(src, dst));
        assert!(verdict.allowed, "{src} -> {dst} dropped: {verdict:?}");
    }
}

#[tokio::test]
async fn objects_over_a_cap_stand_in_fail_closed_through_the_watch_and_recover_when_fixed() {
    let mut h = Harness::start().await;
    h.server
        .create(&pod("prod", "web", json!({"app": "web"}), "10.0.0.1"));
    let too_many: serde_json::Map<String, Value> = (0..=convert::caps::MAX_LABELS)
        .map(|i| (format!("k{i}"), json!("v")))
        .collect();
    h.server
        .create(&pod("prod", "labels", Value::Object(too_many), "10.0.0.5"));
    h.server.create(&pod(
        "other",
        "client",
        json!({"role": "client"}),
        "10.0.1.1",
    ));
    let rules = vec![json!({}); convert::caps::MAX_POLICY_RULES + 1];
    h.server.create_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "big", "namespace": "other"},
        "spec": {"podSelector": {}, "ingress": rules}
    }));
    let snapshot = h.synced().await;
    let errors = &snapshot.conversion_errors;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "NetworkPolicy other/big: spec: {} rules, over the cap of {}",
            convert::caps::MAX_POLICY_RULES + 1,
            convert::caps::MAX_POLICY_RULES
        )),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("Pod prod/labels: metadata.labels: 257 labels, over the cap of 256"),
        "{errors:?}"
    );
    assert_eq!(
        snapshot.over_cap,
        std::collections::BTreeMap::from([("NetworkPolicy", 1), ("Pod", 1)])
    );
    // The pod is an address-less stub, its namespace and the policy's isolated.
    let stub = &snapshot.state.pods[&key("prod/labels")];
    assert!(stub.ips.is_empty() && stub.labels.is_empty(), "{stub:?}");
    assert!(snapshot
        .state
        .policies
        .contains_key(&key("prod/podwall:over-cap")));
    assert!(snapshot.state.policies[&key("other/big")]
        .ingress
        .is_empty());
    for (src, dst) in [("other/client", "prod/web"), ("prod/web", "other/client")] {
        let verdict = evaluate(&snapshot.state, &query(src, dst));
        assert!(!verdict.allowed, "{src} -> {dst} passes: {verdict:?}");
    }

    // Fixed, both are themselves again.
    h.server
        .update(&pod("prod", "labels", json!({"app": "labels"}), "10.0.0.5"));
    h.server.update_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "big", "namespace": "other"},
        "spec": {"podSelector": {}, "ingress": [{}]}
    }));
    let snapshot = h
        .wait_for("the fixed objects", |s| s.conversion_errors.is_empty())
        .await;
    assert!(snapshot.over_cap.is_empty());
    assert_eq!(snapshot.state.pods[&key("prod/labels")].ips.len(), 1);
    assert!(!snapshot
        .state
        .policies
        .contains_key(&key("prod/podwall:over-cap")));
    assert!(evaluate(&snapshot.state, &query("other/client", "prod/web")).allowed);
}

#[tokio::test]
async fn dropping_the_cluster_watch_closes_the_snapshot_channel() {
    let mut h = Harness::start().await;
    h.synced().await;
    let mut receiver = h.watch.receiver();
    drop(h.watch);
    let closed = tokio::time::timeout(PATIENCE, async {
        while receiver.changed().await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "the channel stayed open after the drop");
    drop(h.snapshots);
}
