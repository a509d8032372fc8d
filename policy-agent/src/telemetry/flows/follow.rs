//! Following a published datapath from another process: the pinned ring buffer
//! read as it fills, each event named with the names file current at that moment
//! (re-read whenever its owner rewrites it).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    clock::WallClock,
    line::FlowLine,
    names::FlowNames,
    publish::{process_alive, read_names, Instance},
    FlowLogError,
};
use crate::dataplane::EventReader;

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
    /// The owner is gone (its process ended or it removed its names) and every
    /// event it left has been read.
    OwnerGone,
}

/// A reader of one published instance. Reading consumes the events: another
/// reader of the same instance does not see them.
pub struct Follower {
    names_file: PathBuf,
    names: FlowNames,
    stamp: Option<Stamp>,
    reader: EventReader,
    clock: WallClock,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: meta.ino(),
        modified_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        len: meta.len(),
    })
}

impl Follower {
    /// Opens `instance`'s names and its pinned ring buffer.
    pub fn open(instance: &Instance) -> Result<Self, FlowLogError> {
        let stamp = stamp(&instance.names_file);
        let names = read_names(&instance.names_file)?;
        let reader = EventReader::open_pinned(&names.events_pin)?;
        Ok(Self {
            names_file: instance.names_file.clone(),
            names,
            stamp,
            reader,
            clock: WallClock::now(),
        })
    }

    /// The names in use.
    pub fn names(&self) -> &FlowNames {
        &self.names
    }

    /// Re-reads the names file if it changed; false if it is gone.
    fn refresh(&mut self) -> bool {
        let now = stamp(&self.names_file);
        if now.is_none() {
            return false;
        }
        if now != self.stamp {
            // A file caught mid-replace keeps the old names until the next try.
            if let Ok(names) = read_names(&self.names_file) {
                self.names = names;
                self.stamp = now;
            }
        }
        true
    }

    /// Waits up to `timeout` for events (a signal ends the wait early) and names
    /// every event waiting.
    pub fn next_batch(&mut self, timeout: Duration) -> Result<Batch, FlowLogError> {
        self.reader.wait(timeout)?;
        let present = self.refresh();
        let owner_alive = process_alive(self.names.pid);
        let records = self.reader.drain();
        if records.is_empty() && (!present || !owner_alive) {
            return Ok(Batch::OwnerGone);
        }
        Ok(Batch::Lines(
            records
                .iter()
                .map(|record| FlowLine::name(record, &self.names, self.clock))
                .collect(),
        ))
    }
}
