//! IP fragments: a non-first fragment carries no upper-layer header, so it is
//! decided on the protocol and ports of its datagram's first fragment, remembered in
//! `FRAGMENTS` (layout in `policy_common::frag`) when that first fragment passed at
//! the same interface in the same direction. Both families alike.
//!
//! Rules, in order (`parse` classifies, `decide` calls `resolve` and `remember`):
//! 1. A packet without fragmentation, or an IPv6 atomic fragment (offset 0 and no
//!    more fragments, RFC 6946), is a whole packet: nothing here applies.
//! 2. A first fragment (offset 0, more fragments) must hold `FRAGMENT_FIRST_MIN`
//!    bytes of its upper-layer header within its IP length, else it is dropped
//!    (`STAT_DROP_FRAGMENT_TINY`). It is decided on its own header like a whole
//!    packet; when it passes, `remember` records its protocol, ports and where its
//!    data ends for its datagram, replacing any earlier record. A datagram is named
//!    as its receiver's reassembly names it: IPv4 by (source, destination,
//!    protocol, identification), IPv6 by (source, destination, identification),
//!    since a non-first fragment's Next Header may differ (RFC 8200 section 4.5);
//!    plus the interface and direction.
//! 3. A non-first fragment (offset above 0) with no record younger than
//!    `FRAGMENT_LIFETIME_NS` is dropped (`STAT_DROP_FRAGMENT_UNKNOWN`): its first
//!    fragment was denied, is still to come (out of order), or was forgotten.
//! 4. A non-first fragment that starts before the first fragment's data ends is
//!    dropped (`STAT_DROP_FRAGMENT_OVERLAP`).
//! 5. Any other non-first fragment takes the first fragment's protocol and ports
//!    (`resolve`) and goes on through `decide` as a packet with them: the same
//!    conntrack entry and rule counter as its first fragment, or, for a flow still
//!    decided packet by packet, the same policy lookup. The quote of an ICMP error
//!    is in its first fragment only, so the rest of a fragmented error (no router
//!    or Linux sends one: errors fit in 576 or 1,280 bytes) is decided as plain
//!    ICMP.
//!
//! Why a pod cannot reach a denied port with fragments: a receiver (the node when
//! it reassembles, or the destination) takes a datagram's upper-layer header only
//! from fragments at offset 0, and each of those is decided here on its own header
//! (two are each decided, and Linux discards a datagram whose fragments overlap).
//! Rules 2 and 4 keep every field read here inside the first fragment and out of
//! reach of non-first ones, also for a receiver that would let later data win an
//! overlap. A record only ever lets through more of a datagram whose header passed:
//! payload, never another header.
//!
//! Stack: what parsing learns about fragmentation (`Fragment`) lives in the
//! packet's `Facts` (a per-CPU map), not in `Flow`: seven more bytes in `Flow` cost
//! each classifier 48 bytes of its 512 (its copies and spills grow with it). The
//! lookup and the insert are BPF subprograms of their own, so their keys stay off
//! `decide`'s frame; only fragments call them, and their frames are smaller than
//! `ct::related`'s, which is never called with them, so the deepest call chain
//! does not grow.

use core::mem::{offset_of, size_of};

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::TcContext};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use policy_common::{
    frag::{FragKey, FragValue, FRAGMENT_FIRST_MIN, FRAGMENT_LIFETIME_NS},
    verdict::{
        STAT_DROP_FRAGMENT_OVERLAP, STAT_DROP_FRAGMENT_TINY, STAT_DROP_FRAGMENT_UNKNOWN,
        STAT_DROP_MALFORMED,
    },
};

use crate::{
    ct::Site,
    facts::Facts,
    maps::FRAGMENTS,
    parse::{Ipv6FragHdr, IPV4_HEAD},
};

/// `Fragment::kind`: a whole packet (rule 1).
pub(crate) const WHOLE: u8 = 0;
/// `Fragment::kind`: a first fragment (rule 2).
pub(crate) const FIRST: u8 = 1;
/// `Fragment::kind`: a non-first fragment (rules 3 to 5).
pub(crate) const NON_FIRST: u8 = 2;

/// How a packet is fragmented, as parsing found it.
#[derive(Clone, Copy)]
pub(crate) struct Fragment {
    /// `WHOLE`, `FIRST` or `NON_FIRST`.
    pub kind: u8,
    /// The identification as raw bytes (`FragKey::id`); zero when whole.
    pub id: [u8; 4],
    /// In bytes from the start of the datagram's fragmentable part: where a first
    /// fragment's data ends, where a non-first fragment's starts; 0 when whole.
    pub edge: u16,
}

impl Fragment {
    /// A packet not (yet known to be) fragmented.
    pub(crate) const WHOLE: Fragment = Fragment {
        kind: WHOLE,
        id: [0; 4],
        edge: 0,
    };
}

/// `resolve_non_first`'s answer when the fragment goes on with its datagram's
/// ports: no `STAT_*` code is this.
const RESOLVED: u32 = u32::MAX;

/// IPv4 flags and fragment offset (`Ipv4Hdr::frags`): more fragments, and the
/// offset in 8-byte units.
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
pub(crate) const IPV4_OFFSET_MASK: u16 = 0x1FFF;
/// IPv6 fragment header (`Ipv6FragHdr::frag_off`): the offset (in bytes once
/// masked) and the M flag.
const IPV6_OFFSET_MASK: u16 = 0xFFF8;
const IPV6_MORE_FRAGMENTS: u16 = 0x0001;

/// The big-endian two-byte field at `at` of `head`.
#[inline(always)]
fn be16(head: &[u8; IPV4_HEAD], at: usize) -> u16 {
    u16::from_be_bytes([head[at], head[at + 1]])
}

/// Classifies an IPv4 packet whose header up to its checksum is `head`
/// (`parse::IPV4_HEAD`) and whose header is `header_len` bytes long (rules 1 and 2).
#[inline(always)]
pub(crate) fn ipv4(
    head: &[u8; IPV4_HEAD],
    header_len: usize,
    fragment: &mut Fragment,
) -> Result<(), u32> {
    let field = be16(head, offset_of!(Ipv4Hdr, frags));
    let offset = (field & IPV4_OFFSET_MASK) * 8;
    if offset == 0 && field & IPV4_MORE_FRAGMENTS == 0 {
        return Ok(());
    }
    let id = offset_of!(Ipv4Hdr, id);
    fragment.id = [head[id], head[id + 1], 0, 0];
    if offset != 0 {
        fragment.kind = NON_FIRST;
        fragment.edge = offset;
        return Ok(());
    }
    let total = be16(head, offset_of!(Ipv4Hdr, tot_len));
    let data = total.saturating_sub(header_len as u16);
    if data < FRAGMENT_FIRST_MIN {
        return Err(STAT_DROP_FRAGMENT_TINY);
    }
    fragment.kind = FIRST;
    fragment.edge = data;
    Ok(())
}

/// Classifies the IPv6 fragment header at `at`: its next header, and true for a
/// non-first fragment (the walk ends there). A first fragment's end is set by
/// `ipv6_first` once the walk has found its upper-layer header; until then `edge`
/// holds where its fragmentable part starts. An atomic fragment changes nothing
/// (rule 1).
#[inline(always)]
pub(crate) fn ipv6_header(
    ctx: &TcContext,
    at: usize,
    fragment: &mut Fragment,
) -> Result<(u8, bool), u32> {
    let header = ctx
        .load::<Ipv6FragHdr>(at)
        .map_err(|_| STAT_DROP_MALFORMED)?;
    let bits = u16::from_be_bytes(header.frag_off);
    let offset = bits & IPV6_OFFSET_MASK;
    if offset == 0 && bits & IPV6_MORE_FRAGMENTS == 0 {
        return Ok((header.next_hdr, false));
    }
    fragment.id = header.identification;
    if offset != 0 {
        fragment.kind = NON_FIRST;
        fragment.edge = offset;
        return Ok((header.next_hdr, true));
    }
    fragment.kind = FIRST;
    fragment.edge = (at + size_of::<Ipv6FragHdr>()) as u16;
    Ok((header.next_hdr, false))
}

/// Rule 2 for an IPv6 first fragment (its IP header `L2` bytes into the packet)
/// whose upper-layer header starts at `l4`: it
/// must hold `FRAGMENT_FIRST_MIN` bytes of it within the payload length; its end
/// becomes relative to its fragmentable part. Nothing for other packets.
#[inline(always)]
pub(crate) fn ipv6_first<const L2: usize>(
    ctx: &TcContext,
    l4: usize,
    fragment: &mut Fragment,
) -> Result<(), u32> {
    if fragment.kind != FIRST {
        return Ok(());
    }
    let payload = u16::from_be(
        ctx.load::<u16>(L2 + offset_of!(Ipv6Hdr, payload_len))
            .map_err(|_| STAT_DROP_MALFORMED)?,
    );
    let end = L2 + Ipv6Hdr::LEN + usize::from(payload);
    if end < l4 + usize::from(FRAGMENT_FIRST_MIN) {
        return Err(STAT_DROP_FRAGMENT_TINY);
    }
    // Past the start (`l4` is), and the difference fits: at most 65535 bytes.
    fragment.edge = (end - usize::from(fragment.edge)) as u16;
    Ok(())
}

/// The datagram of the fragment `facts` describes, at `site`.
#[inline(always)]
fn key(site: Site, facts: &Facts) -> FragKey {
    FragKey {
        ifindex: site.ifindex,
        id: facts.fragment.id,
        saddr: facts.saddr,
        daddr: facts.daddr,
        protocol: if facts.ipv6 { 0 } else { facts.protocol },
        direction: site.direction,
        pad: [0; 2],
    }
}

/// Rules 3 to 5 for the non-first fragment `facts` describes: its datagram's
/// protocol and ports into `facts`, or the reason to drop it.
#[inline(always)]
pub(crate) fn resolve(site: Site, facts: &mut Facts) -> Result<(), u32> {
    match resolve_non_first(site, facts) {
        RESOLVED => Ok(()),
        stat => Err(stat),
    }
}

/// `resolve`, as a subprogram (module comment): `RESOLVED` or the `STAT_*` reason.
#[inline(never)]
fn resolve_non_first(site: Site, facts: &mut Facts) -> u32 {
    // SAFETY: the value is read field by field before any other map operation.
    let Some(first) = (unsafe { FRAGMENTS.get(&key(site, facts)) }) else {
        return STAT_DROP_FRAGMENT_UNKNOWN;
    };
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.saturating_sub(first.created_ns) > FRAGMENT_LIFETIME_NS {
        return STAT_DROP_FRAGMENT_UNKNOWN;
    }
    if facts.fragment.edge < first.first_end {
        return STAT_DROP_FRAGMENT_OVERLAP;
    }
    facts.protocol = first.protocol;
    facts.sport_be = first.sport_be;
    facts.dport_be = first.dport_be;
    RESOLVED
}

/// Rule 2's record: a first fragment that passed names its datagram's ports and
/// end. Other packets record nothing. A full map evicts its least recently used
/// entry.
#[inline(always)]
pub(crate) fn remember(site: Site, facts: &Facts) {
    if facts.fragment.kind == FIRST {
        remember_first(site, facts);
    }
}

/// `remember` for a first fragment, as a subprogram (module comment).
#[inline(never)]
fn remember_first(site: Site, facts: &Facts) {
    let value = FragValue {
        // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
        created_ns: unsafe { bpf_ktime_get_coarse_ns() },
        sport_be: facts.sport_be,
        dport_be: facts.dport_be,
        first_end: facts.fragment.edge,
        protocol: facts.protocol,
        pad: 0,
    };
    let _ = FRAGMENTS.insert(&key(site, facts), &value, 0);
}
