//! Runs a conformance case file (the upstream NetworkPolicy e2e cases as data) in
//! the lab: fixture x/y/z x a/b/c, steps of apply/delete/relabel, probes between pod
//! IPs compared with the expected matrices, the diagonal ignored.

use std::{collections::BTreeMap, path::Path, time::Duration};

use k8s_openapi::api::networking::v1::NetworkPolicy as ApiNetworkPolicy;
use policy_agent::{
    lab::{probe::ProbeSpec, Lab},
    model::{ClusterState, ContainerPort, Labels, Namespace, ObjectRef, Pod, Protocol},
    source::convert,
};
use serde::Deserialize;

/// One case file.
#[derive(Debug, Deserialize)]
pub struct Case {
    /// Short name.
    pub name: String,
    /// The fixture.
    pub model: Model,
    /// Steps in order.
    pub steps: Vec<Step>,
}

/// The fixture a case runs on.
#[derive(Debug, Deserialize)]
pub struct Model {
    /// Namespaces (x, y, z).
    pub namespaces: Vec<String>,
    /// Pod names in each namespace (a, b, c).
    pub pods: Vec<String>,
    /// Ports every pod serves.
    pub ports: Vec<u16>,
    /// Protocols every pod serves each port on.
    pub protocols: Vec<String>,
}

/// One step: mutate, then probe.
#[derive(Debug, Deserialize)]
pub struct Step {
    /// NetworkPolicy objects to create or replace.
    #[serde(default)]
    pub apply: Vec<serde_norway::Value>,
    /// `ns/name` of policies to delete.
    #[serde(default)]
    pub delete: Vec<String>,
    /// Full new label sets of pods or namespaces.
    #[serde(default)]
    pub relabel: Vec<Relabel>,
    /// What to probe.
    pub probes: Vec<ProbePort>,
    /// `"PORT/PROTO"` -> matrix text.
    pub expect: BTreeMap<String, String>,
}

/// A label change.
#[derive(Debug, Deserialize)]
pub struct Relabel {
    /// `ns/name` of a pod.
    pub pod: Option<String>,
    /// A namespace name.
    pub namespace: Option<String>,
    /// The complete new labels.
    pub labels: Labels,
}

/// A probed port.
#[derive(Debug, Deserialize)]
pub struct ProbePort {
    /// Port number.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// Reads a case file.
pub fn load(path: &Path) -> Case {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn protocol(text: &str) -> Protocol {
    Protocol::parse(text).unwrap_or_else(|| panic!("unknown protocol {text}"))
}

fn object_ref(text: &str) -> ObjectRef {
    let (ns, name) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("'{text}' is not ns/name"));
    ObjectRef::new(ns, name)
}

/// The fixture: namespaces labelled like upstream, pods `pod=<name>` serving the
/// model's ports with upstream's container port names.
pub fn fixture(model: &Model) -> ClusterState {
    let mut state = ClusterState::default();
    for ns in &model.namespaces {
        let mut namespace = Namespace::implicit(ns);
        namespace.labels.insert("ns".into(), ns.clone());
        state.namespaces.insert(ns.clone(), namespace);
        for name in &model.pods {
            let mut ports = Vec::new();
            for port in &model.ports {
                for proto in &model.protocols {
                    ports.push(ContainerPort {
                        name: Some(format!("serve-{port}-{}", proto.to_lowercase())),
                        port: *port,
                        protocol: protocol(proto),
                    });
                }
            }
            let key = ObjectRef::new(ns.clone(), name.clone());
            let pod = Pod {
                key: key.clone(),
                labels: Labels::from([("pod".to_string(), name.clone())]),
                ips: vec![],
                node_name: None,
                host_network: false,
                ports,
            };
            state.pods.insert(key, pod);
        }
    }
    state
}

/// Applies a step's mutations in the documented order: apply, delete, relabel.
fn mutate(state: &mut ClusterState, step: &Step) {
    for object in &step.apply {
        let api: ApiNetworkPolicy = serde_norway::from_value(object.clone())
            .unwrap_or_else(|e| panic!("a case policy does not parse: {e}"));
        let policy = convert::network_policy(&api)
            .unwrap_or_else(|e| panic!("a case policy does not convert: {e}"));
        state.policies.insert(policy.key.clone(), policy);
    }
    for name in &step.delete {
        state.policies.remove(&object_ref(name));
    }
    for change in &step.relabel {
        if let Some(pod) = &change.pod {
            if let Some(pod) = state.pods.get_mut(&object_ref(pod)) {
                pod.labels = change.labels.clone();
            }
        }
        if let Some(ns) = &change.namespace {
            if let Some(ns) = state.namespaces.get_mut(ns) {
                ns.labels = change.labels.clone();
            }
        }
    }
}

/// Parses an expected matrix: `(from, to) -> allowed`.
fn parse_matrix(text: &str) -> BTreeMap<(String, String), bool> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .map(|l| l.split_whitespace().skip(1).collect())
        .unwrap_or_default();
    let mut cells = BTreeMap::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(from) = words.next() else { continue };
        for (to, mark) in header.iter().zip(words) {
            cells.insert((from.to_string(), to.to_string()), mark == ".");
        }
    }
    cells
}

/// Runs the case; returns one line per off-diagonal probe that disagreed.
pub fn run(case: &Case) -> Vec<String> {
    let mut state = fixture(&case.model);
    let mut lab = Lab::up(state.clone(), &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let pods = lab.pods();
    let mut mismatches = Vec::new();
    for (number, step) in case.steps.iter().enumerate() {
        mutate(&mut state, step);
        lab.update(state.clone())
            .unwrap_or_else(|e| panic!("step {number}: update: {e}"));
        for probe in &step.probes {
            let label = format!("{}/{}", probe.port, probe.protocol);
            let expected = parse_matrix(step.expect.get(&label).map_or("", String::as_str));
            let specs: Vec<ProbeSpec> = pods
                .iter()
                .flat_map(|from| pods.iter().map(move |to| (from, to)))
                .filter(|(from, to)| from != to)
                .map(|(from, to)| ProbeSpec {
                    from: from.clone(),
                    to: to.clone(),
                    port: probe.port,
                    protocol: protocol(&probe.protocol),
                })
                .collect();
            let results = lab
                .probe(&specs, Duration::from_millis(1000))
                .unwrap_or_else(|e| panic!("step {number}: probe: {e}"));
            for r in results {
                let want = expected.get(&(r.from.clone(), r.to.clone())).copied();
                if want != Some(r.allowed) {
                    mismatches.push(format!(
                        "case {} step {number} {label}: {} -> {}: expected {}, got {}",
                        case.name,
                        r.from,
                        r.to,
                        want.map_or("no expectation", |w| if w { "allowed" } else { "denied" }),
                        if r.allowed { "allowed" } else { "denied" }
                    ));
                }
            }
        }
    }
    mismatches
}
