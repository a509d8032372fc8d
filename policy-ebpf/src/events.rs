//! Verdict events (`EVENTS`, layout in `policy_common::events`) and the per-CPU
//! token bucket that limits them.
//!
//! What is reported (`to_tc_action` decides, `report` sends):
//! 1. every drop (`EVENT_DROPPED`), with whatever `decide` knew when it dropped;
//! 2. every would-drop (`EVENT_WOULD_DROP`): the packet that decided an audit flow
//!    (its later packets and replies are counted, not reported);
//! 3. with `CONFIG_FLAG_ALLOW_EVENTS`, every allow (`EVENT_ALLOWED`) of a packet that
//!    decided a new flow; conntrack hits and frames that are not IP never report.
//!
//! The limits, in order (an event takes one token from each bucket it passes):
//! 1. the interface's own bucket on this CPU (`maps::ENDPOINT_EVENT_TOKENS`, an LRU
//!    map keyed by ifindex): at most `Config::events_per_endpoint_burst` tokens,
//!    refilled at `Config::events_per_endpoint_per_second`; an event without a
//!    token bumps `STAT_EVENTS_ENDPOINT_LIMITED`. One pod that floods drops uses up
//!    its own bucket, not the one below that every pod shares;
//! 2. this CPU's bucket (`maps::EVENT_TOKENS`): at most `Config::events_burst`
//!    tokens, refilled at `Config::events_per_second`; without a token,
//!    `STAT_EVENTS_RATE_LIMITED`.
//!
//! One the ring buffer cannot take bumps `STAT_EVENTS_RING_FULL`. A bucket starts
//! full the first time it is used (an interface's again after the LRU evicted it).
//! With a rate of 0 nothing refills: each bucket gives at most one burst. Verdicts
//! never depend on any of this.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use policy_common::{
    config::CONFIG_FLAG_ALLOW_EVENTS,
    counters::NO_COUNTER,
    events::{VerdictEvent, EVENT_ALLOWED},
    verdict::{STAT_EVENTS_ENDPOINT_LIMITED, STAT_EVENTS_RATE_LIMITED, STAT_EVENTS_RING_FULL},
};

use crate::{facts::Facts, maps};

/// One token in the bucket's unit (nano-tokens): refilling `elapsed_ns * rate`
/// nano-tokens needs no division.
const TOKEN: u64 = 1_000_000_000;

/// One token bucket (`maps::EVENT_TOKENS`, `maps::ENDPOINT_EVENT_TOKENS`;
/// kernel-only, not ABI).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TokenBucket {
    /// Tokens left, in nano-tokens (`TOKEN` per event).
    pub nano_tokens: u64,
    /// `bpf_ktime_get_ns()` of the last refill; 0 before the first report.
    pub last_ns: u64,
}

/// Refills `bucket` and takes a token from it; false when the limit holds the
/// event back (or there is no bucket). Integer math without overflow: the bucket
/// holds at most `events_burst * TOKEN` (below 2^63), and a refill is computed as
/// `elapsed * rate` only when that stays below the cap.
#[inline(always)]
fn take_token(bucket: Option<*mut TokenBucket>, events_burst: u32, events_per_second: u32) -> bool {
    let Some(bucket) = bucket else {
        return false;
    };
    // SAFETY: a per-CPU slot (of a per-CPU array or per-CPU hash map entry); only
    // this CPU touches it while the program runs.
    let bucket = unsafe { &mut *bucket };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let cap = u64::from(events_burst) * TOKEN;
    let rate = u64::from(events_per_second);
    if bucket.last_ns == 0 {
        bucket.nano_tokens = cap;
    } else if let Some(refill_ns) = cap.checked_div(rate) {
        let elapsed = now.saturating_sub(bucket.last_ns);
        if elapsed >= refill_ns {
            bucket.nano_tokens = cap;
        } else {
            bucket.nano_tokens = bucket.nano_tokens.saturating_add(elapsed * rate);
        }
    }
    // A lowered burst applies at once.
    if bucket.nano_tokens > cap {
        bucket.nano_tokens = cap;
    }
    bucket.last_ns = now;
    if bucket.nano_tokens < TOKEN {
        return false;
    }
    bucket.nano_tokens -= TOKEN;
    true
}

/// Reports the packet `facts` describes as `verdict` (`EVENT_*`), landed in `stat`,
/// `packet_len` bytes long; an `EVENT_ALLOWED` only when the agent asked for allows.
/// That check is inlined at the caller, so the packet that decides an allowed flow
/// makes no call when allows are not reported (the default).
#[inline(always)]
pub(crate) fn report(facts: &Facts, verdict: u8, stat: u32, packet_len: u32) {
    if verdict == EVENT_ALLOWED && maps::config(|c| c.flags) & CONFIG_FLAG_ALLOW_EVENTS == 0 {
        return;
    }
    emit(facts, verdict, stat, packet_len);
}

/// `report` past its check. A BPF subprogram of its own: its buckets' keys and
/// values stay off the classifier's frame, which `decide`'s deepest call chain
/// shares (`maps.rs`).
#[inline(never)]
fn emit(facts: &Facts, verdict: u8, stat: u32, packet_len: u32) {
    let (burst, rate) = maps::config(|c| {
        (
            c.events_per_endpoint_burst,
            c.events_per_endpoint_per_second,
        )
    });
    if !take_token(maps::endpoint_event_tokens(facts.ifindex), burst, rate) {
        maps::count(STAT_EVENTS_ENDPOINT_LIMITED);
        return;
    }
    let (burst, rate) = maps::config(|c| (c.events_burst, c.events_per_second));
    if !take_token(maps::event_tokens(), burst, rate) {
        maps::count(STAT_EVENTS_RATE_LIMITED);
        return;
    }
    let Some(mut entry) = maps::EVENTS.reserve::<VerdictEvent>(0) else {
        maps::count(STAT_EVENTS_RING_FULL);
        return;
    };
    let rule_slot = facts.rule.unwrap_or(NO_COUNTER);
    // Field by field into the reserved entry: a whole VerdictEvent built first
    // would cost 72 bytes of the program's 512-byte stack.
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at the reserved, writable entry, sized for a
    // VerdictEvent; every field is written before `submit` hands it to readers.
    unsafe {
        (*event).timestamp_ns = bpf_ktime_get_ns();
        (*event).ifindex = facts.ifindex;
        (*event).endpoint_id = facts.endpoint_id;
        (*event).saddr = facts.saddr;
        (*event).daddr = facts.daddr;
        (*event).sport_be = facts.sport_be;
        (*event).dport_be = facts.dport_be;
        (*event).protocol = facts.protocol;
        (*event).direction = facts.direction;
        (*event).verdict = verdict;
        (*event).ipv6 = u8::from(facts.ipv6);
        (*event).stat = stat;
        (*event).rule_slot = rule_slot;
        (*event).packet_len = packet_len;
        (*event).pad = 0;
    }
    entry.submit(0);
}
