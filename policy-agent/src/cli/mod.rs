//! The one CLI: parse arguments, call the library, print. One module per
//! subcommand; `anyhow` lives here and nowhere below.

mod bench;
mod conformance;
mod datapath;
mod explain;
mod flows;
mod lab;
mod lab_tour;
mod run;
mod simulate;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::model::Protocol;

/// podwall: Kubernetes NetworkPolicy enforced by eBPF.
#[derive(Parser)]
#[command(name = "policy-agent", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// More log output (-v info, -vv debug); RUST_LOG overrides it.
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
    /// A local mini-cluster: network namespaces as pods, the real datapath enforcing your
    /// policies, probes showing who reaches whom.
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
    /// The `lab run` matrix (or its JSON) computed by the reference evaluator: no
    /// kernel, no root. Pods get the addresses `lab run` gives them.
    Simulate(simulate::SimulateArgs),
    /// Why one connection is allowed or denied: the policies and rules that decided
    /// it, and for a deny, whether each rule's peer or port failed to match.
    Explain(explain::ExplainArgs),
    /// Follow a running datapath's verdict events live (drops name the policies
    /// isolating the pod), as a table or JSON lines, until Ctrl-C.
    Flows(flows::FlowsArgs),
    /// Benchmarks for developers (`cargo xtask bench datapath|agent` runs them).
    #[command(hide = true)]
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
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

fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only for a person at a terminal: a log file, a pipe or a
    // container runtime's log collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// An error and its causes on one line, each said once: many error types already
/// put their cause into their own message, and `{:#}` would repeat it.
fn render(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Runs the CLI and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    let result = match cli.command {
        Command::Run(args) => run::run_agent(args),
        Command::Uninstall(args) => run::uninstall(&args),
        Command::Lab { command } => lab::run(command),
        Command::Simulate(args) => simulate::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Flows(args) => flows::run(&args),
        Command::Bench { command } => bench::run(&command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", render(&error));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_port_protocol, render};
    use crate::model::Protocol;

    #[test]
    fn an_error_prints_each_cause_once_and_keeps_contexts() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading x: {source}")]
        struct Outer {
            source: std::io::Error,
        }
        let inner = std::io::Error::other("disk on fire");
        let error = anyhow::Error::from(Outer { source: inner }).context("loading the lab");
        assert_eq!(render(&error), "loading the lab: reading x: disk on fire");
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
