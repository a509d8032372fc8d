//! Runs the benchmark: loads one copy of the object per table, writes the table,
//! primes conntrack where a path needs it, then times every case of every table in
//! turns, checking after every run that the kernel took the path the case names (its
//! verdict counter, and only it, grew by `repeat`).

use std::{collections::BTreeMap, net::IpAddr};

use policy_common::peer::PEERS_MAX;

use super::{
    frames::{self, ACK, SYN},
    report::{Family, Measurement, Path, Report},
    tables::{self, TableSpec, ALLOWED_PORT, DENIED_PORT, SERVER_V4, SERVER_V6},
    BenchError, Options,
};
use crate::dataplane::{self, BenchProgram, Datapath, Hook, InterfaceIndex, LoadOptions};

/// The loopback device of the calling thread's network namespace. The test skb sits
/// on it (the kernel puts it on loopback for any ifindex below 2), so `ENDPOINTS`
/// holds the server under this index. Nothing is attached and nothing is sent.
const LOOPBACK: InterfaceIndex = 1;

/// One packet timed on one table.
struct Case {
    path: Path,
    family: Family,
    program: BenchProgram,
    frame: Vec<u8>,
    /// The counter that must grow by `repeat` (none for the floor), and the verdict.
    counter: Option<&'static str>,
    passes: bool,
}

/// One table and the cases timed on it.
struct Phase {
    spec: TableSpec,
    /// Paths of the packets (besides the floor) timed on this table.
    paths: &'static [Path],
}

/// The tables, each loaded into its own copy of the object: the smallest pod table
/// open and isolated, with the ipBlock prefixes, then each larger pod table.
fn plan(options: &Options) -> Vec<Phase> {
    let smallest = options.flat_series.first().copied().unwrap_or(100);
    let spec = |pod_peers, cidr_prefixes, isolated| TableSpec {
        pod_peers,
        cidr_prefixes,
        isolated,
    };
    let mut phases = vec![
        Phase {
            spec: spec(smallest, 0, false),
            paths: &[Path::Unisolated],
        },
        Phase {
            spec: spec(smallest, 0, true),
            paths: &[
                Path::ConntrackHit,
                Path::NewFlowPodPeer,
                Path::Dropped,
                Path::ExitNotDeferred,
                Path::EntryToPod,
            ],
        },
        Phase {
            spec: spec(smallest, options.cidr_prefixes, true),
            paths: &[Path::NewFlowCidrPeer],
        },
    ];
    for &n in options.flat_series.iter().skip(1) {
        phases.push(Phase {
            spec: spec(n, 0, true),
            paths: &[Path::NewFlowPodPeer],
        });
    }
    phases
}

/// Source ports: one flow per path, so conntrack entries of one path never serve
/// another.
fn source_port(path: Path) -> u16 {
    40000 + path as u16
}

fn family_of(addr: IpAddr) -> Family {
    if addr.is_ipv4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

/// The cases of `path` on a table whose peers are `built`, one per family.
fn cases(path: Path, built: &tables::BenchTables) -> Vec<Case> {
    let (pod_v4, pod_v6) = built.pod_peer;
    let pods = [
        (IpAddr::V4(pod_v4), SERVER_V4.into()),
        (pod_v6.into(), SERVER_V6.into()),
    ];
    let peers: Vec<(IpAddr, IpAddr)> = match path {
        Path::NewFlowCidrPeer => built.cidr_peer.map_or(Vec::new(), |(v4, v6)| {
            vec![(v4.into(), SERVER_V4.into()), (v6.into(), SERVER_V6.into())]
        }),
        _ => pods.to_vec(),
    };
    let (flags, port, counter, passes) = match path {
        // The exit programs count nothing when they decide nothing.
        Path::Floor | Path::ExitNotDeferred | Path::EntryToPod => (SYN, ALLOWED_PORT, None, true),
        Path::Unisolated => (SYN, ALLOWED_PORT, Some("allow_unisolated"), true),
        Path::ConntrackHit => (ACK, ALLOWED_PORT, Some("allow_tracked"), true),
        Path::NewFlowPodPeer | Path::NewFlowCidrPeer => {
            (SYN, ALLOWED_PORT, Some("allow_policy"), true)
        }
        Path::Dropped => (SYN, DENIED_PORT, Some("drop_policy"), false),
    };
    let program = match path {
        Path::Floor => BenchProgram::Floor,
        Path::ExitNotDeferred => BenchProgram::Hook(Hook::NodeExit),
        Path::EntryToPod => BenchProgram::Hook(Hook::NodeEntry),
        _ => BenchProgram::Hook(Hook::PodIngress),
    };
    peers
        .into_iter()
        .filter_map(|(src, dst)| {
            Some(Case {
                path,
                family: family_of(src),
                program,
                frame: frames::tcp(src, dst, source_port(path), port, flags)?,
                counter,
                passes,
            })
        })
        .collect()
}

/// Runs `case` once with `repeat` repeats; returns ns per packet after checking the
/// verdict and the counters.
fn measure(datapath: &mut Datapath, case: &Case, repeat: u32) -> Result<u64, BenchError> {
    let before = datapath.stats()?;
    let run = datapath.bench_run(case.program, LOOPBACK, &case.frame, repeat)?;
    // Verdict counters only: a timed drop also emits events, most of them held
    // back by the rate limit, and that is part of what a drop costs.
    let grown: BTreeMap<&'static str, u64> = datapath
        .stats()?
        .verdict_growth_since(&before)
        .into_iter()
        .collect();
    let expected: BTreeMap<&'static str, u64> = case
        .counter
        .map(|name| (name, u64::from(repeat)))
        .into_iter()
        .collect();
    if grown != expected || run.passed != case.passes {
        return Err(BenchError::WrongPath {
            case: format!("{} {}", case.path.label(), case.family),
            expected: format!("{expected:?}, passed: {}", case.passes),
            counted: format!("{grown:?}, passed: {}", run.passed),
        });
    }
    Ok(u64::try_from(run.per_run.as_nanos()).unwrap_or(u64::MAX))
}

/// Tracks the conntrack-hit flows: one allowed SYN each, before the timed ACKs.
fn prime(datapath: &mut Datapath, cases: &[Case]) -> Result<(), BenchError> {
    for case in cases.iter().filter(|c| c.path == Path::ConntrackHit) {
        let mut syn = case.frame.clone();
        let flags_at = syn.len() - 20 + 13;
        syn[flags_at] = SYN;
        let opener = Case {
            path: Path::NewFlowPodPeer,
            family: case.family,
            program: case.program,
            frame: syn,
            counter: Some("allow_policy"),
            passes: true,
        };
        measure(datapath, &opener, 1)?;
    }
    Ok(())
}

/// A table in its own copy of the object, and the cases timed on it.
struct Loaded {
    spec: TableSpec,
    datapath: Datapath,
    cases: Vec<Case>,
}

/// Loads a copy of the object for `phase` (with `bench_floor` for `with_floor`),
/// writes its table and primes conntrack for its cases.
fn load(object: &std::path::Path, phase: &Phase, with_floor: bool) -> Result<Loaded, BenchError> {
    let spec = phase.spec;
    let needed = spec.pod_peers.saturating_add(spec.cidr_prefixes);
    let options = LoadOptions {
        peers_capacity: Some(needed.saturating_add(16).max(PEERS_MAX)),
        bench_floor: with_floor,
        ..LoadOptions::default()
    };
    let mut datapath = Datapath::load_with(object, &options)?;
    let built = tables::build(&spec);
    let interfaces = BTreeMap::from([(tables::server(), LOOPBACK)]);
    datapath.apply(&built.tables, &interfaces, &BTreeMap::new())?;
    let mut timed = Vec::new();
    if with_floor {
        // Its IPv4 frame: the floor reads no packet.
        timed.extend(cases(Path::Floor, &built).into_iter().take(1));
    }
    for &path in phase.paths {
        timed.extend(cases(path, &built));
    }
    prime(&mut datapath, &timed)?;
    Ok(Loaded {
        spec,
        datapath,
        cases: timed,
    })
}

/// Runs the benchmark; `progress` gets a line per table, per round and per figure.
///
/// Every table is loaded at once, each in its own copy of the object (its own maps),
/// and each round times every case of every table once, so a slow spell of the
/// machine (this is a VM) lands on all figures alike instead of on one table.
pub(super) fn run(options: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let phases = plan(options);
    let object = dataplane::object::find()?;
    let mut loaded = Vec::with_capacity(phases.len());
    for (i, phase) in phases.iter().enumerate() {
        let spec = phase.spec;
        progress(&format!(
            "[{}/{}] loading a copy of the object: {} pod peers and {} ipBlock prefixes \
             per family, server {}",
            i + 1,
            phases.len(),
            spec.pod_peers,
            spec.cidr_prefixes,
            if spec.isolated {
                "isolated"
            } else {
                "not isolated"
            },
        ));
        loaded.push(load(&object, phase, i == 0)?);
    }
    let cases: usize = loaded.iter().map(|l| l.cases.len()).sum();
    progress(&format!(
        "timing {cases} cases in turns: {} rounds of {} repeats each",
        options.runs, options.repeat
    ));
    let cpu_before = cpu_times();
    let mut samples: Vec<Vec<Vec<u64>>> = loaded
        .iter()
        .map(|l| vec![Vec::with_capacity(options.runs); l.cases.len()])
        .collect();
    for round in 0..options.runs {
        for (table, samples) in loaded.iter_mut().zip(&mut samples) {
            for (case, samples) in table.cases.iter().zip(samples.iter_mut()) {
                samples.push(measure(&mut table.datapath, case, options.repeat)?);
            }
        }
        progress(&format!("round {}/{} done", round + 1, options.runs));
    }
    let steal_percent = steal_since(cpu_before);
    let mut measurements = Vec::new();
    for (table, samples) in loaded.iter().zip(samples) {
        for (case, samples) in table.cases.iter().zip(samples) {
            let m = Measurement {
                path: case.path,
                family: case.family,
                pod_peers: table.spec.pod_peers,
                cidr_prefixes: table.spec.cidr_prefixes,
                samples,
            };
            progress(&format!(
                "{} {} ({} pod peers, {} ipBlock prefixes): {} ns/packet",
                m.path.label(),
                m.family,
                m.pod_peers,
                m.cidr_prefixes,
                m.median()
            ));
            measurements.push(m);
        }
    }
    Ok(Report {
        runs: options.runs,
        repeat: options.repeat,
        cpu: options.cpu,
        kernel: kernel_release(),
        steal_percent,
        flat_series: options.flat_series.clone(),
        measurements,
    })
}

/// The share of CPU time the hypervisor took (steal) since `before` (a
/// `cpu_times` reading), in percent.
pub(super) fn steal_since(before: Option<(u64, u64)>) -> Option<f64> {
    before.zip(cpu_times()).and_then(|(before, after)| {
        let total = after.0.saturating_sub(before.0);
        (total > 0).then(|| 100.0 * after.1.saturating_sub(before.1) as f64 / total as f64)
    })
}

/// The running kernel's release (`uname -r`), or `unknown`.
pub(super) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string())
}

/// `(total, steal)` CPU time of all CPUs so far, in clock ticks (`/proc/stat`).
pub(super) fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time
    // is already counted in user and nice.
    let total = fields.iter().take(8).sum();
    Some((total, *fields.get(7)?))
}
