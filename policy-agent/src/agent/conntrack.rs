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

/// A sooner sweep waits at least this many times as long as the last sweep took,
/// counted from its end: each reads the whole table from user space (about 2 us
/// an entry on the project's VM: 64 ms for 32,768 live entries, 126 ms when all
/// expired, so about 0.5-1 s for a full table), so sweeping under pressure takes
/// at most about an eighth of one core, however full the table and however
/// many of its entries are live.
const DUTY_ONE_IN: u32 = 8;

/// How long after the end of a sweep that took `took` (`None`: it failed) a
/// sooner sweep may follow: `SWEEP_PRESSED_EVERY`, or `DUTY_ONE_IN` times what
/// it took when that is longer; after a failure, not before `SWEEP_EVERY`.
fn sooner_after(took: Option<Duration>) -> Duration {
    match took {
        Some(took) => SWEEP_PRESSED_EVERY.max(took.saturating_mul(DUTY_ONE_IN)),
        None => SWEEP_EVERY,
    }
}

/// Whether a sweep is due `since` the end of the last one: every `SWEEP_EVERY`,
/// and from `sooner` on (`sooner_after`) while `pressed` says the table is short
/// of room (asked only then).
fn due(since: Duration, sooner: Duration, pressed: impl FnOnce() -> bool) -> bool {
    since >= SWEEP_EVERY || (since >= sooner && pressed())
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
            let (mut ended, mut sooner) = (Instant::now(), SWEEP_PRESSED_EVERY);
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECK_EVERY) {
                // A failed read of the counts is no pressure: the regular sweep
                // reports what fails.
                let pressed = || sweeper.pressed().unwrap_or(false);
                if !due(ended.elapsed(), sooner, pressed) {
                    continue;
                }
                let began = Instant::now();
                let swept = sweeper.sweep(&gone);
                ended = Instant::now();
                sooner = sooner_after(swept.is_ok().then(|| ended - began));
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
    fn a_sweep_is_due_every_sweep_every_and_sooner_only_under_pressure() {
        let second = Duration::from_secs(1);
        let sooner = SWEEP_PRESSED_EVERY;
        assert!(!due(SWEEP_EVERY - second, sooner, || false));
        assert!(due(SWEEP_EVERY, sooner, || false));
        assert!(due(SWEEP_EVERY, SWEEP_EVERY * 2, || false));
        assert!(due(sooner, sooner, || true));
        assert!(!due(sooner - second, sooner, || true));
        // Pressure is asked only once a sooner sweep could be due.
        assert!(!due(sooner - second, sooner, || panic!("asked")));
        assert!(SWEEP_PRESSED_EVERY < SWEEP_EVERY && CHECK_EVERY <= SWEEP_PRESSED_EVERY);
    }

    #[test]
    fn a_sooner_sweep_waits_eight_times_what_the_last_took_and_a_failed_one_the_full_interval() {
        let ms = Duration::from_millis;
        assert_eq!(sooner_after(Some(ms(10))), SWEEP_PRESSED_EVERY);
        assert_eq!(sooner_after(Some(ms(250))), SWEEP_PRESSED_EVERY);
        assert_eq!(sooner_after(Some(ms(600))), ms(4800), "a full table");
        assert_eq!(sooner_after(None), SWEEP_EVERY);
    }
}
