//! Each check on a state that triggers it and on one that does not.

use super::*;
use crate::model::{
    builders::{cluster, namespace, netpol, pod, rule, selector, service, ClusterBuilder},
    Protocol::{Sctp, Tcp, Udp},
};

const SCTP: Context = Context {
    sctp_supported: true,
};

/// prod: web (app=web, declares http 8080/TCP) and db (app=db); the kube-system
/// DNS pod; namespace prod labelled team=a.
#[rustfmt::skip]
fn base() -> ClusterBuilder {
    cluster()
        .namespace(namespace("prod").labels([("team", "a")]).build())
        .pod(pod("prod", "web").labels([("app", "web")]).ip("10.244.0.2").named_port("http", 8080, Tcp).build())
        .pod(pod("prod", "db").labels([("app", "db")]).ip("10.244.0.3").build())
        .pod(pod("kube-system", "dns").labels([("k8s-app", "kube-dns")]).ip("10.244.0.9").build())
        .service(service("prod", "web").cluster_ip("10.96.0.20").build())
}

fn sel(key: &str, value: &str) -> LabelSelector {
    selector().label(key, value).build()
}

/// The checks `lint` finds in `state`, with their fields, in order.
fn checks(state: &ClusterState) -> Vec<(Check, String)> {
    lint(state, SCTP)
        .into_iter()
        .map(|f| (f.check, f.field))
        .collect()
}

fn found(state: &ClusterState, check: Check) -> Vec<String> {
    lint(state, SCTP)
        .into_iter()
        .filter(|f| f.check == check)
        .map(|f| f.field)
        .collect()
}

/// db admits web on 5432: nothing to find.
fn db_from_web() -> NetworkPolicy {
    netpol("prod", "db")
        .select(sel("app", "db"))
        .ingress(rule().from_pods(sel("app", "web")).port(5432, Tcp).build())
        .build()
}

#[test]
fn a_sound_policy_has_no_finding() {
    assert_eq!(checks(&base().policy(db_from_web()).build()), vec![]);
}

#[test]
fn a_field_the_api_server_rejects_is_an_error() {
    let bad = netpol("prod", "db")
        .select(sel("app", "db"))
        .ingress(
            rule()
                .invalid_peer(
                    "spec.ingress[0].from[0].ipBlock.cidr",
                    "\"ten\" is not a CIDR",
                )
                .build(),
        )
        .build();
    let findings = lint(&base().policy(bad).build(), SCTP);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].check, Check::InvalidField);
    assert_eq!(findings[0].check.severity(), Severity::Error);
    assert_eq!(findings[0].field, "spec.ingress[0].from[0].ipBlock.cidr");
}

#[test]
fn an_end_port_below_port_or_without_one_is_an_error() {
    let policy = |first: Option<u16>, last: u16| {
        let port = PolicyPort {
            protocol: Tcp,
            port: first.map(PortRef::Number),
            end_port: Some(last),
        };
        let mut r = rule().from_pods(sel("app", "web")).build();
        r.ports = vec![port];
        netpol("prod", "db")
            .select(sel("app", "db"))
            .ingress(r)
            .build()
    };
    for (first, last) in [(Some(80), 79), (None, 90)] {
        assert_eq!(
            found(
                &base().policy(policy(first, last)).build(),
                Check::InvalidEndPort
            ),
            vec!["spec.ingress[0].ports[0].endPort"]
        );
    }
    assert!(found(
        &base().policy(policy(Some(80), 90)).build(),
        Check::InvalidEndPort
    )
    .is_empty());
}

#[test]
fn a_policy_that_selects_no_pod_is_found() {
    let typo = netpol("prod", "db").select(sel("app", "dbb")).build();
    assert_eq!(
        found(&base().policy(typo).build(), Check::SelectsNoPod),
        vec!["spec.podSelector"]
    );
    assert!(found(&base().policy(db_from_web()).build(), Check::SelectsNoPod).is_empty());
}

#[test]
fn an_egress_default_deny_without_dns_is_found_and_one_with_it_is_not() {
    let deny = netpol("prod", "deny-egress").types(false, true).build();
    let state = base().policy(deny.clone()).build();
    assert_eq!(
        found(&state, Check::EgressWithoutDns),
        vec!["spec.policyTypes"]
    );
    let dns = netpol("prod", "dns")
        .types(false, true)
        .egress(rule().port(53, Udp).port(53, Tcp).build())
        .build();
    let state = base().policy(deny.clone()).policy(dns).build();
    assert!(found(&state, Check::EgressWithoutDns).is_empty());
    // By the name the DNS pods give their 53/UDP.
    let named = netpol("prod", "dns")
        .types(false, true)
        .egress(rule().named_port("dns", Udp).build())
        .build();
    let coredns = pod("kube-system", "coredns")
        .labels([("k8s-app", "kube-dns")])
        .named_port("dns", 53, Udp)
        .build();
    let state = base()
        .pod(coredns)
        .policy(deny.clone())
        .policy(named.clone())
        .build();
    assert!(found(&state, Check::EgressWithoutDns).is_empty());
    // A name no pod gives 53/UDP admits no DNS.
    let other = pod("kube-system", "coredns")
        .named_port("dns", 5353, Udp)
        .build();
    let state = base().pod(other).policy(deny).policy(named).build();
    assert_eq!(
        found(&state, Check::EgressWithoutDns),
        vec!["spec.policyTypes", "spec.policyTypes"],
        "both egress policies of the pods"
    );
}

#[test]
fn an_ip_block_over_pod_or_service_addresses_is_found() {
    let policy = |cidr: &str| {
        netpol("prod", "db")
            .select(sel("app", "db"))
            .ingress(rule().from_ip_block(cidr, [""; 0]).build())
            .build()
    };
    for cidr in ["10.244.0.0/24", "10.96.0.0/16"] {
        assert_eq!(
            found(
                &base().policy(policy(cidr)).build(),
                Check::IpBlockCoversCluster
            ),
            vec!["spec.ingress[0].from[0].ipBlock.cidr"],
            "{cidr}"
        );
    }
    assert!(found(
        &base().policy(policy("192.0.2.0/24")).build(),
        Check::IpBlockCoversCluster
    )
    .is_empty());
}

#[test]
fn a_named_port_no_reached_pod_declares_is_found() {
    let policy = |name: &str| {
        netpol("prod", "web")
            .select(sel("app", "web"))
            .ingress(
                rule()
                    .from_pods(sel("app", "db"))
                    .named_port(name, Tcp)
                    .build(),
            )
            .build()
    };
    assert_eq!(
        found(
            &base().policy(policy("htp")).build(),
            Check::NamedPortUndefined
        ),
        vec!["spec.ingress[0].ports[0].port"]
    );
    assert!(found(
        &base().policy(policy("http")).build(),
        Check::NamedPortUndefined
    )
    .is_empty());
    // Egress to the pods that declare it.
    let egress = netpol("prod", "db-out")
        .select(sel("app", "db"))
        .types(false, true)
        .egress(
            rule()
                .to_pods(sel("app", "web"))
                .named_port("http", Tcp)
                .port(53, Udp)
                .build(),
        )
        .build();
    assert!(found(&base().policy(egress).build(), Check::NamedPortUndefined).is_empty());
}

#[test]
fn a_rule_another_rule_covers_is_found() {
    let policy = netpol("prod", "db")
        .select(sel("app", "db"))
        .ingress(rule().from_pods(sel("app", "web")).port(5432, Tcp).build())
        .ingress(rule().from_pods(sel("app", "web")).build())
        .build();
    assert_eq!(
        found(&base().policy(policy).build(), Check::RedundantRule),
        vec!["spec.ingress[0]"]
    );
    let apart = netpol("prod", "db")
        .select(sel("app", "db"))
        .ingress(rule().from_pods(sel("app", "web")).port(5432, Tcp).build())
        .ingress(rule().from_pods(sel("app", "db")).build())
        .build();
    assert!(found(&base().policy(apart).build(), Check::RedundantRule).is_empty());
}

#[test]
fn a_policy_another_covers_and_two_equal_ones_are_found() {
    let wide = netpol("prod", "all-from-web")
        .ingress(rule().from_pods(sel("app", "web")).build())
        .build();
    let state = base().policy(db_from_web()).policy(wide.clone()).build();
    assert_eq!(found(&state, Check::RedundantPolicy), vec!["spec"]);
    assert_eq!(
        lint(&state, SCTP)
            .iter()
            .find(|f| f.check == Check::RedundantPolicy)
            .map(|f| f.policy.to_string()),
        Some("prod/db".to_string())
    );
    let mut twin = db_from_web();
    twin.key = ObjectRef::new("prod", "db-again");
    let state = base().policy(db_from_web()).policy(twin).build();
    assert_eq!(found(&state, Check::EquivalentPolicies), vec!["spec"]);
    assert!(found(&state, Check::RedundantPolicy).is_empty());
    // Audit mode is another meaning: neither covers the other.
    let mut audited = wide;
    audited.mode = crate::model::PolicyMode::Audit;
    let state = base().policy(db_from_web()).policy(audited).build();
    assert!(found(&state, Check::RedundantPolicy).is_empty());
}

#[test]
fn a_selector_on_a_label_nobody_carries_is_found() {
    let policy = netpol("prod", "db")
        .select(sel("app", "db"))
        .ingress(
            rule()
                .peer(Peer::Pods {
                    namespaces: NamespaceScope::Matching(sel("tier", "front")),
                    pods: sel("role", "web"),
                })
                .build(),
        )
        .build();
    assert_eq!(
        found(&base().policy(policy).build(), Check::UnknownLabel),
        vec![
            "spec.ingress[0].from[0].namespaceSelector.matchLabels",
            "spec.ingress[0].from[0].podSelector.matchLabels",
        ]
    );
    let known = netpol("prod", "db")
        .select(sel("app", "db"))
        .ingress(
            rule()
                .peer(Peer::Pods {
                    namespaces: NamespaceScope::Matching(sel("team", "a")),
                    pods: sel("app", "web"),
                })
                .build(),
        )
        .build();
    assert!(found(&base().policy(known).build(), Check::UnknownLabel).is_empty());
}

#[test]
fn an_sctp_port_is_found_only_on_a_kernel_without_sctp() {
    let policy = netpol("prod", "db")
        .select(sel("app", "db"))
        .ingress(rule().from_pods(sel("app", "web")).port(9000, Sctp).build())
        .build();
    let state = base().policy(policy).build();
    let without = Context {
        sctp_supported: false,
    };
    let fields: Vec<String> = lint(&state, without)
        .into_iter()
        .filter(|f| f.check == Check::SctpUnsupported)
        .map(|f| f.field)
        .collect();
    assert_eq!(fields, vec!["spec.ingress[0].ports[0].protocol"]);
    assert!(found(&state, Check::SctpUnsupported).is_empty());
}

#[test]
fn codes_are_stable_and_distinct() {
    let all = [
        Check::InvalidField,
        Check::InvalidEndPort,
        Check::SelectsNoPod,
        Check::EgressWithoutDns,
        Check::IpBlockCoversCluster,
        Check::NamedPortUndefined,
        Check::RedundantRule,
        Check::RedundantPolicy,
        Check::EquivalentPolicies,
        Check::UnknownLabel,
        Check::SctpUnsupported,
    ];
    let codes: BTreeSet<&str> = all.iter().map(|c| c.code()).collect();
    let names: BTreeSet<&str> = all.iter().map(|c| c.name()).collect();
    assert_eq!((codes.len(), names.len()), (all.len(), all.len()));
    assert_eq!(Check::EgressWithoutDns.code(), "PW102");
}

#[test]
fn of_two_policies_that_cover_each_other_only_the_later_is_redundant() {
    let wide = rule().from_pods(sel("app", "web")).build();
    let narrow = rule().from_pods(sel("app", "web")).port(5432, Tcp).build();
    let a = netpol("prod", "a")
        .select(sel("app", "db"))
        .ingress(wide.clone())
        .ingress(narrow)
        .build();
    let b = netpol("prod", "b")
        .select(sel("app", "db"))
        .ingress(wide)
        .build();
    let findings = lint(&base().policy(a).policy(b).build(), SCTP);
    let redundant: Vec<String> = findings
        .iter()
        .filter(|f| f.check == Check::RedundantPolicy)
        .map(|f| f.policy.to_string())
        .collect();
    assert_eq!(redundant, vec!["prod/b"]);
}
