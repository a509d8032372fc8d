//! `policy-agent bench datapath|agent|e2e` (hidden; `cargo xtask bench
//! datapath|agent|e2e` runs them): progress on stderr, the report (Markdown tables and the method) on
//! stdout. `bench compile-scale` is the child process `bench agent` starts per
//! compile scale; it prints one JSON line.

use clap::{Args, Subcommand};

use crate::bench::{
    self,
    agent::{self, memory::MemoryOptions, AgentOptions},
    cluster::ClusterSpec,
    e2e::{self, Config, E2eOptions, Pair, Placement, Test},
    Options,
};

/// What to benchmark.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// ns/packet of each datapath path against an empty classifier (needs root).
    Datapath(DatapathArgs),
    /// Full compile time and peak RSS per scale; watch event -> maps programmed ->
    /// first packet latency on a loaded datapath (needs root).
    Agent(AgentArgs),
    /// One compile scale in this process, printed as JSON (what `bench agent` runs
    /// in a child per scale).
    CompileScale(CompileScaleArgs),
    /// TCP_RR, TCP_CRR, TCP_STREAM and UDP_RR between lab pods under podwall,
    /// iptables and nftables, as ratios to nothing attached (needs root).
    E2e(E2eArgs),
}

/// Arguments of `bench e2e`.
#[derive(Args)]
pub struct E2eArgs {
    /// How long each test runs, in milliseconds.
    #[arg(long, default_value_t = E2eOptions::default().duration.as_millis() as u64)]
    duration_ms: u64,
    /// Repetitions; every configuration is measured once in each, in turns.
    #[arg(long, default_value_t = E2eOptions::default().repetitions)]
    repetitions: usize,
    /// Configurations: nothing, podwall-1k, podwall-10k, iptables-1k,
    /// iptables-10k, nftables-1k, nftables-10k (`nothing` is required).
    #[arg(long, value_delimiter = ',', value_parser = parse_config, default_values = ["nothing", "podwall-1k", "podwall-10k", "iptables-1k", "iptables-10k", "nftables-1k", "nftables-10k"])]
    configs: Vec<Config>,
    /// Tests: tcp_rr, tcp_crr, tcp_stream, udp_rr.
    #[arg(long, value_delimiter = ',', value_parser = parse_test, default_values = ["tcp_rr", "tcp_crr", "tcp_stream", "udp_rr"])]
    tests: Vec<Test>,
    /// Placements: same-node, across-nodes (a lab of two nodes).
    #[arg(long, value_delimiter = ',', value_parser = parse_placement, default_values = ["same-node", "across-nodes"])]
    placements: Vec<Placement>,
    /// Pairs: isolated (pods policies isolate), unselected (pods no policy selects).
    #[arg(long, value_delimiter = ',', value_parser = parse_pair, default_values = ["isolated", "unselected"])]
    pairs: Vec<Pair>,
    /// Carry pod traffic between nodes in VXLAN (default: routed).
    #[arg(long)]
    vxlan: bool,
    /// The CPU the client is pinned to.
    #[arg(long, default_value_t = E2eOptions::default().client_cpu)]
    client_cpu: usize,
    /// The CPU the servers are pinned to.
    #[arg(long, default_value_t = E2eOptions::default().server_cpu)]
    server_cpu: usize,
    /// The report as Markdown tables for people, or one JSON document of every
    /// figure with its target and whether it is met (`{"bench","figures"}`).
    #[arg(short, long, value_enum, default_value_t = super::Output::Table)]
    output: super::Output,
}

fn parse_config(text: &str) -> Result<Config, String> {
    Config::parse(text).ok_or_else(|| {
        let keys: Vec<String> = Config::all().iter().map(|c| c.key()).collect();
        format!("'{text}' is none of {}", keys.join(", "))
    })
}

fn parse_test(text: &str) -> Result<Test, String> {
    Test::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("'{text}' is none of tcp_rr, tcp_crr, tcp_stream, udp_rr"))
}

fn parse_placement(text: &str) -> Result<Placement, String> {
    Placement::ALL
        .into_iter()
        .find(|p| p.label().replace(' ', "-") == text)
        .ok_or_else(|| format!("'{text}' is neither same-node nor across-nodes"))
}

fn parse_pair(text: &str) -> Result<Pair, String> {
    match text {
        "isolated" => Ok(Pair::Isolated),
        "unselected" => Ok(Pair::Unisolated),
        _ => Err(format!("'{text}' is neither isolated nor unselected")),
    }
}

/// Arguments of `bench agent`.
#[derive(Args)]
pub struct AgentArgs {
    /// Compile scales as PODSxPOLICIES, each timed in a fresh process.
    #[arg(long, value_delimiter = ',', value_parser = parse_scale, default_values = ["1000x100", "10000x1000"])]
    scales: Vec<ClusterSpec>,
    /// Compiles per scale.
    #[arg(long, default_value_t = AgentOptions::default().compile_runs)]
    compile_runs: usize,
    /// The cluster the events run on, PODSxPOLICIES.
    #[arg(long, value_parser = parse_scale, default_value = "10000x1000")]
    latency_scale: ClusterSpec,
    /// Events per kind (change and undo in turns).
    #[arg(long, default_value_t = AgentOptions::default().iterations)]
    iterations: usize,
    /// Only the memory step: a real `policy-agent run` against the stand-in API
    /// server serving the memory cluster.
    #[arg(long, conflicts_with = "skip_memory")]
    memory_only: bool,
    /// Only the attach step: the attach floor (each kernel call alone), then new
    /// pod veths while the sync loop compiles the latency cluster
    /// (`--iterations` of each).
    #[arg(long, conflicts_with_all = ["memory_only", "skip_memory"])]
    attach_only: bool,
    /// Everything but the memory step.
    #[arg(long)]
    skip_memory: bool,
    /// The memory step's cluster, PODSxPOLICIES (one namespace per 100 pods).
    #[arg(long, value_parser = parse_scale, default_value = "10000x1000")]
    memory_scale: ClusterSpec,
    /// Services in the memory step's cluster, spread over its namespaces.
    #[arg(long, default_value_t = MemoryOptions::default().services)]
    memory_services: usize,
    /// Seconds the agent runs after it is ready before it is measured.
    #[arg(long, default_value_t = MemoryOptions::default().settle.as_secs())]
    memory_settle_s: u64,
    /// The `policy-agent` binary the memory step runs (e.g. one built with
    /// `--no-default-features`, as the image has it); default: this one.
    #[arg(long)]
    memory_agent: Option<std::path::PathBuf>,
    /// The report as Markdown tables for people, or one JSON document of every
    /// figure with its target and whether it is met (`{"bench","figures"}`).
    #[arg(short, long, value_enum, default_value_t = super::Output::Table)]
    output: super::Output,
}

/// Arguments of `bench compile-scale`.
#[derive(Args)]
pub struct CompileScaleArgs {
    /// Pods in the synthetic cluster.
    #[arg(long)]
    pods: usize,
    /// NetworkPolicies in it.
    #[arg(long)]
    policies: usize,
    /// Namespaces in it.
    #[arg(long)]
    namespaces: usize,
    /// Pods per node (the benchmarked node holds about this many).
    #[arg(long)]
    pods_per_node: usize,
    /// Compiles to time.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Parses `PODSxPOLICIES` (`10000x1000`) into the benchmark's cluster of that size.
fn parse_scale(text: &str) -> Result<ClusterSpec, String> {
    let (pods, policies) = text
        .split_once('x')
        .ok_or_else(|| format!("'{text}' is not PODSxPOLICIES"))?;
    let number = |n: &str| n.parse::<usize>().map_err(|e| format!("'{n}': {e}"));
    Ok(ClusterSpec::new(number(pods)?, number(policies)?))
}

/// Arguments of `bench datapath`.
#[derive(Args)]
pub struct DatapathArgs {
    /// Runs per figure; the figure is their median.
    #[arg(long, default_value_t = Options::default().runs)]
    runs: usize,
    /// Times the kernel repeats the program in one run.
    #[arg(long, default_value_t = Options::default().repeat)]
    repeat: u32,
    /// Pod peer counts (per family) for the flatness series, increasing; the first
    /// is also the table of the main figures.
    #[arg(long, value_delimiter = ',', default_values_t = Options::default().flat_series)]
    peers: Vec<u32>,
    /// ipBlock prefixes (per family) in the CIDR-peer table.
    #[arg(long, default_value_t = Options::default().cidr_prefixes)]
    cidr_prefixes: u32,
    /// Pin the benchmark to this CPU (default: the last CPU this process may use).
    #[arg(long)]
    cpu: Option<usize>,
    /// The report as Markdown tables for people, or one JSON document of every
    /// figure with its target and whether it is met (`{"bench","figures"}`).
    #[arg(short, long, value_enum, default_value_t = super::Output::Table)]
    output: super::Output,
}

/// The highest CPU the process may run on.
fn last_cpu() -> Option<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    (0..nix::sched::CpuSet::count())
        .rev()
        .find(|&cpu| set.is_set(cpu).unwrap_or(false))
}

/// Runs one benchmark and prints its report.
pub fn run(command: &BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Datapath(args) => datapath(args),
        BenchCommand::Agent(args) => {
            let memory = MemoryOptions {
                spec: args.memory_scale,
                services: args.memory_services,
                settle: std::time::Duration::from_secs(args.memory_settle_s),
                agent: args.memory_agent.clone(),
                ..MemoryOptions::default()
            };
            let exe = std::env::current_exe()?;
            if args.memory_only {
                let report =
                    agent::run_memory(&memory, &exe, &mut |line| eprintln!("bench: {line}"))?;
                let figures = bench::figures::Figures {
                    bench: "agent",
                    figures: report.figures(),
                };
                match args.output {
                    super::Output::Table => print!("{report}"),
                    super::Output::Json => println!("{}", serde_json::to_string(&figures)?),
                }
                return Ok(());
            }
            if args.attach_only {
                let report =
                    agent::run_attach(&args.latency_scale, args.iterations, &mut |line| {
                        eprintln!("bench: {line}")
                    })?;
                match args.output {
                    super::Output::Table => print!("{report}"),
                    super::Output::Json => {
                        println!("{}", serde_json::to_string(&report.figures())?)
                    }
                }
                return Ok(());
            }
            let options = AgentOptions {
                compile_scales: args.scales.clone(),
                compile_runs: args.compile_runs,
                latency_scale: args.latency_scale,
                iterations: args.iterations,
                memory: (!args.skip_memory).then_some(memory),
            };
            let report = agent::run(&options, &exe, &mut |line| eprintln!("bench: {line}"))?;
            match args.output {
                super::Output::Table => print!("{report}"),
                super::Output::Json => println!("{}", serde_json::to_string(&report.figures())?),
            }
            Ok(())
        }
        BenchCommand::E2e(args) => {
            let options = E2eOptions {
                duration: std::time::Duration::from_millis(args.duration_ms),
                repetitions: args.repetitions,
                configs: args.configs.clone(),
                tests: args.tests.clone(),
                placements: args.placements.clone(),
                pairs: args.pairs.clone(),
                vxlan: args.vxlan,
                client_cpu: args.client_cpu,
                server_cpu: args.server_cpu,
            };
            super::lab::install_interrupt_cleanup()?;
            let report = e2e::run(&options, &mut |line| eprintln!("bench: {line}"))?;
            match args.output {
                super::Output::Table => print!("{report}"),
                super::Output::Json => println!("{}", serde_json::to_string(&report.figures())?),
            }
            Ok(())
        }
        BenchCommand::CompileScale(args) => {
            let spec = ClusterSpec {
                pods: args.pods,
                policies: args.policies,
                namespaces: args.namespaces,
                pods_per_node: args.pods_per_node,
            };
            let figures = agent::compile::measure(&spec, args.runs)?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }
    }
}

fn datapath(args: &DatapathArgs) -> anyhow::Result<()> {
    let options = Options {
        runs: args.runs,
        repeat: args.repeat,
        flat_series: args.peers.clone(),
        cidr_prefixes: args.cidr_prefixes,
        cpu: args.cpu.or_else(last_cpu),
    };
    let report = bench::datapath(&options, &mut |line| eprintln!("bench: {line}"))?;
    match args.output {
        super::Output::Table => print!("{report}"),
        super::Output::Json => println!("{}", serde_json::to_string(&report.figures())?),
    }
    Ok(())
}
