//! A recording of `policy-agent flows --output json`, as `diff --flows` and
//! `suggest --flows` read it: the flows that passed (allowed or would-drop) on
//! a port, each end with its address and, where the recording names one, its pod.
//! A connection passes only if no event of the recording dropped it: one end's
//! egress may allow what the other end's ingress drops, so a recording made
//! without `--verdict` tells them apart (one of allows only cannot).

use std::{
    fs::File,
    io::{BufRead, BufReader},
    net::IpAddr,
    path::Path,
};

use anyhow::Context;
use serde::Deserialize;

use crate::model::{ObjectRef, Protocol};

/// One end of a recorded flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEnd {
    /// The address the packet carried.
    pub address: IpAddr,
    /// The pod the recording names at it, if any.
    pub pod: Option<ObjectRef>,
}

/// One recorded flow that passed, on a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedFlow {
    /// Who opened it.
    pub source: RecordedEnd,
    /// Where it went.
    pub destination: RecordedEnd,
    /// Destination port.
    pub port: u16,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
}

/// One line of the recording, as far as it is read.
#[derive(Debug, Deserialize)]
struct Line {
    source: LineEnd,
    destination: LineEnd,
    protocol: String,
    verdict: String,
}

#[derive(Debug, Deserialize)]
struct LineEnd {
    address: IpAddr,
    port: u16,
    pod: Option<String>,
}

impl LineEnd {
    fn end(&self) -> RecordedEnd {
        RecordedEnd {
            address: self.address,
            pod: self
                .pod
                .as_deref()
                .and_then(|pod| pod.split_once('/'))
                .map(|(namespace, name)| ObjectRef::new(namespace, name)),
        }
    }
}

/// The flows of the recording at `path` that passed (allowed or would-drop) on
/// a port, one per event; a connection some event dropped (same addresses,
/// ports and protocol) and flows without ports (ICMP) are left out.
pub fn read(path: &Path) -> anyhow::Result<Vec<RecordedFlow>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut passed = Vec::new();
    let mut dropped = std::collections::BTreeSet::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let recorded: Line = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: not a line of `flows --output json`",
                path.display(),
                number + 1
            )
        })?;
        let Some(protocol) = Protocol::parse(&recorded.protocol) else {
            continue;
        };
        let key = (
            recorded.source.address,
            recorded.source.port,
            recorded.destination.address,
            recorded.destination.port,
            protocol,
        );
        if recorded.verdict == "dropped" {
            dropped.insert(key);
            continue;
        }
        let flow = RecordedFlow {
            source: recorded.source.end(),
            destination: recorded.destination.end(),
            port: recorded.destination.port,
            protocol,
        };
        passed.push((key, flow));
    }
    Ok(passed
        .into_iter()
        .filter(|(key, _)| !dropped.contains(key))
        .map(|(_, flow)| flow)
        .collect())
}
