//! Event timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) as wall-clock time, and
//! the UTC text `flows` prints (formatted by jiff).

use nix::time::{clock_gettime, ClockId};

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// Turns monotonic timestamps into Unix time: the offset between the two clocks,
/// sampled once (a later wall-clock step does not move events already named).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// Unix time minus monotonic time, in nanoseconds.
    offset_ns: i128,
}

fn nanos(clock: ClockId) -> i128 {
    clock_gettime(clock).map_or(0, |t| {
        i128::from(t.tv_sec()) * NANOS_PER_SECOND + i128::from(t.tv_nsec())
    })
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of event timestamps
/// (`bpf_ktime_get_ns`), to compare them with moments in userspace.
pub fn monotonic_now_ns() -> u64 {
    u64::try_from(nanos(ClockId::CLOCK_MONOTONIC)).unwrap_or(0)
}

impl WallClock {
    /// The offset as of now.
    pub fn now() -> Self {
        let monotonic = nanos(ClockId::CLOCK_MONOTONIC);
        let realtime = nanos(ClockId::CLOCK_REALTIME);
        Self::with_offset(realtime - monotonic)
    }

    /// A clock whose Unix time is monotonic time plus `offset_ns` (tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Unix nanoseconds of monotonic timestamp `monotonic_ns`.
    pub fn unix_ns(self, monotonic_ns: u64) -> i128 {
        i128::from(monotonic_ns) + self.offset_ns
    }
}

/// `unix_ns` as a jiff timestamp; outside jiff's range (years -9999 to 9999, never
/// from a real clock) the epoch.
fn timestamp(unix_ns: i128) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(unix_ns).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// RFC 3339 in UTC with microseconds: `2026-11-22T17:32:06.123456Z`.
pub fn rfc3339(unix_ns: i128) -> String {
    timestamp(unix_ns)
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The UTC time of day with milliseconds: `17:32:06.123`.
pub fn time_of_day(unix_ns: i128) -> String {
    timestamp(unix_ns).strftime("%H:%M:%S%.3f").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_time_is_printed_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        let ns = 1_700_000_000 * NANOS_PER_SECOND + 123_456_789;
        assert_eq!(rfc3339(ns), "2023-11-14T22:13:20.123456Z");
        assert_eq!(time_of_day(ns), "22:13:20.123");
        // A leap day, and the last microsecond of a year.
        assert_eq!(
            rfc3339(951_782_400 * NANOS_PER_SECOND),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(1_735_689_600 * NANOS_PER_SECOND - 1000),
            "2024-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn monotonic_timestamps_move_by_the_sampled_offset() {
        let clock = WallClock::with_offset(1_000);
        assert_eq!(clock.unix_ns(5), 1_005);
        let before = monotonic_now_ns();
        assert!(before > 0 && monotonic_now_ns() >= before);
        let now = WallClock::now();
        // The offset is Unix time at boot: after 2020 on any machine running this.
        assert!(now.unix_ns(0) > 1_577_836_800 * NANOS_PER_SECOND);
    }
}
