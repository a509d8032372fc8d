//! `policy-agent bench datapath` (hidden; `cargo xtask bench datapath` runs it):
//! progress on stderr, the report (Markdown tables and the method) on stdout.

use clap::{Args, Subcommand};

use crate::bench::{self, Options};

/// What to benchmark.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// ns/packet of each datapath path against an empty classifier (needs root).
    Datapath(DatapathArgs),
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
    let BenchCommand::Datapath(args) = command;
    let options = Options {
        runs: args.runs,
        repeat: args.repeat,
        flat_series: args.peers.clone(),
        cidr_prefixes: args.cidr_prefixes,
        cpu: args.cpu.or_else(last_cpu),
    };
    let report = bench::datapath(&options, &mut |line| eprintln!("bench: {line}"))?;
    print!("{report}");
    Ok(())
}
