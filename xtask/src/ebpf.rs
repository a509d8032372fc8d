//! `cargo xtask build-ebpf`: compiles policy-ebpf for bpfel-unknown-none.
//!
//! Uses rustc-web (LLVM 22, library sources on disk for `-Z build-std=core`) and
//! bpf-linker from `setup`; the host crates keep the rustup toolchain. The object
//! lands where the agent looks for it by default (see `policy-agent`'s
//! `dataplane::object`), so nobody passes a path.

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::Context;

use crate::{
    run_checked,
    setup::{bpf_linker_path, EBPF_RUSTC, LLVM_BIN},
    workspace_root,
};

const EBPF_TARGET: &str = "bpfel-unknown-none";

/// Where the built object lands: target/ebpf/bpfel-unknown-none/release/policy-ebpf.
pub fn object_path() -> PathBuf {
    workspace_root()
        .join("target/ebpf")
        .join(EBPF_TARGET)
        .join("release/policy-ebpf")
}

/// Builds the eBPF object and returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let root = workspace_root();
    let linker_dir = bpf_linker_path()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = format!(
        "{LLVM_BIN}:{}:{}",
        linker_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    println!("build-ebpf: compiling policy-ebpf for {EBPF_TARGET} (the first build also compiles core, about a minute)");
    run_checked(
        Command::new("cargo")
            .current_dir(root.join("policy-ebpf"))
            .args(["build", "--locked", "--release", "--target", EBPF_TARGET])
            .args(["-Z", "build-std=core"])
            .env("RUSTC", EBPF_RUSTC)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", root.join("target/ebpf"))
            .env("PATH", path)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    )
    .context("building policy-ebpf failed")?;
    let object = object_path();
    anyhow::ensure!(
        object.exists(),
        "build-ebpf finished but {} is missing",
        object.display()
    );
    println!(
        "build-ebpf: {} ({:.1?})",
        object.display(),
        started.elapsed()
    );
    Ok(object)
}
