//! A conformance case file, read and checked before anything runs: the fixture it
//! needs, its steps, and one expected matrix per probed port.
//!
//! The format is the translation of the upstream e2e suite described in
//! `tests/data/conformance/TRANSLATION.md`. Fields the runner does not use
//! (`upstream`, `notes`, ...) are ignored. Everything the runner relies on is
//! checked here, so a malformed file is one error naming the field instead of a
//! half-run case.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{
    fixture::{self, NAMESPACES, PODS},
    matrix::Matrix,
};
use crate::{
    model::{Labels, ObjectRef, Protocol},
    source::yaml::{self, YamlError},
};

/// Why a case file cannot be run. Field paths are relative to the file
/// (`steps[1].expect."80/TCP"`).
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The file could not be read.
    #[error("cannot read")]
    Read {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML of the case shape.
    #[error("{}", field_or_case(field))]
    Decode {
        /// Path of the offending field; empty (or `.`) for the file as a whole.
        field: String,
        /// What the YAML reader said (with the line and column when known).
        #[source]
        source: YamlError,
    },
    /// A field has the right shape but a value the runner cannot use.
    #[error("{field}: {message}")]
    Invalid {
        /// Path of the offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The field a decode error is about, or the file as a whole.
fn field_or_case(field: &str) -> &str {
    if field.is_empty() || field == "." {
        "not a conformance case"
    } else {
        field
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> CaseError {
    CaseError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A checked case, ready to run.
#[derive(Clone, Debug)]
pub struct Case {
    /// The file name without `.yaml`, e.g. `01-default-deny-ingress`.
    pub name: String,
    /// Where it was read from.
    pub file: PathBuf,
    /// The container ports every fixture pod serves during this case.
    pub ports: Vec<(u16, Protocol)>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// A case file's name (its stem, else its path) and text: what each format's
/// `load` parses.
pub(super) fn read(file: &Path) -> Result<(String, String), CaseError> {
    let text = std::fs::read_to_string(file).map_err(|source| CaseError::Read { source })?;
    let name = file.file_stem().map_or_else(
        || file.display().to_string(),
        |s| s.to_string_lossy().into(),
    );
    Ok((name, text))
}

/// Each raw step checked by `check` at its path (`steps[i]`); a case needs at
/// least one. Shared by both case formats.
pub(super) fn checked_steps<R, S>(
    raw: Vec<R>,
    check: impl Fn(R, &str) -> Result<S, CaseError>,
) -> Result<Vec<S>, CaseError> {
    let steps = raw
        .into_iter()
        .enumerate()
        .map(|(i, step)| check(step, &format!("steps[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if steps.is_empty() {
        return Err(invalid("steps", "a case needs at least one step"));
    }
    Ok(steps)
}

impl Case {
    /// Reads and checks a case file.
    pub fn load(file: &Path) -> Result<Self, CaseError> {
        let (name, text) = read(file)?;
        Self::parse(&name, file, &text)
    }

    /// Checks the text of a case file named `name`.
    pub fn parse(name: &str, file: &Path, text: &str) -> Result<Self, CaseError> {
        let raw: RawCase =
            yaml::from_str(text).map_err(|(field, source)| CaseError::Decode { field, source })?;
        check_fixture(&raw.model)?;
        let mut ports = Vec::new();
        for (i, port) in raw.model.ports.iter().enumerate() {
            check_port(*port, &format!("model.ports[{i}]"))?;
            for (i, protocol) in raw.model.protocols.iter().enumerate() {
                let protocol = parse_protocol(protocol, &format!("model.protocols[{i}]"))?;
                ports.push((*port, protocol));
            }
        }
        let steps = checked_steps(raw.steps, Step::check)?;
        Ok(Self {
            name: name.to_string(),
            file: file.to_path_buf(),
            ports,
            steps,
        })
    }

    /// Whether any step probes SCTP (which needs kernel SCTP support).
    pub fn probes_sctp(&self) -> bool {
        self.steps
            .iter()
            .flat_map(|s| &s.probes)
            .any(|p| p.protocol == Protocol::Sctp)
    }

    /// Every (port, protocol) the case serves or probes.
    pub fn ports_used(&self) -> impl Iterator<Item = (u16, Protocol)> + '_ {
        let probed = self
            .steps
            .iter()
            .flat_map(|s| &s.probes)
            .map(|p| (p.port, p.protocol));
        self.ports.iter().copied().chain(probed)
    }
}

/// One step: mutations in the order apply, delete, relabel; then probes.
#[derive(Clone, Debug)]
pub struct Step {
    /// NetworkPolicy objects to create or replace; ipBlock placeholders unexpanded.
    pub apply: Vec<Value>,
    /// Policies to delete.
    pub delete: Vec<ObjectRef>,
    /// Label sets to replace.
    pub relabel: Vec<Relabel>,
    /// What to probe and what to expect, in file order.
    pub probes: Vec<Probe>,
}

impl Step {
    fn check(raw: RawStep, field: &str) -> Result<Self, CaseError> {
        let delete = raw
            .delete
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let (namespace, name) = text
                    .split_once('/')
                    .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
                    .ok_or_else(|| {
                        invalid(
                            format!("{field}.delete[{i}]"),
                            format!("{text:?} is not namespace/name"),
                        )
                    })?;
                Ok(ObjectRef::new(namespace, name))
            })
            .collect::<Result<Vec<_>, CaseError>>()?;
        let relabel = raw
            .relabel
            .into_iter()
            .enumerate()
            .map(|(i, r)| Relabel::check(r, &format!("{field}.relabel[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut probes = Vec::new();
        for (i, probe) in raw.probes.iter().enumerate() {
            check_port(probe.port, &format!("{field}.probes[{i}].port"))?;
            let protocol = parse_protocol(&probe.protocol, &format!("{field}.probes[{i}]"))?;
            let key = format!("{}/{protocol}", probe.port);
            let expect_field = format!("{field}.expect.\"{key}\"");
            let text = raw
                .expect
                .get(&key)
                .ok_or_else(|| invalid(&expect_field, "probed but no matrix is expected"))?;
            let expected =
                Matrix::parse(text).map_err(|message| invalid(&expect_field, message))?;
            probes.push(Probe {
                port: probe.port,
                protocol,
                expected,
            });
        }
        if probes.is_empty() {
            return Err(invalid(format!("{field}.probes"), "a step must probe"));
        }
        Ok(Self {
            apply: raw.apply,
            delete,
            relabel,
            probes,
        })
    }
}

/// A label change: the complete new label set of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relabel {
    /// A fixture pod's new labels.
    Pod(ObjectRef, Labels),
    /// A fixture namespace's new labels.
    Namespace(String, Labels),
}

impl Relabel {
    fn check(raw: RawRelabel, field: &str) -> Result<Self, CaseError> {
        match (raw.pod, raw.namespace) {
            (Some(pod), None) => {
                let key = fixture::pods()
                    .into_iter()
                    .find(|p| p.to_string() == pod)
                    .ok_or_else(|| {
                        invalid(format!("{field}.pod"), format!("{pod:?} is no fixture pod"))
                    })?;
                Ok(Relabel::Pod(key, raw.labels))
            }
            (None, Some(namespace)) if NAMESPACES.contains(&namespace.as_str()) => {
                Ok(Relabel::Namespace(namespace, raw.labels))
            }
            (None, Some(namespace)) => Err(invalid(
                format!("{field}.namespace"),
                format!("{namespace:?} is no fixture namespace"),
            )),
            _ => Err(invalid(field, "set exactly one of pod and namespace")),
        }
    }
}

/// One probed port with its expected matrix.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Which (from, to) pairs must connect.
    pub expected: Matrix,
}

fn check_port(port: u16, field: &str) -> Result<(), CaseError> {
    if port == 0 {
        return Err(invalid(field, "0 is not a port number (1-65535)"));
    }
    Ok(())
}

fn parse_protocol(text: &str, field: &str) -> Result<Protocol, CaseError> {
    Protocol::parse(text).ok_or_else(|| invalid(field, format!("{text:?} is not TCP, UDP or SCTP")))
}

/// The runner has one fixture; a case asking for another cannot run on it.
fn check_fixture(model: &RawModel) -> Result<(), CaseError> {
    let same = |found: &[String], wanted: &[&str]| {
        let mut found: Vec<&str> = found.iter().map(String::as_str).collect();
        found.sort_unstable();
        found == wanted
    };
    if !same(&model.namespaces, &NAMESPACES) {
        return Err(invalid(
            "model.namespaces",
            format!(
                "the runner's fixture has namespaces {}",
                NAMESPACES.join(", ")
            ),
        ));
    }
    if !same(&model.pods, &PODS) {
        return Err(invalid(
            "model.pods",
            format!("the runner's fixture has pods {}", PODS.join(", ")),
        ));
    }
    Ok(())
}

/// The file as written.
#[derive(Deserialize)]
struct RawCase {
    model: RawModel,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
struct RawModel {
    namespaces: Vec<String>,
    pods: Vec<String>,
    ports: Vec<u16>,
    protocols: Vec<String>,
}

#[derive(Deserialize)]
struct RawStep {
    #[serde(default)]
    apply: Vec<Value>,
    #[serde(default)]
    delete: Vec<String>,
    #[serde(default)]
    relabel: Vec<RawRelabel>,
    probes: Vec<RawProbe>,
    expect: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawRelabel {
    pod: Option<String>,
    namespace: Option<String>,
    labels: Labels,
}

#[derive(Deserialize)]
struct RawProbe {
    port: u16,
    protocol: String,
}
