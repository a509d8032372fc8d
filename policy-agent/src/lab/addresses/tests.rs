use super::*;
use crate::model::{
    builders::{cluster, pod},
    PortRef, Service, ServicePort,
};

fn at(map: &BTreeMap<ObjectRef, PlacedPod>, name: &str) -> PodAddresses {
    map[&ObjectRef::new("ns", name)].addresses
}

fn addresses_of(placed: BTreeMap<ObjectRef, PlacedPod>) -> BTreeMap<ObjectRef, PodAddresses> {
    placed
        .into_iter()
        .map(|(key, placed)| (key, placed.addresses))
        .collect()
}

fn service(name: &str, ip: Option<&str>) -> Service {
    Service {
        key: ObjectRef::new("ns", name),
        selector: None,
        cluster_ip: ip.map(|ip| ip.parse().unwrap()),
        extra_ips: Vec::new(),
        ports: vec![ServicePort {
            name: None,
            port: 80,
            target_port: PortRef::Number(80),
            protocol: crate::model::Protocol::Tcp,
        }],
    }
}

#[test]
fn manifest_addresses_of_both_families_are_kept_and_the_rest_allocated_around_them() {
    let s = cluster()
        .pod(pod("ns", "a").ip("10.244.0.2").build())
        .pod(pod("ns", "b").ip("fd00:10:244::2").build())
        .pod(pod("ns", "c").ip("fd00::1").ip("10.1.0.9").build())
        .pod(pod("ns", "d").build())
        .build();
    let got = assign_pods(&s, 1).unwrap();
    assert_eq!(at(&got, "a").v4, "10.244.0.2".parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        at(&got, "a").v6,
        "fd00:10:244::3".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(at(&got, "b").v4, "10.244.0.3".parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        at(&got, "b").v6,
        "fd00:10:244::2".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(at(&got, "c").v4, "10.1.0.9".parse::<Ipv4Addr>().unwrap());
    assert_eq!(at(&got, "c").v6, "fd00::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(at(&got, "d").v4, "10.244.0.4".parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        at(&got, "d").v6,
        "fd00:10:244::4".parse::<Ipv6Addr>().unwrap()
    );
}

#[test]
fn host_network_pods_get_no_lab_address() {
    let s = cluster()
        .pod(pod("ns", "host").ip("192.168.0.10").host_network().build())
        .build();
    assert!(assign_pods(&s, 1).unwrap().is_empty());
}

#[test]
fn two_pods_with_one_address_of_either_family_are_rejected() {
    for ip in ["10.0.0.1", "fd00::1"] {
        let s = cluster()
            .pod(pod("ns", "a").ip(ip).build())
            .pod(pod("ns", "b").ip(ip).build())
            .build();
        assert!(matches!(
            assign_pods(&s, 1),
            Err(LabError::DuplicateAddress { claimant, .. }) if claimant == "pod ns/b"
        ));
    }
}

#[test]
fn a_pod_cannot_take_the_node_address() {
    let s = cluster()
        .pod(pod("ns", "a").ip(&NODE_V4.to_string()).build())
        .build();
    assert!(matches!(
        assign_pods(&s, 1),
        Err(LabError::DuplicateAddress { owner, .. }) if owner == "the lab's node"
    ));
}

#[test]
fn cluster_ips_are_kept_from_the_manifest_then_previous_runs_then_allocated_in_order() {
    let mut s = cluster()
        .pod(pod("ns", "p").ip("10.96.0.3").build())
        .build();
    for svc in [
        service("a", None),
        service("b", Some("10.96.0.2")),
        service("c", None),
        service("d", None),
    ] {
        s.services.insert(svc.key.clone(), svc);
    }
    let pods = addresses_of(assign_pods(&s, 1).unwrap());
    let previous = BTreeMap::from([(ObjectRef::new("ns", "d"), "10.96.7.7".parse().unwrap())]);
    let got = assign_cluster_ips(&s, &pods, 1, &previous).unwrap();
    let ip = |name: &str| got[&ObjectRef::new("ns", name)].to_string();
    assert_eq!(ip("b"), "10.96.0.2", "from the manifest");
    assert_eq!(ip("d"), "10.96.7.7", "kept from before");
    assert_eq!(ip("a"), "10.96.0.4", "skips .2 (Service b) and .3 (a pod)");
    assert_eq!(ip("c"), "10.96.0.5");
}

#[test]
fn a_manifest_cluster_ip_that_a_pod_the_node_or_another_service_has_is_rejected() {
    let base = cluster()
        .pod(pod("ns", "p").ip("10.244.0.9").build())
        .build();
    for (taken, owner) in [
        ("10.244.0.9", "pod ns/p"),
        ("10.10.0.1", "the lab's node"),
        ("10.96.0.2", "Service ns/a"),
    ] {
        let mut s = base.clone();
        for svc in [service("a", Some("10.96.0.2")), service("b", Some(taken))] {
            s.services.insert(svc.key.clone(), svc);
        }
        let pods = addresses_of(assign_pods(&s, 1).unwrap());
        match assign_cluster_ips(&s, &pods, 1, &BTreeMap::new()) {
            Err(LabError::DuplicateAddress {
                claimant,
                owner: got,
                ..
            }) => {
                assert_eq!(claimant, "Service ns/b");
                assert_eq!(got, owner);
            }
            other => panic!("{taken}: expected a duplicate address, got {other:?}"),
        }
    }
}

#[test]
fn pods_go_to_the_node_their_node_name_names_else_round_robin_in_pod_order() {
    let s = cluster()
        .pod(pod("ns", "a").build())
        .pod(pod("ns", "b").node("node-3").build())
        .pod(pod("ns", "c").build())
        .pod(pod("ns", "d").node("elsewhere").build())
        .pod(pod("ns", "e").build())
        .build();
    let got = assign_pods(&s, 3).unwrap();
    let node = |name: &str| got[&ObjectRef::new("ns", name)].node;
    assert_eq!(node("b"), 2, "spec.nodeName node-3");
    // a, c, d (a name that is no lab node), e take turns from the first node.
    assert_eq!([node("a"), node("c"), node("d"), node("e")], [0, 1, 2, 0]);
}

#[test]
fn each_node_hands_out_its_own_pod_range_and_a_one_node_lab_the_whole_range() {
    let s = cluster()
        .pod(pod("ns", "a").build())
        .pod(pod("ns", "b").build())
        .pod(pod("ns", "c").build())
        .build();
    let got = assign_pods(&s, 2).unwrap();
    assert_eq!(at(&got, "a").v4.to_string(), "10.244.0.2");
    assert_eq!(at(&got, "b").v4.to_string(), "10.244.1.2");
    assert_eq!(at(&got, "b").v6.to_string(), "fd00:10:244:1::2");
    assert_eq!(at(&got, "c").v4.to_string(), "10.244.0.3");
    let range = PodRange::of(1, 2);
    assert!(range.contains(IpAddr::V4(at(&got, "b").v4)));
    assert!(!range.contains(IpAddr::V4(at(&got, "a").v4)));
    assert_eq!(range.gateway().v4.to_string(), "10.244.1.1");
    let one = PodRange::of(0, 1);
    assert_eq!(
        (one.v4_text(), one.v6_text()),
        (POD_RANGE_V4.to_string(), POD_RANGE_V6.to_string())
    );
}

#[test]
fn a_pod_cannot_take_another_nodes_address() {
    let s = cluster()
        .pod(pod("ns", "a").ip(&node_pair(2).v4.to_string()).build())
        .build();
    assert!(matches!(
        assign_pods(&s, 3),
        Err(LabError::DuplicateAddress { owner, .. }) if owner == "node node-3"
    ));
}

#[test]
fn a_pod_or_service_cannot_take_a_pod_ranges_network_or_gateway_address() {
    for (ip, nodes, owner) in [
        ("10.244.1.1", 3, "the gateway of node node-2's pod range"),
        (
            "fd00:10:244:2::",
            3,
            "the network address of node node-3's pod range",
        ),
        ("10.244.0.1", 1, "the gateway of the lab's node's pod range"),
    ] {
        let s = cluster().pod(pod("ns", "a").ip(ip).build()).build();
        assert!(
            matches!(
                assign_pods(&s, nodes),
                Err(LabError::DuplicateAddress { owner: got, .. }) if got == owner
            ),
            "{ip} on {nodes} nodes"
        );
        let s = cluster().service(service("s", Some(ip))).build();
        assert!(
            matches!(
                assign_cluster_ips(&s, &BTreeMap::new(), nodes, &BTreeMap::new()),
                Err(LabError::DuplicateAddress { owner: got, .. }) if got == owner
            ),
            "Service at {ip} on {nodes} nodes"
        );
    }
    let s = cluster()
        .pod(pod("ns", "a").ip("10.244.1.2").build())
        .build();
    assert!(assign_pods(&s, 3).is_ok());
}
