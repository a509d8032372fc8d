//! `policy-agent lab tour`: one lab, manifests applied step by step, the matrix
//! and what changed after each step.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

use super::Output;
use crate::{
    lab::{
        drops, probe::ProbeRoute, report, report::ProbeResult, topology::Layout, Lab, LabOptions,
    },
    model::Protocol,
    source::manifest::load_manifests,
};

/// The comment lines a manifest file starts with, without the `#`, less the
/// `expect:` lines (what the example's tests check, not prose).
fn description(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map_while(|line| line.strip_prefix('#'))
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty() && !line.starts_with("expect:"))
        .collect()
}

fn key(r: &ProbeResult) -> (String, String, u16, Protocol) {
    (r.from.clone(), r.to.clone(), r.port, r.protocol)
}

/// Lines naming every probe whose verdict differs between `before` and `after`.
fn changes(before: &[ProbeResult], after: &[ProbeResult]) -> Vec<String> {
    let old: BTreeMap<_, bool> = before.iter().map(|r| (key(r), r.allowed)).collect();
    let verdict = |allowed: bool| if allowed { "allowed" } else { "dropped" };
    after
        .iter()
        .filter_map(|r| {
            let was = *old.get(&key(r))?;
            (was != r.allowed).then(|| {
                format!(
                    "{} -> {} {}/{}: {} -> {}",
                    r.from,
                    r.to,
                    r.port,
                    r.protocol,
                    verdict(was),
                    verdict(r.allowed)
                )
            })
        })
        .collect()
}

#[derive(Serialize)]
struct StepJson<'a> {
    step: usize,
    file: String,
    applied: Vec<String>,
    probes: &'a [ProbeResult],
    /// With `--show-drops`: the drops reported while probing this step.
    #[serde(skip_serializing_if = "Option::is_none")]
    drops: Option<Vec<drops::SeenDrop>>,
}

/// How `lab tour` probes, prints and wires its lab.
pub struct TourOptions<'a> {
    /// `--probe` ports (none: declared ports).
    pub probes: &'a [(u16, Protocol)],
    /// How probes reach their destinations.
    pub route: ProbeRoute,
    /// Table or JSON.
    pub output: Output,
    /// How long a probe waits.
    pub timeout: Duration,
    /// List the drops after each step.
    pub show_drops: bool,
    /// How many nodes, how pods are wired and how nodes are joined.
    pub layout: Layout,
}

/// Builds the lab from `base`, then applies each of `steps` in order, probing the
/// way `options.route` says after each; with `show_drops`, lists after each step
/// the drops the datapath reported while probing.
pub fn run(base: &Path, steps: &[PathBuf], options: &TourOptions<'_>) -> anyhow::Result<()> {
    let TourOptions {
        probes,
        route,
        output,
        timeout,
        show_drops,
        layout,
    } = *options;
    let mut state = load_manifests(base)?;
    let step_states = steps
        .iter()
        .map(|path| load_manifests(path))
        .collect::<Result<Vec<_>, _>>()?;
    let options = LabOptions::of_layout(layout);
    let mut lab = Lab::up_with(state.clone(), probes, &options)?;
    let specs = lab.probe_specs(probes);
    let mut previous: Vec<ProbeResult> = Vec::new();
    let files = std::iter::once(base).chain(steps.iter().map(PathBuf::as_path));
    let applied = std::iter::once(None).chain(step_states.into_iter().map(Some));
    for (number, (file, step)) in files.zip(applied).enumerate() {
        let names = match step {
            Some(step) => {
                let names = step.object_names();
                state.merge(step);
                lab.update(state.clone())?;
                names
            }
            None => state.object_names(),
        };
        // With audit-mode policies, the datapath's events mark would-drops.
        let (results, seen) = if show_drops || super::lab::audits(&state) {
            let reported = drops::probe_reporting(&mut lab, &specs, route, timeout)?;
            if reported.lost.any() && !show_drops {
                eprintln!("{}", drops::lost_note(reported.lost));
            }
            let seen = show_drops.then(|| (drops::summarize(&reported.lines), reported.lost));
            (reported.results, seen)
        } else {
            (lab.probe_via(&specs, route, timeout)?, None)
        };
        match output {
            Output::Json => {
                let line = StepJson {
                    step: number,
                    file: file.display().to_string(),
                    applied: names,
                    probes: &results,
                    drops: seen.map(|(seen, _)| seen),
                };
                println!("{}", serde_json::to_string(&line)?);
            }
            Output::Table => {
                println!("== step {number}: {}", file.display());
                for line in description(file) {
                    println!("   {line}");
                }
                println!("   applied: {}", names.join(", "));
                println!();
                print!("{}", report::to_matrix(&lab.pods(), &results));
                if number > 0 {
                    let changed = changes(&previous, &results);
                    println!("changed: {} probe(s)", changed.len());
                    for line in changed {
                        println!("   {line}");
                    }
                }
                if let Some((seen, lost)) = &seen {
                    print!("{}", drops::to_table(seen, *lost));
                }
                println!();
            }
        }
        previous = results;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(to: &str, allowed: bool) -> ProbeResult {
        ProbeResult {
            from: "x/a".into(),
            to: to.into(),
            port: 80,
            protocol: Protocol::Tcp,
            allowed,
            would_drop: false,
        }
    }

    #[test]
    fn changes_name_only_probes_whose_verdict_flipped() {
        let before = [result("x/b", true), result("x/c", true)];
        let after = [result("x/b", false), result("x/c", true)];
        assert_eq!(
            changes(&before, &after),
            vec!["x/a -> x/b 80/TCP: allowed -> dropped".to_string()]
        );
    }
}
