//! Behind a bridge (bridge CNIs, flannel): which port a pod address belongs to,
//! and where the bridge's own learning points it now.
//!
//! A pod's identity comes from what the pod cannot write: the addresses its CNI
//! gave the other end of its veth, read in the pod's own network namespace
//! (`RTM_GETADDR` with `IFA_TARGET_NETNSID`). A pod can forge ARP replies,
//! gratuitous ARP, unsolicited neighbour advertisements and source MACs, and so
//! move the node's neighbour entries and the bridge's forwarding database (FDB)
//! wherever it likes; changing its own interface's addresses needs
//! `CAP_NET_ADMIN` in its namespace (a pod that has it and adds another pod's
//! address makes that address lead to two ports: a conflict the agent reports and
//! does not follow, `agent::plan`).
//!
//! The neighbour entry and the FDB are still read, as evidence only
//! (`neighbour_port`): the port they lead to is reported next to the identity, so
//! a forged entry shows up as a conflict.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    AddressFamily, RouteNetlinkMessage,
};

use super::{
    links::{Link, LinkKind, Peer},
    socket::Netlink,
    NodeError,
};
use crate::causes::causes;

/// Kernel answers to an address dump of a namespace that went away meanwhile
/// (the pod is being deleted): `EINVAL` (no such namespace id), `ENOENT`,
/// `ENODEV`. The port then holds no address.
const GONE_ERRNOS: [i32; 3] = [22, 2, 19];

/// A neighbour entry: an address on a link and the MAC it resolved to.
pub(super) struct Neighbour {
    ifindex: u32,
    address: IpAddr,
    mac: Vec<u8>,
}

/// A bridge forwarding database entry: a MAC behind a port of a bridge.
pub(super) struct FdbEntry {
    port: u32,
    bridge: u32,
    mac: Vec<u8>,
}

/// The addresses behind each veth (or netkit) port of `bridge`: address -> ports
/// whose peer holds it. `strict` is a socket with strict checking on (what
/// `IFA_TARGET_NETNSID` needs).
pub(super) fn port_addresses(
    strict: &mut Netlink,
    links: &[(Link, Option<Peer>)],
    bridge: u32,
) -> Result<BTreeMap<IpAddr, BTreeSet<u32>>, NodeError> {
    let mut out: BTreeMap<IpAddr, BTreeSet<u32>> = BTreeMap::new();
    let ports = links.iter().filter(|(link, _)| {
        link.master == Some(bridge) && link.kind == LinkKind::PodLike && link.index != bridge
    });
    for (port, peer) in ports {
        let Some(peer) = peer else { continue };
        for address in peer_addresses(strict, peer)? {
            out.entry(address).or_default().insert(port.index);
        }
    }
    Ok(out)
}

/// The addresses of `peer`'s interface in its own namespace.
fn peer_addresses(strict: &mut Netlink, peer: &Peer) -> Result<Vec<IpAddr>, NodeError> {
    let mut message = AddressMessage::default();
    if let Some(netnsid) = peer.netnsid {
        message
            .attributes
            .push(AddressAttribute::TargetNetNsId(netnsid));
    }
    let request = || {
        format!(
            "address dump of interface {} in namespace id {:?}",
            peer.index, peer.netnsid
        )
    };
    let replies = match strict.request(RouteNetlinkMessage::GetAddress(message), true, &request) {
        Ok(replies) => replies,
        Err(error) if error.errno().is_some_and(|e| GONE_ERRNOS.contains(&e)) => {
            tracing::debug!(error = %causes(&error), "a bridge port's peer is gone");
            return Ok(Vec::new());
        }
        Err(error) => return Err(error),
    };
    Ok(replies
        .iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewAddress(message) if message.header.index == peer.index => {
                super::addresses::local_address(message)
            }
            _ => None,
        })
        .collect())
}

/// What the node's neighbour table and the bridge FDB say now (a forgeable view).
#[derive(Default)]
pub(super) struct Learned {
    neighbours: Option<Vec<Neighbour>>,
    fdb: Option<Vec<FdbEntry>>,
}

impl Learned {
    /// The port of `bridge` the neighbour entry of `ip` and the FDB lead to now: the
    /// MAC the node resolved `ip` to, and the port that MAC was learned on (or
    /// statically added to). `None` when either is missing.
    pub(super) fn neighbour_port(
        &mut self,
        netlink: &mut Netlink,
        bridge: u32,
        ip: IpAddr,
    ) -> Result<Option<u32>, NodeError> {
        if self.neighbours.is_none() {
            self.neighbours = Some(dump_neighbours(netlink)?);
        }
        let mac = self
            .neighbours
            .iter()
            .flatten()
            .find(|n| n.ifindex == bridge && n.address == ip)
            .map(|n| n.mac.clone());
        let Some(mac) = mac else {
            return Ok(None);
        };
        if self.fdb.is_none() {
            self.fdb = Some(dump_fdb(netlink)?);
        }
        Ok(self
            .fdb
            .iter()
            .flatten()
            .find(|e| e.bridge == bridge && e.port != bridge && e.mac == mac)
            .map(|e| e.port))
    }
}

fn dump_neighbours(netlink: &mut Netlink) -> Result<Vec<Neighbour>, NodeError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        for message in neighbour_dump(netlink, family, "neighbour dump")? {
            let mut address = None;
            let mut mac = None;
            for attribute in &message.attributes {
                match attribute {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        address = Some(IpAddr::V4(*v4));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        address = Some(IpAddr::V6(*v6));
                    }
                    NeighbourAttribute::LinkLayerAddress(bytes) if !bytes.is_empty() => {
                        mac = Some(bytes.clone());
                    }
                    _ => {}
                }
            }
            if let (Some(address), Some(mac)) = (address, mac) {
                out.push(Neighbour {
                    ifindex: message.header.ifindex,
                    address,
                    mac,
                });
            }
        }
    }
    Ok(out)
}

fn dump_fdb(netlink: &mut Netlink) -> Result<Vec<FdbEntry>, NodeError> {
    let mut out = Vec::new();
    for message in neighbour_dump(netlink, AddressFamily::Bridge, "bridge fdb dump")? {
        let mut bridge = None;
        let mut mac = None;
        for attribute in &message.attributes {
            match attribute {
                NeighbourAttribute::Controller(index) => bridge = Some(*index),
                NeighbourAttribute::LinkLayerAddress(bytes) => mac = Some(bytes.clone()),
                _ => {}
            }
        }
        if let (Some(bridge), Some(mac)) = (bridge, mac) {
            out.push(FdbEntry {
                port: message.header.ifindex,
                bridge,
                mac,
            });
        }
    }
    Ok(out)
}

fn neighbour_dump(
    netlink: &mut Netlink,
    family: AddressFamily,
    what: &'static str,
) -> Result<Vec<NeighbourMessage>, NodeError> {
    let mut message = NeighbourMessage::default();
    message.header.family = family;
    let replies = netlink.request(RouteNetlinkMessage::GetNeighbour(message), true, &|| {
        what.to_string()
    })?;
    Ok(replies
        .into_iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewNeighbour(n) => Some(n),
            _ => None,
        })
        .collect())
}
