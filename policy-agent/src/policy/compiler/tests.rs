//! Unit tests of the compiler: ids, classes, entries and fail-closed diagnostics.

use std::net::Ipv4Addr;

use policy_common::peer::CLASS_WORLD;

use super::compile;
use crate::{
    model::{
        builders::{cluster, netpol, pod, rule, selector, ClusterBuilder},
        LabelSelector, ObjectRef,
        Protocol::{Tcp, Udp},
    },
    policy::tables::{DatapathTables, Diagnostic, Direction, PolicyMatch, RuleRef},
};

fn sel(key: &str, value: &str) -> LabelSelector {
    selector().label(key, value).build()
}

fn key(text: &str) -> ObjectRef {
    match text.split_once('/') {
        Some((ns, name)) => ObjectRef::new(ns, name),
        None => ObjectRef::new("", text),
    }
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

/// prod: web-1, web-2 (app=web), client-1, client-2 (app=client), db (app=db);
/// remote/client (app=client) on another node.
#[rustfmt::skip]
fn base() -> ClusterBuilder {
    cluster()
        .pod(pod("prod", "web-1").labels([("app", "web")]).ip("10.0.0.1").node("n1").build())
        .pod(pod("prod", "web-2").labels([("app", "web")]).ip("10.0.0.2").node("n1").build())
        .pod(pod("prod", "client-1").labels([("app", "client")]).ip("10.0.0.3").node("n1").build())
        .pod(pod("prod", "client-2").labels([("app", "client")]).ip("10.0.0.4").node("n1").build())
        .pod(pod("prod", "db").labels([("app", "db")]).ip("10.0.0.5").node("n1").build())
        .pod(pod("remote", "client").labels([("app", "client")]).ip("10.0.1.3").node("n2").build())
}

fn on_n1(state: &crate::model::ClusterState) -> DatapathTables {
    compile(state, &[], |pod| pod.node_name.as_deref() == Some("n1"))
}

fn web_from_clients() -> crate::model::NetworkPolicy {
    netpol("prod", "web")
        .select(sel("app", "web"))
        .ingress(
            rule()
                .from_namespaces(selector().build())
                .from_pods(sel("app", "client"))
                .port(80, Tcp)
                .build(),
        )
        .build()
}

#[test]
fn pods_with_the_same_labels_share_an_endpoint_id_and_a_class() {
    let tables = on_n1(&base().policy(web_from_clients()).build());
    let id = |pod: &str| tables.endpoints[&key(pod)].endpoint_id;
    assert_eq!(id("prod/web-1"), id("prod/web-2"));
    assert_eq!(id("prod/client-1"), id("prod/client-2"));
    assert_eq!(
        id("prod/client-1"),
        id("prod/db"),
        "no policy applies to either"
    );
    assert_ne!(id("prod/web-1"), id("prod/db"));
    let mut ids: Vec<u32> = tables.endpoints.values().map(|e| e.endpoint_id).collect();
    ids.dedup();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, vec![1, 2], "dense from 1");
    let class = |addr: &str| tables.peers_v4.get(&ip(addr)).copied();
    assert_eq!(class("10.0.0.3"), class("10.0.0.4"));
    assert_ne!(
        class("10.0.0.3"),
        class("10.0.1.3"),
        "remote/client matches only one peer"
    );
    assert_eq!(
        class("10.0.0.1"),
        class("10.0.0.5"),
        "web and db match the namespace peer only"
    );
    assert_eq!(tables.peers_v4.len(), 6);
}

#[test]
fn isolation_flags_follow_the_applying_policies() {
    let egress = netpol("prod", "out")
        .select(sel("app", "client"))
        .types(false, true)
        .build();
    let tables = on_n1(&base().policy(web_from_clients()).policy(egress).build());
    let flags = |pod: &str| {
        let e = tables.endpoints[&key(pod)];
        (e.isolated_ingress, e.isolated_egress)
    };
    assert_eq!(flags("prod/web-1"), (true, false));
    assert_eq!(flags("prod/client-1"), (false, true));
    assert_eq!(flags("prod/db"), (false, false));
    assert!(
        !tables.endpoints.contains_key(&key("remote/client")),
        "not local"
    );
}

#[test]
fn host_network_pods_and_pods_without_ipv4_are_not_endpoints_nor_classified() {
    let state = base()
        .policy(
            netpol("prod", "all")
                .ingress(rule().from_pods(selector().build()).build())
                .build(),
        )
        .pod(
            pod("prod", "host")
                .ip("192.168.0.1")
                .host_network()
                .node("n1")
                .build(),
        )
        .pod(pod("prod", "pending").node("n1").build())
        .build();
    let tables = on_n1(&state);
    assert!(!tables.endpoints.contains_key(&key("prod/host")));
    assert!(!tables.endpoints.contains_key(&key("prod/pending")));
    assert!(!tables.peers_v4.contains_key(&ip("192.168.0.1")));
}

#[test]
fn a_rule_entry_exists_per_admitted_class_and_port() {
    let tables = on_n1(&base().policy(web_from_clients()).build());
    let web = tables.endpoints[&key("prod/web-1")].endpoint_id;
    let entry = |class_id, protocol, port| PolicyMatch {
        endpoint_id: web,
        class_id,
        direction: Direction::Ingress,
        protocol,
        port,
    };
    let mut classes: Vec<u32> = tables.peers_v4.values().copied().collect();
    classes.sort();
    classes.dedup();
    let expected: Vec<PolicyMatch> = classes
        .iter()
        .map(|c| entry(*c, Some(6), Some(80)))
        .collect();
    assert_eq!(tables.policy.keys().copied().collect::<Vec<_>>(), expected);
    let rule = RuleRef {
        policy_id: 0,
        rule_index: 0,
    };
    assert!(tables.policy.values().all(|r| *r == rule));
}

#[test]
fn peers_all_admits_world_and_every_class_and_empty_ports_admit_every_protocol() {
    let policy = netpol("prod", "web")
        .select(sel("app", "web"))
        .ingress(rule().from_pods(sel("app", "db")).build())
        .ingress(rule().protocol(Udp).build());
    let tables = on_n1(&base().policy(policy.build()).build());
    let web = tables.endpoints[&key("prod/web-1")].endpoint_id;
    let db_class = tables.peers_v4[&ip("10.0.0.5")];
    let keys: Vec<(u32, Option<u8>, Option<u16>)> = tables
        .policy
        .keys()
        .inspect(|k| assert_eq!(k.endpoint_id, web))
        .map(|k| (k.class_id, k.protocol, k.port))
        .collect();
    assert_eq!(
        keys,
        vec![
            (CLASS_WORLD, Some(17), None),
            (db_class, None, None),
            (db_class, Some(17), None)
        ]
    );
}

#[test]
fn a_duplicate_key_keeps_the_lowest_policy_and_rule() {
    let allow_all = |name: &str| {
        netpol("prod", name)
            .select(sel("app", "web"))
            .ingress(rule().port(80, Tcp).build())
            .ingress(rule().build())
    };
    let tables = on_n1(
        &base()
            .policy(allow_all("b").build())
            .policy(allow_all("a").build())
            .build(),
    );
    let rule_of = |port| {
        tables.lookup(
            &key("prod/web-1"),
            Direction::Ingress,
            ip("8.8.8.8"),
            6,
            port,
        )
    };
    assert_eq!(
        rule_of(80),
        Some(Some(RuleRef {
            policy_id: 0,
            rule_index: 0
        }))
    );
    assert_eq!(
        rule_of(81),
        Some(Some(RuleRef {
            policy_id: 0,
            rule_index: 1
        }))
    );
    assert_eq!(tables.policy_names, vec![key("prod/a"), key("prod/b")]);
}

#[test]
fn a_policy_that_selects_nothing_local_adds_nothing() {
    let without = on_n1(&base().policy(web_from_clients()).build());
    let remote_only = netpol("remote", "zz")
        .ingress(
            rule()
                .from_pods(sel("app", "client"))
                .from_ip_block("0.0.0.0/0", [])
                .named_port("http", Tcp)
                .build(),
        )
        .egress(rule().port_range(1, 9, Tcp).build())
        .build();
    let with = on_n1(
        &base()
            .policy(web_from_clients())
            .policy(remote_only)
            .build(),
    );
    assert_eq!(with.policy_names.len(), 2);
    assert_eq!(
        DatapathTables {
            policy_names: without.policy_names.clone(),
            ..with
        },
        without
    );
}

#[test]
fn an_address_two_pods_claim_stays_in_class_world() {
    let state = base()
        .policy(web_from_clients())
        .pod(
            pod("prod", "stale")
                .labels([("app", "client")])
                .ip("10.0.0.3")
                .build(),
        )
        .build();
    let tables = on_n1(&state);
    assert!(!tables.peers_v4.contains_key(&ip("10.0.0.3")));
    assert!(tables.peers_v4.contains_key(&ip("10.0.0.4")));
}

#[test]
#[rustfmt::skip]
fn unsupported_peers_and_ports_fail_closed_with_one_diagnostic_each() {
    let policy = netpol("prod", "web")
        .select(sel("app", "web"))
        .ingress(rule().from_ip_block("10.0.0.0/8", ["10.0.0.0/24"]).build())
        .ingress(rule().from_pods(sel("app", "client")).from_ip_block("0.0.0.0/0", []).named_port("http", Tcp).port_range(80, 90, Tcp).port(443, Tcp).build())
        .egress(rule().to_pods(sel("app", "db")).named_port("sql", Tcp).build())
        .build();
    let tables = on_n1(&base().policy(policy).build());
    let messages: Vec<String> = tables.diagnostics.iter().map(Diagnostic::to_string).collect();
    let dropped = "is not enforced yet; traffic it would allow is dropped";
    assert_eq!(messages, vec![
        format!("policy prod/web: spec.ingress[0].from[0]: ipBlock 10.0.0.0/8 {dropped}"),
        format!("policy prod/web: spec.ingress[1].from[1]: ipBlock 0.0.0.0/0 {dropped}"),
        format!("policy prod/web: spec.ingress[1].ports[0]: named port \"http\" {dropped}"),
        format!("policy prod/web: spec.ingress[1].ports[1]: endPort range 80-90 {dropped}"),
        format!("policy prod/web: spec.egress[0].ports[0]: named port \"sql\" {dropped}"),
    ]);
    // Only the client class on 443 is left: no entry for the ipBlocks, names, range.
    let client_class = tables.peers_v4[&ip("10.0.0.3")];
    let keys: Vec<(u32, Direction, Option<u8>, Option<u16>)> =
        tables.policy.keys().map(|k| (k.class_id, k.direction, k.protocol, k.port)).collect();
    assert_eq!(keys, vec![(client_class, Direction::Ingress, Some(6), Some(443))]);
    let lookup = |peer: &str, port| tables.lookup(&key("prod/web-1"), Direction::Ingress, ip(peer), 6, port);
    assert_eq!(lookup("10.0.0.3", 85), None, "endPort range is not widened");
    assert_eq!(lookup("10.0.200.1", 443), None, "ipBlock admits nothing yet");
    assert_eq!(tables.lookup(&key("prod/web-1"), Direction::Egress, ip("10.0.0.5"), 6, 5432), None);
}

#[test]
fn local_pods_with_ipv6_addresses_are_reported() {
    let state = base()
        .policy(web_from_clients())
        .pod(
            pod("prod", "web-6")
                .labels([("app", "web")])
                .ip("10.0.0.6")
                .ip("fd00::6")
                .node("n1")
                .build(),
        )
        .build();
    let tables = on_n1(&state);
    assert_eq!(tables.diagnostics.len(), 1);
    assert!(
        tables.diagnostics[0].message.contains("prod/web-6"),
        "{}",
        tables.diagnostics[0]
    );
    assert!(tables.endpoints.contains_key(&key("prod/web-6")));
}

#[test]
fn compiling_is_deterministic() {
    let state = base().policy(web_from_clients()).build();
    assert_eq!(on_n1(&state), on_n1(&state.clone()));
}
