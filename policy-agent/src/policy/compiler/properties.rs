//! The key property (DESIGN.md, invariant 1): on random small clusters, the compiled
//! tables looked up as the BPF program looks them up agree with the reference
//! evaluator on every query; with features not enforced yet (ipBlock, named ports,
//! endPort), they are never wider than the evaluator (fail closed).

use std::net::{IpAddr, Ipv4Addr};

use proptest::{collection::vec, prelude::*, sample::select};

use super::compile;
use crate::{
    model::{
        builders::{cluster, namespace, netpol, pod, rule, selector},
        ClusterState, LabelSelector, NetworkPolicy, ObjectRef, Pod, Protocol, Rule,
        SelectorOperator,
    },
    policy::{
        evaluator::{evaluate, Endpoint, Query},
        tables::{DatapathTables, Direction},
    },
};

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const PORTS: &[u16] = &[80, 443, 8080, 9000];
const PROTOCOLS: &[Protocol] = &[Protocol::Tcp, Protocol::Udp];
/// Where pods declare their `http` port.
const HTTP_PORTS: &[u16] = &[80, 8080];
const VALUES: &[&str] = &["x", "y"];
const OPERATORS: &[SelectorOperator] = &[
    SelectorOperator::In,
    SelectorOperator::NotIn,
    SelectorOperator::Exists,
    SelectorOperator::DoesNotExist,
];
const TYPES: &[(bool, bool)] = &[(true, false), (false, true), (true, true)];
/// Addresses outside the cluster, and one inside the ipBlocks below.
const OUTSIDE: [&str; 2] = ["192.168.1.1", "10.0.0.200"];

/// Whether generated policies may use what the compiler does not enforce yet.
#[derive(Clone, Copy, Debug)]
struct Features {
    unsupported: bool,
}

fn labels(
    keys: &'static [&'static str],
) -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    vec((select(keys), select(VALUES)), 0..=2)
}

fn label_selector(keys: &'static [&'static str]) -> impl Strategy<Value = LabelSelector> {
    let pair = (select(keys), select(VALUES));
    let expr = (select(keys), select(OPERATORS), vec(select(VALUES), 1..=2));
    (vec(pair, 0..=1), vec(expr, 0..=1)).prop_map(|(pairs, exprs)| {
        let mut builder = selector();
        for (key, value) in pairs {
            builder = builder.label(key, value);
        }
        for (key, op, values) in exprs {
            let values = match op {
                SelectorOperator::In | SelectorOperator::NotIn => values,
                SelectorOperator::Exists | SelectorOperator::DoesNotExist => Vec::new(),
            };
            builder = builder.expr(key, op, values);
        }
        builder.build()
    })
}

const POD_KEYS: &[&str] = &["app", "tier"];
const NS_KEYS: &[&str] = &["team", "kubernetes.io/metadata.name"];

/// One generated rule: peers (none = all) and ports.
fn rule_strategy(features: Features) -> impl Strategy<Value = Rule> {
    // 0: pods, 1: namespaces, 2: pods in namespaces, 3: ipBlock (if unsupported).
    let kinds = if features.unsupported { 4 } else { 3 };
    let peer = (
        0..kinds,
        label_selector(POD_KEYS),
        label_selector(NS_KEYS),
        0..3usize,
    );
    // 0: protocol only, 1: number, 2: named port, 3: range (last two if unsupported).
    let port_kinds = if features.unsupported { 4 } else { 2 };
    let port = (0..port_kinds, select(PROTOCOLS), select(PORTS));
    (vec(peer, 0..=2), vec(port, 0..=2)).prop_map(|(peers, ports)| {
        let mut builder = rule();
        for (kind, pods, namespaces, block) in peers {
            builder = match kind {
                0 => builder.from_pods(pods),
                1 => builder.from_namespaces(namespaces),
                2 => builder.from_pods_in_namespaces(pods, namespaces),
                _ => match block {
                    0 => builder.from_ip_block("10.0.0.0/24", ["10.0.0.2/31"]),
                    1 => builder.from_ip_block("0.0.0.0/0", ["10.0.0.0/8"]),
                    _ => builder.from_ip_block("10.0.0.0/28", []),
                },
            };
        }
        for (kind, protocol, number) in ports {
            builder = match kind {
                0 => builder.protocol(protocol),
                1 => builder.port(number, protocol),
                2 => builder.named_port(if number == 80 { "http" } else { "alt" }, protocol),
                _ => builder.port_range(number, number.saturating_add(500), protocol),
            };
        }
        builder.build()
    })
}

fn policy_strategy(index: usize, features: Features) -> impl Strategy<Value = NetworkPolicy> {
    let types = select(TYPES);
    let rules = || vec(rule_strategy(features), 0..=2);
    (
        0..3usize,
        label_selector(POD_KEYS),
        types,
        rules(),
        rules(),
        any::<bool>(),
    )
        .prop_map(
            move |(ns, pods, (ingress, egress), ingress_rules, egress_rules, explicit)| {
                let mut builder = netpol(NAMESPACES[ns], &format!("p{index}")).select(pods);
                for rule in ingress_rules {
                    builder = builder.ingress(rule);
                }
                for rule in egress_rules {
                    builder = builder.egress(rule);
                }
                if explicit {
                    builder = builder.types(ingress, egress);
                }
                builder.build()
            },
        )
}

fn cluster_strategy(features: Features) -> impl Strategy<Value = ClusterState> {
    let namespaces = vec(labels(&["team"]), 3);
    let one_pod = (0..3usize, labels(POD_KEYS), select(HTTP_PORTS));
    let pods = vec(one_pod, 2..=8);
    let policies = (0..=4usize).prop_flat_map(move |count| {
        (0..count)
            .map(|index| policy_strategy(index, features))
            .collect::<Vec<_>>()
    });
    (namespaces, pods, policies).prop_map(|(ns_labels, pods, policies)| {
        let mut builder = cluster();
        for (name, pairs) in NAMESPACES.iter().zip(ns_labels) {
            builder = builder.namespace(namespace(name).labels(pairs).build());
        }
        for (index, (ns, pairs, http)) in pods.into_iter().enumerate() {
            let name = format!("pod{index}");
            let ip = format!("10.0.0.{}", index + 1);
            let built = pod(NAMESPACES[ns], &name).labels(pairs).ip(&ip);
            builder = builder.pod(built.named_port("http", http, Protocol::Tcp).build());
        }
        for policy in policies {
            builder = builder.policy(policy);
        }
        builder.build()
    })
}

fn ipv4(pod: &Pod) -> Ipv4Addr {
    match pod.ips.first() {
        Some(IpAddr::V4(ip)) => *ip,
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

/// The kernel's verdict: the source's egress lookup and the destination's ingress
/// lookup, each skipped for a side that is not a local pod.
fn compiled_allows(tables: &DatapathTables, src: &Side, dst: &Side, proto: u8, port: u16) -> bool {
    let egress = match &src.pod {
        Some(pod) => tables
            .lookup(pod, Direction::Egress, dst.ip, proto, port)
            .is_some(),
        None => true,
    };
    let ingress = match &dst.pod {
        Some(pod) => tables
            .lookup(pod, Direction::Ingress, src.ip, proto, port)
            .is_some(),
        None => true,
    };
    egress && ingress
}

/// A query side: a pod (by key, with its address) or an outside address.
struct Side {
    pod: Option<ObjectRef>,
    ip: Ipv4Addr,
    endpoint: Endpoint,
}

fn sides(state: &ClusterState) -> Vec<Side> {
    let pods = state.pods.values().map(|pod| Side {
        pod: Some(pod.key.clone()),
        ip: ipv4(pod),
        endpoint: Endpoint::Pod(pod.key.clone()),
    });
    let outside = OUTSIDE
        .iter()
        .filter_map(|text| text.parse::<Ipv4Addr>().ok())
        .map(|ip| Side {
            pod: None,
            ip,
            endpoint: Endpoint::Address(IpAddr::V4(ip)),
        });
    pods.chain(outside).collect()
}

/// Every (src, dst, protocol, port) query with at least one pod side, with the
/// evaluator's and the tables' verdicts.
fn verdicts(state: &ClusterState) -> Vec<(Query, bool, bool)> {
    let tables = compile(state, &[], |_| true);
    let sides = sides(state);
    let mut out = Vec::new();
    for src in &sides {
        for dst in sides
            .iter()
            .filter(|dst| src.pod.is_some() || dst.pod.is_some())
        {
            for &protocol in PROTOCOLS {
                for &port in PORTS {
                    let query = Query {
                        src: src.endpoint.clone(),
                        dst: dst.endpoint.clone(),
                        protocol,
                        port,
                    };
                    let expected = evaluate(state, &query).allowed;
                    let compiled = compiled_allows(&tables, src, dst, protocol.number(), port);
                    out.push((query, expected, compiled));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn compiled_tables_agree_with_the_evaluator_on_every_query(
        state in cluster_strategy(Features { unsupported: false })
    ) {
        let tables = compile(&state, &[], |_| true);
        prop_assert!(tables.diagnostics.is_empty(), "{:?}", tables.diagnostics);
        for (query, expected, compiled) in verdicts(&state) {
            prop_assert_eq!(compiled, expected, "{:?}\n{}", query, tables);
        }
    }

    #[test]
    fn compiled_tables_are_never_wider_than_the_evaluator(
        state in cluster_strategy(Features { unsupported: true })
    ) {
        for (query, expected, compiled) in verdicts(&state) {
            prop_assert!(!compiled || expected, "compiled allows, evaluator denies: {:?}", query);
        }
    }
}
