use super::*;
use crate::model::builders::{cluster, namespace, netpol, pod, rule, selector};

#[test]
fn a_probe_is_opened_or_closed_by_its_verdict_on_both_sides_and_the_rest_is_counted() {
    let old = [
        ProbeResult::tcp("a/x", "a/y", 80, false),
        ProbeResult::tcp("a/x", "a/y", 443, true),
        ProbeResult::tcp("a/x", "a/z", 80, true),
        ProbeResult::tcp("a/x", "a/gone", 80, true),
    ];
    let new = [
        ProbeResult::tcp("a/x", "a/y", 80, true),
        ProbeResult::tcp("a/x", "a/y", 443, false),
        ProbeResult::tcp("a/x", "a/z", 80, true),
        ProbeResult::tcp("a/x", "a/added", 80, false),
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
