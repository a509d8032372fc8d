//! `cargo xtask test`: the whole suite. The eBPF object and the container image
//! (`cargo xtask image`, which a test runs under podman), formatting and clippy
//! (-D warnings), then every unit test and the lab integration tests on the real
//! kernel, then the conformance cases (`cargo xtask conformance`). The kernel
//! tests need root and BPF; without them they fail and say so.

use std::process::Command;

use crate::{conformance, ebpf, image, run_checked, setup, workspace_root};

/// Runs every check in order; the first failure stops the run.
pub fn run() -> anyhow::Result<()> {
    setup::ensure(&[setup::Need::Lab, setup::Need::Containers])?;
    ebpf::build()?;
    println!("test [0/4]: the container image (cargo xtask image)");
    image::run()?;
    let root = workspace_root();
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "test: not running as root: unit tests will pass, but the lab and conformance \
             tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) and will fail"
        );
    }
    println!("test [1/4]: cargo fmt --check");
    run_checked(
        Command::new("cargo")
            .current_dir(&root)
            .args(["fmt", "--all", "--check"]),
    )?;
    run_checked(
        Command::new("cargo")
            .current_dir(root.join("policy-ebpf"))
            .args(["fmt", "--check"]),
    )?;
    println!("test [2/4]: cargo clippy -D warnings");
    run_checked(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("test [2/4]: clippy on the agent the image ships (no default features), -D warnings");
    run_checked(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--package",
        "policy-agent",
        "--no-default-features",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("test [2/4]: clippy on policy-ebpf, -D warnings");
    ebpf::clippy()?;
    println!("test [3/4]: cargo test (unit, lab, CLI and conformance-runner tests)");
    run_checked(
        Command::new("cargo")
            .current_dir(&root)
            .args(["test", "--workspace"]),
    )?;
    println!(
        "test [4/4]: conformance cases ({} and {}), on one node, then on three",
        conformance::DEFAULT_CASES,
        conformance::CLUSTER_CASES
    );
    conformance::run_cases(None, 1)?;
    conformance::run_cases(None, 3)
}
