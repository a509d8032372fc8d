//! Who goes where in the lab: every pod a node (the one its `spec.nodeName` names,
//! else the next in turn) and one IPv4 and one IPv6 address (its manifest's
//! `status.podIPs` where given, else the next free one from its node's pod range),
//! every node one address of each family, and every Service without a
//! `spec.clusterIP` one from the Service range. Pure: no namespaces are touched
//! here.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::LabError;
use crate::model::{ClusterState, ObjectRef};

/// Where IPv4 pod addresses come from when the manifest gives none.
pub const POD_RANGE_V4: &str = "10.244.0.0/16";
const POD_BASE_V4: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 0);
/// Where IPv6 pod addresses come from when the manifest gives none (a ULA range).
pub const POD_RANGE_V6: &str = "fd00:10:244::/64";
const POD_BASE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0);
/// Where ClusterIPs come from for Services whose manifest has none.
pub const SERVICE_RANGE: &str = "10.96.0.0/16";
const SERVICE_BASE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 0);
const SERVICE_SIZE: u32 = 1 << 16;

/// The first node's own IPv4 address (on the node namespace's loopback): the
/// source of node -> pod traffic, as kubelet probes would use. Node `n` has the
/// `n`-th address after it (`node_pair`).
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
/// The first node's own IPv6 address.
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x10, 0, 0, 0, 0, 1);

/// The most nodes a lab has. Each loads a whole datapath (its conntrack table
/// alone locks about 32 MiB of kernel memory) and takes a /24 of
/// `POD_RANGE_V4`; a lab shows cross-node behaviour with a handful.
pub const MAX_NODES: usize = 16;

/// Both addresses of the first node.
pub fn node_addresses() -> [IpAddr; 2] {
    node_pair(0).both()
}

/// The own addresses of node `index` (0-based).
pub fn node_pair(index: usize) -> PodAddresses {
    PodAddresses {
        v4: Ipv4Addr::from(u32::from(NODE_V4).saturating_add(index as u32)),
        v6: Ipv6Addr::from(u128::from(NODE_V6).saturating_add(index as u128)),
    }
}

/// The Kubernetes name of node `index` of a lab (`node-1`, `node-2`, ...): what a
/// pod's `spec.nodeName` names to be placed there.
pub fn node_name(index: usize) -> String {
    format!("node-{}", index + 1)
}

/// Who has each address a lab keeps from pods and Services, of a lab of `nodes`
/// nodes: every node's own addresses, and the network and gateway addresses of
/// every node's pod range (the bridge topology's gateway, the VXLAN VTEP), as a
/// cluster's IPAM keeps them. A one-node lab's node is "the lab's node".
fn node_owners(nodes: usize) -> impl Iterator<Item = (IpAddr, String)> {
    (0..nodes.max(1)).flat_map(move |index| {
        let owner = if nodes <= 1 {
            "the lab's node".to_string()
        } else {
            format!("node {}", node_name(index))
        };
        let range = PodRange::of(index, nodes);
        let network = PodAddresses {
            v4: range.v4,
            v6: range.v6,
        };
        let kept = [
            (node_pair(index), owner.clone()),
            (
                network,
                format!("the network address of {owner}'s pod range"),
            ),
            (
                range.gateway(),
                format!("the gateway of {owner}'s pod range"),
            ),
        ];
        kept.into_iter()
            .flat_map(|(pair, owner)| pair.both().map(move |ip| (ip, owner.clone())))
    })
}

/// The pod addresses one node hands out, as a cluster's node `podCIDR`s: in a
/// one-node lab all of `POD_RANGE_V4` and `POD_RANGE_V6`, else node `index`
/// (0-based, so `node-1` is index 0) has `10.244.<index>.0/24` and
/// `fd00:10:244:<index in hex>::/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodRange {
    /// The IPv4 network address.
    pub v4: Ipv4Addr,
    /// Its prefix length.
    pub v4_prefix: u8,
    /// The IPv6 network address.
    pub v6: Ipv6Addr,
    /// Its prefix length.
    pub v6_prefix: u8,
}

impl PodRange {
    /// The range of node `node` of a lab of `nodes` nodes.
    pub fn of(node: usize, nodes: usize) -> Self {
        if nodes <= 1 {
            return Self {
                v4: POD_BASE_V4,
                v4_prefix: 16,
                v6: POD_BASE_V6,
                v6_prefix: 64,
            };
        }
        Self {
            v4: Ipv4Addr::from(u32::from(POD_BASE_V4) | ((node as u32 & 0xff) << 8)),
            v4_prefix: 24,
            v6: Ipv6Addr::from(u128::from(POD_BASE_V6) | ((node as u128 & 0xffff) << 64)),
            v6_prefix: 64,
        }
    }

    /// Whether `ip` is in the range of its family.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let mask = !(u32::MAX >> self.v4_prefix);
                u32::from(v4) & mask == u32::from(self.v4) & mask
            }
            IpAddr::V6(v6) => {
                let mask = !(u128::MAX >> self.v6_prefix);
                u128::from(v6) & mask == u128::from(self.v6) & mask
            }
        }
    }

    /// The first address of each family after the network's: kept from pods for
    /// a gateway (the bridge topology's bridge has them).
    pub fn gateway(&self) -> PodAddresses {
        PodAddresses {
            v4: Ipv4Addr::from(u32::from(self.v4) + 1),
            v6: Ipv6Addr::from(u128::from(self.v6) + 1),
        }
    }

    /// The IPv4 range as text (`10.244.1.0/24`).
    pub fn v4_text(&self) -> String {
        format!("{}/{}", self.v4, self.v4_prefix)
    }

    /// The IPv6 range as text (`fd00:10:244:1::/64`).
    pub fn v6_text(&self) -> String {
        format!("{}/{}", self.v6, self.v6_prefix)
    }
}

/// A pod's place in the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedPod {
    /// The index of its node.
    pub node: usize,
    /// Its addresses.
    pub addresses: PodAddresses,
}

/// The two addresses of one lab pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodAddresses {
    /// Its IPv4 address.
    pub v4: Ipv4Addr,
    /// Its IPv6 address.
    pub v6: Ipv6Addr,
}

impl PodAddresses {
    /// Both, IPv4 first (the order `status.podIPs` lists them in the lab).
    pub fn both(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.v4), IpAddr::V6(self.v6)]
    }
}

/// Hands out addresses of one range, skipping those already taken.
struct Allocator<A> {
    used: BTreeSet<A>,
    next: u128,
}

impl<A: Ord + Copy> Allocator<A> {
    fn new(used: impl IntoIterator<Item = A>) -> Self {
        Self {
            used: used.into_iter().collect(),
            // .0 is the network, .1 is kept for a gateway as a cluster would.
            next: 2,
        }
    }

    /// The next free address of `base + 2 .. base + size - 1`.
    fn take(&mut self, size: u128, make: impl Fn(u128) -> A, range: &str) -> Result<A, LabError> {
        loop {
            if self.next >= size - 1 {
                return Err(LabError::AddressesExhausted {
                    range: range.to_string(),
                });
            }
            let candidate = make(self.next);
            self.next += 1;
            if self.used.insert(candidate) {
                return Ok(candidate);
            }
        }
    }
}

/// Places each pod of `state` on one of `nodes` nodes (the one its `spec.nodeName`
/// names, see `node_name`; else the next in turn, in pod order, counting only
/// those pods) and picks its addresses: its first address of each family from
/// the manifest, else the next free one of its node's `PodRange`. HostNetwork
/// pods get none (they are the node). Two pods with one address, or a pod with a
/// node's address, are an error.
pub fn assign_pods(
    state: &ClusterState,
    nodes: usize,
) -> Result<BTreeMap<ObjectRef, PlacedPod>, LabError> {
    let nodes = nodes.clamp(1, MAX_NODES);
    let mut used: BTreeMap<IpAddr, String> = node_owners(nodes).collect();
    let mut given: BTreeMap<ObjectRef, (usize, Option<Ipv4Addr>, Option<Ipv6Addr>)> =
        BTreeMap::new();
    let pods: Vec<_> = state.pods.values().filter(|p| !p.host_network).collect();
    let mut next_node = 0;
    for pod in &pods {
        let v4 = pod.ipv4_addresses().next();
        let v6 = pod.ipv6_addresses().next();
        for ip in v4.map(IpAddr::V4).into_iter().chain(v6.map(IpAddr::V6)) {
            if let Some(owner) = used.insert(ip, format!("pod {}", pod.key)) {
                return Err(LabError::DuplicateAddress {
                    claimant: format!("pod {}", pod.key),
                    ip,
                    owner,
                });
            }
        }
        let named = pod
            .node_name
            .as_deref()
            .and_then(|name| (0..nodes).find(|&index| node_name(index) == name));
        let node = named.unwrap_or_else(|| {
            let node = next_node;
            next_node = (next_node + 1) % nodes;
            node
        });
        given.insert(pod.key.clone(), (node, v4, v6));
    }
    let used_v4 = || {
        used.keys().filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    };
    let used_v6 = || {
        used.keys().filter_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
    };
    let mut v4s: Vec<Allocator<Ipv4Addr>> = (0..nodes).map(|_| Allocator::new(used_v4())).collect();
    let mut v6s: Vec<Allocator<Ipv6Addr>> = (0..nodes).map(|_| Allocator::new(used_v6())).collect();
    let mut assigned = BTreeMap::new();
    for (key, (node, v4, v6)) in given {
        let range = PodRange::of(node, nodes);
        let v4 = match v4 {
            Some(v4) => v4,
            None => v4s[node].take(
                1 << (32 - range.v4_prefix),
                |n| Ipv4Addr::from(u32::from(range.v4) + n as u32),
                &range.v4_text(),
            )?,
        };
        let v6 = match v6 {
            Some(v6) => v6,
            None => v6s[node].take(
                1 << (128 - range.v6_prefix),
                |n| Ipv6Addr::from(u128::from(range.v6) + n),
                &range.v6_text(),
            )?,
        };
        let addresses = PodAddresses { v4, v6 };
        assigned.insert(key, PlacedPod { node, addresses });
    }
    Ok(assigned)
}

/// The ClusterIP of every Service: its manifest's `spec.clusterIP`, else the one it
/// had in `previous` (so a lab update never moves a Service), else the next free
/// address of `SERVICE_RANGE` in Service order. Addresses of `pods` and of the
/// lab's `nodes` nodes are never used; a manifest ClusterIP that one of them (or
/// another Service) has is an error, since its DNAT rule would take that
/// address's traffic.
pub fn assign_cluster_ips(
    state: &ClusterState,
    pods: &BTreeMap<ObjectRef, PodAddresses>,
    nodes: usize,
    previous: &BTreeMap<ObjectRef, IpAddr>,
) -> Result<BTreeMap<ObjectRef, IpAddr>, LabError> {
    let mut owners: BTreeMap<IpAddr, String> = node_owners(nodes)
        .chain(
            pods.iter()
                .flat_map(|(key, addresses)| addresses.both().map(|ip| (ip, format!("pod {key}")))),
        )
        .collect();
    let mut assigned: BTreeMap<ObjectRef, IpAddr> = BTreeMap::new();
    for service in state.services.values() {
        let Some(ip) = service.cluster_ip else {
            continue;
        };
        let claimant = format!("Service {}", service.key);
        if let Some(owner) = owners.insert(ip, claimant.clone()) {
            return Err(LabError::DuplicateAddress {
                claimant,
                ip,
                owner,
            });
        }
        assigned.insert(service.key.clone(), ip);
    }
    for key in state.services.keys() {
        if let (false, Some(ip)) = (assigned.contains_key(key), previous.get(key)) {
            if !assigned.values().any(|taken| taken == ip) {
                assigned.insert(key.clone(), *ip);
            }
        }
    }
    let taken = assigned
        .values()
        .copied()
        .chain(pods.values().map(|p| IpAddr::V4(p.v4)))
        .chain(node_owners(nodes).map(|(ip, _)| ip))
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
    let mut free = Allocator::new(taken);
    for key in state.services.keys() {
        if !assigned.contains_key(key) {
            let ip = free.take(
                u128::from(SERVICE_SIZE),
                |n| Ipv4Addr::from(u32::from(SERVICE_BASE) + n as u32),
                SERVICE_RANGE,
            )?;
            assigned.insert(key.clone(), IpAddr::V4(ip));
        }
    }
    Ok(assigned)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests parse address literals")]
mod tests;
