//! `cargo xtask`: the project's chores. Owns installing the toolchain, building the
//! eBPF object and driving the test suite, conformance run, demo and benchmarks; imports
//! nothing from the agent.

mod bench;
mod conformance;
mod demo;
mod e2e;
mod ebpf;
mod image;
mod setup;
mod test;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "podwall project chores")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the eBPF build and the lab need (idempotent, pinned versions).
    Setup,
    /// Build policy-ebpf for bpfel-unknown-none, with setup's rustc-web, or a
    /// rustup toolchain with rust-src and bpf-linker on PATH (nightly, or
    /// $PODWALL_EBPF_TOOLCHAIN).
    BuildEbpf,
    /// Run the whole test suite: lints, unit tests, lab tests and conformance cases.
    Test,
    /// Run the upstream NetworkPolicy and ClusterNetworkPolicy conformance cases in
    /// a lab (needs root).
    Conformance {
        /// A directory of case files (*.yaml); default tests/data/conformance, then
        /// tests/data/cluster-conformance.
        #[arg(long)]
        cases: Option<PathBuf>,
        /// How many lab nodes the pods are spread over (most probes then cross
        /// nodes and go through Services with remote backends).
        #[arg(long, default_value_t = 1)]
        nodes: u16,
    },
    /// Walk through the secure-app tutorial on real packets in a local lab.
    Demo,
    /// Build the DaemonSet's container image from scratch with buildah (no
    /// daemon): an OCI archive and its tag under target/image/.
    Image,
    /// podwall on a kind cluster (needs docker and kind): the image, deploy/,
    /// then the conformance cases and the examples on real nodes.
    E2e {
        /// Keep the cluster afterwards (its kubeconfig is target/e2e/kubeconfig).
        #[arg(long)]
        keep: bool,
    },
    /// Benchmarks (need root); not pass/fail.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// ns/packet of each datapath path against an empty classifier, with
    /// BPF_PROG_TEST_RUN (see docs/benchmarks.md).
    Datapath {
        /// Passed on to `policy-agent bench datapath`: --runs N, --repeat N,
        /// --peers N,N,N, --cidr-prefixes N, --cpu N.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The agent's side: full compile time and peak RSS at 1k pods x 100 policies
    /// and 10k x 1k, and watch event -> maps programmed -> first packet latency at
    /// 10k x 1k (see docs/benchmarks.md).
    Agent {
        /// Passed on to `policy-agent bench agent`: --scales 1000x100,10000x1000,
        /// --compile-runs N, --latency-scale 10000x1000, --iterations N.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// TCP_RR, TCP_CRR, TCP_STREAM and UDP_RR between lab pods, same node and
    /// across nodes, under podwall, iptables-nft and nftables at 1k and 10k
    /// scale, as ratios to nothing attached (see docs/benchmarks.md).
    E2e {
        /// Passed on to `policy-agent bench e2e`: --duration-ms N,
        /// --repetitions N, --configs nothing,podwall-1k,..., --tests
        /// tcp_rr,..., --placements same-node,across-nodes, --pairs
        /// isolated,unselected, --vxlan, --client-cpu N, --server-cpu N.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::BuildEbpf => ebpf::build().map(|_| ()),
        Command::Test => test::run(),
        Command::Conformance { cases, nodes } => conformance::run(cases.as_deref(), nodes),
        Command::Demo => demo::run(),
        Command::Image => image::run(),
        Command::E2e { keep } => e2e::run(keep),
        Command::Bench {
            bench: Bench::Datapath { args },
        } => bench::datapath(&args),
        Command::Bench {
            bench: Bench::Agent { args },
        } => bench::agent(&args),
        Command::Bench {
            bench: Bench::E2e { args },
        } => bench::e2e(&args),
    }
}

/// The workspace root (the folder above xtask/).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// Runs a command with inherited output and fails with its command line if it fails.
pub fn run_checked(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        anyhow::bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Builds `policy-agent` (debug) and returns the path of the binary; `task` names
/// the chore in the progress line.
pub fn build_agent(task: &str) -> anyhow::Result<PathBuf> {
    build_agent_profile(task, AgentBuild::Debug)
}

/// Which `policy-agent` a chore needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AgentBuild {
    /// Unoptimized, every feature: the tests and the lab.
    Debug,
    /// Optimized, every feature: the benchmarks.
    Release,
    /// Optimized as one program (the `shipped` profile: LTO, one codegen unit),
    /// without the lab, the benchmarks and the test hooks: what the image the
    /// DaemonSet runs carries. It lands in `target/shipped/`, apart from the
    /// release build.
    Shipped,
}

/// Builds `policy-agent` as `build` says and returns the path of the binary;
/// `task` names the chore in the progress line.
pub fn build_agent_profile(task: &str, build: AgentBuild) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let profile = match build {
        AgentBuild::Debug => "debug",
        AgentBuild::Release => "release",
        AgentBuild::Shipped => "shipped: release with LTO, node agent only",
    };
    eprintln!("{task}: building policy-agent ({profile})");
    let mut cargo = std::process::Command::new("cargo");
    cargo
        .current_dir(&root)
        .args(["build", "--quiet", "--package", "policy-agent"])
        // Where cargo put it, whatever CARGO_TARGET_DIR or build.target-dir say.
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit());
    match build {
        AgentBuild::Debug => {}
        AgentBuild::Release => {
            cargo.arg("--release");
        }
        AgentBuild::Shipped => {
            cargo.args(["--profile", "shipped", "--no-default-features"]);
        }
    }
    let out = cargo
        .output()
        .with_context(|| format!("cannot start {cargo:?}"))?;
    if !out.status.success() {
        anyhow::bail!("{cargo:?} failed with {}", out.status);
    }
    executable(&String::from_utf8_lossy(&out.stdout), "policy-agent")
        .ok_or_else(|| anyhow::anyhow!("cargo built no policy-agent executable ({profile})"))
}

/// The path of the executable `name` in cargo's JSON build messages.
fn executable(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter(|line| line.contains("\"reason\":\"compiler-artifact\""))
        .filter_map(|line| {
            let start = line.find("\"executable\":\"")? + "\"executable\":\"".len();
            let path = &line[start..start + line[start..].find('"')?];
            Some(PathBuf::from(path))
        })
        .find(|path| path.file_name().is_some_and(|file| file == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_found_where_cargo_says_it_put_it() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"policy_common"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"policy-agent"},"executable":"/build/t/release/policy-agent","fresh":true}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            executable(messages, "policy-agent"),
            Some(PathBuf::from("/build/t/release/policy-agent"))
        );
        assert_eq!(executable(messages, "xtask"), None);
    }
}
