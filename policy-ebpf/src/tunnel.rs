//! Encapsulated traffic from a pod: a packet that carries another packet or frame
//! which a tunnel endpoint (a node's vxlan, geneve, ipip, gre device, or any other
//! host's) would unwrap and forward. The inner packet never meets this pod's egress
//! policy or source check, so a pod's egress hook drops every such packet to any
//! destination (`STAT_DROP_TUNNEL`), whatever policy allows, as Calico does, unless
//! its endpoint has `ALLOW_TUNNELS`:
//!
//! - IP protocols (IPv4 protocol or IPv6 next header) that carry a packet or frame:
//!   4 (IPv4: ipip, ip6tnl), 41 (IPv6: sit, ip6tnl), 47 (GRE: gre, gretap, ip6gre),
//!   97 (EtherIP), 115 (L2TPv3), 137 (MPLS in IP: ipip and ip6tnl in mplsip mode);
//! - UDP to a port in `Config::tunnel_ports_be` (VXLAN and Geneve: the defaults and
//!   the node's own devices' ports, written by the agent).
//!
//! A non-first fragment has no UDP header (ports 0): the first fragment of a UDP
//! tunnel packet is dropped, so the node never reassembles the packet.

use network_types::ip::IpProto;

use crate::{maps, parse::Flow};

const IPPROTO_IPIP: u8 = IpProto::Ipv4 as u8;
const IPPROTO_IPV6: u8 = IpProto::Ipv6 as u8;
const IPPROTO_GRE: u8 = IpProto::Gre as u8;
const IPPROTO_ETHERIP: u8 = IpProto::Etherip as u8;
const IPPROTO_L2TP: u8 = IpProto::L2tp as u8;
const IPPROTO_MPLS: u8 = IpProto::Mpls as u8;
const IPPROTO_UDP: u8 = IpProto::Udp as u8;

/// Whether `flow` is encapsulated traffic by the rules of the module comment.
#[inline(always)]
pub(crate) fn encapsulates(flow: &Flow) -> bool {
    match flow.protocol {
        IPPROTO_IPIP | IPPROTO_IPV6 | IPPROTO_GRE | IPPROTO_ETHERIP | IPPROTO_L2TP
        | IPPROTO_MPLS => true,
        IPPROTO_UDP if flow.dport_be != 0 => {
            let dport_be = flow.dport_be;
            maps::config(|config| config.tunnel_ports_be.contains(&dport_be))
        }
        _ => false,
    }
}
