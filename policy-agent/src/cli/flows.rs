//! `policy-agent flows`: follows a running datapath's verdict events live, named
//! with pods and policies, as a table or JSON lines, until interrupted. What is
//! not a flow (skipped events, missing names, lost events) goes to stderr.

use std::{
    io::{ErrorKind, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::Output;
use crate::{
    dataplane::EventVerdict,
    telemetry::flows::{
        publish::{self, RUN_ROOT},
        table, Batch, FlowFilter, FlowLine, FlowPaths, Follower, PodPattern,
    },
};

/// Arguments of `flows`.
#[derive(Args)]
pub struct FlowsArgs {
    /// Only flows with an end (the deciding pod or a peer pod) in NAMESPACE
    /// (repeatable: any of them).
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    namespaces: Vec<String>,
    /// Only flows with POD at an end: NAME (any namespace) or NAMESPACE/NAME
    /// (repeatable: any of them).
    #[arg(long = "pod", value_name = "POD", value_parser = PodPattern::parse)]
    pods: Vec<PodPattern>,
    /// Only these verdicts (repeatable: any of them).
    #[arg(long = "verdict", value_enum)]
    verdicts: Vec<VerdictArg>,
    /// Exit after printing N flows (N >= 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// A table for people or JSON lines (one object per flow).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Which datapath to follow: an instance name (a lab's `pwlab-<pid>x<n>`), or
    /// the path of its names directory or file. Default: the only one running.
    #[arg(long, value_name = "NAME|PATH")]
    instance: Option<String>,
    /// Where datapaths publish their names (`<DIR>/v<ABI>/<instance>/names.json`).
    #[arg(long, value_name = "DIR", env = publish::RUN_ROOT_ENV, default_value = RUN_ROOT)]
    run_dir: PathBuf,
}

/// `--verdict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum VerdictArg {
    /// Passed (reported only for the packet that decided a flow).
    Allowed,
    /// Dropped.
    Dropped,
    /// Passed because the isolating policies are in audit mode; enforcing them
    /// would drop it.
    WouldDrop,
}

impl VerdictArg {
    fn verdict(self) -> EventVerdict {
        match self {
            VerdictArg::Allowed => EventVerdict::Allowed,
            VerdictArg::Dropped => EventVerdict::Dropped,
            VerdictArg::WouldDrop => EventVerdict::WouldDrop,
        }
    }
}

/// How often the loop looks at the stop flag and the names file when no event
/// comes.
const TICK: Duration = Duration::from_millis(250);

/// Writes `text` and a newline and flushes; false when the reader went away (a
/// closed pipe ends `flows` quietly, as `flows | head` expects).
fn emit(out: &mut impl Write, text: &str) -> anyhow::Result<bool> {
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// Runs `flows`.
pub fn run(args: &FlowsArgs) -> anyhow::Result<()> {
    let paths = FlowPaths {
        run_root: args.run_dir.clone(),
        ..FlowPaths::system()
    };
    let instance = publish::choose(&paths, args.instance.as_deref())?;
    let mut follower = match Follower::open(&instance) {
        Ok(follower) => follower,
        Err(error) if error.permission_denied() => bail!(
            "{error}\nfollowing a datapath opens its pinned BPF maps, which needs root \
             (CAP_BPF, and read access to the pins): run `policy-agent flows` as root, \
             or inside the agent's container"
        ),
        Err(error) => return Err(error.into()),
    };
    let filter = FlowFilter {
        namespaces: args.namespaces.clone(),
        pods: args.pods.clone(),
        verdicts: args.verdicts.iter().map(|v| v.verdict()).collect(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    eprintln!(
        "flows: following {} (pid {}); Ctrl-C stops. Events go to one reader: another \
         `flows` or `lab run --show-drops` on this datapath takes some of them.",
        instance.name,
        follower.names().pid
    );
    let mut out = std::io::stdout().lock();
    if args.output == Output::Table && !emit(&mut out, &table::header())? {
        return Ok(());
    }
    let mut printed = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let batch = follower.next_batch(TICK)?;
        for notice in follower.take_notices() {
            eprintln!("flows: {notice}");
        }
        let lines = match batch {
            Batch::Lines(lines) => lines,
            Batch::OwnerGone => {
                if let Some(count) = args.count {
                    bail!(
                        "datapath {} stopped after {printed} of {count} flows",
                        instance.name
                    );
                }
                eprintln!("flows: datapath {} stopped", instance.name);
                return Ok(());
            }
        };
        for line in lines.iter().filter(|line| filter.matches(line)) {
            if !emit(&mut out, &render(line, args.output))? {
                return Ok(());
            }
            printed += 1;
            if args.count.is_some_and(|count| printed >= count) {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn render(line: &FlowLine, output: Output) -> String {
    match output {
        Output::Table => table::row(line),
        Output::Json => line.to_json(),
    }
}
