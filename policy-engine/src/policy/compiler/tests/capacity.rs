//! Budgets: peers x ports is no cross product, a policy too big for the maps is
//! refused and fails closed for its pods only, and when the node's tables overflow
//! a bank the largest users are refused, deterministically.

use super::*;
use crate::policy::capacity::{Budgets, RefusalReason, Resource};

/// `team-b/api` on n1 (app=api), admitting TCP 80 from anywhere.
fn with_team_b(builder: ClusterBuilder) -> ClusterBuilder {
    builder
        .pod(
            pod("team-b", "api")
                .labels([("app", "api")])
                .ip("10.0.2.1")
                .node("n1")
                .build(),
        )
        .policy(
            netpol("team-b", "api")
                .select(sel("app", "api"))
                .ingress(rule().port(80, Tcp).build())
                .build(),
        )
}

fn compiled(state: &ClusterState, budgets: &Budgets) -> DatapathTables {
    compile_with(
        state,
        &[],
        |pod| pod.node_name.as_deref() == Some("n1"),
        budgets,
    )
}

#[test]
fn two_hundred_fifty_seven_ip_blocks_times_256_ports_are_one_rule_set_not_a_cross_product() {
    let mut wide = rule();
    for i in 0..257u32 {
        let addr = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(192, 168, 0, 0)) + i);
        wide = wide.from_ip_block(&format!("{addr}/32"), []);
    }
    for port in 0..256u16 {
        wide = wide.port(2000 + 2 * port, Tcp);
    }
    let policy = netpol("prod", "wide")
        .select(sel("app", "web"))
        .ingress(wide.build())
        .build();
    let tables = on_n1(&base().policy(policy).build());
    assert_eq!(tables.refusals, vec![], "it fits");
    // web-1 and web-2 share an endpoint id: one entry per admitted class, and
    // the 256 ports once.
    assert_eq!(tables.rule_sets.len(), 257);
    assert_eq!(tables.policy_entries(), 256);
    assert_eq!(
        tables.policy.len(),
        1,
        "one rule set, shared by every class"
    );
    // One map keyed by (endpoint, class, direction, protocol, port) would need
    // 65,792 entries, over a bank's 65,536.
    assert_eq!(tables.allow_entries().len(), 257 * 256);
    let lookup = |peer: &str, port| allows(&tables, "prod/web-1", Direction::Ingress, peer, port);
    assert!(lookup("192.168.0.5", 2010));
    assert!(lookup("192.168.1.0", 2510), "the 257th block");
    assert!(!lookup("192.168.1.1", 2010), "outside every block");
    assert!(!lookup("192.168.0.5", 2011), "not a listed port");
    assert!(!lookup("10.0.0.3", 2010), "a pod outside the blocks");
}

#[test]
fn a_policy_over_the_rule_budget_is_refused_and_fails_closed_for_its_pods_only() {
    let mut many = netpol("prod", "many").select(sel("app", "db"));
    for port in 1..=16_385u32 {
        let port = u16::try_from(port).unwrap();
        many = many.ingress(
            rule()
                .from_pods(sel("app", "client"))
                .port(port, Tcp)
                .build(),
        );
    }
    let state = with_team_b(base().policy(many.build())).build();
    let tables = on_n1(&state);
    assert_eq!(tables.refusals.len(), 1, "{:?}", tables.refusals);
    let refusal = &tables.refusals[0];
    assert_eq!(
        refusal.reason,
        RefusalReason::PolicyBudget {
            resource: Resource::Rules,
            cost: 16_385,
            budget: 4_096,
        }
    );
    assert_eq!(
        refusal.to_string(),
        "policy prod/many: 16,385 rules exceed the per-policy budget of 4,096; its pods on \
         this node prod/db fail closed (isolated, none of its rules allow)"
    );
    // db stays isolated and none of the refused rules allow.
    assert!(tables.endpoints[&key("prod/db")].isolated_ingress);
    for port in [1, 80, 16_385] {
        assert!(
            !allows(&tables, "prod/db", Direction::Ingress, "10.0.0.3", port),
            "{port}"
        );
    }
    // Everything else programs as before.
    assert!(allows(
        &tables,
        "team-b/api",
        Direction::Ingress,
        "10.0.0.3",
        80
    ));
    assert!(!allows(
        &tables,
        "team-b/api",
        Direction::Ingress,
        "10.0.0.3",
        81
    ));
    assert!(
        allows(&tables, "prod/web-1", Direction::Ingress, "10.0.0.3", 1),
        "not isolated"
    );
    assert_eq!(tables.counted_rules().len(), 1, "team-b's rule only");
}

/// Three policies on three pods, with `ports` single-port TCP entries each.
fn three_policies(ports: [u16; 3]) -> ClusterState {
    let mut builder = base();
    for ((name, app), count) in [("a", "web"), ("b", "client"), ("c", "db")]
        .into_iter()
        .zip(ports)
    {
        let mut any = rule();
        for port in 0..count {
            any = any.port(1000 + port, Tcp);
        }
        builder = builder.policy(
            netpol("prod", name)
                .select(sel("app", app))
                .ingress(any.build())
                .build(),
        );
    }
    builder.build()
}

#[test]
fn when_the_node_overflows_a_bank_the_largest_users_are_refused() {
    let budgets = Budgets {
        rules: 100,
        rule_sets: 100,
        policy_entries: 40,
        peers: 1 << 20,
        per_policy_share: 1,
    };
    let tables = compiled(&three_policies([15, 20, 10]), &budgets);
    let refused: Vec<(String, &RefusalReason)> = tables
        .refusals
        .iter()
        .map(|r| (r.policy.to_string(), &r.reason))
        .collect();
    assert_eq!(
        refused,
        vec![(
            "prod/b".to_string(),
            &RefusalReason::Bank {
                resource: Resource::PolicyEntries,
                wanted: 45,
                capacity: 40,
                cost: 20,
            }
        )]
    );
    assert_eq!(tables.policy_entries(), 25);
    assert!(tables.refusals[0].to_string().starts_with(
        "policy prod/b: the node's tables need 45 POLICY entries, over the 40 one bank holds; \
         refused as one of their largest users (20 of them); its pods on this node prod/client-1, \
         prod/client-2 fail closed"
    ));
    assert!(allows(
        &tables,
        "prod/web-1",
        Direction::Ingress,
        "8.8.8.8",
        1014
    ));
    assert!(!allows(
        &tables,
        "prod/client-1",
        Direction::Ingress,
        "8.8.8.8",
        1000
    ));
    assert!(allows(
        &tables,
        "prod/db",
        Direction::Ingress,
        "8.8.8.8",
        1009
    ));
    // Deterministic: the same input refuses the same policy, ties by name.
    assert_eq!(tables, compiled(&three_policies([15, 20, 10]), &budgets));
    let tied = compiled(&three_policies([20, 20, 5]), &budgets);
    let names: Vec<String> = tied.refusals.iter().map(|r| r.policy.to_string()).collect();
    assert_eq!(names, vec!["prod/b"], "of two equal, the later name");
}

#[test]
fn two_policies_whose_union_overflows_lose_its_largest_user_not_both() {
    // `a` admits 20 addresses on 20 ports (one set of 20); `b` admits each address
    // on a port of its own. Together every class needs a set of 21: 420 entries.
    let blocks: Vec<String> = (0..20).map(|i| format!("192.168.0.{i}/32")).collect();
    let mut wide = rule();
    for block in &blocks {
        wide = wide.from_ip_block(block, []);
    }
    for port in 0..20 {
        wide = wide.port(2000 + port, Tcp);
    }
    let mut each = netpol("prod", "b").select(sel("app", "web"));
    for (i, block) in (0u16..).zip(&blocks) {
        each = each.ingress(rule().from_ip_block(block, []).port(3000 + i, Tcp).build());
    }
    let state = base()
        .policy(
            netpol("prod", "a")
                .select(sel("app", "web"))
                .ingress(wide.build())
                .build(),
        )
        .policy(each.build())
        .build();
    let budgets = Budgets {
        rules: 100,
        rule_sets: 100,
        policy_entries: 200,
        peers: 1 << 20,
        per_policy_share: 4,
    };
    let together = compiled(&state, &Budgets::kernel());
    assert_eq!(together.policy_entries(), 420);
    let tables = compiled(&state, &budgets);
    // Each alone fits (20 entries); `a` makes 400 of the 420 together.
    let names: Vec<String> = tables
        .refusals
        .iter()
        .map(|r| r.policy.to_string())
        .collect();
    assert_eq!(names, vec!["prod/a"]);
    assert_eq!(tables.policy_entries(), 20);
    assert!(!allows(
        &tables,
        "prod/web-1",
        Direction::Ingress,
        "192.168.0.3",
        2019
    ));
    assert!(allows(
        &tables,
        "prod/web-1",
        Direction::Ingress,
        "192.168.0.3",
        3003
    ));
}

#[test]
fn a_policy_over_the_peer_budget_is_refused() {
    let mut blocks = rule();
    for i in 0..9u8 {
        blocks = blocks.from_ip_block(&format!("172.16.{i}.0/24"), []);
    }
    let state = base()
        .policy(
            netpol("prod", "blocks")
                .select(sel("app", "web"))
                .ingress(blocks.build())
                .build(),
        )
        .build();
    let budgets = Budgets {
        peers: 32,
        per_policy_share: 4,
        ..Budgets::kernel()
    };
    let tables = compiled(&state, &budgets);
    assert_eq!(
        tables
            .refusals
            .iter()
            .map(|r| r.reason.clone())
            .collect::<Vec<_>>(),
        vec![RefusalReason::PolicyBudget {
            resource: Resource::PeersV4,
            cost: 9,
            budget: 8,
        }]
    );
    assert!(
        !tables.peers.contains_key(&net("172.16.0.0/24")),
        "its prefixes are gone too"
    );
}
