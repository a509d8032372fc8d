//! Full compile time and peak RSS at one scale, measured in a process of its own:
//! `measure` runs in the child (`policy-agent bench compile-scale`), which prints
//! the figures as one JSON line; `in_child` starts that child and reads them. A
//! fresh process per scale keeps one scale's allocations out of the other's peak.

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use super::super::{
    cluster::{self, ClusterSpec},
    BenchError,
};
use crate::policy::{compiler, tables::DatapathTables};

/// What the compiled tables of the local node hold: how big the work was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableSizes {
    /// Local pods with an `ENDPOINTS` entry.
    pub endpoints: usize,
    /// Distinct endpoint ids among them.
    pub endpoint_ids: usize,
    /// Peer prefixes (`PEERS_V4` + `PEERS_V6`).
    pub peers: usize,
    /// Distinct peer classes among them.
    pub classes: usize,
    /// `RULE_SETS` entries.
    pub rule_sets: usize,
    /// `POLICY` entries.
    pub policy_entries: usize,
    /// Allow entries one (endpoint, class, direction, protocol, port) map would
    /// need: what `POLICY` held before rule sets.
    pub flat_entries: usize,
}

impl TableSizes {
    /// The sizes of `tables`.
    pub fn of(tables: &DatapathTables) -> Self {
        let ids: BTreeSet<u32> = tables.endpoints.values().map(|e| e.endpoint_id).collect();
        let classes: BTreeSet<u32> = tables.peers.values().map(|p| p.class_id).collect();
        Self {
            endpoints: tables.endpoints.len(),
            endpoint_ids: ids.len(),
            peers: tables.peers.len(),
            classes: classes.len(),
            rule_sets: tables.rule_sets.len(),
            policy_entries: tables.policy_entries(),
            flat_entries: tables.allow_entries().len(),
        }
    }
}

/// The figures of one scale.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompileFigures {
    /// The cluster compiled.
    pub spec: ClusterSpec,
    /// Nanoseconds of each full compile, in run order.
    pub compile_ns: Vec<u64>,
    /// Nanoseconds to generate the cluster (not part of any target).
    pub generate_ns: u64,
    /// What the tables hold.
    pub sizes: TableSizes,
    /// Resident set after generating the cluster, before compiling (KiB, `VmRSS`).
    pub rss_before_compile_kib: u64,
    /// Peak resident set of the process after every run (KiB, `VmHWM`).
    pub peak_rss_kib: u64,
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Generates the cluster `spec` describes and compiles it for the local node `runs`
/// times, in this process (the child's side).
pub fn measure(spec: &ClusterSpec, runs: usize) -> Result<CompileFigures, BenchError> {
    let started = Instant::now();
    let state = cluster::generate(spec);
    let generate_ns = nanos(started.elapsed());
    let rss_before_compile_kib = own_status_kib("VmRSS")?;
    let node = [cluster::node_address(0)];
    let mut compile_ns = Vec::with_capacity(runs);
    let mut sizes = TableSizes::default();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let tables = compiler::compile(&state, &node, |pod| {
            pod.node_name.as_deref() == Some(cluster::LOCAL_NODE)
        });
        compile_ns.push(nanos(started.elapsed()));
        sizes = TableSizes::of(&tables);
        drop(tables);
    }
    Ok(CompileFigures {
        spec: *spec,
        compile_ns,
        generate_ns,
        sizes,
        rss_before_compile_kib,
        peak_rss_kib: own_status_kib("VmHWM")?,
    })
}

/// The field `field` (a `kB` figure such as `VmHWM` or `VmRSS`) of
/// `/proc/self/status`.
pub fn own_status_kib(field: &'static str) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|source| BenchError::Io {
        what: "reading /proc/self/status".into(),
        source,
    })?;
    status_kib(&status, field).ok_or_else(|| BenchError::Child {
        command: "read /proc/self/status".into(),
        message: format!("no {field} line in kB"),
    })
}

/// The value in KiB of the `field:   1234 kB` line of a `/proc/<pid>/status` text.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name != field {
            return None;
        }
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(value)
    })
}

/// The figures a child printed: its last non-empty stdout line, as JSON.
pub fn parse_child_output(stdout: &str) -> Result<CompileFigures, String> {
    let line = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .ok_or("printed nothing")?;
    serde_json::from_str(line).map_err(|e| format!("{e}: {line:?}"))
}

/// The arguments of the hidden `bench compile-scale` subcommand for `spec`.
pub fn child_args(spec: &ClusterSpec, runs: usize) -> Vec<String> {
    [
        "bench",
        "compile-scale",
        "--pods",
        &spec.pods.to_string(),
        "--policies",
        &spec.policies.to_string(),
        "--namespaces",
        &spec.namespaces.to_string(),
        "--pods-per-node",
        &spec.pods_per_node.to_string(),
        "--runs",
        &runs.to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// Runs `measure` in a fresh process of `agent` (this binary) and returns what it
/// printed.
pub fn in_child(
    agent: &Path,
    spec: &ClusterSpec,
    runs: usize,
) -> Result<CompileFigures, BenchError> {
    let args = child_args(spec, runs);
    let command = format!("{} {}", agent.display(), args.join(" "));
    let failed = |message: String| BenchError::Child {
        command: command.clone(),
        message,
    };
    let output = Command::new(agent)
        .args(&args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| BenchError::Io {
            what: format!("running {command}"),
            source,
        })?;
    if !output.status.success() {
        return Err(failed(format!("exited with {}", output.status)));
    }
    parse_child_output(&String::from_utf8_lossy(&output.stdout)).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpolicy-agent\nVmPeak:\t  123456 kB\nVmHWM:\t   51234 kB\n\
                          VmRSS:\t   40000 kB\nThreads:\t1\n";

    #[test]
    fn status_fields_are_read_in_kib_by_exact_name() {
        assert_eq!(status_kib(STATUS, "VmHWM"), Some(51_234));
        assert_eq!(status_kib(STATUS, "VmRSS"), Some(40_000));
        assert_eq!(status_kib(STATUS, "VmHW"), None, "no prefix match");
        assert_eq!(status_kib(STATUS, "Threads"), None, "not a kB figure");
        assert_eq!(status_kib("VmHWM:\tlots kB\n", "VmHWM"), None);
    }

    #[test]
    fn a_child_report_round_trips_through_its_last_line() {
        let figures = CompileFigures {
            spec: ClusterSpec::new(1_000, 100),
            compile_ns: vec![3, 1, 2],
            generate_ns: 7,
            sizes: TableSizes {
                endpoints: 100,
                ..TableSizes::default()
            },
            rss_before_compile_kib: 10,
            peak_rss_kib: 20,
        };
        let printed = format!(
            "noise\n{}\n\n",
            serde_json::to_string(&figures).unwrap_or_default()
        );
        assert_eq!(parse_child_output(&printed), Ok(figures));
        assert!(parse_child_output("").is_err());
        assert!(parse_child_output("{\"spec\":1}\n").is_err());
    }

    #[test]
    fn the_child_is_asked_for_the_spec_it_is_given() {
        let spec = ClusterSpec::new(10_000, 1_000);
        let args = child_args(&spec, 3);
        assert_eq!(&args[..2], ["bench", "compile-scale"]);
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        assert_eq!(value("--pods").as_deref(), Some("10000"));
        assert_eq!(value("--policies").as_deref(), Some("1000"));
        assert_eq!(value("--namespaces").as_deref(), Some("100"));
        assert_eq!(value("--runs").as_deref(), Some("3"));
    }
}
