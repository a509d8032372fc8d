//! Event timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) as wall-clock time, and
//! the UTC text `flows` prints.

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

/// (year, month, day) of a day counted from 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Splits Unix nanoseconds into (days since the epoch, seconds of the day,
/// microseconds of the second).
fn split(unix_ns: i128) -> (i64, u32, u32) {
    let seconds = unix_ns.div_euclid(NANOS_PER_SECOND);
    let micros = (unix_ns.rem_euclid(NANOS_PER_SECOND) / 1000) as u32;
    let days = i64::try_from(seconds.div_euclid(86_400)).unwrap_or(0);
    (days, seconds.rem_euclid(86_400) as u32, micros)
}

/// RFC 3339 in UTC with microseconds: `2026-11-22T17:32:06.123456Z`.
pub fn rfc3339(unix_ns: i128) -> String {
    let (days, second_of_day, micros) = split(unix_ns);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// The UTC time of day with milliseconds: `17:32:06.123`.
pub fn time_of_day(unix_ns: i128) -> String {
    let (_, second_of_day, micros) = split(unix_ns);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        micros / 1000
    )
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
