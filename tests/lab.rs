//! The lab on the real kernel: replies of allowed connections, agreement between
//! the kernel and the reference evaluator, verdict counters, cleanup, IPv6, traffic
//! from the node, and probes through Services (kube-proxy-style DNAT); the bridge
//! topology in `lab/bridge.rs`, labs of several nodes in `lab/nodes.rs`, the
//! end-to-end benchmark's machinery in `lab/bench_e2e.rs`.

mod support;

#[path = "lab/bench_e2e.rs"]
mod bench_e2e;
#[path = "lab/bridge.rs"]
mod bridge;
#[path = "lab/nodes.rs"]
mod nodes;

use std::{net::IpAddr, path::Path, time::Duration};

use policy_agent::{
    lab::{
        netns,
        probe::{Family, ProbeRoute},
        report::ProbeResult,
        Lab, LabError, LabOptions,
    },
    model::{
        builders::{cluster, namespace, netpol, pod, rule, selector, service},
        ClusterState, ObjectRef, PortRef, Protocol,
    },
    policy::{
        evaluator::{evaluate, End, Query},
        probes,
    },
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

/// `state` plus a ClusterIP Service (the lab allocates its address) selecting
/// `app=<app>` with one port `port` -> `target`.
fn with_service(
    mut state: ClusterState,
    (namespace, name): (&str, &str),
    app: &str,
    (port, target, protocol): (u16, PortRef, Protocol),
) -> ClusterState {
    let service = service(namespace, name)
        .selector([("app", app)])
        .port(port, target, protocol)
        .build();
    state.services.insert(service.key.clone(), service);
    state
}

/// A backend (`app=backend`: TCP 80 behind Service `x/backend` port 8080, UDP 53
/// behind `x/backend-dns` port 5353) and two egress-isolated clients: `x/allowed`
/// may reach it on both ports, `x/denied` may reach nothing. With
/// `isolate_backend`, the backend's ingress admits only `x/allowed`.
fn clients_of_a_service_backend(isolate_backend: bool) -> ClusterState {
    let mut state = cluster()
        .pod(pod("x", "allowed").labels([("role", "allowed")]).build())
        .pod(pod("x", "denied").labels([("role", "denied")]).build())
        .pod(
            pod("x", "backend")
                .labels([("app", "backend")])
                .port(80, Protocol::Tcp)
                .port(53, Protocol::Udp)
                .build(),
        )
        .policy(
            netpol("x", "allowed-to-backend")
                .select(selector().label("role", "allowed").build())
                .egress(
                    rule()
                        .to_pods(selector().label("app", "backend").build())
                        .port(80, Protocol::Tcp)
                        .port(53, Protocol::Udp)
                        .build(),
                )
                .build(),
        )
        .policy(
            netpol("x", "denied-to-nothing")
                .select(selector().label("role", "denied").build())
                .egress(
                    rule()
                        .to_pods(selector().label("app", "elsewhere").build())
                        .build(),
                )
                .build(),
        );
    if isolate_backend {
        state = state.policy(
            netpol("x", "backend-from-allowed")
                .select(selector().label("app", "backend").build())
                .ingress(
                    rule()
                        .from_pods(selector().label("role", "allowed").build())
                        .build(),
                )
                .build(),
        );
    }
    let state = with_service(
        state.build(),
        ("x", "backend"),
        "backend",
        (8080, PortRef::Number(80), Protocol::Tcp),
    );
    with_service(
        state,
        ("x", "backend-dns"),
        "backend",
        (5353, PortRef::Number(53), Protocol::Udp),
    )
}

/// Every pod's probes of `x/backend`'s ports, through its Services.
fn probe_the_backend_through_its_services(lab: &Lab) -> Vec<ProbeResult> {
    let specs: Vec<_> = lab
        .probe_specs(&[])
        .into_iter()
        .filter(|s| s.to == ObjectRef::new("x", "backend"))
        .collect();
    lab.probe_via(&specs, ProbeRoute::Service, TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"))
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
fn kernel_verdicts_equal_the_reference_evaluator_on_every_step_of_every_example() {
    support::require_root_and_bpf();
    for (example, files) in support::examples() {
        kernel_verdicts_equal_the_evaluator_on_every_step(&example, &files);
    }
}

/// Builds `example`'s cluster (the first of `files`) in a lab, applies each of
/// its steps (the rest) in turn, and checks every probe's kernel verdict against
/// the reference evaluator's.
fn kernel_verdicts_equal_the_evaluator_on_every_step(example: &Path, files: &[std::path::PathBuf]) {
    let (cluster, steps) = files
        .split_first()
        .unwrap_or_else(|| panic!("{}: no files", example.display()));
    let mut state = load_manifests(cluster).unwrap_or_else(|e| panic!("{e}"));
    let mut lab =
        Lab::up(state.clone(), &[(53, Protocol::Udp)]).unwrap_or_else(|e| panic!("lab: {e}"));
    assert!(!steps.is_empty(), "{}: no steps", example.display());
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
            // Judged at the IPv4 addresses the probes carry, as ipBlocks see them.
            let at_v4 = |pod: &ObjectRef| {
                probes::at_address(lab.state(), &End::Pod(pod.clone()), Family::Ipv4)
            };
            let want = evaluate(
                lab.state(),
                &Query {
                    src: at_v4(&spec.from),
                    dst: at_v4(&spec.to),
                    protocol: spec.protocol,
                    port: spec.port,
                },
            );
            assert_eq!(
                got.allowed,
                want.allowed,
                "{}, after {step:?}: {} -> {} {}/{}: kernel {} but evaluator {:?}",
                example.display(),
                spec.from,
                spec.to,
                spec.port,
                spec.protocol,
                got.allowed,
                want
            );
            denied_seen += usize::from(!got.allowed);
        }
    }
    assert!(
        denied_seen > 0,
        "{}: the tutorial must deny something",
        example.display()
    );
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
fn an_egress_named_port_resolves_on_each_destination_pod() {
    support::require_root_and_bpf();
    // Two servers call different numbers "http"; the client may reach "http" on
    // any server, so each server is reached on its own number and not the other's,
    // over both families.
    let state = cluster()
        .pod(pod("x", "client").labels([("app", "client")]).build())
        .pod(
            pod("x", "old")
                .labels([("app", "server")])
                .named_port("http", 80, Protocol::Tcp)
                .port(8080, Protocol::Tcp)
                .build(),
        )
        .pod(
            pod("x", "new")
                .labels([("app", "server")])
                .named_port("http", 8080, Protocol::Tcp)
                .port(80, Protocol::Tcp)
                .build(),
        )
        .policy(
            netpol("x", "client-to-http")
                .select(selector().label("app", "client").build())
                .egress(rule().named_port("http", Protocol::Tcp).build())
                .build(),
        )
        .build();
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let specs: Vec<_> = lab
        .probe_specs(&[])
        .into_iter()
        .filter(|s| s.from == ObjectRef::new("x", "client"))
        .collect();
    for family in [Family::Ipv4, Family::Ipv6] {
        let results = lab
            .probe_via(&specs, ProbeRoute::Pod(family), TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(result_of(&results, "x/client", "x/old", 80), "{family:?}");
        assert!(
            !result_of(&results, "x/client", "x/old", 8080),
            "{family:?}"
        );
        assert!(result_of(&results, "x/client", "x/new", 8080), "{family:?}");
        assert!(!result_of(&results, "x/client", "x/new", 80), "{family:?}");
    }
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

#[test]
fn dual_stack_pods_are_reachable_over_ipv6_without_policy() {
    support::require_root_and_bpf();
    let state = cluster()
        .pod(
            pod("x", "a")
                .ip("fd00:10:244::99")
                .port(80, Protocol::Tcp)
                .port(53, Protocol::Udp)
                .build(),
        )
        .pod(pod("x", "b").port(80, Protocol::Tcp).build())
        .build();
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let a = &lab.state().pods[&ObjectRef::new("x", "a")];
    assert!(
        matches!(a.ips.as_slice(), [IpAddr::V4(_), IpAddr::V6(v6)] if v6.to_string() == "fd00:10:244::99"),
        "both families, the manifest's IPv6 kept: {:?}",
        a.ips
    );
    let specs = lab.probe_specs(&[]);
    let results = lab
        .probe_via(&specs, ProbeRoute::Pod(Family::Ipv6), TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results.iter().all(|r| r.allowed), "{results:?}");
}

#[test]
fn ipv6_verdicts_under_a_default_deny_ingress_equal_the_ipv4_ones() {
    support::require_root_and_bpf();
    // server admits only the client, on 80; other is dropped on both families.
    let state = cluster()
        .pod(pod("x", "client").labels([("app", "client")]).build())
        .pod(pod("x", "other").labels([("app", "other")]).build())
        .pod(
            pod("x", "server")
                .labels([("app", "server")])
                .port(80, Protocol::Tcp)
                .port(8080, Protocol::Tcp)
                .build(),
        )
        .policy(
            netpol("x", "server-ingress")
                .select(selector().label("app", "server").build())
                .ingress(
                    rule()
                        .from_pods(selector().label("app", "client").build())
                        .port(80, Protocol::Tcp)
                        .build(),
                )
                .build(),
        )
        .build();
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let specs = lab.probe_specs(&[]);
    let probe = |family| {
        lab.probe_via(&specs, ProbeRoute::Pod(family), TIMEOUT)
            .unwrap_or_else(|e| panic!("probe: {e}"))
    };
    let (v4, v6) = (probe(Family::Ipv4), probe(Family::Ipv6));
    assert!(!result_of(&v6, "x/other", "x/server", 80), "default deny");
    assert!(!result_of(&v6, "x/client", "x/server", 8080), "wrong port");
    assert!(result_of(&v6, "x/client", "x/server", 80), "allowed peer");
    assert_eq!(v4, v6, "IPv6 verdicts must equal the IPv4 ones");
}

#[test]
fn the_node_reaches_pods_from_its_own_addresses_over_both_families() {
    support::require_root_and_bpf();
    let state = cluster()
        .pod(
            pod("x", "web")
                .port(80, Protocol::Tcp)
                .port(53, Protocol::Udp)
                .build(),
        )
        .build();
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let web = ObjectRef::new("x", "web");
    for family in [Family::Ipv4, Family::Ipv6] {
        for (port, protocol) in [(80, Protocol::Tcp), (53, Protocol::Udp)] {
            let reached = lab
                .probe_from_node(&web, port, protocol, family, TIMEOUT)
                .unwrap_or_else(|e| panic!("probe from node: {e}"));
            assert!(reached, "node -> x/web {port}/{protocol} over {family:?}");
        }
    }
}

#[test]
fn under_default_deny_ingress_the_node_reaches_the_pod_and_other_pods_do_not() {
    support::require_root_and_bpf();
    let state = cluster()
        .pod(pod("x", "client").build())
        .pod(
            pod("x", "web")
                .labels([("app", "web")])
                .port(80, Protocol::Tcp)
                .build(),
        )
        .policy(
            netpol("x", "deny-ingress")
                .select(selector().label("app", "web").build())
                .types(true, false)
                .build(),
        )
        .build();
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let results = lab
        .probe(&lab.probe_specs(&[]), TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    assert!(
        !result_of(&results, "x/client", "x/web", 80),
        "pods are denied"
    );
    let web = ObjectRef::new("x", "web");
    for family in [Family::Ipv4, Family::Ipv6] {
        let reached = lab
            .probe_from_node(&web, 80, Protocol::Tcp, family, TIMEOUT)
            .unwrap_or_else(|e| panic!("probe from node: {e}"));
        assert!(reached, "kubelet-style probe from the node over {family:?}");
    }
}

#[test]
fn a_probe_through_a_service_reaches_its_backend_and_the_reply_passes() {
    support::require_root_and_bpf();
    let state = cluster()
        .pod(pod("x", "client").labels([("app", "client")]).build())
        .pod(
            pod("x", "web")
                .labels([("app", "web")])
                .named_port("http", 80, Protocol::Tcp)
                .port(53, Protocol::Udp)
                .build(),
        )
        .pod(
            pod("x", "db")
                .labels([("app", "db")])
                .port(5432, Protocol::Tcp)
                .build(),
        )
        .build();
    // Service ports differ from the pod's, so only DNAT can make the probes pass.
    let state = with_service(
        state,
        ("x", "web-http"),
        "web",
        (8080, PortRef::Name("http".into()), Protocol::Tcp),
    );
    let state = with_service(
        state,
        ("x", "web-dns"),
        "web",
        (5353, PortRef::Number(53), Protocol::Udp),
    );
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let cluster_ip = lab.state().services[&ObjectRef::new("x", "web-http")]
        .cluster_ip
        .unwrap_or_else(|| panic!("the lab allocates a ClusterIP"));
    assert!(cluster_ip.to_string().starts_with("10.96."), "{cluster_ip}");
    let specs: Vec<_> = lab
        .probe_specs(&[])
        .into_iter()
        .filter(|s| s.to == ObjectRef::new("x", "web"))
        .collect();
    let targets = lab
        .targets(&specs, ProbeRoute::Service)
        .unwrap_or_else(|e| panic!("targets: {e}"));
    assert!(
        targets
            .iter()
            .any(|t| *t == std::net::SocketAddr::new(cluster_ip, 8080)),
        "{targets:?}"
    );
    let results = lab
        .probe_via(&specs, ProbeRoute::Service, TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    assert_eq!(results.len(), 4, "{results:?}");
    assert!(
        result_of(&results, "x/client", "x/web", 80),
        "TCP through DNAT"
    );
    assert!(
        result_of(&results, "x/client", "x/web", 53),
        "UDP echo back through un-DNAT"
    );
    assert!(results.iter().all(|r| r.allowed), "{results:?}");
    // Destinations without a Service leading to them alone are named, not guessed.
    match lab.probe_via(&lab.probe_specs(&[]), ProbeRoute::Service, TIMEOUT) {
        Err(LabError::NoService { missing }) => assert_eq!(missing, "x/db 5432/TCP"),
        other => panic!(
            "want NoService naming x/db, got {:?}",
            other.map(|r| r.len())
        ),
    }
}

#[test]
fn through_a_service_egress_is_decided_on_the_backend_pod() {
    support::require_root_and_bpf();
    let lab =
        Lab::up(clients_of_a_service_backend(false), &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let results = probe_the_backend_through_its_services(&lab);
    assert!(
        result_of(&results, "x/allowed", "x/backend", 80),
        "egress allows the backend pod, so the Service path passes (and its reply)"
    );
    assert!(
        !result_of(&results, "x/denied", "x/backend", 80),
        "egress does not allow the backend pod"
    );
}

#[test]
fn a_label_change_moves_a_service_to_its_new_backend() {
    support::require_root_and_bpf();
    let state = cluster()
        .pod(pod("x", "client").build())
        .pod(
            pod("x", "old")
                .labels([("app", "web")])
                .port(80, Protocol::Tcp)
                .build(),
        )
        .pod(pod("x", "new").port(80, Protocol::Tcp).build())
        .build();
    let mut state = with_service(
        state,
        ("x", "web"),
        "web",
        (8080, PortRef::Number(80), Protocol::Tcp),
    );
    let mut lab = Lab::up(state.clone(), &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let before = lab.state().services[&ObjectRef::new("x", "web")].cluster_ip;
    let to = |pod: &str| -> Vec<_> {
        let pod = ObjectRef::new("x", pod);
        lab.probe_specs(&[])
            .into_iter()
            .filter(|s| s.from == ObjectRef::new("x", "client") && s.to == pod)
            .collect()
    };
    let (to_old, to_new) = (to("old"), to("new"));
    for (key, app) in [("old", "retired"), ("new", "web")] {
        if let Some(p) = state.pods.get_mut(&ObjectRef::new("x", key)) {
            p.labels = [("app".to_string(), app.to_string())].into();
        }
    }
    lab.update(state).unwrap_or_else(|e| panic!("update: {e}"));
    assert_eq!(
        lab.state().services[&ObjectRef::new("x", "web")].cluster_ip,
        before,
        "the ClusterIP stays"
    );
    assert!(
        matches!(
            lab.targets(&to_old, ProbeRoute::Service),
            Err(LabError::NoService { .. })
        ),
        "x/old is no longer behind the Service"
    );
    let results = lab
        .probe_via(&to_new, ProbeRoute::Service, TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    assert!(
        result_of(&results, "x/client", "x/new", 80),
        "the DNAT rules follow the labels"
    );
}

#[test]
fn a_tunnel_port_of_the_labs_node_is_closed_to_pods_unless_their_namespace_allows_tunnels() {
    support::require_root_and_bpf();
    let state = cluster()
        .namespace(namespace("tunnels").allow_tunnels().build())
        .pod(pod("plain", "client").build())
        .pod(pod("tunnels", "client").build())
        .pod(pod("plain", "server").port(9999, Protocol::Udp).build())
        .build();
    let mut lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let server = ObjectRef::new("plain", "server");
    let specs: Vec<_> = lab
        .probe_specs(&[(9999, Protocol::Udp)])
        .into_iter()
        .filter(|spec| spec.to == server)
        .collect();
    assert_eq!(specs.len(), 2, "{specs:?}");
    let probe = |lab: &Lab| {
        let results = lab
            .probe(&specs, TIMEOUT)
            .unwrap_or_else(|e| panic!("probe: {e}"));
        let reached = |from: &str| result_of(&results, from, "plain/server", 9999);
        (reached("plain/client"), reached("tunnels/client"))
    };
    assert_eq!(probe(&lab), (true, true), "9999 is no tunnel port yet");

    // A vxlan device on the lab's node receives on 9999: the lab reads it as the
    // agent reads its node, and pods may no longer send there.
    let node = lab.node_netns().to_string();
    netns::ip_batch(
        Some(&node),
        &["link add vx0 type vxlan id 42 dstport 9999".to_string()],
    )
    .unwrap_or_else(|e| panic!("vxlan device: {e}"));
    let written = lab
        .refresh_tunnel_ports()
        .unwrap_or_else(|e| panic!("tunnel ports: {e}"));
    assert!(written.ports.contains(&9999), "{written:?}");
    let before = lab.stats().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        probe(&lab),
        (false, true),
        "only the namespace annotated podwall.io/allow-tunnels may send to a tunnel port"
    );
    let after = lab.stats().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        after.get("drop_tunnel") > before.get("drop_tunnel"),
        "{:?}",
        after.growth_since(&before)
    );
}

/// A lab sweeps its conntrack as the agent does: a closed flow, once past its
/// timeout, gives its place in the pod's share of the table back, so a lab that
/// runs long keeps taking new connections (without the sweep, the second batch
/// meets `drop_ct_endpoint_limit`).
#[test]
fn a_lab_sweeps_closed_flows_so_new_ones_keep_their_room() {
    support::require_root_and_bpf();
    const SHARE: u32 = 12;
    const BATCH: u16 = 8;
    let state = cluster()
        .namespace(namespace("a").build())
        .pod(pod("a", "client").build())
        .pod(pod("a", "server").port(80, Protocol::Tcp).build())
        .build();
    let mut options = LabOptions::default();
    options.config.ct_endpoint_flows = SHARE;
    options.config.ct_tcp_closing_ns = 1_000_000_000;
    let mut lab = Lab::up_with(state, &[], &options).unwrap_or_else(|e| panic!("lab: {e}"));
    let (client, server) = (ObjectRef::new("a", "client"), ObjectRef::new("a", "server"));
    let target = std::net::SocketAddr::new(
        lab.pod_address(&server, Family::Ipv4)
            .unwrap_or_else(|e| panic!("{e}")),
        80,
    );
    // Each connection is a new flow at both pods, closed at once.
    let batch = |lab: &Lab| {
        lab.in_pod(&client, || {
            (0..BATCH)
                .filter(|_| std::net::TcpStream::connect_timeout(&target, TIMEOUT).is_ok())
                .count()
        })
        .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        batch(&lab),
        usize::from(BATCH),
        "the first batch fits the share"
    );
    // Past the closing timeout (1 s) and its margin, and a sweep after that: the
    // sweeps run every 10 s from the lab's load, so one may fall just before the
    // entries expire; the one after it does not.
    std::thread::sleep(2 * policy_agent::agent::conntrack::SWEEP_EVERY + Duration::from_secs(2));
    let before = lab.stats().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        batch(&lab),
        usize::from(BATCH),
        "the second batch needs the first one's room back: {:?}",
        lab.stats()
            .unwrap_or_else(|e| panic!("{e}"))
            .growth_since(&before)
    );
}
