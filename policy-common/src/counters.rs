//! Per-policy traffic counters, per CPU, summed by the agent while traffic flows.
//!
//! - `RULE_COUNTERS` (per-CPU array): packets and bytes each allow rule let through,
//!   indexed by `PolicyValue::rule_slot`. Every packet of a flow counts in the slot
//!   of the rule that allowed the flow's first packet, replies included. A
//!   ClusterNetworkPolicy `Deny` rule's slot counts what it dropped, or in audit
//!   mode the flows it would drop.
//! - `DROP_COUNTERS` (per-CPU array): packets and bytes dropped (or, in audit mode,
//!   that would have been) per (endpoint, direction), indexed by `drop_slot`. The
//!   agent maps an endpoint id to the policies isolating it in that direction.
//!
//! Bytes are `skb->len`: the frame as the classifier saw it, Ethernet header included.

use crate::endpoint::ENDPOINTS_MAX;

/// Capacity: distinct (policy, direction, rule) triples with an entry in `POLICY`.
pub const RULE_COUNTERS_MAX: u32 = 16384;
/// Capacity: every `drop_slot` of endpoint ids up to `ENDPOINTS_MAX` (ids start at 1).
pub const DROP_COUNTERS_MAX: u32 = (ENDPOINTS_MAX + 1) * 4;
/// A counter slot meaning "no counter" (no rule decided the flow).
pub const NO_COUNTER: u32 = u32::MAX;

/// Packets and bytes, one CPU's share.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (`skb->len`).
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<TrafficCounter>() == 16);

/// The `DROP_COUNTERS` slot of an endpoint's denials in `direction`
/// (`verdict::DIRECTION_*`); `audit` for would-drops of an audit-mode direction.
/// Out of range (an endpoint id above `ENDPOINTS_MAX`) the lookup fails and
/// nothing is counted.
#[inline(always)]
pub const fn drop_slot(endpoint_id: u32, direction: u8, audit: bool) -> u32 {
    endpoint_id
        .wrapping_mul(4)
        .wrapping_add((direction as u32) * 2)
        .wrapping_add(audit as u32)
}
