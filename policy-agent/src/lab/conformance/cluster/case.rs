//! A ClusterNetworkPolicy case file, read and checked before anything runs: its
//! upstream test, whether it needs an experimental feature, and its steps, each a
//! list of probes from one fixture pod to another with the expected result.
//!
//! The format is described in `tests/data/cluster-conformance/TRANSLATION.md`.
//! Fields the runner does not use (`upstream.manifests`, ...) are ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{fixture, FIXTURE};
use crate::{
    lab::conformance::CaseError,
    model::{Labels, ObjectRef, Protocol},
    source::yaml,
};

fn invalid(field: impl Into<String>, message: impl Into<String>) -> CaseError {
    CaseError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A checked case, ready to run.
#[derive(Clone, Debug)]
pub struct ClusterCase {
    /// The file name without `.yaml`, e.g. `admin-tier-ingress-tcp`.
    pub name: String,
    /// Where it was read from.
    pub file: PathBuf,
    /// The upstream test (`ShortName`), e.g. `CNPAdminTierIngressTCP`.
    pub test: String,
    /// The experimental upstream features it needs (empty: a standard test).
    pub experimental: Vec<String>,
    /// The steps, in order.
    pub steps: Vec<ClusterStep>,
}

/// One step: mutations in the order apply, delete, relabel; then probes.
#[derive(Clone, Debug)]
pub struct ClusterStep {
    /// The upstream subtest (`t.Run` title) the step belongs to.
    pub subtest: String,
    /// Policy objects (ClusterNetworkPolicy or NetworkPolicy) to create or
    /// replace; CIDR placeholders unexpanded.
    pub apply: Vec<Value>,
    /// Policies to delete.
    pub delete: Vec<Deletion>,
    /// Namespaces whose labels change: the labels upstream sets (the API server
    /// keeps `kubernetes.io/metadata.name`).
    pub relabel: Vec<(String, Labels)>,
    /// What to probe and what to expect, in upstream order.
    pub probes: Vec<PodProbe>,
}

/// A policy to delete.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deletion {
    /// `ClusterNetworkPolicy` or `NetworkPolicy`.
    pub kind: String,
    /// The namespace of a NetworkPolicy; none for a ClusterNetworkPolicy.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
}

/// One probe: a connection from one fixture pod to another's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProbe {
    /// The client pod.
    pub from: ObjectRef,
    /// The server pod (upstream connects to its `status.podIP`).
    pub to: ObjectRef,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// Whether the connection must get through (else it must time out).
    pub allowed: bool,
}

impl ClusterCase {
    /// Reads and checks a case file.
    pub fn load(file: &Path) -> Result<Self, CaseError> {
        let (name, text) = crate::lab::conformance::case::read(file)?;
        Self::parse(&name, file, &text)
    }

    /// Checks the text of a case file named `name`.
    pub fn parse(name: &str, file: &Path, text: &str) -> Result<Self, CaseError> {
        let raw: RawCase =
            yaml::from_str(text).map_err(|(field, source)| CaseError::Decode { field, source })?;
        if raw.fixture != FIXTURE {
            return Err(invalid(
                "fixture",
                format!("{:?} is not {FIXTURE:?}", raw.fixture),
            ));
        }
        let steps = crate::lab::conformance::case::checked_steps(raw.steps, ClusterStep::check)?;
        Ok(Self {
            name: name.to_string(),
            file: file.to_path_buf(),
            test: raw.upstream.test,
            experimental: raw.experimental,
            steps,
        })
    }

    /// Every probe of every step, with its step counted from 1.
    pub fn probes(&self) -> impl Iterator<Item = (usize, &PodProbe)> {
        self.steps
            .iter()
            .enumerate()
            .flat_map(|(i, step)| step.probes.iter().map(move |p| (i + 1, p)))
    }

    /// Whether every probe is SCTP.
    pub fn probes_only_sctp(&self) -> bool {
        self.probes().all(|(_, p)| p.protocol == Protocol::Sctp)
    }

    /// Whether some probe connects from a host-network pod.
    pub fn probes_from_host_network(&self) -> bool {
        self.probes()
            .any(|(_, p)| fixture::is_host_network(&p.from))
    }

    /// The ports (not SCTP) probes connect to on host-network pods: what the
    /// nodes must serve.
    pub fn host_network_ports(&self) -> Vec<(u16, Protocol)> {
        let ports: std::collections::BTreeSet<(u16, Protocol)> = self
            .probes()
            .filter(|(_, p)| fixture::is_host_network(&p.to) && p.protocol != Protocol::Sctp)
            .map(|(_, p)| (p.port, p.protocol))
            .collect();
        ports.into_iter().collect()
    }

    /// Whether some step applies a ClusterNetworkPolicy.
    pub fn applies_cluster_policies(&self) -> bool {
        self.steps
            .iter()
            .flat_map(|s| &s.apply)
            .any(|object| object.get("kind").and_then(Value::as_str) == Some(super::CNP_KIND))
    }
}

impl ClusterStep {
    fn check(raw: RawStep, field: &str) -> Result<Self, CaseError> {
        for (i, object) in raw.apply.iter().enumerate() {
            let kind = object.get("kind").and_then(Value::as_str);
            if !matches!(kind, Some(super::CNP_KIND | super::NP_KIND)) {
                return Err(invalid(
                    format!("{field}.apply[{i}].kind"),
                    "only ClusterNetworkPolicy and NetworkPolicy objects can be applied",
                ));
            }
        }
        for (i, deletion) in raw.delete.iter().enumerate() {
            let namespaced = deletion.namespace.is_some();
            let ok = match deletion.kind.as_str() {
                super::CNP_KIND => !namespaced,
                super::NP_KIND => namespaced,
                _ => false,
            };
            if !ok {
                return Err(invalid(
                    format!("{field}.delete[{i}]"),
                    "a ClusterNetworkPolicy (no namespace) or a NetworkPolicy (with one)",
                ));
            }
        }
        let mut relabel = Vec::new();
        for (i, change) in raw.relabel.into_iter().enumerate() {
            if !fixture::NAMESPACES
                .iter()
                .any(|(ns, _)| *ns == change.namespace)
            {
                return Err(invalid(
                    format!("{field}.relabel[{i}].namespace"),
                    format!("{:?} is no fixture namespace", change.namespace),
                ));
            }
            relabel.push((change.namespace, change.labels));
        }
        let probes = raw
            .probes
            .iter()
            .enumerate()
            .map(|(i, probe)| probe.check(&format!("{field}.probes[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        if probes.is_empty() {
            return Err(invalid(format!("{field}.probes"), "a step must probe"));
        }
        Ok(Self {
            subtest: raw.subtest,
            apply: raw.apply,
            delete: raw.delete,
            relabel,
            probes,
        })
    }
}

fn fixture_pod(text: &str, field: &str) -> Result<ObjectRef, CaseError> {
    fixture::all_pods()
        .into_iter()
        .find(|pod| pod.to_string() == text)
        .ok_or_else(|| invalid(field, format!("{text:?} is no fixture pod")))
}

impl RawProbe {
    fn check(&self, field: &str) -> Result<PodProbe, CaseError> {
        let protocol = match self.protocol.as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                return Err(invalid(
                    format!("{field}.protocol"),
                    format!("{other:?} is not TCP, UDP or SCTP"),
                ))
            }
        };
        if self.port == 0 {
            return Err(invalid(format!("{field}.port"), "0 is not a port"));
        }
        let allowed = match self.expect.as_str() {
            "allowed" => true,
            "dropped" => false,
            other => {
                return Err(invalid(
                    format!("{field}.expect"),
                    format!("{other:?} is neither allowed nor dropped"),
                ))
            }
        };
        Ok(PodProbe {
            from: fixture_pod(&self.from, &format!("{field}.from"))?,
            to: fixture_pod(&self.to, &format!("{field}.to"))?,
            protocol,
            port: self.port,
            allowed,
        })
    }
}

#[derive(Deserialize)]
struct RawCase {
    fixture: String,
    upstream: RawUpstream,
    #[serde(default)]
    experimental: Vec<String>,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
struct RawUpstream {
    test: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    subtest: String,
    #[serde(default)]
    apply: Vec<Value>,
    #[serde(default)]
    delete: Vec<Deletion>,
    #[serde(default)]
    relabel: Vec<RawRelabel>,
    probes: Vec<RawProbe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelabel {
    namespace: String,
    labels: Labels,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    from: String,
    to: String,
    protocol: String,
    port: u16,
    expect: String,
}
