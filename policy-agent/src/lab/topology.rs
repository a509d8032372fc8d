//! The lab's network: a "node" namespace with one veth per pod, each pod in a
//! namespace of its own, routed like a Calico node, in both IP families.
//!
//! A pod has its IPv4 address as /32 and its IPv6 address as /128 on `eth0`, and a
//! default route per family via a gateway that a permanent neighbour entry points at
//! the host side's MAC (`169.254.1.1` and the host veth's link-local address). The
//! node has a /32 and a /128 route and permanent neighbour entries per pod, and
//! forwards between veths. No ARP, no neighbour discovery and no duplicate address
//! detection is needed, so the first probe packet is never delayed.
//!
//! The node's own addresses (`addresses::NODE_V4`/`NODE_V6`) sit on the node
//! namespace's loopback (this kernel has no dummy links) and are the preferred
//! source of every route to a pod, so traffic the node itself starts (kubelet
//! probes) comes from them.

use std::collections::BTreeMap;

use super::{
    addresses::{PodAddresses, NODE_V4, NODE_V6},
    netns, LabError,
};
use crate::model::ObjectRef;

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
}

impl Topology {
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

/// `ip` commands that give the node namespace its addresses.
fn node_lines() -> Vec<String> {
    vec![
        "link set lo up".to_string(),
        format!("addr add {NODE_V4}/32 dev lo"),
        format!("addr add {NODE_V6}/128 dev lo nodad"),
    ]
}

/// `ip` commands, run in the node namespace, that give pod `index` its veth
/// (peer in the pod's namespace), routes and neighbour entries.
fn node_pod_lines(index: usize, pod: &LabPod) -> Vec<String> {
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
fn pod_lines(pod: &LabPod) -> Vec<String> {
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
    let topology = Topology { node, pods };
    netns::ip_batch(None, &[format!("netns add {}", topology.node)])?;
    prepare_ipv6(&topology.node)?;
    netns::sysctl(&topology.node, "net/ipv4/ip_forward", "1")?;
    netns::sysctl(&topology.node, "net/ipv6/conf/all/forwarding", "1")?;
    netns::ip_batch(Some(&topology.node), &node_lines())?;
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
            lines.extend(node_pod_lines(*index, pod));
        }
        netns::ip_batch(Some(&self.node), &lines)?;
        for (_, pod) in &wired {
            netns::ip_batch(Some(&pod.netns), &pod_lines(pod))?;
        }
        Ok(())
    }
}
