//! Waiting until no classifier run still uses the bank `ACTIVE` just left.
//!
//! The kernel offers no "wait for BPF programs" call, but updating an element of a
//! map-in-map from userspace makes it call `synchronize_rcu()` before the syscall
//! returns (`maybe_wait_bpf_programs` in `kernel/bpf/syscall.c`): every program run
//! that started before the update has finished by then. TC classifiers run inside
//! an RCU read-side section, so after that call no packet that read the old
//! `ACTIVE` value is still being decided.
//!
//! A grace period takes milliseconds (on the test machine 8 ms at the median, up
//! to 100 ms), far longer than writing a few entries, so it is not waited for in
//! line: `start`, right after a flip, runs the update on a thread of its own, and
//! `finish`, before the next write into the bank left, joins it, which by then has
//! usually returned. Neither flip is delayed by the other's wait. After adoption
//! the same wait tells when the programs the agent before ran are done
//! (`Banks::adopt`).
//!
//! aya 0.14 cannot create a map-of-maps on its own (its constructor with an inner
//! map is crate-private), so the outer `BPF_MAP_TYPE_ARRAY_OF_MAPS` comes from one
//! raw `bpf(BPF_MAP_CREATE)` call (`sys.rs`). Both maps belong to this process
//! alone; no program uses them.

use crate::causes::causes;
use std::{
    os::fd::{AsFd, AsRawFd},
    thread::JoinHandle,
};

use aya::{
    maps::{Array, ArrayOfMaps, IterableMap, Map, MapData, MapError},
    sys::SyscallError,
};

use super::DataplaneError;

/// Name of the outer map (kernel object names are at most 15 bytes).
pub(super) const QUIESCE_MAP: &str = "pw_quiesce";

/// The map-in-map whose update waits for running programs.
struct Waiter {
    outer: ArrayOfMaps<MapData, Array<MapData, u32>>,
    inner: Array<MapData, u32>,
}

/// A wait running on its own thread: gives the waiter back with its result.
type Running = JoinHandle<(Waiter, Result<(), DataplaneError>)>;

/// The grace-period wait after each flip, run in the background.
pub(super) struct Quiesce {
    /// The waiter, while no wait runs.
    idle: Option<Waiter>,
    /// The wait started by the last `start`, until `finish` joins it.
    running: Option<Running>,
    /// A flip has no completed wait yet (its background wait failed or could not
    /// start): `finish` waits in line.
    pending: bool,
    /// Makes a waiter when there is none (`Waiter::new`; tests make it fail).
    make_waiter: fn() -> Result<Waiter, DataplaneError>,
}

fn map_op(operation: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::MapOp {
        map: QUIESCE_MAP,
        operation,
        source: Box::new(source),
    }
}

impl Waiter {
    fn new() -> Result<Self, DataplaneError> {
        let inner = Array::<MapData, u32>::create(1, 0).map_err(map_op("create the inner map"))?;
        let inner_fd = inner.map().fd().as_fd().as_raw_fd();
        let outer =
            super::sys::create_array_of_maps(QUIESCE_MAP, inner_fd).map_err(|io_error| {
                map_op("create")(MapError::SyscallError(SyscallError {
                    call: "BPF_MAP_CREATE",
                    io_error,
                }))
            })?;
        let data = MapData::from_fd(outer).map_err(map_op("open"))?;
        let map = Map::from_map_data(data).map_err(map_op("open"))?;
        let outer = ArrayOfMaps::try_from(map).map_err(map_op("open as an array of maps"))?;
        Ok(Self { outer, inner })
    }

    /// Returns once every classifier run that started before the call has ended.
    fn wait(&mut self) -> Result<(), DataplaneError> {
        self.outer
            .set(0, &self.inner, 0)
            .map_err(map_op("wait for running programs"))
    }
}

/// One grace period waited in line and timed: the `synchronize_rcu()` a TCX
/// attach also waits, without its `rtnl_lock` (benchmarks only).
#[cfg(feature = "testing")]
pub struct GracePeriod(Waiter);

#[cfg(feature = "testing")]
impl GracePeriod {
    /// Creates the maps.
    pub fn new() -> Result<Self, DataplaneError> {
        Ok(Self(Waiter::new()?))
    }

    /// Waits one grace period; how long it took.
    pub fn wait(&mut self) -> Result<std::time::Duration, DataplaneError> {
        let started = std::time::Instant::now();
        self.0.wait()?;
        Ok(started.elapsed())
    }
}

impl Quiesce {
    /// Creates the maps; no wait is owed yet.
    pub fn new() -> Result<Self, DataplaneError> {
        Ok(Self {
            idle: Some(Waiter::new()?),
            running: None,
            pending: false,
            make_waiter: Waiter::new,
        })
    }

    /// Starts waiting for the programs running now (call it right after a flip).
    pub fn start(&mut self) {
        let Some(mut waiter) = self.idle.take() else {
            // A wait runs already: it cannot cover runs that started after it, so
            // the next `finish` also waits in line.
            self.pending = true;
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("podwall-quiesce".into())
            .spawn(move || {
                let result = waiter.wait();
                (waiter, result)
            });
        match spawned {
            Ok(running) => self.running = Some(running),
            Err(error) => {
                tracing::debug!(error = %causes(&error), "no thread for the grace-period wait: it runs in line");
                self.pending = true;
            }
        }
    }

    /// Returns once every program run that started before the last `start` has
    /// ended (at once if that wait already returned). An error leaves the wait
    /// owed: until a call returns `Ok`, each one waits again.
    pub fn finish(&mut self) -> Result<(), DataplaneError> {
        if let Some(running) = self.running.take() {
            match running.join() {
                Ok((waiter, result)) => {
                    self.idle = Some(waiter);
                    if let Err(error) = result {
                        self.pending = true;
                        return Err(error);
                    }
                }
                // The thread panicked with the waiter: the wait is owed before
                // anything else can fail, and the in-line wait below makes a new
                // waiter.
                Err(_) => self.pending = true,
            }
        }
        if self.pending {
            let waiter = match self.idle.as_mut() {
                Some(waiter) => waiter,
                None => self.idle.insert((self.make_waiter)()?),
            };
            waiter.wait()?;
            self.pending = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_waiter() -> Result<Waiter, DataplaneError> {
        Err(DataplaneError::Map {
            map: QUIESCE_MAP,
            what: "no waiter in this test".into(),
            source: None,
        })
    }

    #[test]
    fn a_wait_that_panicked_stays_owed_while_no_waiter_can_be_made() {
        let running: Running = std::thread::spawn(|| panic!("the wait panicked (on purpose)"));
        let mut quiesce = Quiesce {
            idle: None,
            running: Some(running),
            pending: false,
            make_waiter: no_waiter,
        };
        assert!(quiesce.finish().is_err());
        // A write after this `finish` would reuse the bank just left with no
        // grace period over.
        assert!(
            quiesce.finish().is_err(),
            "finish returned Ok without a completed wait"
        );
        assert!(quiesce.pending);
    }
}
