//! Packet parsing. The common packet (IPv4 with a 20-byte header and IPv6 without
//! extension headers, not fragmented, carrying TCP or UDP, its headers in the
//! skb's linear data) is read with direct packet access (`plain`); every other
//! one with `bpf_skb_load_bytes`, whose reads are bounds-checked by the kernel and
//! work on non-linear skbs; a read past the end is `STAT_DROP_MALFORMED`. Both
//! read the same `Flow` from a packet both can read.
//!
//! Only what is parsed passes: `l3` admits IPv4, IPv6 and ARP frames and drops the
//! rest with a reason of its own (a VLAN tag in the frame, another EtherType); the
//! IPv6 walk drops a chain it cannot finish.
//!
//! Both families produce one `Flow` with 16-byte addresses (IPv4 as `::ffff:a.b.c.d`),
//! so conntrack, `ENDPOINT_ADDRS` and the policy lookup never branch on the family
//! except to pick the peer trie. An ICMP or ICMPv6 error also records where the
//! packet it quotes starts (`Flow::quote_at`); `quoted` reads that packet's tuple,
//! by the same rules as a `Flow`'s, only when conntrack asks.
//!
//! How a packet is fragmented goes into the caller's `frag::Fragment` (whole, first
//! or non-first, with its identification); a non-first fragment gets ports 0 and
//! takes its datagram's ports from `frag::resolve`, and a first fragment too short
//! to hold its upper-layer header is dropped (`frag.rs` has the rules).
//!
//! The stack is 512 bytes for the whole program: addresses are read straight into
//! the `Flow` (or quoted `CtKey`) they belong to (`load_into`), which then stays in memory;
//! built from bytes they would be split into one spilled register per byte.
//!
//! Header layouts are network-types' (`EthHdr`, `Ipv4Hdr`, `Ipv6Hdr`, `TcpHdr`,
//! `UdpHdr`, `SctpHdr`, `Icmpv4Hdr`, `Icmpv6Hdr`): a field is read at its
//! `offset_of!`, never at a number (ARP's `ArpHdr` in `arp.rs`). Headers are not
//! loaded whole: each read takes only the fields it needs (a whole `Ipv6Hdr` would
//! be 40 bytes of a stack frame that has none to spare). The IPv6 extension headers
//! network-types lacks have small `#[repr(C)]` layouts of their own here
//! (`Ipv6ExtHead`, `Ipv6FragHdr`).

use core::mem::{offset_of, size_of};

use aya_ebpf::{cty::c_void, helpers::bpf_skb_load_bytes, programs::TcContext};
use network_types::{
    eth::{EthHdr, EtherType},
    icmp::{IcmpIdSequence, Icmpv4Hdr, Icmpv6Hdr},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    sctp::SctpHdr,
    tcp::TcpHdr,
    udp::UdpHdr,
};
use policy_common::{
    ct::CtKey,
    verdict::{
        STAT_DROP_ETHER_TYPE, STAT_DROP_IPV6_EXTENSION_CHAIN, STAT_DROP_IPV6_ROUTING_HEADER,
        STAT_DROP_MALFORMED, STAT_DROP_VLAN,
    },
};

use crate::frag::{self, Fragment};

/// The Ethernet header's length: where the network layer starts in a frame.
pub(crate) const ETH_HLEN: usize = EthHdr::LEN;
/// EtherTypes as the frame carries them (network byte order, as `EthHdr::ether_type`
/// holds them and a plain load reads them).
const ETH_P_IP: u16 = EtherType::Ipv4 as u16;
const ETH_P_IPV6: u16 = EtherType::Ipv6 as u16;
const ETH_P_ARP: u16 = EtherType::Arp as u16;
/// VLAN tag protocol identifiers: 802.1Q, 802.1ad (QinQ) and the older QinQ 0x9100.
const ETH_P_8021Q: u16 = EtherType::Ieee8021q as u16;
const ETH_P_8021AD: u16 = EtherType::Ieee8021ad as u16;
const ETH_P_QINQ1: u16 = EtherType::Ieee8021QinQ1 as u16;
const IPPROTO_ICMP: u8 = IpProto::Icmp as u8;
pub(crate) const IPPROTO_TCP: u8 = IpProto::Tcp as u8;
const IPPROTO_UDP: u8 = IpProto::Udp as u8;
const IPPROTO_ICMPV6: u8 = IpProto::Ipv6Icmp as u8;
const IPPROTO_SCTP: u8 = IpProto::Sctp as u8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// ICMP errors that quote the packet they answer (RFC 792): destination
/// unreachable, time exceeded, parameter problem.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// ICMPv6 errors (RFC 4443): destination unreachable (1), packet too big (2), time
/// exceeded (3), parameter problem (4).
const ICMPV6_ERROR_FIRST: u8 = 1;
const ICMPV6_ERROR_LAST: u8 = 4;
/// The ICMP and ICMPv6 header before the quoted packet: type, code, checksum and
/// four bytes (unused, MTU or pointer).
const ICMP_HLEN: usize = Icmpv4Hdr::LEN;
/// Where an echo request or reply carries its identifier: in the header's data.
const ICMP_ECHO_ID: usize = offset_of!(Icmpv4Hdr, data) + offset_of!(IcmpIdSequence, id);
/// IPv6 neighbour discovery: router solicitation .. redirect (RFC 4861).
const ND_FIRST: u8 = 133;
const ND_LAST: u8 = 137;
/// Neighbour solicitation and advertisement: address resolution and
/// unreachability detection.
const ND_NEIGHBOUR_SOLICIT: u8 = 135;
const ND_NEIGHBOUR_ADVERT: u8 = 136;
/// The hop limit every ND message carries (RFC 4861 section 6.1).
const ND_HOP_LIMIT: u8 = 255;
/// Multicast listener discovery: query, MLDv1 report, done (RFC 2710) and the MLDv2
/// report (RFC 3810).
const MLD_QUERY: u8 = 130;
const MLD_DONE: u8 = 132;
const MLDV2_REPORT: u8 = 143;
/// The hop limit every MLD message carries (RFC 2710 section 3).
const MLD_HOP_LIMIT: u8 = 1;
/// IPv6 extension headers the walk steps over (RFC 8200 section 4).
const NEXTHDR_HOP_BY_HOP: u8 = IpProto::HopOpt as u8;
const NEXTHDR_ROUTING: u8 = IpProto::Ipv6Route as u8;
const NEXTHDR_FRAGMENT: u8 = IpProto::Ipv6Frag as u8;
const NEXTHDR_DEST_OPTIONS: u8 = IpProto::Ipv6Opts as u8;
/// At most this many IPv6 extension headers are walked: the verifier needs a bound,
/// and real traffic rarely carries more than two. A packet whose chain goes on past
/// them is dropped (`STAT_DROP_IPV6_EXTENSION_CHAIN`): its protocol and ports are
/// unknown.
const MAX_EXTENSION_HEADERS: usize = 4;

/// The IPv4 header up to its checksum (version/IHL, length, identification,
/// fragment field, TTL, protocol): what one read takes before the addresses.
pub(crate) const IPV4_HEAD: usize = offset_of!(Ipv4Hdr, check);
/// A TCP header up to its window: ports, sequence and acknowledgement numbers,
/// and the data offset/flags word.
const TCP_HEAD: usize = offset_of!(TcpHdr, window);
/// The flags byte: the second of the data offset/flags word (the first holds the
/// data offset and reserved bits).
const TCP_FLAGS: usize = offset_of!(TcpHdr, _bitfield_1) + 1;
/// TCP, UDP and SCTP headers all start with the source and destination ports.
const PORTS_LEN: usize = offset_of!(TcpHdr, seq);

// What `ports` and `ICMP_ECHO_ID` rely on: the three port-carrying headers agree
// on where their ports are, and so do ICMP and ICMPv6 on their echo identifier.
const _: () = assert!(
    offset_of!(TcpHdr, dest) == offset_of!(UdpHdr, dst)
        && offset_of!(TcpHdr, dest) == offset_of!(SctpHdr, dst)
        && offset_of!(TcpHdr, source) == offset_of!(UdpHdr, src)
        && offset_of!(TcpHdr, source) == offset_of!(SctpHdr, src)
        && PORTS_LEN == offset_of!(UdpHdr, len)
        && PORTS_LEN == offset_of!(SctpHdr, verification_tag)
        && offset_of!(Icmpv4Hdr, data) == offset_of!(Icmpv6Hdr, data)
        && Icmpv4Hdr::LEN == Icmpv6Hdr::LEN
);

// The wire offsets every read relies on, pinned: a network-types release that moved
// a field fails the build instead of reading another one (RFC 791, 793, 8200).
const _: () = assert!(
    IPV4_HEAD == 10
        && offset_of!(Ipv4Hdr, src_addr) == 12
        && offset_of!(Ipv4Hdr, dst_addr) == 16
        && TCP_HEAD == 14
        && TCP_FLAGS == 13
        && PORTS_LEN == 4
        && offset_of!(Ipv6Hdr, next_hdr) == 6
        && offset_of!(Ipv6Hdr, src_addr) == 8
        && offset_of!(Ipv6Hdr, dst_addr) == 24
        && Ipv6Hdr::LEN == 40
        && core::mem::size_of::<Ipv6ExtHead>() == 4
        && core::mem::size_of::<Ipv6FragHdr>() == 8
);

/// The first bytes of a hop-by-hop options, routing or destination options header
/// (RFC 8200 sections 4.3, 4.4, 4.6), which network-types has no type for. Only a
/// routing header has the last two fields; the walk reads them only there.
#[repr(C)]
struct Ipv6ExtHead {
    next_hdr: u8,
    /// The header's length in 8-octet units, not counting the first 8 octets.
    hdr_ext_len: u8,
    _routing_type: u8,
    segments_left: u8,
}

/// The IPv6 fragment header (RFC 8200 section 4.5), which network-types has no
/// type for.
#[repr(C)]
pub(crate) struct Ipv6FragHdr {
    pub next_hdr: u8,
    pub _reserved: u8,
    /// Fragment offset (8-octet units, upper 13 bits), two reserved bits and the M
    /// (more fragments) flag.
    pub frag_off: [u8; 2],
    pub identification: [u8; 4],
}

/// The network layer of a frame `l3` admits.
pub(crate) enum L3 {
    Ipv4,
    Ipv6,
    /// ARP, checked by `arp::check` rather than parsed into a `Flow`.
    Arp,
}

/// What an IP packet is, as far as this program decides it.
pub(crate) enum Packet {
    /// On-link IPv6 neighbour discovery or multicast listener discovery
    /// (`on_link_control`): passes, pods need ND to reach anything and the kernel
    /// sends MLD on every interface. Only the flow's source address means anything;
    /// the whole flow rides along so that no byte of a `Packet` is uninitialized
    /// (a copy of undefined bytes let LLVM store part of a spilled pointer, which
    /// the verifier rejects).
    OnLinkControl(Flow),
    /// Everything else: decided by conntrack and policy.
    Flow(Flow),
}

impl Packet {
    /// The source address (IPv4 mapped) and whether the packet is IPv6.
    #[inline(always)]
    pub(crate) fn source(&self) -> (&[u8; 16], bool) {
        match self {
            Packet::OnLinkControl(flow) => (&flow.saddr, true),
            Packet::Flow(flow) => (&flow.saddr, flow.ipv6),
        }
    }
}

/// The fields of an IP packet policy and conntrack look at, in network byte order.
///
/// `repr(C)`, 4-byte aligned, no implicit padding: the addresses sit at 4-byte
/// boundaries, so they are written and copied a word at a time (an address of
/// unknown alignment becomes byte-by-byte stores), and a copy of the whole never
/// moves an undefined byte.
#[repr(C, align(4))]
pub(crate) struct Flow {
    /// Source address; IPv4 as `::ffff:a.b.c.d`.
    pub saddr: [u8; 16],
    /// Destination address; IPv4 as `::ffff:a.b.c.d`.
    pub daddr: [u8; 16],
    pub sport_be: u16,
    pub dport_be: u16,
    /// An ICMP error (v4 types 3, 11, 12) or ICMPv6 error (types 1-4) of the
    /// packet's own family: the offset of the IP header it quotes (`quoted` reads
    /// it); 0 for any other packet (offset 0 is the Ethernet header, never a quote).
    pub quote_at: u16,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// The packet is IPv6 (addresses are then not IPv4-mapped).
    pub ipv6: bool,
    /// The TCP header's flags byte (`TCP_FLAG_*`); 0 for other protocols and for a
    /// TCP packet without its header (a non-first fragment).
    pub tcp_flags: u8,
    /// Explicit padding, zero. Two fields, not `[u8; 3]`: zeroing three bytes
    /// becomes a call to a byte-by-byte `memset` in BPF.
    pub pad: u8,
    pub pad_word: u16,
}

const _: () = assert!(
    size_of::<Flow>() == 44
        && offset_of!(Flow, saddr) == 0
        && offset_of!(Flow, daddr) == 16
        && offset_of!(Flow, pad) == 41
        && offset_of!(Flow, pad_word) == 42
);

impl Flow {
    /// A flow of `protocol` with every other field zero, to be read into in place.
    #[inline(always)]
    pub(crate) fn new(protocol: u8, ipv6: bool) -> Self {
        Flow {
            saddr: [0; 16],
            daddr: [0; 16],
            sport_be: 0,
            dport_be: 0,
            protocol,
            ipv6,
            tcp_flags: 0,
            quote_at: 0,
            pad: 0,
            pad_word: 0,
        }
    }

    /// A TCP SYN without ACK: it opens a connection, so it is decided afresh even
    /// when its tuple is tracked (a reused source port must not inherit the verdict
    /// of an older connection made under another policy).
    #[inline(always)]
    pub(crate) fn opens(&self) -> bool {
        self.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
    }
}

#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, u32> {
    ctx.load::<T>(offset).map_err(|_| STAT_DROP_MALFORMED)
}

/// Reads `dst.len()` bytes at `offset` straight into `dst` (see the module comment).
#[inline(always)]
fn load_into(ctx: &TcContext, offset: usize, dst: &mut [u8]) -> Result<(), u32> {
    // SAFETY: the helper writes at most `dst.len()` bytes at `dst`, and reports a
    // read past the end of the packet as an error.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            offset as u32,
            dst.as_mut_ptr() as *mut c_void,
            dst.len() as u32,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(STAT_DROP_MALFORMED)
    }
}

/// Reads the IPv4 address at `offset` into `dst` as `::ffff:a.b.c.d`, in place.
#[inline(always)]
pub(crate) fn load_mapped(ctx: &TcContext, offset: usize, dst: &mut [u8; 16]) -> Result<(), u32> {
    let (prefix, v4) = dst.split_at_mut(12);
    prefix.copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    load_into(ctx, offset, v4)
}

/// An IPv6 address in the IPv4-mapped range `::ffff:0:0/96`.
#[inline(always)]
pub(crate) fn is_ipv4_mapped(a: &[u8; 16]) -> bool {
    let head = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    head == 0 && a[8] == 0 && a[9] == 0 && a[10] == 0xff && a[11] == 0xff
}

/// An IPv6 link-local unicast address (`fe80::/10`).
#[inline(always)]
pub(crate) fn is_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// Whether two addresses (16-byte form) are equal, compared as two u64 so no
/// `memcmp` call is emitted.
#[inline(always)]
pub(crate) fn same_address(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let half = |x: &[u8; 16], at: usize| {
        u64::from_ne_bytes([
            x[at],
            x[at + 1],
            x[at + 2],
            x[at + 3],
            x[at + 4],
            x[at + 5],
            x[at + 6],
            x[at + 7],
        ])
    };
    half(a, 0) == half(b, 0) && half(a, 8) == half(b, 8)
}

/// The IPv6 unspecified address `::`.
#[inline(always)]
pub(crate) fn is_unspecified(a: &[u8; 16]) -> bool {
    let head = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let tail = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    head == 0 && tail == 0
}

/// Whether an ICMPv6 message of `icmp_type` is on-link link control:
/// - ND (types 133-137) as RFC 4861 requires: hop limit 255 (no router forwarded
///   it) and a link-local or multicast destination or a link-local source; a
///   neighbour solicitation or advertisement also between global unicast
///   addresses (pods on one bridge resolve each other so), which `decide` lets
///   pass only with a local pod or the node at the other end;
/// - MLD (types 130-132 and 143) as RFC 2710/3810 require: hop limit 1, a
///   link-local or unspecified source and a multicast destination.
///
/// Any other is decided like other ICMPv6.
#[inline(always)]
fn on_link_control(icmp_type: u8, hop_limit: u8, saddr: &[u8; 16], daddr: &[u8; 16]) -> bool {
    let multicast = daddr[0] == 0xff;
    if (ND_FIRST..=ND_LAST).contains(&icmp_type) {
        let neighbour = icmp_type == ND_NEIGHBOUR_SOLICIT || icmp_type == ND_NEIGHBOUR_ADVERT;
        hop_limit == ND_HOP_LIMIT
            && (neighbour || is_link_local(daddr) || multicast || is_link_local(saddr))
    } else if (MLD_QUERY..=MLD_DONE).contains(&icmp_type) || icmp_type == MLDV2_REPORT {
        hop_limit == MLD_HOP_LIMIT && multicast && (is_link_local(saddr) || is_unspecified(saddr))
    } else {
        false
    }
}

/// Classifies the frame by EtherType, admitting only IPv4, IPv6 and ARP. A VLAN
/// tag in the frame is `STAT_DROP_VLAN` (as is one the kernel moved into the skb,
/// which `classify` checks): after TC the kernel strips a priority (VLAN id 0) tag
/// and routes what it carried, which this program never decided. Any other
/// EtherType (or an 802.3 length) is `STAT_DROP_ETHER_TYPE`.
#[inline(always)]
pub(crate) fn l3(ctx: &TcContext) -> Result<L3, u32> {
    let at = ctx.data();
    let ether_type = if at + ETH_HLEN <= ctx.data_end() {
        // SAFETY: the Ethernet header lies within [data, data_end), checked just
        // above (the verifier checks it again); `EthHdr` is byte arrays.
        unsafe { (*(at as *const EthHdr)).ether_type }
    } else {
        load::<u16>(ctx, offset_of!(EthHdr, ether_type))?
    };
    match ether_type {
        ETH_P_IP => Ok(L3::Ipv4),
        ETH_P_IPV6 => Ok(L3::Ipv6),
        ETH_P_ARP => Ok(L3::Arp),
        ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ1 => Err(STAT_DROP_VLAN),
        _ => Err(STAT_DROP_ETHER_TYPE),
    }
}

/// Parses the IP packet of a frame `l3` classified as IPv4 or IPv6 (`ipv6`); how it
/// is fragmented goes into `fragment` (the caller keeps it off the stack).
#[inline(always)]
pub(crate) fn packet(ctx: &TcContext, ipv6: bool, fragment: &mut Fragment) -> Result<Packet, u32> {
    packet_at::<ETH_HLEN>(ctx, ipv6, fragment)
}

/// `packet` for an IP header `L2` bytes into the packet: `ETH_HLEN` behind an
/// Ethernet header, 0 on a link without one (`exit.rs`).
#[inline(always)]
pub(crate) fn packet_at<const L2: usize>(
    ctx: &TcContext,
    ipv6: bool,
    fragment: &mut Fragment,
) -> Result<Packet, u32> {
    if let Some(flow) = plain::<L2>(ctx, ipv6) {
        return Ok(Packet::Flow(flow));
    }
    if ipv6 {
        self::ipv6::<L2>(ctx, fragment)
    } else {
        ipv4::<L2>(ctx, fragment).map(Packet::Flow)
    }
}

/// Version 4 with a 20-byte header: the only IPv4 first byte `plain` (and the
/// conntrack fast path, `fast.rs`) takes.
pub(crate) const IPV4_PLAIN: u8 = 0x45;
/// The high byte of the IPv4 flags and fragment offset field, less the reserved
/// and Don't Fragment bits: more fragments and the offset's top bits.
pub(crate) const IPV4_FRAGMENTED: u8 = 0x3f;
/// `::ffff:0:0/96`'s third word as it sits in memory: the IPv4-mapped prefix.
pub(crate) const IPV4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The common packet read with direct packet access instead of helper calls:
/// IPv4 with a 20-byte header, not a fragment (neither more fragments nor an
/// offset), or IPv6 without extension headers, either carrying TCP (its header
/// up to the flags) or UDP (its ports), with every byte read in the skb's linear
/// data and, for IPv6, neither address IPv4-mapped. The `Flow` is exactly the one
/// `ipv4` or `ipv6` reads from such a packet (a whole packet, no quote, TCP's
/// flags, ports of both). `None` for every other packet, which the helper-based
/// parse then reads (and drops, when it must) as it always did.
#[inline(always)]
fn plain<const L2: usize>(ctx: &TcContext, ipv6: bool) -> Option<Flow> {
    let end = ctx.data_end();
    let ip = ctx.data() + L2;
    // SAFETY (every unsafe read below): the bytes read lie within [data, data_end),
    // as the bounds check before each read proves (the verifier checks it again);
    // network-types' headers are byte arrays, read at any alignment, and
    // `fast::word` reads with one BPF load, which packet data allows at any
    // alignment.
    let (l4, protocol, saddr, daddr) = if ipv6 {
        if ip + Ipv6Hdr::LEN > end {
            return None;
        }
        let head = unsafe { &*(ip as *const Ipv6Hdr) };
        if head.vcf[0] >> 4 != 6 {
            return None;
        }
        let (saddr, daddr) = unsafe {
            (
                crate::fast::words(ip + offset_of!(Ipv6Hdr, src_addr)),
                crate::fast::words(ip + offset_of!(Ipv6Hdr, dst_addr)),
            )
        };
        if crate::fast::ipv4_mapped(&saddr) || crate::fast::ipv4_mapped(&daddr) {
            return None;
        }
        (ip + Ipv6Hdr::LEN, head.next_hdr, saddr, daddr)
    } else {
        if ip + Ipv4Hdr::LEN > end {
            return None;
        }
        let head = unsafe { &*(ip as *const Ipv4Hdr) };
        if head.vihl != IPV4_PLAIN || head.frags[0] & IPV4_FRAGMENTED != 0 || head.frags[1] != 0 {
            return None;
        }
        let (saddr, daddr) = unsafe {
            (
                crate::fast::word(ip + offset_of!(Ipv4Hdr, src_addr)),
                crate::fast::word(ip + offset_of!(Ipv4Hdr, dst_addr)),
            )
        };
        (
            ip + Ipv4Hdr::LEN,
            head.proto,
            [0, 0, IPV4_MAPPED, saddr],
            [0, 0, IPV4_MAPPED, daddr],
        )
    };
    let needed = if protocol == IPPROTO_TCP {
        TCP_HEAD
    } else if protocol == IPPROTO_UDP {
        PORTS_LEN
    } else {
        return None;
    };
    if l4 + needed > end {
        return None;
    }
    let ports = unsafe { crate::fast::word(l4) }.to_ne_bytes();
    let tcp_flags = if protocol == IPPROTO_TCP {
        unsafe { *((l4 + TCP_FLAGS) as *const u8) }
    } else {
        0
    };
    Some(Flow {
        saddr: words_to_bytes(saddr),
        daddr: words_to_bytes(daddr),
        sport_be: u16::from_ne_bytes([ports[0], ports[1]]),
        dport_be: u16::from_ne_bytes([ports[2], ports[3]]),
        quote_at: 0,
        protocol,
        ipv6,
        tcp_flags,
        pad: 0,
        pad_word: 0,
    })
}

/// An address given as four words in memory order, as its 16 bytes.
#[inline(always)]
fn words_to_bytes(words: [u32; 4]) -> [u8; 16] {
    // SAFETY: both are 16 bytes of plain data, every bit pattern valid.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) }
}

/// Classifies a packet of a link without Ethernet frames (an IP-in-IP, WireGuard
/// or tun device) by the protocol the kernel recorded for it: only IPv4 and IPv6
/// (anything else is `STAT_DROP_ETHER_TYPE`).
#[inline(always)]
pub(crate) fn l3_bare(ctx: &TcContext) -> Result<L3, u32> {
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel handed this program.
    let protocol = unsafe { (*ctx.skb.skb).protocol };
    // A __be16 in a u32: its low half, in network byte order like `ETH_P_*`.
    match protocol as u16 {
        ETH_P_IP => Ok(L3::Ipv4),
        ETH_P_IPV6 => Ok(L3::Ipv6),
        _ => Err(STAT_DROP_ETHER_TYPE),
    }
}

/// TCP flag bits in the TCP header's flags byte (`TCP_FLAGS`).
pub(crate) const TCP_FLAG_FIN: u8 = 0x01;
pub(crate) const TCP_FLAG_SYN: u8 = 0x02;
pub(crate) const TCP_FLAG_RST: u8 = 0x04;
pub(crate) const TCP_FLAG_ACK: u8 = 0x10;

/// Reads the upper-layer header at `l4` into `flow` (whose protocol and family are
/// set): its ports (`ports`), the TCP flags, and for an ICMP error of the packet's
/// own family where the quoted packet starts (`Flow::quote_at`).
#[inline(always)]
fn upper(ctx: &TcContext, l4: usize, flow: &mut Flow) -> Result<(), u32> {
    let protocol = flow.protocol;
    if protocol == IPPROTO_TCP {
        // Ports and flags in one helper call; a header too short for the flags
        // byte is malformed, as it always was.
        let head = load::<[u8; TCP_HEAD]>(ctx, l4)?;
        flow.sport_be = be_field(&head, offset_of!(TcpHdr, source));
        flow.dport_be = be_field(&head, offset_of!(TcpHdr, dest));
        flow.tcp_flags = head[TCP_FLAGS];
        return Ok(());
    }
    (flow.sport_be, flow.dport_be) = ports(ctx, protocol, l4)?;
    let error = if protocol == IPPROTO_ICMP && !flow.ipv6 {
        let icmp_type = load::<u8>(ctx, l4 + offset_of!(Icmpv4Hdr, type_))?;
        icmp_type == ICMP_DEST_UNREACH
            || icmp_type == ICMP_TIME_EXCEEDED
            || icmp_type == ICMP_PARAMETER_PROBLEM
    } else if protocol == IPPROTO_ICMPV6 && flow.ipv6 {
        let icmp_type = load::<u8>(ctx, l4 + offset_of!(Icmpv6Hdr, type_))?;
        (ICMPV6_ERROR_FIRST..=ICMPV6_ERROR_LAST).contains(&icmp_type)
    } else {
        false
    };
    if error {
        // Fits: at most 14 + 60 + 8 (IPv4) or 14 + 40 + 4 * 2048 + 8 (IPv6).
        flow.quote_at = (l4 + ICMP_HLEN) as u16;
    }
    Ok(())
}

/// Reads the tuple of the packet `flow` (an ICMP or ICMPv6 error, `Flow::quote_at`
/// not 0) quotes into the tuple fields of `quoted` (addresses, ports, protocol),
/// exactly as that packet's own `Flow` was read (same address form, ports, echo
/// identifier, ports 0 for a non-first fragment), so the key names the conntrack
/// entry that packet belongs to once the caller sets interface and direction.
/// False when the quote is cut short, of another family, or (IPv6) starts with an
/// extension header: such an error is decided like any ICMP packet. Filled in
/// place, so its addresses stay in memory.
#[inline(always)]
pub(crate) fn quoted(ctx: &TcContext, flow: &Flow, quoted: &mut CtKey) -> bool {
    let at = usize::from(flow.quote_at);
    if flow.ipv6 {
        quoted_ipv6(ctx, at, quoted).is_ok()
    } else {
        quoted_ipv4(ctx, at, quoted).is_ok()
    }
}

/// The IPv4 packet an ICMP error quotes at `at`: its header (with its IHL) and the
/// first bytes of its upper-layer header, read like `ipv4` reads a packet. `Err`
/// when it is cut short or is not IPv4.
#[inline(always)]
fn quoted_ipv4(ctx: &TcContext, at: usize, quoted: &mut CtKey) -> Result<(), u32> {
    let header_len = ipv4_header_len(load::<u8>(ctx, at + offset_of!(Ipv4Hdr, vihl))?)?;
    let fragment_offset =
        u16::from_be(load::<u16>(ctx, at + offset_of!(Ipv4Hdr, frags))?) & frag::IPV4_OFFSET_MASK;
    quoted.protocol = load::<u8>(ctx, at + offset_of!(Ipv4Hdr, proto))?;
    load_mapped(ctx, at + offset_of!(Ipv4Hdr, src_addr), &mut quoted.saddr)?;
    load_mapped(ctx, at + offset_of!(Ipv4Hdr, dst_addr), &mut quoted.daddr)?;
    (quoted.sport_be, quoted.dport_be) = if fragment_offset != 0 {
        (0, 0)
    } else {
        ports(ctx, quoted.protocol, at + header_len)?
    };
    Ok(())
}

/// The IPv6 packet an ICMPv6 error quotes at `at`: the fixed header and the first
/// bytes of the upper-layer header right after it. Extension headers are not walked:
/// a quote whose next header is one is `Err` (not matched), and so are IPv4-mapped
/// addresses (they would name an IPv4 flow's key) and a quote cut short.
#[inline(always)]
fn quoted_ipv6(ctx: &TcContext, at: usize, quoted: &mut CtKey) -> Result<(), u32> {
    if load::<u8>(ctx, at + offset_of!(Ipv6Hdr, vcf))? >> 4 != 6 {
        return Err(STAT_DROP_MALFORMED);
    }
    quoted.protocol = load::<u8>(ctx, at + offset_of!(Ipv6Hdr, next_hdr))?;
    load_into(ctx, at + offset_of!(Ipv6Hdr, src_addr), &mut quoted.saddr)?;
    load_into(ctx, at + offset_of!(Ipv6Hdr, dst_addr), &mut quoted.daddr)?;
    if is_extension_header(quoted.protocol)
        || is_ipv4_mapped(&quoted.saddr)
        || is_ipv4_mapped(&quoted.daddr)
    {
        return Err(STAT_DROP_MALFORMED);
    }
    (quoted.sport_be, quoted.dport_be) = ports(ctx, quoted.protocol, at + Ipv6Hdr::LEN)?;
    Ok(())
}

/// Reads the ports of the upper-layer header at `l4`: TCP, UDP and SCTP carry them
/// in their first four bytes; ICMP and ICMPv6 echo (request or reply) use the
/// identifier as both ports so request and reply pair up; the rest get 0.
#[inline(always)]
fn ports(ctx: &TcContext, protocol: u8, l4: usize) -> Result<(u16, u16), u32> {
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            let both = load::<[u8; PORTS_LEN]>(ctx, l4)?;
            Ok((
                be_field(&both, offset_of!(TcpHdr, source)),
                be_field(&both, offset_of!(TcpHdr, dest)),
            ))
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let icmp_type = load::<u8>(ctx, l4 + offset_of!(Icmpv4Hdr, type_))?;
            let echo = if protocol == IPPROTO_ICMP {
                icmp_type == ICMP_ECHO_REQUEST || icmp_type == ICMP_ECHO_REPLY
            } else {
                icmp_type == ICMPV6_ECHO_REQUEST || icmp_type == ICMPV6_ECHO_REPLY
            };
            if echo {
                let id = load::<u16>(ctx, l4 + ICMP_ECHO_ID)?;
                Ok((id, id))
            } else {
                Ok((0, 0))
            }
        }
        _ => Ok((0, 0)),
    }
}

/// Reads the 5-tuple of an IPv4 packet. Non-first fragments carry no L4 header: they
/// get ports 0 here, and their datagram's from `frag::resolve`. A packet whose
/// reading here could differ must never pass `plain`'s (and `fast::parse`'s)
/// preconditions: a check added here is added there too.
#[inline(always)]
fn ipv4<const L2: usize>(ctx: &TcContext, fragment: &mut Fragment) -> Result<Flow, u32> {
    // Version/IHL, fragment offset and protocol in one helper call (each call costs
    // several ns on every packet).
    let head = load::<[u8; IPV4_HEAD]>(ctx, L2)?;
    let header_len = ipv4_header_len(head[offset_of!(Ipv4Hdr, vihl)])?;
    let mut flow = Flow::new(head[offset_of!(Ipv4Hdr, proto)], false);
    frag::ipv4(&head, header_len, fragment)?;
    load_mapped(ctx, L2 + offset_of!(Ipv4Hdr, src_addr), &mut flow.saddr)?;
    load_mapped(ctx, L2 + offset_of!(Ipv4Hdr, dst_addr), &mut flow.daddr)?;
    if fragment.kind != frag::NON_FIRST {
        upper(ctx, L2 + header_len, &mut flow)?;
    }
    Ok(flow)
}

/// Reads an IPv6 packet: the fixed header, then at most `MAX_EXTENSION_HEADERS`
/// extension headers (hop-by-hop, routing, fragment, destination options). A
/// non-first fragment ends the walk with the fragment header's next header as the
/// protocol and ports 0 (`frag::resolve` gives it its datagram's); any other header
/// ends it as the upper-layer protocol.
/// A chain still going after the limit is `STAT_DROP_IPV6_EXTENSION_CHAIN`, and a
/// routing header with segments left `STAT_DROP_IPV6_ROUTING_HEADER` (the packet
/// is on its way to another destination than the one it carries).
/// An IPv4-mapped source or destination is malformed: it would share conntrack
/// and `ENDPOINT_ADDRS` keys with IPv4. As for `ipv4`: a check added here is
/// added to `plain`'s and `fast::parse`'s preconditions too.
#[inline(always)]
fn ipv6<const L2: usize>(ctx: &TcContext, fragment: &mut Fragment) -> Result<Packet, u32> {
    if load::<u8>(ctx, L2 + offset_of!(Ipv6Hdr, vcf))? >> 4 != 6 {
        return Err(STAT_DROP_MALFORMED);
    }
    let mut flow = Flow::new(load::<u8>(ctx, L2 + offset_of!(Ipv6Hdr, next_hdr))?, true);
    let hop_limit = load::<u8>(ctx, L2 + offset_of!(Ipv6Hdr, hop_limit))?;
    load_into(ctx, L2 + offset_of!(Ipv6Hdr, src_addr), &mut flow.saddr)?;
    load_into(ctx, L2 + offset_of!(Ipv6Hdr, dst_addr), &mut flow.daddr)?;
    if is_ipv4_mapped(&flow.saddr) || is_ipv4_mapped(&flow.daddr) {
        return Err(STAT_DROP_MALFORMED);
    }
    let mut l4 = L2 + Ipv6Hdr::LEN;
    let mut has_l4 = true;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match flow.protocol {
            NEXTHDR_HOP_BY_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST_OPTIONS => {
                // Next header, length and (routing header) segments left at once.
                let head = load::<Ipv6ExtHead>(ctx, l4)?;
                if flow.protocol == NEXTHDR_ROUTING && head.segments_left != 0 {
                    return Err(STAT_DROP_IPV6_ROUTING_HEADER);
                }
                flow.protocol = head.next_hdr;
                l4 += (usize::from(head.hdr_ext_len) + 1) * 8;
            }
            NEXTHDR_FRAGMENT => {
                let non_first;
                (flow.protocol, non_first) = frag::ipv6_header(ctx, l4, fragment)?;
                l4 += size_of::<Ipv6FragHdr>();
                if non_first {
                    has_l4 = false;
                    break;
                }
            }
            _ => break,
        }
    }
    frag::ipv6_first::<L2>(ctx, l4, fragment)?;
    if !has_l4 {
        return Ok(Packet::Flow(flow));
    }
    if is_extension_header(flow.protocol) {
        return Err(STAT_DROP_IPV6_EXTENSION_CHAIN);
    }
    if flow.protocol == IPPROTO_ICMPV6 {
        let icmp_type = load::<u8>(ctx, l4)?;
        if on_link_control(icmp_type, hop_limit, &flow.saddr, &flow.daddr) {
            return Ok(Packet::OnLinkControl(flow));
        }
    }
    upper(ctx, l4, &mut flow)?;
    Ok(Packet::Flow(flow))
}

/// The length in bytes of an IPv4 header whose first byte (version and IHL) is
/// `vihl`; malformed unless it is IPv4 and at least the fixed 20 bytes.
#[inline(always)]
fn ipv4_header_len(vihl: u8) -> Result<usize, u32> {
    let header_len = usize::from(vihl & 0x0F) * 4;
    if vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN {
        return Err(STAT_DROP_MALFORMED);
    }
    Ok(header_len)
}

/// The two bytes at `at` of a header read into `bytes`, as they are (network byte
/// order, like the `_be` fields they go into).
#[inline(always)]
fn be_field<const N: usize>(bytes: &[u8; N], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

/// One of the extension headers the walk steps over (one left after the bound ends
/// the walk unfinished).
#[inline(always)]
fn is_extension_header(protocol: u8) -> bool {
    matches!(
        protocol,
        NEXTHDR_HOP_BY_HOP | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT | NEXTHDR_DEST_OPTIONS
    )
}
