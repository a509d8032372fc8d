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
use proptest::test_runner::TestCaseError;

/// The four stores and the writers that fill them, as the watches would.
struct TestStores {
    namespaces: Writer<core::Namespace>,
    pods: Writer<SlimPod>,
    policies: Writer<net::NetworkPolicy>,
    services: Writer<SlimService>,
    cluster_policies: Writer<ClusterNetworkPolicy>,
    nodes: Writer<core::Node>,
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
        let (cluster_policies, nodes) = (Writer::default(), Writer::default());
        let stores = Stores {
            namespaces: namespaces.as_reader(),
            pods: pods.as_reader(),
            policies: policies.as_reader(),
            services: services.as_reader(),
            cluster_policies: cluster_policies.as_reader(),
            nodes: nodes.as_reader(),
        };
        Self {
            namespaces,
            pods,
            policies,
            services,
            cluster_policies,
            nodes,
            stores,
        }
    }

    /// Applies `op` to its store; the object it changed.
    fn apply(&mut self, op: &Op) -> ChangedObject {
        let (name, namespace) = if matches!(op.kind, 0 | 4 | 5) {
            // A cluster-scoped kind; an odd one (`SourceKey::odd`) has a
            // namespace, even an empty one.
            let odd = match op.namespace {
                4 => Some(String::new()),
                5 => Some("x".to_string()),
                _ => None,
            };
            let name = match op.kind {
                0 => NAMESPACE_NAMES[op.index % 4].to_string(),
                4 => format!("cnp{}", op.index),
                _ => format!("node{}", op.index),
            };
            (name, odd)
        } else {
            let name = format!("{}{}", ["ns", "pod", "np", "svc"][op.kind], op.index);
            (name, NAMESPACES[op.namespace].map(str::to_string))
        };
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
            4 => {
                let tier = if variant == 1 { "Middle" } else { "Admin" };
                json!({
                    "metadata": meta,
                    "spec": {"tier": tier, "priority": variant, "subject": {"namespaces": {}},
                             "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}
                })
            }
            5 => {
                let address = if variant == 1 {
                    "not-an-address".to_string()
                } else {
                    format!("192.168.{}.{}", op.index, variant)
                };
                json!({
                    "metadata": with(meta, "labels", json!({"zone": variant.to_string()})),
                    "status": {"addresses": [{"type": "InternalIP", "address": address}]}
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
            3 => event(&mut self.services, object, op.variant.is_some()),
            4 => event(&mut self.cluster_policies, object, op.variant.is_some()),
            _ => event(&mut self.nodes, object, op.variant.is_some()),
        }
        ChangedObject {
            kind: [
                "Namespace",
                "Pod",
                "NetworkPolicy",
                "Service",
                "ClusterNetworkPolicy",
                "Node",
            ][op.kind],
            namespace,
            name,
        }
    }
}

/// The names Namespaces have.
const NAMESPACE_NAMES: [&str; 4] = ["a", "b", "c", "default"];

/// The namespaces objects live in, as their metadata says: the first four
/// normal, the last two odd (`SourceKey::odd`: no namespace, an empty one).
const NAMESPACES: [Option<&str>; 6] = [
    Some("a"),
    Some("b"),
    Some("c"),
    Some("default"),
    None,
    Some(""),
];

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

/// One object changed: its kind (Namespace, Pod, NetworkPolicy, Service,
/// ClusterNetworkPolicy, Node), which of a few of its kind, its namespace
/// (`NAMESPACES`; for a cluster-scoped kind, 4 and 5 are odd ones), and what it
/// becomes: `None` deleted; 0 and 2 two good versions; 1 one that does not
/// convert (a NetworkPolicy's and a ClusterNetworkPolicy's stand in fail-closed;
/// a Node's address is left out); 3 one over a cap.
#[derive(Clone, Debug)]
struct Op {
    kind: usize,
    index: usize,
    namespace: usize,
    variant: Option<u8>,
}

/// Ops in the first `namespaces` of `NAMESPACES`, over a cap one time in
/// `over_cap` (never with 0).
fn op(namespaces: usize, over_cap: u32) -> impl Strategy<Value = Op> {
    let variant = prop_oneof![
        8 => (0u8..3).prop_map(Some),
        over_cap => Just(Some(3)),
        4 => Just(None),
    ];
    (0usize..6, 0usize..4, 0usize..namespaces, variant).prop_map(
        |(kind, index, namespace, variant)| Op {
            kind,
            index,
            namespace,
            variant,
        },
    )
}

fn batches(namespaces: usize, over_cap: u32) -> impl Strategy<Value = Vec<Vec<Op>>> {
    proptest::collection::vec(
        proptest::collection::vec(op(namespaces, over_cap), 1..4),
        1..30,
    )
}

/// Runs `batches` through a kept state made by `builder()` and a whole
/// rebuild by another after each: equal whenever the kept state took the
/// batch, and it took every batch it can (`KeptState::takes_changes`, no odd
/// key changed, no count cap crossed).
fn check(batches: Vec<Vec<Op>>, builder: impl Fn() -> StateBuilder) -> Result<(), TestCaseError> {
    let mut stores = TestStores::new();
    let mut kept = stores.stores.build_with(builder());
    for batch in batches {
        let changed: BTreeSet<ChangedObject> = batch.iter().map(|op| stores.apply(op)).collect();
        let took_before = kept.takes_changes();
        let odd = changed.iter().any(|object| SourceKey::from(object).odd());
        let updated = stores.stores.update(&mut kept, &changed);
        let whole = stores.stores.build_with(builder());
        match updated {
            Ok(()) => {
                prop_assert_eq!(kept.state(), whole.state());
                prop_assert_eq!(kept.errors(), whole.errors());
                prop_assert_eq!(kept.over_cap(), whole.over_cap());
                prop_assert!(kept.takes_changes() == whole.takes_changes());
            }
            Err(NeedsRebuild) => {
                prop_assert!(
                    !(took_before && !odd && whole.takes_changes()),
                    "rebuilt though it could take the batch: {:?}",
                    batch
                );
                kept = whole;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Normal keys and conversions, no caps: every batch is taken.
    #[test]
    fn a_kept_state_takes_every_batch_as_a_whole_rebuild_would(batches in batches(4, 0)) {
        check(batches, StateBuilder::default)?;
    }

    /// Objects over a cap and odd keys come and go.
    #[test]
    fn a_kept_state_over_a_cap_or_with_odd_keys_is_rebuilt_until_they_go(batches in batches(6, 1)) {
        check(batches, StateBuilder::default)?;
    }

    /// Count caps of two or three objects per kind, crossed both ways.
    #[test]
    fn a_kept_state_at_its_count_caps_is_the_whole_rebuild(batches in batches(4, 0)) {
        check(batches, || StateBuilder::with_count_caps(2, 3, 2, 2).with_cluster_policy_cap(2))?;
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

/// A batch arriving now: `listed` whether a list completed, `objects` what
/// changed.
fn batch(listed: bool, objects: impl IntoIterator<Item = ChangedObject>) -> Batch {
    Batch {
        changed: Some(Instant::now()),
        objects: objects.into_iter().collect(),
        listed,
        error: None,
        refusal: None,
    }
}

/// Every kind listed, nothing failing.
fn listed() -> BTreeMap<&'static str, KindStatus> {
    kinds()
        .into_iter()
        .map(|kind| {
            let status = KindStatus {
                listed: true,
                failing: false,
                refused: false,
            };
            (kind, status)
        })
        .collect()
}

#[test]
fn snapshots_take_changes_into_the_kept_state_and_rebuild_after_a_list() {
    let mut stores = TestStores::new();
    let pod = |index, variant| Op {
        kind: 1,
        index,
        namespace: 0,
        variant: Some(variant),
    };
    stores.apply(&pod(0, 0));
    let mut kept = None;
    let first = batch(true, []);
    let snapshot = next_snapshot(
        &stores.stores,
        &mut kept,
        &listed(),
        first,
        SourceSnapshot::default(),
    );
    assert!(snapshot.synced);
    assert_eq!(snapshot.state.pods.len(), 1);

    // A changed pod goes into the kept state; the state handed on is equal to
    // a whole rebuild.
    let changed = stores.apply(&pod(1, 0));
    let changed = batch(false, [changed]);
    let next = next_snapshot(
        &stores.stores,
        &mut kept,
        &listed(),
        changed,
        snapshot.clone(),
    );
    assert_eq!(*next.state, *stores.stores.build().state());
    assert_eq!(next.state.pods.len(), 2);
    assert_ne!(next.changed, snapshot.changed);

    // A store changed behind the kept state's back (no notice) shows only
    // after a list, which rebuilds whole.
    stores.apply(&pod(2, 0));
    let unnoticed = batch(false, []);
    let same = next_snapshot(
        &stores.stores,
        &mut kept,
        &listed(),
        unnoticed,
        next.clone(),
    );
    assert!(
        Arc::ptr_eq(&same.state, &next.state),
        "nothing it was told of changed"
    );
    let relist = batch(true, []);
    let rebuilt = next_snapshot(&stores.stores, &mut kept, &listed(), relist, same);
    assert_eq!(rebuilt.state.pods.len(), 3);
    assert_eq!(*rebuilt.state, *stores.stores.build().state());

    // A relist that changes nothing keeps the state handed on, and the kept
    // state goes on sharing its maps with it.
    let again = next_snapshot(
        &stores.stores,
        &mut kept,
        &listed(),
        batch(true, []),
        rebuilt.clone(),
    );
    assert!(Arc::ptr_eq(&again.state, &rebuilt.state));
    let kept_pods = &kept
        .as_ref()
        .map(|kept| kept.state().pods.clone())
        .unwrap_or_default();
    assert!(
        kept_pods.ptr_eq(&rebuilt.state.pods),
        "shares the maps handed on"
    );
}

#[test]
fn a_refusal_is_said_while_its_kind_is_refused_and_gone_once_it_lists() {
    let stores = TestStores::new();
    let mut kept = None;
    let mut status = listed();
    let mut refused = Batch::default();
    let failed = |refused| Notice::Failed {
        kind: "Pod",
        error: "403 Forbidden".into(),
        refused,
    };
    fold(&mut refused, &mut status, failed(true));
    let snapshot = next_snapshot(
        &stores.stores,
        &mut kept,
        &status,
        refused,
        SourceSnapshot::default(),
    );
    assert_eq!(
        snapshot.refused.as_deref(),
        Some("Pod watch: 403 Forbidden")
    );
    assert!(snapshot.stale);
    // Another failure that is no refusal keeps the refusal said.
    let mut other = Batch::default();
    fold(&mut other, &mut status, failed(false));
    let still = next_snapshot(&stores.stores, &mut kept, &status, other, snapshot);
    assert_eq!(still.refused, None, "the kind's latest error is no refusal");
    let mut again = Batch::default();
    fold(&mut again, &mut status, failed(true));
    let refused_again = next_snapshot(&stores.stores, &mut kept, &status, again, still);
    assert!(refused_again.refused.is_some());
    let mut relisted = Batch::default();
    fold(
        &mut relisted,
        &mut status,
        Notice::Listed {
            kind: "Pod",
            at: Instant::now(),
        },
    );
    let recovered = next_snapshot(&stores.stores, &mut kept, &status, relisted, refused_again);
    assert_eq!(recovered.refused, None);
    assert!(!recovered.stale);
}
