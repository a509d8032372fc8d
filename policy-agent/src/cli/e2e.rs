//! `policy-agent e2e conformance|examples` (hidden; `cargo xtask e2e` runs it on
//! the kind cluster it makes): the conformance cases, or the examples, on a real
//! cluster through kubectl. One line per case or example, then `N passed, N
//! failed, N skipped`; exits non-zero when one failed.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Subcommand};

use crate::{
    e2e::{
        examples,
        kubectl::Kubectl,
        run::{self, Options},
    },
    lab::conformance::{Outcome, Summary},
};

/// What to run on the cluster.
#[derive(Subcommand)]
pub enum E2eCommand {
    /// The conformance case files of a directory.
    Conformance {
        /// A directory of case files (*.yaml), e.g. tests/data/conformance.
        #[arg(long)]
        cases: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Each example directory (cluster.yaml, then steps/*.yaml, checked against
    /// their `# expect:` lines).
    Examples {
        /// The directory holding one folder per example, e.g. deploy/examples.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// Which cluster, and how to probe it.
#[derive(Args)]
pub struct ClusterArgs {
    /// The kubeconfig; else kubectl's default.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; else its current one.
    #[arg(long)]
    context: Option<String>,
    /// How long one probe waits, in whole seconds.
    #[arg(long, default_value_t = 1)]
    timeout_secs: u64,
    /// How often a step's probes are tried while some disagree.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Probes run at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Run on a cluster whose context is not a kind one (`kind-*`). The run
    /// makes namespaces x, y and z, deletes every NetworkPolicy in them, and the
    /// examples put pods (a `coredns` in kube-system among them) on the cluster.
    #[arg(long)]
    any_cluster: bool,
}

impl ClusterArgs {
    /// kubectl for the cluster, refusing one that is not kind's unless
    /// `--any-cluster`.
    fn kubectl(&self) -> anyhow::Result<Kubectl> {
        let kubectl = Kubectl::new(self.kubeconfig.as_deref(), self.context.as_deref());
        let context = match &self.context {
            Some(context) => context.clone(),
            None => kubectl.current_context()?,
        };
        anyhow::ensure!(
            self.any_cluster || context.starts_with("kind-"),
            "context {context:?} is not a kind cluster's: the e2e run changes the cluster \
             (namespaces x, y, z and their policies, the examples' pods); pass --any-cluster \
             if this one may be changed"
        );
        Ok(kubectl)
    }

    fn options(&self) -> Options {
        Options {
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            attempts: self.attempts.max(1),
            retry_after: Duration::from_secs(2),
            parallel: self.parallel.max(1),
            ready_timeout: Duration::from_secs(300),
        }
    }
}

/// Runs the command and prints the outcomes and the summary.
pub fn run(command: &E2eCommand) -> anyhow::Result<()> {
    let print = |outcome: &Outcome| println!("{outcome}");
    let (what, outcomes) = match command {
        E2eCommand::Conformance { cases, cluster } => (
            "conformance cases",
            run::conformance(&cluster.kubectl()?, cases, &cluster.options(), print)?,
        ),
        E2eCommand::Examples { dir, cluster } => (
            "examples",
            run::examples(
                &cluster.kubectl()?,
                &examples::list(dir).map_err(anyhow::Error::msg)?,
                &cluster.options(),
                print,
            ),
        ),
    };
    let summary = Summary::of(&outcomes);
    println!("{summary}");
    anyhow::ensure!(
        summary.failed == 0,
        "{} of {} {what} failed on the cluster",
        summary.failed,
        outcomes.len()
    );
    Ok(())
}
