use super::*;
use crate::model::builders::{cluster, namespace, pod};

/// shop: two web replicas (app=web, each its own pod-template-hash... and
/// statefulset name), db (app=db); monitoring/prom (app=prom).
#[rustfmt::skip]
fn state() -> ClusterState {
    cluster()
        .namespace(namespace("shop").build())
        .namespace(namespace("monitoring").build())
        .pod(pod("shop", "web-1").labels([("app", "web"), ("pod-template-hash", "a1")]).ip("10.0.0.1").build())
        .pod(pod("shop", "web-2").labels([("app", "web"), ("pod-template-hash", "b2")]).ip("10.0.0.2").build())
        .pod(pod("shop", "db").labels([("app", "db")]).ip("10.0.0.3").build())
        .pod(pod("monitoring", "prom").labels([("app", "prom")]).ip("10.0.1.1").build())
        .build()
}

fn at(key: &str) -> Observed {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    Observed::Pod(ObjectRef::new(namespace, name))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    crate::model::builders::labels(pairs.iter().copied()).into()
}

#[test]
fn each_workload_gets_one_policy_with_a_rule_per_peer_on_the_ports_seen() {
    let observed = vec![
        (at("shop/web-1"), at("shop/db"), 5432, Protocol::Tcp),
        (at("shop/web-2"), at("shop/db"), 5432, Protocol::Tcp),
        (at("monitoring/prom"), at("shop/db"), 9187, Protocol::Tcp),
        (
            at("shop/web-1"),
            Observed::Address("192.0.2.7".parse().unwrap_or_else(|e| panic!("{e}"))),
            443,
            Protocol::Tcp,
        ),
    ];
    let all = suggest(&state(), &observed);
    let names: Vec<(&str, &str)> = all
        .iter()
        .map(|s| (s.workload.namespace.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("monitoring", "suggested-prom"),
            ("shop", "suggested-db"),
            ("shop", "suggested-web")
        ]
    );
    let db = &all[1];
    assert_eq!(db.workload.labels, labels(&[("app", "db")]));
    assert!(db.egress.is_empty());
    assert_eq!(
        db.ingress,
        vec![
            SuggestedRule {
                peer: SuggestedPeer::Pods {
                    namespace: None,
                    labels: labels(&[("app", "web")]),
                },
                ports: BTreeSet::from([(5432, Protocol::Tcp)]),
                flows: 2,
                seen: BTreeSet::from(["shop/web-1".to_string(), "shop/web-2".to_string()]),
            },
            SuggestedRule {
                peer: SuggestedPeer::Pods {
                    namespace: Some("monitoring".into()),
                    labels: labels(&[("app", "prom")]),
                },
                ports: BTreeSet::from([(9187, Protocol::Tcp)]),
                flows: 1,
                seen: BTreeSet::from(["monitoring/prom".to_string()]),
            },
        ]
    );
    // The web replicas are one workload: the per-pod hash is not in its selector.
    let web = &all[2];
    assert_eq!(web.workload.labels, labels(&[("app", "web")]));
    assert_eq!(web.egress.len(), 2);
    assert!(web
        .egress
        .iter()
        .any(|r| r.peer
            == SuggestedPeer::Address("192.0.2.7".parse().unwrap_or_else(|e| panic!("{e}")))));
}

#[test]
fn a_pod_the_state_does_not_have_names_no_peer() {
    let observed = vec![(at("shop/gone"), at("shop/db"), 5432, Protocol::Tcp)];
    assert_eq!(suggest(&state(), &observed), vec![]);
}

#[test]
fn no_two_suggested_policies_of_a_namespace_share_a_name() {
    // Two workloads of app=web (told apart by tier) and one of app=web-2:
    // numbering the second web must not take web-2's name.
    let state = cluster()
        .namespace(namespace("shop").build())
        .pod(
            pod("shop", "a")
                .labels([("app", "web"), ("tier", "a")])
                .ip("10.0.0.1")
                .build(),
        )
        .pod(
            pod("shop", "b")
                .labels([("app", "web"), ("tier", "b")])
                .ip("10.0.0.2")
                .build(),
        )
        .pod(
            pod("shop", "c")
                .labels([("app", "web-2")])
                .ip("10.0.0.3")
                .build(),
        )
        .pod(
            pod("shop", "db")
                .labels([("app", "db")])
                .ip("10.0.0.4")
                .build(),
        )
        .build();
    let observed: Vec<Connection> = ["shop/a", "shop/b", "shop/c"]
        .into_iter()
        .map(|from| (at(from), at("shop/db"), 5432, Protocol::Tcp))
        .collect();
    let all = suggest(&state, &observed);
    let names: BTreeSet<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), all.len(), "{names:?}");
    assert!(names.contains("suggested-web-2"), "{names:?}");
    assert!(names.contains("suggested-web-3"), "{names:?}");
}
