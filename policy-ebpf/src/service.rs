//! Service egress deferral: egress to a ClusterIP is decided after DNAT.
//!
//! The egress classifier runs at TC ingress of the client's veth, before the node's
//! DNAT, so it cannot see which backend a ClusterIP flow goes to. It records a
//! `CT_FLAG_DEFERRED` entry, sets `MARK_DEFERRED_EGRESS` and lets the packet on. The
//! classifier at the backend's veth (TC egress, after DNAT) decides the client's
//! egress on the real backend before the backend's own ingress. Replies are verified
//! at the backend's veth (`MARK_REPLY_VERIFIED`) and required at the client's, so a
//! reply to a deferred flow passes only if the client's egress allowed the backend.
//! Marks never cross a network namespace (veth scrubs them), so pods cannot forge them.

use aya_ebpf::programs::TcContext;
use policy_common::{
    counters::{deny_slot, NO_COUNTER},
    ct::{CT_FLAG_AUDIT, CT_FLAG_DEFERRED},
    endpoint::ISOLATED_EGRESS,
    events::{EVENT_ALLOW, EVENT_WOULD_DROP},
    verdict::{
        DIRECTION_EGRESS, DIRECTION_INGRESS, MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED,
        STAT_ALLOW_AUDIT, STAT_ALLOW_POLICY, STAT_ALLOW_UNISOLATED, STAT_DROP_DEFERRED_EGRESS,
        STAT_DROP_DEFERRED_UNKNOWN_SOURCE, STAT_EGRESS_DEFERRED,
    },
};

use crate::{
    audit, counters, ct, events,
    facts::{Counter, Facts},
    maps,
    parse::Flow,
};

/// Every mark bit this program owns.
const OUR_MARKS: u32 = MARK_DEFERRED_EGRESS | MARK_REPLY_VERIFIED;

#[inline(always)]
fn mark(ctx: &TcContext) -> u32 {
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel handed this program.
    unsafe { (*ctx.skb.skb).mark }
}

/// Reads the packet's mark and clears this program's bits from it; returns the mark
/// as it arrived. Runs at the destination pod's veth, where those bits end their trip.
#[inline(always)]
pub(crate) fn take_marks(ctx: &TcContext) -> u32 {
    let arrived = mark(ctx);
    if arrived & OUR_MARKS != 0 {
        ctx.set_mark(arrived & !OUR_MARKS);
    }
    arrived
}

/// Defers the egress verdict of a packet to a Service: marks it and, for a first
/// packet (`first`), records the flow as deferred at the client's interface.
#[inline(always)]
pub(crate) fn defer(ctx: &TcContext, ifindex: u32, flow: &Flow, first: bool) -> u32 {
    ctx.set_mark(mark(ctx) | MARK_DEFERRED_EGRESS);
    if first {
        ct::track(
            ifindex,
            DIRECTION_EGRESS,
            flow,
            NO_COUNTER,
            CT_FLAG_DEFERRED,
        );
    }
    STAT_EGRESS_DEFERRED
}

/// Decides the source pod's deferred egress for a marked packet at the destination,
/// on the translated (backend) address and port, with the packet's `bank`:
/// 1. the source must be a local pod (`ENDPOINT_ADDRS`), else
///    `STAT_DROP_DEFERRED_UNKNOWN_SOURCE` (e.g. the node masqueraded it);
/// 2. a flow already tracked for egress at the source's interface passes, refreshes
///    it and is counted in its rule's (or audit) slot, unless it passed only by an
///    audit that ended (`audit::tracked`: then it is decided afresh); so does an
///    ICMP error related to such a flow (`ct::related`: e.g. the client's "port
///    unreachable" for a late answer of the backend, which the client's egress
///    allowed);
/// 3. a source no longer isolated for egress passes and is tracked;
/// 4. else the source's `POLICY` entries for the backend's class and port decide:
///    a match is tracked at the source's interface and counted in the rule's slot;
///    no match with the source's egress in audit mode is a would-drop (tracked
///    `CT_FLAG_AUDIT`, counted in its audit slot); else `STAT_DROP_DEFERRED_EGRESS`,
///    counted in the source's egress deny slot.
///
/// The decision is the source pod's egress: its allow (with
/// `CONFIG_FLAG_ALLOW_EVENTS`) or would-drop is reported here with the source's
/// interface, endpoint and the egress direction, on top of the packet's own verdict
/// at the destination; a drop ends the packet, so `facts` is re-pointed at the source
/// and the drop is reported as the packet's verdict. Replies count in the source's
/// slot too, when the backend side verifies them (`verify_reply`).
///
/// Trusting `ENDPOINT_ADDRS[saddr]` is sound because the source's own egress
/// classifier dropped any packet whose source is not one of its addresses.
#[inline(always)]
pub(crate) fn deferred_egress(
    ctx: &TcContext,
    facts: &mut Facts,
    bank: u32,
    flow: &Flow,
) -> Result<(), u32> {
    let source_if =
        maps::endpoint_ifindex(bank, &flow.saddr).ok_or(STAT_DROP_DEFERRED_UNKNOWN_SOURCE)?;
    let source = maps::endpoint(bank, source_if).ok_or(STAT_DROP_DEFERRED_UNKNOWN_SOURCE)?;
    let len = ctx.len();
    if let Some(hit) = ct::find(source_if, DIRECTION_EGRESS, flow, false) {
        if let Some((_, counter)) = audit::tracked(&hit, &source, DIRECTION_EGRESS) {
            hit.seen(flow);
            counters::add(counter, len);
            return Ok(());
        }
    }
    let site = ct::Site {
        ifindex: source_if,
        direction: DIRECTION_EGRESS,
        bank: bank as u8,
    };
    if flow.quote_at != 0 && ct::related(ctx, site, flow, source.flags) {
        return Ok(());
    }
    // `facts` speaks for the source while its egress is decided (no copy: the
    // stack is tight), and for the packet at the destination again on a pass.
    let packet = (
        facts.ifindex,
        facts.endpoint_id,
        facts.direction,
        facts.decided,
    );
    facts.ifindex = source_if;
    facts.endpoint_id = source.endpoint_id;
    facts.direction = DIRECTION_EGRESS;
    facts.decided = true;
    let passed = if source.flags & ISOLATED_EGRESS == 0 {
        ct::track(source_if, DIRECTION_EGRESS, flow, NO_COUNTER, 0);
        events::report(facts, EVENT_ALLOW, STAT_ALLOW_UNISOLATED, len);
        true
    } else if let Some(allowed) = maps::policy(
        bank,
        source.endpoint_id,
        maps::peer(bank, flow.ipv6, &flow.daddr).class_id,
        DIRECTION_EGRESS,
        flow,
    ) {
        ct::track(source_if, DIRECTION_EGRESS, flow, allowed.rule_slot, 0);
        counters::add(Counter::rule(allowed.rule_slot), len);
        facts.rule = Some(allowed);
        events::report(facts, EVENT_ALLOW, STAT_ALLOW_POLICY, len);
        facts.rule = None;
        true
    } else if audit::audits(&source, DIRECTION_EGRESS) {
        let slot = deny_slot(source.endpoint_id, DIRECTION_EGRESS, true);
        ct::track(source_if, DIRECTION_EGRESS, flow, slot, CT_FLAG_AUDIT);
        counters::add(Counter::Deny(slot), len);
        events::report(facts, EVENT_WOULD_DROP, STAT_ALLOW_AUDIT, len);
        true
    } else {
        false
    };
    if passed {
        (
            facts.ifindex,
            facts.endpoint_id,
            facts.direction,
            facts.decided,
        ) = packet;
        return Ok(());
    }
    facts.counter = Counter::Deny(deny_slot(source.endpoint_id, DIRECTION_EGRESS, false));
    Err(STAT_DROP_DEFERRED_EGRESS)
}

/// At the backend's veth (its egress, before un-DNAT): marks a reply whose
/// destination is a local pod that has the reversed flow tracked for egress, i.e.
/// whose egress policy allowed this backend (or whose audit-mode egress still lets
/// it pass: an audit flow whose audit ended is no longer verified). The reply
/// refreshes that entry and counts in the client's rule (or audit) slot, like the
/// replies of any flow the rule allowed. `decide` calls it only for packets the
/// backend's conntrack matched as replies: nothing else can need the mark. The
/// client is looked up in `bank`, the bank of the reply at the backend.
#[inline(always)]
pub(crate) fn verify_reply(ctx: &TcContext, bank: u32, flow: &Flow) {
    let Some(client_if) = maps::endpoint_ifindex(bank, &flow.daddr) else {
        return;
    };
    let Some(client) = maps::endpoint(bank, client_if) else {
        return;
    };
    let Some(hit) = ct::find(client_if, DIRECTION_EGRESS, flow, true) else {
        return;
    };
    if let Some((_, counter)) = audit::tracked(&hit, &client, DIRECTION_INGRESS) {
        hit.seen(flow);
        counters::add(counter, ctx.len());
        ctx.set_mark(mark(ctx) | MARK_REPLY_VERIFIED);
    }
}
