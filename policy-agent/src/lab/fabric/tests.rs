use std::collections::BTreeMap;

use super::*;
use crate::{
    lab::{
        addresses::{node_name, node_pair, PodRange},
        topology::{LabNode, LabPod, TopologyKind},
    },
    model::ObjectRef,
};

/// Two nodes, one pod on each.
fn topology(overlay: Overlay) -> Topology {
    let nodes = (0..2)
        .map(|index| LabNode {
            name: node_name(index),
            netns: format!("run-node{}", index + 1),
            addresses: node_pair(index),
            pod_range: PodRange::of(index, 2),
        })
        .collect();
    let pod = |index: usize| LabPod {
        netns: format!("run-p{index}"),
        host_interface: format!("pw{index}"),
        addresses: PodAddresses {
            v4: format!("10.244.{index}.2")
                .parse()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            v6: format!("fd00:10:244:{index}::2")
                .parse()
                .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
        },
        node: index,
    };
    Topology {
        nodes,
        fabric: Some("run-fabric".to_string()),
        pods: BTreeMap::from([
            (ObjectRef::new("ns", "a"), pod(0)),
            (ObjectRef::new("ns", "b"), pod(1)),
        ]),
        kind: TopologyKind::Routed,
        overlay,
    }
}

#[test]
fn without_an_overlay_the_fabric_and_the_other_node_route_each_pod_to_its_node() {
    let t = topology(Overlay::None);
    let fabric = fabric_lines(&t, 1, "run-node2", node_pair(1));
    assert!(fabric.contains(&"route add 10.244.1.2/32 via 10.10.0.2 dev n2 onlink".to_string()));
    let first = node_lines(&t, 0);
    assert!(first.contains(&format!(
        "route add 10.244.1.2/32 via {GATEWAY_V4} dev {UPLINK} onlink src 10.10.0.1"
    )));
    assert!(
        !first.iter().any(|line| line.contains("10.244.0.2")),
        "a node routes only other nodes' pods: {first:?}"
    );
    assert_eq!(exits(&t), vec![UPLINK]);
}

#[test]
fn with_vxlan_pods_of_other_nodes_go_through_the_vtep_and_the_fabric_knows_nodes_only() {
    let t = topology(Overlay::Vxlan);
    let fabric = fabric_lines(&t, 1, "run-node2", node_pair(1));
    assert!(
        !fabric.iter().any(|line| line.contains("10.244.")),
        "the underlay must not route pod addresses: {fabric:?}"
    );
    let first = node_lines(&t, 0);
    for line in [
        format!("route add 10.244.1.2/32 via 10.244.1.0 dev {VXLAN} onlink src 10.10.0.1"),
        format!("route add fd00:10:244:1::2/128 via fd00:10:244:1:: dev {VXLAN} onlink src fd00:10:10::1"),
        format!("neigh add 10.244.1.0 lladdr {} dev {VXLAN} nud permanent", vtep_mac(1)),
    ] {
        assert!(first.contains(&line), "missing `{line}` in {first:?}");
    }
    assert_eq!(
        forwarding_entries(&t, 0),
        vec![format!(
            "fdb append {} dev {VXLAN} dst 10.10.0.2",
            vtep_mac(1)
        )]
    );
    assert_eq!(exits(&t), vec![UPLINK, VXLAN]);
}
