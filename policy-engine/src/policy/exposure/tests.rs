//! Exposure on small clusters: an unisolated pod, ipBlocks with excepts,
//! namespace-wide and selector-only rules, and an Admin tier above them.

use super::*;
use crate::model::{
    builders::{
        cluster, cluster_rule, cnp, namespace, netpol, pod, rule, selector, ClusterBuilder,
    },
    Protocol::Tcp,
    RuleAction, Tier,
};

/// prod (team=a): web (app=web, declares 80/TCP) and db (app=db, 5432/TCP).
#[rustfmt::skip]
fn base() -> ClusterBuilder {
    cluster()
        .namespace(namespace("prod").labels([("team", "a")]).build())
        .pod(pod("prod", "web").labels([("app", "web")]).ip("10.244.0.2").named_port("http", 80, Tcp).build())
        .pod(pod("prod", "db").labels([("app", "db")]).ip("10.244.0.3").named_port("pg", 5432, Tcp).build())
}

fn of<'a>(all: &'a [Exposure], pod: &str) -> &'a Exposure {
    all.iter()
        .find(|e| e.pod == pod)
        .unwrap_or_else(|| panic!("no exposure of {pod}: {all:?}"))
}

fn nets(texts: &[&str]) -> Vec<IpNet> {
    texts
        .iter()
        .map(|t| t.parse().unwrap_or_else(|e| panic!("{t}: {e}")))
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    crate::model::builders::labels(pairs.iter().copied()).into()
}

#[test]
fn a_pod_no_policy_isolates_is_open_to_everything() {
    let all = exposure(&base().build(), &[]);
    let web = of(&all, "prod/web");
    assert_eq!((web.port, web.protocol), (80, Tcp));
    assert_eq!(web.outside, nets(&["0.0.0.0/0", "::/0"]));
    assert!(web.any_namespace && web.own_namespace);
}

#[test]
fn an_ip_block_opens_its_range_less_the_except_and_nothing_else() {
    let db = netpol("prod", "db")
        .select(selector().label("app", "db").build())
        .ingress(
            rule()
                .from_ip_block("192.0.2.0/24", ["192.0.2.128/25"])
                .port(5432, Tcp)
                .build(),
        )
        .build();
    let all = exposure(&base().policy(db).build(), &[]);
    let db = of(&all, "prod/db");
    assert_eq!(db.outside, nets(&["192.0.2.0/24"]));
    assert!(!db.any_namespace && !db.own_namespace);
    assert!(db.new_pods.is_empty(), "{db:?}");
}

#[test]
fn selectors_name_the_new_pods_that_would_reach_a_pod() {
    let db = netpol("prod", "db")
        .select(selector().label("app", "db").build())
        .ingress(
            rule()
                .from_pods(selector().label("app", "web").build())
                .port(5432, Tcp)
                .build(),
        )
        .ingress(
            rule()
                .from_namespaces(selector().label("team", "monitoring").build())
                .build(),
        )
        .build();
    let all = exposure(&base().policy(db).build(), &[]);
    let db = of(&all, "prod/db");
    assert!(db.outside.is_empty());
    assert!(!db.any_namespace && !db.own_namespace);
    assert_eq!(
        db.new_pods,
        vec![
            NewPods {
                namespace: None,
                namespace_labels: labels(&[("team", "monitoring")]),
                pod_labels: labels(&[]),
            },
            NewPods {
                namespace: Some("prod".into()),
                namespace_labels: labels(&[]),
                pod_labels: labels(&[("app", "web")]),
            },
        ]
    );
    // A rule of the whole namespace: any new pod of it reaches web.
    let web = netpol("prod", "web")
        .select(selector().label("app", "web").build())
        .ingress(rule().from_pods(selector().build()).build())
        .build();
    let all = exposure(&base().policy(web).build(), &[]);
    let web = of(&all, "prod/web");
    assert!(web.own_namespace && !web.any_namespace);
}

#[test]
fn an_admin_deny_closes_what_no_network_policy_would() {
    let deny = cnp("guard", Tier::Admin, 10)
        .subject_pods(selector().build(), selector().label("app", "db").build())
        .ingress(
            cluster_rule(RuleAction::Deny)
                .name("outside")
                .networks(["0.0.0.0/0", "::/0"])
                .build(),
        )
        .build();
    let all = exposure(&base().cluster_policy(deny).build(), &[(5432, Tcp)]);
    let db = of(&all, "prod/db");
    assert!(db.outside.is_empty(), "{db:?}");
    // New pods are judged without an address: the networks rule does not
    // match them (reported open; a real pod's address would be denied).
    assert!(db.any_namespace);
    assert!(of(&all, "prod/web").outside == nets(&["0.0.0.0/0", "::/0"]));
}

#[test]
fn a_range_is_found_past_an_except_at_its_start_and_a_named_namespace_is_that_namespace() {
    let db = netpol("prod", "db")
        .select(selector().label("app", "db").build())
        .ingress(
            rule()
                .from_ip_block("172.16.0.0/12", ["172.16.0.0/24"])
                .port(5432, Tcp)
                .build(),
        )
        .ingress(
            rule()
                .from_pods_in_namespaces(
                    selector().label("app", "x").build(),
                    selector()
                        .label(crate::model::NAMESPACE_NAME_LABEL, "dev")
                        .build(),
                )
                .build(),
        )
        .build();
    let all = exposure(
        &base()
            .namespace(namespace("dev").build())
            .policy(db)
            .build(),
        &[],
    );
    let db = of(&all, "prod/db");
    assert_eq!(db.outside, nets(&["172.16.0.0/12"]));
    assert_eq!(
        db.new_pods,
        vec![NewPods {
            namespace: Some("dev".into()),
            namespace_labels: labels(&[]),
            pod_labels: labels(&[("app", "x")]),
        }]
    );
}
