//! Runs the benchmark: writes each table, primes conntrack where a path needs it,
//! then times every case of the table in turns, checking after every run that the
//! kernel took the path the case names (its verdict counter, and only it, grew by
//! `repeat`).

use std::{collections::BTreeMap, net::IpAddr};

use policy_common::peer::PEERS_MAX;

use super::{
    frames::{self, ACK, SYN},
    report::{median, Family, Measurement, Path, Report},
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

/// The tables in the order they are written: each differs from the last in one way.
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
            paths: &[Path::ConntrackHit, Path::NewFlowPodPeer, Path::Denied],
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
        Path::Floor => (SYN, ALLOWED_PORT, None, true),
        Path::Unisolated => (SYN, ALLOWED_PORT, Some("allow_unisolated"), true),
        Path::ConntrackHit => (ACK, ALLOWED_PORT, Some("allow_tracked"), true),
        Path::NewFlowPodPeer | Path::NewFlowCidrPeer => {
            (SYN, ALLOWED_PORT, Some("allow_policy"), true)
        }
        Path::Denied => (SYN, DENIED_PORT, Some("drop_policy"), false),
    };
    let program = match path {
        Path::Floor => BenchProgram::Floor,
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

/// Every counter's growth between two readings.
fn growth(before: &dataplane::Stats, after: &dataplane::Stats) -> BTreeMap<&'static str, u64> {
    after
        .counters
        .iter()
        .map(|&(name, count)| (name, count.saturating_sub(before.get(name))))
        .filter(|&(_, grown)| grown > 0)
        .collect()
}

/// Runs `case` once with `repeat` repeats; returns ns per packet after checking the
/// verdict and the counters.
fn measure(datapath: &mut Datapath, case: &Case, repeat: u32) -> Result<u64, BenchError> {
    let before = datapath.stats()?;
    let run = datapath.bench_run(case.program, LOOPBACK, &case.frame, repeat)?;
    let grown = growth(&before, &datapath.stats()?);
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

/// The peer trie capacity every table of `phases` fits in (at least the agent's).
fn peers_capacity(phases: &[Phase]) -> u32 {
    phases
        .iter()
        .map(|p| p.spec.pod_peers.saturating_add(p.spec.cidr_prefixes))
        .max()
        .unwrap_or(0)
        .saturating_add(16)
        .max(PEERS_MAX)
}

/// Runs every phase; `progress` gets one line per table and per figure.
pub(super) fn run(options: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let phases = plan(options);
    let object = dataplane::object::find()?;
    let load = LoadOptions {
        peers_capacity: Some(peers_capacity(&phases)),
        bench_floor: true,
    };
    let mut datapath = Datapath::load_with(&object, &load)?;
    let interfaces = BTreeMap::from([(tables::server(), LOOPBACK)]);
    let mut measurements = Vec::new();
    let mut floor = Vec::new();
    for (i, phase) in phases.iter().enumerate() {
        let spec = phase.spec;
        progress(&format!(
            "[{}/{}] {} pod peers, {} ipBlock prefixes per family, server {}: writing tables",
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
        let built = tables::build(&spec);
        datapath.apply(&built.tables, &interfaces)?;
        // The floor (its IPv4 frame; it reads no packet) takes turns with the rest.
        let mut timed: Vec<Case> = cases(Path::Floor, &built).into_iter().take(1).collect();
        for &path in phase.paths {
            timed.extend(cases(path, &built));
        }
        prime(&mut datapath, &timed)?;
        let mut samples = vec![Vec::with_capacity(options.runs); timed.len()];
        for _ in 0..options.runs {
            for (case, samples) in timed.iter().zip(&mut samples) {
                samples.push(measure(&mut datapath, case, options.repeat)?);
            }
        }
        for (case, samples) in timed.iter().zip(samples) {
            if case.path == Path::Floor {
                progress(&format!(
                    "      {}: {} ns/packet (median of {})",
                    case.path.label(),
                    median(&samples),
                    samples.len()
                ));
                floor.extend(samples);
                continue;
            }
            let m = Measurement {
                path: case.path,
                family: case.family,
                pod_peers: spec.pod_peers,
                cidr_prefixes: spec.cidr_prefixes,
                samples,
            };
            progress(&format!(
                "      {} {}: {} ns/packet (median of {})",
                m.path.label(),
                m.family,
                m.median(),
                m.samples.len()
            ));
            measurements.push(m);
        }
    }
    measurements.insert(
        0,
        Measurement {
            path: Path::Floor,
            family: Family::Ipv4,
            pod_peers: options.flat_series.first().copied().unwrap_or(0),
            cidr_prefixes: 0,
            samples: floor,
        },
    );
    Ok(Report {
        runs: options.runs,
        repeat: options.repeat,
        cpu: options.cpu,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string()),
        flat_series: options.flat_series.clone(),
        measurements,
    })
}
