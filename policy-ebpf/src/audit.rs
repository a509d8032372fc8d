//! Audit mode: an endpoint direction flagged `AUDIT_INGRESS`/`AUDIT_EGRESS` is
//! isolated only by audit-mode policies, so what they would drop passes, counted
//! (`STAT_WOULD_DROP_POLICY`, the `DROP_COUNTERS` audit slot) and reported
//! (`EVENT_WOULD_DROP`), and its flow is tracked with `CT_FLAG_AUDIT`.
//!
//! Rules for a packet of a tracked flow (`tracked`):
//! 1. an ordinary entry passes as `STAT_ALLOW_TRACKED`, counting in its rule's slot;
//! 2. a `CT_FLAG_AUDIT` entry passes as `STAT_WOULD_DROP_POLICY` (every packet of an audit
//!    flow, replies included, is a would-drop: that keeps them apart from ordinary
//!    tracked packets in `STATS`), counting in its audit deny slot, while the
//!    endpoint still has the audit flag of the flow's original direction;
//! 3. once it no longer has it (the policies now enforce, or no longer isolate), the
//!    entry is a miss: the packet is decided afresh, and an allowed one overwrites
//!    it. Audit never keeps a connection open past the switch to enforce, not even
//!    with `CONFIG_FLAG_KEEP_ESTABLISHED`, which keeps ordinary flows across policy
//!    changes. (Without that flag the switch flips banks, so the flow's next packet
//!    has re-decided it, `judge::recheck`, before it gets here.)

use policy_common::{
    ct::CT_FLAG_AUDIT,
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

/// The verdict counter and traffic counter of a packet that `hit` a tracked flow
/// at `endpoint`, travelling in `direction`; `None` when the entry passed only by
/// audit and its direction no longer audits (a miss: decide afresh).
#[inline(always)]
pub(crate) fn tracked(hit: &Hit, endpoint: &EndpointInfo, direction: u8) -> Option<(u32, Counter)> {
    if hit.flags() & CT_FLAG_AUDIT == 0 {
        return Some((STAT_ALLOW_TRACKED, Counter::rule(hit.counter_slot())));
    }
    let original = if hit.reply {
        ct::opposite(direction)
    } else {
        direction
    };
    if audits(endpoint, original) {
        Some((STAT_WOULD_DROP_POLICY, Counter::Deny(hit.counter_slot())))
    } else {
        None
    }
}
