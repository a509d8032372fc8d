//! Audit mode: an endpoint direction flagged `AUDIT_INGRESS`/`AUDIT_EGRESS` is
//! isolated only by audit-mode policies, so what they would drop passes, counted
//! (`STAT_WOULD_DROP_POLICY`, the `DROP_COUNTERS` audit slot) and reported
//! (`EVENT_WOULD_DROP`), and its flow is tracked with `CT_FLAG_AUDIT`. A
//! `POLICY` entry's would-deny (an audit-mode ClusterNetworkPolicy `Deny` rule)
//! passes the same way, counted in the rule's `RULE_COUNTERS` slot and tracked
//! with `CT_FLAG_AUDIT | CT_FLAG_RULE_SLOT`.
//!
//! Rules for a packet of a tracked flow (`tracked`):
//! 1. an ordinary entry passes as `STAT_ALLOW_TRACKED`, counting in its rule's slot;
//! 2. a `CT_FLAG_AUDIT` entry passes as `STAT_WOULD_DROP_POLICY` (every packet of an audit
//!    flow, replies included, is a would-drop: that keeps them apart from ordinary
//!    tracked packets in `STATS`), counting in its audit deny slot (in its
//!    ClusterNetworkPolicy rule's slot with `CT_FLAG_RULE_SLOT`), while the
//!    endpoint still has the audit flag of the flow's original direction;
//! 3. once it no longer has it (the policies now enforce, or no longer isolate), the
//!    entry is a miss (`stands`; a rule's would-deny, `CT_FLAG_RULE_SLOT`, is one
//!    once `ACTIVE` moved): the packet is decided afresh, and an allowed one
//!    overwrites it. Audit never keeps a connection open past a change, not even
//!    with `CONFIG_FLAG_KEEP_ESTABLISHED`, which keeps ordinary flows across policy
//!    changes: an audit entry of another generation is never current
//!    (`Hit::current`), so the flow's next packet has re-decided it,
//!    `judge::recheck`, before it gets here.

use policy_common::{
    ct::{CT_FLAG_AUDIT, CT_FLAG_RULE_SLOT},
    endpoint::{EndpointInfo, AUDIT_EGRESS, AUDIT_INGRESS},
    verdict::{DIRECTION_INGRESS, STAT_ALLOW_TRACKED, STAT_WOULD_DROP_POLICY},
};

use crate::{
    ct::{self, Hit},
    facts::Counter,
};

/// The `AUDIT_*` endpoint flag of `direction`.
#[inline(always)]
pub(crate) fn flag(direction: u8) -> u32 {
    if direction == DIRECTION_INGRESS {
        AUDIT_INGRESS
    } else {
        AUDIT_EGRESS
    }
}

/// Whether `endpoint`'s isolation in `direction` is audit only.
#[inline(always)]
pub(crate) fn audits(endpoint: &EndpointInfo, direction: u8) -> bool {
    endpoint.flags & flag(direction) != 0
}

/// Whether an audit entry (`CT_FLAG_AUDIT`) with `flags`, decided with `stamp`,
/// still lets its flow pass at an endpoint with `endpoint_flags`, for a flow opened
/// in `original`: a ClusterNetworkPolicy rule's would-deny (`CT_FLAG_RULE_SLOT`)
/// only with the state that decided it (the endpoint's audit flags speak of its
/// NetworkPolicies alone), any other while that direction audits.
#[inline(always)]
pub(crate) fn stands(
    flags: u32,
    stamp: u32,
    generation: u32,
    endpoint_flags: u32,
    original: u8,
) -> bool {
    if flags & CT_FLAG_RULE_SLOT != 0 {
        stamp == generation
    } else {
        endpoint_flags & flag(original) != 0
    }
}

/// The verdict counter and traffic counter of a packet that `hit` a tracked flow
/// at `endpoint`, travelling in `direction` with `generation`; `None` when the
/// entry passed only by audit and no longer stands (`stands`: a miss, decide
/// afresh).
#[inline(always)]
pub(crate) fn tracked(
    hit: &Hit,
    endpoint: &EndpointInfo,
    direction: u8,
    generation: u32,
) -> Option<(u32, Counter)> {
    let (stamp, flags) = hit.verdict();
    if flags & CT_FLAG_AUDIT == 0 {
        return Some((STAT_ALLOW_TRACKED, Counter::rule(hit.counter_slot())));
    }
    let original = if hit.reply {
        ct::opposite(direction)
    } else {
        direction
    };
    if !stands(flags, stamp, generation, endpoint.flags, original) {
        return None;
    }
    let counter = if flags & CT_FLAG_RULE_SLOT != 0 {
        Counter::Rule(hit.counter_slot())
    } else {
        Counter::Deny(hit.counter_slot())
    };
    Some((STAT_WOULD_DROP_POLICY, counter))
}
