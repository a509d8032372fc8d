//! The loop that drives a `Syncer`: source snapshots, link events and a ticker
//! in, passes out, with the compile of a pass off the loop's task so a new pod
//! veth is attached within milliseconds even while a large compile runs.
//!
//! - At most one compile is in flight (`spawn_blocking`). Snapshots, link events
//!   and retries that want a pass meanwhile only mark one as wanted: when the
//!   compile is done its tables are written (they are newer than what the maps
//!   hold), then one pass starts on the newest snapshot. Intermediate snapshots
//!   are never compiled.
//! - The loop's task is the maps' one writer: the compiling thread gets only
//!   pure data (`CompileJob`), and `Syncer::finish` and the link events' pending
//!   entries (`Syncer::link_event`) take turns on the loop.
//! - A shutdown while a compile runs writes nothing more; the compile's result is
//!   dropped and the pinned state keeps enforcing.
//! - Link events go first: the loop waits on its inputs in a fixed order
//!   (`biased`), link events before a compile's result, and a pass begins (plan:
//!   netlink reads) and the counters are read only when no link event is ready.
//!   So a new pod veth that appears while a pass is written waits for the rest of
//!   that write, never for the next plan or the counters. A burst does not starve
//!   the rest: after `LINK_STREAK` link events in a row, whatever else is ready
//!   goes once (a finished compile's write, a tick, a plan, the counters) before
//!   the next link event; when nothing else is, the link events go on at once.

use std::future::Future;

use tokio::{
    sync::watch,
    task::{JoinError, JoinHandle},
    time::MissedTickBehavior,
};

use super::{compile::Compiled, pass::Planned, SyncError, Syncer, COUNTERS_EVERY, TICK};
use crate::{
    agent::dataplane::Dataplane,
    causes::causes,
    node::{LinkEvent, LinkWatch, NodeError},
    source::api_server::SourceSnapshot,
};

/// Link events the loop takes in a row before it lets anything else that is
/// ready go once: each attach waits out a kernel grace period (about 24 ms), so a
/// burst of hundreds of new veths would otherwise hold a finished compile's write
/// and the ticks for seconds.
pub(super) const LINK_STREAK: usize = 8;

/// Where the loop's link events come from: `LinkWatch`, or a channel in the
/// loop's unit tests.
pub trait LinkEvents {
    /// The next link event (`LinkWatch::next`).
    fn next(&mut self) -> impl Future<Output = Result<LinkEvent, NodeError>>;
}

impl LinkEvents for LinkWatch {
    fn next(&mut self) -> impl Future<Output = Result<LinkEvent, NodeError>> {
        LinkWatch::next(self)
    }
}

/// A pass whose compile runs on the blocking pool.
struct InFlight {
    planned: Planned,
    compile: JoinHandle<Compiled>,
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Snapshot {
        closed: bool,
    },
    Link(Result<LinkEvent, NodeError>),
    Tick,
    Compiled(Box<Result<Compiled, JoinError>>),
    /// A pass is wanted and none is in flight: plan it and start its compile.
    Begin,
    /// The counters are owed since the last write (`Syncer::counters_due`).
    Counters,
    /// `LINK_STREAK` link events in a row and nothing else was ready.
    StreakEnd,
}

/// The result of the compile in flight; never completes without one.
async fn compiled(in_flight: &mut Option<InFlight>) -> Result<Compiled, JoinError> {
    match in_flight {
        Some(in_flight) => (&mut in_flight.compile).await,
        None => std::future::pending().await,
    }
}

/// Runs passes until `shutdown` completes: on every source change, on link events
/// that concern pod interfaces, and on ticks when a retry is due. Returns the
/// syncer (the pinned datapath keeps enforcing what it last wrote).
pub async fn run<D: Dataplane, L: LinkEvents>(
    mut syncer: Syncer<D>,
    mut snapshots: watch::Receiver<SourceSnapshot>,
    mut links: L,
    shutdown: impl Future<Output = ()>,
) -> Syncer<D> {
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut source_open = true;
    let mut in_flight: Option<InFlight> = None;
    let mut wanted = false;
    let mut links_paused = false;
    let mut link_streak = 0;
    loop {
        let begin = wanted && in_flight.is_none();
        let counters = syncer.counters_due();
        let streak_full = link_streak >= LINK_STREAK;
        let wake = tokio::select! {
            // In this order: a new pod veth never waits for a plan, a write or
            // the counters that could wait for it.
            biased;
            () = &mut shutdown => Wake::Shutdown,
            event = links.next(), if !links_paused && !streak_full => Wake::Link(event),
            result = compiled(&mut in_flight) => Wake::Compiled(Box::new(result)),
            changed = snapshots.changed(), if source_open => Wake::Snapshot { closed: changed.is_err() },
            _ = ticker.tick() => Wake::Tick,
            () = std::future::ready(()), if begin => Wake::Begin,
            () = std::future::ready(()), if counters => Wake::Counters,
            // Last: a full streak with nothing else ready goes on at once.
            () = std::future::ready(()), if streak_full => Wake::StreakEnd,
        };
        link_streak = match wake {
            Wake::Link(_) => link_streak + 1,
            _ => 0,
        };
        match wake {
            Wake::Shutdown => break,
            Wake::Compiled(result) => {
                if let Some(done) = in_flight.take() {
                    let result = finish(&mut syncer, done.planned, *result);
                    log_failure(&syncer, result);
                }
            }
            Wake::Snapshot { closed } => {
                if closed {
                    // Nothing new behind a closed source: its last snapshot was seen.
                    tracing::error!("the API server source stopped; enforcing the last state");
                    source_open = false;
                } else {
                    wanted = true;
                }
            }
            Wake::Link(Ok(event)) => wanted |= syncer.link_event(event),
            Wake::Link(Err(error)) => {
                tracing::warn!(error = %causes(&error), "link watch");
                syncer.metrics.error(error.kind());
                // Asked again at the next tick: a watch that keeps failing
                // must not starve the passes it goes before.
                links_paused = true;
            }
            Wake::Tick => {
                links_paused = false;
                syncer.health.tick();
                if syncer.counters_read.elapsed() >= COUNTERS_EVERY {
                    syncer.refresh_counters();
                }
                wanted |= syncer.wants_retry();
            }
            Wake::Begin => {
                wanted = false;
                let snapshot = snapshots.borrow_and_update().clone();
                match syncer.begin(&snapshot) {
                    Ok(Some(planned)) => {
                        let (job, compiler) = (planned.job(), syncer.compiler.clone());
                        let compile = tokio::task::spawn_blocking(move || compiler(&job));
                        in_flight = Some(InFlight { planned, compile });
                    }
                    Ok(None) => {}
                    Err(error) => log_failure(&syncer, Err(error)),
                }
            }
            Wake::Counters => syncer.refresh_counters(),
            Wake::StreakEnd => {}
        }
    }
    if in_flight.is_some() {
        tracing::info!("stopping with a compile in flight; its tables are not written");
    }
    tracing::info!("stopping; the pinned datapath keeps enforcing");
    syncer
}

/// Writes a compile's tables, or fails the pass if the compile did not finish
/// (it panicked).
fn finish<D: Dataplane>(
    syncer: &mut Syncer<D>,
    planned: Planned,
    compiled: Result<Compiled, JoinError>,
) -> Result<(), SyncError> {
    match compiled {
        Ok(compiled) => syncer.finish(planned, compiled),
        Err(source) => Err(syncer.failed(SyncError::Compile(source))),
    }
}

/// Logs and counts a failed pass.
fn log_failure<D: Dataplane>(syncer: &Syncer<D>, result: Result<(), SyncError>) {
    if let Err(error) = result {
        tracing::error!(error = %causes(&error), kind = error.kind(), "sync failed; the previous state keeps enforcing");
        syncer.metrics.error(error.kind());
    }
}
