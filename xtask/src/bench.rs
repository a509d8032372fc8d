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
//!   inflates. The memory step runs the agent the image ships (`AgentBuild::
//!   Shipped`, built too and passed as `--memory-agent`) unless the arguments
//!   name one (`--memory-agent target/release/policy-agent`: the benchmark's own).
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
    /// Its memory step measures the agent the image ships, built for it.
    measures_shipped_agent: bool,
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
    let mut args = args.to_vec();
    if bench.measures_shipped_agent && measures_memory_of_its_own_agent(&args) {
        let shipped = build_agent_profile("bench", AgentBuild::Shipped)?;
        args.push("--memory-agent".into());
        args.push(shipped.display().to_string());
    }
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

/// Whether `policy-agent bench agent ARGS` runs its memory step with no
/// `--memory-agent` given.
fn measures_memory_of_its_own_agent(args: &[String]) -> bool {
    !args.iter().any(|arg| {
        matches!(arg.as_str(), "--skip-memory" | "--attach-only")
            || arg == "--memory-agent"
            || arg.starts_with("--memory-agent=")
    })
}

/// Runs the datapath benchmark with `args` passed on to the agent.
pub fn datapath(args: &[String]) -> anyhow::Result<()> {
    let bench = Bench {
        name: "datapath",
        needs_root_for: "loads BPF programs and runs them with BPF_PROG_TEST_RUN",
        needs: &[setup::Need::Lab],
        build: AgentBuild::Debug,
        takes: "about 15 s",
        measures_shipped_agent: false,
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
        measures_shipped_agent: true,
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
        measures_shipped_agent: false,
    };
    run(&bench, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_memory_step_measures_the_shipped_agent_unless_told_another_or_skipped() {
        assert!(measures_memory_of_its_own_agent(&args("")));
        assert!(measures_memory_of_its_own_agent(&args(
            "--memory-only --memory-settle-s 5"
        )));
        for given in [
            "--memory-only --memory-agent target/release/policy-agent",
            "--memory-agent=/tmp/agent",
            "--skip-memory",
            "--attach-only",
        ] {
            assert!(!measures_memory_of_its_own_agent(&args(given)), "{given}");
        }
    }
}
