//! `cargo xtask image`: the DaemonSet's container image, built without a Docker
//! daemon and without a base image (none can be pulled here). It lays out the
//! image's whole file tree in `target/image/rootfs` (`stage`), exactly what the
//! agent needs to run:
//! - `/usr/bin/policy-agent`, built with the `shipped` profile (release with
//!   LTO) without the default features (no lab, no benchmarks, no test hooks),
//!   stripped of symbols;
//! - `/usr/lib/podwall/policy-ebpf.o`, where the agent looks for its object
//!   (`dataplane::object`);
//! - the shared libraries the binary links (as `ldd` lists them) and the loader,
//!   each at the path the binary asks for;
//!
//! then `buildah build`s `deploy/image/Containerfile` (`FROM scratch`, that tree)
//! with `target/image` as the context, so the file others build with a daemon
//! is the one tested here. The image goes to the local containers storage as
//! `podwall/policy-agent:<tag>` and `podwall/policy-agent:<version>` (the tag
//! `deploy/base/kustomization.yaml` names), and to an OCI archive beside its tag
//! under `target/image/`. The tag is the version and the git commit
//! (`0.1.0-3f2a9c1d0b7e`, with `-dirty` when the tree has uncommitted changes).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

use crate::{build_agent_profile, ebpf, run_checked, setup, workspace_root, AgentBuild};

/// The image's name, as the DaemonSet names it.
pub const IMAGE_NAME: &str = "podwall/policy-agent";
/// Where the agent binary goes in the image.
const AGENT_PATH: &str = "/usr/bin/policy-agent";
/// Where the eBPF object goes: the last place `dataplane::object` looks.
const OBJECT_PATH: &str = "/usr/lib/podwall/policy-ebpf.o";
/// The image's definition, relative to the workspace root; its build context
/// is `target/image`.
const CONTAINERFILE: &str = "deploy/image/Containerfile";

/// What `cargo xtask image` made.
pub struct Built {
    /// `podwall/policy-agent:<version>-<commit>`.
    pub reference: String,
    /// The OCI archive.
    pub archive: PathBuf,
    /// The image's size unpacked, in bytes.
    pub size: u64,
}

/// The directory of the archive and the tag file.
pub fn output_dir() -> PathBuf {
    workspace_root().join("target/image")
}

/// `target/image/policy-agent.tar`: the OCI archive of the last build.
pub fn archive_path() -> PathBuf {
    output_dir().join("policy-agent.tar")
}

/// `target/image/rootfs`: the image's files, as the Containerfile copies them.
pub fn rootfs_dir() -> PathBuf {
    output_dir().join("rootfs")
}

/// `target/image/policy-agent.tag`: the archive's reference, one line.
pub fn tag_path() -> PathBuf {
    output_dir().join("policy-agent.tag")
}

/// Builds the image and its archive.
pub fn run() -> anyhow::Result<()> {
    let built = build()?;
    let archived = std::fs::metadata(&built.archive)
        .map(|m| m.len())
        .unwrap_or_default();
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "image: {} ({:.1} MiB; archive {}, {:.1} MiB compressed; tag in {})",
        built.reference,
        mib(built.size),
        built.archive.display(),
        mib(archived),
        tag_path().display()
    );
    Ok(())
}

/// Builds the image, commits it to the local storage and writes the archive.
pub fn build() -> anyhow::Result<Built> {
    setup::ensure(&[setup::Need::Containers])?;
    let files = stage()?;
    let tag = tag()?;
    let reference = format!("{IMAGE_NAME}:{tag}");
    let moving = format!("{IMAGE_NAME}:{}", env!("CARGO_PKG_VERSION"));
    println!("image: building {reference} from scratch with buildah: {files} files");
    let previous = image_id(&moving);
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    output(
        Command::new("buildah")
            .args(["build", "--quiet", "--layers=false"])
            .arg("--file")
            .arg(workspace_root().join(CONTAINERFILE))
            .args(["--tag", &reference, "--tag", &moving])
            .args([
                "--label",
                &format!(
                    "org.opencontainers.image.version={}",
                    env!("CARGO_PKG_VERSION")
                ),
                "--label",
                &format!("org.opencontainers.image.revision={commit}"),
            ])
            .arg(output_dir()),
    )?;
    // The previous build, unless another tag still names it (then rmi refuses).
    if let Some(previous) = previous.filter(|id| image_id(&moving).as_ref() != Some(id)) {
        let _ = Command::new("buildah").args(["rmi", &previous]).output();
    }
    let archive = archive_path();
    let _ = std::fs::remove_file(&archive);
    // Named fully in the archive: containerd (`ctr import`, `kind load`) keeps an
    // OCI archive's name as written, and a kubelet looks for `docker.io/...`.
    run_checked(Command::new("buildah").args([
        "push",
        "--quiet",
        &reference,
        &format!("oci-archive:{}:docker.io/{reference}", archive.display()),
    ]))?;
    std::fs::write(tag_path(), format!("{reference}\n")).context("writing the tag file")?;
    Ok(Built {
        size: image_id(&reference)
            .and_then(|id| {
                output(Command::new("podman").args([
                    "image",
                    "inspect",
                    "--format",
                    "{{.Size}}",
                    &id,
                ]))
                .ok()
            })
            .and_then(|size| size.parse().ok())
            .unwrap_or_default(),
        reference,
        archive,
    })
}

/// Builds the agent (the `shipped` profile) and the eBPF object and lays out the
/// image's whole file tree in `target/image/rootfs`, which the Containerfile
/// copies; returns how many files it holds.
pub fn stage() -> anyhow::Result<usize> {
    let object = ebpf::build()?;
    let agent = build_agent_profile("image", AgentBuild::Shipped)?;
    let rootfs = rootfs_dir();
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)
            .with_context(|| format!("removing the old {}", rootfs.display()))?;
    }
    let place = |to: &str| -> anyhow::Result<PathBuf> {
        let path = rootfs.join(to.trim_start_matches('/'));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(path)
    };
    run_checked(
        Command::new("strip")
            .arg("--strip-all")
            .arg(&agent)
            .arg("-o")
            .arg(place(AGENT_PATH)?),
    )?;
    std::fs::copy(&object, place(OBJECT_PATH)?).context("copying the eBPF object")?;
    let libraries = runtime_files(&agent)?;
    for library in &libraries {
        let to = library
            .to_str()
            .with_context(|| format!("library path {} is not UTF-8", library.display()))?;
        // The file itself at the path the binary names (copy follows symlinks).
        std::fs::copy(library, place(to)?)
            .with_context(|| format!("copying {}", library.display()))?;
    }
    Ok(2 + libraries.len())
}

/// The id of the local image `reference`, if there is one.
fn image_id(reference: &str) -> Option<String> {
    output(Command::new("buildah").args([
        "inspect",
        "--type",
        "image",
        "--format",
        "{{.FromImageID}}",
        reference,
    ]))
    .ok()
}

/// The files the dynamic loader needs to start `binary`: every library `ldd`
/// resolves, and the loader itself (the vDSO is the kernel's, not a file).
fn runtime_files(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let listing = output(Command::new("ldd").arg(binary))?;
    let files = parse_ldd(&listing)?;
    if files.is_empty() {
        bail!("ldd lists nothing for {}: is it static? (then no runtime files are needed, but the build here is dynamic)", binary.display());
    }
    Ok(files)
}

/// The absolute paths in `ldd` output: `name => /path (addr)` and the loader's
/// `/path (addr)`; fails on a library ldd could not find.
pub fn parse_ldd(listing: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("ldd cannot resolve a library of the agent: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(path));
        }
    }
    Ok(files)
}

/// `<version>-<12 hex digits of the commit>`, `-dirty` when the tree has
/// uncommitted changes or untracked files; `<version>-unknown` outside a git
/// checkout.
fn tag() -> anyhow::Result<String> {
    let version = env!("CARGO_PKG_VERSION");
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return Ok(format!("{version}-unknown"));
    };
    let dirty = git(&["status", "--porcelain"]).is_some_and(|status| !status.is_empty());
    Ok(format_tag(version, &commit, dirty))
}

/// The tag of a build of `version` at `commit`.
pub fn format_tag(version: &str, commit: &str, dirty: bool) -> String {
    format!("{version}-{commit}{}", if dirty { "-dirty" } else { "" })
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(workspace_root())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `cmd` and returns its stdout, trimmed; fails with its stderr.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_each_library_and_the_loader_but_not_the_vdso() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f01)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n";
        let files = parse_ldd(listing).unwrap_or_default();
        assert_eq!(
            files,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_library_ldd_cannot_find_stops_the_build() {
        let listing = "\tlibfoo.so.1 => not found\n\t/lib64/ld-linux-x86-64.so.2 (0x1)\n";
        let error = parse_ldd(listing).err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("libfoo.so.1")),
            "{error:?}"
        );
    }

    #[test]
    fn the_tag_is_the_version_and_commit_and_says_when_the_tree_was_dirty() {
        assert_eq!(
            format_tag("0.1.0", "3f2a9c1d0b7e", false),
            "0.1.0-3f2a9c1d0b7e"
        );
        assert_eq!(
            format_tag("0.1.0", "3f2a9c1d0b7e", true),
            "0.1.0-3f2a9c1d0b7e-dirty"
        );
    }
}
