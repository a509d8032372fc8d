//! The lab's network: a "node" namespace with one veth per pod, each pod in a
//! namespace of its own, in both IP families, wired one of two ways
//! (`TopologyKind`):
//!
//! - **routed** (the default), like a Calico node: a pod has its IPv4 address as
//!   /32 and its IPv6 address as /128 on `eth0`, and a default route per family via
//!   a gateway that a permanent neighbour entry points at the host side's MAC
//!   (`169.254.1.1` and the host veth's link-local address). The node has a /32 and
//!   a /128 route and permanent neighbour entries per pod, and forwards between
//!   veths. No ARP, no neighbour discovery and no duplicate address detection is
//!   needed, so the first probe packet is never delayed;
//! - **bridge**, like the bridge CNI and flannel: every host-side veth is a port
//!   of the bridge `pwbr0`, which holds the gateways `10.244.0.1/16` and
//!   `fd00:10:244::1/64`; a pod in the lab's pod ranges has its address with that
//!   prefix length and reaches the other pods on the link (real ARP and neighbour
//!   discovery, which a pod can forge), everything else through the gateway. A pod
//!   whose manifest address is outside the ranges has it as /32 or /128 and is
//!   reached through the gateway both ways. The node passes bridged traffic
//!   through its netfilter hooks (`bridge-nf-call-iptables`), as kube-proxy needs
//!   on a bridge, so a Service's answer between two pods of the bridge is
//!   un-DNATed.
//!
//! The node's own addresses (`addresses::NODE_V4`/`NODE_V6`) sit on the node
//! namespace's loopback (this kernel has no dummy links) and are the preferred
//! source of every route to a pod, so traffic the node itself starts (kubelet
//! probes) comes from them.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    addresses::{PodAddresses, NODE_V4, NODE_V6},
    netns, LabError,
};
use crate::model::ObjectRef;

/// How the pods are wired to the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TopologyKind {
    /// A /32 and /128 route per pod on its own veth (Calico, kindnet).
    #[default]
    Routed,
    /// Every pod veth a port of one bridge holding the pod subnet (bridge CNI,
    /// flannel).
    Bridge,
}

/// The bridge of the bridge topology.
pub const BRIDGE: &str = "pwbr0";
/// The bridge's IPv4 address: the pods' gateway, the first of `POD_RANGE_V4`.
const BRIDGE_V4: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// Prefix length of `addresses::POD_RANGE_V4`.
const BRIDGE_V4_PREFIX: u8 = 16;
/// The bridge's IPv6 address: the first of `POD_RANGE_V6`.
const BRIDGE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 1);
/// Prefix length of `addresses::POD_RANGE_V6`.
const BRIDGE_V6_PREFIX: u8 = 64;

/// MAC of every host-side veth (as Calico does): each veth is its own link.
const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The pods' IPv4 gateway, answered by the permanent neighbour entry.
const GATEWAY_V4: &str = "169.254.1.1";
/// The pods' IPv6 gateway: the link-local address `HOST_MAC` gives the host veth.
const GATEWAY_V6: &str = "fe80::ecee:eeff:feee:eeee";

/// One pod of the lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabPod {
    /// Its network namespace.
    pub netns: String,
    /// Its host-side veth, in the node namespace.
    pub host_interface: String,
    /// Its IPv4 and IPv6 addresses.
    pub addresses: PodAddresses,
}

/// Names of the namespaces of one lab run.
#[derive(Clone, Debug)]
pub struct Topology {
    /// The node namespace.
    pub node: String,
    /// Pods by namespace/name.
    pub pods: BTreeMap<ObjectRef, LabPod>,
    /// How the pods are wired.
    pub kind: TopologyKind,
}

impl Topology {
    /// Every address of the node namespace (ingress from them passes): the
    /// node's own, and on a bridge the gateways it holds there.
    pub fn node_addresses(&self) -> Vec<IpAddr> {
        let mut out = vec![IpAddr::V4(NODE_V4), IpAddr::V6(NODE_V6)];
        if self.kind == TopologyKind::Bridge {
            out.extend([IpAddr::V4(BRIDGE_V4), IpAddr::V6(BRIDGE_V6)]);
        }
        out
    }

    /// Every namespace of this run, node last.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.pods.values().map(|p| p.netns.clone()).collect();
        names.push(self.node.clone());
        names
    }
}

fn pod_mac(index: usize) -> String {
    format!(
        "02:00:00:{:02x}:{:02x}:{:02x}",
        (index >> 16) & 0xff,
        (index >> 8) & 0xff,
        index & 0xff
    )
}

/// Sysctls set in a namespace before its links exist, so links inherit them:
/// IPv6 on, and no duplicate address detection (addresses are usable at once).
fn prepare_ipv6(netns: &str) -> Result<(), LabError> {
    for scope in ["all", "default"] {
        netns::sysctl(netns, &format!("net/ipv6/conf/{scope}/disable_ipv6"), "0")?;
        netns::sysctl(netns, &format!("net/ipv6/conf/{scope}/accept_dad"), "0")?;
    }
    Ok(())
}

/// `ip` commands that give the node namespace its addresses (and, for the bridge
/// topology, the bridge with the pod subnet: its own prefix routes, from the
/// node's addresses, so traffic the node starts comes from them).
fn node_lines(kind: TopologyKind) -> Vec<String> {
    let mut lines = vec![
        "link set lo up".to_string(),
        format!("addr add {NODE_V4}/32 dev lo"),
        format!("addr add {NODE_V6}/128 dev lo nodad"),
    ];
    if kind == TopologyKind::Bridge {
        lines.extend([
            format!("link add {BRIDGE} type bridge"),
            format!("link set {BRIDGE} up"),
            format!("addr add {BRIDGE_V4}/{BRIDGE_V4_PREFIX} dev {BRIDGE} noprefixroute"),
            format!("addr add {BRIDGE_V6}/{BRIDGE_V6_PREFIX} dev {BRIDGE} nodad noprefixroute"),
            format!("route add {} dev {BRIDGE} src {NODE_V4}", v4_subnet()),
            format!("route add {} dev {BRIDGE} src {NODE_V6}", v6_subnet()),
        ]);
    }
    lines
}

/// The bridge's IPv4 subnet (`addresses::POD_RANGE_V4`).
fn v4_subnet() -> String {
    format!(
        "{}/{BRIDGE_V4_PREFIX}",
        Ipv4Addr::from(u32::from(BRIDGE_V4) & !(u32::MAX >> BRIDGE_V4_PREFIX))
    )
}

/// The bridge's IPv6 subnet (`addresses::POD_RANGE_V6`).
fn v6_subnet() -> String {
    format!(
        "{}/{BRIDGE_V6_PREFIX}",
        Ipv6Addr::from(u128::from(BRIDGE_V6) & !(u128::MAX >> BRIDGE_V6_PREFIX))
    )
}

/// Whether `ip` is inside the bridge's subnet of its family.
fn on_bridge_subnet(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let mask = !(u32::MAX >> BRIDGE_V4_PREFIX);
            u32::from(v4) & mask == u32::from(BRIDGE_V4) & mask
        }
        IpAddr::V6(v6) => {
            let mask = !(u128::MAX >> BRIDGE_V6_PREFIX);
            u128::from(v6) & mask == u128::from(BRIDGE_V6) & mask
        }
    }
}

/// `ip` commands, run in the node namespace, that give pod `index` its veth
/// (peer in the pod's namespace) and the node's way to it.
fn node_pod_lines(index: usize, pod: &LabPod, kind: TopologyKind) -> Vec<String> {
    match kind {
        TopologyKind::Routed => routed_node_pod_lines(index, pod),
        TopologyKind::Bridge => bridge_node_pod_lines(index, pod),
    }
}

/// The bridge topology's `node_pod_lines`: a port of the bridge, and a host
/// route through the bridge for an address outside its subnet.
fn bridge_node_pod_lines(index: usize, pod: &LabPod) -> Vec<String> {
    let (host, mac) = (&pod.host_interface, pod_mac(index));
    let mut lines = vec![
        format!(
            "link add {host} type veth peer name eth0 address {mac} netns {}",
            pod.netns
        ),
        format!("link set {host} master {BRIDGE}"),
        format!("link set {host} up"),
    ];
    for ip in pod.addresses.both() {
        if !on_bridge_subnet(ip) {
            let (length, source) = match ip {
                IpAddr::V4(_) => (32, IpAddr::V4(NODE_V4)),
                IpAddr::V6(_) => (128, IpAddr::V6(NODE_V6)),
            };
            lines.push(format!("route add {ip}/{length} dev {BRIDGE} src {source}"));
        }
    }
    lines
}

/// The routed topology's `node_pod_lines`: routes and permanent neighbour
/// entries on the pod's own veth.
fn routed_node_pod_lines(index: usize, pod: &LabPod) -> Vec<String> {
    let (host, mac) = (&pod.host_interface, pod_mac(index));
    let PodAddresses { v4, v6 } = pod.addresses;
    vec![
        format!(
            "link add {host} address {HOST_MAC} type veth peer name eth0 address {mac} netns {}",
            pod.netns
        ),
        format!("link set {host} up"),
        format!("route add {v4}/32 dev {host} src {NODE_V4}"),
        format!("neigh add {v4} lladdr {mac} dev {host} nud permanent"),
        format!("route add {v6}/128 dev {host} src {NODE_V6}"),
        format!("neigh add {v6} lladdr {mac} dev {host} nud permanent"),
    ]
}

/// `ip` commands that give one pod namespace its addresses and routes.
fn pod_lines(pod: &LabPod, kind: TopologyKind) -> Vec<String> {
    match kind {
        TopologyKind::Routed => routed_pod_lines(pod),
        TopologyKind::Bridge => bridge_pod_lines(pod),
    }
}

/// The bridge topology's `pod_lines`: on the bridge's subnet with its prefix
/// length (else as a host address), default routes via the bridge.
fn bridge_pod_lines(pod: &LabPod) -> Vec<String> {
    let PodAddresses { v4, v6 } = pod.addresses;
    let v4_length = if on_bridge_subnet(IpAddr::V4(v4)) {
        BRIDGE_V4_PREFIX
    } else {
        32
    };
    let v6_length = if on_bridge_subnet(IpAddr::V6(v6)) {
        BRIDGE_V6_PREFIX
    } else {
        128
    };
    vec![
        "link set lo up".to_string(),
        "link set eth0 up".to_string(),
        format!("addr add {v4}/{v4_length} dev eth0"),
        format!("route add {BRIDGE_V4} dev eth0 scope link"),
        format!("route add default via {BRIDGE_V4} dev eth0"),
        format!("addr add {v6}/{v6_length} dev eth0 nodad"),
        format!("route add {BRIDGE_V6} dev eth0"),
        format!("route add ::/0 via {BRIDGE_V6} dev eth0"),
    ]
}

/// The routed topology's `pod_lines`.
fn routed_pod_lines(pod: &LabPod) -> Vec<String> {
    let PodAddresses { v4, v6 } = pod.addresses;
    vec![
        "link set lo up".to_string(),
        "link set eth0 up".to_string(),
        format!("addr add {v4}/32 dev eth0"),
        format!("route add {GATEWAY_V4} dev eth0 scope link"),
        format!("route add default via {GATEWAY_V4} dev eth0"),
        format!("neigh add {GATEWAY_V4} lladdr {HOST_MAC} dev eth0 nud permanent"),
        format!("addr add {v6}/128 dev eth0 nodad"),
        format!("neigh add {GATEWAY_V6} lladdr {HOST_MAC} dev eth0 nud permanent"),
        format!("route add ::/0 via {GATEWAY_V6} dev eth0"),
    ]
}

/// Creates the namespaces, veths, addresses and routes for `addresses`, leaving
/// out the pods `connected` rejects: `Topology::connect` wires those later, as a
/// CNI does for a pod scheduled after the agent started.
/// On error, whatever was created is left for the caller's guard to delete.
pub fn create(
    run: &str,
    addresses: &BTreeMap<ObjectRef, PodAddresses>,
    connected: impl Fn(&ObjectRef) -> bool,
    kind: TopologyKind,
) -> Result<Topology, LabError> {
    let node = format!("{run}-node");
    let pods: BTreeMap<ObjectRef, LabPod> = addresses
        .iter()
        .enumerate()
        .map(|(i, (key, addresses))| {
            let pod = LabPod {
                netns: format!("{run}-p{i}"),
                host_interface: format!("pw{i}"),
                addresses: *addresses,
            };
            (key.clone(), pod)
        })
        .collect();
    let topology = Topology { node, pods, kind };
    netns::ip_batch(None, &[format!("netns add {}", topology.node)])?;
    prepare_ipv6(&topology.node)?;
    netns::sysctl(&topology.node, "net/ipv4/ip_forward", "1")?;
    netns::sysctl(&topology.node, "net/ipv6/conf/all/forwarding", "1")?;
    if kind == TopologyKind::Bridge {
        // Bridged traffic through the node's netfilter hooks (conntrack, NAT),
        // as kube-proxy requires on a bridge.
        netns::sysctl(&topology.node, "net/bridge/bridge-nf-call-iptables", "1")?;
        netns::sysctl(&topology.node, "net/bridge/bridge-nf-call-ip6tables", "1")?;
    }
    netns::ip_batch(Some(&topology.node), &node_lines(kind))?;
    let now: Vec<ObjectRef> = topology
        .pods
        .keys()
        .filter(|k| connected(k))
        .cloned()
        .collect();
    topology.connect_all(&now)?;
    Ok(topology)
}

impl Topology {
    /// Creates `pods`' namespaces, veths, addresses and routes (the node namespace
    /// exists already).
    pub fn connect_all(&self, pods: &[ObjectRef]) -> Result<(), LabError> {
        let mut wired = Vec::new();
        for key in pods {
            let (index, pod) = self
                .pods
                .iter()
                .enumerate()
                .find(|(_, (k, _))| *k == key)
                .map(|(i, (_, pod))| (i, pod))
                .ok_or_else(|| LabError::UnknownPod {
                    pod: key.to_string(),
                })?;
            wired.push((index, pod));
        }
        let adds: Vec<String> = wired
            .iter()
            .map(|(_, pod)| format!("netns add {}", pod.netns))
            .collect();
        netns::ip_batch(None, &adds)?;
        let mut lines = Vec::new();
        for (index, pod) in &wired {
            prepare_ipv6(&pod.netns)?;
            lines.extend(node_pod_lines(*index, pod, self.kind));
        }
        netns::ip_batch(Some(&self.node), &lines)?;
        for (_, pod) in &wired {
            netns::ip_batch(Some(&pod.netns), &pod_lines(pod, self.kind))?;
        }
        Ok(())
    }
}
