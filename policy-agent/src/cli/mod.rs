//! The one CLI: parse arguments, call the library, print. One module per
//! subcommand; `anyhow` lives here and nowhere below.

#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "lab")]
mod conformance;
mod datapath;
#[cfg(feature = "lab")]
mod diff;
#[cfg(feature = "lab")]
mod e2e;
mod explain;
mod explain_node;
#[cfg(feature = "lab")]
mod exposure;
mod flows;
#[cfg(feature = "lab")]
mod lab;
#[cfg(feature = "lab")]
mod lab_tour;
#[cfg(feature = "lab")]
mod lint;
#[cfg(feature = "lab")]
mod recording;
mod run;
#[cfg(feature = "lab")]
mod simulate;
#[cfg(feature = "lab")]
mod suggest;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    causes::causes,
    model::{ClusterState, Protocol},
    source::{load_all, ManifestError},
};

/// podwall: Kubernetes NetworkPolicy enforced by eBPF.
#[derive(Parser)]
#[command(name = "policy-agent", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// More log output (-v info, -vv debug, with the classifiers' kernel debug
    /// records for `run` and `lab run`); RUST_LOG overrides the levels.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON for machines.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The node agent (what the DaemonSet runs): watches the API server and
    /// enforces NetworkPolicy on this node's pods until stopped; enforcement stays
    /// in place after it exits.
    Run(run::RunArgs),
    /// Remove a node agent's pinned datapath: its programs come off every pod
    /// interface (pods are no longer isolated) and its maps are deleted.
    Uninstall(run::UninstallArgs),
    #[cfg(feature = "lab")]
    /// A local mini-cluster: network namespaces as pods, the real datapath enforcing your
    /// policies, probes showing who reaches whom.
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
    #[cfg(feature = "lab")]
    /// The `lab run` matrix (or its JSON) computed by the reference evaluator: no
    /// kernel, no root. Pods get the addresses `lab run` gives them.
    Simulate(simulate::SimulateArgs),
    /// Why one connection is allowed or dropped: the policies and rules that decided
    /// it, and for a deny, whether each rule's peer or port failed to match; with
    /// `--node`, what a running datapath's own tables say, side by side.
    Explain(explain::ExplainArgs),
    #[cfg(feature = "lab")]
    /// For each pod and port, what can reach it: from outside the cluster, from
    /// any namespace, from its own, and which pods not created yet would.
    Exposure(exposure::ExposureArgs),
    #[cfg(feature = "lab")]
    /// NetworkPolicies that allow every flow a recording of `flows --output json`
    /// saw pass, one per workload, in audit mode, each rule saying what it covers.
    Suggest(suggest::SuggestArgs),
    #[cfg(feature = "lab")]
    /// What is likely wrong in the NetworkPolicies of a set of manifests: each
    /// finding with a code, a severity, the field and a fix; exit 1 on an error.
    Lint(lint::LintArgs),
    #[cfg(feature = "lab")]
    /// What a change of manifests opens and closes between pods (and `--peer`
    /// addresses), judged by the reference evaluator; with `--flows`, which
    /// recorded flows it would drop.
    Diff(diff::DiffArgs),
    /// Follow a running datapath's verdict events live (drops name the policies
    /// isolating the pod), as a table or JSON lines, until Ctrl-C.
    Flows(flows::FlowsArgs),
    /// Print a completion script for a shell, e.g.
    /// `policy-agent completions bash > /etc/bash_completion.d/policy-agent`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    #[cfg(feature = "lab")]
    /// The conformance cases or the examples on a real cluster, through kubectl
    /// (`cargo xtask e2e` runs them on a kind cluster).
    #[command(hide = true)]
    E2e {
        #[command(subcommand)]
        command: e2e::E2eCommand,
    },
    #[cfg(feature = "bench")]
    /// Benchmarks for developers (`cargo xtask bench datapath|agent` runs them).
    #[command(hide = true)]
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// Where manifests come from: `-f` once or more, as kubectl takes it.
#[derive(Args, Clone, Debug)]
pub struct Manifests {
    /// A manifest file or a directory of them (Namespace, Pod, Service,
    /// NetworkPolicy, ClusterNetworkPolicy, Node); repeatable, all read as one set.
    #[arg(short = 'f', long = "filename", required = true)]
    paths: Vec<PathBuf>,
}

impl Manifests {
    /// Every object of every path, as one cluster state.
    pub fn load(&self) -> Result<ClusterState, ManifestError> {
        load_all(&self.paths)
    }

    /// The paths, for messages (`a.yaml, dir/`).
    pub fn describe(&self) -> String {
        describe_paths(&self.paths)
    }
}

/// `paths` for messages: `a.yaml, dir/`.
fn describe_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

/// Where the objects come from: manifests (`-f`), or a live cluster read once
/// and read-only (`--kubeconfig`/`--context`: list and watch, as kubectl get).
#[derive(Args, Clone, Debug)]
pub struct Input {
    /// A manifest file or a directory of them (Namespace, Pod, Service,
    /// NetworkPolicy, ClusterNetworkPolicy, Node); repeatable, all read as one set.
    #[arg(
        short = 'f',
        long = "filename",
        required_unless_present_any = ["kubeconfig", "context", "in_cluster"],
        conflicts_with_all = ["kubeconfig", "context", "in_cluster"]
    )]
    paths: Vec<PathBuf>,
    /// Read the cluster this kubeconfig names instead of manifests.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Read the cluster of this kubeconfig context instead of manifests
    /// (`$KUBECONFIG` or `~/.kube/config` unless `--kubeconfig` says).
    #[arg(long)]
    context: Option<String>,
    /// Read the cluster this process runs in, with its pod's service account
    /// (inside the node agent's container: `kubectl exec`); outside a pod,
    /// the cluster of the default kubeconfig.
    #[arg(long, conflicts_with_all = ["kubeconfig", "context"])]
    in_cluster: bool,
}

/// How long a live cluster may take to list every kind.
const CLUSTER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Input {
    /// Whether the objects come from a live cluster.
    pub fn live(&self) -> bool {
        self.kubeconfig.is_some() || self.context.is_some() || self.in_cluster
    }

    /// The objects, as one cluster state.
    pub fn load(&self) -> anyhow::Result<ClusterState> {
        if self.live() {
            read_cluster(self.kubeconfig.as_deref(), self.context.as_deref())
        } else {
            Ok(load_all(&self.paths)?)
        }
    }

    /// Where they come from, for messages (`a.yaml, dir/`, `the cluster of
    /// context prod`).
    pub fn describe(&self) -> String {
        match (&self.kubeconfig, &self.context) {
            (_, Some(context)) => format!("the cluster of context {context}"),
            (Some(path), None) => format!("the cluster of {}", path.display()),
            (None, None) if self.in_cluster => "the cluster this runs in".to_string(),
            (None, None) => describe_paths(&self.paths),
        }
    }
}

/// The objects of the cluster `kubeconfig` and `context` name, read once; each
/// object that does not convert is a warning on stderr (and in the state as
/// the node agent would enforce it: fail-closed).
pub fn read_cluster(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<ClusterState> {
    use anyhow::Context as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime that reads the cluster")?;
    runtime.block_on(async {
        let client = crate::source::api_server::client(kubeconfig, context)
            .await
            .context("connecting to the cluster")?;
        let snapshot = crate::source::api_server::read_once(client, CLUSTER_READ_TIMEOUT)
            .await
            .context("reading the cluster")?;
        for line in &snapshot.conversion_errors {
            eprintln!("warning: {line}");
        }
        Ok((*snapshot.state).clone())
    })
}

/// `--family` of `lab run`, `lab tour`, `simulate` and `explain`: which
/// address of a pod a connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    /// The pod's IPv4 address.
    Ipv4,
    /// The pod's IPv6 address.
    Ipv6,
}

impl FamilyArg {
    /// The family.
    pub fn family(self) -> crate::model::IpFamily {
        match self {
            FamilyArg::Ipv4 => crate::model::IpFamily::Ipv4,
            FamilyArg::Ipv6 => crate::model::IpFamily::Ipv6,
        }
    }
}

/// Parses `PORT/PROTO` (`80/TCP`, `53/udp`; a bare `80` means TCP).
pub fn parse_port_protocol(text: &str) -> Result<(u16, Protocol), String> {
    let (port, protocol) = match text.split_once('/') {
        Some((port, protocol)) => (port, protocol),
        None => (text, "TCP"),
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("'{port}' is not a port number (1-65535)"))?;
    let protocol = Protocol::parse(protocol)
        .ok_or_else(|| format!("'{protocol}' is not a protocol (TCP, UDP or SCTP)"))?;
    Ok((port, protocol))
}

/// Whether `-v` given `verbose` times turns the kernel debug channel on: from
/// `-vv`, the level that shows debug records.
fn kernel_debug(verbose: u8) -> bool {
    verbose >= 2
}

fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = coloured(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether logs get colour codes: only for a person at a terminal (a log file, a
/// pipe or a container runtime's log collector gets plain text), and not when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
fn coloured(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// An error and its causes on one line (`context: cause: root cause`): each
/// error's message says only its own context, so the chain says each cause once.
fn render(error: &anyhow::Error) -> String {
    let error: &(dyn std::error::Error + 'static) = error.as_ref();
    causes(error).to_string()
}

/// Runs the CLI and turns errors into a message and exit code 1 (usage errors
/// exit 2, as clap makes them; `explain` says its verdict with 0, 3 or 4, and
/// a disagreement of `--node` with 5).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    let result = match cli.command {
        Command::Explain(args) => explain::run(&args),
        Command::Run(args) => {
            run::run_agent(args, kernel_debug(cli.verbose)).map(|()| ExitCode::SUCCESS)
        }
        Command::Uninstall(args) => run::uninstall(&args).map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "lab")]
        Command::Lab { command } => {
            lab::run(command, kernel_debug(cli.verbose)).map(|()| ExitCode::SUCCESS)
        }
        #[cfg(feature = "lab")]
        Command::Simulate(args) => simulate::run(&args).map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "lab")]
        Command::Diff(args) => diff::run(&args).map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "lab")]
        Command::Lint(args) => lint::run(&args),
        #[cfg(feature = "lab")]
        Command::Suggest(args) => suggest::run(&args).map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "lab")]
        Command::Exposure(args) => exposure::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Flows(args) => flows::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "policy-agent", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "lab")]
        Command::E2e { command } => e2e::run(&command).map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "bench")]
        Command::Bench { command } => bench::run(&command).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", render(&error));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{coloured, kernel_debug, parse_port_protocol, render};
    use crate::model::Protocol;

    #[test]
    fn an_error_prints_its_contexts_and_causes_in_order_joined() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading x")]
        struct Outer {
            source: std::io::Error,
        }
        let inner = std::io::Error::other("disk on fire");
        let error = anyhow::Error::from(Outer { source: inner }).context("loading the lab");
        assert_eq!(render(&error), "loading the lab: reading x: disk on fire");
        // Nothing is dropped for looking like what came before.
        let error = anyhow::anyhow!("x").context("reading x");
        assert_eq!(render(&error), "reading x: x");
    }

    #[test]
    fn the_kernel_debug_channel_is_on_from_vv() {
        assert!(!kernel_debug(0));
        assert!(!kernel_debug(1));
        assert!(kernel_debug(2));
        assert!(kernel_debug(3));
    }

    #[test]
    fn logs_are_coloured_only_at_a_terminal_without_no_color() {
        assert!(coloured(true, None));
        assert!(coloured(true, Some("".into())));
        assert!(!coloured(true, Some("1".into())));
        assert!(!coloured(false, None));
    }

    #[test]
    fn port_protocol_accepts_case_insensitive_protocols_and_defaults_to_tcp() {
        assert_eq!(parse_port_protocol("80/TCP"), Ok((80, Protocol::Tcp)));
        assert_eq!(parse_port_protocol("53/udp"), Ok((53, Protocol::Udp)));
        assert_eq!(parse_port_protocol("8080"), Ok((8080, Protocol::Tcp)));
        assert!(parse_port_protocol("0/TCP").is_err());
        assert!(parse_port_protocol("70000").is_err());
        assert!(parse_port_protocol("80/ICMP").is_err());
    }
}
