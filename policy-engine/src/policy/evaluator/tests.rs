//! Tests of the parent module.

#![expect(clippy::unwrap_used, reason = "tests parse address literals")]

use super::*;
use crate::model::{
    builders::{cluster, namespace, netpol, pod, rule, selector},
    Protocol::{Sctp, Tcp, Udp},
};

mod audit;
mod tiers;

/// prod (team=a): web, db, client, a hostNetwork pod; dev (team=b): client, tool.
#[rustfmt::skip]
fn base() -> crate::model::builders::ClusterBuilder {
    cluster()
        .namespace(namespace("prod").labels([("team", "a")]).build())
        .namespace(namespace("dev").labels([("team", "b")]).build())
        .pod(pod("prod", "web").labels([("app", "web")]).ip("10.0.0.1").named_port("http", 8080, Tcp).build())
        .pod(pod("prod", "db").labels([("app", "db")]).ip("10.0.0.2").build())
        .pod(pod("prod", "client").labels([("app", "client")]).ip("10.0.0.3").build())
        .pod(pod("prod", "host").labels([("app", "client")]).ip("192.168.0.10").host_network().build())
        .pod(pod("dev", "client").labels([("app", "client")]).ip("10.0.1.3").build())
        .pod(pod("dev", "tool").labels([("app", "tool")]).ip("10.0.1.4").build())
}

/// `ns/name` is a pod, anything else an address.
fn endpoint(text: &str) -> End {
    match text.split_once('/') {
        Some((ns, name)) => End::Pod(ObjectRef::new(ns, name)),
        None => End::Address(text.parse().unwrap()),
    }
}

/// A side isolated by enforce-mode policies only, none in audit mode beside them.
fn enforced(policies: Vec<PolicyExplanation>) -> SideExplanation {
    SideExplanation::Isolated {
        mode: PolicyMode::Enforce,
        policies,
        ignored_audit: Vec::new(),
    }
}

fn query(src: &str, dst: &str, protocol: Protocol, port: u16) -> Query {
    Query {
        src: endpoint(src),
        dst: endpoint(dst),
        protocol,
        port,
    }
}

fn sel(key: &str, value: &str) -> crate::model::LabelSelector {
    selector().label(key, value).build()
}

type Probe = (&'static str, &'static str, Protocol, u16, bool);

#[test]
#[rustfmt::skip]
fn verdicts_follow_the_network_policy_semantics() {
    let web = || netpol("prod", "web").select(sel("app", "web"));
    let cases: Vec<(&str, Vec<NetworkPolicy>, Vec<Probe>)> = vec![
        ("no_policy_allows_everything", vec![],
         vec![("prod/client", "prod/web", Tcp, 80, true), ("dev/tool", "8.8.8.8", Udp, 53, true)]),
        ("default_deny_ingress_isolates_only_selected_pods", vec![web().build()],
         vec![("prod/client", "prod/web", Tcp, 80, false), ("prod/client", "prod/db", Tcp, 80, true),
              ("prod/web", "prod/db", Tcp, 80, true)]),
        ("default_deny_egress_blocks_only_outgoing_traffic", vec![netpol("prod", "deny").types(false, true).build()],
         vec![("prod/client", "dev/tool", Tcp, 80, false), ("prod/client", "8.8.8.8", Tcp, 443, false),
              ("dev/tool", "prod/client", Tcp, 80, true)]),
        ("policies_in_other_namespaces_do_not_isolate", vec![netpol("dev", "deny").types(true, true).build()],
         vec![("prod/client", "prod/web", Tcp, 80, true)]),
        ("pod_selector_admits_matching_pods_of_the_same_namespace", vec![web().ingress(rule().from_pods(sel("app", "client")).build()).build()],
         vec![("prod/client", "prod/web", Tcp, 80, true), ("dev/client", "prod/web", Tcp, 80, false),
              ("prod/db", "prod/web", Tcp, 80, false)]),
        ("namespace_selector_admits_every_pod_of_matching_namespaces", vec![web().ingress(rule().from_namespaces(sel("team", "b")).build()).build()],
         vec![("dev/tool", "prod/web", Tcp, 80, true), ("dev/client", "prod/web", Tcp, 80, true),
              ("prod/client", "prod/web", Tcp, 80, false)]),
        ("empty_namespace_selector_admits_pods_of_all_namespaces_but_not_addresses", vec![web().ingress(rule().from_namespaces(selector().build()).build()).build()],
         vec![("dev/tool", "prod/web", Tcp, 80, true), ("prod/db", "prod/web", Tcp, 80, true),
              ("8.8.8.8", "prod/web", Tcp, 80, false)]),
        ("namespace_name_label_selects_a_namespace_by_name", vec![web().ingress(rule().from_namespaces(sel("kubernetes.io/metadata.name", "dev")).build()).build()],
         vec![("dev/tool", "prod/web", Tcp, 80, true), ("prod/db", "prod/web", Tcp, 80, false)]),
        ("pod_and_namespace_selector_in_one_peer_are_anded", vec![web().ingress(rule().from_pods_in_namespaces(sel("app", "client"), sel("team", "b")).build()).build()],
         vec![("dev/client", "prod/web", Tcp, 80, true), ("dev/tool", "prod/web", Tcp, 80, false),
              ("prod/client", "prod/web", Tcp, 80, false)]),
        ("pod_and_namespace_selectors_in_two_peers_are_ored", vec![web().ingress(rule().from_pods(sel("app", "client")).from_namespaces(sel("team", "b")).build()).build()],
         vec![("dev/tool", "prod/web", Tcp, 80, true), ("prod/client", "prod/web", Tcp, 80, true),
              ("prod/db", "prod/web", Tcp, 80, false)]),
        ("a_port_admits_only_that_protocol_and_port", vec![web().ingress(rule().port(80, Tcp).build()).build()],
         vec![("prod/client", "prod/web", Tcp, 80, true), ("prod/client", "prod/web", Tcp, 81, false),
              ("prod/client", "prod/web", Udp, 80, false)]),
        ("a_protocol_without_port_admits_all_its_ports", vec![web().ingress(rule().protocol(Udp).build()).build()],
         vec![("prod/client", "prod/web", Udp, 53, true), ("prod/client", "prod/web", Tcp, 53, false)]),
        ("a_rule_without_ports_admits_every_protocol", vec![web().ingress(rule().from_pods(sel("app", "client")).build()).build()],
         vec![("prod/client", "prod/web", Sctp, 9, true), ("prod/client", "prod/web", Udp, 9, true)]),
        ("peers_and_ports_of_one_rule_must_both_match", vec![web().ingress(rule().from_pods(sel("app", "client")).port(80, Tcp).build()).build()],
         vec![("prod/client", "prod/web", Tcp, 80, true), ("prod/db", "prod/web", Tcp, 80, false),
              ("prod/client", "prod/web", Tcp, 443, false)]),
        ("two_policies_add_up", vec![web().ingress(rule().from_pods(sel("app", "client")).port(80, Tcp).build()).build(),
                                     netpol("prod", "web-db").select(sel("app", "web")).ingress(rule().from_pods(sel("app", "db")).port(5432, Tcp).build()).build()],
         vec![("prod/client", "prod/web", Tcp, 80, true), ("prod/db", "prod/web", Tcp, 5432, true),
              ("prod/db", "prod/web", Tcp, 80, false), ("prod/client", "prod/web", Tcp, 5432, false)]),
        ("egress_of_the_client_and_ingress_of_the_server_are_both_required",
         vec![web().ingress(rule().from_pods(sel("app", "client")).build()).build(),
              netpol("prod", "client").select(sel("app", "client")).egress(rule().to_pods(sel("app", "db")).build()).build()],
         vec![("prod/client", "prod/web", Tcp, 80, false), ("prod/client", "prod/db", Tcp, 80, true),
              ("dev/client", "prod/web", Tcp, 80, false), ("prod/db", "prod/web", Tcp, 80, false)]),
        ("ingress_rules_are_ignored_without_the_ingress_type", vec![web().ingress(rule().build()).types(false, true).build()],
         vec![("prod/client", "prod/web", Tcp, 80, true), ("prod/web", "prod/db", Tcp, 80, false)]),
        ("egress_rules_are_ignored_without_the_egress_type", vec![web().egress(rule().to_pods(sel("app", "db")).build()).types(true, false).build()],
         vec![("prod/web", "dev/tool", Tcp, 80, true), ("prod/client", "prod/web", Tcp, 80, false)]),
        ("addresses_outside_the_cluster_match_only_rules_without_peers_or_ip_blocks",
         vec![web().ingress(rule().from_pods(sel("app", "client")).build()).ingress(rule().port(443, Tcp).build()).build()],
         vec![("8.8.8.8", "prod/web", Tcp, 80, false), ("8.8.8.8", "prod/web", Tcp, 443, true)]),
        ("an_address_of_a_pod_is_that_pod", vec![web().ingress(rule().from_pods(sel("app", "client")).build()).build()],
         vec![("10.0.0.3", "prod/web", Tcp, 80, true), ("10.0.0.2", "prod/web", Tcp, 80, false),
              ("10.0.0.3", "10.0.0.1", Tcp, 80, true), ("10.0.0.2", "10.0.0.1", Tcp, 80, false)]),
        ("host_network_pods_are_never_matched_by_pod_selectors", vec![web().ingress(rule().from_namespaces(selector().build()).build()).build()],
         vec![("prod/host", "prod/web", Tcp, 80, false), ("192.168.0.10", "prod/web", Tcp, 80, false)]),
        ("host_network_pods_are_never_isolated", vec![netpol("prod", "deny").types(true, true).build()],
         vec![("dev/tool", "prod/host", Tcp, 80, true), ("prod/host", "dev/tool", Tcp, 80, true),
              ("dev/tool", "prod/web", Tcp, 80, false)]),
        ("ingress_named_ports_resolve_on_the_selected_pod", vec![netpol("prod", "http").ingress(rule().named_port("http", Tcp).build()).build()],
         vec![("prod/client", "prod/web", Tcp, 8080, true), ("prod/client", "prod/web", Tcp, 80, false),
              ("prod/client", "prod/web", Udp, 8080, false), ("prod/client", "prod/db", Tcp, 8080, false)]),
        ("an_unknown_port_name_matches_nothing", vec![web().ingress(rule().named_port("metrics", Tcp).build()).build()],
         vec![("prod/client", "prod/web", Tcp, 8080, false)]),
        ("egress_named_ports_resolve_on_the_destination_pod", vec![netpol("prod", "out").select(sel("app", "client")).egress(rule().named_port("http", Tcp).build()).build()],
         vec![("prod/client", "prod/web", Tcp, 8080, true), ("prod/client", "prod/db", Tcp, 8080, false),
              ("prod/client", "8.8.8.8", Tcp, 8080, false)]),
        ("end_port_admits_an_inclusive_range", vec![web().ingress(rule().port_range(8000, 8100, Tcp).build()).build()],
         vec![("prod/client", "prod/web", Tcp, 8000, true), ("prod/client", "prod/web", Tcp, 8100, true),
              ("prod/client", "prod/web", Tcp, 7999, false), ("prod/client", "prod/web", Tcp, 8101, false)]),
        ("ip_block_admits_its_cidr_minus_the_excepts", vec![web().ingress(rule().from_ip_block("10.0.0.0/16", ["10.0.1.0/24"]).build()).build()],
         vec![("prod/client", "prod/web", Tcp, 80, true), ("dev/client", "prod/web", Tcp, 80, false),
              ("10.0.200.1", "prod/web", Tcp, 80, true), ("10.0.1.200", "prod/web", Tcp, 80, false),
              ("8.8.8.8", "prod/web", Tcp, 80, false)]),
        ("egress_ip_block_applies_to_the_destination", vec![netpol("prod", "out").egress(rule().to_ip_block("0.0.0.0/0", ["10.0.0.0/8"]).build()).build()],
         vec![("prod/client", "8.8.8.8", Tcp, 443, true), ("prod/client", "dev/tool", Tcp, 443, false)]),
    ];
    for (name, policies, probes) in cases {
        let state = policies.into_iter().fold(base(), |c, p| c.policy(p)).build();
        for (src, dst, protocol, port, allowed) in probes {
            let verdict = evaluate(&state, &query(src, dst, protocol, port));
            assert_eq!(verdict.allowed, allowed, "{name}: {src} -> {dst} {protocol}/{port}: {verdict:?}");
        }
    }
}

#[test]
fn the_first_allowing_rule_in_sorted_policy_order_explains_the_verdict() {
    let allow = |name: &str| {
        netpol("prod", name)
            .ingress(rule().port(1, Tcp).build())
            .ingress(rule().build())
            .build()
    };
    let state = base().policy(allow("b")).policy(allow("a")).build();
    let verdict = evaluate(&state, &query("prod/client", "prod/web", Tcp, 80));
    let expected = SideVerdict::Allowed {
        policy: ObjectRef::new("prod", "a"),
        rule_index: 1,
    };
    assert_eq!(
        verdict,
        Verdict {
            allowed: true,
            would_drop: false,
            egress: SideVerdict::Unisolated,
            ingress: expected
        }
    );
}

#[test]
fn a_denied_side_names_every_policy_that_isolates_it() {
    let deny = |name: &str| netpol("prod", name).select(sel("app", "web")).build();
    let state = base().policy(deny("b")).policy(deny("a")).build();
    let verdict = evaluate(&state, &query("8.8.8.8", "prod/web", Tcp, 80));
    let isolated_by = vec![ObjectRef::new("prod", "a"), ObjectRef::new("prod", "b")];
    assert_eq!(
        verdict,
        Verdict {
            allowed: false,
            would_drop: false,
            egress: SideVerdict::NotAPod,
            ingress: SideVerdict::Dropped { isolated_by }
        }
    );
}

#[test]
fn host_network_pods_and_unknown_pods_are_explained() {
    let state = base().build();
    let verdict = evaluate(&state, &query("prod/host", "prod/gone", Tcp, 80));
    assert_eq!(
        (verdict.egress, verdict.ingress),
        (SideVerdict::HostNetwork, SideVerdict::NotAPod)
    );
}

fn rule_match(index: usize, peer_matched: bool, port_matched: bool) -> RuleMatch {
    RuleMatch {
        index,
        peer_matched,
        port_matched,
    }
}

/// prod/web admits app=client on 80/TCP (rule 0) and anyone on 443/TCP (rule 1).
fn web_policy() -> NetworkPolicy {
    netpol("prod", "web")
        .select(sel("app", "web"))
        .ingress(rule().from_pods(sel("app", "client")).port(80, Tcp).build())
        .ingress(rule().port(443, Tcp).build())
        .build()
}

#[test]
fn a_deny_says_the_peer_failed_when_only_the_peer_failed() {
    let state = base().policy(web_policy()).build();
    let explained = explain(&state, &query("prod/db", "prod/web", Tcp, 80));
    let expected = PolicyExplanation {
        policy: ObjectRef::new("prod", "web"),
        rules: vec![rule_match(0, false, true), rule_match(1, true, false)],
    };
    assert_eq!(
        explained,
        Explanation {
            egress: Side::network_only(SideExplanation::Unisolated),
            ingress: Side::network_only(enforced(vec![expected])),
        }
    );
    assert!(!explained.verdict().allowed);
}

#[test]
fn a_deny_says_the_port_failed_when_only_the_port_failed() {
    let state = base().policy(web_policy()).build();
    let explained = explain(&state, &query("prod/client", "prod/web", Tcp, 8080));
    let SideExplanation::Isolated { policies, .. } = &explained.ingress.network else {
        panic!("web is isolated for ingress: {explained:?}");
    };
    assert_eq!(
        policies[0].rules,
        vec![rule_match(0, true, false), rule_match(1, true, false)]
    );
    assert_eq!(
        explained.verdict().ingress,
        SideVerdict::Dropped {
            isolated_by: vec![ObjectRef::new("prod", "web")]
        }
    );
}

#[test]
fn a_deny_reports_both_halves_failing_and_a_rule_less_policy() {
    let deny_egress = netpol("prod", "deny-egress")
        .select(sel("app", "client"))
        .types(false, true)
        .build();
    let state = base().policy(web_policy()).policy(deny_egress).build();
    let explained = explain(&state, &query("dev/tool", "prod/web", Udp, 53));
    let SideExplanation::Isolated { policies, .. } = &explained.ingress.network else {
        panic!("web is isolated for ingress: {explained:?}");
    };
    assert_eq!(
        policies[0].rules,
        vec![rule_match(0, false, false), rule_match(1, true, false)]
    );
    let explained = explain(&state, &query("prod/client", "8.8.8.8", Tcp, 443));
    let no_rules = PolicyExplanation {
        policy: ObjectRef::new("prod", "deny-egress"),
        rules: vec![],
    };
    assert_eq!(explained.egress.network, enforced(vec![no_rules]));
    assert_eq!(explained.ingress.network, SideExplanation::NotAPod);
}

#[test]
fn an_allow_names_the_first_rule_that_matched_and_keeps_the_others() {
    let state = base().policy(web_policy()).build();
    let explained = explain(&state, &query("prod/client", "prod/web", Tcp, 443));
    let SideExplanation::Isolated { policies, .. } = &explained.ingress.network else {
        panic!("web is isolated for ingress: {explained:?}");
    };
    assert_eq!(
        policies[0].rules,
        vec![rule_match(0, true, false), rule_match(1, true, true)]
    );
    assert_eq!(policies[0].allowing_rule(), Some(1));
    let verdict = explained.verdict();
    assert!(verdict.allowed);
    assert_eq!(
        verdict.ingress,
        SideVerdict::Allowed {
            policy: ObjectRef::new("prod", "web"),
            rule_index: 1
        }
    );
}

#[test]
fn sides_no_policy_isolates_are_explained_as_such() {
    let state = base().policy(web_policy()).build();
    let explained = explain(&state, &query("prod/web", "prod/db", Tcp, 5432));
    assert_eq!(
        explained,
        Explanation {
            egress: Side::network_only(SideExplanation::Unisolated),
            ingress: Side::network_only(SideExplanation::Unisolated),
        }
    );
    let explained = explain(&state, &query("prod/host", "8.8.8.8", Tcp, 80));
    assert_eq!(
        (explained.egress.network, explained.ingress.network),
        (SideExplanation::HostNetwork, SideExplanation::NotAPod)
    );
}

#[test]
fn a_dual_stack_pod_is_judged_at_the_address_its_packet_carries() {
    let state = base()
        .pod(
            pod("prod", "dual")
                .labels([("app", "dual")])
                .ip("10.0.0.9")
                .ip("fd00::9")
                .build(),
        )
        .policy(
            netpol("prod", "web-from-v6-block")
                .select(sel("app", "web"))
                .ingress(rule().from_ip_block("fd00::/64", []).build())
                .build(),
        )
        .build();
    let from = |src: End| Query {
        src,
        dst: endpoint("prod/web"),
        protocol: Tcp,
        port: 80,
    };
    let dual = ObjectRef::new("prod", "dual");
    let at = |ip: &str| End::PodAt(dual.clone(), ip.parse().unwrap());
    assert!(
        !evaluate(&state, &from(at("10.0.0.9"))).allowed,
        "IPv4 packet"
    );
    assert!(
        evaluate(&state, &from(at("fd00::9"))).allowed,
        "IPv6 packet"
    );
    assert!(
        evaluate(&state, &from(End::Pod(dual))).allowed,
        "the pod as a whole has an address in the block"
    );
}

#[test]
fn an_address_two_pods_claim_is_no_pod() {
    let state = base()
        .pod(
            pod("prod", "stale")
                .labels([("app", "stale")])
                .ip("10.0.0.3")
                .build(),
        )
        .policy(
            netpol("prod", "web-from-clients")
                .select(sel("app", "web"))
                .ingress(rule().from_pods(sel("app", "client")).build())
                .build(),
        )
        .build();
    // prod/client and prod/stale both claim 10.0.0.3: it cannot be told which one
    // sent a packet, so neither one's labels admit it (as the compiler does).
    assert!(!evaluate(&state, &query("10.0.0.3", "prod/web", Tcp, 80)).allowed);
    assert!(evaluate(&state, &query("prod/client", "prod/web", Tcp, 80)).allowed);
}
