//! The key property (docs/architecture.md, invariant 1): on random small clusters covering
//! every NetworkPolicy field, the compiled tables looked up as the BPF program looks
//! them up agree with the reference evaluator on every (src, dst, protocol, port),
//! side by side: each side drops, passes, or passes as a would-drop (audit mode)
//! alike.
//!
//! Generated: namespaces with and without labels (selectors also use
//! `kubernetes.io/metadata.name`); pods in two nodes with IPv4, IPv6, both or no
//! addresses, named container ports (one name on several protocols and numbers),
//! sometimes hostNetwork; up to four policies with every matchExpressions operator,
//! defaulted or explicit policyTypes (all four combinations), absent (= empty)
//! from/to/ports, pod/namespace/both peers, ipBlocks with excepts in both families
//! (holding pod addresses, the node's, a Service's), invalid peers, numeric, named,
//! protocol-only ports, endPort ranges (edges 0 and 65535, the full range, invalid
//! ones), TCP/UDP/SCTP; about a third of the policies in audit mode, so pods are
//! isolated by enforce-mode, audit-mode and both kinds of policies. Queries: every pair of addresses of one family among pods,
//! outside addresses, node addresses and ClusterIPs, on every protocol and a port
//! set holding the range edges. Each pod side is looked up in its own node's tables.
//! Empty and absent from/to/ports are one value in the model (`Peers::All`, no
//! ports), so generating none covers both.
//!
//! A second property compiles the same clusters within budgets they overflow
//! (`TINY`): each node's tables stay within them and agree with the evaluator on
//! the state without the rules of the policies that node refused.

use std::net::IpAddr;

use proptest::{collection::vec, prelude::*, sample::select};

use super::compile_with;
use crate::{
    model::{
        builders::{
            cluster, cluster_rule, cnp, namespace, netpol, node, pod, rule, selector, service,
        },
        ClusterNetworkPolicy, ClusterPort, ClusterRule, ClusterState, ClusterSubject,
        LabelSelector, NetworkPolicy, ObjectRef, Pod, PolicyPort, PortRef, Protocol, Rule,
        RuleAction, SelectorOperator, Tier, NAMESPACE_NAME_LABEL,
    },
    policy::{
        capacity::{without_refused_rules, Budgets},
        evaluator::{evaluate, End, Query, SideVerdict},
        tables::{DatapathTables, Direction, TableVerdict},
    },
};

pub(super) const NAMESPACES: &[&str] = &["a", "b", "c"];
const VALUES: &[&str] = &["x", "y"];
const POD_KEYS: &[&str] = &["app", "tier"];
const NS_KEYS: &[&str] = &["team", NAMESPACE_NAME_LABEL];
const OPERATORS: &[SelectorOperator] = &[
    SelectorOperator::In,
    SelectorOperator::NotIn,
    SelectorOperator::Exists,
    SelectorOperator::DoesNotExist,
];
const PROTOCOLS: &[Protocol] = &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
const NAMES: &[&str] = &["http", "alt"];
/// Numbers pods give their named ports.
const NAMED_NUMBERS: &[u16] = &[80, 443, 8080];
/// Ends of generated ports and endPort ranges.
const EDGES: &[u16] = &[0, 1, 80, 81, 443, 8080, 32768, 65535];
/// Ports every query is made on: the edges and their neighbours.
const QUERY_PORTS: &[u16] = &[0, 1, 2, 79, 80, 81, 443, 8080, 32767, 32768, 65534, 65535];
/// ipBlocks (cidr, excepts); pod i has 10.0.0.(i+1) and fd00::(i+1).
const BLOCKS: &[(&str, &[&str])] = &[
    ("10.0.0.0/24", &["10.0.0.2/31"]),
    ("0.0.0.0/0", &["10.0.0.0/8"]),
    ("10.0.0.0/29", &[]),
    ("10.0.0.0/8", &["10.0.0.0/24", "10.96.0.0/12"]),
    ("10.0.0.5/32", &[]),
    ("10.0.0.0/16", &["10.0.0.0/30", "10.0.0.4/32"]),
    ("fd00::/64", &["fd00::2/127"]),
    ("::/0", &["fd00::/16"]),
    ("fd00::/125", &[]),
    ("fd00::/16", &["fd00::/64"]),
    ("fd00::5/128", &[]),
];
/// Addresses outside pods: plain outsiders, node addresses, ClusterIPs.
const OUTSIDE: &[&str] = &[
    "192.168.1.1",
    "10.0.0.200",
    "10.7.0.1",
    "2001:db8::1",
    "fd00::c8",
];
/// Node `n0`'s and `n1`'s addresses, one per family each.
pub(super) const NODES: [[&str; 2]; 2] = [["172.16.0.1", "fd00:1::1"], ["10.0.0.250", "fd00::fa"]];
const CLUSTER_IPS: &[&str] = &["10.96.0.10", "fd00:96::a"];

/// A namespace index, mostly the first, so that policies often select pods.
fn namespace_index() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)]
}

/// A (key, value) pair; the namespace name label takes namespace names as values.
fn pair(keys: &'static [&'static str]) -> impl Strategy<Value = (&'static str, &'static str)> {
    (select(keys), 0..3usize).prop_map(|(key, index)| {
        let values = if key == NAMESPACE_NAME_LABEL {
            NAMESPACES
        } else {
            VALUES
        };
        (key, values[index % values.len()])
    })
}

/// A selector: often empty (selects everything), else labels and expressions.
fn label_selector(keys: &'static [&'static str]) -> impl Strategy<Value = LabelSelector> {
    let expr = (select(keys), select(OPERATORS), vec(pair(keys), 1..=2));
    let parts = (vec(pair(keys), 0..=1), vec(expr, 0..=2));
    let empty = (Just(Vec::new()), Just(Vec::new()));
    prop_oneof![1 => empty, 2 => parts].prop_map(|(pairs, exprs)| {
        let mut builder = selector();
        for (key, value) in pairs {
            builder = builder.label(key, value);
        }
        for (key, op, values) in exprs {
            let values: Vec<&str> = match op {
                // Values of the expression's own key.
                SelectorOperator::In | SelectorOperator::NotIn => {
                    values.iter().map(|(_, value)| *value).collect()
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist => Vec::new(),
            };
            builder = builder.expr(key, op, values);
        }
        builder.build()
    })
}

/// A port name, mostly `http`.
fn name() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(NAMES[0]), 1 => Just(NAMES[1])]
}

/// A protocol, mostly TCP.
fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![2 => Just(Protocol::Tcp), 1 => Just(Protocol::Udp), 1 => Just(Protocol::Sctp)]
}

/// One `ports` entry, every shape the model has.
fn port_entry() -> impl Strategy<Value = PolicyPort> {
    (0..7u8, protocol(), select(EDGES), select(EDGES), name()).prop_map(
        |(kind, protocol, first, last, name)| {
            let (port, end_port) = match kind {
                0 => (None, None),
                1 => (Some(PortRef::Number(first)), None),
                2 => (Some(PortRef::Name(name.to_string())), None),
                // Valid when last >= first, else matches nothing.
                3 => (Some(PortRef::Number(first)), Some(last)),
                4 => (Some(PortRef::Number(0)), Some(65535)),
                5 => (Some(PortRef::Name(name.to_string())), Some(last)),
                _ => (None, Some(last)),
            };
            PolicyPort {
                protocol,
                port,
                end_port,
            }
        },
    )
}

fn rule_strategy() -> impl Strategy<Value = Rule> {
    // 0: pods, 1: namespaces, 2: pods in namespaces, 3: ipBlock, 4: invalid.
    let peer = (
        prop_oneof![3 => 0..3u8, 2 => Just(3u8), 1 => Just(4u8)],
        label_selector(POD_KEYS),
        label_selector(NS_KEYS),
        0..BLOCKS.len(),
    );
    (vec(peer, 0..=3), vec(port_entry(), 0..=2)).prop_map(|(peers, ports)| {
        let mut builder = rule();
        for (kind, pods, namespaces, block) in peers {
            builder = match kind {
                0 => builder.from_pods(pods),
                1 => builder.from_namespaces(namespaces),
                2 => builder.from_pods_in_namespaces(pods, namespaces),
                3 => builder.from_ip_block(BLOCKS[block].0, BLOCKS[block].1.iter().copied()),
                _ => builder.invalid_peer("spec.ingress[0].from[0].ipBlock.cidr", "not a CIDR"),
            };
        }
        ports
            .into_iter()
            .fold(builder, |b, p| b.port_entry(p))
            .build()
    })
}

pub(super) fn policy_strategy(index: usize) -> impl Strategy<Value = NetworkPolicy> {
    let types = select(
        &[
            None,
            Some((true, false)),
            Some((false, true)),
            Some((true, true)),
            Some((false, false)),
        ][..],
    );
    let rules = || vec(rule_strategy(), 0..=3);
    // Mostly all pods of the namespace, so that most cases isolate some pod.
    let selected = prop_oneof![1 => Just(LabelSelector::default()), 1 => label_selector(POD_KEYS)];
    let audit = prop::bool::weighted(0.35);
    (namespace_index(), selected, types, rules(), rules(), audit).prop_map(
        move |(ns, pods, types, ingress, egress, audit)| {
            let mut builder = netpol(NAMESPACES[ns], &format!("p{index}")).select(pods);
            if audit {
                builder = builder.audit();
            }
            builder = ingress.into_iter().fold(builder, |b, r| b.ingress(r));
            builder = egress.into_iter().fold(builder, |b, r| b.egress(r));
            if let Some((ingress, egress)) = types {
                builder = builder.types(ingress, egress);
            }
            builder.build()
        },
    )
}

/// One ClusterNetworkPolicy rule: every action, peer kind (networks of the
/// ipBlocks' cidrs, nodes by label, invalid ones now and then), port kind.
fn cluster_rule_strategy() -> impl Strategy<Value = ClusterRule> {
    // 0: namespaces, 1: pods, 2: networks, 3: nodes, 4: invalid.
    let peer = (
        prop_oneof![4 => 0..2u8, 2 => Just(2u8), 1 => Just(3u8), 1 => Just(4u8)],
        label_selector(POD_KEYS),
        label_selector(NS_KEYS),
        0..BLOCKS.len(),
        select(&["x", "y"][..]),
    );
    // 0: number, 1: range, 2: name, 3: invalid.
    let port = (
        prop_oneof![3 => 0..2u8, 2 => Just(2u8), 1 => Just(3u8)],
        protocol(),
        select(EDGES),
        select(EDGES),
        name(),
    );
    let action = select(&[RuleAction::Accept, RuleAction::Deny, RuleAction::Pass][..]);
    (action, vec(peer, 1..=2), vec(port, 0..=2)).prop_map(|(action, peers, ports)| {
        let mut built = cluster_rule(action);
        for (kind, pods, namespaces, block, role) in peers {
            built = match kind {
                0 => built.namespaces(namespaces),
                1 => built.pods(namespaces, pods),
                2 => built.networks([BLOCKS[block].0]),
                3 => built.nodes(selector().label("role", role).build()),
                _ => built.invalid_peer("spec.ingress[0].from[0]", "no field set"),
            };
        }
        let mut rule = built.build();
        for (kind, protocol, a, b, name) in ports {
            rule.ports.push(match kind {
                0 => ClusterPort::Ports {
                    protocol,
                    first: a,
                    last: a,
                },
                1 => ClusterPort::Ports {
                    protocol,
                    first: a.min(b),
                    last: a.max(b),
                },
                2 => ClusterPort::Named(name.to_string()),
                _ => ClusterPort::Invalid {
                    field: "spec.ingress[0].protocols[0]".into(),
                    reason: "no field set".into(),
                },
            });
        }
        rule
    })
}

/// ClusterNetworkPolicy `c{index}`: either tier, priorities that tie now and
/// then, subjects by namespace or by pod (rarely invalid), up to three rules a
/// direction, about a third in audit mode.
fn cluster_policy_strategy(index: usize) -> impl Strategy<Value = ClusterNetworkPolicy> {
    let subject = (0..7u8, label_selector(NS_KEYS), label_selector(POD_KEYS));
    let rules = || vec(cluster_rule_strategy(), 0..=3);
    (
        select(&[Tier::Admin, Tier::Baseline][..]),
        0..3u16,
        subject,
        rules(),
        rules(),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            move |(tier, priority, (kind, namespaces, pods), ingress, egress, audit)| {
                let mut built = cnp(&format!("c{index}"), tier, priority);
                built = match kind {
                    0..=2 => built.subject_namespaces(namespaces),
                    3..=5 => built.subject_pods(namespaces, pods),
                    _ => built.subject(ClusterSubject::Invalid {
                        reason: "both set".into(),
                    }),
                };
                built = ingress.into_iter().fold(built, |b, r| b.ingress(r));
                built = egress.into_iter().fold(built, |b, r| b.egress(r));
                if audit {
                    built = built.audit();
                }
                built.build()
            },
        )
}

/// Which addresses a pod has.
#[derive(Clone, Copy, Debug)]
pub(super) enum Family {
    V4,
    V6,
    Dual,
    None,
}

/// What one generated pod is made of: namespace index, labels, addresses, named
/// ports, hostNetwork, on node `n1` (else `n0`).
pub(super) type PodParams = (
    usize,
    Vec<(&'static str, &'static str)>,
    Family,
    Vec<(&'static str, Protocol, u16)>,
    bool,
    bool,
);

/// A pod's parameters.
pub(super) fn pod_strategy() -> impl Strategy<Value = PodParams> {
    let family = prop_oneof![
        2 => Just(Family::Dual),
        2 => Just(Family::V4),
        2 => Just(Family::V6),
        1 => Just(Family::None)
    ];
    // Often one name on one protocol twice (two containers), on different numbers.
    let named = vec((name(), protocol(), select(NAMED_NUMBERS)), 0..=3);
    (
        namespace_index(),
        vec(pair(POD_KEYS), 0..=2),
        family,
        named,
        prop::bool::weighted(0.1),
        any::<bool>(),
    )
}

/// Pod `pod{index}` of `params`, with 10.0.0.(index+1) and fd00::(index+1) as its
/// addresses of the families it has.
pub(super) fn build_pod(index: usize, params: PodParams) -> Pod {
    pod_with_addresses(index, index, params)
}

/// Pod `pod{name}` of `params` with the addresses of index `address`.
pub(super) fn pod_with_addresses(name: usize, address: usize, params: PodParams) -> Pod {
    let (ns, pairs, family, named, host, node) = params;
    let mut built = pod(NAMESPACES[ns], &format!("pod{name}"))
        .labels(pairs)
        .node(if node { "n1" } else { "n0" });
    if matches!(family, Family::V4 | Family::Dual) {
        built = built.ip(&format!("10.0.0.{}", address + 1));
    }
    if matches!(family, Family::V6 | Family::Dual) {
        built = built.ip(&format!("fd00::{:x}", address + 1));
    }
    if host {
        built = built.host_network();
    }
    for (name, protocol, number) in named {
        built = built.named_port(name, number, protocol);
    }
    built.build()
}

/// A cluster of NetworkPolicies only (`cluster_strategy` without
/// ClusterNetworkPolicies).
pub(super) fn network_cluster_strategy() -> impl Strategy<Value = ClusterState> {
    cluster_strategy().prop_map(|mut state| {
        state.cluster_policies.clear();
        state
    })
}

pub(super) fn cluster_strategy() -> impl Strategy<Value = ClusterState> {
    let namespaces = vec(vec(pair(&["team"]), 0..=1), NAMESPACES.len());
    let pods = vec(pod_strategy(), 3..=8);
    // Now and then a pod claims another's addresses (a reused IP while the old
    // pod lingers).
    let twins = vec((0..8usize, pod_strategy()), 0..=1);
    let policies =
        (1..=4usize).prop_flat_map(|count| (0..count).map(policy_strategy).collect::<Vec<_>>());
    let cluster_policies = (0..=3usize)
        .prop_flat_map(|count| (0..count).map(cluster_policy_strategy).collect::<Vec<_>>());
    (namespaces, pods, twins, policies, cluster_policies).prop_map(
        |(ns_labels, pods, twins, policies, cluster_policies)| {
            let mut builder = cluster();
            // Node n0 is labelled role=x, n1 role=y: `nodes` peers pick either.
            for (index, [v4, v6]) in NODES.iter().enumerate() {
                let role = if index == 0 { "x" } else { "y" };
                builder = builder.node(node(&format!("n{index}"), [("role", role)], [*v4, *v6]));
            }
            for policy in cluster_policies {
                builder = builder.cluster_policy(policy);
            }
            for (name, pairs) in NAMESPACES.iter().zip(ns_labels) {
                builder = builder.namespace(namespace(name).labels(pairs).build());
            }
            // Twins only of pod-network pods, and on the pod network themselves:
            // a host-network pod has its node's addresses.
            let on_pod_network: Vec<usize> = (0..pods.len()).filter(|i| !pods[*i].4).collect();
            for (index, params) in pods.into_iter().enumerate() {
                builder = builder.pod(build_pod(index, params));
            }
            for (twin, (of, (ns, pairs, family, named, _, node))) in twins.into_iter().enumerate() {
                let Some(&original) = on_pod_network.get(of % on_pod_network.len().max(1)) else {
                    continue;
                };
                let params = (ns, pairs, family, named, false, node);
                builder = builder.pod(pod_with_addresses(100 + twin, original, params));
            }
            for (index, ip) in CLUSTER_IPS.iter().enumerate() {
                builder =
                    builder.service(service("a", &format!("svc{index}")).cluster_ip(ip).build());
            }
            policies
                .into_iter()
                .fold(builder, |b, p| b.policy(p))
                .build()
        },
    )
}

pub(super) fn parse(text: &str) -> IpAddr {
    text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// One end of a query: an address and, for a pod-network pod, the pod and the index
/// of its node's tables.
#[derive(Clone, Debug)]
struct Side {
    ip: IpAddr,
    pod: Option<(ObjectRef, usize)>,
}

fn sides(state: &ClusterState) -> Vec<Side> {
    let mut out = Vec::new();
    for pod in state.pods.values() {
        let node = usize::from(pod.node_name.as_deref() == Some("n1"));
        for ip in &pod.ips {
            let owner = (!pod.host_network).then(|| (pod.key.clone(), node));
            out.push(Side {
                ip: *ip,
                pod: owner,
            });
        }
    }
    let others = OUTSIDE
        .iter()
        .chain(NODES.iter().flatten())
        .chain(CLUSTER_IPS);
    out.extend(others.map(|text| Side {
        ip: parse(text),
        pod: None,
    }));
    out
}

/// The tables of both nodes, within `budgets`.
pub(super) fn node_tables(state: &ClusterState, budgets: &Budgets) -> [DatapathTables; 2] {
    [0, 1].map(|node| {
        let name = format!("n{node}");
        let addresses: Vec<IpAddr> = NODES[node].iter().map(|text| parse(text)).collect();
        compile_with(
            state,
            &addresses,
            |pod| pod.node_name.as_deref() == Some(name.as_str()),
            budgets,
        )
    })
}

/// Budgets so small that generated clusters overflow them: a policy may take half
/// of each (two rules, six rule sets or entries), the node a dozen entries.
pub(super) const TINY: Budgets = Budgets {
    rules: 4,
    rule_sets: 12,
    policy_entries: 12,
    peers: 1 << 20,
    per_policy_share: 2,
};

/// What one side (egress at the source's veth, ingress at the destination's) does
/// with a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Passage {
    /// The packet passes.
    Passes,
    /// It passes, reported as a would-drop (audit mode).
    WouldDrop,
    /// It is dropped.
    Drops,
}

impl Passage {
    /// The evaluator's side verdict as a passage.
    fn of_evaluator(side: &SideVerdict) -> Self {
        match side {
            SideVerdict::Dropped { .. } | SideVerdict::Denied(_) => Passage::Drops,
            SideVerdict::WouldDrop { .. } | SideVerdict::WouldDeny(_) => Passage::WouldDrop,
            _ => Passage::Passes,
        }
    }

    /// The tables' verdict as a passage.
    fn of_tables(verdict: TableVerdict) -> Self {
        match verdict {
            TableVerdict::Dropped | TableVerdict::Denied(_) | TableVerdict::NotLocal => {
                Passage::Drops
            }
            TableVerdict::WouldDrop | TableVerdict::WouldDeny(_) => Passage::WouldDrop,
            TableVerdict::Unisolated | TableVerdict::Allowed(_) => Passage::Passes,
        }
    }
}

/// Both sides of one query: (egress, ingress).
type Passages = (Passage, Passage);

/// Every query between addresses of one family with a pod side: (query, the
/// evaluator's passages, the tables' passages). Each node's side is evaluated on
/// `state` without the rules its tables refused.
fn verdicts(
    state: &ClusterState,
    tables: &[DatapathTables; 2],
) -> Vec<(Query, Passages, Passages)> {
    let effective = [0, 1].map(|node| without_refused_rules(state, &tables[node].refusals));
    let sides = sides(state);
    let mut out = Vec::new();
    for src in &sides {
        for dst in &sides {
            if src.ip.is_ipv4() != dst.ip.is_ipv4() || (src.pod.is_none() && dst.pod.is_none()) {
                continue;
            }
            // A pod's egress to a ClusterIP is not judged at its veth: the kernel
            // passes it there and decides it after DNAT on the backend's address,
            // which is a pod address these queries cover (tests/lab.rs and
            // tests/datapath.rs pin the deferral itself).
            if src.pod.is_some() && CLUSTER_IPS.iter().any(|ip| parse(ip) == dst.ip) {
                continue;
            }
            // Each side's decision at its own pod's veth, with its own node's tables.
            let egress = src.pod.as_ref().map(|(pod, node)| {
                let t = &tables[*node];
                (t, pod, t.peer(dst.ip))
            });
            let ingress = dst.pod.as_ref().map(|(pod, node)| {
                let t = &tables[*node];
                (t, pod, t.peer(src.ip))
            });
            // Ingress from the destination's own node always passes (kubelet
            // probes); the evaluator leaves node traffic out.
            let from_own_node = dst
                .pod
                .as_ref()
                .is_some_and(|(_, node)| NODES[*node].iter().any(|n| parse(n) == src.ip));
            for &protocol in PROTOCOLS {
                for &port in QUERY_PORTS {
                    let query = Query {
                        src: End::Address(src.ip),
                        dst: End::Address(dst.ip),
                        protocol,
                        port,
                    };
                    // Each side is judged at its own pod (which an address two
                    // pods claim does not name), the remote by its address.
                    let at = |side: &Side| match &side.pod {
                        Some((pod, _)) => End::PodAt(pod.clone(), side.ip),
                        None => End::Address(side.ip),
                    };
                    let from_src = Query {
                        src: at(src),
                        ..query.clone()
                    };
                    let to_dst = Query {
                        dst: at(dst),
                        ..query.clone()
                    };
                    let on = |side: &Side| &effective[side.pod.as_ref().map_or(0, |(_, n)| *n)];
                    let egress_verdict = evaluate(on(src), &from_src).egress;
                    let ingress_verdict = evaluate(on(dst), &to_dst).ingress;
                    let expected = (
                        Passage::of_evaluator(&egress_verdict),
                        if from_own_node {
                            Passage::Passes
                        } else {
                            Passage::of_evaluator(&ingress_verdict)
                        },
                    );
                    let decide = |side: Option<(&DatapathTables, &ObjectRef, _)>, direction| {
                        side.map_or(Passage::Passes, |(t, pod, peer)| {
                            Passage::of_tables(t.verdict_for_peer(
                                pod,
                                direction,
                                peer,
                                protocol.number(),
                                port,
                            ))
                        })
                    };
                    let compiled = (
                        decide(egress, Direction::Egress),
                        decide(ingress, Direction::Ingress),
                    );
                    out.push((query, expected, compiled));
                }
            }
        }
    }
    out
}

/// Cases per run: `PROPTEST_CASES` when set, else 256 (about 6 s in debug; 6,000
/// cases took 134 s and passed).
#[allow(
    clippy::disallowed_methods,
    reason = "a test's knob, read by the test harness, not by the engine"
)]
pub(super) fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn compiled_tables_agree_with_the_evaluator_on_every_query(state in cluster_strategy()) {
        let tables = node_tables(&state, &Budgets::kernel());
        prop_assert!(tables.iter().all(|t| t.refusals.is_empty()));
        for (query, expected, compiled) in verdicts(&state, &tables) {
            prop_assert_eq!(
                compiled, expected,
                "{:?}\nn0:\n{}\nn1:\n{}", query, tables[0], tables[1]
            );
        }
    }

    /// With budgets generated clusters overflow, each node's tables agree with the
    /// evaluator on the state without the policies that node refused: a refused
    /// policy only loses its allows (its pods fail closed), nothing else changes.
    #[test]
    fn tables_that_refused_policies_agree_with_the_evaluator_without_their_rules(
        state in network_cluster_strategy()
    ) {
        let tables = node_tables(&state, &TINY);
        for t in &tables {
            prop_assert!(t.counted_rules().len() <= TINY.rules, "{}", t);
            prop_assert!(t.rule_sets.len() <= TINY.rule_sets, "{}", t);
            prop_assert!(t.policy_entries() <= TINY.policy_entries, "{}", t);
        }
        for (query, expected, compiled) in verdicts(&state, &tables) {
            prop_assert_eq!(
                compiled, expected,
                "{:?}\nn0:\n{}\nn1:\n{}", query, tables[0], tables[1]
            );
        }
    }

    /// With ClusterNetworkPolicies too, budgets they overflow end the compile
    /// (a refused one keeps denying, so it is never refused twice), and each
    /// node's tables agree with the evaluator on the state where each refused
    /// ClusterNetworkPolicy denies everything it has rules for.
    #[test]
    fn refused_cluster_policies_deny_what_they_had_rules_for(state in cluster_strategy()) {
        let tables = node_tables(&state, &TINY);
        for (query, expected, compiled) in verdicts(&state, &tables) {
            prop_assert_eq!(
                compiled, expected,
                "{:?}\nn0:\n{}\nn1:\n{}", query, tables[0], tables[1]
            );
        }
    }
}
