//! The memory step's figures and how they are printed: the agent's resident set
//! against the project's 64 MiB target, its peak, and the BPF map memory apart.

use std::{fmt, time::Duration};

use super::{MapMemory, Resident};
use crate::bench::{cluster::ClusterSpec, figures::Figure};

/// The agent's resident set target, MiB.
pub const AGENT_RSS_TARGET_MIB: f64 = 64.0;

/// What the memory step measured.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryReport {
    /// The cluster served (pods, policies, namespaces).
    pub spec: ClusterSpec,
    /// Services served.
    pub services: usize,
    /// Pods of the cluster on the agent's node.
    pub local_pods: usize,
    /// From the agent's start to `/readyz` answering 200.
    pub ready_after: Duration,
    /// How long it ran after that before it was measured.
    pub settle: Duration,
    /// Its resident set then.
    pub resident: Resident,
    /// The BPF maps it held then.
    pub maps: MapMemory,
}

/// `10k` for 10000, `2k` for 2000, `500` for 500.
fn count(n: usize) -> String {
    if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl MemoryReport {
    /// `10k pods x 1k policies x 2k Services`.
    pub fn scale(&self) -> String {
        format!(
            "{} pods x {} policies x {} Services",
            count(self.spec.pods),
            count(self.spec.policies),
            count(self.services)
        )
    }

    /// The figures: the agent's RSS with its target, its peak RSS, and its BPF map
    /// memory (no target: the maps are sized by the datapath's capacities).
    pub fn figures(&self) -> Vec<Figure> {
        let scale = self.scale();
        vec![
            Figure::at_most(
                format!("agent RSS, {scale}"),
                mib(self.resident.rss_kib),
                "MiB",
                AGENT_RSS_TARGET_MIB,
            ),
            Figure::plain(
                format!("agent peak RSS (VmHWM), {scale}"),
                mib(self.resident.hwm_kib),
                "MiB",
            ),
            Figure::plain(
                format!("agent BPF map memory (memlock), {scale}"),
                self.maps.bytes as f64 / (1024.0 * 1024.0),
                "MiB",
            ),
        ]
    }
}

impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.resident;
        let rss = mib(r.rss_kib);
        writeln!(
            f,
            "Memory of `policy-agent run` watching the stand-in API server ({} namespaces, {} nodes, {} pods on its node; ready after {:.1} s, measured {} s later):\n",
            self.spec.namespaces,
            self.spec.nodes(),
            self.local_pods,
            self.ready_after.as_secs_f64(),
            self.settle.as_secs(),
        )?;
        writeln!(
            f,
            "| cluster | agent RSS (anonymous + file) | target | met | peak RSS (VmHWM) | threads | BPF map memory, apart (maps) |"
        )?;
        writeln!(f, "| --- | --- | --- | --- | --- | --- | --- |")?;
        writeln!(
            f,
            "| {} | {rss:.1} MiB ({:.1} + {:.1}) | <= {AGENT_RSS_TARGET_MIB} MiB | {} | {:.1} MiB | {} | {:.1} MiB ({}) |",
            self.scale(),
            mib(r.anon_kib),
            mib(r.file_kib),
            if rss <= AGENT_RSS_TARGET_MIB { "yes" } else { "**no**" },
            mib(r.hwm_kib),
            r.threads,
            self.maps.bytes as f64 / (1024.0 * 1024.0),
            self.maps.maps,
        )?;
        f.write_str(METHOD)
    }
}

/// How the figures were made, printed under them.
const METHOD: &str = "
Method: the synthetic cluster of `bench/cluster.rs` (Services beyond one per app
added per namespace), written out as API objects by `bench/api_objects.rs` and
served by the stand-in API server (crate `stand-in-apiserver`) from a scratch
network namespace; `policy-agent run` for node-0000 (the binary `--memory-agent`
names: `cargo xtask bench agent` passes the image's, built with the `shipped`
profile; else this benchmark's own) runs in that namespace with its own pin
directory and a veth per local pod, lists and watches
everything, compiles and programs its datapath. Once /readyz answers 200 and the
settle time has passed, VmRSS, VmHWM, RssAnon, RssFile and Threads come from
/proc/<pid>/status; BPF map memory is the sum of `memlock` over the distinct maps
(by map_id) the agent holds descriptors of (/proc/<pid>/fdinfo), which is kernel
memory and not part of RSS.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rss_kib: u64) -> MemoryReport {
        MemoryReport {
            spec: ClusterSpec::new(10_000, 1_000),
            services: 2_000,
            local_pods: 100,
            ready_after: Duration::from_millis(2_500),
            settle: Duration::from_secs(5),
            resident: Resident {
                rss_kib,
                hwm_kib: 80 * 1024,
                anon_kib: rss_kib - 8 * 1024,
                file_kib: 8 * 1024,
                threads: 5,
            },
            maps: MapMemory {
                maps: 20,
                bytes: 3 * 1024 * 1024,
            },
        }
    }

    #[test]
    fn the_rss_figure_has_the_64_mib_target_and_the_others_none() {
        let figures = report(40 * 1024).figures();
        let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "agent RSS, 10k pods x 1k policies x 2k Services",
                "agent peak RSS (VmHWM), 10k pods x 1k policies x 2k Services",
                "agent BPF map memory (memlock), 10k pods x 1k policies x 2k Services",
            ]
        );
        assert_eq!(
            (
                figures[0].value,
                figures[0].unit,
                figures[0].target.as_deref(),
                figures[0].met
            ),
            (40.0, "MiB", Some("<= 64"), Some(true))
        );
        assert_eq!(
            (figures[1].value, figures[1].target.as_deref()),
            (80.0, None)
        );
        assert_eq!((figures[2].value, figures[2].met), (3.0, None));
        assert_eq!(report(65 * 1024).figures()[0].met, Some(false));
    }

    #[test]
    fn the_table_shows_rss_parts_and_maps_apart() {
        let text = report(40 * 1024).to_string();
        assert!(
            text.contains("| 10k pods x 1k policies x 2k Services | 40.0 MiB (32.0 + 8.0) | <= 64 MiB | yes | 80.0 MiB | 5 | 3.0 MiB (20) |"),
            "{text}"
        );
        assert!(text.contains("100 pods on its node"), "{text}");
    }

    #[test]
    fn counts_are_short_in_thousands_only_when_exact() {
        assert_eq!(count(10_000), "10k");
        assert_eq!(count(2_000), "2k");
        assert_eq!(count(500), "500");
        assert_eq!(count(1_500), "1500");
    }
}
