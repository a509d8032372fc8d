//! From a pod address to the host-side interface of its pod, as `ip route get`
//! would find it, then (for bridge CNIs) down to the bridge port.
//!
//! Rules, in order (`RouteResolver::resolve`):
//! 1. `RTM_GETROUTE` for the address (the kernel's own lookup, policy rules
//!    included); no route (unreachable, blackhole, prohibit) -> none;
//! 2. a route that is not unicast (`local`: the address is the node's own) or that
//!    goes via a gateway (the pod is not directly attached: another node's) -> none;
//! 3. the output device is a veth or netkit device (kindnet, Calico, most routed
//!    CNIs put a /32 and /128 route per pod on the host-side veth) -> that device;
//! 4. the output device is a bridge (bridge, flannel): the neighbour entry of the
//!    address on the bridge gives the pod's MAC, and the bridge's forwarding
//!    database the port that MAC was learned on (or statically added to); a veth
//!    or netkit port -> that port. No neighbour entry or no FDB entry yet (nothing
//!    resolved or sent since the pod started) -> none, until traffic fills them;
//! 5. any other device (loopback, a physical NIC, a tunnel, macvlan/ipvlan's
//!    parent) -> none: never attach to something that is not a pod's own link.

use std::{collections::BTreeMap, net::IpAddr};

use netlink_packet_route::{
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
    AddressFamily, RouteNetlinkMessage,
};

use super::{links::LinkKind, socket::Netlink, NodeError};

/// Errors `RTM_GETROUTE` answers when there is no usable route: `EACCES`
/// (prohibit), `EINVAL` (blackhole), `ENETUNREACH` (no route), `EHOSTUNREACH`
/// (unreachable).
const NO_ROUTE_ERRNOS: [i32; 4] = [13, 22, 101, 113];

/// A neighbour entry: an address on a link and the MAC it resolved to.
struct Neighbour {
    ifindex: u32,
    address: IpAddr,
    mac: Vec<u8>,
}

/// A bridge forwarding database entry: a MAC behind a port of a bridge.
struct FdbEntry {
    port: u32,
    bridge: u32,
    mac: Vec<u8>,
}

/// Resolves pod addresses to pod interfaces over one socket. Link kinds,
/// neighbours and the bridge FDB are read once per resolver: open one per batch.
pub struct RouteResolver {
    netlink: Netlink,
    kinds: BTreeMap<u32, LinkKind>,
    neighbours: Option<Vec<Neighbour>>,
    fdb: Option<Vec<FdbEntry>>,
}

impl RouteResolver {
    /// Opens a resolver in the calling thread's network namespace.
    pub fn open() -> Result<Self, NodeError> {
        Ok(Self {
            netlink: Netlink::open()?,
            kinds: BTreeMap::new(),
            neighbours: None,
            fdb: None,
        })
    }

    /// The pod interface behind `ip` (see the module's rules), if any.
    pub fn resolve(&mut self, ip: IpAddr) -> Result<Option<u32>, NodeError> {
        let Some(oif) = self.direct_route(ip)? else {
            return Ok(None);
        };
        let found = match self.kind(oif)? {
            LinkKind::PodLike => Some(oif),
            LinkKind::Bridge => self.bridge_port(oif, ip)?,
            LinkKind::Other => None,
        };
        tracing::debug!(%ip, oif, interface = ?found, "route to pod address");
        Ok(found)
    }

    /// Rules 1 and 2: the output interface of a direct unicast route to `ip`.
    fn direct_route(&mut self, ip: IpAddr) -> Result<Option<u32>, NodeError> {
        let mut message = RouteMessage::default();
        let (family, length, destination) = match ip {
            IpAddr::V4(v4) => (AddressFamily::Inet, 32, RouteAddress::Inet(v4)),
            IpAddr::V6(v6) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(v6)),
        };
        message.header.address_family = family;
        message.header.destination_prefix_length = length;
        message
            .attributes
            .push(RouteAttribute::Destination(destination));
        let request = || format!("route get {ip}");
        let replies =
            match self
                .netlink
                .request(RouteNetlinkMessage::GetRoute(message), false, &request)
            {
                Ok(replies) => replies,
                Err(error) if error.errno().is_some_and(|e| NO_ROUTE_ERRNOS.contains(&e)) => {
                    return Ok(None)
                }
                Err(error) => return Err(error),
            };
        let Some(route) = replies.iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewRoute(route) => Some(route),
            _ => None,
        }) else {
            return Ok(None);
        };
        if route.header.kind != RouteType::Unicast {
            return Ok(None);
        }
        let mut oif = None;
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => return Ok(None),
                RouteAttribute::Oif(index) => oif = Some(*index),
                _ => {}
            }
        }
        Ok(oif)
    }

    fn kind(&mut self, ifindex: u32) -> Result<LinkKind, NodeError> {
        if let Some(kind) = self.kinds.get(&ifindex) {
            return Ok(*kind);
        }
        let kind = self
            .netlink
            .link(ifindex, None)?
            .map_or(LinkKind::Other, |(_, kind)| kind);
        self.kinds.insert(ifindex, kind);
        Ok(kind)
    }

    /// Rule 4: the bridge port behind `ip`, through its neighbour entry and the FDB.
    fn bridge_port(&mut self, bridge: u32, ip: IpAddr) -> Result<Option<u32>, NodeError> {
        let neighbours = match self.neighbours.take() {
            Some(neighbours) => neighbours,
            None => self.dump_neighbours()?,
        };
        let mac = neighbours
            .iter()
            .find(|n| n.ifindex == bridge && n.address == ip)
            .map(|n| n.mac.clone());
        self.neighbours = Some(neighbours);
        let Some(mac) = mac else {
            return Ok(None);
        };
        let fdb = match self.fdb.take() {
            Some(fdb) => fdb,
            None => self.dump_fdb()?,
        };
        let port = fdb
            .iter()
            .find(|e| e.bridge == bridge && e.port != bridge && e.mac == mac)
            .map(|e| e.port);
        self.fdb = Some(fdb);
        match port {
            Some(port) if self.kind(port)? == LinkKind::PodLike => Ok(Some(port)),
            _ => Ok(None),
        }
    }

    fn dump_neighbours(&mut self) -> Result<Vec<Neighbour>, NodeError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            for message in self.neighbour_dump(family, "neighbour dump")? {
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

    fn dump_fdb(&mut self) -> Result<Vec<FdbEntry>, NodeError> {
        let mut out = Vec::new();
        for message in self.neighbour_dump(AddressFamily::Bridge, "bridge fdb dump")? {
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
        &mut self,
        family: AddressFamily,
        what: &'static str,
    ) -> Result<Vec<NeighbourMessage>, NodeError> {
        let mut message = NeighbourMessage::default();
        message.header.family = family;
        let replies =
            self.netlink
                .request(RouteNetlinkMessage::GetNeighbour(message), true, &|| {
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
}

/// The host-side pod interface a packet to `ip` leaves through (see the module's
/// rules); `None` when `ip` is no directly attached pod's.
pub fn route_interface(ip: IpAddr) -> Result<Option<u32>, NodeError> {
    RouteResolver::open()?.resolve(ip)
}

/// `route_interface` for many addresses over one socket: the addresses that
/// resolve, with their interface.
pub fn route_interfaces(
    ips: impl IntoIterator<Item = IpAddr>,
) -> Result<BTreeMap<IpAddr, u32>, NodeError> {
    let mut resolver = RouteResolver::open()?;
    let mut found = BTreeMap::new();
    for ip in ips {
        if let Some(ifindex) = resolver.resolve(ip)? {
            found.insert(ip, ifindex);
        }
    }
    Ok(found)
}
