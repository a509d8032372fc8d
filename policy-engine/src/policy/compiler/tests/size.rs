//! Table size follows distinct label sets and rules, not pods.

use super::*;
use crate::model::{builders::namespace, SelectorOperator};

/// Label sets pods are spread over.
const LABEL_SETS: usize = 20;

/// `pods` (at most 10,240) pods in namespaces ns0..ns3, the i-th with label set
/// i % 20 (app, tier, and a named `http` port whose number depends on the set),
/// half on node n1, a dual-stack address each; policies with pod and namespace selectors, an ipBlock
/// with an except, named ports and an endPort range.
fn cluster_of(pods: usize) -> ClusterState {
    let mut builder = cluster();
    for ns in 0..4 {
        let team = if ns % 2 == 0 { "a" } else { "b" };
        builder = builder.namespace(
            namespace(&format!("ns{ns}"))
                .labels([("team", team)])
                .build(),
        );
    }
    for i in 0..pods {
        let set = i % LABEL_SETS;
        let (app, tier) = (format!("app{}", set % 10), format!("tier{}", set / 10));
        // 10.0.(i % 40).(i / 40): a hundred pods already reach every ipBlock region.
        let (high, low) = (i % 40, i / 40);
        let built = pod(&format!("ns{}", set % 4), &format!("pod{i}"))
            .labels([("app", app.as_str()), ("tier", tier.as_str())])
            .ip(&format!("10.0.{high}.{low}"))
            .ip(&format!("fd00::{:x}", high << 8 | low))
            .named_port("http", 8000 + (set % 3) as u16, Tcp)
            .node(if i % 2 == 0 { "n1" } else { "n2" });
        builder = builder.pod(built.build());
    }
    for ns in 0..4 {
        let ns = format!("ns{ns}");
        builder = builder
            .policy(
                netpol(&ns, "web")
                    .select(
                        selector()
                            .expr("app", SelectorOperator::In, ["app0", "app1", "app2"])
                            .build(),
                    )
                    .ingress(
                        rule()
                            .from_pods(sel("tier", "tier0"))
                            .named_port("http", Tcp)
                            .build(),
                    )
                    .ingress(
                        rule()
                            .from_namespaces(sel("team", "b"))
                            .port_range(9000, 9100, Tcp)
                            .build(),
                    )
                    .ingress(
                        rule()
                            .from_ip_block("10.0.0.0/16", ["10.0.1.0/24"])
                            .port(443, Tcp)
                            .build(),
                    )
                    .build(),
            )
            .policy(
                netpol(&ns, "out")
                    .select(sel("tier", "tier1"))
                    .egress(
                        rule()
                            .to_pods_in_namespaces(sel("app", "app3"), sel("team", "a"))
                            .named_port("http", Tcp)
                            .build(),
                    )
                    .egress(rule().to_ip_block("fd00::/112", ["fd00::/120"]).build())
                    .egress(rule().protocol(Udp).build())
                    .build(),
            );
    }
    builder.build()
}

/// (`RULE_SETS` + `POLICY` entries, endpoint ids, classes, peer prefixes) of node
/// n1's tables.
fn sizes(pods: usize) -> (usize, usize, usize, usize) {
    let tables = on_n1(&cluster_of(pods));
    let ids: std::collections::BTreeSet<u32> =
        tables.endpoints.values().map(|e| e.endpoint_id).collect();
    let classes: std::collections::BTreeSet<u32> =
        tables.peers.values().map(|p| p.class_id).collect();
    eprintln!(
        "{pods} pods: {} RULE_SETS, {} POLICY ({} flat allow entries)",
        tables.rule_sets.len(),
        tables.policy_entries(),
        tables.allow_entries().len()
    );
    (
        tables.rule_sets.len() + tables.policy_entries(),
        ids.len(),
        classes.len(),
        tables.peers.len(),
    )
}

/// 10,000 pods sharing 20 label sets compile to no more than twice the `policy`
/// entries, endpoint ids and peer classes of 100 such pods. The `peers` map is the
/// exception by necessity: it holds one host prefix per pod address (what the
/// kernel classifies packets by), so it grows with pods, plus a few ipBlock
/// prefixes; the test pins that too, so growth elsewhere shows.
#[test]
fn ten_thousand_pods_with_twenty_label_sets_compile_to_tables_no_more_than_twice_those_of_a_hundred(
) {
    let small = sizes(100);
    let large = sizes(10_000);
    assert!(small.0 > 10, "the policies compile to entries: {small:?}");
    assert!(
        large.0 <= 2 * small.0,
        "policy entries: {small:?} -> {large:?}"
    );
    assert!(
        large.1 <= 2 * small.1,
        "endpoint ids: {small:?} -> {large:?}"
    );
    assert!(large.2 <= 2 * small.2, "classes: {small:?} -> {large:?}");
    // Two addresses per pod, and the ipBlock cidrs and excepts.
    assert_eq!(large.3, 2 * 10_000 + 4, "{large:?}");
}
