//! Unit tests of the compiler: ids, classes, entries, flags and fail-closed
//! diagnostics. Feature-specific tests are in the submodules.

mod addresses;
mod audit;
mod capacity;
mod ip_blocks;
mod ports;
mod size;

use std::net::IpAddr;

use ipnet::IpNet;
use policy_common::{peer::CLASS_WORLD, policy::RULE_SET_ANY_CLASS};

use super::{compile, compile_with};
use crate::{
    model::{
        builders::{cluster, netpol, pod, rule, selector, service, ClusterBuilder},
        ClusterState, LabelSelector, NetworkPolicy, ObjectRef, Pod, PolicyPort, PortRef,
        Protocol::{Tcp, Udp},
    },
    policy::tables::{DatapathTables, Diagnostic, Direction, PeerEntry, PolicyMatch, RuleRef},
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

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A host prefix (`10.0.0.1` -> 10.0.0.1/32) or a CIDR.
fn net(text: &str) -> IpNet {
    text.parse()
        .unwrap_or_else(|_| IpNet::from(text.parse::<IpAddr>().unwrap()))
}

/// The class of `addr` as the kernel's peer lookup finds it.
fn class(tables: &DatapathTables, addr: &str) -> u32 {
    tables.peer(ip(addr)).class_id
}

/// Whether `pod`'s `direction` lookup lets a new flow with `peer` through.
fn allows(tables: &DatapathTables, pod: &str, direction: Direction, peer: &str, port: u16) -> bool {
    tables
        .lookup(&key(pod), direction, ip(peer), 6, port)
        .is_some()
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

/// Pod `prod/name` on `node` with the addresses `ips`, labelled app=`app` if given.
fn prod_pod(name: &str, app: Option<&str>, ips: &[&str], node: &str) -> Pod {
    let mut builder = pod("prod", name).node(node);
    if let Some(app) = app {
        builder = builder.labels([("app", app)]);
    }
    ips.iter()
        .fold(builder, |builder, ip| builder.ip(ip))
        .build()
}

fn on_n1(state: &ClusterState) -> DatapathTables {
    compile(state, &[], |pod| pod.node_name.as_deref() == Some("n1"))
}

fn web_from_clients() -> NetworkPolicy {
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
    ids.sort();
    ids.dedup();
    assert_eq!(ids, vec![1, 2], "dense from 1");
    let class = |addr: &str| class(&tables, addr);
    assert_eq!(class("10.0.0.3"), class("10.0.0.4"));
    assert_ne!(
        class("10.0.0.3"),
        class("10.0.1.3"),
        "remote/client matches one peer only"
    );
    assert_eq!(
        class("10.0.0.1"),
        class("10.0.0.5"),
        "web and db match the namespace peer only"
    );
    assert_ne!(class("10.0.0.1"), CLASS_WORLD);
    assert_eq!(class("8.8.8.8"), CLASS_WORLD);
    let hosts: Vec<IpNet> = tables.peers.keys().copied().collect();
    let expected: Vec<IpNet> = [
        "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.1.3",
    ]
    .map(net)
    .to_vec();
    assert_eq!(
        hosts, expected,
        "one host prefix per pod address, nothing else"
    );
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
fn host_network_and_address_less_pods_are_not_endpoints_nor_classified() {
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
    assert!(!tables.peers.contains_key(&net("192.168.0.1")));
    assert!(!tables.endpoint_addresses.contains_key(&ip("192.168.0.1")));
    assert!(!allows(
        &tables,
        "prod/web-1",
        Direction::Ingress,
        "192.168.0.1",
        80
    ));
}

#[test]
fn a_rule_entry_exists_per_admitted_class_and_port() {
    let tables = on_n1(&base().policy(web_from_clients()).build());
    let web = tables.endpoints[&key("prod/web-1")].endpoint_id;
    let mut classes: Vec<u32> = tables.peers.values().map(|p| p.class_id).collect();
    classes.sort();
    classes.dedup();
    let expected: Vec<PolicyMatch> = classes
        .iter()
        .map(|&class_id| PolicyMatch {
            endpoint_id: web,
            class_id,
            direction: Direction::Ingress,
            protocol: Some(6),
            port: Some(crate::policy::tables::PortBlock::single(80)),
        })
        .collect();
    assert_eq!(
        tables.allow_entries().keys().copied().collect::<Vec<_>>(),
        expected
    );
    let rule = RuleRef {
        policy_id: 0,
        rule_index: 0,
    };
    assert!(tables.allow_entries().values().all(|r| *r == rule));
}

#[test]
fn peers_all_admits_every_class_through_the_any_class_set_and_empty_ports_admit_every_protocol() {
    let policy = netpol("prod", "web")
        .select(sel("app", "web"))
        .ingress(rule().from_pods(sel("app", "db")).build())
        .ingress(rule().protocol(Udp).build());
    let tables = on_n1(&base().policy(policy.build()).build());
    let web = tables.endpoints[&key("prod/web-1")].endpoint_id;
    let db_class = class(&tables, "10.0.0.5");
    let keys: Vec<(u32, Option<u8>, Option<u16>)> = tables
        .allow_entries()
        .keys()
        .inspect(|k| assert_eq!(k.endpoint_id, web))
        .map(|k| (k.class_id, k.protocol, k.port.map(|p| p.first)))
        .collect();
    // The rule without peers is one any-class entry, not one per class; the db
    // class, which the first rule names, holds it too.
    assert_eq!(
        keys,
        vec![
            (db_class, None, None),
            (db_class, Some(17), None),
            (RULE_SET_ANY_CLASS, Some(17), None),
        ]
    );
    for (peer, protocol, allowed) in [
        ("8.8.8.8", 17, true),
        ("8.8.8.8", 6, false),
        ("10.0.0.3", 17, true),
        ("10.0.0.5", 6, true),
    ] {
        let verdict = tables.lookup(
            &key("prod/web-1"),
            Direction::Ingress,
            ip(peer),
            protocol,
            80,
        );
        assert_eq!(verdict.is_some(), allowed, "{peer} protocol {protocol}");
    }
}

#[test]
fn a_duplicate_key_keeps_the_lowest_policy_and_rule() {
    let allow_all = |name: &str| {
        netpol("prod", name)
            .select(sel("app", "web"))
            .ingress(rule().port(80, Tcp).build())
            .ingress(rule().build())
            .build()
    };
    let tables = on_n1(&base().policy(allow_all("b")).policy(allow_all("a")).build());
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
                .from_ip_block("0.0.0.0/0", ["10.0.0.0/8"])
                .invalid_peer("spec.ingress[0].from[2].ipBlock.cidr", "not a CIDR")
                .named_port("http", Tcp)
                .build(),
        )
        .egress(rule().port_range(9, 1, Tcp).build())
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
#[rustfmt::skip]
fn invalid_input_fails_closed_with_one_diagnostic_naming_policy_and_field() {
    let bad = |port: Option<PortRef>, end_port| PolicyPort { protocol: Tcp, port, end_port: Some(end_port) };
    let policy = netpol("prod", "web")
        .select(sel("app", "web"))
        .ingress(rule().invalid_peer("spec.ingress[0].from[0].ipBlock.cidr", "\"10.0.0.0/33\" is not a CIDR").build())
        .ingress(rule().from_pods(sel("app", "client"))
            .port_range(90, 80, Tcp)
            .port_entry(bad(Some(PortRef::Name("http".into())), 90))
            .port_entry(bad(None, 90))
            .named_port("metrics", Tcp)
            .named_port("http", Udp)
            .port(443, Tcp)
            .build())
        .egress(rule().to_pods(sel("app", "db")).named_port("sql", Tcp).build())
        .build();
    let state = base()
        .policy(policy)
        .pod(pod("prod", "web-3").labels([("app", "web")]).ip("10.0.0.6").named_port("http", 8080, Tcp).node("n1").build())
        .build();
    let tables = on_n1(&state);
    let messages: Vec<String> = tables.diagnostics.iter().map(Diagnostic::to_string).collect();
    let closed = "matches nothing (fail closed)";
    assert_eq!(messages, vec![
        format!("policy prod/web: spec.ingress[0].from[0].ipBlock.cidr: \"10.0.0.0/33\" is not a CIDR; the peer {closed}"),
        format!("policy prod/web: spec.ingress[1].ports[0]: endPort 80 is below port 90; the entry {closed}"),
        format!("policy prod/web: spec.ingress[1].ports[1]: endPort 90 with the named port \"http\"; the entry {closed}"),
        format!("policy prod/web: spec.ingress[1].ports[2]: endPort 90 without a port; the entry {closed}"),
        format!("policy prod/web: spec.ingress[1].ports[3]: no pod in the cluster declares a TCP port named \"metrics\"; the entry {closed}"),
        format!("policy prod/web: spec.ingress[1].ports[4]: no pod in the cluster declares a UDP port named \"http\"; the entry {closed}"),
        format!("policy prod/web: spec.egress[0].ports[0]: no pod in the cluster declares a TCP port named \"sql\"; the entry {closed}"),
    ]);
    // Only the client class on 443 is left.
    let client = class(&tables, "10.0.0.3");
    let keys: Vec<(u32, Direction, Option<u8>, Option<u16>)> =
        tables.allow_entries().keys().map(|k| (k.class_id, k.direction, k.protocol, k.port.map(|p| p.first))).collect();
    assert_eq!(keys, vec![(client, Direction::Ingress, Some(6), Some(443))]);
    for port in [80, 85, 90, 8080, 9] {
        assert!(!allows(&tables, "prod/web-3", Direction::Ingress, "10.0.0.3", port), "port {port}");
    }
    assert!(allows(&tables, "prod/web-3", Direction::Ingress, "10.0.0.3", 443));
    assert!(!allows(&tables, "prod/web-1", Direction::Egress, "10.0.0.5", 5432));
}

#[test]
fn compiling_is_deterministic() {
    let state = base().policy(web_from_clients()).build();
    assert_eq!(on_n1(&state), on_n1(&state.clone()));
}

#[test]
fn only_the_pods_of_a_namespace_that_allows_tunnels_may_tunnel() {
    use crate::model::builders::namespace;
    let state = |prod_tunnels: bool| {
        let prod = namespace("prod");
        let prod = if prod_tunnels {
            prod.allow_tunnels()
        } else {
            prod
        };
        base()
            .namespace(prod.build())
            .namespace(namespace("remote").build())
            .pod(pod("remote", "local").ip("10.0.1.4").node("n1").build())
            .pod(pod("other", "local").ip("10.0.2.4").node("n1").build())
            .policy(web_from_clients())
            .build()
    };
    let tables = on_n1(&state(true));
    for (pod, tunnels) in [
        ("prod/web-1", true),
        ("prod/db", true),
        ("remote/local", false),
        ("other/local", false),
    ] {
        assert_eq!(tables.endpoints[&key(pod)].allow_tunnels, tunnels, "{pod}");
    }
    // The flag rides on the entries only: ids and isolation stay what policy makes.
    let without = on_n1(&state(false));
    for (pod, entry) in &without.endpoints {
        assert!(!entry.allow_tunnels, "{pod}");
        let with = tables.endpoints[pod];
        assert_eq!(
            (with.endpoint_id, with.isolated_ingress),
            (entry.endpoint_id, entry.isolated_ingress),
            "{pod}"
        );
    }
    assert_eq!(tables.policy, without.policy);
    let web = format!(
        "prod/web-1: id={} ingress=isolated egress=open tunnels",
        tables.endpoints[&key("prod/web-1")].endpoint_id
    );
    assert!(tables.to_string().contains(&web), "{tables}");
}
