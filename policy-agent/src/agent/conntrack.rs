//! The conntrack sweep of `policy-agent run`: a thread that removes tracked flows
//! idle past their timeout every `SWEEP_EVERY` (`dataplane::ConntrackSweeper`).
//! The classifiers never remove an entry (nothing evicts a live flow), so without
//! the sweep the table and each pod's count of flows would only grow.

use std::{
    sync::{mpsc, Arc},
    thread::JoinHandle,
    time::Duration,
};

use super::metrics::Metrics;
use crate::causes::causes;
use crate::dataplane::{ConntrackSweeper, InterfaceIndex};

/// How often the sweep runs: an expired entry holds its place (and its pod's
/// count) at most this much past its timeout.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The running sweep; dropping it stops the thread and waits for it.
pub struct Sweep {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Whether interface `ifindex` is gone from this network namespace.
fn gone_here(ifindex: InterfaceIndex) -> bool {
    nix::net::if_::if_indextoname(ifindex).is_err()
}

/// Starts sweeping with `sweeper` every `SWEEP_EVERY`; an interface is gone when
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
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(SWEEP_EVERY) {
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
