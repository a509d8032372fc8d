//! Following a published datapath from another process: the pinned ring buffer
//! read as it fills, each event named with the names of the tables that decided
//! it, and what the reader should be told on the side (`Notice`).
//!
//! Naming, in order, for each wait:
//! 1. drain the ring (every event waiting, each stamped by the kernel);
//! 2. then re-read the names file if it changed, keeping earlier versions: each
//!    version says since when (`FlowNames::tables_since_ns`) its tables decide;
//! 3. name each event with the newest version not younger than the event. So an
//!    event that waited across a table update keeps the old names, and one after
//!    it gets the new ones, whenever the reader happens to wake.
//!
//! Events stamped before the follower opened are skipped (they waited in the ring
//! from before it started, and are no live flows), and counted in a notice.

use std::{
    collections::VecDeque,
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{
    clock::{monotonic_now_ns, WallClock},
    line::FlowLine,
    names::FlowNames,
    publish::{process_alive, read_names, Instance},
    FlowLogError,
};
use crate::{
    causes::causes,
    dataplane::{EventReader, EventsLost, PinnedStats, VerdictRecord},
};

/// How many versions of the names a follower keeps for events that waited
/// across updates.
const NAMES_KEPT: usize = 16;

/// How often the lost-event counters are read.
const LOSS_CHECK: Duration = Duration::from_secs(1);

/// What identifies one version of the names file (a rename makes a new inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified_ns: i64,
    len: u64,
}

/// What one wait gave.
#[derive(Debug)]
pub enum Batch {
    /// The events read, named (possibly none).
    Lines(Vec<FlowLine>),
    /// The owner is gone (its process ended or it removed its pins) and every
    /// event it left has been read.
    OwnerGone,
}

/// Something the reader should know besides the flows (`flows` prints it on
/// stderr, in JSON mode too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Events that waited in the ring from before the follower started, skipped.
    SkippedOld {
        /// How many.
        count: u64,
    },
    /// The names file is gone while the owner runs (its last publish failed):
    /// events are shown unnamed until it publishes again.
    NamesMissing {
        /// The file.
        path: PathBuf,
    },
    /// The names file is back after `NamesMissing`.
    NamesBack,
    /// The datapath could not report some events since the last check.
    EventsLost(EventsLost),
    /// Lost events cannot be watched (the `STATS` pin could not be opened).
    LossUnwatched {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::SkippedOld { count } => write!(
                f,
                "skipped {count} events that were waiting from before flows started"
            ),
            Notice::NamesMissing { path } => write!(
                f,
                "warning: the names file {} is missing (its datapath could not publish \
                 the tables it applied); events are shown without pod and policy names \
                 until it publishes again",
                path.display()
            ),
            Notice::NamesBack => write!(f, "the names file is back; events are named again"),
            Notice::EventsLost(lost) => write!(
                f,
                "warning: the datapath could not report {}; some flows are missing",
                lost.describe()
            ),
            Notice::LossUnwatched { reason } => {
                write!(f, "warning: lost events cannot be watched: {reason}")
            }
        }
    }
}

/// The lost-event counters of the followed datapath and when they were last read.
struct LossWatch {
    stats: PinnedStats,
    last: EventsLost,
    checked: Instant,
}

/// A reader of one published instance. Reading consumes the events: another
/// reader of the same instance does not see them.
pub struct Follower {
    names_file: PathBuf,
    /// Versions of the names read, oldest first, at most `NAMES_KEPT`.
    versions: VecDeque<FlowNames>,
    /// The names file is gone while the owner runs; events are named with
    /// `unnamed`.
    names_missing: bool,
    unnamed: FlowNames,
    stamp: Option<Stamp>,
    reader: EventReader,
    loss: Option<LossWatch>,
    clock: WallClock,
    /// `CLOCK_MONOTONIC` ns at open: older events are skipped.
    started_ns: u64,
    notices: Vec<Notice>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: meta.ino(),
        modified_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        len: meta.len(),
    })
}

/// The version of `versions` (oldest first) that names an event stamped
/// `timestamp_ns`: the newest whose tables decided from that moment or before;
/// the oldest when the event predates them all.
fn version_for(versions: &VecDeque<FlowNames>, timestamp_ns: u64) -> Option<&FlowNames> {
    versions
        .iter()
        .rev()
        .find(|names| names.tables_since_ns <= timestamp_ns)
        .or_else(|| versions.front())
}

impl Follower {
    /// Opens `instance`'s names, its pinned ring buffer and (to watch for lost
    /// events) its pinned `STATS`.
    pub fn open(instance: &Instance) -> Result<Self, FlowLogError> {
        let stamp = stamp(&instance.names_file);
        let names = read_names(&instance.names_file)?;
        let reader = EventReader::open_pinned(&names.events_pin)?;
        let mut notices = Vec::new();
        let loss = match PinnedStats::open(&names.stats_pin)
            .and_then(|stats| stats.events_lost().map(|last| (stats, last)))
        {
            Ok((stats, last)) => Some(LossWatch {
                stats,
                last,
                checked: Instant::now(),
            }),
            Err(error) => {
                notices.push(Notice::LossUnwatched {
                    reason: causes(&error).to_string(),
                });
                None
            }
        };
        let unnamed = FlowNames {
            abi_version: names.abi_version,
            instance: names.instance.clone(),
            pid: names.pid,
            events_pin: names.events_pin.clone(),
            stats_pin: names.stats_pin.clone(),
            ..FlowNames::default()
        };
        Ok(Self {
            names_file: instance.names_file.clone(),
            versions: VecDeque::from([names]),
            names_missing: false,
            unnamed,
            stamp,
            reader,
            loss,
            clock: WallClock::now(),
            started_ns: monotonic_now_ns(),
            notices,
        })
    }

    /// The newest names read.
    pub fn names(&self) -> &FlowNames {
        self.versions.back().unwrap_or(&self.unnamed)
    }

    /// What the reader should be told since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Re-reads the names file if it changed, keeping the version it replaces.
    fn refresh(&mut self) {
        let now = stamp(&self.names_file);
        if now.is_none() {
            if !self.names_missing {
                self.names_missing = true;
                self.notices.push(Notice::NamesMissing {
                    path: self.names_file.clone(),
                });
            }
            return;
        }
        if now == self.stamp && !self.names_missing {
            return;
        }
        // A file caught mid-replace keeps the old names until the next try.
        if let Ok(names) = read_names(&self.names_file) {
            if self.names_missing {
                self.names_missing = false;
                self.notices.push(Notice::NamesBack);
            }
            self.versions.push_back(names);
            if self.versions.len() > NAMES_KEPT {
                self.versions.pop_front();
            }
            self.stamp = now;
        }
    }

    /// Whether the owner still publishes: its process runs and its ring is pinned.
    fn owner_present(&self) -> bool {
        let names = self.names();
        process_alive(names.pid) && names.events_pin.exists()
    }

    /// Reads the lost-event counters if it is time, noting a rise.
    fn check_loss(&mut self) {
        let Some(watch) = &mut self.loss else {
            return;
        };
        if watch.checked.elapsed() < LOSS_CHECK {
            return;
        }
        watch.checked = Instant::now();
        // A failed read (the owner just went away) is retried at the next check.
        if let Ok(now) = watch.stats.events_lost() {
            let lost = now.since(watch.last);
            watch.last = now;
            if lost.any() {
                self.notices.push(Notice::EventsLost(lost));
            }
        }
    }

    /// Names `record`, or `None` for an event from before the follower started.
    fn name(&self, record: &VerdictRecord) -> Option<FlowLine> {
        if record.timestamp_ns < self.started_ns {
            return None;
        }
        let names = if self.names_missing {
            &self.unnamed
        } else {
            version_for(&self.versions, record.timestamp_ns).unwrap_or(&self.unnamed)
        };
        Some(FlowLine::name(record, names, self.clock))
    }

    /// Waits up to `timeout` for events (a signal ends the wait early) and names
    /// every event waiting (see the module doc for the order).
    pub fn next_batch(&mut self, timeout: Duration) -> Result<Batch, FlowLogError> {
        self.reader.wait(timeout)?;
        let records = self.reader.drain();
        self.refresh();
        self.check_loss();
        if records.is_empty() && !self.owner_present() {
            return Ok(Batch::OwnerGone);
        }
        let lines: Vec<FlowLine> = records.iter().filter_map(|r| self.name(r)).collect();
        let skipped = (records.len() - lines.len()) as u64;
        if skipped > 0 {
            self.notices.push(Notice::SkippedOld { count: skipped });
        }
        Ok(Batch::Lines(lines))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(since: u64, policy: &str) -> FlowNames {
        FlowNames {
            tables_since_ns: since,
            policies: vec![policy.into()],
            ..FlowNames::default()
        }
    }

    fn named(versions: &VecDeque<FlowNames>, timestamp_ns: u64) -> Option<String> {
        version_for(versions, timestamp_ns).map(|names| names.policy(0))
    }

    #[test]
    fn an_event_is_named_with_the_tables_that_decided_it() {
        let versions = VecDeque::from([version(10, "old"), version(20, "new")]);
        assert_eq!(named(&versions, 19).as_deref(), Some("old"));
        assert_eq!(named(&versions, 20).as_deref(), Some("new"));
        assert_eq!(named(&versions, 25).as_deref(), Some("new"));
        // Older than every version kept: the oldest is the best guess.
        assert_eq!(named(&versions, 5).as_deref(), Some("old"));
        assert_eq!(named(&VecDeque::new(), 5), None);
    }

    #[test]
    fn notices_say_what_happened_on_one_line() {
        let lost = Notice::EventsLost(EventsLost {
            rate_limited: 2,
            endpoint_limited: 1,
            ring_full: 5,
        });
        assert_eq!(
            lost.to_string(),
            "warning: the datapath could not report 8 events (2 held back by the rate \
             limit, 1 by per-pod limits, 5 for a full ring buffer); some flows are missing"
        );
        assert_eq!(
            Notice::SkippedOld { count: 3 }.to_string(),
            "skipped 3 events that were waiting from before flows started"
        );
        let missing = Notice::NamesMissing {
            path: "/run/podwall/v4/x/names.json".into(),
        }
        .to_string();
        assert!(
            missing.contains("/run/podwall/v4/x/names.json is missing") && !missing.contains('\n'),
            "{missing}"
        );
    }
}
