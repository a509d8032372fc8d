//! `cargo xtask setup`: installs the eBPF toolchain, the lab tools and the
//! container tools with pinned versions; each chore makes sure of only what it
//! needs (`Need`), so a machine without the lab's tools still builds.
//!
//! The userspace crates build with the machine's rustup toolchain. The eBPF crate
//! needs a rustc whose LLVM matches bpf-linker's and whose library sources are on
//! disk for `-Z build-std=core`: Debian's rustc-web 1.96 (LLVM 22) with
//! rust-web-src, and bpf-linker 0.13.0 built against LLVM 22.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{bail, Context};

use crate::run_checked;

/// What a chore needs installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The eBPF toolchain (rustc-web, LLVM 22, bpf-linker).
    Build,
    /// The lab's tools: iproute2 and nftables.
    Lab,
    /// Building and running images without a daemon: buildah, podman, runc.
    Containers,
    /// The end-to-end benchmark's comparison: iptables (its nf_tables backend,
    /// `iptables-nft-restore`).
    Bench,
}

impl Need {
    /// Every need: what `cargo xtask setup` and `cargo xtask test` install.
    pub const ALL: [Need; 4] = [Need::Build, Need::Lab, Need::Containers, Need::Bench];

    /// Its Debian packages and the version glob each must match.
    fn packages(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Need::Build => &[
                ("rustc-web", "1.96.0*"),
                ("rust-web-src", "1.96.0*"),
                ("rust-web-clippy", "1.96.0*"),
                ("llvm-22-dev", "1:22.1*"),
                ("libpolly-22-dev", "1:22.1*"),
                ("zlib1g-dev", "*"),
                ("libzstd-dev", "*"),
            ],
            Need::Lab => &[("iproute2", "*"), ("nftables", "1.0.6*")],
            // runc, not crun: crun refuses hybrid cgroup layouts. binutils:
            // `strip` for the image's binary.
            Need::Containers => &[
                ("buildah", "1.28*"),
                ("podman", "4.3*"),
                ("runc", "*"),
                ("binutils", "*"),
            ],
            Need::Bench => &[("iptables", "1.8.9*")],
        }
    }
}

/// The bpf-linker release the eBPF build is known to work with.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// The rustc that compiles policy-ebpf (from rustc-web).
pub const EBPF_RUSTC: &str = "/usr/bin/rustc";
/// rustc-web's clippy (from rust-web-clippy), which lints policy-ebpf.
pub const CLIPPY_DRIVER: &str = "/usr/bin/clippy-driver";
/// LLVM 22's tool directory; bpf-linker needs it first on PATH to find libLLVM.
pub const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// What is missing on this machine, in install order.
struct Missing {
    /// Debian packages (`name=version-glob`) and the need each serves.
    apt: Vec<(Need, String)>,
    bpf_linker: bool,
}

impl Missing {
    fn packages(&self) -> Vec<&str> {
        self.apt
            .iter()
            .map(|(_, package)| package.as_str())
            .collect()
    }
}

fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}|${Version}", package])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, version) = text.split_once('|')?;
    status.starts_with("ii").then(|| version.to_string())
}

/// Matches a version against a glob that may end in `*`.
fn version_matches(version: &str, glob: &str) -> bool {
    match glob.strip_suffix('*') {
        Some(prefix) => version.starts_with(prefix),
        None => version == glob,
    }
}

/// Path of the bpf-linker binary cargo installs.
pub fn bpf_linker_path() -> std::path::PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| "/root/.cargo".into());
    cargo_home.join("bin").join("bpf-linker")
}

fn bpf_linker_ok() -> bool {
    Command::new(bpf_linker_path())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

fn find_missing(needs: &[Need]) -> Missing {
    let apt = needs
        .iter()
        .flat_map(|need| need.packages().iter().map(move |package| (*need, package)))
        .filter(|(_, (pkg, glob))| {
            !installed_version(pkg).is_some_and(|v| version_matches(&v, glob))
        })
        .map(|(need, (pkg, glob))| (need, format!("{pkg}={glob}")))
        .collect();
    Missing {
        apt,
        bpf_linker: needs.contains(&Need::Build) && !bpf_linker_ok(),
    }
}

/// Whether nothing of `needs` is missing (no install needed).
pub fn ready(needs: &[Need]) -> bool {
    let missing = find_missing(needs);
    missing.apt.is_empty() && !missing.bpf_linker
}

/// Installs what `needs` lack, only when something is missing: each chore calls
/// it with what it uses (the eBPF build through `ebpf::build`, which may use a
/// rustup toolchain instead).
pub fn ensure(needs: &[Need]) -> anyhow::Result<()> {
    let missing = find_missing(needs);
    if missing.apt.is_empty() && !missing.bpf_linker {
        return Ok(());
    }
    install(missing)
}

/// `cargo xtask setup`: checks everything and installs what is missing.
pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let missing = find_missing(&Need::ALL);
    if missing.apt.is_empty() && !missing.bpf_linker {
        eprintln!(
            "setup: everything is already installed (rustc-web 1.96, LLVM 22, bpf-linker {BPF_LINKER_VERSION}, iproute2, nftables, buildah, podman, runc, iptables); checked in {:.1?}",
            started.elapsed()
        );
        return Ok(());
    }
    install(missing)?;
    eprintln!("setup: done in {:.0?}", started.elapsed());
    Ok(())
}

fn install(missing: Missing) -> anyhow::Result<()> {
    let is_root = nix::unistd::geteuid().is_root();
    let has_apt = Path::new("/usr/bin/apt-get").exists();
    if !missing.apt.is_empty() && (!is_root || !has_apt) {
        bail!("{}", cannot_install(&missing, has_apt));
    }
    let packages = missing.packages();
    if !packages.is_empty() {
        let step = Instant::now();
        eprintln!("setup [1/2]: apt-get install {}", packages.join(" "));
        run_checked(Command::new("apt-get").args(["update", "-q"]))
            .context("apt-get update failed")?;
        run_checked(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("apt-get install failed")?;
        eprintln!("setup [1/2]: packages installed in {:.0?}", step.elapsed());
    }
    if missing.bpf_linker {
        let step = Instant::now();
        eprintln!(
            "setup [2/2]: cargo install bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (takes 1-2 minutes)"
        );
        let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
        run_checked(
            Command::new("cargo")
                .args([
                    "install",
                    "--locked",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                ])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("PATH", path)
                .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
        )
        .context("installing bpf-linker failed")?;
        eprintln!(
            "setup [2/2]: bpf-linker installed in {:.0?}",
            step.elapsed()
        );
    }
    Ok(())
}

/// What to tell a user setup cannot install for: on Debian without root, the
/// `apt-get` line; elsewhere, per need, what to install from where (for the
/// build, the usual aya toolchain, which `cargo xtask build-ebpf` uses).
fn cannot_install(missing: &Missing, has_apt: bool) -> String {
    let packages = missing.packages();
    if has_apt {
        return format!(
            "setup needs these Debian packages and cannot install them (not running as root): {}\n\
             install them by hand as root: apt-get install -y {}",
            packages.join(" "),
            packages.join(" ")
        );
    }
    let mut needs: Vec<Need> = missing.apt.iter().map(|(need, _)| *need).collect();
    needs.dedup();
    let lines: Vec<String> = needs
        .into_iter()
        .map(|need| match need {
            Need::Build => "- the eBPF build: a nightly Rust with rust-src \
                 (`rustup toolchain install nightly --component rust-src`) and bpf-linker on PATH \
                 (`cargo install bpf-linker`); `cargo xtask build-ebpf` uses them when it finds them"
                .to_string(),
            Need::Lab => "- the lab: iproute2 (`ip`) and nftables (`nft`), from your distribution".to_string(),
            Need::Containers => "- the image: buildah, podman, runc and binutils (`strip`), from your distribution"
                .to_string(),
            Need::Bench => "- the end-to-end benchmark: iptables with its nf_tables backend (`iptables-nft-restore`), from your distribution"
                .to_string(),
        })
        .collect();
    format!(
        "setup installs with apt-get on Debian 12 and there is no apt-get here; install these yourself:\n{}",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_apt_setup_names_what_to_install_for_each_need_it_lacks() {
        let missing = Missing {
            apt: vec![
                (Need::Build, "rustc-web=1.96.0*".to_string()),
                (Need::Build, "rust-web-src=1.96.0*".to_string()),
                (Need::Containers, "buildah=1.28*".to_string()),
            ],
            bpf_linker: true,
        };
        let said = cannot_install(&missing, false);
        assert!(
            said.contains("rustup toolchain install nightly --component rust-src"),
            "{said}"
        );
        assert!(said.contains("cargo install bpf-linker"), "{said}");
        assert!(said.contains("buildah, podman, runc"), "{said}");
        assert!(
            !said.contains("nftables"),
            "the lab was not asked for: {said}"
        );
        assert_eq!(said.lines().count(), 3, "{said}");
        let on_debian = cannot_install(&missing, true);
        assert!(
            on_debian.contains(
                "apt-get install -y rustc-web=1.96.0* rust-web-src=1.96.0* buildah=1.28*"
            ),
            "{on_debian}"
        );
    }

    #[test]
    fn version_glob_matches_prefix_only() {
        assert!(version_matches("1.96.0+dfsg1-1~deb12u2", "1.96.0*"));
        assert!(!version_matches("1.97.0+dfsg1-1", "1.96.0*"));
        assert!(version_matches("2.0", "*"));
        assert!(version_matches("2.0", "2.0"));
        assert!(!version_matches("2.0.1", "2.0"));
    }
}
