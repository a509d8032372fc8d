//! Addresses: ambiguous pod addresses, dual-stack and IPv6-only pods, node
//! addresses and Service ClusterIPs.

use super::*;

#[test]
fn an_address_two_pods_claim_is_never_wider_than_either() {
    // stale/client claims client-1's address: it stays out of `peers` and
    // `endpoint_addresses`, so it gets the class of an address outside pods.
    let state = base()
        .policy(web_from_clients())
        .pod(prod_pod("stale", Some("client"), &["10.0.0.3"], "n1"))
        .build();
    let tables = on_n1(&state);
    assert!(!tables.peers.contains_key(&net("10.0.0.3")));
    assert!(tables.peers.contains_key(&net("10.0.0.4")));
    assert!(!tables.endpoint_addresses.contains_key(&ip("10.0.0.3")));
    assert!(
        tables.endpoints.contains_key(&key("prod/stale")),
        "still enforced"
    );
    assert!(!allows(
        &tables,
        "prod/web-1",
        Direction::Ingress,
        "10.0.0.3",
        80
    ));
    assert!(allows(
        &tables,
        "prod/web-1",
        Direction::Ingress,
        "10.0.0.4",
        80
    ));
}

#[test]
fn a_cluster_deny_of_either_claimant_denies_an_address_two_pods_claim() {
    use crate::{
        model::{
            builders::{cluster_rule, cnp, namespace},
            RuleAction, Tier,
        },
        policy::evaluator::{evaluate, End, Query},
    };
    // remote/intruder (team=b) claims client-1's address while client-1
    // lingers; an Admin Deny of team b's pods must still drop it at web-1, where
    // nothing else isolates.
    let guard = cnp("guard", Tier::Admin, 10)
        .subject_pods(selector().build(), sel("app", "web"))
        .ingress(
            cluster_rule(RuleAction::Deny)
                .name("no-team-b")
                .namespaces(sel("team", "b"))
                .build(),
        )
        .build();
    let state = base()
        .namespace(namespace("remote").labels([("team", "b")]).build())
        .pod(
            pod("remote", "intruder")
                .labels([("app", "x")])
                .ip("10.0.0.3")
                .node("n2")
                .build(),
        )
        .cluster_policy(guard)
        .build();
    let tables = on_n1(&state);
    let query = |from: &str| Query {
        src: End::Address(ip(from)),
        dst: End::Pod(key("prod/web-1")),
        protocol: Tcp,
        port: 80,
    };
    for (from, dropped) in [("10.0.0.3", true), ("10.0.0.4", false), ("10.0.1.3", true)] {
        let verdict = tables.verdict(&key("prod/web-1"), Direction::Ingress, ip(from), 6, 80);
        assert_eq!(!verdict.passes(), dropped, "{from}: {verdict:?}\n{tables}");
        assert_eq!(evaluate(&state, &query(from)).allowed, !dropped, "{from}");
    }
}

#[test]
fn dual_stack_and_ipv6_only_pods_are_enforced_on_every_address() {
    let state = cluster()
        .pod(prod_pod("web", Some("web"), &["10.0.0.1", "fd00::1"], "n1"))
        .pod(prod_pod(
            "client",
            Some("client"),
            &["10.0.0.3", "fd00::3"],
            "n1",
        ))
        .pod(prod_pod("v6", Some("web"), &["fd00::6"], "n1"))
        .pod(prod_pod("other", None, &["10.0.0.9", "fd00::9"], "n2"))
        .policy(web_from_clients())
        .build();
    let tables = on_n1(&state);
    assert!(tables.diagnostics.is_empty(), "{:?}", tables.diagnostics);
    assert_eq!(
        tables.endpoints[&key("prod/v6")],
        tables.endpoints[&key("prod/web")]
    );
    let addresses: Vec<(IpAddr, ObjectRef)> =
        tables.endpoint_addresses.clone().into_iter().collect();
    assert_eq!(
        addresses,
        vec![
            (ip("10.0.0.1"), key("prod/web")),
            (ip("10.0.0.3"), key("prod/client")),
            (ip("fd00::1"), key("prod/web")),
            (ip("fd00::3"), key("prod/client")),
            (ip("fd00::6"), key("prod/v6")),
        ],
        "every address of every local endpoint, nothing of pods elsewhere"
    );
    assert_eq!(
        class(&tables, "10.0.0.3"),
        class(&tables, "fd00::3"),
        "one pod, one signature"
    );
    for (pod, peer) in [
        ("prod/web", "10.0.0.3"),
        ("prod/web", "fd00::3"),
        ("prod/v6", "fd00::3"),
    ] {
        assert!(
            allows(&tables, pod, Direction::Ingress, peer, 80),
            "{peer} -> {pod}"
        );
        assert!(
            !allows(&tables, pod, Direction::Ingress, peer, 81),
            "{peer} -> {pod}:81"
        );
    }
    assert!(
        !allows(&tables, "prod/v6", Direction::Ingress, "fd00::99", 80),
        "not a pod"
    );
}

#[test]
fn node_addresses_pass_ingress_and_are_classed_by_their_ip_blocks() {
    let policy = netpol("prod", "web")
        .select(sel("app", "web"))
        .egress(rule().to_ip_block("192.168.0.0/24", []).build())
        .build();
    let nodes = [ip("192.168.0.10"), ip("fd00:ffff::1")];
    let tables = compile(&base().policy(policy).build(), &nodes, |p| {
        p.node_name.as_deref() == Some("n1")
    });
    let v4 = tables.peers[&net("192.168.0.10")];
    assert!(v4.node && !v4.service);
    assert_eq!(
        v4.class_id,
        tables.peers[&net("192.168.0.0/24")].class_id,
        "in the block"
    );
    assert_eq!(
        tables.peers[&net("fd00:ffff::1")],
        PeerEntry {
            class_id: CLASS_WORLD,
            node: true,
            service: false
        }
    );
    // Ingress is isolated with no rules, yet the node's probes pass.
    assert!(allows(
        &tables,
        "prod/web-1",
        Direction::Ingress,
        "192.168.0.10",
        8080
    ));
    assert!(allows(
        &tables,
        "prod/web-1",
        Direction::Ingress,
        "fd00:ffff::1",
        8080
    ));
    assert!(!allows(
        &tables,
        "prod/web-1",
        Direction::Ingress,
        "192.168.0.11",
        8080
    ));
    // Egress to the node is decided like egress to any address.
    assert!(allows(
        &tables,
        "prod/web-1",
        Direction::Egress,
        "192.168.0.10",
        53
    ));
    assert!(!allows(
        &tables,
        "prod/web-1",
        Direction::Egress,
        "fd00:ffff::1",
        53
    ));
}

#[test]
fn service_cluster_ips_are_flagged_and_classed_by_their_ip_blocks() {
    let state = base()
        .policy(web_from_clients())
        .policy(
            netpol("prod", "out")
                .select(sel("app", "web"))
                .egress(rule().to_ip_block("10.96.0.0/12", []).build())
                .build(),
        )
        .service(service("prod", "web").cluster_ip("10.96.0.10").build())
        .service(service("prod", "web6").cluster_ip("fd00:96::10").build())
        .service(service("prod", "both").cluster_ip("192.168.0.10").build())
        .service(service("prod", "headless").build())
        .service(
            service("prod", "exposed")
                .cluster_ip("10.96.0.11")
                .extra_ip("fd96::11")
                .extra_ip("198.51.100.7")
                .build(),
        )
        .build();
    let tables = compile(&state, &[ip("192.168.0.10")], |p| {
        p.node_name.as_deref() == Some("n1")
    });
    let block = tables.peers[&net("10.96.0.0/12")].class_id;
    assert_ne!(block, CLASS_WORLD);
    assert_eq!(
        tables.peers[&net("10.96.0.10")],
        PeerEntry {
            class_id: block,
            node: false,
            service: true
        }
    );
    assert_eq!(
        tables.peers[&net("fd00:96::10")],
        PeerEntry {
            class_id: CLASS_WORLD,
            node: false,
            service: true
        }
    );
    assert_eq!(
        tables.peers[&net("192.168.0.10")],
        PeerEntry {
            class_id: CLASS_WORLD,
            node: true,
            service: true
        },
        "flags merge on one prefix"
    );
    // Every address kube-proxy translates is a Service address, not only the
    // cluster IP.
    for address in ["10.96.0.11", "fd96::11", "198.51.100.7"] {
        assert!(tables.peers[&net(address)].service, "{address}");
    }
    assert_eq!(
        tables.peers.len(),
        6 + 4 + 3,
        "pods, the block, three ClusterIPs, a Service's three addresses"
    );
}
