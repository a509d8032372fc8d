use std::net::Ipv6Addr;

use super::*;
use crate::{
    lab::addresses::PodAddresses,
    model::{
        builders::{cluster, pod},
        Labels, Service, ServicePort,
    },
};

fn lab_pods(state: &ClusterState) -> BTreeMap<ObjectRef, LabPod> {
    state
        .pods
        .keys()
        .enumerate()
        .map(|(i, key)| {
            let n = u8::try_from(i).unwrap_or(u8::MAX);
            let pod = LabPod {
                netns: format!("p{i}"),
                host_interface: format!("pw{i}"),
                addresses: PodAddresses {
                    v4: Ipv4Addr::new(10, 244, 0, 2 + n),
                    v6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2 + u16::from(n)),
                },
                node: 0,
            };
            (key.clone(), pod)
        })
        .collect()
}

fn port(port: u16, target: PortRef, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: None,
        port,
        target_port: target,
        protocol,
    }
}

fn service(ns: &str, name: &str, selector: &[(&str, &str)], ports: Vec<ServicePort>) -> Service {
    let selector: Labels = selector
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Service {
        key: ObjectRef::new(ns, name),
        selector: (!selector.is_empty()).then_some(selector),
        cluster_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))),
        extra_ips: Vec::new(),
        ports,
    }
}

/// web-1 names 8080 "http", web-2 names 9090 "http"; other/web-3 matches the
/// labels but lives in another namespace.
fn state(services: Vec<Service>) -> ClusterState {
    let mut state = cluster()
        .pod(
            pod("x", "web-1")
                .labels([("app", "web")])
                .named_port("http", 8080, Protocol::Tcp)
                .build(),
        )
        .pod(
            pod("x", "web-2")
                .labels([("app", "web")])
                .named_port("http", 9090, Protocol::Tcp)
                .build(),
        )
        .pod(pod("x", "db").labels([("app", "db")]).build())
        .pod(pod("other", "web-3").labels([("app", "web")]).build())
        .build();
    for svc in services {
        state.services.insert(svc.key.clone(), svc);
    }
    state
}

fn backends(route: &ServiceRoute) -> Vec<(String, u16)> {
    route
        .backends
        .iter()
        .map(|b| (b.pod.to_string(), b.port))
        .collect()
}

#[test]
fn backends_are_selected_pods_of_the_namespace_with_named_ports_resolved_per_pod() {
    let s = state(vec![service(
        "x",
        "web",
        &[("app", "web")],
        vec![
            port(80, PortRef::Name("http".into()), Protocol::Tcp),
            port(53, PortRef::Number(5353), Protocol::Udp),
            port(81, PortRef::Name("http".into()), Protocol::Udp),
        ],
    )]);
    let got = routes(&s, &lab_pods(&s));
    assert_eq!(got.len(), 3);
    assert_eq!(
        backends(&got[0]),
        vec![("x/web-1".into(), 8080), ("x/web-2".into(), 9090)]
    );
    assert_eq!(
        backends(&got[1]),
        vec![("x/web-1".into(), 5353), ("x/web-2".into(), 5353)]
    );
    assert!(got[2].backends.is_empty(), "no pod names http for UDP");
}

#[test]
fn services_without_selector_or_with_ipv6_cluster_ips_get_no_backends() {
    let mut v6 = service(
        "x",
        "v6",
        &[("app", "db")],
        vec![port(80, PortRef::Number(80), Protocol::Tcp)],
    );
    v6.cluster_ip = Some("fd00:96::1".parse().unwrap());
    let s = state(vec![
        service(
            "x",
            "bare",
            &[],
            vec![port(80, PortRef::Number(80), Protocol::Tcp)],
        ),
        v6,
    ]);
    let got = routes(&s, &lab_pods(&s));
    assert_eq!(got.len(), 1, "the IPv6 Service is skipped: {got:?}");
    assert!(got[0].backends.is_empty());
}

#[test]
fn a_service_address_is_found_only_where_the_pod_is_the_single_backend() {
    let s = state(vec![
        service(
            "x",
            "all-web",
            &[("app", "web")],
            vec![port(80, PortRef::Number(8080), Protocol::Tcp)],
        ),
        service(
            "x",
            "db",
            &[("app", "db")],
            vec![port(5432, PortRef::Number(5432), Protocol::Tcp)],
        ),
    ]);
    let got = routes(&s, &lab_pods(&s));
    let db = ObjectRef::new("x", "db");
    assert_eq!(
        address_of(&got, &db, 5432, Protocol::Tcp),
        Some("10.96.0.10:5432".parse().unwrap())
    );
    assert_eq!(address_of(&got, &db, 5432, Protocol::Udp), None, "protocol");
    assert_eq!(
        address_of(&got, &db, 80, Protocol::Tcp),
        None,
        "target port"
    );
    let web = ObjectRef::new("x", "web-1");
    assert_eq!(
        address_of(&got, &web, 8080, Protocol::Tcp),
        None,
        "two backends"
    );
}

#[test]
fn the_ruleset_maps_each_service_port_to_a_random_choice_of_endpoint_dnat_chains() {
    let s = state(vec![service(
        "x",
        "web",
        &[("app", "web")],
        vec![port(80, PortRef::Name("http".into()), Protocol::Tcp)],
    )]);
    let text = ruleset(&routes(&s, &lab_pods(&s)));
    assert!(text.starts_with("table ip podwall-lab\ndelete table ip podwall-lab\n"));
    let service_chain = chain_name("service", "x/web/tcp/80");
    assert!(
        text.contains(&format!("10.96.0.10 . tcp . 80 : goto {service_chain}")),
        "{text}"
    );
    assert!(
        text.contains("numgen random mod 2 vmap { 0 : goto endpoint-"),
        "{text}"
    );
    assert!(
        text.contains("meta l4proto tcp dnat to 10.244.0.4:8080"),
        "{text}"
    );
    assert!(
        text.contains("meta l4proto tcp dnat to 10.244.0.5:9090"),
        "{text}"
    );
}

#[test]
fn chain_names_keep_only_characters_nft_accepts_and_stay_distinct() {
    let a = chain_name("service", "x/a b/tcp/80");
    let b = chain_name("service", "x/a_b/tcp/80");
    assert!(a.ends_with("x/a_b/tcp/80"));
    assert_ne!(a, b);
}
