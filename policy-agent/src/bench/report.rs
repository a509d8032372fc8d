//! The benchmark's figures and how they are printed: medians, ratios to the floor
//! and the project's targets, as Markdown tables that paste into docs/benchmarks.md.

use std::fmt;

use super::figures::{Figure, Figures};

/// A datapath path the benchmark times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    /// `bench_floor`: an empty classifier.
    Floor,
    /// A SYN to an endpoint no policy isolates (passes, is tracked).
    Unisolated,
    /// An ACK of a flow the endpoint's policy allowed before.
    ConntrackHit,
    /// A SYN from a pod peer that a rule allows (policy lookup, tracked).
    NewFlowPodPeer,
    /// A SYN from an address in an ipBlock prefix that a rule allows.
    NewFlowCidrPeer,
    /// A SYN from a pod peer to a port no rule allows (dropped).
    Dropped,
    /// `node_exit` (on the node's uplink) and a packet no pod deferred: what every
    /// packet leaving the node pays.
    ExitNotDeferred,
    /// `node_entry` (on the node's uplink) and a packet for a local pod that is no
    /// reply of its egress: what every packet entering the node for a pod pays.
    EntryToPod,
}

impl Path {
    /// Every path, in report order.
    pub const ALL: [Path; 8] = [
        Path::Floor,
        Path::Unisolated,
        Path::ConntrackHit,
        Path::NewFlowPodPeer,
        Path::NewFlowCidrPeer,
        Path::Dropped,
        Path::ExitNotDeferred,
        Path::EntryToPod,
    ];

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Path::Floor => "empty classifier (floor)",
            Path::Unisolated => "unisolated endpoint (SYN)",
            Path::ConntrackHit => "conntrack hit (ACK)",
            Path::NewFlowPodPeer => "new flow allowed, pod peer (SYN)",
            Path::NewFlowCidrPeer => "new flow allowed, peer in a CIDR table (SYN)",
            Path::Dropped => "dropped (SYN)",
            Path::ExitNotDeferred => "node exit, not deferred (SYN)",
            Path::EntryToPod => "node entry, to a pod, no reply (SYN)",
        }
    }

    /// The project's target for this path, as a multiple of the floor.
    pub fn target(self) -> Option<f64> {
        match self {
            Path::ConntrackHit => Some(3.0),
            Path::NewFlowPodPeer => Some(6.0),
            Path::NewFlowCidrPeer => Some(8.0),
            Path::Floor
            | Path::Unisolated
            | Path::Dropped
            | Path::ExitNotDeferred
            | Path::EntryToPod => None,
        }
    }
}

/// An IP family; reports print it as `IPv4`/`IPv6`.
pub use crate::model::IpFamily as Family;

/// The runs of one path, family and table.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// What was timed.
    pub path: Path,
    /// The packets' family.
    pub family: Family,
    /// Pod peers per family in the peer tries.
    pub pod_peers: u32,
    /// ipBlock prefixes per family in the peer tries.
    pub cidr_prefixes: u32,
    /// Nanoseconds per packet of each run (the kernel's average over its repeats).
    pub samples: Vec<u64>,
}

impl Measurement {
    /// The median run in ns per packet (0 without runs).
    pub fn median(&self) -> f64 {
        median(&self.samples)
    }

    fn spread(&self) -> String {
        let min = self.samples.iter().min().copied().unwrap_or(0);
        let max = self.samples.iter().max().copied().unwrap_or(0);
        format!("{} ({min}-{max})", trim(self.median()))
    }
}

/// The median of `samples` (the mean of the middle two for an even count).
pub fn median(samples: &[u64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2] as f64,
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0,
    }
}

/// A number without a trailing `.0`.
fn trim(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Everything one benchmark run measured, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Runs per figure.
    pub runs: usize,
    /// Repeats per run (the kernel's `repeat`).
    pub repeat: u32,
    /// The CPU the runs were pinned to, if any.
    pub cpu: Option<usize>,
    /// The running kernel (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// Share of CPU time the hypervisor took (steal, all CPUs) while the runs ran,
    /// in percent; `None` where `/proc/stat` does not say.
    pub steal_percent: Option<f64>,
    /// Pod peer counts of the flatness series, smallest first.
    pub flat_series: Vec<u32>,
    /// Every measurement.
    pub measurements: Vec<Measurement>,
}

impl Report {
    /// The floor in ns per packet: the median of every `bench_floor` run (it reads
    /// no packet, so it stands for both families).
    pub fn floor(&self) -> f64 {
        self.main(Path::Floor, Family::Ipv4)
            .map_or(0.0, Measurement::median)
    }

    /// The measurement of `path` for `family` in the main table (the smallest pod
    /// table; the CIDR path in its own table). The floor serves both families.
    pub fn main(&self, path: Path, family: Family) -> Option<&Measurement> {
        let smallest = self.flat_series.first().copied().unwrap_or(0);
        self.measurements.iter().find(|m| {
            m.path == path && (m.family == family || path == Path::Floor) && m.pod_peers == smallest
        })
    }

    /// The new-flow-with-pod-peer measurement at `pod_peers` without ipBlocks.
    pub fn flat(&self, pod_peers: u32, family: Family) -> Option<&Measurement> {
        self.measurements.iter().find(|m| {
            m.path == Path::NewFlowPodPeer
                && m.family == family
                && m.pod_peers == pod_peers
                && m.cidr_prefixes == 0
        })
    }

    /// Largest over smallest pod-peer table, for `family` (`None` without both).
    pub fn flatness(&self, family: Family) -> Option<f64> {
        let first = self.flat(*self.flat_series.first()?, family)?.median();
        let last = self.flat(*self.flat_series.last()?, family)?.median();
        (first > 0.0).then(|| last / first)
    }

    fn ratio(&self, m: Option<&Measurement>) -> Option<f64> {
        let floor = self.floor();
        m.filter(|_| floor > 0.0).map(|m| m.median() / floor)
    }

    fn write_main(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| path | IPv4 ns/packet | IPv4 / floor | IPv6 ns/packet | IPv6 / floor | target | met |"
        )?;
        writeln!(f, "| --- | --- | --- | --- | --- | --- | --- |")?;
        for path in Path::ALL {
            let (v4, v6) = (self.main(path, Family::Ipv4), self.main(path, Family::Ipv6));
            let (r4, r6) = (self.ratio(v4), self.ratio(v6));
            let cell = |m: Option<&Measurement>| m.map_or("-".to_string(), Measurement::spread);
            let times = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.1}x"));
            let (target, met) = match path.target() {
                Some(t) => (format!("<= {t}x"), met(&[r4, r6], t)),
                None => ("-".to_string(), "-"),
            };
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {target} | {met} |",
                path.label(),
                cell(v4),
                times(r4),
                cell(v6),
                times(r6)
            )?;
        }
        Ok(())
    }

    fn write_flat(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self.flat_series.first().copied().unwrap_or(0);
        writeln!(
            f,
            "| pod peers (per family) | IPv4 ns/packet | IPv4 / at {base} | IPv6 ns/packet | IPv6 / at {base} |"
        )?;
        writeln!(f, "| --- | --- | --- | --- | --- |")?;
        for &n in &self.flat_series {
            let (v4, v6) = (self.flat(n, Family::Ipv4), self.flat(n, Family::Ipv6));
            let cell = |m: Option<&Measurement>| m.map_or("-".to_string(), Measurement::spread);
            let relative = |family| {
                let first = self.flat(base, family).map(Measurement::median);
                let this = self.flat(n, family).map(Measurement::median);
                match (first, this) {
                    (Some(first), Some(this)) if first > 0.0 => format!("{:.2}x", this / first),
                    _ => "-".to_string(),
                }
            };
            writeln!(
                f,
                "| {n} | {} | {} | {} | {} |",
                cell(v4),
                relative(Family::Ipv4),
                cell(v6),
                relative(Family::Ipv6)
            )?;
        }
        let last = self.flat_series.last().copied().unwrap_or(0);
        let (r4, r6) = (self.flatness(Family::Ipv4), self.flatness(Family::Ipv6));
        writeln!(
            f,
            "\nflat from {base} to {last} pod peers (target <= {FLATNESS_TARGET}x): {}",
            met(&[r4, r6], FLATNESS_TARGET)
        )
    }

    /// Every figure of the run, for `--output json`: each path's ns/packet and
    /// ratio to the floor per family (with the path's target), and the new-flow
    /// cost across the pod-peer series per family.
    pub fn figures(&self) -> Figures {
        let mut figures = Vec::new();
        for path in Path::ALL {
            for family in [Family::Ipv4, Family::Ipv6] {
                if path == Path::Floor && family == Family::Ipv6 {
                    continue; // one floor serves both families
                }
                let Some(m) = self.main(path, family) else {
                    continue;
                };
                let name = format!("{}, {family}", path.label());
                figures.push(Figure::plain(format!("{name} ns/packet"), m.median(), "ns"));
                if path == Path::Floor {
                    continue;
                }
                let Some(ratio) = self.ratio(Some(m)) else {
                    continue;
                };
                let name = format!("{name} / floor");
                figures.push(match path.target() {
                    Some(limit) => Figure::at_most(name, ratio, "ratio", limit),
                    None => Figure::plain(name, ratio, "ratio"),
                });
            }
        }
        let (base, last) = (
            self.flat_series.first().copied().unwrap_or(0),
            self.flat_series.last().copied().unwrap_or(0),
        );
        for family in [Family::Ipv4, Family::Ipv6] {
            if let Some(flatness) = self.flatness(family) {
                figures.push(Figure::at_most(
                    format!("new flow, pod peer, {family}: {last} over {base} pod peers"),
                    flatness,
                    "ratio",
                    FLATNESS_TARGET,
                ));
            }
        }
        Figures {
            bench: "datapath",
            figures,
        }
    }
}

/// How much dearer a new flow to a pod peer may get from the smallest pod table
/// to the largest.
const FLATNESS_TARGET: f64 = 1.1;

/// "yes" when every ratio is known and within `target`.
fn met(ratios: &[Option<f64>], target: f64) -> &'static str {
    if ratios.iter().all(|r| r.is_some_and(|r| r <= target)) {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = self.cpu.map_or("not pinned".to_string(), |cpu| {
            format!("pinned to CPU {cpu}")
        });
        writeln!(
            f,
            "podwall datapath benchmark: kernel {}, {cpu}, {} runs x {} repeats per figure",
            self.kernel, self.runs, self.repeat
        )?;
        if let Some(steal) = self.steal_percent {
            writeln!(
                f,
                "CPU time taken by the hypervisor (steal) during the runs: {steal:.1}%"
            )?;
        }
        writeln!(
            f,
            "ns/packet: median run (fastest-slowest run); a run's figure is the kernel's \
             average over its repeats, in whole ns\n"
        )?;
        self.write_main(f)?;
        writeln!(f)?;
        self.write_flat(f)?;
        writeln!(f)?;
        f.write_str(METHOD)
    }
}

/// How the figures were made, printed under them.
const METHOD: &str = "\
Method: each figure is BPF_PROG_TEST_RUN of the real pod_ingress classifier (the pod's
ingress hook; the node rows: node_exit and node_entry, the programs on the node's
uplink) on one hand-made frame with the kernel's `repeat`: the kernel runs the
program that many times on one skb and returns the average time per run (whole ns).
A figure is the median of its runs. Each table is loaded in its own copy of the object
(its own maps), and the runs of every case of every table take turns, so a slow spell
of the machine lands on all figures alike.
Maps change as for real packets, so each path is chosen by its packet. A TCP SYN
without ACK is always decided afresh (conntrack is not consulted for it), so a
repeated SYN takes the new-flow path every time, and rewrites its own conntrack entry
as a new flow's insert would. The conntrack hit is an ACK of a flow one allowed SYN
tracked before the runs. After every run the verdict counters are checked: the path's
counter grew by exactly `repeat` and no other did, else the benchmark stops.
Pod peers are host prefixes in PEER_HOSTS_V4/PEER_HOSTS_V6 (as the compiler writes pods) in 64
classes; ipBlock prefixes are 12-30 (IPv4) or 16-124 (IPv6) bits long, outside the pod
ranges; POLICY holds the same 128 TCP/80 rules (one per class) in every table.
Ratios are to the floor: the median of all its runs, taken in turns with every table.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: Path, family: Family, pod_peers: u32, samples: &[u64]) -> Measurement {
        Measurement {
            path,
            family,
            pod_peers,
            cidr_prefixes: 0,
            samples: samples.to_vec(),
        }
    }

    fn text_has(report: &Report, line: &str) -> bool {
        report.to_string().contains(line)
    }

    #[test]
    fn medians_ratios_and_targets_come_out_of_the_runs() {
        assert_eq!(median(&[5, 1, 3]), 3.0);
        assert_eq!(median(&[4, 1, 3, 2]), 2.5);
        assert_eq!(median(&[]), 0.0);
        let report = Report {
            runs: 3,
            repeat: 10,
            cpu: Some(1),
            kernel: "test".into(),
            steal_percent: None,
            flat_series: vec![100, 1000],
            measurements: vec![
                m(Path::Floor, Family::Ipv4, 100, &[10, 10, 11, 10, 12, 9]),
                m(Path::ConntrackHit, Family::Ipv4, 100, &[20, 21, 22]),
                m(Path::ConntrackHit, Family::Ipv6, 100, &[30, 30, 30]),
                m(Path::NewFlowPodPeer, Family::Ipv4, 100, &[40, 40, 40]),
                m(Path::NewFlowPodPeer, Family::Ipv6, 100, &[40, 40, 40]),
                m(Path::NewFlowPodPeer, Family::Ipv4, 1000, &[50, 50, 50]),
                m(Path::NewFlowPodPeer, Family::Ipv6, 1000, &[44, 44, 44]),
            ],
        };
        assert_eq!(report.floor(), 10.0);
        assert!(
            text_has(
                &report,
                "| empty classifier (floor) | 10 (9-12) | 1.0x | 10 (9-12) | 1.0x |"
            ),
            "the floor stands for both families"
        );
        assert_eq!(report.flatness(Family::Ipv4), Some(1.25));
        let text = report.to_string();
        assert!(
            text.contains(
                "| conntrack hit (ACK) | 21 (20-22) | 2.1x | 30 (30-30) | 3.0x | <= 3x | yes |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| new flow allowed, pod peer (SYN) | 40 (40-40) | 4.0x |"),
            "{text}"
        );
        assert!(text.contains("| 1000 | 50 (50-50) | 1.25x | 44 (44-44) | 1.10x |"));
        assert!(text.contains("(target <= 1.1x): no"), "{text}");
    }

    #[test]
    fn the_json_figures_hold_every_ratio_with_its_target_and_whether_it_is_met() {
        let report = Report {
            runs: 3,
            repeat: 10,
            cpu: None,
            kernel: "test".into(),
            steal_percent: None,
            flat_series: vec![100, 1000],
            measurements: vec![
                m(Path::Floor, Family::Ipv4, 100, &[10, 10, 10]),
                m(Path::ConntrackHit, Family::Ipv4, 100, &[25, 25, 25]),
                m(Path::ConntrackHit, Family::Ipv6, 100, &[35, 35, 35]),
                m(Path::Unisolated, Family::Ipv4, 100, &[15, 15, 15]),
                m(Path::NewFlowPodPeer, Family::Ipv4, 100, &[40, 40, 40]),
                m(Path::NewFlowPodPeer, Family::Ipv4, 1000, &[42, 42, 42]),
            ],
        };
        let figures = report.figures();
        assert_eq!(figures.bench, "datapath");
        let find = |name: &str| figures.named(name);
        let hit_v4 = find("conntrack hit (ACK), IPv4 / floor");
        assert_eq!((hit_v4.value, hit_v4.unit), (2.5, "ratio"));
        assert_eq!(
            (hit_v4.target.as_deref(), hit_v4.met),
            (Some("<= 3"), Some(true))
        );
        assert_eq!(find("conntrack hit (ACK), IPv6 / floor").met, Some(false));
        let unisolated = find("unisolated endpoint (SYN), IPv4 / floor");
        assert_eq!((unisolated.value, unisolated.met), (1.5, None));
        assert_eq!(find("conntrack hit (ACK), IPv4 ns/packet").value, 25.0);
        let flat = find("new flow, pod peer, IPv4: 1000 over 100 pod peers");
        assert_eq!((flat.value, flat.met), (1.05, Some(true)));
        assert!(
            !figures
                .figures
                .iter()
                .any(|f| f.name.contains("floor), IPv6")),
            "one floor serves both families"
        );
        let json = serde_json::to_value(&figures).unwrap_or_default();
        assert_eq!(json["figures"][0]["unit"], "ns", "{json}");
        assert!(json["figures"]
            .as_array()
            .is_some_and(|a| a.len() == figures.figures.len()));
    }
}
