//! `policy-agent bench agent` (run by `cargo xtask bench agent`): the agent's side
//! of programming policy. Full compile time and peak RSS per cluster scale, each in
//! a fresh child process (`compile`); and, on a real loaded datapath, how long a
//! watch event takes to reach the maps and the first packet (`events`, `latency`);
//! with the real sync loop in a scratch network namespace, how long a new pod veth
//! waits for its classifiers while the loop compiles the cluster (`attach`); and
//! the memory of a real `policy-agent run` serving that cluster (`memory`).
//! The synthetic cluster is `bench::cluster`. Not a pass/fail test.

pub mod attach;
pub mod attach_floor;
pub mod compile;
pub mod events;
pub mod latency;
pub mod memory;
pub mod report;
pub mod source_side;

use std::path::Path;

pub use report::{AgentReport, AttachReport};

use super::{
    cluster::ClusterSpec,
    runner::{cpu_times, kernel_release, steal_since},
    BenchError,
};

/// What to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentOptions {
    /// Clusters whose full compile is timed, each in its own process.
    pub compile_scales: Vec<ClusterSpec>,
    /// Compiles per scale.
    pub compile_runs: usize,
    /// The cluster the events run on.
    pub latency_scale: ClusterSpec,
    /// Events per kind: change and undo in turns; also the new pod veths timed.
    pub iterations: usize,
    /// The memory step's cluster; `None` skips it.
    pub memory: Option<memory::MemoryOptions>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            compile_scales: vec![
                ClusterSpec::new(1_000, 100),
                ClusterSpec::new(10_000, 1_000),
            ],
            compile_runs: 5,
            latency_scale: ClusterSpec::new(10_000, 1_000),
            iterations: 100,
            memory: Some(memory::MemoryOptions::default()),
        }
    }
}

/// Runs the benchmark. `agent` is this program's binary, re-run with the hidden
/// `bench compile-scale` per compile scale; the events run in this process (needs
/// root). `progress` gets a line per step.
pub fn run(
    options: &AgentOptions,
    agent: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<AgentReport, BenchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot {
            bench: "agent",
            what: "loads BPF programs, writes their maps and runs them with BPF_PROG_TEST_RUN",
        });
    }
    if options.iterations < 2 {
        return Err(BenchError::Option {
            option: "iterations",
            message: "must be at least 2 (a change and its undo)".into(),
        });
    }
    let object = crate::dataplane::object::find()?;
    let cpu_before = cpu_times();
    let mut compiled = Vec::new();
    for spec in &options.compile_scales {
        progress(&format!(
            "compiling {} pods x {} policies {} times in a fresh process",
            spec.pods, spec.policies, options.compile_runs
        ));
        compiled.push(compile::in_child(agent, spec, options.compile_runs)?);
    }
    let (first_apply, rows) = latency::run(
        &object,
        &options.latency_scale,
        options.iterations,
        progress,
    )?;
    // The events' peak, before the attach measurement loads a second cluster and
    // the memory step's stand-in API server runs in this process.
    let latency_peak_rss_kib = compile::own_status_kib("VmHWM").ok();
    progress(&format!(
        "what the agent does per event before the compile, {} rounds",
        options.iterations
    ));
    let source_side = {
        let state = super::cluster::generate(&options.latency_scale);
        source_side::run(&state, options.iterations)?
    };
    progress(&format!(
        "{} new pod veths while the sync loop compiles {} pods x {} policies, in a scratch network namespace",
        options.iterations, options.latency_scale.pods, options.latency_scale.policies
    ));
    let attach = attach::run(&object, &options.latency_scale, options.iterations)?;
    let memory = match &options.memory {
        Some(memory) => Some(memory::run(memory, agent, &object, progress)?),
        None => None,
    };
    let steal_percent = steal_since(cpu_before);
    Ok(AgentReport {
        kernel: kernel_release(),
        release: !cfg!(debug_assertions),
        steal_percent,
        compile: compiled,
        latency_spec: options.latency_scale,
        iterations: options.iterations,
        first_apply,
        rows,
        attach,
        latency_peak_rss_kib,
        source_side,
        memory,
    })
}

/// Runs the memory step alone (`bench agent --memory-only`). Needs root.
pub fn run_memory(
    options: &memory::MemoryOptions,
    agent: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<memory::MemoryReport, BenchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot {
            bench: "agent",
            what: "runs the node agent, which loads and pins BPF programs",
        });
    }
    let object = crate::dataplane::object::find()?;
    memory::run(options, agent, &object, progress)
}

/// Runs the attach step alone (`bench agent --attach-only`): the attach floor,
/// then new pod veths while the sync loop compiles `spec`, `count` of each.
/// Needs root.
pub fn run_attach(
    spec: &ClusterSpec,
    count: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<AttachReport, BenchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot {
            bench: "agent",
            what: "loads BPF programs and attaches them to veths it makes",
        });
    }
    let object = crate::dataplane::object::find()?;
    progress(&format!(
        "attach floor ({count} rounds), then {count} new pod veths while the sync loop compiles {} pods x {} policies, each in a scratch network namespace",
        spec.pods, spec.policies
    ));
    let attach = attach::run(&object, spec, count)?;
    Ok(AttachReport {
        kernel: kernel_release(),
        spec: *spec,
        attach,
    })
}
