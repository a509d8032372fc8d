//! Link events while a pass compiles: the running loop (`run`) against the fake
//! datapath, with a compile the test holds at a gate, so "while the compile
//! runs" is a fact of the test, not a timing. Every wait has a hang guard (a
//! broken loop fails the test instead of hanging it); no assertion is a timing.

use std::{
    future::Future,
    sync::{mpsc as std_mpsc, Mutex},
    time::Instant,
};

use tokio::sync::{oneshot, watch};

use super::*;
use crate::{
    agent::sync::{driver::LINK_STREAK, run, CompileJob, Compiler, LinkEvents},
    node::NodeError,
};

/// How long a test waits for what must happen before it calls the loop stuck.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Link events from the test.
struct Links(mpsc::UnboundedReceiver<LinkEvent>);

impl LinkEvents for Links {
    async fn next(&mut self) -> Result<LinkEvent, NodeError> {
        match self.0.recv().await {
            Some(event) => Ok(event),
            None => std::future::pending().await,
        }
    }
}

/// The test's hold on the compiles of a gated compiler.
struct Gate {
    /// The pod count of each compile's state, as it starts.
    started: mpsc::UnboundedReceiver<usize>,
    /// One message lets one compile through; dropping the gate lets all through.
    release: std_mpsc::Sender<()>,
}

impl Gate {
    /// The pod count of the next compile to start.
    async fn next_start(&mut self) -> usize {
        guarded(self.started.recv(), "a compile to start")
            .await
            .unwrap_or_else(|| panic!("the compiler is gone"))
    }

    fn release_one(&self) {
        self.release
            .send(())
            .unwrap_or_else(|_| panic!("the compile thread is gone"));
    }
}

/// A compiler that announces each compile and waits at the gate before it
/// compiles (`CompileJob::compile`).
fn gated() -> (Compiler, Gate) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let (release, release_rx) = std_mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let compiler: Compiler = Arc::new(move |job: &CompileJob| {
        let _ = started_tx.send(job.state.pods.len());
        if let Ok(gate) = release_rx.lock() {
            if let Err(std_mpsc::RecvTimeoutError::Timeout) = gate.recv_timeout(HANG_GUARD) {
                panic!("the test never opened the compile gate");
            }
        }
        job.compile().into()
    });
    (compiler, Gate { started, release })
}

async fn guarded<T>(future: impl Future<Output = T>, what: &str) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("the loop is stuck: waited for {what}"))
}

/// The fake's calls as they happen, up to and including `last`.
async fn calls_until(calls: &mut mpsc::UnboundedReceiver<String>, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some(last) {
        let call = guarded(calls.recv(), last).await;
        seen.push(call.unwrap_or_else(|| panic!("the datapath is gone before {last:?}: {seen:?}")));
    }
    seen
}

/// The loop's inputs, held by a test.
struct Inputs {
    snapshots: watch::Sender<SourceSnapshot>,
    links: mpsc::UnboundedSender<LinkEvent>,
}

/// Runs the loop over `syncer` alongside `test`, which gets its inputs; the loop
/// stops when the test is done. Returns the syncer and what the test returned.
async fn with_loop<T, F: Future<Output = T>>(
    syncer: Syncer<Fake>,
    test: impl FnOnce(Inputs) -> F,
) -> (Syncer<Fake>, T) {
    with_loop_on(syncer, mpsc::unbounded_channel(), test).await
}

/// `with_loop` with the link events of `links` (the test may keep more senders).
async fn with_loop_on<T, F: Future<Output = T>>(
    syncer: Syncer<Fake>,
    (links, events): (
        mpsc::UnboundedSender<LinkEvent>,
        mpsc::UnboundedReceiver<LinkEvent>,
    ),
    test: impl FnOnce(Inputs) -> F,
) -> (Syncer<Fake>, T) {
    let (snapshots, receiver) = watch::channel(SourceSnapshot::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let test = async {
        let out = test(Inputs { snapshots, links }).await;
        let _ = stop.send(());
        out
    };
    tokio::join!(run(syncer, receiver, Links(events), shutdown), test)
}

/// `pods` pods, all on another node: nothing left for a retry.
fn cluster_of(pods: usize) -> ClusterState {
    let mut cluster = builders::cluster();
    for i in 0..pods {
        cluster = cluster.pod(
            builders::pod("shop", &format!("web-{i}"))
                .ip(&format!("10.0.1.{}", i + 2))
                .node("node-b")
                .build(),
        );
    }
    cluster.build()
}

/// A syncer over the fake knowing `links`, which may attach `pwt42` too, whose
/// calls are also sent to the returned receiver, compiling at the returned gate.
fn gated_syncer(links: &[Link]) -> (Syncer<Fake>, mpsc::UnboundedReceiver<String>, Gate) {
    let (live, calls) = mpsc::unbounded_channel();
    let mut fake = with_indexes(links);
    fake.indexes.insert("pwt42".into(), 42);
    fake.live = Some(live);
    let mut syncer = syncer(fake, links);
    let (compiler, gate) = gated();
    syncer.compiler = compiler;
    (syncer, calls, gate)
}

#[tokio::test]
async fn a_veth_appearing_during_a_compile_is_attached_before_it_ends_and_keeps_its_entry() {
    let links = [veth(41)];
    let (syncer, mut calls, mut gate) = gated_syncer(&links);
    let (syncer, mut gate) = with_loop(syncer, |inputs| async move {
        let snapshots = &inputs.snapshots;
        snapshots.send_replace(synced(cluster_of(1)));
        assert_eq!(gate.next_start().await, 1);
        let _ = inputs.links.send(LinkEvent::Added(veth(42)));
        assert_eq!(
            calls_until(&mut calls, "attach pwt42").await,
            ["add_unattached [42]", "attach pwt42"],
            "attached as pending on what the datapath enforces, while the compile is held"
        );
        // Two snapshots while the compile is held: one more pass, on the newest.
        snapshots.send_replace(synced(cluster_of(2)));
        snapshots.send_replace(synced(cluster_of(3)));
        gate.release_one();
        assert_eq!(
            calls_until(&mut calls, "apply 0 pods, pending [41, 42]").await,
            ["apply 0 pods, pending [41, 42]"],
            "the pass planned before pwt42 existed keeps its pending entry"
        );
        assert_eq!(
            gate.next_start().await,
            3,
            "the newest snapshot is compiled"
        );
        gate.release_one();
        assert_eq!(
            calls_until(&mut calls, "apply 0 pods, pending [41, 42]").await,
            ["attach pwt41", "apply 0 pods, pending [41, 42]"]
        );
        gate
    })
    .await;
    assert!(
        gate.started.try_recv().is_err(),
        "three snapshots, two compiles"
    );
    assert_eq!(syncer.health.readiness(), Ok(()));
    assert_eq!(
        syncer.datapath.pending.keys().copied().collect::<Vec<_>>(),
        [41, 42]
    );
}

/// The loop's link events: the test's sender and the loop's receiver.
type LinkChannel = (
    mpsc::UnboundedSender<LinkEvent>,
    mpsc::UnboundedReceiver<LinkEvent>,
);

/// A gated syncer over `veth(41)` whose fake records the counters' read, and
/// whose first write sends the link events `during_write` names (new veths).
fn counted_syncer(
    during_write: Vec<InterfaceIndex>,
) -> (
    Syncer<Fake>,
    mpsc::UnboundedReceiver<String>,
    Gate,
    LinkChannel,
) {
    let (mut syncer, calls, gate) = gated_syncer(&[veth(41)]);
    syncer.datapath.record_counters = true;
    // Only the read that follows a write may show in these tests: a periodic
    // read (`COUNTERS_EVERY` after the last) would land wherever a slow machine
    // happens to be when it falls due.
    syncer.counters_read = Instant::now() + Duration::from_secs(3600);
    let (link_events, events) = mpsc::unbounded_channel();
    let sender = link_events.clone();
    syncer.datapath.during_apply = Some(Box::new(move || {
        for index in during_write {
            let _ = sender.send(LinkEvent::Added(veth(index)));
        }
    }));
    (syncer, calls, gate, (link_events, events))
}

#[tokio::test]
async fn a_veth_appearing_while_a_pass_writes_goes_before_the_counters_and_the_next_plan() {
    let (syncer, mut calls, mut gate, (link_events, events)) = counted_syncer(vec![42]);
    let (syncer, gate) = with_loop_on(syncer, (link_events, events), |inputs| async move {
        inputs.snapshots.send_replace(synced(cluster_of(1)));
        assert_eq!(gate.next_start().await, 1);
        // A pass is wanted once this one is written.
        inputs.snapshots.send_replace(synced(cluster_of(2)));
        gate.release_one();
        assert_eq!(
            calls_until(&mut calls, "programs_ahead").await,
            [
                "apply 0 pods, pending [41]",
                "attach pwt41",
                "add_unattached [42]",
                "attach pwt42",
                "programs_ahead",
            ],
            "pwt42 (its RTM_NEWLINK came during the write) is attached before the counters are read"
        );
        assert_eq!(gate.next_start().await, 2);
        gate
    })
    .await;
    drop(gate);
    assert!(
        syncer.attached_since_plan.is_empty(),
        "the next pass was planned after pwt42 was attached: {:?}",
        syncer.attached_since_plan
    );
}

#[tokio::test]
async fn a_burst_of_veths_lets_the_counters_through_after_a_streak() {
    let burst: Vec<InterfaceIndex> = (100..).take(2 * LINK_STREAK + 1).collect();
    let (syncer, mut calls, mut gate, (link_events, events)) = counted_syncer(burst.clone());
    let (_, gate) = with_loop_on(syncer, (link_events, events), |inputs| async move {
        inputs.snapshots.send_replace(synced(cluster_of(1)));
        assert_eq!(gate.next_start().await, 1);
        gate.release_one();
        let seen = calls_until(&mut calls, "programs_ahead").await;
        // After a streak (two, if a tick fell due in the first: it goes once
        // too), never after the whole burst.
        let attached_first = seen.iter().filter(|c| c.starts_with("attach pwt1")).count();
        assert!(
            attached_first >= LINK_STREAK && attached_first < burst.len(),
            "the counters owed since the write go after a streak of the burst, not its end: {seen:?}"
        );
        let last = format!("attach pwt{}", burst[burst.len() - 1]);
        let rest = calls_until(&mut calls, &last).await;
        assert_eq!(
            rest.iter().filter(|c| c.starts_with("attach pwt1")).count(),
            burst.len() - attached_first,
            "then the rest of the burst: {rest:?}"
        );
        gate
    })
    .await;
    drop(gate);
}

/// A link watch that fails at every call.
struct Broken;

impl LinkEvents for Broken {
    async fn next(&mut self) -> Result<LinkEvent, NodeError> {
        Err(NodeError::Socket {
            what: "receive link notifications",
            source: std::io::Error::other("this test's broken watch"),
        })
    }
}

#[tokio::test]
async fn a_link_watch_that_keeps_failing_does_not_starve_the_passes() {
    let (syncer, _calls, mut gate) = gated_syncer(&[veth(41)]);
    let (snapshots, receiver) = watch::channel(SourceSnapshot::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let test = async {
        snapshots.send_replace(synced(cluster_of(1)));
        assert_eq!(gate.next_start().await, 1, "a pass began");
        let _ = stop.send(());
    };
    let (syncer, ()) = tokio::join!(run(syncer, receiver, Broken, shutdown), test);
    drop(gate);
    let metrics = syncer.metrics.encode().unwrap_or_default();
    assert!(
        metrics.contains("podwall_errors_total{kind=\"netlink_socket\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_shutdown_during_a_compile_writes_nothing_more() {
    let links = [veth(41)];
    let (syncer, _calls, mut gate) = gated_syncer(&links);
    let (syncer, gate) = with_loop(syncer, |inputs| async move {
        inputs.snapshots.send_replace(synced(cluster_of(1)));
        assert_eq!(gate.next_start().await, 1);
        gate
    })
    .await;
    drop(gate); // lets the held compile finish, into nowhere
    assert!(
        syncer.datapath.calls.is_empty(),
        "{:?}",
        syncer.datapath.calls
    );
    assert!(syncer.health.readiness().is_err(), "never programmed");
}

#[tokio::test]
async fn a_compile_that_panics_fails_the_pass_which_is_retried() {
    let links = [veth(41)];
    let (mut syncer, _calls, mut gate) = gated_syncer(&links);
    let held = syncer.compiler.clone();
    let compiles = std::sync::atomic::AtomicUsize::new(0);
    syncer.compiler = Arc::new(move |job: &CompileJob| {
        if compiles.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            panic!("a compiler bug (this test's own)");
        }
        held(job)
    });
    let (syncer, gate) = with_loop(syncer, |inputs| async move {
        inputs.snapshots.send_replace(synced(cluster_of(1)));
        // The retry's compile (after the backoff): the failure was handled.
        assert_eq!(gate.next_start().await, 1);
        gate
    })
    .await;
    drop(gate);
    assert!(syncer.datapath.calls.is_empty(), "nothing written");
    assert_eq!(syncer.failures, 1, "counted for the backoff");
    assert!(syncer.health.readiness().is_err(), "not programmed");
}

#[test]
fn a_veth_attached_between_plan_and_write_keeps_its_entry_unless_it_is_gone() {
    let links = [veth(41)];
    let mut fake = with_indexes(&links);
    fake.indexes.insert("pwt42".into(), 42);
    fake.indexes.insert("pwt43".into(), 43);
    let mut syncer = syncer(fake, &links);
    let snapshot = synced(ClusterState::default());
    syncer.sync(&snapshot).unwrap_or_else(|e| panic!("{e}"));
    let Ok(Some(planned)) = syncer.begin(&snapshot) else {
        panic!("a synced snapshot plans a pass");
    };
    assert!(!syncer.link_event(LinkEvent::Added(veth(42))));
    assert!(!syncer.link_event(LinkEvent::Added(veth(43))));
    syncer.link_event(LinkEvent::Removed(veth(43)));
    let tables = planned.job().compile();
    syncer
        .finish(planned, tables.into())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        syncer.datapath.calls[2..],
        [
            "add_unattached [42]",
            "attach pwt42",
            "add_unattached [43]",
            "attach pwt43",
            "apply 0 pods, pending [41, 42]",
        ],
        "pwt42 keeps its entry through the pass planned before it; pwt43 is gone"
    );
}
