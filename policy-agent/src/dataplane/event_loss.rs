//! Verdict events the datapath could not report: the `STATS` side counters
//! `events_endpoint_limited` (held back by the interface's own token bucket),
//! `events_rate_limited` (by the per-CPU one) and `events_ring_full` (the `EVENTS`
//! ring buffer had no room), read in the owner's process
//! (`Datapath::stats`) or from a pin by another one (`PinnedStats`, what
//! `policy-agent flows` watches).

use std::path::Path;

use aya::maps::{MapData, PerCpuArray};
use policy_common::maps;
use policy_common::verdict::{
    STAT_EVENTS_ENDPOINT_LIMITED, STAT_EVENTS_RATE_LIMITED, STAT_EVENTS_RING_FULL, STAT_NAMES,
};
use serde::Serialize;

use super::{
    events::read_stats,
    maps::{map_of, pinned_map_data},
    DataplaneError, Stats,
};

/// Events the datapath could not report (`STATS` side counters, summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventsLost {
    /// Held back by the per-CPU rate limit.
    pub rate_limited: u64,
    /// Held back by the rate limit of the interface they were about (one pod's
    /// flood, kept from using up the others' share).
    pub endpoint_limited: u64,
    /// Lost because the ring buffer was full.
    pub ring_full: u64,
}

impl EventsLost {
    /// The counters as `stats` has them.
    pub fn of(stats: &Stats) -> Self {
        Self {
            rate_limited: stats.get(STAT_NAMES[STAT_EVENTS_RATE_LIMITED as usize]),
            endpoint_limited: stats.get(STAT_NAMES[STAT_EVENTS_ENDPOINT_LIMITED as usize]),
            ring_full: stats.get(STAT_NAMES[STAT_EVENTS_RING_FULL as usize]),
        }
    }

    /// What was lost between two readings of the counters.
    pub fn between(before: &Stats, after: &Stats) -> Self {
        Self::of(after).since(Self::of(before))
    }

    /// What was lost since the reading `earlier` (never negative: a counter that
    /// went down counts 0).
    pub fn since(self, earlier: EventsLost) -> Self {
        Self {
            rate_limited: self.rate_limited.saturating_sub(earlier.rate_limited),
            endpoint_limited: self
                .endpoint_limited
                .saturating_sub(earlier.endpoint_limited),
            ring_full: self.ring_full.saturating_sub(earlier.ring_full),
        }
    }

    /// Every event lost, all causes.
    pub fn total(self) -> u64 {
        self.rate_limited
            .saturating_add(self.endpoint_limited)
            .saturating_add(self.ring_full)
    }

    /// Whether anything was lost.
    pub fn any(self) -> bool {
        self.total() > 0
    }

    /// `N events (A held back by the rate limit, B by per-pod limits, C for a
    /// full ring buffer)`.
    pub fn describe(self) -> String {
        format!(
            "{} events ({} held back by the rate limit, {} by per-pod limits, {} for a full ring buffer)",
            self.total(),
            self.rate_limited,
            self.endpoint_limited,
            self.ring_full
        )
    }
}

/// A datapath's `STATS` opened from its pin (`Datapath::pin_stats`), read by
/// another process.
pub struct PinnedStats {
    array: PerCpuArray<MapData, u64>,
}

impl PinnedStats {
    /// Opens the `STATS` map pinned at `path`.
    pub fn open(path: &Path) -> Result<Self, DataplaneError> {
        let map = map_of(pinned_map_data(path)?, maps::STATS.name)?;
        let array = PerCpuArray::try_from(map).map_err(|e| DataplaneError::Map {
            map: maps::STATS.name,
            what: "open".into(),
            source: Some(Box::new(e)),
        })?;
        Ok(Self { array })
    }

    /// One counter, summed over CPUs.
    fn read(&self, index: u32) -> Result<u64, DataplaneError> {
        let values = self
            .array
            .get(&index, 0)
            .map_err(|source| DataplaneError::MapOp {
                map: maps::STATS.name,
                operation: "read",
                source: Box::new(source),
            })?;
        Ok(values.iter().sum())
    }

    /// The lost-event counters now.
    pub fn events_lost(&self) -> Result<EventsLost, DataplaneError> {
        Ok(EventsLost {
            rate_limited: self.read(STAT_EVENTS_RATE_LIMITED)?,
            endpoint_limited: self.read(STAT_EVENTS_ENDPOINT_LIMITED)?,
            ring_full: self.read(STAT_EVENTS_RING_FULL)?,
        })
    }

    /// Every named counter now (`Datapath::stats` of the process that owns it).
    pub fn stats(&self) -> Result<Stats, DataplaneError> {
        read_stats(&self.array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(rate_limited: u64, ring_full: u64) -> Stats {
        Stats {
            counters: vec![
                ("allow_policy", 9),
                ("events_rate_limited", rate_limited),
                ("events_endpoint_limited", 2 * rate_limited),
                ("events_ring_full", ring_full),
            ],
        }
    }

    #[test]
    fn lost_events_are_the_growth_of_the_two_side_counters() {
        let lost = EventsLost::between(&stats(1, 2), &stats(4, 2));
        assert_eq!(
            lost,
            EventsLost {
                rate_limited: 3,
                endpoint_limited: 6,
                ring_full: 0
            }
        );
        assert!(lost.any());
        assert_eq!(
            lost.describe(),
            "9 events (3 held back by the rate limit, 6 by per-pod limits, 0 for a full ring buffer)"
        );
        assert!(!EventsLost::between(&stats(4, 2), &stats(4, 2)).any());
        // A counter that went down (another datapath) is no loss.
        assert!(!EventsLost::between(&stats(4, 2), &stats(1, 1)).any());
    }
}
