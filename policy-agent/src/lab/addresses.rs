//! Who gets which address in the lab: every pod one IPv4 and one IPv6 address (its
//! manifest's `status.podIPs` where given, else the next free one from the lab's
//! ranges), the node one of each, and every Service without a `spec.clusterIP` one
//! from the Service range. Pure: no namespaces are touched here.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::LabError;
use crate::model::{ClusterState, ObjectRef};

/// Where IPv4 pod addresses come from when the manifest gives none.
pub const POD_RANGE_V4: &str = "10.244.0.0/16";
const POD_BASE_V4: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 0);
const POD_SIZE_V4: u32 = 1 << 16;
/// Where IPv6 pod addresses come from when the manifest gives none (a ULA range).
pub const POD_RANGE_V6: &str = "fd00:10:244::/64";
const POD_BASE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0);
/// Where ClusterIPs come from for Services whose manifest has none.
pub const SERVICE_RANGE: &str = "10.96.0.0/16";
const SERVICE_BASE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 0);
const SERVICE_SIZE: u32 = 1 << 16;

/// The node's own IPv4 address (on the node namespace's loopback): the source
/// of node -> pod traffic, as kubelet probes would use.
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
/// The node's own IPv6 address.
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x10, 0, 0, 0, 0, 1);

/// Both addresses of the node.
pub fn node_addresses() -> [IpAddr; 2] {
    [IpAddr::V4(NODE_V4), IpAddr::V6(NODE_V6)]
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

/// Picks each pod's addresses: its first address of each family from the manifest,
/// else the next free one from `POD_RANGE_V4` / `POD_RANGE_V6`. HostNetwork pods get
/// none (they are the node). Two pods with one address, or a pod with the node's
/// address, are an error.
pub fn assign_pods(state: &ClusterState) -> Result<BTreeMap<ObjectRef, PodAddresses>, LabError> {
    let mut used: BTreeMap<IpAddr, String> = node_addresses()
        .into_iter()
        .map(|ip| (ip, "the lab's node".to_string()))
        .collect();
    let mut given: BTreeMap<ObjectRef, (Option<Ipv4Addr>, Option<Ipv6Addr>)> = BTreeMap::new();
    let pods: Vec<_> = state.pods.values().filter(|p| !p.host_network).collect();
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
        given.insert(pod.key.clone(), (v4, v6));
    }
    let mut v4s = Allocator::new(used.keys().filter_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    }));
    let mut v6s = Allocator::new(used.keys().filter_map(|ip| match ip {
        IpAddr::V6(v6) => Some(*v6),
        IpAddr::V4(_) => None,
    }));
    let mut assigned = BTreeMap::new();
    for (key, (v4, v6)) in given {
        let v4 = match v4 {
            Some(v4) => v4,
            None => v4s.take(
                u128::from(POD_SIZE_V4),
                |n| Ipv4Addr::from(u32::from(POD_BASE_V4) + n as u32),
                POD_RANGE_V4,
            )?,
        };
        let v6 = match v6 {
            Some(v6) => v6,
            None => v6s.take(
                1 << 64,
                |n| Ipv6Addr::from(u128::from(POD_BASE_V6) + n),
                POD_RANGE_V6,
            )?,
        };
        assigned.insert(key, PodAddresses { v4, v6 });
    }
    Ok(assigned)
}

/// The ClusterIP of every Service: its manifest's `spec.clusterIP`, else the one it
/// had in `previous` (so a lab update never moves a Service), else the next free
/// address of `SERVICE_RANGE` in Service order. Addresses of `pods` and the node are
/// never used; a manifest ClusterIP that one of them (or another Service) has is an
/// error, since its DNAT rule would take that address's traffic.
pub fn assign_cluster_ips(
    state: &ClusterState,
    pods: &BTreeMap<ObjectRef, PodAddresses>,
    previous: &BTreeMap<ObjectRef, IpAddr>,
) -> Result<BTreeMap<ObjectRef, IpAddr>, LabError> {
    let mut owners: BTreeMap<IpAddr, String> = node_addresses()
        .into_iter()
        .map(|ip| (ip, "the lab's node".to_string()))
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
        .chain(node_addresses())
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
