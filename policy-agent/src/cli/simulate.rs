//! `policy-agent simulate`: the matrix and JSON of `lab run`, judged by the
//! reference evaluator instead of real packets: no kernel, no root, no namespaces.
//! A probe that passes only because of audit mode is marked as a would-drop (⚠ in
//! the matrix, `"would_drop":true` in JSON).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::bail;
use clap::Args;

use super::{parse_port_protocol, FamilyArg, Input, Output};
use crate::{
    lab::{addresses, report, report::ProbeResult},
    model::{ClusterState, IpFamily, ObjectRef, Protocol},
    policy::{
        evaluator::{evaluate, End, Verdict},
        probes::{self, Probe},
    },
};

/// Arguments of `simulate`.
#[derive(Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    manifests: Input,
    #[command(flatten)]
    probing: Probing,
    /// Table or JSON (the shape `lab run --output json` prints).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Put every policy in audit mode (per-agent audit, as `lab run --audit` and
    /// `explain --audit` do, and as `run --audit` does on a node): nothing is
    /// dropped, and what enforcing would drop shows as would-drop.
    #[arg(long)]
    audit: bool,
}

/// Which probes `simulate` (and `diff`) judge.
#[derive(Args)]
pub(super) struct Probing {
    /// Probe PORT/PROTO on every pod (repeatable); default: each destination's
    /// declared TCP and UDP containerPorts, as `lab run` probes them.
    #[arg(long = "probe", value_name = "PORT/PROTO", value_parser = parse_port_protocol)]
    pub probes: Vec<(u16, Protocol)>,
    /// An address outside the cluster, probed from every pod and to every pod
    /// (repeatable); keyed by the address in `from`/`to`. Probes to it use the
    /// --probe ports or, without --probe, every TCP and UDP port any pod declares.
    /// Peers are not probed from each other (no policy sits between them).
    #[arg(long = "peer", value_name = "IP")]
    pub peers: Vec<IpAddr>,
    /// Which address of each pod the probes use, as `lab run --family` (ipBlocks
    /// see that address).
    #[arg(long, value_enum, default_value_t = FamilyArg::Ipv4)]
    pub family: FamilyArg,
}

/// Runs `simulate`.
pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let mut state = args.manifests.load()?;
    if args.audit {
        state = state.with_every_policy_in_audit();
    }
    let (state, pods) = addressed(state, args.manifests.live())?;
    for peer in &args.probing.peers {
        if let Some(pod) = End::Address(*peer).pod(&state) {
            bail!(
                "--peer {peer} is the address of pod {}, which the matrix already has; \
                 a peer is an address outside the cluster",
                pod.key
            );
        }
    }
    let plan = probes::plan(&state, &pods, &args.probing.probes, &args.probing.peers);
    eprintln!(
        "simulate: {} pods, {} peer(s), {} from {}; {} probes judged by the \
         reference evaluator",
        pods.len(),
        args.probing.peers.iter().collect::<BTreeSet<_>>().len(),
        super::lab::policy_count(&state),
        args.manifests.describe(),
        plan.len()
    );
    let verdicts = judged(&state, &plan, args.probing.family.family());
    match args.output {
        Output::Json => {
            let results = results(&verdicts, End::to_string);
            println!("{}", report::to_json(&results));
        }
        Output::Table => {
            // The matrix labels rows and columns `namespace/name`; a peer gets the
            // pseudo-namespace `peer` there (JSON keys it by the bare address).
            let row = |endpoint: &End| match endpoint {
                End::Pod(key) | End::PodAt(key, _) => key.clone(),
                End::Address(ip) => ObjectRef::new("peer", ip.to_string()),
            };
            let peers: BTreeSet<IpAddr> = args.probing.peers.iter().copied().collect();
            let rows: Vec<ObjectRef> = pods
                .iter()
                .map(|key| End::Pod(key.clone()))
                .chain(peers.into_iter().map(End::Address))
                .map(|endpoint| row(&endpoint))
                .collect();
            let results = results(&verdicts, |endpoint| row(endpoint).to_string());
            print!("{}", report::to_matrix(&rows, &results));
        }
    }
    Ok(())
}

/// Each probe of `plan` judged by the evaluator in `state`. A lab probe leaves
/// from and arrives at one address of each pod: the `family` one is judged, so
/// ipBlocks see what the kernel sees.
pub(super) fn judged<'p>(
    state: &ClusterState,
    plan: &'p [Probe],
    family: IpFamily,
) -> Vec<(&'p Probe, Verdict)> {
    plan.iter()
        .map(|probe| {
            let mut query = probe.query();
            query.src = probes::at_address(state, &query.src, family);
            query.dst = probes::at_address(state, &query.dst, family);
            (probe, evaluate(state, &query))
        })
        .collect()
}

/// Probe results in the lab's shape, each end named by `name`.
pub(super) fn results(
    verdicts: &[(&Probe, Verdict)],
    name: impl Fn(&End) -> String,
) -> Vec<ProbeResult> {
    verdicts
        .iter()
        .map(|(probe, verdict)| ProbeResult {
            from: name(&probe.from),
            to: name(&probe.to),
            port: probe.port,
            protocol: probe.protocol,
            allowed: verdict.allowed,
            would_drop: verdict.would_drop,
        })
        .collect()
}

/// `state` and its pods to probe: from a live cluster (`live`) with the
/// addresses it has, the pod-network pods that are not finished; from manifests
/// with the lab's (`with_lab_addresses`).
pub(super) fn addressed(
    state: ClusterState,
    live: bool,
) -> anyhow::Result<(ClusterState, Vec<ObjectRef>)> {
    if !live {
        return with_lab_addresses(state);
    }
    let pods = state
        .pods
        .values()
        .filter(|pod| !pod.host_network && !pod.finished)
        .map(|pod| pod.key.clone())
        .collect();
    Ok((state, pods))
}

/// `state` with the addresses a one-node `lab run` gives its pods, and those
/// pods, sorted (hostNetwork pods are not among them: the lab leaves them out).
/// The one place `simulate` and `explain` take the lab's addressing from. A lab
/// of several nodes hands each node's pods addresses from that node's range, so
/// an ipBlock over pod addresses can judge its pods otherwise.
pub(super) fn with_lab_addresses(
    state: ClusterState,
) -> anyhow::Result<(ClusterState, Vec<ObjectRef>)> {
    let addresses: BTreeMap<ObjectRef, Vec<IpAddr>> = addresses::assign_pods(&state, 1)?
        .into_iter()
        .map(|(key, placed)| (key, placed.addresses.both().to_vec()))
        .collect();
    let pods = addresses.keys().cloned().collect();
    Ok((probes::with_addresses(state, &addresses), pods))
}
