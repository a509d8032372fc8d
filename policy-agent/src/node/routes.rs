//! From a pod address to the host-side interface of its pod, as `ip route get`
//! would find it, then (for bridge CNIs) down to the bridge port.
//!
//! Rules, in order (`RouteResolver::resolve_pod`):
//! 1. `RTM_GETROUTE` for the address (the kernel's own lookup, policy rules
//!    included); no route (unreachable, blackhole, prohibit) -> none;
//! 2. a route that is not unicast (`local`: the address is the node's own) or that
//!    goes via a gateway (the pod is not directly attached: another node's) -> none;
//! 3. the output device is a veth or netkit device (kindnet, Calico, most routed
//!    CNIs put a /32 and /128 route per pod on the host-side veth) -> that device;
//! 4. the output device is a bridge (bridge, flannel): every veth or netkit port of
//!    that bridge whose other end, in the pod's own namespace, has the address
//!    (`bridge.rs`); none -> none. Never the node's neighbour entry or the bridge's
//!    forwarding database: a pod can forge both (ARP/NDP replies, source MACs).
//!    Where those lead now is read beside, as evidence for conflict reports
//!    (`PodRoute::neighbour_port`);
//! 5. any other device (loopback, a physical NIC, a tunnel, macvlan/ipvlan's
//!    parent) -> none: never attach to something that is not a pod's own link.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
    AddressFamily, RouteNetlinkMessage,
};

use super::{
    bridge::{self, Learned},
    links::{Link, LinkKind, Peer},
    socket::Netlink,
    NodeError,
};

/// Errors `RTM_GETROUTE` answers when there is no usable route: `EACCES`
/// (prohibit), `EINVAL` (blackhole), `ENETUNREACH` (no route), `EHOSTUNREACH`
/// (unreachable).
const NO_ROUTE_ERRNOS: [i32; 4] = [13, 22, 101, 113];

/// Where a pod address leads on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRoute {
    /// The pod interfaces it belongs to (rules 3 and 4): one, or several when more
    /// than one bridge port's peer holds it (a conflict), or none.
    pub interfaces: BTreeSet<u32>,
    /// The bridge its route goes through (rule 4), if any: a pod bridge.
    pub bridge: Option<u32>,
    /// Rule 4's evidence: the port the node's neighbour entry of the address and
    /// the bridge's forwarding database lead to now. Never an identity: reported
    /// when it differs from the pod's interface (a forged ARP/NDP entry or MAC).
    pub neighbour_port: Option<u32>,
}

/// Resolves pod addresses to pod interfaces over one socket. Links, the
/// addresses behind bridge ports, neighbours and the bridge FDB are read once per
/// resolver: open one per batch.
pub struct RouteResolver {
    netlink: Netlink,
    /// For address dumps in pods' namespaces (`NETLINK_GET_STRICT_CHK` on).
    strict: Option<Netlink>,
    kinds: BTreeMap<u32, LinkKind>,
    links: Option<Vec<(Link, Option<Peer>)>>,
    /// Per bridge: address -> ports whose peer holds it.
    bridges: BTreeMap<u32, BTreeMap<IpAddr, BTreeSet<u32>>>,
    learned: Learned,
}

impl RouteResolver {
    /// Opens a resolver in the calling thread's network namespace.
    pub fn open() -> Result<Self, NodeError> {
        Ok(Self {
            netlink: Netlink::open()?,
            strict: None,
            kinds: BTreeMap::new(),
            links: None,
            bridges: BTreeMap::new(),
            learned: Learned::default(),
        })
    }

    /// The one pod interface behind `ip` (see the module's rules), if exactly one.
    pub fn resolve(&mut self, ip: IpAddr) -> Result<Option<u32>, NodeError> {
        let route = self.resolve_pod(ip)?;
        Ok(match route.interfaces.iter().collect::<Vec<_>>()[..] {
            [only] => Some(*only),
            _ => None,
        })
    }

    /// Where `ip` leads (see the module's rules).
    pub fn resolve_pod(&mut self, ip: IpAddr) -> Result<PodRoute, NodeError> {
        let Some(oif) = self.direct_route(ip)? else {
            return Ok(PodRoute::default());
        };
        let route = match self.kind(oif)? {
            LinkKind::PodLike => PodRoute {
                interfaces: BTreeSet::from([oif]),
                ..PodRoute::default()
            },
            LinkKind::Bridge => PodRoute {
                interfaces: self.bridge_ports(oif, ip)?,
                bridge: Some(oif),
                neighbour_port: self.learned.neighbour_port(&mut self.netlink, oif, ip)?,
            },
            LinkKind::Other => PodRoute::default(),
        };
        tracing::debug!(%ip, oif, ?route, "route to pod address");
        Ok(route)
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

    /// Rule 4: the ports of `bridge` whose peer holds `ip`.
    fn bridge_ports(&mut self, bridge: u32, ip: IpAddr) -> Result<BTreeSet<u32>, NodeError> {
        if !self.bridges.contains_key(&bridge) {
            if self.links.is_none() {
                self.links = Some(self.netlink.links_with_peers()?);
            }
            if self.strict.is_none() {
                self.strict = Some(Netlink::open_strict()?);
            }
            let (Some(links), Some(strict)) = (&self.links, &mut self.strict) else {
                return Ok(BTreeSet::new());
            };
            let ports = bridge::port_addresses(strict, links, bridge)?;
            self.bridges.insert(bridge, ports);
        }
        Ok(self
            .bridges
            .get(&bridge)
            .and_then(|ports| ports.get(&ip))
            .cloned()
            .unwrap_or_default())
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
