//! ARP at a pod hook: the one kind of frame that passes without being parsed into a
//! `Flow`, because pods (and the node) resolve each other's addresses with it. It
//! passes only as Ethernet/IPv4 ARP whose sender cannot poison a neighbour table:
//!
//! 1. The header must be Ethernet/IPv4 (hardware type 1, protocol 0x0800, address
//!    lengths 6 and 4) and the operation a request (1) or reply (2), else
//!    `STAT_DROP_ARP_UNSUPPORTED`; a frame too short for it is `STAT_DROP_MALFORMED`.
//! 2. The sender hardware address must be the frame's Ethernet source, else
//!    `STAT_DROP_ARP_SPOOFED`: what a neighbour table learns is the MAC that sent it.
//! 3. From the pod (egress): the sender protocol address must be one of the pod's
//!    IPv4 addresses (`ENDPOINT_ADDRS[addr] == ifindex`), as Calico and Cilium
//!    require, else `STAT_DROP_ARP_SPOOFED`. Gratuitous ARP for its own address
//!    passes; 0.0.0.0 passes only in a request (an RFC 5227 probe, which no
//!    neighbour table learns from).
//! 4. Towards the pod (ingress) any sender passes: it is the node (which may answer
//!    for addresses it proxies, such as a `169.254.1.1` gateway) or another pod,
//!    whose own egress hook checked it.
//!
//! Sender and target protocol addresses land in `Facts` (as `::ffff:a.b.c.d`) so a
//! drop is reported with them. `check` is a BPF subprogram: ARP is rare, and its
//! stack then adds to the classifier's only on this path.

use core::mem::offset_of;

use aya_ebpf::programs::TcContext;
use network_types::{arp::ArpHdr, eth::EthHdr};
use policy_common::verdict::{
    DIRECTION_EGRESS, STAT_ALLOW_NON_IP, STAT_DROP_ARP_SPOOFED, STAT_DROP_ARP_UNSUPPORTED,
    STAT_DROP_MALFORMED,
};

use crate::{
    ct::Site,
    facts::Facts,
    maps,
    parse::{self, ETH_HLEN},
};

/// The fixed part of an Ethernet/IPv4 ARP header (RFC 826): hardware type 1
/// (Ethernet) and protocol type 0x0800 (IPv4), then address lengths 6 and 4.
const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;
const HW_LEN: u8 = 6;
const IP_LEN: u8 = 4;
/// Operations: request and reply.
const ARPOP_REQUEST: u16 = 1;
const ARPOP_REPLY: u16 = 2;
/// The ARP header through the sender hardware address (types, lengths, operation,
/// `sha`): what one read takes.
const ARP_HEAD: usize = offset_of!(ArpHdr, spa);
/// Offsets in the frame: the Ethernet source address, and the ARP header's sender
/// and target protocol addresses.
const ETH_SOURCE: usize = offset_of!(EthHdr, src_addr);
const SENDER_IP: usize = ETH_HLEN + offset_of!(ArpHdr, spa);
const TARGET_IP: usize = ETH_HLEN + offset_of!(ArpHdr, tpa);

/// The big-endian two-byte field at `at` of `head`.
#[inline(always)]
fn be16(head: &[u8; ARP_HEAD], at: usize) -> u16 {
    u16::from_be_bytes([head[at], head[at + 1]])
}

/// The verdict on an ARP frame at `site` (its counter: `STAT_ALLOW_NON_IP` or a
/// drop reason), by the rules of the module comment. `facts` gets the sender and
/// target protocol addresses.
#[inline(never)]
pub(crate) fn check(ctx: &TcContext, facts: &mut Facts, site: Site) -> u32 {
    match verdict(ctx, facts, site) {
        Ok(()) => STAT_ALLOW_NON_IP,
        Err(stat) => stat,
    }
}

#[inline(always)]
fn verdict(ctx: &TcContext, facts: &mut Facts, site: Site) -> Result<(), u32> {
    // Fixed header, operation and sender hardware address in one read.
    let head = ctx
        .load::<[u8; ARP_HEAD]>(ETH_HLEN)
        .map_err(|_| STAT_DROP_MALFORMED)?;
    let operation = be16(&head, offset_of!(ArpHdr, oper));
    if be16(&head, offset_of!(ArpHdr, htype)) != HTYPE_ETHERNET
        || be16(&head, offset_of!(ArpHdr, ptype)) != PTYPE_IPV4
        || head[offset_of!(ArpHdr, hlen)] != HW_LEN
        || head[offset_of!(ArpHdr, plen)] != IP_LEN
        || (operation != ARPOP_REQUEST && operation != ARPOP_REPLY)
    {
        return Err(STAT_DROP_ARP_UNSUPPORTED);
    }
    let source = ctx
        .load::<[u8; 6]>(ETH_SOURCE)
        .map_err(|_| STAT_DROP_MALFORMED)?;
    parse::load_mapped(ctx, SENDER_IP, &mut facts.saddr)?;
    parse::load_mapped(ctx, TARGET_IP, &mut facts.daddr)?;
    // Compared as words: a slice comparison would be a `bcmp` call.
    let sha = offset_of!(ArpHdr, sha);
    let sender_hw = (
        u32::from_ne_bytes([head[sha], head[sha + 1], head[sha + 2], head[sha + 3]]),
        u16::from_ne_bytes([head[sha + 4], head[sha + 5]]),
    );
    let source = (
        u32::from_ne_bytes([source[0], source[1], source[2], source[3]]),
        u16::from_ne_bytes([source[4], source[5]]),
    );
    if sender_hw != source {
        return Err(STAT_DROP_ARP_SPOOFED);
    }
    if site.direction != DIRECTION_EGRESS {
        return Ok(());
    }
    let sender = &facts.saddr;
    let unspecified = u32::from_ne_bytes([sender[12], sender[13], sender[14], sender[15]]) == 0;
    if unspecified && operation == ARPOP_REQUEST {
        return Ok(());
    }
    if maps::endpoint_ifindex(u32::from(site.bank), sender) == Some(site.ifindex) {
        Ok(())
    } else {
        Err(STAT_DROP_ARP_SPOOFED)
    }
}
