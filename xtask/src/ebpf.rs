//! `cargo xtask build-ebpf`: compiles policy-ebpf for bpfel-unknown-none.
//!
//! Two compilers can (`Compiler`): setup's, Debian's rustc-web (LLVM 22, library
//! sources on disk for `-Z build-std=core`) with the bpf-linker setup builds; or
//! the usual aya toolchain, a rustup toolchain with `rust-src` (nightly unless
//! `PODWALL_EBPF_TOOLCHAIN` names another) and `bpf-linker` on PATH. Setup's is
//! used when it is installed, else the aya one when it is there, else setup
//! installs its own (on Debian) or names what to install. The host crates keep
//! the rustup toolchain. The object lands where the agent looks for it by default
//! (see `policy-agent`'s `dataplane::object`), so nobody passes a path.

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::Context;

use crate::{
    run_checked,
    setup::{self, bpf_linker_path, Need, CLIPPY_DRIVER, EBPF_RUSTC, LLVM_BIN},
    workspace_root,
};

/// Names the compiler: `debian` (setup's) or a rustup toolchain.
pub const TOOLCHAIN_ENV: &str = "PODWALL_EBPF_TOOLCHAIN";
/// The rustup toolchain tried when setup's compiler is not installed.
const DEFAULT_RUSTUP_TOOLCHAIN: &str = "nightly";

/// The compiler that builds policy-ebpf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compiler {
    /// Debian's rustc-web with setup's bpf-linker (installed by setup if missing).
    Debian,
    /// A rustup toolchain with rust-src, bpf-linker on PATH.
    Rustup(String),
}

/// Which compiler to use: `forced` (`$PODWALL_EBPF_TOOLCHAIN`) if set, else
/// setup's when installed, else the rustup toolchain when it lacks nothing
/// (`rustup_lacks` says what it lacks), else setup's (to be installed).
fn decide(
    forced: Option<&str>,
    debian_ready: bool,
    rustup_lacks: impl FnOnce(&str) -> Vec<String>,
) -> Result<Compiler, String> {
    match forced {
        Some("debian") => Ok(Compiler::Debian),
        Some(name) => {
            let lacks = rustup_lacks(name);
            if lacks.is_empty() {
                Ok(Compiler::Rustup(name.to_string()))
            } else {
                Err(format!(
                    "{TOOLCHAIN_ENV}={name}, but it lacks: {}",
                    lacks.join("; ")
                ))
            }
        }
        None if debian_ready => Ok(Compiler::Debian),
        None if rustup_lacks(DEFAULT_RUSTUP_TOOLCHAIN).is_empty() => {
            Ok(Compiler::Rustup(DEFAULT_RUSTUP_TOOLCHAIN.to_string()))
        }
        None => Ok(Compiler::Debian),
    }
}

/// What rustup toolchain `name` lacks to build policy-ebpf (empty: nothing),
/// each with the command that adds it. Reads only what is on disk: rustup is
/// never asked to download.
fn rustup_lacks(name: &str) -> Vec<String> {
    let sysroot = Command::new("rustup")
        .args(["run", name, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let mut lacks = Vec::new();
    match sysroot {
        None => lacks.push(format!(
            "the rustup toolchain itself (`rustup toolchain install {name} --component rust-src`)"
        )),
        Some(sysroot) if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() => lacks.push(
            format!("rust-src (`rustup component add rust-src --toolchain {name}`)"),
        ),
        Some(_) => {}
    }
    if !on_path("bpf-linker") {
        lacks.push("bpf-linker on PATH (`cargo install bpf-linker`)".to_string());
    }
    lacks
}

/// Whether an executable `name` is in a directory of PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// The compiler this machine builds policy-ebpf with; installs setup's when it
/// is the one and is missing.
pub fn compiler() -> anyhow::Result<Compiler> {
    let forced = std::env::var(TOOLCHAIN_ENV).ok().filter(|v| !v.is_empty());
    let compiler = decide(
        forced.as_deref(),
        setup::ready(&[Need::Build]),
        rustup_lacks,
    )
    .map_err(anyhow::Error::msg)?;
    if compiler == Compiler::Debian {
        setup::ensure(&[Need::Build])?;
    }
    Ok(compiler)
}

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
    let compiler = compiler()?;
    let root = workspace_root();
    let with = match &compiler {
        Compiler::Debian => "rustc-web".to_string(),
        Compiler::Rustup(toolchain) => format!("rustup toolchain {toolchain}"),
    };
    eprintln!("build-ebpf: compiling policy-ebpf for {EBPF_TARGET} with {with} (the first build also compiles core, about a minute)");
    run_checked(
        cargo(&compiler, "build")
            .env("CARGO_TARGET_DIR", root.join("target/ebpf"))
            .env_remove("RUSTFLAGS"),
    )
    .context("building policy-ebpf failed")?;
    let object = object_path();
    anyhow::ensure!(
        object.exists(),
        "build-ebpf finished but {} is missing",
        object.display()
    );
    eprintln!(
        "build-ebpf: {} ({:.1?})",
        object.display(),
        started.elapsed()
    );
    Ok(object)
}

/// Runs clippy over policy-ebpf for its target, warnings as errors: setup's
/// `clippy-driver` (rust-web-clippy) wrapping rustc-web, or the rustup
/// toolchain's `cargo clippy`. A target directory of its own, so the object's
/// build is untouched.
pub fn clippy() -> anyhow::Result<()> {
    let compiler = compiler()?;
    let root = workspace_root();
    let mut command = match &compiler {
        Compiler::Debian => {
            let mut command = cargo(&compiler, "check");
            command.env("RUSTC_WORKSPACE_WRAPPER", CLIPPY_DRIVER);
            command
        }
        Compiler::Rustup(_) => cargo(&compiler, "clippy"),
    };
    run_checked(
        command
            .env("CARGO_TARGET_DIR", root.join("target/ebpf-clippy"))
            // Only policy-ebpf's own lints: cargo caps them for core.
            .env("RUSTFLAGS", "-D warnings"),
    )
    .context("clippy on policy-ebpf found something")
}

/// `cargo <subcommand>` over policy-ebpf for its target with `compiler`,
/// `-Z build-std=core`, locked and optimized.
fn cargo(compiler: &Compiler, subcommand: &str) -> Command {
    let root = workspace_root();
    let mut cargo = match compiler {
        Compiler::Debian => {
            let linker_dir = bpf_linker_path()
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default();
            let path = format!(
                "{LLVM_BIN}:{}:{}",
                linker_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let mut cargo = Command::new("cargo");
            cargo
                .env("RUSTC", EBPF_RUSTC)
                // rustc-web is a stable compiler; build-std and the BPF asm
                // feature need nightly features.
                .env("RUSTC_BOOTSTRAP", "1")
                .env("PATH", path);
            cargo
        }
        Compiler::Rustup(toolchain) => {
            let mut cargo = Command::new("rustup");
            // RUSTC_BOOTSTRAP too: harmless on a nightly, and it lets a stable
            // toolchain with rust-src build as well.
            cargo
                .args(["run", toolchain, "cargo"])
                .env_remove("RUSTC")
                .env("RUSTC_BOOTSTRAP", "1");
            cargo
        }
    };
    cargo
        .current_dir(root.join("policy-ebpf"))
        .args([subcommand, "--locked", "--release", "--target", EBPF_TARGET])
        .args(["-Z", "build-std=core"])
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cargo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lacks_nothing(_: &str) -> Vec<String> {
        Vec::new()
    }

    fn lacks_rust_src(name: &str) -> Vec<String> {
        vec![format!(
            "rust-src (`rustup component add rust-src --toolchain {name}`)"
        )]
    }

    #[test]
    fn setups_compiler_comes_first_then_a_complete_nightly_then_setup_installs_its_own() {
        assert_eq!(decide(None, true, lacks_nothing), Ok(Compiler::Debian));
        assert_eq!(
            decide(None, false, lacks_nothing),
            Ok(Compiler::Rustup("nightly".into()))
        );
        assert_eq!(decide(None, false, lacks_rust_src), Ok(Compiler::Debian));
    }

    #[test]
    fn a_named_toolchain_is_used_or_refused_naming_what_it_lacks() {
        assert_eq!(
            decide(Some("nightly-2026-11-01"), true, lacks_nothing),
            Ok(Compiler::Rustup("nightly-2026-11-01".into()))
        );
        assert_eq!(
            decide(Some("debian"), false, lacks_rust_src),
            Ok(Compiler::Debian)
        );
        let refused = decide(Some("nightly"), true, lacks_rust_src);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("rustup component add rust-src --toolchain nightly")),
            "{refused:?}"
        );
    }
}
