//! Service egress deferral: egress to a ClusterIP is decided after DNAT.
//!
//! The egress classifier runs at TC ingress of the client's veth, before the node's
//! DNAT, so it cannot see which backend a ClusterIP flow goes to. It records a
//! `CT_FLAG_DEFERRED` entry, sets the deferred-egress mark bit and lets the packet
//! on. The classifier at the backend's veth (TC egress, after DNAT) decides the
//! client's egress on the real backend before the backend's own ingress. Replies
//! are verified at the backend's veth (the reply-verified bit) and required at the
//! client's, so a reply to a deferred flow passes only if the client's egress
//! allowed the backend.
//! Marks never cross a network namespace (veth scrubs them), so pods cannot forge them.
//!
//! The same destination-side decision closes the window in which a packet between
//! two pods of the node meets two banks: the source's egress classifier stamps every
//! packet it passes with the generation it decided with (`stamp`), and the
//! destination's classifier, finding a stamp of another generation, decides the
//! source's egress again with its own bank (`source_egress`) before the packet's
//! ingress. Which bits of `skb->mark` carry what comes from `CONFIG`
//! (`Config::mark_*`); a classifier sets and clears only those bits.

use aya_ebpf::programs::TcContext;
use policy_common::{
    config::Config,
    ct::{
        CT_FLAG_AUDIT, CT_FLAG_DECIDED_THERE, CT_FLAG_DEFERRED, CT_FLAG_DIRECT,
        CT_FLAG_LOCAL_OWNED, CT_FLAG_REVOKED,
    },
    events::{EVENT_ALLOWED, EVENT_WOULD_DROP},
    verdict::{
        DIRECTION_EGRESS, STAT_ALLOW_DEFERRED_EGRESS, STAT_ALLOW_POLICY, STAT_ALLOW_UNISOLATED,
        STAT_DROP_DEFERRED_EGRESS, STAT_DROP_DEFERRED_UNKNOWN_SOURCE, STAT_DROP_SOURCE_EGRESS,
        STAT_DROP_STATE_CHANGED, STAT_WOULD_DROP_POLICY,
    },
};

use crate::{
    audit, counters, ct, events,
    facts::{Counter, Facts},
    judge::{self, AUDIT, CHANGED, DENIED, RULE, SERVICE},
    maps,
    parse::{self, Flow},
};

/// `take_marks`: the packet arrived with `Config::mark_deferred_egress`.
pub(crate) const ARRIVED_DEFERRED: u32 = 1 << 0;
/// `take_marks`: the packet arrived with `Config::mark_reply_verified`.
pub(crate) const ARRIVED_VERIFIED: u32 = 1 << 1;
/// `take_marks`: the packet arrived with the stamp of another generation than the
/// one it is decided with here.
pub(crate) const ARRIVED_STALE: u32 = 1 << 2;

#[inline(always)]
fn mark(ctx: &TcContext) -> u32 {
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel handed this program.
    unsafe { (*ctx.skb.skb).mark }
}

/// What the packet's mark says (`ARRIVED_*`, a stamp compared with `generation`)
/// and which of podwall's bits it carries, read without changing it.
#[inline(always)]
fn read_marks(ctx: &TcContext, config: &Config, generation: u32) -> (u32, u32) {
    let arrived = mark(ctx);
    let present = arrived & config.own_marks();
    if present == 0 {
        return (0, 0);
    }
    let mut said = 0;
    if arrived & config.mark_deferred_egress != 0 {
        said |= ARRIVED_DEFERRED;
    }
    if arrived & config.mark_reply_verified != 0 {
        said |= ARRIVED_VERIFIED;
    }
    // The stamp's division only for a packet that carries one.
    let stamps = config.mark_stamp_mask;
    if arrived & stamps != 0 && arrived & stamps != config.mark_stamp(generation) {
        said |= ARRIVED_STALE;
    }
    (said, present)
}

/// Reads the packet's mark and clears podwall's bits from it; returns what they
/// said (`ARRIVED_*`), a stamp compared with `generation`, the one this packet is
/// decided with. Runs at the destination pod's veth, where those bits end their trip.
#[inline(always)]
pub(crate) fn take_marks(ctx: &TcContext, generation: u32) -> u32 {
    let (said, present) = read_marks(ctx, maps::config_ref(), generation);
    clear_marks(ctx, present);
    said
}

/// For the conntrack fast path (`fast.rs`): podwall's bits the packet's mark
/// carries when they say nothing (`take_marks` would return 0: at most the stamp
/// of `generation`), else `None`; `config` is `CONFIG[0]`. Nothing is changed.
#[inline(always)]
pub(crate) fn plain_marks(ctx: &TcContext, config: &Config, generation: u32) -> Option<u32> {
    match read_marks(ctx, config, generation) {
        (0, present) => Some(present),
        _ => None,
    }
}

/// Clears `present`, podwall's bits the mark carries (`read_marks`), from it.
#[inline(always)]
pub(crate) fn clear_marks(ctx: &TcContext, present: u32) {
    if present != 0 {
        ctx.set_mark(mark(ctx) & !present);
    }
}

/// At a node exit (`exit.rs`): clears podwall's bits from the packet's mark and
/// returns whether the deferred-egress bit was among them.
#[inline(always)]
pub(crate) fn take_deferred(ctx: &TcContext) -> bool {
    let arrived = mark(ctx);
    let (own, deferred) = maps::config(|c| (c.own_marks(), c.mark_deferred_egress));
    if arrived & own == 0 {
        return false;
    }
    ctx.set_mark(arrived & !own);
    arrived & deferred != 0
}

/// Stamps a packet leaving a pod's egress with `generation`, the one its egress was
/// decided with (replacing any stamp bits it carried).
#[inline(always)]
pub(crate) fn stamp(ctx: &TcContext, generation: u32) {
    stamp_with(ctx, maps::config_ref(), generation);
}

/// `stamp` with the mark bits of `config` (`CONFIG[0]`, read by the caller).
#[inline(always)]
pub(crate) fn stamp_with(ctx: &TcContext, config: &Config, generation: u32) {
    let stamps = config.mark_stamp_mask;
    if stamps != 0 {
        ctx.set_mark((mark(ctx) & !stamps) | config.mark_stamp(generation));
    }
}

/// Defers the egress verdict of a packet to a Service: marks it and, for a first
/// packet (`first`), records the flow as deferred at the client's interface.
#[inline(always)]
pub(crate) fn defer(
    ctx: &TcContext,
    ifindex: u32,
    flow: &Flow,
    first: bool,
    generation: u32,
) -> Result<u32, u32> {
    if first {
        let site = ct::Site {
            ifindex,
            direction: DIRECTION_EGRESS,
            bank: maps::bank(generation) as u8,
        };
        ct::track(
            site,
            flow,
            policy_common::counters::NO_COUNTER,
            CT_FLAG_DEFERRED,
            generation,
        )?;
    }
    ctx.set_mark(mark(ctx) | maps::config(|c| c.mark_deferred_egress));
    Ok(STAT_ALLOW_DEFERRED_EGRESS)
}

/// Why `source_egress` runs.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Why {
    /// The packet is marked `mark_deferred_egress`: its egress was deferred past
    /// Service DNAT, so it is decided here on the translated destination.
    Deferred,
    /// The packet carries a stamp of another generation: the source decided its
    /// egress with another bank than this packet's.
    Stale,
    /// A local pod's connection meets a socket of the node itself (`sockets.rs`):
    /// deferred to a Service whose backend is the node, or sent to the node's
    /// address directly (then tracked at the pod already). Decided like a
    /// deferred packet; a tracked flow passes uncounted (its own hook counted it).
    NodeSocket,
}

/// Decides the source pod's egress for a packet at a same-node destination, with
/// the packet's bank (`facts.generation`):
/// 1. the source must be a local pod (`ENDPOINT_ADDRS`); else a deferred packet is
///    dropped (`STAT_DROP_DEFERRED_UNKNOWN_SOURCE`, e.g. the node masqueraded it),
///    and a stale one goes on to its ingress decision (its source address was
///    rewritten on the way, e.g. a Service reply un-DNATed, or the pod is gone);
/// 2. a flow tracked at the source's interface, as its egress or as the reply of its
///    ingress, passes (for a deferred packet it is refreshed and counted in its
///    rule's or audit slot), unless it passed only by an audit that ended
///    (`audit::tracked`: then it is decided afresh); an entry another state
///    decided is re-decided first (`judge::recheck`): revoked, the packet is
///    dropped (`STAT_DROP_REVOKED`, for a stale packet `STAT_DROP_SOURCE_EGRESS`),
///    except, for a stale packet, a forward entry the source's own hook decided
///    (`CT_FLAG_DIRECT`): step 4 judges this packet alone (as it does a stale
///    packet that finds no entry), and the source's hook re-decides the entry
///    (`JUDGE_ONLY`);
///    a deferred entry is no decision: on the tuple the packet has here it is the
///    flow untranslated (a pod address a Service also names), decided at step 4
///    by the pod's class (`Facts::translated`);
/// 3. an ICMP error related to such a flow passes (`ct::related`: e.g. the client's
///    "port unreachable" for a late answer of the backend, which the client's
///    egress allowed);
/// 4. else `judge` decides the source's egress on the packet's destination: no
///    isolation, a rule or an audit would-drop pass and are tracked at the source's
///    interface (a deferred packet counted in the rule's or audit slot and
///    reported; a stale one was, at the source); anything else is dropped
///    (`STAT_DROP_DEFERRED_EGRESS`, for a stale packet `STAT_DROP_SOURCE_EGRESS`,
///    counted in the source's egress deny slot).
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
///
/// Steps 1-2 and 4 are BPF subprograms of their own, called one after the other
/// from here, so that none of their stack frames (nor `related`'s) stack up.
#[inline(always)]
pub(crate) fn source_egress(
    ctx: &TcContext,
    facts: &mut Facts,
    flow: &Flow,
    why: Why,
) -> Result<(), u32> {
    source_decided(Some(ctx), ctx.len(), facts, flow, why).map(drop)
}

/// `source_egress` for a packet of `len` bytes, or for a flow without a packet
/// (`ctx` `None`, `len` 0: `sockets.rs`); `Ok(true)` when the source's egress
/// was judged afresh and allows the flow, `Ok(false)` when it passed otherwise.
#[inline(always)]
pub(crate) fn source_decided(
    ctx: Option<&TcContext>,
    len: u32,
    facts: &mut Facts,
    flow: &Flow,
    why: Why,
) -> Result<bool, u32> {
    let step = SourceStep(source_tracked(len, facts, flow, why as u32));
    let Some(source_if) = step.undecided() else {
        return step.outcome().map(|()| false);
    };
    let bank = maps::bank(facts.generation);
    let site = ct::Site {
        ifindex: source_if,
        direction: DIRECTION_EGRESS,
        bank: bank as u8,
    };
    if let (Some(ctx), true) = (ctx, flow.quote_at != 0) {
        let flags = maps::endpoint(bank, source_if).map_or(0, |source| source.flags);
        if ct::related(ctx, site, flow, flags, facts.generation) {
            return Ok(false);
        }
    }
    let why = why as u32
        | if step.untranslated() {
            WHY_UNTRANSLATED
        } else {
            0
        }
        | if step.judge_only() { WHY_JUDGE_ONLY } else { 0 };
    match decide_source(len, facts, site, flow, why) {
        SOURCE_PASSED => Ok(true),
        stat => Err(stat),
    }
}

/// What `source_tracked` found: passed (0), a drop reason, or (`UNDECIDED` in the
/// high half) the source's interface, whose egress is still to decide.
struct SourceStep(u64);

/// `SourceStep` and `decide_source`: the packet goes on (no drop reason is 0).
const SOURCE_PASSED: u32 = 0;
/// `SourceStep`: high half of an undecided step.
const UNDECIDED: u64 = 1 << 32;
/// `SourceStep`: with `UNDECIDED`, the source's own deferred entry is on the
/// packet's tuple: nothing translated the flow (`decide_source`).
const UNTRANSLATED: u64 = 1 << 33;
/// `decide_source`'s `why`, or'd with a `Why`: `UNTRANSLATED` was found.
const WHY_UNTRANSLATED: u32 = 1 << 8;
/// `SourceStep`: with `UNDECIDED`, a stale packet (the source's hook decided it
/// with another generation) whose source's own forward entry of the tuple is
/// that hook's decision (`CT_FLAG_DIRECT`), or which finds no entry to pass on (a
/// SYN, an unanswered datagram): the source's egress is judged for this packet
/// only, and the entry is left for the source's hook to re-decide. Renewed or
/// written here, it would read as that hook's decision for a state the hook
/// never judged it with (so its next packet to an address that has just become
/// a Service address would not be deferred); without the flag, the flow would
/// be deferred for good.
const JUDGE_ONLY: u64 = 1 << 34;
/// `decide_source`'s `why`, or'd with a `Why`: `JUDGE_ONLY` was found.
const WHY_JUDGE_ONLY: u32 = 1 << 9;

impl SourceStep {
    /// The source's interface, when its egress is still to decide.
    #[inline(always)]
    fn undecided(&self) -> Option<u32> {
        (self.0 & UNDECIDED != 0).then_some(self.0 as u32)
    }

    /// The flow is untranslated (`UNTRANSLATED`), for an undecided step.
    #[inline(always)]
    fn untranslated(&self) -> bool {
        self.0 & UNTRANSLATED != 0
    }

    /// The decision is for this packet only (`JUDGE_ONLY`), for an undecided step.
    #[inline(always)]
    fn judge_only(&self) -> bool {
        self.0 & JUDGE_ONLY != 0
    }

    /// Passed or dropped (for a decided step).
    #[inline(always)]
    fn outcome(&self) -> Result<(), u32> {
        match self.0 as u32 {
            SOURCE_PASSED => Ok(()),
            stat => Err(stat),
        }
    }
}

/// Steps 1-2 of `source_egress` (`why` is a `Why` as u32).
#[inline(never)]
fn source_tracked(len: u32, facts: &mut Facts, flow: &Flow, why: u32) -> u64 {
    let (generation, bank) = (facts.generation, maps::bank(facts.generation));
    let stale = why == Why::Stale as u32;
    // Counted where it was decided: at the source (stale) or at its own hook.
    let quiet = why != Why::Deferred as u32;
    let unknown = if why == Why::Deferred as u32 {
        STAT_DROP_DEFERRED_UNKNOWN_SOURCE
    } else {
        SOURCE_PASSED
    };
    let Some(source_if) = maps::source_ifindex(bank, &flow.saddr) else {
        return u64::from(unknown);
    };
    let Some(source) = maps::endpoint(bank, source_if) else {
        return u64::from(unknown);
    };
    // Undecided; `UNTRANSLATED` when the source's own deferral is on this tuple
    // (for a SYN too, which `ct::lookup` passes by).
    let undecided = || {
        let deferred = ct::deferred_egress(source_if, flow);
        let how = if deferred {
            UNTRANSLATED
        } else if stale {
            JUDGE_ONLY
        } else {
            0
        };
        UNDECIDED | how | u64::from(source_if)
    };
    let Some(hit) = ct::lookup(source_if, DIRECTION_EGRESS, flow) else {
        return undecided();
    };
    // A deferred entry on the tuple the packet has here is the flow itself,
    // untranslated: at the node's socket, a Service address the node holds; at a
    // pod, a pod address that a Service also names (an external IP, say), on a
    // port nothing translated. Nothing decided its egress yet: it is decided here,
    // never passed on the deferral (which would skip the source's egress policy).
    // Once this side allowed such a flow with this very generation
    // (`Hit::decided_there`), that decision stands.
    if hit.flags() & CT_FLAG_DEFERRED != 0 && !hit.decided_there(generation) {
        return UNDECIDED | UNTRANSLATED | u64::from(source_if);
    }
    if !hit.current(generation) {
        if stale && !hit.reply && hit.flags() & CT_FLAG_DIRECT != 0 {
            return UNDECIDED | JUDGE_ONLY | u64::from(source_if);
        }
        let site = ct::Site {
            ifindex: source_if,
            direction: DIRECTION_EGRESS,
            bank: bank as u8,
        };
        // `ENDPOINT_ADDRS[saddr] == source_if` in this bank (above), and the
        // entry's local address is `saddr` either way (the source of an egress
        // entry, the destination of an ingress one the packet replies to).
        let owned = CT_FLAG_LOCAL_OWNED;
        // Not a deferral (above): decided on this tuple, past translation, as
        // `decide_source` decides one (`Facts::translated`).
        facts.translated = true;
        let rechecked = judge::recheck(&hit, site, &source, flow, facts, generation, owned);
        facts.translated = false;
        if let Err(stat) = rechecked {
            // The drop is the source's: reported with its interface (and, from
            // `recheck`, the direction whose policy revoked the flow).
            facts.ifindex = source_if;
            facts.endpoint_id = source.endpoint_id;
            return u64::from(if stale { STAT_DROP_SOURCE_EGRESS } else { stat });
        }
        // Never re-decided into a deferral past translation; were it, no
        // decision either.
        if hit.flags() & CT_FLAG_DEFERRED != 0 {
            return undecided();
        }
    }
    let Some((_, counter)) = audit::tracked(&hit, &source, DIRECTION_EGRESS, generation) else {
        return undecided();
    };
    if !quiet {
        hit.seen(flow);
        counters::add(counter, len);
    }
    u64::from(SOURCE_PASSED)
}

/// Step 4 of `source_egress`: the source's egress at `site` decided afresh by
/// `judge`; `SOURCE_PASSED` or the drop reason. `why` is a `Why`, with
/// `WHY_UNTRANSLATED` when the source's own deferred entry is on this tuple:
/// then the entry stays a deferral, marked decided here
/// (`CT_FLAG_DECIDED_THERE`), so that a later translation of the same tuple (a
/// port a Service gains) is still decided at its backend; with `WHY_JUDGE_ONLY`
/// nothing is tracked (`JUDGE_ONLY`).
#[inline(never)]
fn decide_source(len: u32, facts: &mut Facts, site: ct::Site, flow: &Flow, why: u32) -> u32 {
    let untranslated = why & WHY_UNTRANSLATED != 0;
    let judge_only = why & WHY_JUDGE_ONLY != 0;
    let why = why & !(WHY_UNTRANSLATED | WHY_JUDGE_ONLY);
    let denied = if why == Why::Stale as u32 {
        STAT_DROP_SOURCE_EGRESS
    } else {
        STAT_DROP_DEFERRED_EGRESS
    };
    let Some(source) = maps::endpoint(u32::from(site.bank), site.ifindex) else {
        return denied;
    };
    // `facts` speaks for the source while its egress is decided (no copy: the
    // stack is tight), and for the packet at the destination again on a pass.
    let packet = (
        facts.ifindex,
        facts.endpoint_id,
        facts.direction,
        facts.decided,
    );
    facts.ifindex = site.ifindex;
    facts.endpoint_id = source.endpoint_id;
    facts.direction = DIRECTION_EGRESS;
    facts.decided = true;
    // The destination is final, unless nothing translated a flow to the node's
    // own socket: a Service address the node holds (`Facts::translated`).
    facts.translated = !(untranslated && why == Why::NodeSocket as u32);
    let judged = judge::judge(site, &source, flow, false, facts);
    facts.translated = false;
    let kind = judged.kind();
    if kind == CHANGED {
        return STAT_DROP_STATE_CHANGED;
    }
    if kind == DENIED || kind == SERVICE {
        // SERVICE only for a flow nothing translated to the node's own socket:
        // a Service address the node holds has no backend to decide it on.
        facts.counter = judged.counter();
        return denied;
    }
    // `site.ifindex` is `ENDPOINT_ADDRS[saddr]` in this bank (`source_tracked`),
    // and `saddr` is the egress entry's local address. An untranslated flow stays
    // a deferral, decided here (`CT_FLAG_DECIDED_THERE`).
    let there = if untranslated {
        CT_FLAG_DEFERRED | CT_FLAG_DECIDED_THERE
    } else {
        0
    };
    if !judge_only {
        if let Err(stat) = ct::track(
            site,
            flow,
            judged.slot(),
            judged.ct_flags() | CT_FLAG_LOCAL_OWNED | there,
            facts.generation,
        ) {
            facts.rule = None;
            return stat;
        }
    }
    // A stale packet was counted and reported at the source already.
    if why != Why::Stale as u32 {
        let (verdict, stat, counter) = match kind {
            RULE => (EVENT_ALLOWED, STAT_ALLOW_POLICY, judged.counter()),
            AUDIT => (EVENT_WOULD_DROP, STAT_WOULD_DROP_POLICY, judged.counter()),
            _ => (EVENT_ALLOWED, STAT_ALLOW_UNISOLATED, Counter::None),
        };
        counters::add(counter, len);
        events::report(facts, verdict, stat, len);
    }
    facts.rule = None;
    (
        facts.ifindex,
        facts.endpoint_id,
        facts.direction,
        facts.decided,
    ) = packet;
    SOURCE_PASSED
}

/// At the backend's veth (its egress, before un-DNAT): marks a reply whose
/// destination is a local pod that has the reversed flow tracked for egress, i.e.
/// whose egress policy allowed this backend (or whose audit-mode egress still lets
/// it pass: an audit flow whose audit ended is no longer verified), unless the
/// client decided that flow at its own hook (`CT_FLAG_DIRECT`: no Service
/// translated it, so the client's ingress passes the reply on its entry). The reply
/// refreshes that entry and counts in the client's rule (or audit) slot, like the
/// replies of any flow the rule allowed. An entry another state decided is
/// re-decided first, with this reply's bank (`judge::recheck`); a revoked one
/// verifies nothing. `decide` calls it only for packets the backend's conntrack
/// matched as replies: nothing else can need the mark. Returns whether it marked.
#[inline(always)]
pub(crate) fn verify_reply(ctx: &TcContext, facts: &mut Facts, flow: &Flow) -> bool {
    let (generation, bank) = (facts.generation, maps::bank(facts.generation));
    let Some(client_if) = maps::endpoint_ifindex(bank, &flow.daddr) else {
        return false;
    };
    let Some(hit) = ct::find(client_if, DIRECTION_EGRESS, flow, true) else {
        return false;
    };
    // The client decided this flow at its own hook: its ingress passes the reply
    // on that entry, and no deferred entry there waits for a mark.
    if hit.flags() & CT_FLAG_DIRECT != 0 {
        return false;
    }
    // A deferred entry on this tuple is the flow untranslated (a Service address
    // nothing translated): it verifies only as a deferral this side decided
    // with this very generation (`Hit::decided_there`); any other was decided
    // nowhere.
    if hit.flags() & CT_FLAG_DEFERRED != 0 && !hit.decided_there(generation) {
        return false;
    }
    let Some(client) = maps::endpoint(bank, client_if) else {
        return false;
    };
    if !hit.current(generation) {
        let site = ct::Site {
            ifindex: client_if,
            direction: ct::opposite(DIRECTION_EGRESS),
            bank: bank as u8,
        };
        // The reply's own verdict stays the backend's: only the client's entry
        // learns the new state, and a denied one verifies nothing.
        // `ENDPOINT_ADDRS[daddr] == client_if` in this bank (above), and `daddr`
        // is the source of the client's egress entry: its local address.
        let (counter, direction, rule) = (facts.counter, facts.direction, facts.rule);
        let owned = CT_FLAG_LOCAL_OWNED;
        // This tuple is past translation: a Service address on it is judged by
        // its class, never deferred again (`Facts::translated`).
        facts.translated = true;
        let rechecked = judge::recheck(&hit, site, &client, flow, facts, generation, owned);
        facts.translated = false;
        (facts.counter, facts.direction, facts.rule) = (counter, direction, rule);
        if rechecked.is_err() || hit.flags() & CT_FLAG_DEFERRED != 0 {
            return false;
        }
    }
    if let Some((_, counter)) =
        audit::tracked(&hit, &client, ct::opposite(DIRECTION_EGRESS), generation)
    {
        hit.seen(flow);
        counters::add(counter, ctx.len());
        ctx.set_mark(mark(ctx) | maps::config(|c| c.mark_reply_verified));
        return true;
    }
    false
}

/// Whether `flow`, an ICMP or ICMPv6 error passing the backend's egress (or
/// arriving at `node_entry`) with `generation`, is about a packet of a local
/// client's Service flow whose egress the destination's side allowed: the quote
/// is the packet as it arrived here, after translation, sent by the error's
/// destination, and that client tracks it as an egress flow this side decided
/// (not deferred, not revoked, not its own hook's, of this generation or kept,
/// an audit one only while the client's egress audits). Then the error gets the reply-verified bit,
/// which lets it relate to the client's deferred entry once the node has
/// un-translated it (`ct::related`); returns whether it marked.
#[inline(never)]
pub(crate) fn verify_error(ctx: &TcContext, generation: u32, flow: &Flow) -> bool {
    let bank = maps::bank(generation);
    let Some(client_if) = maps::endpoint_ifindex(bank, &flow.daddr) else {
        return false;
    };
    let Some(key) = maps::ct_key() else {
        return false;
    };
    // SAFETY: this CPU's scratch key (`maps::ct_key`), written whole here (the
    // quote fills addresses, ports and protocol) and read by `ct::find_filled`.
    let quoted = unsafe {
        let key = &mut *key;
        *key = policy_common::ct::CtKey {
            ifindex: client_if,
            direction: DIRECTION_EGRESS,
            ..policy_common::ct::CtKey::default()
        };
        parse::quoted(ctx, flow, key) && parse::same_address(&key.saddr, &flow.daddr)
    };
    if !quoted {
        return false;
    }
    let Some(hit) = ct::find_filled() else {
        return false;
    };
    // An entry the client's own hook decided (`CT_FLAG_DIRECT`) needs no mark:
    // the client's ingress relates the error on it, as `verify_reply` leaves its
    // replies (and an unmarked error keeps its stamp for the stale check).
    let (stamp, flags) = hit.verdict();
    if flags & (CT_FLAG_DEFERRED | CT_FLAG_REVOKED | CT_FLAG_DIRECT) != 0
        || (stamp != generation && !ct::keep_established())
    {
        return false;
    }
    if flags & CT_FLAG_AUDIT != 0
        && maps::endpoint(bank, client_if).is_none_or(|client| {
            !audit::stands(flags, stamp, generation, client.flags, DIRECTION_EGRESS)
        })
    {
        return false;
    }
    ctx.set_mark(mark(ctx) | maps::config(|c| c.mark_reply_verified));
    true
}
