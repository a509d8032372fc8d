//! `policy-agent lint`: what is likely wrong in the NetworkPolicies of a set of
//! manifests (`policy::lint`), as a table or JSON; exit code 1 when an
//! error-level finding exists.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{Input, Output};
use crate::{
    lab::conformance::sctp_supported,
    policy::lint::{lint, Context, Finding, Severity},
};

/// Arguments of `lint`.
#[derive(Args)]
pub struct LintArgs {
    #[command(flatten)]
    manifests: Input,
    /// Whether the nodes' kernel has SCTP: `auto` asks this machine's kernel.
    #[arg(long, value_enum, default_value_t = SctpArg::Auto)]
    sctp: SctpArg,
    /// Table or JSON (a list of `{"code","name","severity","policy","field","message","fix"}`).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// `--sctp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SctpArg {
    /// As this machine's kernel: whether it can open an SCTP socket.
    Auto,
    /// The nodes have SCTP.
    Supported,
    /// The nodes have no SCTP.
    Unsupported,
}

/// One finding as JSON prints it.
#[derive(Serialize)]
struct FindingJson<'a> {
    code: &'static str,
    name: &'static str,
    severity: Severity,
    policy: String,
    field: &'a str,
    message: &'a str,
    fix: &'a str,
}

impl<'a> From<&'a Finding> for FindingJson<'a> {
    fn from(finding: &'a Finding) -> Self {
        Self {
            code: finding.check.code(),
            name: finding.check.name(),
            severity: finding.check.severity(),
            policy: finding.policy.to_string(),
            field: &finding.field,
            message: &finding.message,
            fix: &finding.fix,
        }
    }
}

/// Runs `lint`: 0 without errors (warnings only, or nothing), 1 with one.
pub fn run(args: &LintArgs) -> anyhow::Result<ExitCode> {
    let state = args.manifests.load()?;
    let context = Context {
        sctp_supported: match args.sctp {
            SctpArg::Auto => sctp_supported(),
            SctpArg::Supported => true,
            SctpArg::Unsupported => false,
        },
    };
    let findings = lint(&state, context);
    let errors = findings
        .iter()
        .filter(|f| f.check.severity() == Severity::Error)
        .count();
    match args.output {
        Output::Json => {
            let json: Vec<FindingJson> = findings.iter().map(FindingJson::from).collect();
            println!("{}", serde_json::to_string(&json)?);
        }
        Output::Table => print!("{}", to_table(&findings)),
    }
    eprintln!(
        "lint: {} NetworkPolicies from {}: {errors} errors, {} warnings",
        state.policies.len(),
        args.manifests.describe(),
        findings.len() - errors
    );
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Each finding on two lines: severity, code, policy, field and message; then
/// the fix, indented.
fn to_table(findings: &[Finding]) -> String {
    let mut out = String::new();
    for finding in findings {
        out.push_str(&format!(
            "{:<7} {} {} {}: {} ({})\n        fix: {}\n",
            finding.check.severity().to_string(),
            finding.check.code(),
            finding.policy,
            finding.field,
            finding.message,
            finding.check.name(),
            finding.fix
        ));
    }
    out
}
