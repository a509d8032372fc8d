//! The lab's network: one or more "node" namespaces with one veth per pod of
//! theirs, each pod in a namespace of its own, in both IP families, wired to its
//! node one of two ways (`TopologyKind`):
//!
//! - **routed** (the default), like a Calico node: a pod has its IPv4 address as
//!   /32 and its IPv6 address as /128 on `eth0`, and a default route per family via
//!   a gateway that a permanent neighbour entry points at the host side's MAC
//!   (`169.254.1.1` and the host veth's link-local address). The node has a /32 and
//!   a /128 route and permanent neighbour entries per pod, and forwards between
//!   veths. No ARP, no neighbour discovery and no duplicate address detection is
//!   needed, so the first probe packet is never delayed;
//! - **bridge**, like the bridge CNI and flannel: every host-side veth is a port
//!   of the bridge `pwbr0`, which holds the first addresses of the node's pod
//!   range (`10.244.0.1/16` and `fd00:10:244::1/64` on a one-node lab) as
//!   gateways; a pod in that range has its address with the range's prefix length
//!   and reaches the node's other pods on the link (real ARP and neighbour
//!   discovery, which a pod can forge), everything else through the gateway. A pod
//!   whose manifest address is outside the range has it as /32 or /128 and is
//!   reached through the gateway both ways. The node passes bridged traffic
//!   through its netfilter hooks (`bridge-nf-call-iptables`), as kube-proxy needs
//!   on a bridge, so a Service's answer between two pods of the bridge is
//!   un-DNATed.
//!
//! A node's own addresses (`addresses::node_pair`) sit on its namespace's
//! loopback (this kernel has no dummy links) and are the preferred source of
//! every route to a pod, so traffic the node itself starts (kubelet probes) comes
//! from them. The nodes of a lab of more than one are joined as `fabric` says.

use std::{collections::BTreeMap, net::IpAddr};

use super::{
    addresses::{self, PlacedPod, PodAddresses, PodRange, MAX_NODES},
    fabric, netns, LabError,
};
use crate::model::ObjectRef;

/// How the pods are wired to their node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TopologyKind {
    /// A /32 and /128 route per pod on its own veth (Calico, kindnet).
    #[default]
    Routed,
    /// Every pod veth a port of one bridge holding the node's pod range (bridge
    /// CNI, flannel).
    Bridge,
}

/// How pod traffic crosses from one node to another (a lab of more than one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overlay {
    /// The underlay routes pod addresses itself (Calico's BGP mode, kindnet).
    #[default]
    None,
    /// Pod traffic between nodes travels in VXLAN between the nodes' own
    /// addresses (flannel, Calico's VXLAN mode); the underlay routes node
    /// addresses only.
    Vxlan,
}

/// The shape of a lab: how many nodes, how pods are wired to their node and how
/// pod traffic crosses between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// How pods are wired to their node.
    pub kind: TopologyKind,
    /// How many nodes (1 to `addresses::MAX_NODES`).
    pub nodes: usize,
    /// How pod traffic crosses between nodes.
    pub overlay: Overlay,
}

impl Default for Layout {
    /// One node, routed pods.
    fn default() -> Self {
        Self::single(TopologyKind::Routed)
    }
}

impl Layout {
    /// One node with pods wired as `kind` says.
    pub fn single(kind: TopologyKind) -> Self {
        Self {
            kind,
            nodes: 1,
            overlay: Overlay::None,
        }
    }

    /// Fails, saying why, when a lab cannot be built this way.
    pub fn check(&self) -> Result<(), LabError> {
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return Err(LabError::Layout {
                reason: format!("a lab has 1 to {MAX_NODES} nodes, not {}", self.nodes),
            });
        }
        if self.overlay == Overlay::Vxlan && self.nodes < 2 {
            return Err(LabError::Layout {
                reason: "an overlay carries pod traffic between nodes: give 2 or more nodes"
                    .to_string(),
            });
        }
        Ok(())
    }
}

/// The bridge of the bridge topology.
pub const BRIDGE: &str = "pwbr0";

/// MAC of every host-side veth (as Calico does): each veth is its own link. The
/// fabric's end of every node's uplink has it too.
pub(super) const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The pods' IPv4 gateway, answered by a permanent neighbour entry (and the
/// nodes' gateway into the fabric).
pub(super) const GATEWAY_V4: &str = "169.254.1.1";
/// The IPv6 gateway: the link-local address `HOST_MAC` gives a link.
pub(super) const GATEWAY_V6: &str = "fe80::ecee:eeff:feee:eeee";

/// One node of the lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabNode {
    /// Its Kubernetes name (`addresses::node_name`).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its own addresses.
    pub addresses: PodAddresses,
    /// Where its pods' addresses come from.
    pub pod_range: PodRange,
}

/// One pod of the lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabPod {
    /// Its network namespace.
    pub netns: String,
    /// Its host-side veth, in its node's namespace.
    pub host_interface: String,
    /// Its IPv4 and IPv6 addresses.
    pub addresses: PodAddresses,
    /// The index of its node in `Topology::nodes`.
    pub node: usize,
}

/// Names of the namespaces of one lab run.
#[derive(Clone, Debug)]
pub struct Topology {
    /// The nodes, first to last (at least one).
    pub nodes: Vec<LabNode>,
    /// The namespace joining the nodes (a lab of more than one).
    pub fabric: Option<String>,
    /// Pods by namespace/name.
    pub pods: BTreeMap<ObjectRef, LabPod>,
    /// How the pods are wired.
    pub kind: TopologyKind,
    /// How pod traffic crosses between nodes.
    pub overlay: Overlay,
}

impl Topology {
    /// Every address of node `node`'s namespace (ingress from them passes): the
    /// node's own, and on a bridge the gateways it holds there.
    pub fn node_addresses(&self, node: usize) -> Vec<IpAddr> {
        let Some(lab_node) = self.nodes.get(node) else {
            return Vec::new();
        };
        let mut out = lab_node.addresses.both().to_vec();
        if self.kind == TopologyKind::Bridge {
            out.extend(lab_node.pod_range.gateway().both());
        }
        out
    }

    /// The first node's namespace (a one-node lab's only one).
    pub fn first_node(&self) -> &str {
        self.nodes.first().map_or("", |node| node.netns.as_str())
    }

    /// The node `pod` runs on.
    pub fn node_of(&self, pod: &LabPod) -> Option<&LabNode> {
        self.nodes.get(pod.node)
    }

    /// Every namespace of this run: pods, then nodes, then the fabric.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.pods.values().map(|p| p.netns.clone()).collect();
        names.extend(self.nodes.iter().map(|node| node.netns.clone()));
        names.extend(self.fabric.clone());
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
pub(super) fn prepare_ipv6(netns: &str) -> Result<(), LabError> {
    for scope in ["all", "default"] {
        netns::sysctl(netns, &format!("net/ipv6/conf/{scope}/disable_ipv6"), "0")?;
        netns::sysctl(netns, &format!("net/ipv6/conf/{scope}/accept_dad"), "0")?;
    }
    Ok(())
}

/// Makes `netns` forward both families (a node, the fabric).
pub(super) fn forward(netns: &str) -> Result<(), LabError> {
    netns::sysctl(netns, "net/ipv4/ip_forward", "1")?;
    netns::sysctl(netns, "net/ipv6/conf/all/forwarding", "1")
}

/// `ip` commands that give a node namespace its addresses (and, for the bridge
/// topology, the bridge with the node's pod range: its own prefix routes, from
/// the node's addresses, so traffic the node starts comes from them).
fn node_lines(node: &LabNode, kind: TopologyKind) -> Vec<String> {
    let PodAddresses { v4, v6 } = node.addresses;
    let mut lines = vec![
        "link set lo up".to_string(),
        format!("addr add {v4}/32 dev lo"),
        format!("addr add {v6}/128 dev lo nodad"),
    ];
    if kind == TopologyKind::Bridge {
        let range = node.pod_range;
        let gateway = range.gateway();
        lines.extend([
            format!("link add {BRIDGE} type bridge"),
            format!("link set {BRIDGE} up"),
            format!(
                "addr add {}/{} dev {BRIDGE} noprefixroute",
                gateway.v4, range.v4_prefix
            ),
            format!(
                "addr add {}/{} dev {BRIDGE} nodad noprefixroute",
                gateway.v6, range.v6_prefix
            ),
            format!("route add {} dev {BRIDGE} src {v4}", range.v4_text()),
            format!("route add {} dev {BRIDGE} src {v6}", range.v6_text()),
        ]);
    }
    lines
}

/// `ip` commands, run in `node`'s namespace, that give pod `index` its veth
/// (peer in the pod's namespace) and the node's way to it.
fn node_pod_lines(index: usize, pod: &LabPod, node: &LabNode, kind: TopologyKind) -> Vec<String> {
    match kind {
        TopologyKind::Routed => routed_node_pod_lines(index, pod, node),
        TopologyKind::Bridge => bridge_node_pod_lines(index, pod, node),
    }
}

/// The bridge topology's `node_pod_lines`: a port of the bridge, and a host
/// route through the bridge for an address outside its node's pod range.
fn bridge_node_pod_lines(index: usize, pod: &LabPod, node: &LabNode) -> Vec<String> {
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
        if !node.pod_range.contains(ip) {
            let (length, source) = match ip {
                IpAddr::V4(_) => (32, IpAddr::V4(node.addresses.v4)),
                IpAddr::V6(_) => (128, IpAddr::V6(node.addresses.v6)),
            };
            lines.push(format!("route add {ip}/{length} dev {BRIDGE} src {source}"));
        }
    }
    lines
}

/// The routed topology's `node_pod_lines`: routes and permanent neighbour
/// entries on the pod's own veth.
fn routed_node_pod_lines(index: usize, pod: &LabPod, node: &LabNode) -> Vec<String> {
    let (host, mac) = (&pod.host_interface, pod_mac(index));
    let PodAddresses { v4, v6 } = pod.addresses;
    let PodAddresses {
        v4: node_v4,
        v6: node_v6,
    } = node.addresses;
    vec![
        format!(
            "link add {host} address {HOST_MAC} type veth peer name eth0 address {mac} netns {}",
            pod.netns
        ),
        format!("link set {host} up"),
        format!("route add {v4}/32 dev {host} src {node_v4}"),
        format!("neigh add {v4} lladdr {mac} dev {host} nud permanent"),
        format!("route add {v6}/128 dev {host} src {node_v6}"),
        format!("neigh add {v6} lladdr {mac} dev {host} nud permanent"),
    ]
}

/// `ip` commands that give one pod namespace its addresses and routes.
fn pod_lines(pod: &LabPod, node: &LabNode, kind: TopologyKind) -> Vec<String> {
    match kind {
        TopologyKind::Routed => routed_pod_lines(pod),
        TopologyKind::Bridge => bridge_pod_lines(pod, node.pod_range),
    }
}

/// The bridge topology's `pod_lines`: in its node's pod range with the range's
/// prefix length (else as a host address), default routes via the bridge.
fn bridge_pod_lines(pod: &LabPod, range: PodRange) -> Vec<String> {
    let PodAddresses { v4, v6 } = pod.addresses;
    let v4_length = if range.contains(IpAddr::V4(v4)) {
        range.v4_prefix
    } else {
        32
    };
    let v6_length = if range.contains(IpAddr::V6(v6)) {
        range.v6_prefix
    } else {
        128
    };
    let PodAddresses {
        v4: gateway_v4,
        v6: gateway_v6,
    } = range.gateway();
    vec![
        "link set lo up".to_string(),
        "link set eth0 up".to_string(),
        format!("addr add {v4}/{v4_length} dev eth0"),
        format!("route add {gateway_v4} dev eth0 scope link"),
        format!("route add default via {gateway_v4} dev eth0"),
        format!("addr add {v6}/{v6_length} dev eth0 nodad"),
        format!("route add {gateway_v6} dev eth0"),
        format!("route add ::/0 via {gateway_v6} dev eth0"),
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

/// The namespace of node `index` of a lab of `nodes` (`<run>-node` alone).
fn node_netns(run: &str, index: usize, nodes: usize) -> String {
    if nodes == 1 {
        format!("{run}-node")
    } else {
        format!("{run}-node{}", index + 1)
    }
}

/// Creates the namespaces, veths, addresses and routes of `layout.nodes` nodes
/// (joined as `fabric` says when there are more than one) and of the pods of
/// `placed`, leaving out those `connected` rejects: `Topology::connect_all`
/// wires those later, as a CNI does for a pod scheduled after the agent started.
/// On error, whatever was created is left for the caller's guard to delete.
pub fn create(
    run: &str,
    placed: &BTreeMap<ObjectRef, PlacedPod>,
    connected: impl Fn(&ObjectRef) -> bool,
    layout: Layout,
) -> Result<Topology, LabError> {
    layout.check()?;
    let nodes: Vec<LabNode> = (0..layout.nodes)
        .map(|index| LabNode {
            name: addresses::node_name(index),
            netns: node_netns(run, index, layout.nodes),
            addresses: addresses::node_pair(index),
            pod_range: PodRange::of(index, layout.nodes),
        })
        .collect();
    let pods: BTreeMap<ObjectRef, LabPod> = placed
        .iter()
        .enumerate()
        .map(|(i, (key, placed))| {
            let pod = LabPod {
                netns: format!("{run}-p{i}"),
                host_interface: format!("pw{i}"),
                addresses: placed.addresses,
                node: placed.node.min(layout.nodes - 1),
            };
            (key.clone(), pod)
        })
        .collect();
    let topology = Topology {
        fabric: (layout.nodes > 1).then(|| format!("{run}-fabric")),
        nodes,
        pods,
        kind: layout.kind,
        overlay: layout.overlay,
    };
    let adds: Vec<String> = topology
        .nodes
        .iter()
        .map(|node| format!("netns add {}", node.netns))
        .collect();
    netns::ip_batch(None, &adds)?;
    for node in &topology.nodes {
        prepare_ipv6(&node.netns)?;
        forward(&node.netns)?;
        if layout.kind == TopologyKind::Bridge {
            // Bridged traffic through the node's netfilter hooks (conntrack, NAT),
            // as kube-proxy requires on a bridge.
            netns::sysctl(&node.netns, "net/bridge/bridge-nf-call-iptables", "1")?;
            netns::sysctl(&node.netns, "net/bridge/bridge-nf-call-ip6tables", "1")?;
        }
        netns::ip_batch(Some(&node.netns), &node_lines(node, layout.kind))?;
        if layout.kind == TopologyKind::Bridge {
            // The node answers neighbour queries from the bridge for the pods
            // `fabric` lists there (proxy entries), at once, not after the
            // kernel's default random delay of up to 0.8 s.
            for (path, value) in [
                (format!("net/ipv6/conf/{BRIDGE}/proxy_ndp"), "1"),
                (format!("net/ipv4/neigh/{BRIDGE}/proxy_delay"), "0"),
                (format!("net/ipv6/neigh/{BRIDGE}/proxy_delay"), "0"),
            ] {
                netns::sysctl(&node.netns, &path, value)?;
            }
        }
    }
    fabric::join(&topology)?;
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
    /// Creates `pods`' namespaces, veths, addresses and routes (their nodes'
    /// namespaces exist already).
    pub fn connect_all(&self, pods: &[ObjectRef]) -> Result<(), LabError> {
        let mut wired = Vec::new();
        for key in pods {
            let unknown = || LabError::UnknownPod {
                pod: key.to_string(),
            };
            let (index, pod) = self
                .pods
                .iter()
                .enumerate()
                .find(|(_, (k, _))| *k == key)
                .map(|(i, (_, pod))| (i, pod))
                .ok_or_else(unknown)?;
            let node = self.node_of(pod).ok_or_else(unknown)?;
            wired.push((index, pod, node));
        }
        let adds: Vec<String> = wired
            .iter()
            .map(|(_, pod, _)| format!("netns add {}", pod.netns))
            .collect();
        netns::ip_batch(None, &adds)?;
        for node in &self.nodes {
            let mut lines = Vec::new();
            for (index, pod, _) in wired.iter().filter(|(_, _, n)| n.netns == node.netns) {
                prepare_ipv6(&pod.netns)?;
                lines.extend(node_pod_lines(*index, pod, node, self.kind));
            }
            netns::ip_batch(Some(&node.netns), &lines)?;
        }
        for (_, pod, node) in &wired {
            netns::ip_batch(Some(&pod.netns), &pod_lines(pod, node, self.kind))?;
        }
        Ok(())
    }
}
