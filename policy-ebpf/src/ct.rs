//! Connection tracking: flows a pod's policy allowed, so their replies pass.
//!
//! A flow is keyed by the pod interface, the direction of its first packet and its
//! 5-tuple as that packet carried it. A later packet is part of the flow when it
//! matches that key as is (same direction), or reversed with the opposite direction
//! (the reply).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use policy_common::{
    ct::{CtKey, CtValue},
    verdict::{DIRECTION_EGRESS, DIRECTION_INGRESS},
};

use crate::{maps::CONNTRACK, parse::Flow};

/// An IPv4 address (network order u32) as IPv4-mapped IPv6 bytes.
#[inline(always)]
fn mapped(addr_be: u32) -> [u8; 16] {
    let b = addr_be.to_ne_bytes();
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3],
    ]
}

#[inline(always)]
fn key(ifindex: u32, direction: u8, flow: &Flow) -> CtKey {
    CtKey {
        ifindex,
        saddr: mapped(flow.saddr_be),
        daddr: mapped(flow.daddr_be),
        sport_be: flow.sport_be,
        dport_be: flow.dport_be,
        protocol: flow.protocol,
        direction,
        pad: [0; 2],
    }
}

/// True when the packet belongs to a flow already allowed at this interface.
#[inline(always)]
pub(crate) fn is_tracked(ifindex: u32, direction: u8, flow: &Flow) -> bool {
    let forward = key(ifindex, direction, flow);
    let opposite = if direction == DIRECTION_INGRESS {
        DIRECTION_EGRESS
    } else {
        DIRECTION_INGRESS
    };
    let reply = key(ifindex, opposite, &flow.reversed());
    // SAFETY: only presence is read; no reference outlives the call.
    unsafe { CONNTRACK.get(&forward).is_some() || CONNTRACK.get(&reply).is_some() }
}

/// Records an allowed first packet. A full table evicts its least recently used
/// entry, so tracking never fails open or closed for the packet being decided.
#[inline(always)]
pub(crate) fn track(ifindex: u32, direction: u8, flow: &Flow, policy_id: u32) {
    let value = CtValue {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        created_ns: unsafe { bpf_ktime_get_ns() },
        policy_id,
        flags: 0,
    };
    let _ = CONNTRACK.insert(&key(ifindex, direction, flow), &value, 0);
}
