use super::*;
use crate::model::builders::{cluster, namespace, netpol, pod, rule, selector};

fn result(from: &str, to: &str, port: u16, allowed: bool) -> ProbeResult {
    ProbeResult {
        from: from.into(),
        to: to.into(),
        port,
        protocol: Protocol::Tcp,
        allowed,
        would_drop: false,
    }
}

#[test]
fn a_probe_is_opened_or_closed_by_its_verdict_on_both_sides_and_the_rest_is_counted() {
    let old = [
        result("a/x", "a/y", 80, false),
        result("a/x", "a/y", 443, true),
        result("a/x", "a/z", 80, true),
        result("a/x", "a/gone", 80, true),
    ];
    let new = [
        result("a/x", "a/y", 80, true),
        result("a/x", "a/y", 443, false),
        result("a/x", "a/z", 80, true),
        result("a/x", "a/added", 80, false),
    ];
    let (opened, closed, unmatched) = changes(&old, &new);
    assert_eq!(opened, vec![new[0].clone()]);
    assert_eq!(closed, vec![new[1].clone()]);
    assert_eq!(unmatched, 2);
}

#[test]
fn recorded_flows_the_new_side_drops_are_counted_per_pair_and_port() {
    // shop/db admits shop/web only, on 5432.
    let state = cluster()
        .namespace(namespace("shop").build())
        .pod(
            pod("shop", "web")
                .labels([("app", "web")])
                .ip("10.244.0.2")
                .build(),
        )
        .pod(
            pod("shop", "db")
                .labels([("app", "db")])
                .ip("10.244.0.3")
                .build(),
        )
        .pod(
            pod("shop", "cron")
                .labels([("app", "cron")])
                .ip("10.244.0.4")
                .build(),
        )
        .policy(
            netpol("shop", "db")
                .select(selector().label("app", "db").build())
                .ingress(
                    rule()
                        .from_pods(selector().label("app", "web").build())
                        .port(5432, Protocol::Tcp)
                        .build(),
                )
                .build(),
        )
        .build();
    // Recorded in another lab: other addresses, the same pods.
    let at = |name: &str, ip: &str| {
        End::PodAt(
            ObjectRef::new("shop", name),
            ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")),
        )
    };
    let observed = vec![
        (
            at("web", "10.9.0.2"),
            at("db", "10.9.0.3"),
            5432,
            Protocol::Tcp,
        ),
        (
            at("cron", "10.9.0.4"),
            at("db", "10.9.0.3"),
            5432,
            Protocol::Tcp,
        ),
        (
            at("cron", "10.9.0.4"),
            at("db", "10.9.0.3"),
            5432,
            Protocol::Tcp,
        ),
        (
            at("web", "10.9.0.2"),
            at("db", "10.9.0.3"),
            22,
            Protocol::Tcp,
        ),
        (
            at("web", "10.9.0.2"),
            End::Address(std::net::IpAddr::from([1, 1, 1, 1])),
            443,
            Protocol::Tcp,
        ),
    ];
    let broken = broken(&state, &observed);
    let entry = |from: &str, port, flows| Broken {
        from: from.into(),
        to: "shop/db".into(),
        port,
        protocol: Protocol::Tcp,
        flows,
    };
    assert_eq!(
        broken,
        vec![entry("shop/cron", 5432, 2), entry("shop/web", 22, 1)]
    );
}

#[test]
fn manifests_applied_over_a_cluster_keep_the_labels_of_namespaces_they_only_use() {
    let live = cluster()
        .namespace(namespace("shop").labels([("team", "a")]).build())
        .build();
    let changes = cluster()
        .pod(pod("shop", "web").build())
        .namespace(namespace("new").labels([("team", "b")]).build())
        .build();
    let applied = applied(live, changes);
    assert_eq!(
        applied.namespaces["shop"]
            .labels
            .get("team")
            .map(String::as_str),
        Some("a")
    );
    assert!(applied.namespaces.contains_key("new"));
    assert!(applied.pods.contains_key(&ObjectRef::new("shop", "web")));
}
