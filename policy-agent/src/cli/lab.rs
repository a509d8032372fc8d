//! `policy-agent lab run|tour|conformance|down`; `lab run --show-drops` and
//! `--audit` read the datapath's verdict events while probing.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};

use super::{parse_port_protocol, FamilyArg, Output};
use crate::{
    lab::{
        addresses::MAX_NODES,
        drops, flowlog, netns,
        probe::{Family, ProbeRoute},
        report,
        topology::{Layout, Overlay, TopologyKind},
        Lab, LabOptions,
    },
    model::{ClusterState, PolicyMode, Protocol},
    telemetry::flows::{bpffs::Release, FlowPaths},
};

/// What to probe and how to print it; shared by `lab run` and `lab tour`.
#[derive(Args)]
pub struct ProbeArgs {
    /// Probe PORT/PROTO on every pod (repeatable); default: each destination's
    /// declared containerPorts.
    #[arg(long = "probe", value_parser = parse_port_protocol)]
    probes: Vec<(u16, Protocol)>,
    /// Table or JSON (`lab tour`: one JSON object per step).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// How long a probe waits for an answer before it counts as dropped.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Which address of each destination pod probes go to (every lab pod has both).
    #[arg(long, value_enum, default_value_t = FamilyArg::Ipv4)]
    family: FamilyArg,
    /// Probe each destination through a ClusterIP Service in its namespace that
    /// leads to it alone (IPv4); fails listing the destinations without one.
    #[arg(long)]
    via_service: bool,
}

/// `--topology` of `lab run` and `lab tour`: how pods are wired to the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(super) enum TopologyArg {
    /// A /32 and /128 route per pod on its own veth, as Calico and kindnet do.
    #[default]
    Routed,
    /// Every pod veth a port of one bridge holding the pod subnet, as the bridge
    /// CNI and flannel do (pods reach each other over ARP and neighbour discovery).
    Bridge,
}

impl TopologyArg {
    /// The lab's kind.
    pub(super) fn kind(self) -> TopologyKind {
        match self {
            TopologyArg::Routed => TopologyKind::Routed,
            TopologyArg::Bridge => TopologyKind::Bridge,
        }
    }
}

/// `--overlay` of the lab commands: how pod traffic crosses between nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(super) enum OverlayArg {
    /// The underlay routes every pod's address to its node (Calico's BGP mode,
    /// kindnet).
    #[default]
    None,
    /// Pod traffic between nodes travels in VXLAN between the nodes' addresses
    /// (flannel, Calico's VXLAN mode).
    Vxlan,
}

/// The shape of a lab: `lab run`, `lab tour` and `lab conformance` share it.
#[derive(Args, Clone, Copy, Debug)]
pub struct LayoutArgs {
    /// How pods are wired to their node: routed (default) or ports of a bridge.
    #[arg(long, value_enum, default_value_t = TopologyArg::Routed)]
    topology: TopologyArg,
    /// How many nodes: each a namespace with its own podwall datapath, pod range
    /// and Service rules, joined by a routed fabric. Pods go to the node their
    /// spec.nodeName names (node-1, node-2, ...), else in turn. At most 16.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=MAX_NODES as i64))]
    nodes: u16,
    /// How pod traffic crosses between nodes (needs --nodes 2 or more).
    #[arg(long, value_enum, default_value_t = OverlayArg::None)]
    overlay: OverlayArg,
}

impl LayoutArgs {
    /// The lab's layout.
    pub(super) fn layout(&self) -> Layout {
        Layout {
            kind: self.topology.kind(),
            nodes: usize::from(self.nodes),
            overlay: match self.overlay {
                OverlayArg::None => Overlay::None,
                OverlayArg::Vxlan => Overlay::Vxlan,
            },
        }
    }
}

impl ProbeArgs {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// How probes reach their destinations.
    fn route(&self) -> anyhow::Result<ProbeRoute> {
        Ok(match (self.via_service, self.family) {
            (false, family) => ProbeRoute::Pod(family.family()),
            (true, FamilyArg::Ipv4) => ProbeRoute::Service,
            (true, FamilyArg::Ipv6) => {
                bail!("--via-service probes IPv4 only (the lab's Services are IPv4); drop --family ipv6")
            }
        })
    }
}

/// Lab subcommands.
#[derive(Subcommand)]
pub enum LabCommand {
    /// Build the lab from manifests, enforce their policies, probe every pod pair.
    Run {
        #[command(flatten)]
        manifests: super::Manifests,
        #[command(flatten)]
        probing: ProbeArgs,
        #[command(flatten)]
        layout: LayoutArgs,
        /// After the matrix, list the drops (and would-drops) the datapath reported
        /// while probing, one per flow, each naming the policies isolating the pod
        /// (JSON: a "drops" list). Reads the lab's events, so a `policy-agent flows`
        /// following this lab misses them.
        #[arg(long)]
        show_drops: bool,
        /// Put every policy in audit mode (per-agent audit, as `simulate --audit`
        /// and `explain --audit` do, and as `run --audit` does on a node):
        /// nothing is dropped, and what enforcing would drop is marked ⚠
        /// (would-drop).
        #[arg(long)]
        audit: bool,
        /// After the matrix, keep the lab up (enforcing, pods serving) until
        /// Ctrl-C, for `policy-agent flows` and `explain --node` to look at.
        #[arg(long)]
        hold: bool,
        #[command(flatten)]
        datapath: super::datapath::DatapathArgs,
    },
    /// Build the lab from BASE, then apply each STEP in turn, printing the matrix
    /// and what changed after every step.
    Tour {
        /// The starting manifests (file or directory).
        #[arg(short = 'f', long = "filename")]
        base: PathBuf,
        /// Manifests to apply, in order (each a file or directory; repeatable).
        #[arg(long = "step")]
        steps: Vec<PathBuf>,
        #[command(flatten)]
        probing: ProbeArgs,
        #[command(flatten)]
        layout: LayoutArgs,
        /// After each step's matrix, list the drops the datapath reported while
        /// probing, each naming the policies isolating the pod (as `lab run
        /// --show-drops`; JSON: a "drops" list per step).
        #[arg(long)]
        show_drops: bool,
    },
    /// Run conformance case files (the upstream e2e suite as data) in one lab.
    Conformance(super::conformance::ConformanceArgs),
    /// Remove what a crashed lab run left behind (namespaces, pinned maps and
    /// flow names of dead processes), and unmount the bpffs a lab mounted at
    /// /sys/fs/bpf once no lab runs and nothing is pinned on it.
    Down {
        /// Also remove what labs that are still running made.
        #[arg(long)]
        all: bool,
    },
}

/// Runs a lab subcommand; `kernel_debug` (`-vv`) loads `lab run`'s datapaths with
/// the kernel debug channel on.
pub fn run(command: LabCommand, kernel_debug: bool) -> anyhow::Result<()> {
    match command {
        LabCommand::Run {
            manifests,
            probing,
            layout,
            show_drops,
            audit,
            hold: keep,
            datapath,
        } => {
            let lab = run_lab(
                &manifests,
                &probing,
                layout.layout(),
                show_drops,
                audit,
                &datapath,
                kernel_debug,
            )?;
            if keep {
                hold(&lab)?;
            }
            Ok(())
        }
        LabCommand::Tour {
            base,
            steps,
            probing,
            layout,
            show_drops,
        } => {
            let route = probing.route()?;
            install_interrupt_cleanup()?;
            super::lab_tour::run(
                &base,
                &steps,
                &super::lab_tour::TourOptions {
                    probes: &probing.probes,
                    route,
                    output: probing.output,
                    timeout: probing.timeout(),
                    show_drops,
                    layout: layout.layout(),
                },
            )
        }
        LabCommand::Conformance(args) => super::conformance::run(&args),
        LabCommand::Down { all } => lab_down(all),
    }
}

/// `lab down`: namespaces and flow logs of dead labs (or all), then the bpffs a
/// lab mounted, once no lab runs.
fn lab_down(all: bool) -> anyhow::Result<()> {
    let running = flowlog::running_labs();
    let removed = netns::sweep(all)?;
    let published = flowlog::sweep(all)?;
    let bpffs = flowlog::release_bpffs(&running)?;
    let mount_point = FlowPaths::system().bpffs;
    let mount_point = mount_point.display();
    if removed.is_empty() && published.is_empty() && bpffs == Release::NotOurs {
        println!("nothing to remove");
    }
    for name in removed {
        println!("removed network namespace {name}");
    }
    for name in published {
        println!("removed the flow log pin and names of {name}");
    }
    match bpffs {
        Release::NotOurs => {}
        Release::Unmounted => println!("unmounted bpffs at {mount_point} (a lab had mounted it)"),
        Release::AlreadyUnmounted => println!(
            "bpffs at {mount_point}, which a lab had mounted, is already unmounted; removed the record"
        ),
        Release::KeptForLabs(labs) => println!(
            "left bpffs mounted at {mount_point} (a lab mounted it): labs still run ({})",
            labs.join(", ")
        ),
        Release::KeptForPins(pins) => println!(
            "left bpffs mounted at {mount_point} (a lab mounted it): it still holds pins ({})",
            pins.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    Ok(())
}

fn run_lab(
    manifests: &super::Manifests,
    probing: &ProbeArgs,
    layout: Layout,
    show_drops: bool,
    audit: bool,
    datapath: &super::datapath::DatapathArgs,
    kernel_debug: bool,
) -> anyhow::Result<Lab> {
    let ProbeArgs { probes, output, .. } = probing;
    let route = probing.route()?;
    let mut state = manifests.load()?;
    if audit {
        state = state.with_every_policy_in_audit();
    }
    let read_events = show_drops || audits(&state);
    install_interrupt_cleanup()?;
    eprintln!(
        "lab: {} pods, {}{} from {}",
        state.pods.len(),
        policy_count(&state),
        if audit { " (all in audit mode)" } else { "" },
        manifests.describe()
    );
    let options = LabOptions {
        config: datapath.config(flowlog::lab_config()),
        kernel_debug,
        ..LabOptions::of_layout(layout)
    };
    let mut lab = Lab::up_with(state, probes, &options)?;
    let specs = lab.probe_specs(probes);
    lab.targets(&specs, route)?;
    eprintln!(
        "lab: {}; probing {} connections ({})",
        attached(&lab),
        specs.len(),
        describe(route)
    );
    if !read_events {
        let results = lab.probe_via(&specs, route, probing.timeout())?;
        print_results(&lab, &results, *output);
        return Ok(lab);
    }
    let reported = drops::probe_reporting(&mut lab, &specs, route, probing.timeout())?;
    if !show_drops {
        if reported.lost.any() {
            eprintln!("{}", drops::lost_note(reported.lost));
        }
        print_results(&lab, &reported.results, *output);
        return Ok(lab);
    }
    let seen = drops::summarize(&reported.lines);
    match output {
        Output::Table => {
            print!("{}", report::to_matrix(&lab.pods(), &reported.results));
            println!();
            print!("{}", drops::to_table(&seen, reported.lost));
        }
        Output::Json => println!(
            "{}",
            drops::to_json(&reported.results, &seen, reported.lost)
        ),
    }
    Ok(lab)
}

/// Keeps `lab` up, enforcing and serving, until Ctrl-C or SIGTERM (whose
/// handler, `install_interrupt_cleanup`, removes it): for `flows` and
/// `explain --node` to look at.
fn hold(lab: &Lab) -> anyhow::Result<()> {
    use std::io::Write as _;
    std::io::stdout().flush().context("writing to stdout")?;
    eprintln!(
        "lab: holding datapath {} until Ctrl-C (`policy-agent flows --instance NAME` and \
         `policy-agent explain --node --instance NAME` read it)",
        lab.instances().join(", ")
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Whether a policy of `state` is in audit mode: then probes read the datapath's
/// events, which mark would-drops.
pub(super) fn audits(state: &ClusterState) -> bool {
    state.policies.values().any(|p| p.mode == PolicyMode::Audit)
        || state
            .cluster_policies
            .values()
            .any(|p| p.mode == PolicyMode::Audit)
}

/// `3 policies` or `3 policies, 2 cluster policies`: what a state's summary
/// line counts.
pub(super) fn policy_count(state: &ClusterState) -> String {
    match state.cluster_policies.len() {
        0 => format!("{} policies", state.policies.len()),
        cluster => format!(
            "{} policies, {cluster} cluster policies",
            state.policies.len()
        ),
    }
}

/// The matrix or the `{"probes":[...]}` JSON.
fn print_results(lab: &Lab, results: &[report::ProbeResult], output: Output) {
    match output {
        Output::Table => print!("{}", report::to_matrix(&lab.pods(), results)),
        Output::Json => println!("{}", report::to_json(results)),
    }
}

/// What was attached, for the progress line: "datapath attached" on one node,
/// else the nodes, where each pod runs and the instance name each node's events
/// are published under for `policy-agent flows --instance`.
pub(super) fn attached(lab: &Lab) -> String {
    let nodes = lab.nodes();
    if nodes.len() < 2 {
        return "datapath attached".to_string();
    }
    let placement: Vec<String> = nodes
        .iter()
        .zip(lab.instances())
        .map(|(node, instance)| {
            let pods: Vec<String> = lab
                .pods()
                .iter()
                .filter(|pod| lab.node_of(pod).is_ok_and(|n| n.name == node.name))
                .map(ToString::to_string)
                .collect();
            format!("{} ({}; events: {instance})", node.name, pods.join(", "))
        })
        .collect();
    format!(
        "a datapath attached on each of {} nodes: {}",
        nodes.len(),
        placement.join("; ")
    )
}

/// How probes travel, for the progress line.
fn describe(route: ProbeRoute) -> &'static str {
    match route {
        ProbeRoute::Pod(Family::Ipv4) => "to pod IPv4 addresses",
        ProbeRoute::Pod(Family::Ipv6) => "to pod IPv6 addresses",
        ProbeRoute::Service => "through Services",
    }
}

/// On Ctrl-C (or SIGTERM), delete this process's lab namespaces and published
/// flow logs, and exit 130.
pub(super) fn install_interrupt_cleanup() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        let _ = flowlog::delete_own();
        let _ = netns::delete_own();
        eprintln!("interrupted: lab removed");
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}
