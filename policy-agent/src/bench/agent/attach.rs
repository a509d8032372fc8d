//! New pod veth -> classifiers attached, while the sync loop compiles the large
//! cluster (needs root). The real loop (`agent::sync::run`) runs on a real loaded
//! datapath in a scratch network namespace the benchmark unshares (gone when its
//! threads end): the local pods get veths and routes there, so every pass maps
//! them and compiles the whole node; a thread sends a new snapshot every
//! `CHURN_EVERY` (a policy added and removed in turns), so compiles run back to
//! back. Meanwhile another thread makes pod veths one at a time, each with one
//! `RTM_NEWLINK` request, and times from that request until both TCX hooks of the
//! new interface run a program (`BPF_PROG_QUERY`, polled every `POLL_EVERY`),
//! then deletes it. Whether a compile was running when the request was sent is
//! recorded with each sample (the compiler is wrapped to say so).

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use nix::sched::{unshare, CloneFlags};

use super::{
    attach_floor::{self, AttachFloor},
    events::{self, Change},
    latency::load_for,
};
use crate::{
    agent::{
        health::Health,
        metrics::Metrics,
        sync::{self, CompileJob, Compiler, SyncConfig, Syncer},
    },
    bench::{
        cluster::{self, ClusterSpec, LOCAL_NODE},
        BenchError,
    },
    dataplane::tcx_hooks_occupied,
    model::ClusterState,
    node::{interface_index, scratch::Scratch, LinkWatch},
    source::api_server::SourceSnapshot,
};

/// Name prefix of the veths the loop attaches on sight (pods' and new ones).
const PREFIX: &str = "pwb";
/// How often the churn thread sends a new snapshot (shorter than a compile).
const CHURN_EVERY: Duration = Duration::from_millis(10);
/// How often a new veth's hooks are queried.
const POLL_EVERY: Duration = Duration::from_micros(100);
/// The longest wait for an attach before the benchmark gives up.
const ATTACH_DEADLINE: Duration = Duration::from_secs(120);

/// One new veth, timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachSample {
    /// From the `RTM_NEWLINK` request to both hooks running a program.
    pub attached: Duration,
    /// Whether a compile was running when the request was sent.
    pub during_compile: bool,
}

/// What the attach measurement found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachFigures {
    /// The same attach with nothing else running, step by step, measured first
    /// (`attach_floor`).
    pub floor: AttachFloor,
    /// Every new veth, in run order.
    pub samples: Vec<AttachSample>,
    /// Compiles the loop ran while the veths were made.
    pub compiles: usize,
    /// Their median duration.
    pub compile_median: Duration,
}

/// Measures the floor (`attach_floor`, `count` rounds), then times `count` new
/// veths on the cluster `spec` describes (see the module comment), each in a
/// thread of its own network namespace.
pub fn run(object: &Path, spec: &ClusterSpec, count: usize) -> Result<AttachFigures, BenchError> {
    let floor = attach_floor::run(object, count)?;
    let object = object.to_path_buf();
    let spec = *spec;
    let mut figures = thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| BenchError::Io {
            what: "unsharing a scratch network namespace".into(),
            source: errno.into(),
        })?;
        in_scratch(&object, &spec, count)
    })
    .join()
    .unwrap_or_else(|_| Err(failed("the measuring thread panicked".into())))?;
    figures.floor = floor;
    Ok(figures)
}

fn failed(message: String) -> BenchError {
    BenchError::Event {
        event: "new pod veth".into(),
        message,
    }
}

/// The compiler the loop uses, wrapped to say when it runs and how long.
struct Timed {
    running: AtomicBool,
    durations: std::sync::Mutex<Vec<Duration>>,
}

impl Timed {
    fn compiler(self: &Arc<Self>) -> Compiler {
        let timed = Arc::clone(self);
        Arc::new(move |job: &CompileJob| {
            timed.running.store(true, Ordering::SeqCst);
            let started = Instant::now();
            let tables = job.compile();
            if let Ok(mut durations) = timed.durations.lock() {
                durations.push(started.elapsed());
            }
            timed.running.store(false, Ordering::SeqCst);
            tables.into()
        })
    }

    fn compiles(&self) -> Vec<Duration> {
        self.durations.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// Everything after the unshare: pods' veths, the loop, the churn, the samples.
fn in_scratch(
    object: &Path,
    spec: &ClusterSpec,
    count: usize,
) -> Result<AttachFigures, BenchError> {
    let state = cluster::generate(spec);
    let pod_links = pod_veths(&state)?;
    let datapath = load_for(object, &events::compile(&state))?;
    let links = LinkWatch::open()?;
    let timed = Arc::new(Timed {
        running: AtomicBool::new(false),
        durations: std::sync::Mutex::new(Vec::new()),
    });
    let config = SyncConfig {
        node_name: LOCAL_NODE.into(),
        audit: false,
        interface_prefixes: vec![PREFIX.into()],
        pod_bridges: Vec::new(),
    };
    let health = Arc::new(Health::new(Duration::from_secs(3600)));
    let metrics = Arc::new(Metrics::new());
    let syncer = Syncer::new(config, datapath, metrics, health, links.known(), None)
        .with_compiler(timed.compiler());
    let (with_policy, without) = toggled(spec, &state)?;
    let (snapshots, receiver) = tokio::sync::watch::channel(snapshot(&without));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let measure = {
        let timed = Arc::clone(&timed);
        thread::spawn(move || {
            let result = measure(
                &pod_links,
                count,
                &timed,
                &snapshots,
                [with_policy, without],
            );
            let _ = stop.send(());
            result
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            what: "starting the loop's runtime".into(),
            source,
        })?;
    runtime.block_on(sync::run(syncer, receiver, links, async {
        let _ = stopped.await;
    }));
    let samples = measure
        .join()
        .unwrap_or_else(|_| Err(failed("the veth thread panicked".into())))?;
    let mut compiles = timed.compiles();
    compiles.sort_unstable();
    Ok(AttachFigures {
        floor: AttachFloor::default(),
        samples,
        compiles: compiles.len(),
        compile_median: compiles
            .get(compiles.len() / 2)
            .copied()
            .unwrap_or_default(),
    })
}

/// A synced snapshot of `state`.
fn snapshot(state: &Arc<ClusterState>) -> SourceSnapshot {
    SourceSnapshot {
        state: Arc::clone(state),
        synced: true,
        changed: Some(Instant::now()),
        ..SourceSnapshot::default()
    }
}

/// The cluster with and without the events' added policy: the snapshots the
/// churn alternates.
fn toggled(
    spec: &ClusterSpec,
    state: &ClusterState,
) -> Result<(Arc<ClusterState>, Arc<ClusterState>), BenchError> {
    let added = events::kinds(spec, state)
        .map_err(failed)?
        .into_iter()
        .find_map(|kind| matches!(kind.forward, Change::AddPolicy(_)).then_some(kind.forward))
        .ok_or_else(|| failed("no policy event to churn with".into()))?;
    let mut with_policy = state.clone();
    added.apply(&mut with_policy);
    Ok((Arc::new(with_policy), Arc::new(state.clone())))
}

/// Gives every pod on `LOCAL_NODE` a veth `pwb<n>` and a route to its address
/// through it (one `ip -batch`); returns the veths' names.
fn pod_veths(state: &ClusterState) -> Result<Vec<String>, BenchError> {
    let mut lines = vec!["link set lo up".to_string()];
    let mut names = Vec::new();
    for (n, key) in cluster::local_pods(state).iter().enumerate() {
        let Some(address) = state.pods.get(key).and_then(|pod| pod.ips.first()) else {
            continue;
        };
        let name = format!("{PREFIX}{n}");
        lines.push(format!("link add {name} type veth peer name pwq{n}"));
        lines.push(format!("link set {name} up"));
        lines.push(format!("link set pwq{n} up"));
        lines.push(format!("route add {address} dev {name}"));
        names.push(name);
    }
    let io = |source| BenchError::Io {
        what: "running ip -batch in the scratch namespace".into(),
        source,
    };
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(lines.join("\n").as_bytes()).map_err(io)?;
    }
    let output = child.wait_with_output().map_err(io)?;
    if !output.status.success() {
        return Err(BenchError::Child {
            command: "ip -batch -".into(),
            message: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(names)
}

/// Waits until interface `index` has its classifiers; false after `deadline`.
fn wait_attached(index: u32, deadline: Duration) -> bool {
    let started = Instant::now();
    while !tcx_hooks_occupied(index) {
        if started.elapsed() > deadline {
            return false;
        }
        thread::sleep(POLL_EVERY);
    }
    true
}

/// Waits for the first pass to attach the pods' veths, starts the churn, then
/// times `count` new veths.
fn measure(
    pod_links: &[String],
    count: usize,
    timed: &Timed,
    snapshots: &tokio::sync::watch::Sender<SourceSnapshot>,
    states: [Arc<ClusterState>; 2],
) -> Result<Vec<AttachSample>, BenchError> {
    for name in pod_links {
        let index =
            interface_index(name)?.ok_or_else(|| failed(format!("pod veth {name} is gone")))?;
        if !wait_attached(index, ATTACH_DEADLINE) {
            return Err(failed(format!("the first pass never attached {name}")));
        }
    }
    let churning = AtomicBool::new(true);
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut turn = 0;
            while churning.load(Ordering::SeqCst) {
                snapshots.send_replace(snapshot(&states[turn % 2]));
                turn += 1;
                thread::sleep(CHURN_EVERY);
            }
        });
        let samples = new_veths(count, timed);
        churning.store(false, Ordering::SeqCst);
        samples
    })
}

/// Makes, times and deletes `count` veths, each after a pause that spreads them
/// over the phases of a pass.
fn new_veths(count: usize, timed: &Timed) -> Result<Vec<AttachSample>, BenchError> {
    let mut scratch = Scratch::open()?;
    let mut samples = Vec::with_capacity(count);
    for k in 0..count {
        thread::sleep(Duration::from_millis(5 + cluster::mix(k as u64) % 20));
        let (name, peer) = (format!("{PREFIX}new{k}"), format!("pwm{k}"));
        let during_compile = timed.running.load(Ordering::SeqCst);
        let started = Instant::now();
        scratch.create_veth(&name, &peer)?;
        let index = interface_index(&name)?
            .ok_or_else(|| failed(format!("{name} is gone right after it was made")))?;
        let attached = wait_attached(index, ATTACH_DEADLINE);
        let elapsed = started.elapsed();
        scratch.delete_link(index)?;
        if !attached {
            return Err(failed(format!("{name} was never attached")));
        }
        samples.push(AttachSample {
            attached: elapsed,
            during_compile,
        });
    }
    Ok(samples)
}
