//! The developer benchmarks (not pass/fail tests):
//!
//! - `policy-agent bench datapath` (run by `cargo xtask bench datapath`): how many
//!   nanoseconds podwall's classifiers spend on a packet, per path, against an empty
//!   classifier, timed by the kernel with `BPF_PROG_TEST_RUN`
//!   (`Datapath::bench_run`). Its tables (`tables`, pure), packets (`frames`), runs
//!   (`runner`) and report (`report`).
//! - `policy-agent bench agent` (run by `cargo xtask bench agent`): full compile time
//!   and peak RSS per cluster scale, and watch event -> maps programmed -> first
//!   packet latency (`agent`), on a synthetic cluster (`cluster`, pure); and the
//!   memory of a real `policy-agent run` watching that cluster, served as API
//!   objects (`api_objects`, pure) by the stand-in API server (`agent::memory`).
//! - `policy-agent bench e2e` (run by `cargo xtask bench e2e`): TCP_RR, TCP_CRR,
//!   TCP_STREAM and UDP_RR between lab pods, same node and across nodes, under
//!   podwall, iptables and nftables at two scales, as ratios to nothing attached
//!   (`e2e`).
//!
//! Imports `model`, `policy`, `dataplane` and `lab`; nothing imports it but the
//! CLI. Needs root; touches no interface, route or firewall of the machine: test
//! runs put their skb on the loopback device and send nothing, and the e2e
//! bench's traffic and rules stay inside the lab's own namespaces.

pub mod agent;
pub mod api_objects;
pub mod cluster;
pub mod e2e;
pub mod figures;
pub mod frames;
pub mod report;
mod runner;
pub mod tables;

pub use report::{Family, Measurement, Path, Report};

use crate::dataplane::DataplaneError;

/// How much to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Runs per figure; the figure is their median.
    pub runs: usize,
    /// Times the kernel repeats the program in one run (it reports the average).
    pub repeat: u32,
    /// Pod peer counts (per family) for the flatness series. The smallest is also
    /// the table of the main figures.
    pub flat_series: Vec<u32>,
    /// ipBlock prefixes (per family) in the CIDR-peer table.
    pub cidr_prefixes: u32,
    /// Pin the benchmark's thread to this CPU.
    pub cpu: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            runs: 21,
            repeat: 100_000,
            flat_series: vec![100, 10_000, 100_000],
            cidr_prefixes: 10_000,
            cpu: None,
        }
    }
}

/// Most ipBlock prefixes per family the benchmark builds.
pub const MAX_CIDR_PREFIXES: u32 = 1_000_000;

/// What can stop the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// BPF needs privileges.
    #[error(
        "the {bench} benchmark {what}, which needs root (CAP_BPF, CAP_NET_ADMIN, \
         CAP_SYS_ADMIN); run `sudo cargo xtask bench {bench}`"
    )]
    NotRoot {
        /// The benchmark (`datapath`, `agent`).
        bench: &'static str,
        /// What it does that needs root.
        what: &'static str,
    },
    /// An option is out of range.
    #[error("bench option {option}: {message}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Pinning the thread failed.
    #[error("pinning the benchmark to CPU {cpu}")]
    Pin {
        /// The CPU asked for.
        cpu: usize,
        /// What the kernel said.
        #[source]
        source: nix::Error,
    },
    /// Loading, writing tables or a test run failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// A packet did not take the path its figure is named after.
    #[error("{case}: took the wrong path: expected counters {expected}, got {counted}")]
    WrongPath {
        /// The case.
        case: String,
        /// The counters (and verdict) the path produces.
        expected: String,
        /// What the kernel counted.
        counted: String,
    },
    /// A child process of the benchmark failed or printed no figures.
    #[error("{command}: {message}")]
    Child {
        /// The command line.
        command: String,
        /// What went wrong.
        message: String,
    },
    /// A child process could not be run, or a file not read.
    #[error("{what}")]
    Io {
        /// What was being done (`running CMD`, `reading /proc/self/status`).
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Building or using the lab failed (e2e).
    #[error(transparent)]
    Lab(#[from] crate::lab::LabError),
    /// The e2e load generator failed: no traffic, so no figure.
    #[error("{config}: no figure")]
    Load {
        /// The configuration in place (`podwall 1k x 100`).
        config: String,
        /// What failed.
        #[source]
        source: e2e::load::LoadError,
    },
    /// An enforcer in place did not enforce, or the lab let nothing through with
    /// nothing attached: the figures would be meaningless (e2e).
    #[error("{config}: {message}")]
    Enforcement {
        /// The configuration (`podwall 1k x 100`).
        config: String,
        /// What the check found.
        message: String,
    },
    /// A netlink request or query of the benchmark's scratch namespace failed.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// The synthetic cluster holds something no API object can.
    #[error(transparent)]
    Objects(#[from] api_objects::Unrepresentable),
    /// A replayed event did not do what the benchmark needs from it.
    #[error("event {event}: {message}")]
    Event {
        /// The event's label.
        event: String,
        /// What went wrong.
        message: String,
    },
}

fn check(options: &Options) -> Result<(), BenchError> {
    let bad = |option, message: &str| {
        Err(BenchError::Option {
            option,
            message: message.to_string(),
        })
    };
    if options.runs == 0 {
        return bad("runs", "must be at least 1");
    }
    if options.flat_series.is_empty() {
        return bad("peers", "give at least one pod peer count");
    }
    if options.flat_series.windows(2).any(|w| w[0] >= w[1]) {
        return bad("peers", "pod peer counts must increase");
    }
    if options.flat_series.first() == Some(&0)
        || options.flat_series.last() > Some(&tables::MAX_POD_PEERS)
    {
        return bad("peers", "each pod peer count must be 1 to 8388608");
    }
    if options.cidr_prefixes == 0 || options.cidr_prefixes > MAX_CIDR_PREFIXES {
        return bad("cidr-prefixes", "must be 1 to 1000000");
    }
    Ok(())
}

/// Runs the datapath benchmark; `progress` gets a line per table and per figure.
pub fn datapath(options: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    check(options)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot {
            bench: "datapath",
            what: "loads BPF programs and runs them with BPF_PROG_TEST_RUN",
        });
    }
    if let Some(cpu) = options.cpu {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu)
            .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set))
            .map_err(|source| BenchError::Pin { cpu, source })?;
    }
    runner::run(options, progress)
}
