//! ClusterNetworkPolicy tiers: Admin, then NetworkPolicy, then Baseline, then
//! the default; rule order, priorities, Pass, failing closed, audit mode.

use super::*;
use crate::model::{
    builders::{cluster_rule, cnp, node, ClusterBuilder},
    ClusterNetworkPolicy, ClusterSubject,
    RuleAction::{Accept, Deny, Pass},
    Tier::{Admin, Baseline},
};

fn with(policies: Vec<ClusterNetworkPolicy>, netpols: Vec<NetworkPolicy>) -> ClusterState {
    let mut built: ClusterBuilder = base();
    for policy in policies {
        built = built.cluster_policy(policy);
    }
    for policy in netpols {
        built = built.policy(policy);
    }
    built
        .node(node("node-1", [("role", "worker")], ["192.168.0.10"]))
        .build()
}

fn allowed(state: &ClusterState, src: &str, dst: &str, protocol: Protocol, port: u16) -> bool {
    evaluate(state, &query(src, dst, protocol, port)).allowed
}

fn ingress_verdict(state: &ClusterState, src: &str, dst: &str, port: u16) -> SideVerdict {
    evaluate(state, &query(src, dst, Tcp, port)).ingress
}

/// Every pod of prod, as an Admin or Baseline subject.
fn prod() -> crate::model::LabelSelector {
    sel("team", "a")
}

fn deny_from_dev(tier: crate::model::Tier, priority: u16, name: &str) -> ClusterNetworkPolicy {
    cnp(name, tier, priority)
        .subject_namespaces(prod())
        .ingress(
            cluster_rule(Deny)
                .name("no-dev")
                .namespaces(sel("team", "b"))
                .build(),
        )
        .build()
}

fn rule_ref(
    tier: crate::model::Tier,
    policy: &str,
    rule_index: usize,
    rule_name: &str,
) -> ClusterRuleRef {
    ClusterRuleRef {
        tier,
        policy: policy.to_string(),
        rule_index,
        rule_name: rule_name.to_string(),
    }
}

#[test]
fn an_admin_deny_overrides_a_network_policy_allow_and_an_admin_accept_its_deny() {
    let allow_dev = netpol("prod", "web")
        .select(sel("app", "web"))
        .ingress(rule().from_namespaces(sel("team", "b")).build())
        .build();
    let state = with(vec![deny_from_dev(Admin, 10, "guard")], vec![allow_dev]);
    assert_eq!(
        ingress_verdict(&state, "dev/tool", "prod/web", 80),
        SideVerdict::Denied(rule_ref(Admin, "guard", 0, "no-dev"))
    );
    // Prod's own pods are not matched by the Deny: NetworkPolicy decides.
    assert!(!allowed(&state, "prod/client", "prod/web", Tcp, 80));

    let accept = cnp("monitoring", Admin, 5)
        .subject_namespaces(prod())
        .ingress(
            cluster_rule(Accept)
                .pods(sel("team", "a"), sel("app", "client"))
                .port(80, Tcp)
                .build(),
        )
        .build();
    let state = with(vec![accept], vec![netpol("prod", "deny").build()]);
    assert_eq!(
        ingress_verdict(&state, "prod/client", "prod/web", 80),
        SideVerdict::Accepted(rule_ref(Admin, "monitoring", 0, ""))
    );
    assert!(
        !allowed(&state, "prod/client", "prod/web", Tcp, 81),
        "other ports: the NetworkPolicy denies"
    );
    assert!(
        !allowed(&state, "dev/client", "prod/web", Tcp, 80),
        "other namespaces: the NetworkPolicy denies"
    );
}

#[test]
fn pass_hands_the_connection_to_network_policy_then_to_the_baseline() {
    let pass_then_deny = cnp("tenants", Admin, 1)
        .subject_namespaces(prod())
        .ingress(cluster_rule(Pass).namespaces(sel("team", "b")).build())
        .ingress(cluster_rule(Deny).namespaces(selector().build()).build())
        .build();
    // Passed to NetworkPolicy: no policy selects prod/db, so the Baseline tier
    // decides, and with no Baseline policy, the default allows.
    let state = with(vec![pass_then_deny.clone()], vec![]);
    assert!(allowed(&state, "dev/tool", "prod/db", Tcp, 80));
    // The later Deny of the same policy is never read for dev.
    assert!(!allowed(&state, "prod/client", "prod/db", Tcp, 80));
    // A NetworkPolicy selecting db decides what was passed.
    let db_deny = netpol("prod", "db").select(sel("app", "db")).build();
    let state = with(vec![pass_then_deny.clone()], vec![db_deny]);
    assert!(!allowed(&state, "dev/tool", "prod/db", Tcp, 80));
    // No NetworkPolicy: a Baseline deny decides.
    let state = with(
        vec![pass_then_deny, deny_from_dev(Baseline, 0, "base")],
        vec![],
    );
    assert_eq!(
        ingress_verdict(&state, "dev/tool", "prod/db", 80),
        SideVerdict::Denied(rule_ref(Baseline, "base", 0, "no-dev"))
    );
}

#[test]
fn the_baseline_decides_only_pods_network_policy_does_not_select() {
    let allow_dev_to_web = netpol("prod", "web")
        .select(sel("app", "web"))
        .ingress(rule().from_namespaces(sel("team", "b")).build())
        .build();
    let state = with(
        vec![deny_from_dev(Baseline, 0, "base")],
        vec![allow_dev_to_web],
    );
    assert!(
        allowed(&state, "dev/tool", "prod/web", Tcp, 80),
        "web: its NetworkPolicy"
    );
    assert!(
        !allowed(&state, "dev/tool", "prod/db", Tcp, 80),
        "db: the baseline"
    );
    let baseline_pass = cnp("first", Baseline, 0)
        .subject_namespaces(prod())
        .ingress(cluster_rule(Pass).namespaces(sel("team", "b")).build())
        .build();
    let state = with(
        vec![baseline_pass, deny_from_dev(Baseline, 1, "base")],
        vec![],
    );
    assert_eq!(
        ingress_verdict(&state, "dev/tool", "prod/db", 80),
        SideVerdict::Unisolated
    );
}

#[test]
fn lower_priority_values_go_first_then_names_then_rule_order() {
    let accept = |name: &str, priority| {
        cnp(name, Admin, priority)
            .subject_namespaces(prod())
            .ingress(cluster_rule(Accept).namespaces(sel("team", "b")).build())
            .build()
    };
    let state = with(
        vec![accept("z-accept", 5), deny_from_dev(Admin, 9, "a-deny")],
        vec![],
    );
    assert!(allowed(&state, "dev/tool", "prod/db", Tcp, 80));
    let state = with(
        vec![accept("z-accept", 9), deny_from_dev(Admin, 5, "a-deny")],
        vec![],
    );
    assert!(!allowed(&state, "dev/tool", "prod/db", Tcp, 80));
    // Same priority: by name.
    let state = with(
        vec![accept("z-accept", 5), deny_from_dev(Admin, 5, "a-deny")],
        vec![],
    );
    assert!(!allowed(&state, "dev/tool", "prod/db", Tcp, 80));
    assert_eq!(
        crate::policy::cluster::priority_ties(&state),
        vec![(Admin, 5, vec!["a-deny".to_string(), "z-accept".to_string()])]
    );
    // Rule order within one policy.
    let ordered = cnp("ordered", Admin, 0)
        .subject_namespaces(prod())
        .ingress(
            cluster_rule(Accept)
                .namespaces(sel("team", "b"))
                .port(80, Tcp)
                .build(),
        )
        .ingress(cluster_rule(Deny).namespaces(sel("team", "b")).build())
        .build();
    let state = with(vec![ordered], vec![]);
    assert!(allowed(&state, "dev/tool", "prod/db", Tcp, 80));
    assert!(!allowed(&state, "dev/tool", "prod/db", Tcp, 81));
}

#[test]
fn networks_ports_and_named_ports_match_as_upstream_defines_them() {
    let egress = cnp("egress", Admin, 0)
        .subject_namespaces(prod())
        .egress(
            cluster_rule(Accept)
                .networks(["10.0.1.0/24"])
                .port_range(8000, 8100, Tcp)
                .build(),
        )
        .egress(
            cluster_rule(Accept)
                .pods(selector().build(), sel("app", "web"))
                .named_port("http")
                .build(),
        )
        .egress(cluster_rule(Deny).networks(["0.0.0.0/0"]).build())
        .build();
    let state = with(vec![egress], vec![]);
    // A pod's address is in a network: cluster-internal traffic matches too.
    assert!(allowed(&state, "prod/client", "dev/tool", Tcp, 8050));
    assert!(!allowed(&state, "prod/client", "dev/tool", Tcp, 8101));
    assert!(!allowed(&state, "prod/client", "dev/tool", Udp, 8050));
    assert!(!allowed(&state, "prod/client", "8.8.8.8", Udp, 53));
    // The named port resolves on the receiving pod, with its protocol.
    assert!(allowed(&state, "prod/client", "prod/web", Tcp, 8080));
    assert!(!allowed(&state, "prod/client", "prod/web", Udp, 8080));
    assert!(!allowed(&state, "prod/client", "prod/web", Tcp, 80));
    // Pods of other namespaces are not subjects.
    assert!(allowed(&state, "dev/tool", "8.8.8.8", Udp, 53));
}

#[test]
fn nodes_peers_match_the_nodes_addresses() {
    let egress = cnp("no-nodes", Admin, 0)
        .subject_namespaces(prod())
        .egress(cluster_rule(Deny).nodes(sel("role", "worker")).build())
        .build();
    let state = with(vec![egress], vec![]);
    assert!(!allowed(&state, "prod/client", "192.168.0.10", Tcp, 10250));
    assert!(allowed(&state, "prod/client", "192.168.0.11", Tcp, 10250));
}

#[test]
fn rules_the_api_server_would_reject_fail_closed() {
    let bad = |action| {
        cnp("bad", Admin, 0)
            .subject_namespaces(prod())
            .ingress(
                cluster_rule(action)
                    .invalid_peer("spec.ingress[0].from[0]", "no field set")
                    .build(),
            )
            .build()
    };
    // Accept: matches nothing, so later tiers decide (here: the default).
    let state = with(vec![bad(Accept)], vec![netpol("prod", "deny").build()]);
    assert!(!allowed(&state, "dev/tool", "prod/db", Tcp, 80));
    // Deny and Pass: deny everything.
    for action in [Deny, Pass] {
        let state = with(vec![bad(action)], vec![]);
        assert_eq!(
            ingress_verdict(&state, "dev/tool", "prod/db", 80),
            SideVerdict::Denied(rule_ref(Admin, "bad", 0, "")),
            "{action}"
        );
    }
    // An invalid subject selects nothing.
    let policy = cnp("nobody", Admin, 0)
        .subject(ClusterSubject::Invalid {
            reason: "both fields set".into(),
        })
        .ingress(cluster_rule(Deny).namespaces(selector().build()).build())
        .build();
    let state = with(vec![policy], vec![]);
    assert!(allowed(&state, "dev/tool", "prod/db", Tcp, 80));
}

#[test]
fn subjects_never_hold_host_network_pods_and_a_direction_without_rules_is_untouched() {
    let deny_all = cnp("deny-all", Admin, 0)
        .ingress(cluster_rule(Deny).namespaces(selector().build()).build())
        .build();
    let state = with(vec![deny_all], vec![]);
    assert!(!allowed(&state, "dev/tool", "prod/db", Tcp, 80));
    // Egress has no rules: untouched.
    assert!(allowed(&state, "prod/db", "8.8.8.8", Tcp, 80));
    // A hostNetwork pod is no subject, and no namespaces peer holds it.
    assert_eq!(
        evaluate(&state, &query("dev/tool", "prod/host", Tcp, 80)).ingress,
        SideVerdict::HostNetwork
    );
    assert!(allowed(&state, "prod/host", "prod/db", Tcp, 80));
}

#[test]
fn an_audit_mode_cluster_policy_changes_no_verdict_and_names_what_it_would_deny() {
    let audited = ClusterNetworkPolicy {
        mode: PolicyMode::Audit,
        ..deny_from_dev(Admin, 0, "guard")
    };
    let state = with(vec![audited.clone()], vec![]);
    let verdict = evaluate(&state, &query("dev/tool", "prod/db", Tcp, 80));
    assert!(verdict.allowed && verdict.would_drop);
    assert_eq!(
        verdict.ingress,
        SideVerdict::WouldDeny(rule_ref(Admin, "guard", 0, "no-dev"))
    );
    // Enforced denials stay denials; an audit-mode Accept does not override them.
    let accept = cnp("open", Admin, 0)
        .subject_namespaces(prod())
        .ingress(cluster_rule(Accept).namespaces(selector().build()).build())
        .audit()
        .build();
    let state = with(vec![accept], vec![netpol("prod", "deny").build()]);
    let verdict = evaluate(&state, &query("dev/tool", "prod/db", Tcp, 80));
    assert!(!verdict.allowed);
    // An audit-mode NetworkPolicy hides no Baseline deny, and a Baseline deny
    // under an enforced allow is no would-drop.
    let audit_np = netpol("prod", "db")
        .select(sel("app", "db"))
        .audit()
        .build();
    let state = with(vec![deny_from_dev(Baseline, 0, "base")], vec![audit_np]);
    assert_eq!(
        ingress_verdict(&state, "dev/tool", "prod/db", 80),
        SideVerdict::Denied(rule_ref(Baseline, "base", 0, "no-dev"))
    );
    let allow = netpol("prod", "db")
        .select(sel("app", "db"))
        .ingress(rule().build())
        .build();
    let state = with(vec![deny_from_dev(Baseline, 0, "base")], vec![allow]);
    let verdict = evaluate(&state, &query("dev/tool", "prod/db", Tcp, 80));
    assert!(verdict.allowed && !verdict.would_drop);
}

#[test]
fn an_address_two_pods_claim_is_denied_as_either_claimant_would_be() {
    // prod/old lingers with dev/tool's address: the address is no pod, yet the
    // Admin Deny of team b's pods matches it, through dev/tool.
    let state = {
        let mut built: ClusterBuilder = base().pod(
            pod("prod", "old")
                .labels([("app", "old")])
                .ip("10.0.1.4")
                .build(),
        );
        built = built.cluster_policy(deny_from_dev(Admin, 10, "guard"));
        built.build()
    };
    assert_eq!(
        ingress_verdict(&state, "10.0.1.4", "prod/web", 80),
        SideVerdict::Denied(rule_ref(Admin, "guard", 0, "no-dev"))
    );
    // Only a Deny takes a claimant's side: an Accept of team b does not match
    // the address, and neither does anything once the claimants are apart.
    let accept = cnp("let-dev", Admin, 10)
        .subject_namespaces(prod())
        .ingress(
            cluster_rule(Accept)
                .name("dev-in")
                .namespaces(sel("team", "b"))
                .build(),
        )
        .ingress(
            cluster_rule(Deny)
                .name("rest")
                .namespaces(sel("team", "a"))
                .build(),
        )
        .build();
    let state = base()
        .pod(
            pod("prod", "old")
                .labels([("app", "old")])
                .ip("10.0.1.4")
                .build(),
        )
        .cluster_policy(accept)
        .build();
    assert_eq!(
        ingress_verdict(&state, "10.0.1.4", "prod/web", 80),
        SideVerdict::Denied(rule_ref(Admin, "let-dev", 1, "rest"))
    );
}
