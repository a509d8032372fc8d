//! The upstream ClusterNetworkPolicy conformance suite (kubernetes-sigs/
//! network-policy-api `conformance/`), as data, on real packets.
//!
//! A directory of case files in the probe-list format of
//! `tests/data/cluster-conformance` (`fixture: network-policy-api`) runs in ONE lab
//! with upstream's fixture (`fixture`): for each case, reset to a clean cluster,
//! then each step's policy changes (read by the manifest reader, as `--manifests`
//! reads them) and namespace relabels, then each probe, pod to pod address as
//! upstream connects, compared with what it expects. Upstream's host-network pods
//! are servers on their node's address: every node of the lab serves the ports
//! a case probes them on, and a probe to one connects to its node's address.
//!
//! Never reported as passed: a case that probes from a host-network pod (none of
//! upstream's does; the lab sends no probe from a node), a case that applies ClusterNetworkPolicies
//! when the manifest reader does not read that kind, a case whose every probe is
//! SCTP on a kernel or lab without SCTP: those are skipped, saying why. In a
//! case that also probes TCP or UDP, SCTP probes are not sent and the outcome
//! counts them as skipped.

pub mod case;
pub mod fixture;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use self::{
    case::{ClusterCase, ClusterStep},
    fixture::Policies,
};
use super::{
    outcome::{CaseResult, Mismatch, Outcome},
    ConformanceError, Options, LAB_NO_SCTP, NO_SCTP,
};
use crate::{
    causes::causes,
    lab::{
        probe::{Family, ProbeSpec},
        Lab, LabError, LabOptions,
    },
    model::{ClusterState, Node, ObjectRef, Protocol},
};

/// The `fixture` a case file of this format names.
pub const FIXTURE: &str = "network-policy-api";
/// The ClusterNetworkPolicy kind.
pub const CNP_KIND: &str = "ClusterNetworkPolicy";
/// The NetworkPolicy kind.
pub const NP_KIND: &str = "NetworkPolicy";

/// Why a case that probes from a host-network pod is skipped.
pub const NO_HOST_NETWORK: &str =
    "probes from a host-network pod and the lab sends no probe from a node's address";
/// Why a case that applies ClusterNetworkPolicies is skipped when they cannot be read.
pub const NO_CNP_READER: &str =
    "applies ClusterNetworkPolicies and the manifest reader does not read that kind yet";

/// Whether the file at `text` is a case of this format (names `fixture:
/// network-policy-api`); anything else is the matrix format's.
pub fn is_cluster_case(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Peek {
        fixture: Option<String>,
    }
    crate::source::yaml::from_str::<Peek>(text)
        .is_ok_and(|peek| peek.fixture.as_deref() == Some(FIXTURE))
}

/// Why `case` cannot run here, if it cannot.
fn skip_reason(case: &ClusterCase, readable: bool, sctp_reason: &str) -> Option<String> {
    if case.probes_from_host_network() {
        Some(NO_HOST_NETWORK.into())
    } else if case.probes_only_sctp() {
        Some(sctp_reason.into())
    } else if case.applies_cluster_policies() && !readable {
        Some(NO_CNP_READER.into())
    } else {
        None
    }
}

/// Runs the case files `files` in one lab, calling `report` with each outcome
/// as soon as it is known; returns them all, in file order.
pub fn run_files(
    files: Vec<PathBuf>,
    options: &Options,
    mut report: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>, ConformanceError> {
    let sctp_reason = if super::sctp_supported() {
        LAB_NO_SCTP
    } else {
        NO_SCTP
    };
    let readable = fixture::cluster_policies_readable();
    tracing::info!(
        cases = files.len(),
        cluster_policies_readable = readable,
        "running ClusterNetworkPolicy conformance cases in one lab"
    );
    let mut lab: Option<Lab> = None;
    let mut outcomes = Vec::with_capacity(files.len());
    for file in files {
        let outcome = match ClusterCase::load(&file) {
            Err(error) => Outcome::unreadable(file, &error),
            Ok(case) => match skip_reason(&case, readable, sctp_reason) {
                Some(reason) => Outcome::not_run(case.name, case.file, CaseResult::Skip(reason)),
                None => {
                    let lab = match &mut lab {
                        Some(lab) => lab,
                        None => lab.insert(Lab::up_with(
                            fixture::cluster(),
                            &fixture::SERVED,
                            &LabOptions::of_layout(options.layout),
                        )?),
                    };
                    run_case(lab, &case, options.timeout)
                }
            },
        };
        report(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The lab's nodes, as kind labels them, in the lab's order.
fn nodes(lab: &Lab) -> Vec<Node> {
    lab.nodes()
        .iter()
        .map(|node| fixture::node(&node.name, node.addresses.both().to_vec()))
        .collect()
}

/// The clean fixture with the lab's nodes in it.
fn clean_state(lab: &Lab) -> ClusterState {
    let mut state = fixture::cluster();
    for node in nodes(lab) {
        state.nodes.insert(node.name.clone(), node);
    }
    state
}

/// Where each probe of `specs` connects: the destination pod's IPv4 address,
/// or for a host-network pod its node's (`fixture::host_network_pods`).
fn targets(lab: &Lab, specs: &[ProbeSpec]) -> Result<Vec<SocketAddr>, LabError> {
    let on_nodes: BTreeMap<ObjectRef, IpAddr> = fixture::host_network_pods(&nodes(lab))
        .into_iter()
        .filter_map(|pod| Some((pod.key, pod.ips.into_iter().find(IpAddr::is_ipv4)?)))
        .collect();
    specs
        .iter()
        .map(|spec| {
            let address = match on_nodes.get(&spec.to) {
                Some(address) => *address,
                None => lab.pod_address(&spec.to, Family::Ipv4)?,
            };
            Ok(SocketAddr::new(address, spec.port))
        })
        .collect()
}

/// Runs one case on `lab`, which must have been built from the fixture.
pub fn run_case(lab: &mut Lab, case: &ClusterCase, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome::not_run(case.name.clone(), case.file.clone(), CaseResult::Pass);
    let result = run_steps(lab, case, timeout, &mut outcome);
    outcome.elapsed = started.elapsed();
    let error = result.err().map(|(step, error)| match step {
        0 => format!("resetting the lab: {error}"),
        n => format!("step {n}: {error}"),
    });
    outcome.verdict = CaseResult::of_run(error, &outcome.mismatches);
    outcome
}

/// The probes of `step` the lab can send (not SCTP).
fn specs(step: &ClusterStep) -> Vec<ProbeSpec> {
    step.probes
        .iter()
        .filter(|p| p.protocol != Protocol::Sctp)
        .map(|p| ProbeSpec {
            from: p.from.clone(),
            to: p.to.clone(),
            port: p.port,
            protocol: p.protocol,
        })
        .collect()
}

/// Runs the steps, recording probes and mismatches in `outcome`; an error carries
/// the step it happened in (0: the reset before the first step) and its causes.
fn run_steps(
    lab: &mut Lab,
    case: &ClusterCase,
    timeout: Duration,
    outcome: &mut Outcome,
) -> Result<(), (usize, String)> {
    let lab_error = |step: usize| move |e: LabError| (step, causes(&e).to_string());
    let mut state = clean_state(lab);
    lab.update(state.clone()).map_err(lab_error(0))?;
    lab.serve_on_nodes(&case.host_network_ports())
        .map_err(lab_error(0))?;
    let addresses = fixture::addresses(lab.state());
    let mut policies = Policies::default();
    for (index, step) in case.steps.iter().enumerate() {
        let number = index + 1;
        let field = format!("steps[{index}]");
        let case_error = |e: super::CaseError| (number, causes(&e).to_string());
        policies
            .change(step, &addresses, &field)
            .map_err(case_error)?;
        policies.load_into(&mut state, &field).map_err(case_error)?;
        fixture::relabel(&mut state, step);
        lab.update(state.clone()).map_err(lab_error(number))?;
        let specs = specs(step);
        outcome.skipped_probes += step.probes.len() - specs.len();
        tracing::debug!(case = %case.name, step = number, subtest = %step.subtest, probes = specs.len(), "probing");
        let results = targets(lab, &specs)
            .and_then(|targets| lab.probe_at(&specs, &targets, timeout))
            .map_err(lab_error(number))?;
        outcome.steps = number;
        outcome.probes += results.len();
        let seen: BTreeMap<(String, String, u16, Protocol), bool> = results
            .into_iter()
            .map(|r| ((r.from, r.to, r.port, r.protocol), r.allowed))
            .collect();
        for probe in step.probes.iter().filter(|p| p.protocol != Protocol::Sctp) {
            let key = (
                probe.from.to_string(),
                probe.to.to_string(),
                probe.port,
                probe.protocol,
            );
            let Some(&allowed) = seen.get(&key) else {
                return Err((number, format!("no result for the probe {key:?}")));
            };
            if probe.allowed == allowed {
                continue;
            }
            let mismatch = Mismatch {
                step: number,
                port: probe.port,
                protocol: probe.protocol,
                from: probe.from.to_string(),
                to: probe.to.to_string(),
                expected: probe.allowed,
                allowed,
            };
            tracing::warn!(case = %case.name, subtest = %step.subtest, "{mismatch}");
            outcome.mismatches.push(mismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
