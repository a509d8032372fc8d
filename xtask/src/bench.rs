//! `cargo xtask bench datapath [ARGS]`: ns/packet of podwall's datapath paths
//! against an empty classifier, timed by the kernel with BPF_PROG_TEST_RUN. Needs
//! root (it loads BPF). Installs what is missing, builds the eBPF object and the
//! agent, then runs the hidden `policy-agent bench datapath [ARGS]` (ARGS: `--runs`,
//! `--repeat`, `--peers`, `--cidr-prefixes`, `--cpu`), which prints progress on
//! stderr and the figures as Markdown on stdout. Not a pass/fail test.

use std::process::Command;

use crate::{build_agent, ebpf, run_checked, setup, workspace_root};

/// Runs the datapath benchmark with `args` passed on to the agent.
pub fn datapath(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the datapath benchmark loads BPF programs and runs them with BPF_PROG_TEST_RUN, \
         which needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); run \
         `sudo cargo xtask bench datapath`"
    );
    setup::ensure_ready()?;
    ebpf::build()?;
    let agent = build_agent("bench")?;
    println!("bench: running policy-agent bench datapath (about 15 s with the defaults)");
    run_checked(
        Command::new(agent)
            .current_dir(workspace_root())
            .args(["bench", "datapath"])
            .args(args),
    )
}
