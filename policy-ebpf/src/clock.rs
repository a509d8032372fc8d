//! Conntrack's clock: `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC at the resolution
//! of the scheduler tick), read once per tick per CPU instead of once per packet.
//!
//! The coarse clock is a helper call, about 7 ns of a conntrack hit on the
//! benchmark VM (its return-thunk mitigation makes every call dear), and its value
//! moves only when the kernel's timekeeping advances at a tick, which is when
//! `jiffies` moves too (`tick_do_update_jiffies64` raises `jiffies_64` and then
//! calls `update_wall_time`; a periodic tick does both as well). `bpf_jiffies64`
//! costs one load: the verifier inlines it for a JITed program on a 64-bit
//! kernel. So each CPU keeps the coarse time it last read with the `jiffies` it
//! read it at (`CLOCK`), and reads the helper again only when `jiffies` moved.
//!
//! The time base stays the one the agent's sweep compares entries with
//! (CLOCK_MONOTONIC nanoseconds; `policy-agent` `dataplane/ct.rs`): a cached value
//! is a value the coarse clock had. But a reading taken between another CPU's
//! `jiffies` update and its `update_wall_time` pairs the new `jiffies` with the
//! time of the last update, which after an idle spell (NO_HZ) can be seconds old;
//! cached as is, that old time would serve a whole tick and keep expired flows
//! alive. So a reading is served from the cache only when it is vouched for
//! (`Reading::servable`): it was read exactly one tick after the reading before
//! it and is later than that one. Such a time is at least the wall time set at
//! the previous tick (the pre-update time of this tick is that one), so a served
//! time lags the coarse clock by at most two ticks; any other reading (the first
//! after an idle spell, one that did not move) is used for its packet only, and
//! the helper is called again until a tick vouches for one. The sweep's margin
//! (one second) covers the lag; in the classifiers a lagging `now` only makes an
//! entry look idle for less time, so it never expires early. A CPU's readings
//! never go back (`jiffies` only grows, and a new reading replaces the cache);
//! readings of two CPUs may cross, as they could before (`ct::live_in` counts a
//! `last_seen_ns` after `now` as idle 0).

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

use crate::maps;

/// A CPU's last reading of the coarse clock and the `jiffies` it was read at.
/// Kernel-only (`maps::CLOCK`); zero at load, and `jiffies` is never 0 (it starts
/// at 2^32 - 300 * HZ), so the first read on each CPU calls the helper.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Reading {
    /// `bpf_jiffies64()` when `coarse_ns` was read.
    pub jiffies: u64,
    /// `bpf_ktime_get_coarse_ns()` read then.
    pub coarse_ns: u64,
    /// Non-zero when `coarse_ns` may serve every packet while `jiffies` stays:
    /// read one tick after the reading before it, and later than that one.
    pub servable: u64,
}

/// CLOCK_MONOTONIC in ns at tick resolution: `bpf_ktime_get_coarse_ns`, called
/// again only when `jiffies` moved since this CPU's servable reading, or it has
/// none for this tick (module comment).
#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: bpf_jiffies64 has no preconditions.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(reading) = maps::clock() else {
        // Cannot happen (entry 0 of a one-entry array): read the clock itself.
        // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: this CPU's slot (`maps::clock`); plain integers, read and written
    // field by field. `servable` is cleared first and set last: were a run ever
    // to interleave (TC runs with bottom halves disabled), a pair it could serve
    // is a whole one.
    unsafe {
        let cached_jiffies = (*reading).jiffies;
        if cached_jiffies == jiffies && (*reading).servable != 0 {
            return (*reading).coarse_ns;
        }
        let coarse_ns = bpf_ktime_get_coarse_ns();
        let servable =
            jiffies == cached_jiffies.wrapping_add(1) && coarse_ns > (*reading).coarse_ns;
        (*reading).servable = 0;
        (*reading).coarse_ns = coarse_ns;
        (*reading).jiffies = jiffies;
        (*reading).servable = u64::from(servable);
        coarse_ns
    }
}
