//! How the nodes of a lab of more than one reach each other. A fabric namespace
//! stands in for the network between a cluster's machines: every node has a veth
//! `uplink0` to it, and the fabric routes each node's own addresses to its
//! uplink (permanent neighbour entries both ways, so no ARP or neighbour
//! discovery delays a first packet). Pod traffic between nodes then goes one of
//! two ways (`Overlay`):
//!
//! - **no overlay**: the fabric and every other node route each pod's /32 and
//!   /128 to the pod's node, as Calico's BGP mode or kindnet's per-node routes
//!   make them;
//! - **VXLAN**: every node has a VXLAN device `vxlan0` (VNI 1, UDP 4789, from its
//!   own IPv4 address) and routes every pod of another node through it, towards
//!   that node's VTEP address (the network address of its pod range, as flannel
//!   uses) with a permanent neighbour entry and a forwarding-database entry
//!   giving the node's address. The fabric knows node addresses only, so pod
//!   traffic between nodes cannot go any other way.
//!
//! The uplinks carry 9000-byte frames, so a full-size pod packet fits in VXLAN
//! without fragmenting.

use super::{
    addresses::PodAddresses,
    netns,
    topology::{self, Overlay, Topology, TopologyKind, BRIDGE, GATEWAY_V4, GATEWAY_V6, HOST_MAC},
    LabError,
};

/// Each node's veth to the fabric.
pub const UPLINK: &str = "uplink0";
/// Each node's VXLAN device (with `Overlay::Vxlan`). Not `pw...`: the agent's
/// default `--interface-prefix` takes such links for the lab's pod veths.
pub const VXLAN: &str = "vxlan0";
/// The VXLAN network identifier and UDP port the nodes use.
const VXLAN_ID: u32 = 1;
const VXLAN_PORT: u16 = 4789;
/// The MTU of the uplinks: room for a 1500-byte pod packet and VXLAN's 50 bytes.
const UNDERLAY_MTU: u32 = 9000;

/// The MAC of node `node`'s uplink.
fn uplink_mac(node: usize) -> String {
    format!("02:fe:00:00:{:02x}:{:02x}", (node >> 8) & 0xff, node & 0xff)
}

/// The MAC of node `node`'s VXLAN device.
fn vtep_mac(node: usize) -> String {
    format!("02:fd:00:00:{:02x}:{:02x}", (node >> 8) & 0xff, node & 0xff)
}

/// The fabric's end of node `node`'s uplink.
fn fabric_port(node: usize) -> String {
    format!("n{}", node + 1)
}

/// The interfaces of every node that lead to other nodes: where podwall's exit
/// classifiers go (none in a lab of one node).
pub fn exits(topology: &Topology) -> Vec<&'static str> {
    match (&topology.fabric, topology.overlay) {
        (None, _) => Vec::new(),
        (Some(_), Overlay::None) => vec![UPLINK],
        (Some(_), Overlay::Vxlan) => vec![UPLINK, VXLAN],
    }
}

/// Creates the fabric and joins every node of `topology` to it (nothing for a
/// lab of one node). Routes to every pod of the topology are made now, wired or
/// not, so a pod connected later is reachable from the other nodes at once.
pub fn join(topology: &Topology) -> Result<(), LabError> {
    let Some(fabric) = &topology.fabric else {
        return Ok(());
    };
    netns::ip_batch(None, &[format!("netns add {fabric}")])?;
    topology::prepare_ipv6(fabric)?;
    topology::forward(fabric)?;
    let mut lines = vec!["link set lo up".to_string()];
    for (index, node) in topology.nodes.iter().enumerate() {
        lines.extend(fabric_lines(topology, index, &node.netns, node.addresses));
    }
    netns::ip_batch(Some(fabric), &lines)?;
    for (index, node) in topology.nodes.iter().enumerate() {
        netns::ip_batch(Some(&node.netns), &node_lines(topology, index))?;
        if topology.overlay == Overlay::Vxlan {
            netns::bridge_batch(Some(&node.netns), &forwarding_entries(topology, index))?;
        }
    }
    Ok(())
}

/// `ip` commands, run in the fabric, that make node `index`'s uplink and route
/// its address (and without an overlay, its pods) to it.
fn fabric_lines(
    topology: &Topology,
    index: usize,
    node_netns: &str,
    own: PodAddresses,
) -> Vec<String> {
    let port = fabric_port(index);
    let mac = uplink_mac(index);
    let PodAddresses { v4, v6 } = own;
    let mut lines = vec![
        format!(
            "link add {port} address {HOST_MAC} mtu {UNDERLAY_MTU} type veth peer name {UPLINK} \
             address {mac} mtu {UNDERLAY_MTU} netns {node_netns}"
        ),
        format!("link set {port} up"),
        format!("route add {v4}/32 dev {port}"),
        format!("neigh add {v4} lladdr {mac} dev {port} nud permanent"),
        format!("route add {v6}/128 dev {port}"),
        format!("neigh add {v6} lladdr {mac} dev {port} nud permanent"),
    ];
    if topology.overlay == Overlay::None {
        for pod in topology.pods.values().filter(|pod| pod.node == index) {
            let PodAddresses {
                v4: pod_v4,
                v6: pod_v6,
            } = pod.addresses;
            lines.push(format!("route add {pod_v4}/32 via {v4} dev {port} onlink"));
            lines.push(format!("route add {pod_v6}/128 via {v6} dev {port} onlink"));
        }
    }
    lines
}

/// `ip` commands, run in node `index`, that bring its uplink up and route the
/// other nodes and their pods (through the fabric, or through `vxlan0`).
fn node_lines(topology: &Topology, index: usize) -> Vec<String> {
    let Some(node) = topology.nodes.get(index) else {
        return Vec::new();
    };
    let PodAddresses { v4: src4, v6: src6 } = node.addresses;
    let mut lines = vec![
        format!("link set {UPLINK} up"),
        format!("neigh add {GATEWAY_V4} lladdr {HOST_MAC} dev {UPLINK} nud permanent"),
        format!("neigh add {GATEWAY_V6} lladdr {HOST_MAC} dev {UPLINK} nud permanent"),
    ];
    if topology.overlay == Overlay::Vxlan {
        lines.extend([
            format!(
                "link add {VXLAN} address {} mtu 1500 type vxlan id {VXLAN_ID} local {src4} \
                 dstport {VXLAN_PORT} nolearning",
                vtep_mac(index)
            ),
            format!("link set {VXLAN} up"),
        ]);
    }
    for (other, peer) in topology.nodes.iter().enumerate() {
        if other == index {
            continue;
        }
        let PodAddresses { v4, v6 } = peer.addresses;
        lines.push(format!(
            "route add {v4}/32 via {GATEWAY_V4} dev {UPLINK} onlink src {src4}"
        ));
        lines.push(format!(
            "route add {v6}/128 via {GATEWAY_V6} dev {UPLINK} src {src6}"
        ));
        let (via4, via6, dev) = match topology.overlay {
            Overlay::None => (GATEWAY_V4.to_string(), GATEWAY_V6.to_string(), UPLINK),
            Overlay::Vxlan => {
                let vtep = peer.pod_range;
                let mac = vtep_mac(other);
                lines.push(format!(
                    "neigh add {} lladdr {mac} dev {VXLAN} nud permanent",
                    vtep.v4
                ));
                lines.push(format!(
                    "neigh add {} lladdr {mac} dev {VXLAN} nud permanent",
                    vtep.v6
                ));
                (vtep.v4.to_string(), vtep.v6.to_string(), VXLAN)
            }
        };
        for pod in topology.pods.values().filter(|pod| pod.node == other) {
            let PodAddresses {
                v4: pod_v4,
                v6: pod_v6,
            } = pod.addresses;
            lines.push(format!(
                "route add {pod_v4}/32 via {via4} dev {dev} onlink src {src4}"
            ));
            lines.push(format!(
                "route add {pod_v6}/128 via {via6} dev {dev} onlink src {src6}"
            ));
            if topology.kind == TopologyKind::Bridge {
                // The bridge's pods take every address of this node's range for
                // one on their link: the node answers for this pod, which has a
                // manifest address in that range but runs elsewhere.
                lines.extend(
                    pod.addresses
                        .both()
                        .into_iter()
                        .filter(|ip| node.pod_range.contains(*ip))
                        .map(|ip| format!("neigh add proxy {ip} dev {BRIDGE}")),
                );
            }
        }
    }
    lines
}

/// `bridge` commands, run in node `index`, that send each other node's VTEP MAC
/// to that node's address.
fn forwarding_entries(topology: &Topology, index: usize) -> Vec<String> {
    topology
        .nodes
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != index)
        .map(|(other, peer)| {
            format!(
                "fdb append {} dev {VXLAN} dst {}",
                vtep_mac(other),
                peer.addresses.v4
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
