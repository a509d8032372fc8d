//! The kept state brought up to date notice by notice must be what converting
//! every stored object gives, after every batch of changes.

#![expect(
    clippy::expect_used,
    reason = "a malformed test fixture should fail the test"
)]

use kube::runtime::{reflector::store::Writer, watcher::Event};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::source::convert::caps::OVER_CAP_ANNOTATION;

/// The four stores and the writers that fill them, as the watches would.
struct TestStores {
    namespaces: Writer<core::Namespace>,
    pods: Writer<SlimPod>,
    policies: Writer<net::NetworkPolicy>,
    services: Writer<SlimService>,
    stores: Stores,
}

impl TestStores {
    fn new() -> Self {
        let (namespaces, pods, policies, services) = (
            Writer::default(),
            Writer::default(),
            Writer::default(),
            Writer::default(),
        );
        let stores = Stores {
            namespaces: namespaces.as_reader(),
            pods: pods.as_reader(),
            policies: policies.as_reader(),
            services: services.as_reader(),
        };
        Self {
            namespaces,
            pods,
            policies,
            services,
            stores,
        }
    }

    /// Applies `op` to its store; the object it changed.
    fn apply(&mut self, op: &Op) -> ChangedObject {
        let namespace = (op.kind != 0).then(|| NAMESPACES[op.namespace].to_string());
        let name = format!("{}{}", ["ns", "pod", "np", "svc"][op.kind], op.index);
        let name = if op.kind == 0 {
            NAMESPACES[op.index % 2].to_string()
        } else {
            name
        };
        let namespace = namespace.filter(|ns| !ns.is_empty());
        let mut meta = json!({"name": name});
        if let Some(namespace) = &namespace {
            meta["namespace"] = json!(namespace);
        }
        if op.variant == Some(3) {
            meta["annotations"] = json!({OVER_CAP_ANNOTATION: "spec: over the cap (test)"});
        }
        let variant = op.variant.unwrap_or(0);
        let object = match op.kind {
            0 => json!({"metadata": with(meta, "labels", json!({"team": variant.to_string()}))}),
            1 => {
                let ip = match variant {
                    1 => "10.0.0.999".to_string(),
                    _ => format!(
                        "10.0.{}.{}",
                        op.namespace,
                        op.index + 10 * usize::from(variant)
                    ),
                };
                json!({
                    "metadata": with(meta, "labels", json!({"app": variant.to_string()})),
                    "spec": {"nodeName": "node-a", "containers": [{"name": "c"}]},
                    "status": {"phase": "Running", "podIP": ip}
                })
            }
            2 => {
                let port = if variant == 1 {
                    json!("Not_A_Name")
                } else {
                    json!(80 + variant)
                };
                json!({
                    "metadata": meta,
                    "spec": {"podSelector": {"matchLabels": {"app": "0"}},
                             "ingress": [{"ports": [{"port": port}]}]}
                })
            }
            _ => {
                let cluster_ip = if variant == 1 {
                    "not-an-address".to_string()
                } else {
                    format!("10.96.{}.{}", op.index, variant)
                };
                json!({
                    "metadata": meta,
                    "spec": {"selector": {"app": variant.to_string()}, "clusterIP": cluster_ip,
                             "ports": [{"port": 80}]}
                })
            }
        };
        match op.kind {
            0 => event(&mut self.namespaces, object, op.variant.is_some()),
            1 => event(&mut self.pods, object, op.variant.is_some()),
            2 => event(&mut self.policies, object, op.variant.is_some()),
            _ => event(&mut self.services, object, op.variant.is_some()),
        }
        ChangedObject {
            kind: ["Namespace", "Pod", "NetworkPolicy", "Service"][op.kind],
            namespace,
            name,
        }
    }
}

/// The namespaces objects live in: two that a Namespace may declare, one that
/// none does, and none (the `default` namespace).
const NAMESPACES: [&str; 4] = ["a", "b", "c", ""];

fn with(mut meta: Value, field: &str, value: Value) -> Value {
    meta[field] = value;
    meta
}

fn event<K: Watched>(writer: &mut Writer<K>, object: Value, apply: bool) {
    let object: K = serde_json::from_value(object).expect("fixture has the shape of its kind");
    let event = if apply {
        Event::Apply(object)
    } else {
        Event::Delete(object)
    };
    writer.apply_watcher_event(&event);
}

/// One object changed: its kind (Namespace, Pod, NetworkPolicy, Service), which
/// of a few of its kind, its namespace, and what it becomes: `None` deleted; 0
/// and 2 two good versions; 1 one that does not convert (a NetworkPolicy's
/// stands in fail-closed); 3 one over a cap.
#[derive(Clone, Debug)]
struct Op {
    kind: usize,
    index: usize,
    namespace: usize,
    variant: Option<u8>,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0usize..4,
        0usize..3,
        0usize..4,
        prop_oneof![3 => (0u8..3).prop_map(Some), 1 => Just(Some(3)), 2 => Just(None)],
    )
        .prop_map(|(kind, index, namespace, variant)| Op {
            kind,
            index,
            namespace,
            variant,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After every batch the kept state, its errors and its over-cap counts
    /// are the whole rebuild's, and only something over a cap made it rebuild.
    #[test]
    fn a_kept_state_updated_by_batches_is_the_whole_rebuild(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 1..4), 1..25),
    ) {
        let mut stores = TestStores::new();
        let mut kept = stores.stores.build();
        for batch in batches {
            let changed: BTreeSet<ChangedObject> =
                batch.iter().map(|op| stores.apply(op)).collect();
            let clear_before = kept.over_cap().is_empty();
            let updated = stores.stores.update(&mut kept, &changed);
            let whole = stores.stores.build();
            match updated {
                Ok(()) => {
                    prop_assert_eq!(kept.state(), whole.state());
                    prop_assert_eq!(kept.errors(), whole.errors());
                    prop_assert_eq!(kept.over_cap(), whole.over_cap());
                }
                Err(NeedsRebuild) => {
                    prop_assert!(
                        !(clear_before && whole.over_cap().is_empty()),
                        "rebuilt though nothing was over a cap: {:?}",
                        batch
                    );
                    kept = whole;
                }
            }
        }
    }
}

#[test]
fn a_pod_change_converts_only_that_pod_and_shares_the_rest() {
    let mut stores = TestStores::new();
    for index in 0..200 {
        stores.apply(&Op {
            kind: 1,
            index,
            namespace: 0,
            variant: Some(0),
        });
    }
    let mut kept = stores.stores.build();
    let before = kept.state().clone();
    let relabelled = stores.apply(&Op {
        kind: 1,
        index: 7,
        namespace: 0,
        variant: Some(2),
    });
    let changed = BTreeSet::from([relabelled]);
    assert_eq!(stores.stores.update(&mut kept, &changed), Ok(()));
    let changes = before.changes(kept.state());
    let pod = crate::model::ObjectRef::new("a", "pod7");
    assert_eq!(changes.pods.len(), 1, "{changes:?}");
    assert_eq!(changes.pods[0].0, pod);
    assert_eq!(changes.kinds(), 1);
    assert_eq!(*kept.state(), stores.stores.build().state().clone());
}

#[test]
fn a_namespace_deleted_under_its_pods_becomes_implicit_and_goes_with_the_last() {
    let mut stores = TestStores::new();
    let declared = Op {
        kind: 0,
        index: 0,
        namespace: 0,
        variant: Some(2),
    };
    let pod = Op {
        kind: 1,
        index: 0,
        namespace: 0,
        variant: Some(0),
    };
    stores.apply(&declared);
    stores.apply(&pod);
    let mut kept = stores.stores.build();
    assert_eq!(
        kept.state().namespaces["a"]
            .labels
            .get("team")
            .map(String::as_str),
        Some("2")
    );
    let gone = |op: &Op| Op {
        variant: None,
        ..op.clone()
    };
    let changed = BTreeSet::from([stores.apply(&gone(&declared))]);
    assert_eq!(stores.stores.update(&mut kept, &changed), Ok(()));
    assert_eq!(
        kept.state().namespaces["a"],
        crate::model::Namespace::implicit("a")
    );
    let changed = BTreeSet::from([stores.apply(&gone(&pod))]);
    assert_eq!(stores.stores.update(&mut kept, &changed), Ok(()));
    assert!(kept.state().namespaces.get("a").is_none());
    assert_eq!(*kept.state(), stores.stores.build().state().clone());
}
