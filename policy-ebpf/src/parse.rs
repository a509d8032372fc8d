//! Packet parsing with `bpf_skb_load_bytes`: every read is bounds-checked by the
//! kernel and works on non-linear skbs; a read past the end is `STAT_DROP_MALFORMED`.

use aya_ebpf::programs::TcContext;
use policy_common::verdict::STAT_DROP_MALFORMED;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// IPv6 neighbour discovery: router solicitation .. redirect (RFC 4861).
const ND_FIRST: u8 = 133;
const ND_LAST: u8 = 137;

/// The network layer of an IP frame.
pub(crate) enum L3 {
    Ipv4,
    Ipv6,
}

/// What an IPv6 packet is, as far as this program decides it.
pub(crate) enum Ipv6Kind {
    NeighbourDiscovery,
    Other,
}

/// The fields of an IPv4 packet policy and conntrack look at, in network byte order.
pub(crate) struct Flow {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub protocol: u8,
}

impl Flow {
    /// The same flow seen from the other end.
    #[inline(always)]
    pub(crate) fn reversed(&self) -> Flow {
        Flow {
            saddr_be: self.daddr_be,
            daddr_be: self.saddr_be,
            sport_be: self.dport_be,
            dport_be: self.sport_be,
            protocol: self.protocol,
        }
    }
}

#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, u32> {
    ctx.load::<T>(offset).map_err(|_| STAT_DROP_MALFORMED)
}

/// Classifies the frame by EtherType; `None` for frames that are not IP.
#[inline(always)]
pub(crate) fn l3(ctx: &TcContext) -> Result<Option<L3>, u32> {
    let ether_type = u16::from_be(load::<u16>(ctx, 12)?);
    Ok(match ether_type {
        ETH_P_IP => Some(L3::Ipv4),
        ETH_P_IPV6 => Some(L3::Ipv6),
        _ => None,
    })
}

/// Reads the 5-tuple of an IPv4 packet. Non-first fragments carry no L4 header: they
/// get ports 0, so only rules that allow every port of their protocol match them.
/// ICMP echo uses the identifier as both ports so request and reply pair up.
#[inline(always)]
pub(crate) fn ipv4_flow(ctx: &TcContext) -> Result<Flow, u32> {
    let version_ihl = load::<u8>(ctx, ETH_HLEN)?;
    let header_len = usize::from(version_ihl & 0x0F) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return Err(STAT_DROP_MALFORMED);
    }
    let fragment_offset = u16::from_be(load::<u16>(ctx, ETH_HLEN + 6)?) & 0x1FFF;
    let protocol = load::<u8>(ctx, ETH_HLEN + 9)?;
    let saddr_be = load::<u32>(ctx, ETH_HLEN + 12)?;
    let daddr_be = load::<u32>(ctx, ETH_HLEN + 16)?;
    let l4 = ETH_HLEN + header_len;
    let (sport_be, dport_be) = if fragment_offset != 0 {
        (0, 0)
    } else {
        match protocol {
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
                (load::<u16>(ctx, l4)?, load::<u16>(ctx, l4 + 2)?)
            }
            IPPROTO_ICMP => match load::<u8>(ctx, l4)? {
                ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => {
                    let id = load::<u16>(ctx, l4 + 4)?;
                    (id, id)
                }
                _ => (0, 0),
            },
            _ => (0, 0),
        }
    };
    Ok(Flow {
        saddr_be,
        daddr_be,
        sport_be,
        dport_be,
        protocol,
    })
}

/// Recognises neighbour discovery (ICMPv6 right after the fixed header).
#[inline(always)]
pub(crate) fn ipv6_kind(ctx: &TcContext) -> Result<Ipv6Kind, u32> {
    let next_header = load::<u8>(ctx, ETH_HLEN + 6)?;
    if next_header == IPPROTO_ICMPV6 {
        let icmp_type = load::<u8>(ctx, ETH_HLEN + 40)?;
        if (ND_FIRST..=ND_LAST).contains(&icmp_type) {
            return Ok(Ipv6Kind::NeighbourDiscovery);
        }
    }
    Ok(Ipv6Kind::Other)
}
