//! `policy-agent lab conformance --cases DIR`: the upstream NetworkPolicy
//! conformance cases in one lab; one line per case, then `N passed, N failed,
//! N skipped`. Exits non-zero when a case failed (skips alone do not fail).

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{lab::LayoutArgs, Output};
use crate::lab::conformance::{self, Options, Summary};

/// Arguments of `lab conformance`.
#[derive(Args)]
pub struct ConformanceArgs {
    /// A directory of case files (*.yaml), e.g. tests/data/conformance.
    #[arg(long)]
    cases: PathBuf,
    /// One line per case (table) or one JSON object at the end.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// How long a probe waits for an answer before it counts as dropped.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    #[command(flatten)]
    layout: LayoutArgs,
}

/// Runs the cases and prints their outcomes.
pub fn run(args: &ConformanceArgs) -> anyhow::Result<()> {
    super::lab::install_interrupt_cleanup()?;
    let options = Options {
        timeout: Duration::from_millis(args.timeout_ms),
        layout: args.layout.layout(),
    };
    let outcomes = conformance::run_dir(&args.cases, &options, |outcome| {
        if args.output == Output::Table {
            println!("{outcome}");
        }
    })?;
    let summary = Summary::of(&outcomes);
    match args.output {
        Output::Table => println!("{summary}"),
        Output::Json => println!("{}", conformance::to_json(&outcomes)),
    }
    anyhow::ensure!(
        summary.failed == 0,
        "{} of {} conformance cases failed",
        summary.failed,
        outcomes.len()
    );
    Ok(())
}
