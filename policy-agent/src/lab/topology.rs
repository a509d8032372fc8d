//! The lab's network: a "node" namespace with one veth per pod, each pod in a
//! namespace of its own, routed like a Calico node.
//!
//! A pod has its address as /32 on `eth0` and a default route via 169.254.1.1, a
//! permanent neighbour entry pointing at the host side's MAC. The node has a /32
//! route and a permanent neighbour entry per pod and forwards between veths. No ARP
//! is needed, so the first probe packet is never delayed by address resolution.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{netns, LabError};
use crate::model::{ClusterState, ObjectRef};

/// MAC of every host-side veth (as Calico does): each veth is its own link.
const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The pods' gateway address, answered by the permanent neighbour entry.
const GATEWAY: &str = "169.254.1.1";
/// Where the lab takes addresses for pods whose manifest has no `status.podIP`.
const LAB_CIDR_BASE: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 0);
const LAB_CIDR_SIZE: u32 = 1 << 16;

/// One pod of the lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabPod {
    /// Its network namespace.
    pub netns: String,
    /// Its host-side veth, in the node namespace.
    pub host_interface: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
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

/// Picks each pod's address: its first IPv4 from the manifest, else the next free
/// one from 10.244.0.0/16. HostNetwork pods get none (they are the node).
pub fn assign_addresses(state: &ClusterState) -> Result<BTreeMap<ObjectRef, Ipv4Addr>, LabError> {
    let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut assigned = BTreeMap::new();
    for pod in state.pods.values().filter(|p| !p.host_network) {
        if let Some(ip) = pod.ipv4_addresses().next() {
            if !used.insert(ip) {
                return Err(LabError::DuplicateAddress {
                    pod: pod.key.to_string(),
                    ip,
                });
            }
            assigned.insert(pod.key.clone(), ip);
        }
    }
    let mut next = 2u32;
    for pod in state.pods.values().filter(|p| !p.host_network) {
        if assigned.contains_key(&pod.key) {
            continue;
        }
        let ip = loop {
            if next >= LAB_CIDR_SIZE - 1 {
                return Err(LabError::AddressesExhausted);
            }
            let candidate = Ipv4Addr::from(u32::from(LAB_CIDR_BASE) + next);
            next += 1;
            if used.insert(candidate) {
                break candidate;
            }
        };
        assigned.insert(pod.key.clone(), ip);
    }
    Ok(assigned)
}

fn pod_mac(index: usize) -> String {
    format!(
        "02:00:00:{:02x}:{:02x}:{:02x}",
        (index >> 16) & 0xff,
        (index >> 8) & 0xff,
        index & 0xff
    )
}

/// Creates the namespaces, veths, addresses and routes for `addresses`.
/// On error, whatever was created is left for the caller's guard to delete.
pub fn create(run: &str, addresses: &BTreeMap<ObjectRef, Ipv4Addr>) -> Result<Topology, LabError> {
    let node = format!("{run}-node");
    let pods: BTreeMap<ObjectRef, LabPod> = addresses
        .iter()
        .enumerate()
        .map(|(i, (key, ip))| {
            let pod = LabPod {
                netns: format!("{run}-p{i}"),
                host_interface: format!("pw{i}"),
                ip: *ip,
            };
            (key.clone(), pod)
        })
        .collect();
    let topology = Topology { node, pods };
    let adds: Vec<String> = topology
        .namespaces()
        .iter()
        .map(|n| format!("netns add {n}"))
        .collect();
    netns::ip_batch(None, &adds)?;

    let mut node_lines = vec!["link set lo up".to_string()];
    for (i, pod) in topology.pods.values().enumerate() {
        let (host, ip, mac) = (&pod.host_interface, pod.ip, pod_mac(i));
        node_lines.extend([
            format!("link add {host} address {HOST_MAC} type veth peer name eth0 address {mac} netns {}", pod.netns),
            format!("link set {host} up"),
            format!("route add {ip}/32 dev {host}"),
            format!("neigh add {ip} lladdr {mac} dev {host} nud permanent"),
        ]);
    }
    netns::ip_batch(Some(&topology.node), &node_lines)?;
    netns::sysctl(&topology.node, "net/ipv4/ip_forward", "1")?;
    netns::sysctl(&topology.node, "net/ipv6/conf/all/disable_ipv6", "1")?;

    for pod in topology.pods.values() {
        netns::sysctl(&pod.netns, "net/ipv6/conf/all/disable_ipv6", "1")?;
        netns::ip_batch(
            Some(&pod.netns),
            &[
                "link set lo up".to_string(),
                "link set eth0 up".to_string(),
                format!("addr add {}/32 dev eth0", pod.ip),
                format!("route add {GATEWAY} dev eth0 scope link"),
                format!("route add default via {GATEWAY} dev eth0"),
                format!("neigh add {GATEWAY} lladdr {HOST_MAC} dev eth0 nud permanent"),
            ],
        )?;
    }
    Ok(topology)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, Pod};

    fn pod(name: &str, ips: &[&str]) -> Pod {
        Pod {
            key: ObjectRef::new("ns", name),
            labels: Labels::new(),
            ips: ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
            node_name: None,
            host_network: false,
            ports: vec![],
        }
    }

    fn state(pods: Vec<Pod>) -> ClusterState {
        let mut state = ClusterState::default();
        for p in pods {
            state.pods.insert(p.key.clone(), p);
        }
        state
    }

    #[test]
    fn manifest_addresses_are_kept_and_the_rest_allocated_around_them() {
        let s = state(vec![
            pod("a", &["10.244.0.2"]),
            pod("b", &[]),
            pod("c", &["fd00::1", "10.1.0.9"]),
        ]);
        let got = assign_addresses(&s).unwrap_or_default();
        assert_eq!(
            got[&ObjectRef::new("ns", "a")],
            Ipv4Addr::new(10, 244, 0, 2)
        );
        assert_eq!(
            got[&ObjectRef::new("ns", "b")],
            Ipv4Addr::new(10, 244, 0, 3)
        );
        assert_eq!(got[&ObjectRef::new("ns", "c")], Ipv4Addr::new(10, 1, 0, 9));
    }

    #[test]
    fn two_pods_with_one_address_are_rejected() {
        let s = state(vec![pod("a", &["10.0.0.1"]), pod("b", &["10.0.0.1"])]);
        assert!(matches!(
            assign_addresses(&s),
            Err(LabError::DuplicateAddress { .. })
        ));
    }
}
