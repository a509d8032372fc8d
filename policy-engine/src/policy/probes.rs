//! Which probes a matrix holds: every pod to every other pod on the destination's
//! ports, plus addresses outside the cluster (`--peer`) both ways. One definition
//! for `simulate` (judged by the evaluator) and `lab run` (sent as
//! real packets), so their outputs compare line by line.
//!
//! Pure; imports only `crate::model` and `policy::evaluator`'s endpoint and query
//! types.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    model::{ClusterState, IpFamily, ObjectRef, Pod, Protocol},
    policy::evaluator::{End, Query},
};

/// One connection to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Who opens it: a pod, or a peer address.
    pub from: End,
    /// Who it goes to.
    pub to: End,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

impl Probe {
    /// The evaluator's query for this probe.
    pub fn query(&self) -> Query {
        Query {
            src: self.from.clone(),
            dst: self.to.clone(),
            protocol: self.protocol,
            port: self.port,
        }
    }
}

/// The TCP and UDP ports `pod` declares, sorted, without duplicates. Declared SCTP
/// ports are left out: the lab cannot probe them on a kernel without SCTP, and
/// `simulate` keeps to what the lab probes.
fn declared_ports(pod: &Pod) -> BTreeSet<(u16, Protocol)> {
    pod.ports
        .iter()
        .filter(|port| port.protocol != Protocol::Sctp)
        .map(|port| (port.port, port.protocol))
        .collect()
}

/// The probes of a matrix over `pods` (sorted, as `lab run` lists them) and `peers`.
///
/// Sources are the pods, then the peers; destinations likewise, in the same order;
/// a pod is not probed from itself and a peer is never probed from a peer (no policy
/// sits between two addresses outside the cluster). Ports, each set sorted:
/// - to a pod: `ports` if given, else the pod's declared TCP and UDP ports;
/// - to a peer: `ports` if given, else every TCP and UDP port any of `pods` declares.
pub fn plan(
    state: &ClusterState,
    pods: &[ObjectRef],
    ports: &[(u16, Protocol)],
    peers: &[IpAddr],
) -> Vec<Probe> {
    let given: BTreeSet<(u16, Protocol)> = ports.iter().copied().collect();
    let peers: BTreeSet<IpAddr> = peers.iter().copied().collect();
    let for_pod = |key: &ObjectRef| -> BTreeSet<(u16, Protocol)> {
        if !given.is_empty() {
            return given.clone();
        }
        state.pods.get(key).map(declared_ports).unwrap_or_default()
    };
    let for_peers = if given.is_empty() {
        pods.iter().flat_map(for_pod).collect()
    } else {
        given.clone()
    };
    let endpoints: Vec<(End, BTreeSet<(u16, Protocol)>)> = pods
        .iter()
        .map(|key| (End::Pod(key.clone()), for_pod(key)))
        .chain(
            peers
                .iter()
                .map(|ip| (End::Address(*ip), for_peers.clone())),
        )
        .collect();
    let is_peer = |endpoint: &End| matches!(endpoint, End::Address(_));
    let mut probes = Vec::new();
    for (from, _) in &endpoints {
        for (to, ports) in &endpoints {
            if from == to || (is_peer(from) && is_peer(to)) {
                continue;
            }
            probes.extend(ports.iter().map(|&(port, protocol)| Probe {
                from: from.clone(),
                to: to.clone(),
                port,
                protocol,
            }));
        }
    }
    probes
}

/// `endpoint` as a connection of `family` sees it: a pod is judged at its address of
/// that family (what ipBlocks are matched against, as in the kernel); a pod without
/// one, or an address, stays as it is.
pub fn at_address(state: &ClusterState, endpoint: &End, family: IpFamily) -> End {
    match endpoint {
        End::Pod(key) => state
            .pods
            .get(key)
            .and_then(|pod| pod.address(family))
            .map_or_else(|| endpoint.clone(), |ip| End::PodAt(key.clone(), ip)),
        End::PodAt(..) | End::Address(_) => endpoint.clone(),
    }
}

/// `state` with the addresses of the pods in `addresses` replaced by those given
/// (as the lab does when it assigns its own); other pods keep theirs.
pub fn with_addresses(
    mut state: ClusterState,
    addresses: &BTreeMap<ObjectRef, Vec<IpAddr>>,
) -> ClusterState {
    for (key, ips) in addresses {
        if let Some(pod) = state.pods.get_mut(key) {
            pod.ips.clone_from(ips);
        }
    }
    state
}

#[cfg(test)]
mod tests;
