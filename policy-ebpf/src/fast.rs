//! The conntrack fast path: a packet of a tracked flow whose entry alone decides
//! it, passed before `decide` runs, with direct packet access, one or two
//! `CONNTRACK` lookups and the counters. Anything else goes the long way
//! (`decide`), which decides it exactly as it would have without this path: the
//! fast path changes nothing (no map, mark or counter) unless it passes the packet.
//!
//! It takes only what it can prove `decide` would pass as `STAT_ALLOW_TRACKED`,
//! with the same side effects (the entry refreshed and moved as `Hit::seen` does,
//! the rule counter, the mark):
//! 1. an untagged Ethernet frame (no `vlan_present`, checked by `classify`) with
//!    EtherType IPv4 or IPv6, whose headers are in the skb's linear data: IPv4
//!    with a 20-byte header (version 4, IHL 5), neither fragment field set (more
//!    fragments, offset); IPv6 with TCP or UDP as its next header (no extension
//!    headers) and neither address IPv4-mapped (`::ffff:0:0/96`, which `parse`
//!    drops: it would name an IPv4 flow's key);
//! 2. TCP (with its header up to the flags) or UDP (up to its ports); not a TCP
//!    SYN without ACK, which opens a connection and is always decided afresh;
//! 3. at egress, not UDP to a tunnel port (`tunnel.rs`: the long way drops it
//!    unless the endpoint allows tunnels);
//! 4. a live entry, forward key first, then the reply's, as `ct::lookup` finds it
//!    (a forward entry of a non-TCP flow still OPENING is decided afresh there, and
//!    here goes the long way);
//! 5. the entry is of this packet's generation (not another state's: that one
//!    re-decides it), neither revoked, deferred nor audit-only, a forward egress
//!    entry only with `CT_FLAG_DIRECT` (one the destination's side wrote goes on
//!    as a deferral, the long way), a reply at egress only with
//!    `CT_FLAG_REMOTE_PLAIN` (a reply to a Service address may be deferred), and
//!    carries `CT_FLAG_LOCAL_OWNED`: when this generation last decided the flow,
//!    the interface was a known endpoint (`ENDPOINTS`) and the flow's local
//!    address its own (claimed in its `ENDPOINTS` value, or in `ENDPOINT_ADDRS`).
//!    That still holds, so the packet passes the
//!    endpoint, anti-spoofing (egress) and misdelivery (ingress) checks as that
//!    decision did, by the invariant below;
//! 6. at ingress, a mark without the deferred-egress or reply-verified bit and
//!    without the stamp of another generation (those packets decide their source's
//!    egress or count elsewhere, `service.rs`); podwall's bits are then cleared as
//!    `service::take_marks` clears them;
//! 7. at egress, a reply whose destination is no local pod, or a local pod whose
//!    egress entry of the reversed tuple is absent or carries `CT_FLAG_DIRECT`
//!    (any other may be a deferred flow's translated tuple, whose reply
//!    `service::verify_reply` marks); the packet leaves with its generation's
//!    stamp (`service::stamp`).
//!
//! The invariant this path needs of the agent: **no `ENDPOINTS` or
//! `ENDPOINT_ADDRS` entry of the active bank is removed or changed unless
//! `ACTIVE`'s generation is bumped afterwards.** A flip writes only the other bank;
//! a write into the active bank itself (`Banks::update_peers` writes `PEERS_*`
//! and `PEER_HOSTS_*` in place, `Banks::update_endpoint` one local pod's
//! `ENDPOINTS`, `ENDPOINT_ADDRS` and peer entries, and each then bumps the
//! generation by two, `Banks::renew`, owed until it succeeds and made again at
//! adoption) must bump it after its last write,
//! so every entry stamped before is re-decided the long way. Adding a new key in
//! place (a new interface's pending `ENDPOINTS` entry) needs no bump: it changes
//! no answer an entry's flag recorded (that interface or address had none), and
//! rule 7 reads `ENDPOINT_ADDRS` afresh. Between such a write and its bump, and
//! for packets that read `ACTIVE` before the bump, the old generation's entries
//! still vouch, as a flip lets packets in flight finish with the old bank.
//!
//! Not a BPF subprogram: `tracked` is `inline(always)`, inlined into `classify`, so
//! its key and locals take slots in the classifier's own frame next to what the
//! long way fills (`maps.rs` on the stack budget); the verifier checks the sum
//! when the program loads.

use core::{
    arch::asm,
    mem::{offset_of, MaybeUninit},
    ptr::addr_of_mut,
};

use aya_ebpf::programs::TcContext;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
};
use policy_common::{
    ct::{
        CtKey, CT_FLAG_AUDIT, CT_FLAG_DEFERRED, CT_FLAG_DIRECT, CT_FLAG_LOCAL_OWNED,
        CT_FLAG_REMOTE_PLAIN, CT_FLAG_REVOKED, CT_FLAG_RULE_SLOT, CT_STATE_OPENING,
    },
    verdict::{DIRECTION_EGRESS, DIRECTION_INGRESS, STAT_ALLOW_TRACKED},
};

use crate::{
    clock, counters, ct,
    facts::Counter,
    maps,
    parse::{
        ETH_HLEN, IPPROTO_TCP, IPV4_FRAGMENTED, IPV4_MAPPED, IPV4_PLAIN, TCP_FLAG_ACK, TCP_FLAG_SYN,
    },
    service,
};

const ETH_P_IP: u16 = EtherType::Ipv4 as u16;
const ETH_P_IPV6: u16 = EtherType::Ipv6 as u16;
const IPPROTO_UDP: u8 = IpProto::Udp as u8;
/// The TCP header up to and with its flags byte; UDP needs its ports only.
const TCP_NEEDED: usize = offset_of!(TcpHdr, _bitfield_1) + 2;
const UDP_NEEDED: usize = 4;
/// The entry flags that make a hit go the long way.
const SLOW_FLAGS: u32 = CT_FLAG_AUDIT | CT_FLAG_DEFERRED | CT_FLAG_REVOKED | CT_FLAG_RULE_SLOT;

/// The packet's tuple, as the key of its flow's forward entry at `ifindex` in
/// `direction`, and its TCP flags; `None` when it is not a packet the fast path
/// takes (rules 1 and 2). Every field of `*key` is written when it returns `Some`.
///
/// `key` is a raw pointer to possibly uninitialised memory: it is written field
/// by field through `addr_of_mut!` and never read or referenced here, so no
/// reference to an uninitialised `CtKey` is ever made.
///
/// # Safety
/// `key` must be valid for writes of a `CtKey` and aligned for it.
#[inline(always)]
unsafe fn parse(ctx: &TcContext, ifindex: u32, direction: u8, key: *mut CtKey) -> Option<u8> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + ETH_HLEN + Ipv4Hdr::LEN > end {
        return None;
    }
    // SAFETY: every read below is of bytes the check before it proved to lie
    // within [data, data_end), which the verifier checks again; network-types'
    // headers are byte arrays, read at any alignment, and `word` reads with one
    // BPF load, which packet data allows at any alignment. Every write is to a
    // field of `*key` (the caller's promise).
    let ether_type = unsafe { (*(data as *const EthHdr)).ether_type };
    let ip = data + ETH_HLEN;
    let (l4, protocol) = if ether_type == ETH_P_IP {
        let head = unsafe { &*(ip as *const Ipv4Hdr) };
        if head.vihl != IPV4_PLAIN || head.frags[0] & IPV4_FRAGMENTED != 0 || head.frags[1] != 0 {
            return None;
        }
        let (saddr, daddr) = unsafe {
            (
                word(ip + offset_of!(Ipv4Hdr, src_addr)),
                word(ip + offset_of!(Ipv4Hdr, dst_addr)),
            )
        };
        unsafe {
            addr_of_mut!((*key).protocol).write(head.proto);
            set_address(addr_of_mut!((*key).saddr), [0, 0, IPV4_MAPPED, saddr]);
            set_address(addr_of_mut!((*key).daddr), [0, 0, IPV4_MAPPED, daddr]);
        }
        (ip + Ipv4Hdr::LEN, head.proto)
    } else if ether_type == ETH_P_IPV6 {
        if ip + Ipv6Hdr::LEN > end {
            return None;
        }
        let head = unsafe { &*(ip as *const Ipv6Hdr) };
        if head.vcf[0] >> 4 != 6 {
            return None;
        }
        let (saddr, daddr) = unsafe {
            (
                words(ip + offset_of!(Ipv6Hdr, src_addr)),
                words(ip + offset_of!(Ipv6Hdr, dst_addr)),
            )
        };
        if ipv4_mapped(&saddr) || ipv4_mapped(&daddr) {
            return None;
        }
        unsafe {
            addr_of_mut!((*key).protocol).write(head.next_hdr);
            set_address(addr_of_mut!((*key).saddr), saddr);
            set_address(addr_of_mut!((*key).daddr), daddr);
        }
        (ip + Ipv6Hdr::LEN, head.next_hdr)
    } else {
        return None;
    };
    let needed = if protocol == IPPROTO_TCP {
        TCP_NEEDED
    } else if protocol == IPPROTO_UDP {
        UDP_NEEDED
    } else {
        return None;
    };
    if l4 + needed > end {
        return None;
    }
    // SAFETY: as above. Both ports are the first 4 bytes of TCP's and UDP's
    // headers, which `needed` covers for either, read as one word: no header
    // type (TCP's is 20 bytes) is laid over bytes that were not checked.
    let ports = unsafe { word(l4) }.to_ne_bytes();
    unsafe {
        addr_of_mut!((*key).ifindex).write(ifindex);
        addr_of_mut!((*key).sport_be).write(u16::from_ne_bytes([ports[0], ports[1]]));
        addr_of_mut!((*key).dport_be).write(u16::from_ne_bytes([ports[2], ports[3]]));
        addr_of_mut!((*key).direction).write(direction);
        addr_of_mut!((*key).pad).write([0; 2]);
    }
    if protocol != IPPROTO_TCP {
        return Some(0);
    }
    // SAFETY: as above: TCP's flags byte, the last of `TCP_NEEDED`, checked.
    let flags = unsafe { *((l4 + TCP_NEEDED - 1) as *const u8) };
    if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN {
        return None;
    }
    Some(flags)
}

/// Whether an IPv6 address (as four words in memory order) is IPv4-mapped.
#[inline(always)]
pub(crate) fn ipv4_mapped(words: &[u32; 4]) -> bool {
    words[0] == 0 && words[1] == 0 && words[2] == IPV4_MAPPED
}

// What `set_address` relies on: both address fields of a key start at a 4-byte
// boundary of a 4-byte aligned key.
const _: () = assert!(
    offset_of!(CtKey, saddr) % 4 == 0
        && offset_of!(CtKey, daddr) % 4 == 0
        && core::mem::align_of::<CtKey>() == 4
);

/// Writes an address given as four words into a key's address field, one word
/// at a time (a byte array written whole becomes a byte-by-byte `memset` or
/// `memcpy` loop in BPF).
///
/// # Safety
/// `field` must be an address field of a `CtKey` valid for writes (it may be
/// uninitialised).
#[inline(always)]
unsafe fn set_address(field: *mut [u8; 16], words: [u32; 4]) {
    let at = field as *mut u32;
    // SAFETY: the field is 16 bytes, 4-byte aligned (asserted above).
    unsafe {
        at.write(words[0]);
        at.add(1).write(words[1]);
        at.add(2).write(words[2]);
        at.add(3).write(words[3]);
    }
}

/// The 4-byte word of packet data at `at`, in memory order.
///
/// # Safety
/// `at..at + 4` must lie within packet data the caller checked against
/// `data_end` (the verifier rejects the program otherwise).
#[inline(always)]
pub(crate) unsafe fn word(at: usize) -> u32 {
    let value: u64;
    // One BPF load: packet data may be read at any alignment, which Rust's
    // `read_unaligned` would split into four byte loads.
    asm!(
        "{value} = *(u32 *)({at} + 0)",
        value = out(reg) value,
        at = in(reg) at,
        options(readonly, nostack, preserves_flags),
    );
    value as u32
}

/// The 16 bytes of packet data at `at` as four words (`word`).
///
/// # Safety
/// As `word`, for `at..at + 16`.
#[inline(always)]
pub(crate) unsafe fn words(at: usize) -> [u32; 4] {
    [word(at), word(at + 4), word(at + 8), word(at + 12)]
}

/// Passes the packet at `ifindex` going `direction`, decided with `generation`,
/// when its conntrack entry alone decides it (the module comment's rules): counts
/// it, refreshes the entry, sets the mark, and returns true. False when the
/// packet must go the long way; nothing was changed then.
#[inline(always)]
pub(crate) fn tracked(ctx: &TcContext, ifindex: u32, direction: u8, generation: u32) -> bool {
    let mut key = MaybeUninit::<CtKey>::uninit();
    // SAFETY: the pointer is to this frame's `CtKey`-sized, aligned slot; `parse`
    // writes every field when it returns `Some` (no reference to the slot is made
    // before), and the key is read only then.
    let Some(tcp_flags) = (unsafe { parse(ctx, ifindex, direction, key.as_mut_ptr()) }) else {
        return false;
    };
    let mut key = unsafe { key.assume_init() };
    let protocol = key.protocol;
    // Every setting this path reads, with one lookup.
    let config = maps::config_ref();
    // As `tunnel::encapsulates`: port 0 is no tunnel port (it fills the unused
    // slots of `tunnel_ports_be`).
    if direction == DIRECTION_EGRESS
        && protocol == IPPROTO_UDP
        && key.dport_be != 0
        && config.tunnel_ports_be.contains(&key.dport_be)
    {
        return false;
    }
    let now = clock::now();
    let (entry, reply) = match ct::live_in(config, &key, now) {
        Some(entry) => {
            // SAFETY: as in `ct::live_in`.
            let (state, flags) = unsafe { ((*entry).state, (*entry).flags) };
            if protocol != IPPROTO_TCP && state == CT_STATE_OPENING && flags & CT_FLAG_DEFERRED == 0
            {
                return false;
            }
            (entry, false)
        }
        None => {
            core::mem::swap(&mut key.saddr, &mut key.daddr);
            (key.sport_be, key.dport_be) = (key.dport_be, key.sport_be);
            key.direction = ct::opposite(direction);
            match ct::live_in(config, &key, now) {
                Some(entry) => (entry, true),
                None => return false,
            }
        }
    };
    // Generation first, then flags (`ct::verdict` says why).
    let (stamp, flags) = ct::verdict(entry);
    // SAFETY: as in `ct::live_in`.
    let slot = unsafe { (*entry).counter_slot };
    if flags & (SLOW_FLAGS | CT_FLAG_LOCAL_OWNED) != CT_FLAG_LOCAL_OWNED || stamp != generation {
        return false;
    }
    // A forward egress entry the pod's own hook did not decide goes on as a
    // deferral (`decide_flow`), and so may a reply at egress whose entry does not
    // vouch for its destination (`CT_FLAG_REMOTE_PLAIN`): the long way.
    if direction == DIRECTION_EGRESS {
        let vouched = if reply {
            CT_FLAG_REMOTE_PLAIN
        } else {
            CT_FLAG_DIRECT
        };
        if flags & vouched == 0 {
            return false;
        }
    }
    let clear = if direction == DIRECTION_INGRESS {
        match service::plain_marks(ctx, config, generation) {
            Some(clear) => clear,
            None => return false,
        }
    } else {
        // The reply's destination, the key's source once reversed: a local pod's
        // egress entry of this tuple (the key at its interface, for egress) is
        // what `service::verify_reply` would mark the reply for.
        if reply {
            if let Some(client_if) = maps::endpoint_ifindex(maps::bank(generation), &key.saddr) {
                key.ifindex = client_if;
                key.direction = DIRECTION_EGRESS;
                if let Some(client) = maps::CONNTRACK.get_ptr(&key) {
                    // SAFETY: as in `ct::live_in`.
                    if unsafe { (*client).flags } & CT_FLAG_DIRECT == 0 {
                        return false;
                    }
                }
            }
        }
        0
    };
    // Decided: from here on the packet passes.
    ct::refresh(entry, now, protocol, tcp_flags, reply);
    maps::count(STAT_ALLOW_TRACKED);
    counters::add(Counter::rule(slot), ctx.len());
    if direction == DIRECTION_INGRESS {
        service::clear_marks(ctx, clear);
    } else {
        service::stamp_with(ctx, config, generation);
    }
    true
}
