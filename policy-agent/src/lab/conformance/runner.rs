//! Runs checked cases in one lab: reset to the clean fixture, then each step's
//! mutations, then every off-diagonal (from, to) probe on each probed port,
//! compared with the step's matrices.

use std::time::{Duration, Instant};

use super::{
    case::{Case, CaseError, Step},
    fixture,
    outcome::{CaseResult, Mismatch, Outcome},
    placeholders::Addresses,
};
use crate::{
    causes::causes,
    dataplane::Stats,
    lab::{
        probe::{ProbeRoute, ProbeSpec},
        report::ProbeResult,
        Lab, LabError,
    },
    model::ObjectRef,
};

/// Why a case stopped before its last probe.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Case(#[from] CaseError),
    #[error(transparent)]
    Lab(#[from] LabError),
}

/// The one place the runner sends probes: through each destination's Service
/// `s-<ns>-<pod>` (ClusterIP, DNAT in the node namespace), as upstream does, so
/// egress policy must hold on the translated destination. A destination its
/// Service no longer selects (a relabel dropped `pod=<name>`) is unreachable, as
/// upstream would see it: those probes count as dropped without being sent.
fn probe(lab: &Lab, specs: &[ProbeSpec], timeout: Duration) -> Result<Vec<ProbeResult>, LabError> {
    let (routed, unrouted): (Vec<ProbeSpec>, Vec<ProbeSpec>) = specs
        .iter()
        .cloned()
        .partition(|spec| lab.service_target(spec).is_some());
    let mut results = lab.probe_via(&routed, ProbeRoute::Service, timeout)?;
    results.extend(unrouted.iter().map(|spec| ProbeResult::new(spec, false)));
    Ok(results)
}

/// The first IPv4 address of every lab pod (what the placeholders expand to).
fn addresses(lab: &Lab) -> Addresses {
    super::cluster::fixture::addresses(lab.state())
}

/// One probe per off-diagonal (from, to) pair of `pods` on each port `step` probes.
fn specs(pods: &[ObjectRef], step: &Step) -> Vec<ProbeSpec> {
    let mut specs = Vec::new();
    for probe in &step.probes {
        for from in pods {
            for to in pods.iter().filter(|to| *to != from) {
                specs.push(ProbeSpec {
                    from: from.clone(),
                    to: to.clone(),
                    port: probe.port,
                    protocol: probe.protocol,
                });
            }
        }
    }
    specs
}

/// Runs one case on `lab`, which must have been built from the fixture.
pub fn run_case(lab: &mut Lab, case: &Case, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome::not_run(case.name.clone(), case.file.clone(), CaseResult::Pass);
    let result = run_steps(lab, case, timeout, &mut outcome);
    outcome.elapsed = started.elapsed();
    let error = result.err().map(|(step, error)| match step {
        0 => format!("resetting the lab: {}", causes(&error)),
        n => format!("step {n}: {}", causes(&error)),
    });
    outcome.verdict = CaseResult::of_run(error, &outcome.mismatches);
    outcome
}

/// Runs the steps, recording probes and mismatches in `outcome`; an error carries
/// the step it happened in (0: the reset before the first step).
fn run_steps(
    lab: &mut Lab,
    case: &Case,
    timeout: Duration,
    outcome: &mut Outcome,
) -> Result<(), (usize, StepError)> {
    let mut state = fixture::cluster(&case.ports);
    lab.update(state.clone()).map_err(|e| (0, e.into()))?;
    let addresses = addresses(lab);
    let pods = fixture::pods();
    for (index, step) in case.steps.iter().enumerate() {
        let number = index + 1;
        let fail = |error: StepError| (number, error);
        fixture::mutate(&mut state, step, &addresses, &format!("steps[{index}]"))
            .map_err(|e| fail(e.into()))?;
        lab.update(state.clone()).map_err(|e| fail(e.into()))?;
        let specs = specs(&pods, step);
        tracing::debug!(case = %case.name, step = number, probes = specs.len(), "probing");
        let before = lab.stats().map_err(|e| fail(e.into()))?;
        let results = probe(lab, &specs, timeout).map_err(|e| fail(e.into()))?;
        let after = lab.stats().map_err(|e| fail(e.into()))?;
        let mismatches_before = outcome.mismatches.len();
        outcome.steps = number;
        outcome.probes += results.len();
        for result in results {
            let expected = step
                .probes
                .iter()
                .find(|p| p.port == result.port && p.protocol == result.protocol)
                .and_then(|p| p.expected.allowed(&result.from, &result.to));
            if expected == Some(result.allowed) {
                continue;
            }
            let mismatch = Mismatch {
                step: number,
                port: result.port,
                protocol: result.protocol,
                from: result.from,
                to: result.to,
                // The matrix covers every fixture pod (checked when the case was read).
                expected: expected.unwrap_or(!result.allowed),
                allowed: result.allowed,
            };
            tracing::warn!(case = %case.name, "{mismatch}");
            outcome.mismatches.push(mismatch);
        }
        if outcome.mismatches.len() > mismatches_before {
            let counters = counters_during(&before, &after);
            tracing::warn!(case = %case.name, step = number, "datapath verdicts while probing: {counters}");
        }
    }
    Ok(())
}

/// The verdict counters that moved between `before` and `after`, as
/// `name=delta` pairs: which datapath rule let a probe through or dropped it.
fn counters_during(before: &Stats, after: &Stats) -> String {
    after
        .counters
        .iter()
        .filter_map(|&(name, count)| {
            let delta = count.saturating_sub(before.get(name));
            (delta > 0).then(|| format!("{name}={delta}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
