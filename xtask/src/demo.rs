//! `cargo xtask demo`: the secure-app tutorial on real packets. Installs what is
//! missing, builds the eBPF object and the agent, then runs `policy-agent lab tour`
//! over deploy/examples/secure-app with every step in steps/.

use std::process::Command;

use anyhow::Context;

use crate::{build_agent, ebpf, run_checked, setup, workspace_root};

/// Runs the demo from start to end without input.
pub fn run() -> anyhow::Result<()> {
    setup::ensure(&[setup::Need::Lab])?;
    ebpf::build()?;
    let root = workspace_root();
    let agent = build_agent("demo")?;
    // Relative to the workspace root (the tour's working directory), for short output.
    let example = std::path::Path::new("deploy/examples/secure-app");
    let mut steps: Vec<_> = std::fs::read_dir(root.join(example).join("steps"))
        .context("reading deploy/examples/secure-app/steps")?
        .filter_map(Result::ok)
        .map(|entry| example.join("steps").join(entry.file_name()))
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    steps.sort();
    println!(
        "demo: the secure-app tutorial, {} steps, on real packets in a local lab\n",
        steps.len()
    );
    let mut tour = Command::new(agent);
    tour.current_dir(&root)
        .args(["lab", "tour", "--show-drops", "-f"])
        .arg(example.join("cluster.yaml"));
    for step in &steps {
        tour.arg("--step").arg(step);
    }
    run_checked(&mut tour)
}
