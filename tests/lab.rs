//! The lab on the real kernel: replies of allowed connections, agreement between
//! the kernel and the reference evaluator, verdict counters, and cleanup.

mod support;

use std::{path::Path, time::Duration};

use policy_agent::{
    lab::{netns, Lab},
    model::{
        builders::{cluster, netpol, pod, rule, selector},
        ObjectRef, Protocol,
    },
    policy::evaluator::{evaluate, Endpoint, Query},
    source::load_manifests,
};

const TIMEOUT: Duration = Duration::from_millis(1000);

fn result_of(
    results: &[policy_agent::lab::report::ProbeResult],
    from: &str,
    to: &str,
    port: u16,
) -> bool {
    results
        .iter()
        .find(|r| r.from == from && r.to == to && r.port == port)
        .map(|r| r.allowed)
        .unwrap_or_else(|| panic!("no probe {from} -> {to}:{port}"))
}

#[test]
fn default_deny_ingress_on_a_client_keeps_its_own_connections_working() {
    support::require_root_and_bpf();
    // The client is isolated for ingress; it opens connections to an open server.
    let state = cluster()
        .pod(
            pod("shop", "client")
                .labels([("app", "client")])
                .port(8080, Protocol::Tcp)
                .build(),
        )
        .pod(
            pod("shop", "server")
                .labels([("app", "server")])
                .port(80, Protocol::Tcp)
                .port(53, Protocol::Udp)
                .build(),
        )
        .policy(
            netpol("shop", "client-deny-ingress")
                .select(selector().label("app", "client").build())
                .types(true, false)
                .build(),
        )
        .build();
    let mut lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let before = lab.stats().unwrap_or_else(|e| panic!("stats: {e}"));
    let results = lab
        .probe(&lab.probe_specs(&[]), TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    // TCP and UDP replies come back through the client's isolated ingress.
    assert!(result_of(&results, "shop/client", "shop/server", 80));
    assert!(result_of(&results, "shop/client", "shop/server", 53));
    // New connections into the client are still dropped.
    assert!(!result_of(&results, "shop/server", "shop/client", 8080));
    let after = lab.stats().unwrap_or_else(|e| panic!("stats: {e}"));
    assert!(
        after.get("allow_tracked") > before.get("allow_tracked"),
        "the replies must pass as tracked flows: {after:?}"
    );
    assert!(
        after.get("drop_policy") > before.get("drop_policy"),
        "{after:?}"
    );
}

#[test]
fn kernel_verdicts_equal_the_reference_evaluator_on_every_tutorial_step() {
    support::require_root_and_bpf();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/secure-app");
    let mut state = load_manifests(&example.join("cluster.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let mut lab =
        Lab::up(state.clone(), &[(53, Protocol::Udp)]).unwrap_or_else(|e| panic!("lab: {e}"));
    let mut steps: Vec<_> = std::fs::read_dir(example.join("steps"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    steps.sort();
    assert_eq!(steps.len(), 4, "the tutorial has four steps");
    let mut denied_seen = 0;
    for step in std::iter::once(None).chain(steps.iter().map(Some)) {
        if let Some(path) = step {
            state.merge(load_manifests(path).unwrap_or_else(|e| panic!("{e}")));
            lab.update(state.clone())
                .unwrap_or_else(|e| panic!("update: {e}"));
        }
        let specs = lab.probe_specs(&[]);
        let results = lab
            .probe(&specs, TIMEOUT)
            .unwrap_or_else(|e| panic!("probe: {e}"));
        for (spec, got) in specs.iter().zip(&results) {
            let want = evaluate(
                lab.state(),
                &Query {
                    src: Endpoint::Pod(spec.from.clone()),
                    dst: Endpoint::Pod(spec.to.clone()),
                    protocol: spec.protocol,
                    port: spec.port,
                },
            );
            assert_eq!(
                got.allowed, want.allowed,
                "after {step:?}: {} -> {} {}/{}: kernel {} but evaluator {:?}",
                spec.from, spec.to, spec.port, spec.protocol, got.allowed, want
            );
            denied_seen += usize::from(!got.allowed);
        }
    }
    assert!(denied_seen > 0, "the tutorial must deny something");
}

#[test]
fn a_lab_removes_every_namespace_it_made_when_dropped() {
    support::require_root_and_bpf();
    let state = cluster()
        .pod(pod("x", "a").port(80, Protocol::Tcp).build())
        .pod(pod("x", "b").build())
        .build();
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    assert_eq!(
        lab.pods(),
        vec![ObjectRef::new("x", "a"), ObjectRef::new("x", "b")]
    );
    let made = lab.namespaces();
    assert_eq!(made.len(), 3, "node and two pods: {made:?}");
    let existing = netns::lab_namespaces();
    assert!(
        made.iter().all(|n| existing.contains(n)),
        "{made:?} not all in {existing:?}"
    );
    drop(lab);
    let existing = netns::lab_namespaces();
    let left: Vec<&String> = made.iter().filter(|n| existing.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn an_egress_rule_admits_only_its_port_and_peer() {
    support::require_root_and_bpf();
    let state = cluster()
        .pod(pod("x", "client").labels([("app", "client")]).build())
        .pod(
            pod("x", "db")
                .labels([("app", "db")])
                .port(5432, Protocol::Tcp)
                .port(80, Protocol::Tcp)
                .build(),
        )
        .pod(
            pod("x", "web")
                .labels([("app", "web")])
                .port(5432, Protocol::Tcp)
                .build(),
        )
        .policy(
            netpol("x", "client-to-db")
                .select(selector().label("app", "client").build())
                .egress(
                    rule()
                        .to_pods(selector().label("app", "db").build())
                        .port(5432, Protocol::Tcp)
                        .build(),
                )
                .build(),
        )
        .build();
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let results = lab
        .probe(&lab.probe_specs(&[]), TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(result_of(&results, "x/client", "x/db", 5432));
    assert!(!result_of(&results, "x/client", "x/db", 80), "wrong port");
    assert!(
        !result_of(&results, "x/client", "x/web", 5432),
        "wrong peer"
    );
    assert!(
        result_of(&results, "x/web", "x/db", 80),
        "other pods stay open"
    );
}

#[test]
fn icmp_echo_follows_rules_without_ports_and_its_reply_is_tracked() {
    support::require_root_and_bpf();
    // a admits b on every protocol (a rule without ports) and c only on TCP 80.
    let state = cluster()
        .pod(
            pod("x", "a")
                .labels([("app", "a")])
                .port(80, Protocol::Tcp)
                .build(),
        )
        .pod(pod("x", "b").labels([("app", "b")]).build())
        .pod(pod("x", "c").labels([("app", "c")]).build())
        .policy(
            netpol("x", "a-ingress")
                .select(selector().label("app", "a").build())
                .ingress(
                    rule()
                        .from_pods(selector().label("app", "b").build())
                        .build(),
                )
                .ingress(
                    rule()
                        .from_pods(selector().label("app", "c").build())
                        .port(80, Protocol::Tcp)
                        .build(),
                )
                .build(),
        )
        .build();
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let (a, b, c) = (
        ObjectRef::new("x", "a"),
        ObjectRef::new("x", "b"),
        ObjectRef::new("x", "c"),
    );
    let ping = |from: &ObjectRef, to: &ObjectRef| {
        lab.ping(from, to, TIMEOUT)
            .unwrap_or_else(|e| panic!("ping: {e}"))
    };
    assert!(ping(&b, &a), "a rule without ports admits ICMP");
    assert!(!ping(&c, &a), "a rule with ports admits only those ports");
    assert!(
        ping(&a, &c),
        "the echo reply into isolated a passes as a tracked flow"
    );
}
