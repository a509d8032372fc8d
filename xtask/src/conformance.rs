//! `cargo xtask conformance [--cases DIR] [--nodes N]`: the upstream NetworkPolicy
//! conformance cases on real packets. Builds the eBPF object and the agent, then
//! runs `policy-agent lab conformance --cases DIR --nodes N` (default
//! tests/data/conformance on one node), which needs root: it builds a lab of
//! network namespaces and loads BPF.

use std::{path::Path, process::Command};

use crate::{build_agent, ebpf, run_checked, setup, workspace_root};

/// The vendored cases, relative to the workspace root.
pub const DEFAULT_CASES: &str = "tests/data/conformance";

/// `cargo xtask conformance`: installs and builds what is missing, then runs.
pub fn run(cases: Option<&Path>, nodes: u16) -> anyhow::Result<()> {
    setup::ensure(&[setup::Need::Lab])?;
    ebpf::build()?;
    run_cases(cases, nodes)
}

/// Builds the agent and runs the cases in `cases` (default: the vendored ones)
/// in a lab of `nodes` nodes; fails when a case fails. Expects the eBPF object
/// to be built already.
pub fn run_cases(cases: Option<&Path>, nodes: u16) -> anyhow::Result<()> {
    let root = workspace_root();
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "conformance runs real packets through BPF in network namespaces and needs root \
         (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); run `cargo xtask conformance` as root"
    );
    // A relative --cases is relative to where the user stands; the default to the root.
    let cases = match cases {
        Some(dir) => std::path::absolute(dir)?,
        None => root.join(DEFAULT_CASES),
    };
    let agent = build_agent("conformance")?;
    println!(
        "conformance: running the cases in {} on {nodes} node{}",
        cases.display(),
        if nodes == 1 { "" } else { "s" }
    );
    run_checked(
        Command::new(agent)
            .current_dir(&root)
            .args(["--verbose", "lab", "conformance", "--nodes"])
            .arg(nodes.to_string())
            .arg("--cases")
            .arg(&cases),
    )
}
