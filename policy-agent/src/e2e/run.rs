//! The cases and the examples on the cluster, step by step. A case: reset to the
//! fixture (its policies deleted, its labels restored), then each step's apply,
//! delete and relabel, then every off-diagonal probe through the destination's
//! Service, compared with the step's matrix; while probes disagree, the matrix
//! is probed again (`Options::attempts`, as upstream retries: the cluster's
//! agents converge at their own moments). An example: its files applied in
//! order, each file's `# expect:` lines probed pod to pod after it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    examples::{expectations, Example, Expectation},
    kubectl::{E2eError, Kubectl},
    manifests,
    probe::{self, Seen},
};
use crate::{
    causes::causes,
    lab::conformance::{
        case_files, expand_value,
        fixture::{self, NAMESPACES},
        Case, CaseResult, Mismatch, Outcome, Relabel, Step,
    },
    model::{Labels, ObjectRef, Protocol},
    source::manifest::parse_documents,
};

/// How a run probes.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long one probe waits (whole seconds, at least 1).
    pub timeout: Duration,
    /// How often a step's probes are tried while some disagree.
    pub attempts: u32,
    /// How long to wait between attempts.
    pub retry_after: Duration,
    /// Probes run at once.
    pub parallel: usize,
    /// How long pods may take to become ready.
    pub ready_timeout: Duration,
}

/// Why SCTP cases are skipped on a cluster.
pub const NO_SCTP: &str = "probes SCTP and the e2e run serves and probes TCP and UDP only";

/// One probe to run: from a pod's container to an address.
#[derive(Clone, Debug)]
struct Planned {
    from: ObjectRef,
    to: ObjectRef,
    port: u16,
    protocol: Protocol,
    /// `None`: unreachable by construction (its Service selects it no more).
    target: Option<SocketAddr>,
    container: String,
    expected: bool,
}

/// Runs the planned probes `parallel` at a time: allowed or not, in order.
fn probe_all(
    kubectl: &Kubectl,
    planned: &[Planned],
    options: &Options,
) -> Result<Vec<bool>, String> {
    let mut results = vec![Ok(false); planned.len()];
    let chunk = planned.len().div_ceil(options.parallel.max(1)).max(1);
    std::thread::scope(|scope| {
        for (probes, out) in planned.chunks(chunk).zip(results.chunks_mut(chunk)) {
            scope.spawn(move || {
                for (probe, out) in probes.iter().zip(out.iter_mut()) {
                    *out = match probe.target {
                        None => Ok(false),
                        Some(target) => {
                            let args = probe::exec_args(
                                &probe.from,
                                &probe.container,
                                target,
                                probe.protocol,
                                options.timeout,
                            );
                            kubectl
                                .probe(&args)
                                .map(|seen| seen == Seen::Connected)
                                .map_err(|e| {
                                    format!(
                                        "{} -> {} {}/{}: {e}",
                                        probe.from, probe.to, probe.port, probe.protocol
                                    )
                                })
                        }
                    };
                }
            });
        }
    });
    results.into_iter().collect()
}

/// Probes `planned` until they all agree or `attempts` are used; the
/// disagreeing ones of the last attempt as mismatches of step `step`.
fn probe_until_agreed(
    kubectl: &Kubectl,
    planned: &[Planned],
    step: usize,
    options: &Options,
) -> Result<Vec<Mismatch>, String> {
    let mut mismatches = Vec::new();
    for attempt in 1..=options.attempts.max(1) {
        if attempt > 1 {
            std::thread::sleep(options.retry_after);
        }
        let seen = probe_all(kubectl, planned, options)?;
        mismatches = planned
            .iter()
            .zip(seen)
            .filter(|(probe, allowed)| probe.expected != *allowed)
            .map(|(probe, allowed)| Mismatch {
                step,
                port: probe.port,
                protocol: probe.protocol,
                from: probe.from.to_string(),
                to: probe.to.to_string(),
                expected: probe.expected,
                allowed,
            })
            .collect();
        if mismatches.is_empty() {
            break;
        }
    }
    Ok(mismatches)
}

fn finish(mut outcome: Outcome, started: Instant, result: Result<(), String>) -> Outcome {
    outcome.elapsed = started.elapsed();
    let error = result
        .err()
        .map(|error| format!("step {}: {error}", outcome.steps.max(1)));
    outcome.verdict = CaseResult::of_run(error, &outcome.mismatches);
    outcome
}

/// Runs every case file in `dir` on the cluster, calling `report` with each
/// outcome as it is known.
pub fn conformance(
    kubectl: &Kubectl,
    dir: &Path,
    options: &Options,
    mut report: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>, E2eError> {
    let files = case_files(dir)?;
    let cases: Vec<(PathBuf, Result<Case, String>)> = files
        .into_iter()
        .map(|file| {
            let case = Case::load(&file).map_err(|e| format!("{}: {}", file.display(), causes(&e)));
            (file, case)
        })
        .collect();
    let ports: Vec<(u16, Protocol)> = cases
        .iter()
        .filter_map(|(_, case)| case.as_ref().ok())
        .filter(|case| !case.probes_sctp())
        .flat_map(Case::ports_used)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    kubectl.apply(&manifests::fixture(&ports).map_err(E2eError::Input)?)?;
    for namespace in NAMESPACES {
        kubectl.wait_ready(namespace, options.ready_timeout)?;
    }
    let pod_addresses = kubectl.addresses("pods", &NAMESPACES)?;
    let service_addresses = kubectl.addresses("services", &NAMESPACES)?;
    let mut outcomes = Vec::new();
    for (file, case) in cases {
        let outcome = match case {
            Err(reason) => {
                let name = file
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                Outcome::not_run(name, file, CaseResult::Fail(reason))
            }
            Ok(case) if case.probes_sctp() => {
                Outcome::not_run(case.name, case.file, CaseResult::Skip(NO_SCTP.into()))
            }
            Ok(case) => {
                let started = Instant::now();
                let mut outcome =
                    Outcome::not_run(case.name.clone(), case.file.clone(), CaseResult::Pass);
                let cluster = Cluster {
                    kubectl,
                    ports: &ports,
                    pods: &pod_addresses,
                    services: &service_addresses,
                };
                let result = cluster.run_case(&case, options, &mut outcome);
                finish(outcome, started, result)
            }
        };
        report(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The fixture on the cluster.
struct Cluster<'a> {
    kubectl: &'a Kubectl,
    ports: &'a [(u16, Protocol)],
    pods: &'a BTreeMap<ObjectRef, IpAddr>,
    services: &'a BTreeMap<ObjectRef, IpAddr>,
}

impl Cluster<'_> {
    fn run_case(
        &self,
        case: &Case,
        options: &Options,
        outcome: &mut Outcome,
    ) -> Result<(), String> {
        // Reset: no policies, the fixture's labels.
        for namespace in NAMESPACES {
            self.kubectl
                .delete_policies(namespace)
                .map_err(|e| causes(&e).to_string())?;
        }
        self.kubectl
            .apply(&manifests::fixture(self.ports)?)
            .map_err(|e| causes(&e).to_string())?;
        let mut labels: BTreeMap<ObjectRef, Labels> = fixture::pods()
            .into_iter()
            .map(|key| {
                let labels = Labels::from([("pod".to_string(), key.name.clone())]);
                (key, labels)
            })
            .collect();
        for (index, step) in case.steps.iter().enumerate() {
            outcome.steps = index + 1;
            self.mutate(step, &mut labels)?;
            let planned = self.plan(step, &labels);
            outcome.probes += planned.len();
            let mismatches = probe_until_agreed(self.kubectl, &planned, index + 1, options)?;
            outcome.mismatches.extend(mismatches);
        }
        Ok(())
    }

    /// A step's apply (placeholders filled with pod addresses), delete and relabel.
    fn mutate(&self, step: &Step, labels: &mut BTreeMap<ObjectRef, Labels>) -> Result<(), String> {
        let mut policies = Vec::new();
        for object in &step.apply {
            let mut object = object.clone();
            expand_value(&mut object, self.pods)?;
            policies.push(object);
        }
        if !policies.is_empty() {
            self.kubectl
                .apply(&policies)
                .map_err(|e| causes(&e).to_string())?;
        }
        for key in &step.delete {
            self.kubectl
                .delete_policy(key)
                .map_err(|e| causes(&e).to_string())?;
        }
        for change in &step.relabel {
            let object = match change {
                Relabel::Namespace(name, new) => manifests::namespace(name, new),
                Relabel::Pod(key, new) => {
                    labels.insert(key.clone(), new.clone());
                    manifests::fixture_pod(key, new, self.ports)?
                }
            };
            self.kubectl
                .apply(&[object])
                .map_err(|e| causes(&e).to_string())?;
        }
        Ok(())
    }

    /// Every off-diagonal probe of `step`, through each destination's Service;
    /// a destination its Service no longer selects (relabelled without
    /// `pod=<name>`) is unreachable, as upstream sees it.
    fn plan(&self, step: &Step, labels: &BTreeMap<ObjectRef, Labels>) -> Vec<Planned> {
        let pods = fixture::pods();
        let mut planned = Vec::new();
        for probe in &step.probes {
            for from in &pods {
                for to in pods.iter().filter(|to| *to != from) {
                    let selected = labels.get(to).and_then(|l| l.get("pod")) == Some(&to.name);
                    let service =
                        ObjectRef::new(&to.namespace, format!("s-{}-{}", to.namespace, to.name));
                    let target = self
                        .services
                        .get(&service)
                        .filter(|_| selected)
                        .map(|ip| SocketAddr::new(*ip, probe.port));
                    planned.push(Planned {
                        from: from.clone(),
                        to: to.clone(),
                        port: probe.port,
                        protocol: probe.protocol,
                        target,
                        container: probe::container_name(probe.port, probe.protocol),
                        expected: probe
                            .expected
                            .allowed(&from.to_string(), &to.to_string())
                            .unwrap_or(false),
                    });
                }
            }
        }
        planned
    }
}

/// Namespaces a cluster has of its own: an example may put pods there, but
/// never deletes them.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Runs each example on the cluster: its files applied in order (pods served
/// by agnhost), each file's expectations probed pod to pod after it; then its
/// objects deleted.
pub fn examples(
    kubectl: &Kubectl,
    examples: &[Example],
    options: &Options,
    mut report: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for (name, files) in examples {
        let started = Instant::now();
        let mut outcome = Outcome::not_run(
            name.clone(),
            files.first().cloned().unwrap_or_default(),
            CaseResult::Pass,
        );
        let mut applied = Applied::default();
        let result = run_example(kubectl, files, options, &mut outcome, &mut applied);
        // Always, and waiting until they are gone: the next example may make
        // objects of the same names.
        let cleanup: Vec<Value> = applied
            .objects
            .iter()
            .rev()
            .filter(|o| {
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                !(o["kind"] == "Namespace"
                    && (SYSTEM_NAMESPACES.contains(&name)
                        || applied.existing_namespaces.contains(name)))
            })
            .cloned()
            .collect();
        let cleaned = kubectl
            .delete(&cleanup)
            .map_err(|e| format!("cleaning up: {}", causes(&e)));
        let result = result.and(cleaned);
        let outcome = finish(outcome, started, result);
        report(&outcome);
        outcomes.push(outcome);
    }
    outcomes
}

/// The objects of manifest `file` (`text`), read as the manifest loader reads
/// them, empty documents left out.
fn documents(file: &Path, text: &str) -> Result<Vec<Value>, String> {
    let documents = parse_documents(file, text).map_err(|e| causes(&e).to_string())?;
    Ok(documents.into_iter().filter(|doc| !doc.is_null()).collect())
}

/// What an example has applied, for its cleanup.
#[derive(Default)]
struct Applied {
    /// Every object, in the order applied (those whose apply failed included).
    objects: Vec<Value>,
    /// Namespaces it names that existed before it: never deleted.
    existing_namespaces: BTreeSet<String>,
}

fn run_example(
    kubectl: &Kubectl,
    files: &[PathBuf],
    options: &Options,
    outcome: &mut Outcome,
    applied: &mut Applied,
) -> Result<(), String> {
    let mut steps: Vec<(Vec<Value>, Vec<Expectation>)> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let objects = documents(file, &text)?;
        let expected = expectations(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        steps.push((objects, expected));
    }
    // Every pod serves every port it is probed on, in any step.
    let mut serve: BTreeMap<ObjectRef, BTreeSet<(u16, Protocol)>> = BTreeMap::new();
    for expectation in steps.iter().flat_map(|(_, e)| e) {
        serve
            .entry(expectation.to.clone())
            .or_default()
            .insert((expectation.port, expectation.protocol));
    }
    for (index, (objects, expected)) in steps.iter().enumerate() {
        outcome.steps = index + 1;
        let objects = objects
            .iter()
            .map(|object| {
                let key = ObjectRef::new(
                    object["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default"),
                    object["metadata"]["name"].as_str().unwrap_or_default(),
                );
                manifests::example_object(object, serve.get(&key).unwrap_or(&BTreeSet::new()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for namespace in objects.iter().filter(|o| o["kind"] == "Namespace") {
            let name = namespace["metadata"]["name"].as_str().unwrap_or_default();
            let ours = applied
                .objects
                .iter()
                .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == name);
            if !ours
                && kubectl
                    .namespace_exists(name)
                    .map_err(|e| causes(&e).to_string())?
            {
                applied.existing_namespaces.insert(name.to_string());
            }
        }
        applied.objects.extend(objects.iter().cloned());
        kubectl
            .apply(&objects)
            .map_err(|e| causes(&e).to_string())?;
        let namespaces: BTreeSet<&str> = objects
            .iter()
            .filter(|o| o["kind"] == "Pod")
            .filter_map(|o| o["metadata"]["namespace"].as_str())
            .collect();
        for namespace in &namespaces {
            kubectl
                .wait_ready(namespace, options.ready_timeout)
                .map_err(|e| causes(&e).to_string())?;
        }
        let all: Vec<&str> = applied
            .objects
            .iter()
            .filter(|o| o["kind"] == "Pod")
            .filter_map(|o| o["metadata"]["namespace"].as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let addresses = kubectl
            .addresses("pods", &all)
            .map_err(|e| causes(&e).to_string())?;
        let planned: Vec<Planned> = expected
            .iter()
            .map(|e| Planned {
                from: e.from.clone(),
                to: e.to.clone(),
                port: e.port,
                protocol: e.protocol,
                target: addresses.get(&e.to).map(|ip| SocketAddr::new(*ip, e.port)),
                container: manifests::PROBE_CONTAINER.to_string(),
                expected: e.allowed,
            })
            .collect();
        if let Some(missing) = planned.iter().find(|p| p.target.is_none()) {
            return Err(format!(
                "{} has no address: it is no pod of the example",
                missing.to
            ));
        }
        outcome.probes += planned.len();
        let mismatches = probe_until_agreed(kubectl, &planned, index + 1, options)?;
        outcome.mismatches.extend(mismatches);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_examples_file_is_read_as_the_manifest_loader_reads_it() {
        let file = Path::new("cluster.yaml");
        let objects = documents(file, "---\nkind: Namespace\nmetadata: {name: web}\n---\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            objects,
            [serde_json::json!({"kind": "Namespace", "metadata": {"name": "web"}})]
        );
        let error = documents(file, "kind: Pod\nmetadata: [\n")
            .err()
            .unwrap_or_default();
        assert!(error.contains("cluster.yaml"), "{error}");
    }
}
