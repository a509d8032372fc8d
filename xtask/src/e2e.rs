//! `cargo xtask e2e`: podwall on a real cluster. Makes a kind cluster (one
//! control plane, two workers: `tests/e2e/kind.yaml`), builds the image and loads
//! it into the nodes, applies `deploy/base` pinned to that image, waits for the
//! DaemonSet's rollout, then runs the conformance cases and the examples on the
//! cluster (`policy-agent e2e`, hidden): pods from agnhost, probes with `kubectl
//! exec`. Without docker or kind it stops at once, naming what is missing, and
//! fails: it never reports a pass it did not run.

use std::{path::Path, process::Command};

use anyhow::{bail, Context};

use crate::{build_agent, conformance::DEFAULT_CASES, image, run_checked, workspace_root};

/// The kind cluster's name.
const CLUSTER: &str = "podwall-e2e";
/// The kind configuration, relative to the workspace root.
const KIND_CONFIG: &str = "tests/e2e/kind.yaml";

/// The tools the run needs and what each is for.
const TOOLS: [(&str, &str); 3] = [
    ("docker", "kind runs its nodes as docker containers"),
    ("kind", "makes the cluster, https://kind.sigs.k8s.io"),
    ("kubectl", "applies the manifests and runs the probes"),
];

/// Which of `TOOLS` `usable` says are missing, as lines naming each and why it is needed.
fn missing_tools(usable: impl Fn(&str) -> bool) -> Vec<String> {
    TOOLS
        .iter()
        .filter(|(tool, _)| !usable(tool))
        .map(|(tool, why)| format!("{tool} ({why})"))
        .collect()
}

/// Whether `tool` runs here (docker: and reaches its engine).
fn usable(tool: &str) -> bool {
    let args: &[&str] = match tool {
        "docker" => &["info", "--format", "{{.ServerVersion}}"],
        "kubectl" => &["version", "--client"],
        _ => &["version"],
    };
    Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The kustomization that deploys `deploy/base` with the image `reference`
/// (what `cargo xtask image` tagged this build), written under `dir`, which is
/// `levels` directories below the workspace root.
fn overlay(reference: &str, levels: usize) -> anyhow::Result<String> {
    let Some((name, tag)) = reference.rsplit_once(':') else {
        bail!("image reference without a tag: {reference}");
    };
    let up = "../".repeat(levels);
    Ok(format!(
        "# Written by `cargo xtask e2e`: deploy/base with the image it built.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n  - {up}deploy/base\n\
         images:\n  - name: {name}\n    newTag: \"{tag}\"\n"
    ))
}

/// Runs the whole e2e: cluster, image, deploy, cases, examples; the cluster is
/// deleted at the end unless `keep`.
pub fn run(keep: bool) -> anyhow::Result<()> {
    let missing = missing_tools(usable);
    if !missing.is_empty() {
        bail!(
            "e2e needs a kind cluster and cannot make one here; missing: {}",
            missing.join(", ")
        );
    }
    let root = workspace_root();
    let work = root.join("target/e2e");
    std::fs::create_dir_all(&work).context("creating target/e2e")?;
    let kubeconfig = work.join("kubeconfig");
    let built = image::build()?;
    println!("e2e [1/5]: kind cluster {CLUSTER} ({KIND_CONFIG})");
    let _ = Command::new("kind")
        .args(["delete", "cluster", "--name", CLUSTER])
        .output();
    run_checked(
        Command::new("kind")
            .args([
                "create", "cluster", "--name", CLUSTER, "--wait", "300s", "--config",
            ])
            .arg(root.join(KIND_CONFIG))
            .arg("--kubeconfig")
            .arg(&kubeconfig),
    )?;
    let result = mount_bpffs_on_nodes().and_then(|()| {
        deploy_and_test(&root, &work, &kubeconfig, &built.reference, &built.archive)
    });
    if keep {
        println!("e2e: kept the cluster: KUBECONFIG={}", kubeconfig.display());
    } else {
        let _ = Command::new("kind")
            .args(["delete", "cluster", "--name", CLUSTER])
            .output();
    }
    result
}

/// Gives every node its own bpffs at /sys/fs/bpf where it has none (the agent
/// pins there and never mounts it itself; on a real node the host's init
/// system mounts it).
fn mount_bpffs_on_nodes() -> anyhow::Result<()> {
    let out = Command::new("kind")
        .args(["get", "nodes", "--name", CLUSTER])
        .output()
        .context("kind get nodes")?;
    let nodes = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(!nodes.trim().is_empty(), "kind lists no nodes of {CLUSTER}");
    for node in nodes.split_whitespace() {
        run_checked(Command::new("docker").args([
            "exec",
            node,
            "sh",
            "-c",
            "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf",
        ]))?;
    }
    Ok(())
}

fn deploy_and_test(
    root: &Path,
    work: &Path,
    kubeconfig: &Path,
    reference: &str,
    archive: &Path,
) -> anyhow::Result<()> {
    println!("e2e [2/5]: loading {reference} into the nodes");
    run_checked(
        Command::new("kind")
            .args(["load", "image-archive", "--name", CLUSTER])
            .arg(archive),
    )?;
    println!("e2e [3/5]: kubectl apply -k deploy/base (image {reference})");
    let overlay_dir = work.join("overlay");
    std::fs::create_dir_all(&overlay_dir)?;
    std::fs::write(
        overlay_dir.join("kustomization.yaml"),
        overlay(reference, 3)?,
    )?;
    let kubectl = |args: &[&str]| {
        let mut command = Command::new("kubectl");
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args);
        command
    };
    run_checked(&mut kubectl(&[
        "apply",
        "-k",
        &overlay_dir.display().to_string(),
    ]))?;
    run_checked(&mut kubectl(&[
        "rollout",
        "status",
        "daemonset/podwall",
        "--namespace",
        "podwall-system",
        "--timeout=300s",
    ]))?;
    let agent = build_agent("e2e")?;
    let on_cluster = |what: &[&str]| -> Command {
        let mut command = Command::new(&agent);
        command
            .current_dir(root)
            .arg("e2e")
            .args(what)
            .arg(format!("--kubeconfig={}", kubeconfig.display()));
        command
    };
    println!("e2e [4/5]: conformance cases ({DEFAULT_CASES}) on the cluster");
    let cases = run_checked(&mut on_cluster(&["conformance", "--cases", DEFAULT_CASES]));
    println!("e2e [5/5]: the examples (deploy/examples) on the cluster");
    let examples = run_checked(&mut on_cluster(&["examples", "--dir", "deploy/examples"]));
    cases.and(examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_what_it_is_for() {
        let missing = missing_tools(|tool| tool == "kubectl");
        assert_eq!(
            missing,
            [
                "docker (kind runs its nodes as docker containers)",
                "kind (makes the cluster, https://kind.sigs.k8s.io)"
            ]
        );
        assert!(missing_tools(|_| true).is_empty());
    }

    #[test]
    fn the_overlay_deploys_the_base_with_the_built_tag() {
        let text = overlay("podwall/policy-agent:0.1.0-3f2a9c1d0b7e", 3).unwrap_or_default();
        assert!(
            text.contains("resources:\n  - ../../../deploy/base\n"),
            "{text}"
        );
        assert!(
            text.contains("  - name: podwall/policy-agent\n    newTag: \"0.1.0-3f2a9c1d0b7e\"\n"),
            "{text}"
        );
        assert!(overlay("podwall/policy-agent", 3).is_err());
    }

    #[test]
    fn kubectl_renders_the_overlay_with_the_built_image() {
        let dir = workspace_root().join("target/e2e/overlay-render-test");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let text = overlay("podwall/policy-agent:0.1.0-render", 3).unwrap_or_default();
        std::fs::write(dir.join("kustomization.yaml"), text).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("this test renders with `kubectl kustomize` and needs kubectl: {e}")
            });
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            rendered.contains("image: podwall/policy-agent:0.1.0-render"),
            "{rendered}"
        );
    }
}
