//! `cargo xtask conformance [--cases DIR] [--nodes N]`: the upstream NetworkPolicy
//! and ClusterNetworkPolicy conformance cases on real packets. Builds the eBPF
//! object and the agent, then runs `policy-agent lab conformance --cases DIR
//! --nodes N` (default: tests/data/conformance, then tests/data/cluster-conformance,
//! on one node), which needs root: it builds a lab of network namespaces and
//! loads BPF.

use std::{path::Path, process::Command};

use crate::{build_agent, ebpf, run_checked, setup, workspace_root};

/// The vendored NetworkPolicy cases, relative to the workspace root.
pub const DEFAULT_CASES: &str = "tests/data/conformance";
/// The ClusterNetworkPolicy cases, relative to the workspace root.
pub const CLUSTER_CASES: &str = "tests/data/cluster-conformance";

/// `cargo xtask conformance`: installs and builds what is missing, then runs.
pub fn run(cases: Option<&Path>, nodes: u16) -> anyhow::Result<()> {
    setup::ensure(&[setup::Need::Lab])?;
    ebpf::build()?;
    run_cases(cases, nodes)
}

/// Builds the agent and runs the cases in `cases` (default: both directories of
/// cases, one run each, each printing its summary line) in a lab of `nodes`
/// nodes; fails when a case fails. Expects the eBPF object to be built already.
pub fn run_cases(cases: Option<&Path>, nodes: u16) -> anyhow::Result<()> {
    let root = workspace_root();
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "conformance runs real packets through BPF in network namespaces and needs root \
         (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); run `cargo xtask conformance` as root"
    );
    // A relative --cases is relative to where the user stands; the default to the root.
    let dirs = match cases {
        Some(dir) => vec![std::path::absolute(dir)?],
        None => vec![root.join(DEFAULT_CASES), root.join(CLUSTER_CASES)],
    };
    let agent = build_agent("conformance")?;
    // Every directory runs, so one failing does not hide the other's outcomes.
    let mut failed = Vec::new();
    for cases in &dirs {
        if let Err(error) = run_dir(&agent, &root, cases, nodes) {
            eprintln!("conformance: {error:#}");
            failed.push(cases.display().to_string());
        }
    }
    anyhow::ensure!(
        failed.is_empty(),
        "conformance cases failed in {}",
        failed.join(", ")
    );
    Ok(())
}

/// Runs the cases of one directory with the built `agent`.
fn run_dir(agent: &Path, root: &Path, cases: &Path, nodes: u16) -> anyhow::Result<()> {
    println!(
        "conformance: running the cases in {} on {nodes} node{}",
        cases.display(),
        if nodes == 1 { "" } else { "s" }
    );
    run_checked(
        Command::new(agent)
            .current_dir(root)
            .args(["--verbose", "lab", "conformance", "--nodes"])
            .arg(nodes.to_string())
            .arg("--cases")
            .arg(cases),
    )
}
