//! `policy-agent diff`: what a change of manifests opens and closes. Both sides
//! get the probes `simulate` sends (same pods, ports and peers), judged by the
//! reference evaluator; a probe whose verdict differs is opened or closed. With
//! `--flows`, the flows a `flows --output json` recording saw pass are judged
//! under the new side too, and those it would drop are listed.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use super::{
    recording::{self, RecordedEnd},
    simulate, Output,
};
use crate::{
    lab::report::ProbeResult,
    model::{ClusterState, IpFamily, ObjectRef, Protocol},
    policy::{
        evaluator::{evaluate, End, Query},
        probes::{self, Probe},
    },
    source::load_all,
};

/// Arguments of `diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// Manifests both sides share (the cluster, the policies that stay); a file
    /// or a directory, repeatable.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["kubeconfig", "context"])]
    common: Vec<PathBuf>,
    /// Manifests only the old side has (the policies as they are); repeatable.
    #[arg(long, conflicts_with_all = ["kubeconfig", "context"])]
    old: Vec<PathBuf>,
    /// The old side is the cluster this kubeconfig names, read once; the new side
    /// is that cluster with the `--new` manifests applied over it.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// As `--kubeconfig`, for this context of the kubeconfig.
    #[arg(long)]
    context: Option<String>,
    /// Manifests only the new side has (the policies as they will be); repeatable.
    #[arg(long)]
    new: Vec<PathBuf>,
    #[command(flatten)]
    probing: simulate::Probing,
    /// A recording of `policy-agent flows --output json`: also list the flows it
    /// saw pass (allowed or would-drop) that the new side drops.
    #[arg(long, value_name = "FILE")]
    flows: Option<PathBuf>,
    /// Table or JSON (`{"opened":[...],"closed":[...]}`, entries as `simulate`'s
    /// probes with the new verdict; `"broken":[...]` with `--flows`).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// An observed flow the new side drops, with how many times it was recorded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Broken {
    /// The source: `namespace/name` of a pod, or its address.
    pub from: String,
    /// The destination, likewise.
    pub to: String,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Recorded flows of that source, destination, port and protocol.
    pub flows: usize,
}

/// What `diff` prints as JSON.
#[derive(Debug, Serialize)]
struct Report {
    opened: Vec<ProbeResult>,
    closed: Vec<ProbeResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broken: Option<Vec<Broken>>,
}

/// Runs `diff`.
pub fn run(args: &DiffArgs) -> anyhow::Result<()> {
    if args.old.is_empty() && args.new.is_empty() {
        bail!("nothing to compare: give the old side's manifests with --old, the new side's with --new (or both)");
    }
    let load = |only: &[PathBuf], side: &str| -> anyhow::Result<ClusterState> {
        let paths: Vec<PathBuf> = args.common.iter().chain(only).cloned().collect();
        if paths.is_empty() {
            bail!("the {side} side has no manifests: give -f for what both sides share");
        }
        load_all(&paths).with_context(|| format!("reading the {side} side"))
    };
    let live = args.kubeconfig.is_some() || args.context.is_some();
    let (old, new) = if live {
        if args.new.is_empty() {
            bail!("give the manifests to apply over the cluster with --new");
        }
        let cluster = super::read_cluster(args.kubeconfig.as_deref(), args.context.as_deref())?;
        let changes = load_all(&args.new).context("reading the new side")?;
        let mut new = cluster.clone();
        new.merge(changes);
        (cluster, new)
    } else {
        (load(&args.old, "old")?, load(&args.new, "new")?)
    };
    // Addresses as simulate gives them: the cluster's, or a lab's for manifests.
    let (old, old_pods) = simulate::addressed(old, live)?;
    let (new, new_pods) = simulate::addressed(new, live)?;
    let family = args.probing.family.family();
    let old_results = judged(&old, &old_pods, args, family);
    let new_results = judged(&new, &new_pods, args, family);
    let (opened, closed, unmatched) = changes(&old_results, &new_results);
    eprintln!(
        "diff: {} probes on each side judged by the reference evaluator: {} opened, {} closed{}",
        new_results.len(),
        opened.len(),
        closed.len(),
        if unmatched == 0 {
            String::new()
        } else {
            format!("; {unmatched} probes of pods or ports only one side has are not compared")
        }
    );
    let broken = match &args.flows {
        Some(path) => Some(broken(&new, &read_flows(path)?)),
        None => None,
    };
    let report = Report {
        opened,
        closed,
        broken,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&report)?),
        Output::Table => print!("{}", to_table(&report)),
    }
    Ok(())
}

/// The probes of `state` (see `simulate`), judged and named as `simulate --output
/// json` names them.
fn judged(
    state: &ClusterState,
    pods: &[ObjectRef],
    args: &DiffArgs,
    family: IpFamily,
) -> Vec<ProbeResult> {
    let plan: Vec<Probe> = probes::plan(state, pods, &args.probing.probes, &args.probing.peers);
    simulate::results(&simulate::judged(state, &plan, family), End::to_string)
}

type ProbeKey = (String, String, u16, Protocol);

fn key(result: &ProbeResult) -> ProbeKey {
    (
        result.from.clone(),
        result.to.clone(),
        result.port,
        result.protocol,
    )
}

/// The probes `new` allows that `old` drops (opened) and the other way round
/// (closed), as `new` judges them, and how many probes only one side has. A
/// would-drop passes: audit mode changes nothing that passes.
pub fn changes(
    old: &[ProbeResult],
    new: &[ProbeResult],
) -> (Vec<ProbeResult>, Vec<ProbeResult>, usize) {
    let before: BTreeMap<ProbeKey, bool> = old.iter().map(|r| (key(r), r.allowed)).collect();
    let after: BTreeSet<ProbeKey> = new.iter().map(key).collect();
    let (mut opened, mut closed) = (Vec::new(), Vec::new());
    for result in new {
        match before.get(&key(result)) {
            Some(false) if result.allowed => opened.push(result.clone()),
            Some(true) if !result.allowed => closed.push(result.clone()),
            _ => {}
        }
    }
    let unmatched = before.keys().filter(|k| !after.contains(*k)).count()
        + after.iter().filter(|k| !before.contains_key(*k)).count();
    (opened, closed, unmatched)
}

/// A recorded flow as `diff` judges it: source, destination (each a pod or an
/// address), port, protocol.
type Observed = (End, End, u16, Protocol);

/// The recording at `path`, each end the pod it names (at the address it had)
/// or the address.
fn read_flows(path: &Path) -> anyhow::Result<Vec<Observed>> {
    let end = |end: &RecordedEnd| match &end.pod {
        Some(pod) => End::PodAt(pod.clone(), end.address),
        None => End::Address(end.address),
    };
    Ok(recording::read(path)?
        .iter()
        .map(|flow| {
            (
                end(&flow.source),
                end(&flow.destination),
                flow.port,
                flow.protocol,
            )
        })
        .collect())
}

/// The `observed` flows `state` drops, counted per source, destination, port and
/// protocol. A pod end is judged at its address in `state` of the recorded
/// address's family (the recording's addresses are another lab's or node's); a
/// pod `state` does not have is judged as the address it had.
pub fn broken(state: &ClusterState, observed: &[Observed]) -> Vec<Broken> {
    // A host-network pod is judged as the address it had: no pod selector
    // matches it.
    let at = |end: &End| match end {
        End::PodAt(key, ip) if state.pods.get(key).is_some_and(|pod| !pod.host_network) => {
            let family = if ip.is_ipv4() {
                IpFamily::Ipv4
            } else {
                IpFamily::Ipv6
            };
            probes::at_address(state, &End::Pod(key.clone()), family)
        }
        End::PodAt(_, ip) => End::Address(*ip),
        other => other.clone(),
    };
    let name = |end: &End| match end {
        End::Pod(key) | End::PodAt(key, _) => key.to_string(),
        End::Address(ip) => ip.to_string(),
    };
    let mut counted: BTreeMap<(String, String, u16, Protocol), usize> = BTreeMap::new();
    for (from, to, port, protocol) in observed {
        let query = Query {
            src: at(from),
            dst: at(to),
            protocol: *protocol,
            port: *port,
        };
        if !evaluate(state, &query).allowed {
            *counted
                .entry((name(from), name(to), *port, *protocol))
                .or_default() += 1;
        }
    }
    counted
        .into_iter()
        .map(|((from, to, port, protocol), flows)| Broken {
            from,
            to,
            port,
            protocol,
            flows,
        })
        .collect()
}

/// The report for people: each list titled with its count, one line a probe.
fn to_table(report: &Report) -> String {
    let mut out = String::new();
    let line = |from: &str, to: &str, port: u16, protocol: Protocol| {
        format!("  {from} -> {to} {port}/{protocol}")
    };
    for (title, list) in [("opened", &report.opened), ("closed", &report.closed)] {
        out.push_str(&format!("{title}: {}\n", list.len()));
        for r in list.iter() {
            let audit = if r.would_drop {
                " (a would-drop: audit mode lets it pass)"
            } else {
                ""
            };
            out.push_str(&line(&r.from, &r.to, r.port, r.protocol));
            out.push_str(audit);
            out.push('\n');
        }
    }
    if let Some(broken) = &report.broken {
        out.push_str(&format!(
            "observed flows the change drops: {}\n",
            broken.len()
        ));
        for b in broken {
            out.push_str(&line(&b.from, &b.to, b.port, b.protocol));
            out.push_str(&format!(" ({} recorded)\n", b.flows));
        }
    }
    out
}

#[cfg(test)]
mod tests;
