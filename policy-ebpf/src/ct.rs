//! Connection tracking: flows a pod's policy allowed, so their replies pass.
//!
//! A flow is keyed by the pod interface, the direction of its first packet and its
//! 5-tuple as that packet carried it (16-byte addresses for both families). A later
//! packet is part of the flow when it matches that key as is (same direction), or
//! reversed with the opposite direction (the reply).
//!
//! State transitions:
//! 1. no entry -> entry: the first packet was allowed (unisolated, node, policy) or,
//!    for egress to a Service, deferred (`CT_FLAG_DEFERRED`); written by `track`.
//! 2. a deferred egress entry is also written for the post-DNAT tuple, by the
//!    destination's classifier at the source's interface, once the source's egress
//!    policy allowed the backend (`service::deferred_egress`).
//! 3. a TCP SYN without ACK ignores existing entries and, when allowed, overwrites
//!    its own: a reused source port never inherits an older connection's verdict;
//! 4. entries are otherwise never updated by packets; the LRU evicts the least
//!    recently used.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use policy_common::{
    ct::{CtKey, CtValue, CT_STATE_OPENING},
    verdict::{DIRECTION_EGRESS, DIRECTION_INGRESS},
};

use crate::{maps::CONNTRACK, parse::Flow};

/// A conntrack entry a packet belongs to.
pub(crate) struct Hit {
    /// The packet is a reply (the entry was made for the opposite direction).
    pub reply: bool,
    /// `CtValue::flags` of the entry.
    pub flags: u32,
    /// `CtValue::counter_slot` of the entry.
    pub counter_slot: u32,
}

/// The key of `flow` at `ifindex`, or of its reverse (`reversed`: the reply seen
/// from the other end, addresses and ports swapped).
#[inline(always)]
fn key(ifindex: u32, direction: u8, flow: &Flow, reversed: bool) -> CtKey {
    let (saddr, daddr, sport_be, dport_be) = if reversed {
        (flow.daddr, flow.saddr, flow.dport_be, flow.sport_be)
    } else {
        (flow.saddr, flow.daddr, flow.sport_be, flow.dport_be)
    };
    CtKey {
        ifindex,
        saddr,
        daddr,
        sport_be,
        dport_be,
        protocol: flow.protocol,
        direction,
        pad: [0; 2],
    }
}

/// The other direction.
#[inline(always)]
pub(crate) fn opposite(direction: u8) -> u8 {
    if direction == DIRECTION_INGRESS {
        DIRECTION_EGRESS
    } else {
        DIRECTION_INGRESS
    }
}

/// The entry the packet belongs to at this interface: the forward entry first, then
/// the one whose reply it is. A packet that opens a TCP connection belongs to none:
/// it is decided afresh and, if allowed, replaces the old entry.
#[inline(always)]
pub(crate) fn lookup(ifindex: u32, direction: u8, flow: &Flow) -> Option<Hit> {
    if flow.opens {
        return None;
    }
    let forward = key(ifindex, direction, flow, false);
    // SAFETY: the fields are copied out before any other map operation.
    if let Some(value) = unsafe { CONNTRACK.get(&forward) } {
        return Some(Hit {
            reply: false,
            flags: value.flags,
            counter_slot: value.counter_slot,
        });
    }
    let reply = key(ifindex, opposite(direction), flow, true);
    // SAFETY: as above.
    unsafe { CONNTRACK.get(&reply) }.map(|value| Hit {
        reply: true,
        flags: value.flags,
        counter_slot: value.counter_slot,
    })
}

/// The entry of exactly this key: `flow` (or, with `reversed`, its reverse, and the
/// hit is then a reply) as the first packet in `direction` at `ifindex`. Replies do
/// not match, nor does a packet that opens a TCP connection (decided afresh, as in
/// `lookup`).
#[inline(always)]
pub(crate) fn find(ifindex: u32, direction: u8, flow: &Flow, reversed: bool) -> Option<Hit> {
    if flow.opens {
        return None;
    }
    // SAFETY: the fields are copied out before any other map operation.
    unsafe { CONNTRACK.get(&key(ifindex, direction, flow, reversed)) }.map(|value| Hit {
        reply: reversed,
        flags: value.flags,
        counter_slot: value.counter_slot,
    })
}

/// Records an allowed (or deferred) first packet. A full table evicts its least
/// recently used entry, so tracking never fails open or closed for the packet being
/// decided. `counter_slot` is `NO_COUNTER` when no policy rule decided.
#[inline(always)]
pub(crate) fn track(ifindex: u32, direction: u8, flow: &Flow, counter_slot: u32, flags: u32) {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let value = CtValue {
        created_ns: now,
        last_seen_ns: now,
        counter_slot,
        flags,
        state: CT_STATE_OPENING,
        pad: [0; 7],
    };
    let _ = CONNTRACK.insert(&key(ifindex, direction, flow, false), &value, 0);
}
