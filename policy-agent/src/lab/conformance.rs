//! The upstream NetworkPolicy conformance suite, as data, on real packets.
//!
//! A directory of ClusterNetworkPolicy cases (`tests/data/cluster-conformance`,
//! `fixture: network-policy-api`) runs in `cluster`, with its own fixture. Otherwise:
//! reads a directory of case files (the format of `tests/data/conformance`, a
//! data-only translation of kubernetes/kubernetes `test/e2e/network/netpol`),
//! builds ONE lab with the upstream fixture (namespaces x/y/z, pods a/b/c, one
//! Service per pod) and runs every case in it: reset to a clean cluster, then each
//! step's apply/delete/relabel, then every off-diagonal probe compared with the
//! step's expected matrix. A file that does not parse fails on its own and the
//! run goes on; a case that probes SCTP on a kernel without SCTP is skipped,
//! never passed.
//!
//! May import: `crate::model`, `crate::source::convert` and `crate::source::yaml`
//! (case files are YAML, and case policies are read the way manifests are), the
//! lab. Prints nothing: the CLI does.

mod case;
pub mod cluster;
pub mod fixture;
mod matrix;
mod outcome;
mod placeholders;
mod runner;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

pub use self::{
    case::{Case, CaseError, Probe, Relabel, Step},
    matrix::Matrix,
    outcome::{to_json, CaseResult, Mismatch, Outcome, Summary},
    placeholders::{expand, expand_value, Addresses},
};
use super::{topology::Layout, Lab, LabError, LabOptions};
use crate::{causes::causes, model::Protocol};

/// Why a run could not happen at all (a single case's problems are its outcome).
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The case directory could not be listed.
    #[error("{}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The directory holds no `*.yaml` file.
    #[error("{}: no case files (*.yaml)", dir.display())]
    NoCases {
        /// The directory.
        dir: PathBuf,
    },
    /// The lab could not be built.
    #[error("the conformance lab could not start")]
    Lab(#[from] LabError),
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a probe waits for an answer before it counts as dropped.
    pub timeout: Duration,
    /// How many nodes, how the lab's pods are wired and how nodes are joined.
    pub layout: Layout,
}

/// Why an SCTP case is skipped on a kernel without SCTP.
pub const NO_SCTP: &str = "probes SCTP and this kernel has no SCTP support (CONFIG_IP_SCTP)";
/// Why an SCTP case is skipped on a kernel with SCTP: the lab's listeners and probes
/// are TCP and UDP only (this project's machines cannot open SCTP sockets to test
/// SCTP ones), so such a case cannot run; it is never reported as passed.
pub const LAB_NO_SCTP: &str = "probes SCTP and the lab has no SCTP listeners or probes yet";

/// Whether this kernel can open SCTP sockets, tried rather than assumed (the
/// probes need them; a module may also be loaded on demand).
pub fn sctp_supported() -> bool {
    let protocol = socket2::Protocol::from(i32::from(Protocol::Sctp.number()));
    match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, Some(protocol)) {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(error = %causes(&error), "cannot open an SCTP socket");
            false
        }
    }
}

/// The `*.yaml` files directly in `dir`, sorted by name.
pub fn case_files(dir: &Path) -> Result<Vec<PathBuf>, ConformanceError> {
    let read_error = |source| ConformanceError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ConformanceError::NoCases {
            dir: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// Runs every case file in `dir` in one lab, calling `report` with each outcome
/// as soon as it is known; returns them all, in file order.
pub fn run_dir(
    dir: &Path,
    options: &Options,
    mut report: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>, ConformanceError> {
    let files = case_files(dir)?;
    if files
        .iter()
        .any(|file| std::fs::read_to_string(file).is_ok_and(|text| cluster::is_cluster_case(&text)))
    {
        return cluster::run_files(files, options, report);
    }
    let cases: Vec<(PathBuf, Result<Case, CaseError>)> = files
        .into_iter()
        .map(|file| {
            let case = Case::load(&file);
            (file, case)
        })
        .collect();
    let sctp = sctp_supported();
    let skip_sctp = if sctp { LAB_NO_SCTP } else { NO_SCTP };
    let runnable = |case: &Case| !case.probes_sctp();
    // Listeners are opened when the lab starts: on every port any case uses.
    let ports: BTreeSet<(u16, Protocol)> = cases
        .iter()
        .filter_map(|(_, case)| case.as_ref().ok())
        .filter(|case| runnable(case))
        .flat_map(Case::ports_used)
        .filter(|(_, protocol)| *protocol != Protocol::Sctp)
        .collect();
    let ports: Vec<(u16, Protocol)> = ports.into_iter().collect();
    tracing::info!(
        cases = cases.len(),
        dir = %dir.display(),
        sctp,
        "running conformance cases in one lab"
    );
    let mut lab: Option<Lab> = None;
    let mut outcomes = Vec::with_capacity(cases.len());
    let total = cases.len();
    for (index, (file, case)) in cases.into_iter().enumerate() {
        let outcome = match case {
            Err(error) => Outcome::unreadable(file, &error),
            Ok(case) if !runnable(&case) => {
                Outcome::not_run(case.name, case.file, CaseResult::Skip(skip_sctp.into()))
            }
            Ok(case) => {
                let lab = match &mut lab {
                    Some(lab) => lab,
                    None => lab.insert(Lab::up_with(
                        fixture::cluster(&[]),
                        &ports,
                        &LabOptions::of_layout(options.layout),
                    )?),
                };
                tracing::info!(
                    case = %case.name,
                    steps = case.steps.len(),
                    "case {}/{total}",
                    index + 1
                );
                runner::run_case(lab, &case, options.timeout)
            }
        };
        report(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
