//! Per-policy traffic counters (`RULE_COUNTERS`, `DROP_COUNTERS`, layout in
//! `policy_common::counters`): packets and `skb->len` bytes per rule and per
//! (endpoint, direction) of drops and would-drops.
//!
//! What counts where:
//! 1. a packet a rule allowed, and every later packet and reply of its flow
//!    (`CtValue::counter_slot`): `RULE_COUNTERS[PolicyValue::rule_slot]`;
//!    A Service flow counts in the client's rule: its forward packets where the
//!    backend's side decides them (`service::deferred_egress`), its replies where
//!    that side verifies them (`service::verify_reply`; the client's side then
//!    counts the verified reply no more);
//! 2. a `STAT_DROP_POLICY` drop: `DROP_COUNTERS[drop_slot(endpoint, direction, false)]`,
//!    a deferred Service egress denial in the source pod's egress slot;
//! 3. a would-drop (audit) and every later packet and reply of its flow:
//!    `DROP_COUNTERS[drop_slot(endpoint, direction, true)]`;
//! 4. what a ClusterNetworkPolicy `Deny` rule decided, instead of 2 and 3: its
//!    drops, every packet of a flow it revoked (`judge::recheck`) and, in audit
//!    mode, every packet and reply of a flow it would drop
//!    (`CT_FLAG_RULE_SLOT`): `RULE_COUNTERS[PolicyValue::rule_slot]`.
//!
//! Allows without a rule (unisolated, node, the client's side of a deferred
//! Service flow) count nowhere here.

use policy_common::counters::TrafficCounter;

use crate::{facts::Counter, maps};

/// Adds one packet of `bytes` to `counter`; a slot out of range counts nothing.
#[inline(always)]
pub(crate) fn add(counter: Counter, bytes: u32) {
    let slot = match counter {
        Counter::None => return,
        Counter::Rule(slot) => maps::RULE_COUNTERS.get_ptr_mut(slot),
        Counter::Deny(slot) => maps::DROP_COUNTERS.get_ptr_mut(slot),
    };
    if let Some(slot) = slot {
        bump(slot, bytes);
    }
}

#[inline(always)]
fn bump(slot: *mut TrafficCounter, bytes: u32) {
    // SAFETY: a per-CPU slot the map lookup returned; only this CPU writes it
    // while the program runs.
    unsafe {
        (*slot).packets = (*slot).packets.wrapping_add(1);
        (*slot).bytes = (*slot).bytes.wrapping_add(u64::from(bytes));
    }
}
