//! Audit mode in the tables: the deciding set shapes ids, flags, isolation and
//! entries; looked up, an audit-only direction gives would-drops.

use super::*;
use crate::policy::tables::{EndpointEntry, Isolation, TableVerdict};

/// Default-deny ingress for app=web, in audit mode.
fn audit_deny_web() -> NetworkPolicy {
    netpol("prod", "audit-deny")
        .select(sel("app", "web"))
        .audit()
        .build()
}

/// Admits everyone to app=web on every port, in audit mode.
fn audit_allow_web() -> NetworkPolicy {
    netpol("prod", "audit-allow")
        .select(sel("app", "web"))
        .ingress(rule().build())
        .audit()
        .build()
}

fn verdict(tables: &DatapathTables, pod: &str, peer: &str, port: u16) -> TableVerdict {
    tables.verdict(&key(pod), Direction::Ingress, ip(peer), 6, port)
}

/// The names of the policies `tables.isolation` holds for `pod`'s ingress.
fn isolating_ingress(tables: &DatapathTables, pod: &str) -> Vec<String> {
    let id = tables.endpoints[&key(pod)].endpoint_id;
    let isolation = tables.isolation.get(&id).cloned().unwrap_or_default();
    isolation
        .ingress
        .iter()
        .map(|p| tables.policy_names[*p as usize].to_string())
        .collect()
}

#[test]
fn an_audit_only_direction_is_isolated_with_its_audit_flag_and_would_drop() {
    let tables = on_n1(&base().policy(audit_deny_web()).build());
    let web = tables.endpoints[&key("prod/web-1")];
    assert!(web.isolated_ingress && web.audit_ingress, "{web:?}");
    assert!(!web.isolated_egress && !web.audit_egress, "{web:?}");
    assert_eq!(
        verdict(&tables, "prod/web-1", "10.0.0.3", 80),
        TableVerdict::WouldDrop
    );
    assert!(TableVerdict::WouldDrop.passes());
    // Audit changes nothing for pods it does not select.
    assert_eq!(
        verdict(&tables, "prod/db", "10.0.0.3", 80),
        TableVerdict::Unisolated
    );
    assert_eq!(
        isolating_ingress(&tables, "prod/web-1"),
        vec!["prod/audit-deny"]
    );
    assert_eq!(
        verdict(&tables, "remote/client", "10.0.0.3", 80),
        TableVerdict::NotLocal
    );
    // `lookup` (no audit distinction): it passes without a rule.
    assert_eq!(
        tables.lookup(
            &key("prod/web-1"),
            Direction::Ingress,
            ip("10.0.0.3"),
            6,
            80
        ),
        Some(None)
    );
    // Enforced, the same policy drops it.
    let enforced = netpol("prod", "audit-deny")
        .select(sel("app", "web"))
        .build();
    let tables = on_n1(&base().policy(enforced).build());
    assert!(!tables.endpoints[&key("prod/web-1")].audit_ingress);
    assert_eq!(
        verdict(&tables, "prod/web-1", "10.0.0.3", 80),
        TableVerdict::Dropped
    );
    assert_eq!(
        tables.lookup(
            &key("prod/web-1"),
            Direction::Ingress,
            ip("10.0.0.3"),
            6,
            80
        ),
        None
    );
}

#[test]
fn an_audit_mode_rule_allows_with_its_own_rule_ref() {
    let tables = on_n1(&base().policy(audit_allow_web()).build());
    let TableVerdict::Allowed(rule) = verdict(&tables, "prod/web-1", "8.8.8.8", 443) else {
        panic!("the audit-mode allow-all must allow:\n{tables}");
    };
    assert_eq!(
        tables.policy_names[rule.policy_id as usize],
        key("prod/audit-allow")
    );
    assert!(tables.endpoints[&key("prod/web-1")].audit_ingress);
}

#[test]
fn beside_an_enforce_mode_policy_audit_ones_leave_no_trace_in_that_direction() {
    let mixed = on_n1(
        &base()
            .policy(web_from_clients())
            .policy(audit_allow_web())
            .policy(audit_deny_web())
            .build(),
    );
    let alone = on_n1(&base().policy(web_from_clients()).build());
    let web = mixed.endpoints[&key("prod/web-1")];
    assert!(web.isolated_ingress && !web.audit_ingress, "{web:?}");
    assert_eq!(isolating_ingress(&mixed, "prod/web-1"), vec!["prod/web"]);
    // The audit-mode allow-all cannot widen: the world and other ports are still
    // dropped.
    for (peer, port) in [("8.8.8.8", 80), ("10.0.0.5", 443)] {
        assert_eq!(
            verdict(&mixed, "prod/web-1", peer, port),
            TableVerdict::Dropped,
            "{peer} {port}"
        );
    }
    // The audit-mode deny cannot narrow nor report: clients are allowed by the
    // enforced rule.
    assert!(matches!(
        verdict(&mixed, "prod/web-1", "10.0.0.3", 80),
        TableVerdict::Allowed(_)
    ));
    // The entries are those of the enforced policy alone.
    let named = |tables: &DatapathTables| -> Vec<(PolicyMatch, String, u32)> {
        tables
            .allow_entries()
            .into_iter()
            .map(|(m, rule)| {
                let name = tables.policy_names[rule.policy_id as usize].to_string();
                (m, name, rule.rule_index)
            })
            .collect()
    };
    assert_eq!(named(&mixed), named(&alone));
    let entries: Vec<EndpointEntry> = mixed.endpoints.values().copied().collect();
    let alone_entries: Vec<EndpointEntry> = alone.endpoints.values().copied().collect();
    assert_eq!(entries, alone_entries);
}

#[test]
fn audit_mode_is_per_direction_in_the_endpoint_flags() {
    let egress_audit = netpol("prod", "egress-audit")
        .select(sel("app", "web"))
        .types(false, true)
        .audit()
        .build();
    let tables = on_n1(
        &base()
            .policy(web_from_clients())
            .policy(egress_audit)
            .build(),
    );
    let web = tables.endpoints[&key("prod/web-1")];
    assert_eq!(
        (
            web.isolated_ingress,
            web.audit_ingress,
            web.isolated_egress,
            web.audit_egress
        ),
        (true, false, true, true)
    );
    let id = web.endpoint_id;
    assert_eq!(
        tables.isolation[&id],
        Isolation {
            ingress: vec![1],
            egress: vec![0],
        },
        "policy ids: 0 = egress-audit, 1 = web"
    );
    assert_eq!(
        tables.verdict(&key("prod/web-1"), Direction::Egress, ip("8.8.8.8"), 6, 53),
        TableVerdict::WouldDrop
    );
}

#[test]
fn every_policy_in_audit_keeps_the_entries_and_flags_every_isolated_direction() {
    let state = base()
        .policy(web_from_clients())
        .policy(netpol("prod", "deny-egress").types(false, true).build())
        .build();
    let enforced = on_n1(&state);
    let audited = on_n1(&state.with_every_policy_in_audit());
    assert_eq!(audited.policy, enforced.policy);
    assert_eq!(audited.isolation, enforced.isolation);
    for (pod, entry) in &audited.endpoints {
        let before = enforced.endpoints[pod];
        assert_eq!(
            (entry.audit_ingress, entry.audit_egress),
            (before.isolated_ingress, before.isolated_egress),
            "{pod}"
        );
        assert_eq!(entry.endpoint_id, before.endpoint_id, "{pod}");
    }
}
