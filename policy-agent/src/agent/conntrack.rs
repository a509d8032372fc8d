//! The conntrack sweep of `policy-agent run`: a thread that removes tracked flows
//! idle past their timeout every `SWEEP_EVERY` (`dataplane::ConntrackSweeper`).
//! The classifiers never remove an entry (nothing evicts a live flow), so without
//! the sweep the table and each pod's count of flows would only grow.

use std::{
    sync::{mpsc, Arc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::metrics::Metrics;
use crate::causes::causes;
use crate::dataplane::{ConntrackSweeper, InterfaceIndex, SweepReport};

/// How often the sweep runs: an expired entry holds its place (and its pod's
/// count) at most this much past its timeout, unless the table is short of room.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// How often the sweep runs while the table is short of room
/// (`ConntrackSweeper::pressed`: a pod holds half its limit of flows, or all
/// together half the table): a pod opening connections fast then gets the room
/// of its closed flows back about this long after they expire, not up to
/// `SWEEP_EVERY`.
pub const SWEEP_PRESSED_EVERY: Duration = Duration::from_secs(2);

/// How often the thread asks whether the table is short of room: one read of the
/// per-interface counts (`CT_TRACKED`, `CT_RECLAIMED`), not of the table.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A sooner sweep is made only while the sweep before it reclaimed at least one
/// in this many of the entries it read: each reads the whole table from user
/// space (about 2 us an entry on the project's VM: 64 ms for 32,768 live
/// entries, 126 ms when all expired), so a table that is short of room because
/// it holds that many live flows is swept every `SWEEP_EVERY` only. Cilium
/// likewise shortens its conntrack GC interval only while runs delete much.
const PAYS_ONE_IN: usize = 8;

/// Whether a sweep that did `report` reclaimed enough to make the next one
/// sooner when the table is short of room (`PAYS_ONE_IN`).
fn paid(report: &SweepReport) -> bool {
    report.reclaimed.saturating_mul(PAYS_ONE_IN) >= report.entries
}

/// Whether a sweep is due `since` the last one: every `SWEEP_EVERY`, and every
/// `SWEEP_PRESSED_EVERY` while the last one `paid` and `pressed` says the table
/// is short of room (asked only then).
fn due(since: Duration, paid: bool, pressed: impl FnOnce() -> bool) -> bool {
    since >= SWEEP_EVERY || (since >= SWEEP_PRESSED_EVERY && paid && pressed())
}

/// The running sweep; dropping it stops the thread and waits for it.
pub struct Sweep {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Whether interface `ifindex` is gone from this network namespace.
fn gone_here(ifindex: InterfaceIndex) -> bool {
    nix::net::if_::if_indextoname(ifindex).is_err()
}

/// Starts sweeping with `sweeper` every `SWEEP_EVERY` (every `SWEEP_PRESSED_EVERY`
/// while the table is short of room); an interface is gone when
/// this network namespace no longer has it. A failed sweep is logged and counted
/// (`conntrack_sweep`) and tried again at the next one.
pub fn start(sweeper: ConntrackSweeper, metrics: Arc<Metrics>) -> std::io::Result<Sweep> {
    start_with(sweeper, gone_here, metrics)
}

/// Starts sweeping as `start` does, with `gone` telling which interfaces are gone
/// (a lab's pod veths live in its node namespaces, not in the caller's).
pub fn start_with(
    mut sweeper: ConntrackSweeper,
    gone: impl Fn(InterfaceIndex) -> bool + Send + 'static,
    metrics: Arc<Metrics>,
) -> std::io::Result<Sweep> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("podwall-ct-sweep".into())
        .spawn(move || {
            let (mut last, mut last_paid) = (Instant::now(), true);
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECK_EVERY) {
                // A failed read of the counts is no pressure: the regular sweep
                // reports what fails.
                let pressed = || sweeper.pressed().unwrap_or(false);
                if !due(last.elapsed(), last_paid, pressed) {
                    continue;
                }
                last = Instant::now();
                let swept = sweeper.sweep(&gone);
                last_paid = swept.as_ref().is_ok_and(paid);
                match swept {
                    Ok(report) => tracing::debug!(
                        entries = report.entries,
                        reclaimed = report.reclaimed,
                        counters_removed = report.counters_removed,
                        "conntrack swept"
                    ),
                    Err(error) => {
                        tracing::warn!(error = %causes(&error), "conntrack sweep failed; tried again in {SWEEP_EVERY:?}");
                        metrics.error("conntrack_sweep");
                    }
                }
            }
        })?;
    Ok(Sweep {
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl Drop for Sweep {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_due_every_sweep_every_and_sooner_only_under_pressure_while_it_pays() {
        let second = Duration::from_secs(1);
        assert!(!due(SWEEP_EVERY - second, true, || false));
        assert!(due(SWEEP_EVERY, true, || false));
        assert!(due(SWEEP_EVERY, false, || false));
        assert!(due(SWEEP_PRESSED_EVERY, true, || true));
        assert!(
            !due(SWEEP_PRESSED_EVERY, false, || true),
            "the last one paid nothing"
        );
        assert!(!due(SWEEP_PRESSED_EVERY - second, true, || true));
        // Pressure is asked only once a pressed sweep could be due.
        assert!(!due(SWEEP_PRESSED_EVERY - second, true, || panic!("asked")));
        assert!(!due(SWEEP_PRESSED_EVERY, false, || panic!("asked")));
        assert!(SWEEP_PRESSED_EVERY < SWEEP_EVERY && CHECK_EVERY <= SWEEP_PRESSED_EVERY);
    }

    #[test]
    fn a_sweep_pays_when_it_reclaims_an_eighth_of_what_it_read() {
        let report = |entries, reclaimed| SweepReport {
            entries,
            reclaimed,
            counters_removed: 0,
        };
        assert!(paid(&report(800, 100)));
        assert!(!paid(&report(800, 99)));
        assert!(paid(&report(0, 0)), "an empty table");
        assert!(!paid(&report(262_144, 0)), "a table of live flows");
    }
}
