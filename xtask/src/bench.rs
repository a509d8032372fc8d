//! `cargo xtask bench datapath|agent|e2e [ARGS]`: the developer benchmarks. Each
//! needs root, installs what is missing, builds the eBPF object and the agent,
//! then runs the hidden `policy-agent bench NAME [ARGS]`, which prints progress on
//! stderr and the figures on stdout: Markdown tables, or with `--output json` one
//! JSON document of every figure, its target and whether it is met. Every chore's
//! own progress goes to stderr too. Not pass/fail tests.
//!
//! - `datapath` (`--runs`, `--repeat`, `--peers`, `--cidr-prefixes`, `--cpu`):
//!   ns/packet of podwall's datapath paths against an empty classifier, timed by
//!   the kernel with BPF_PROG_TEST_RUN.
//! - `agent`: compile time, peak RSS, event latency, new pod veths attached, and
//!   the memory of a real `policy-agent run` against the stand-in API server
//!   (`--memory-only`, `--attach-only`: one step alone), with the agent built
//!   optimized: its figures are userspace time and memory, which a debug build
//!   inflates.
//! - `e2e`: real traffic between lab pods under podwall, iptables-nft and
//!   nftables, as ratios to nothing attached; optimized too (the load generator
//!   runs in the agent), and with iptables installed.

use std::process::Command;

use crate::{build_agent_profile, ebpf, run_checked, setup, workspace_root, AgentBuild};

/// One benchmark as `cargo xtask bench` runs it.
struct Bench {
    /// `policy-agent bench NAME`.
    name: &'static str,
    /// What it does that needs root, for the refusal.
    needs_root_for: &'static str,
    /// What it must have installed.
    needs: &'static [setup::Need],
    /// How the agent is built.
    build: AgentBuild,
    /// How long it takes with the defaults, for the progress line.
    takes: &'static str,
}

/// Runs `bench` with `args` passed on to the agent.
fn run(bench: &Bench, args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the {name} benchmark {what}, which needs root (CAP_BPF, CAP_NET_ADMIN, \
         CAP_SYS_ADMIN); run `sudo cargo xtask bench {name}`",
        name = bench.name,
        what = bench.needs_root_for,
    );
    setup::ensure(bench.needs)?;
    ebpf::build()?;
    let agent = build_agent_profile("bench", bench.build)?;
    eprintln!(
        "bench: running policy-agent bench {} ({} with the defaults)",
        bench.name, bench.takes
    );
    run_checked(
        Command::new(agent)
            .current_dir(workspace_root())
            .args(["bench", bench.name])
            .args(args),
    )
}

/// Runs the datapath benchmark with `args` passed on to the agent.
pub fn datapath(args: &[String]) -> anyhow::Result<()> {
    let bench = Bench {
        name: "datapath",
        needs_root_for: "loads BPF programs and runs them with BPF_PROG_TEST_RUN",
        needs: &[setup::Need::Lab],
        build: AgentBuild::Debug,
        takes: "about 15 s",
    };
    run(&bench, args)
}

/// Runs the agent benchmark (release build) with `args` passed on to the agent.
pub fn agent(args: &[String]) -> anyhow::Result<()> {
    let bench = Bench {
        name: "agent",
        needs_root_for: "loads BPF programs, writes their maps and runs them with \
                         BPF_PROG_TEST_RUN",
        needs: &[setup::Need::Lab],
        build: AgentBuild::Release,
        takes: "about a minute",
    };
    run(&bench, args)
}

/// Runs the end-to-end benchmark (release build) with `args` passed on.
pub fn e2e(args: &[String]) -> anyhow::Result<()> {
    let bench = Bench {
        name: "e2e",
        needs_root_for: "builds a lab of network namespaces and loads BPF programs and \
                         netfilter rules in it",
        needs: &[setup::Need::Lab, setup::Need::Bench],
        build: AgentBuild::Release,
        takes: "about 7 minutes",
    };
    run(&bench, args)
}
