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
use crate::dataplane::{ConntrackSweeper, InterfaceIndex};

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

/// Whether a sweep is due `since` the last one: every `SWEEP_EVERY`, and every
/// `SWEEP_PRESSED_EVERY` while `pressed` says the table is short of room (asked
/// only then).
fn due(since: Duration, pressed: impl FnOnce() -> bool) -> bool {
    since >= SWEEP_EVERY || (since >= SWEEP_PRESSED_EVERY && pressed())
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
            let mut last = Instant::now();
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECK_EVERY) {
                // A failed read of the counts is no pressure: the regular sweep
                // reports what fails.
                if !due(last.elapsed(), || sweeper.pressed().unwrap_or(false)) {
                    continue;
                }
                last = Instant::now();
                match sweeper.sweep(&gone) {
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
    fn a_sweep_is_due_every_sweep_every_and_sooner_only_under_pressure() {
        let second = Duration::from_secs(1);
        assert!(!due(SWEEP_EVERY - second, || false));
        assert!(due(SWEEP_EVERY, || false));
        assert!(due(SWEEP_PRESSED_EVERY, || true));
        assert!(!due(SWEEP_PRESSED_EVERY - second, || true));
        // Pressure is asked only once a pressed sweep could be due.
        assert!(!due(SWEEP_PRESSED_EVERY - second, || panic!("asked")));
        assert!(SWEEP_PRESSED_EVERY < SWEEP_EVERY && CHECK_EVERY <= SWEEP_PRESSED_EVERY);
    }
}
