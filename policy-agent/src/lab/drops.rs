//! What the datapath reported while the lab probed (`lab run --show-drops`): its
//! verdict events (every node's, in a lab of several), read in this process while
//! probes run, named, and folded into one entry per flow (source, destination,
//! port, where and why, and in a lab of several nodes which node) with a packet
//! count. Would-drops (audit mode) mark the probes they belong to.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::Serialize;

use super::{
    probe::{ProbeRoute, ProbeSpec},
    report::{aligned, ProbeResult},
    Lab, LabError,
};
use crate::{
    dataplane::{DataplaneError, EventReader, EventVerdict, EventsLost, VerdictRecord},
    telemetry::flows::{
        line::{direction_name, DecidingRule},
        table::verdict_name,
        FlowLine, WallClock,
    },
};

/// One event, named, with the node whose datapath reported it.
#[derive(Clone, Debug)]
pub struct ReportedLine {
    /// The node's name, in a lab of several nodes (`None` in a lab of one).
    pub node: Option<String>,
    /// The event.
    pub line: FlowLine,
}

/// Probes and what the datapath reported while they ran.
#[derive(Clone, Debug)]
pub struct ReportedProbes {
    /// The probe results, would-drops marked.
    pub results: Vec<ProbeResult>,
    /// Every event read while probing, named, oldest first.
    pub lines: Vec<ReportedLine>,
    /// Events the datapath could not report meanwhile.
    pub lost: EventsLost,
}

/// Runs `specs` as `Lab::probe_via` does while reading every node's events, names
/// them with that node's tables, and marks the probes reported as would-drops.
/// Events already waiting are discarded (they are not the probes'), and the
/// events go to this reader only: a `policy-agent flows` following the lab misses
/// them.
pub fn probe_reporting(
    lab: &mut Lab,
    specs: &[ProbeSpec],
    route: ProbeRoute,
    timeout: Duration,
) -> Result<ReportedProbes, LabError> {
    let collectors: Vec<(usize, EventCollector)> = lab
        .event_readers()?
        .into_iter()
        .map(|(node, reader)| (node, EventCollector::start(reader)))
        .collect();
    let before = lab.stats()?;
    let probed = lab.probe_via(specs, route, timeout);
    let mut read = Vec::new();
    for (node, collector) in collectors {
        read.push((node, collector.finish()?));
    }
    let mut results = probed?;
    let lost = EventsLost::between(&before, &lab.stats()?);
    let clock = WallClock::now();
    let several = lab.nodes().len() > 1;
    let mut lines = Vec::new();
    for (node, records) in read {
        let names = lab.node_flow_names(node).unwrap_or_default();
        let node = several
            .then(|| lab.nodes().get(node).map(|n| n.name.clone()))
            .flatten();
        lines.extend(records.iter().map(|record| ReportedLine {
            node: node.clone(),
            line: FlowLine::name(record, &names, clock),
        }));
    }
    lines.sort_by_key(|reported| reported.line.unix_ns);
    mark_would_drops(&mut results, &lines);
    Ok(ReportedProbes {
        results,
        lines,
        lost,
    })
}

/// Reads verdict events on a helper thread until `finish`, so a long matrix never
/// fills the ring buffer.
pub struct EventCollector {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Vec<VerdictRecord>, DataplaneError>>,
}

impl EventCollector {
    /// Starts reading; events already waiting are discarded (they come from
    /// before the probes: interfaces coming up).
    pub fn start(mut reader: EventReader) -> Self {
        reader.drain();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut records = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                reader.wait(Duration::from_millis(50))?;
                records.extend(reader.drain());
            }
            records.extend(reader.drain());
            Ok(records)
        });
        Self { stop, handle }
    }

    /// Stops reading and returns every event read, oldest first.
    pub fn finish(self) -> Result<Vec<VerdictRecord>, LabError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.join() {
            Ok(records) => Ok(records?),
            Err(_) => Err(LabError::Thread {
                what: "reading verdict events".into(),
            }),
        }
    }
}

/// One dropped (or would-drop) flow as the datapath reported it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SeenDrop {
    /// Source pod (`namespace/name`), or the address when it is no pod.
    pub from: String,
    /// Destination pod, or the address.
    pub to: String,
    /// Destination port (0 for ICMP).
    pub port: u16,
    /// `TCP`, `UDP`, `ICMP`, ...
    pub protocol: String,
    /// `drop` or `would-drop`.
    pub verdict: EventVerdict,
    /// The pod whose policy decided (`null`: an interface the lab does not know).
    pub pod: Option<String>,
    /// `ingress` or `egress` of `pod`.
    pub direction: &'static str,
    /// The datapath's counter, e.g. `drop_policy`.
    pub reason: String,
    /// The policies isolating `pod` in `direction` (none allows the flow), or
    /// the ClusterNetworkPolicy of `denied_by`.
    pub policies: Vec<String>,
    /// The ClusterNetworkPolicy `Deny` rule that decided it, if one did.
    pub denied_by: Option<DecidingRule>,
    /// Packets reported (retransmissions included).
    pub packets: u64,
    /// The node that reported it, in a lab of several nodes (left out of JSON in
    /// a lab of one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The drops and would-drops among `lines`, one entry per flow (source port
/// aside) and node, in flow order.
pub fn summarize(lines: &[ReportedLine]) -> Vec<SeenDrop> {
    let mut flows: BTreeMap<SeenDrop, u64> = BTreeMap::new();
    for ReportedLine { node, line } in lines
        .iter()
        .filter(|l| l.line.verdict != EventVerdict::Allowed)
    {
        let key = SeenDrop {
            from: line.source.short(),
            to: line.destination.short(),
            port: if line.has_ports() {
                line.destination.port
            } else {
                0
            },
            protocol: line.protocol.clone(),
            verdict: line.verdict,
            pod: line.pod.clone(),
            direction: direction_name(line.direction),
            reason: line.reason.clone(),
            policies: line.policies.clone(),
            denied_by: line.denied_by.clone(),
            packets: 0,
            node: node.clone(),
        };
        *flows.entry(key).or_default() += 1;
    }
    flows
        .into_iter()
        .map(|(drop, packets)| SeenDrop { packets, ..drop })
        .collect()
}

/// Marks the probes that passed as would-drops when an event says so.
pub fn mark_would_drops(results: &mut [ProbeResult], lines: &[ReportedLine]) {
    let would_drop: BTreeSet<(String, String, u16, String)> = lines
        .iter()
        .map(|reported| &reported.line)
        .filter(|l| l.verdict == EventVerdict::WouldDrop)
        .map(|l| {
            (
                l.source.short(),
                l.destination.short(),
                l.destination.port,
                l.protocol.clone(),
            )
        })
        .collect();
    for result in results.iter_mut().filter(|r| r.allowed) {
        let key = (
            result.from.clone(),
            result.to.clone(),
            result.port,
            result.protocol.to_string(),
        );
        if would_drop.contains(&key) {
            result.would_drop = true;
        }
    }
}

/// The drops as a table, with a title line (and a `node` column when a drop
/// names its node); a note when events were lost.
pub fn to_table(drops: &[SeenDrop], lost: EventsLost) -> String {
    let mut out = String::new();
    if drops.is_empty() {
        out.push_str("drops reported while probing: none\n");
    } else {
        let packets: u64 = drops.iter().map(|d| d.packets).sum();
        out.push_str(&format!(
            "drops reported while probing: {} flows, {packets} packets\n",
            drops.len()
        ));
        let with_node = drops.iter().any(|d| d.node.is_some());
        let header = [
            "from", "to", "port", "verdict", "node", "at", "reason", "policies", "packets",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.map(String::from).to_vec()];
        rows.extend(drops.iter().map(|d| {
            let port = if d.port == 0 {
                d.protocol.clone()
            } else {
                format!("{}/{}", d.port, d.protocol)
            };
            let at = format!(
                "{} {}",
                d.pod.as_deref().unwrap_or("unknown interface"),
                d.direction
            );
            let policies = match &d.denied_by {
                Some(rule) => rule.describe(),
                None if d.policies.is_empty() => "-".to_string(),
                None => d.policies.join(", "),
            };
            vec![
                d.from.clone(),
                d.to.clone(),
                port,
                verdict_name(d.verdict).to_string(),
                d.node.clone().unwrap_or_default(),
                at,
                d.reason.clone(),
                policies,
                d.packets.to_string(),
            ]
        }));
        if !with_node {
            for row in &mut rows {
                row.remove(4);
            }
        }
        out.push_str(&aligned(&rows));
    }
    if lost.any() {
        out.push_str(&lost_note(lost));
        out.push('\n');
    }
    out
}

/// What to say when events were lost.
pub fn lost_note(lost: EventsLost) -> String {
    format!(
        "warning: the datapath could not report {}; the list may be incomplete",
        lost.describe()
    )
}

/// `{"probes":[...],"drops":[...],"events_lost":{"rate_limited":N,"endpoint_limited":N,"ring_full":N}}`.
pub fn to_json(results: &[ProbeResult], drops: &[SeenDrop], lost: EventsLost) -> String {
    #[derive(Serialize)]
    struct WithDrops<'a> {
        probes: &'a [ProbeResult],
        drops: &'a [SeenDrop],
        events_lost: EventsLost,
    }
    serde_json::to_string(&WithDrops {
        probes: results,
        drops,
        events_lost: lost,
    })
    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests;
