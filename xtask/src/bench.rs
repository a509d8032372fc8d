//! `cargo xtask bench datapath [ARGS]`: ns/packet of podwall's datapath paths
//! against an empty classifier, timed by the kernel with BPF_PROG_TEST_RUN. Needs
//! root (it loads BPF). Installs what is missing, builds the eBPF object and the
//! agent, then runs the hidden `policy-agent bench datapath [ARGS]` (ARGS: `--runs`,
//! `--repeat`, `--peers`, `--cidr-prefixes`, `--cpu`, `--output json`), which prints
//! progress on stderr and the figures on stdout: Markdown tables, or with
//! `--output json` one JSON document of every figure, its target and whether it is
//! met. Every chore's own progress goes to stderr too. Not a pass/fail test.
//!
//! `cargo xtask bench agent [ARGS]`: the same for the hidden `policy-agent bench
//! agent [ARGS]` (compile time, peak RSS, event latency, and the memory of a real
//! `policy-agent run` against the stand-in API server; `--memory-only` for that
//! step alone), with the agent built optimized: its figures are userspace time and
//! memory, which a debug build inflates.

use std::process::Command;

use crate::{
    build_agent, build_agent_profile, ebpf, run_checked, setup, workspace_root, AgentBuild,
};

/// Runs the datapath benchmark with `args` passed on to the agent.
pub fn datapath(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the datapath benchmark loads BPF programs and runs them with BPF_PROG_TEST_RUN, \
         which needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); run \
         `sudo cargo xtask bench datapath`"
    );
    setup::ensure(&[setup::Need::Lab])?;
    ebpf::build()?;
    let agent = build_agent("bench")?;
    eprintln!("bench: running policy-agent bench datapath (about 15 s with the defaults)");
    run_checked(
        Command::new(agent)
            .current_dir(workspace_root())
            .args(["bench", "datapath"])
            .args(args),
    )
}

/// Runs the agent benchmark (release build) with `args` passed on to the agent.
pub fn agent(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the agent benchmark loads BPF programs, writes their maps and runs them with \
         BPF_PROG_TEST_RUN, which needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); \
         run `sudo cargo xtask bench agent`"
    );
    setup::ensure(&[setup::Need::Lab])?;
    ebpf::build()?;
    let agent = build_agent_profile("bench", AgentBuild::Release)?;
    eprintln!("bench: running policy-agent bench agent (about a minute with the defaults)");
    run_checked(
        Command::new(agent)
            .current_dir(workspace_root())
            .args(["bench", "agent"])
            .args(args),
    )
}
