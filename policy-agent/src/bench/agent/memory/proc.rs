//! What the memory benchmark reads of another process in `/proc` (the parsers are
//! pure): resident set figures from `/proc/<pid>/status`, and the BPF maps it
//! holds from `/proc/<pid>/fd` and `/proc/<pid>/fdinfo`.
//!
//! BPF map memory is not part of RSS (the kernel allocates it), so it is counted
//! apart: the `memlock` the kernel charges for each map the process has a
//! descriptor of, each map once (by `map_id`) however many descriptors it has.

use std::{collections::BTreeMap, path::PathBuf};

use super::super::{super::BenchError, compile::status_kib};

/// Resident set figures of a process, KiB (`/proc/<pid>/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resident {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident set so far.
    pub hwm_kib: u64,
    /// `RssAnon`: the anonymous part of `VmRSS` (heap, stacks).
    pub anon_kib: u64,
    /// `RssFile`: the file-backed part (the binary's and libraries' pages).
    pub file_kib: u64,
    /// `Threads`.
    pub threads: u64,
}

impl Resident {
    /// The figures of a `/proc/<pid>/status` text; `None` when one is missing.
    pub fn parse(status: &str) -> Option<Self> {
        let threads = status
            .lines()
            .find_map(|line| line.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())?;
        Some(Self {
            rss_kib: status_kib(status, "VmRSS")?,
            hwm_kib: status_kib(status, "VmHWM")?,
            anon_kib: status_kib(status, "RssAnon")?,
            file_kib: status_kib(status, "RssFile")?,
            threads,
        })
    }

    /// The figures of process `pid`.
    pub fn of(pid: u32) -> Result<Self, BenchError> {
        let path = format!("/proc/{pid}/status");
        let status = read(&path)?;
        Self::parse(&status).ok_or_else(|| BenchError::Child {
            command: format!("read {path}"),
            message: "no VmRSS, VmHWM, RssAnon, RssFile or Threads line".into(),
        })
    }
}

/// The BPF maps a process holds descriptors of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapMemory {
    /// Distinct maps.
    pub maps: usize,
    /// Their `memlock` in all, bytes.
    pub bytes: u64,
}

/// `(map_id, memlock)` of a BPF map descriptor's fdinfo text; `None` for any other
/// descriptor.
pub fn map_fdinfo(fdinfo: &str) -> Option<(u32, u64)> {
    let field = |name: &str| {
        fdinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == name).then(|| value.trim().to_string())
        })
    };
    Some((
        field("map_id")?.parse().ok()?,
        field("memlock")?.parse().ok()?,
    ))
}

/// Sums `map_fdinfo` over descriptors, each map once.
pub fn sum_maps<'a>(fdinfos: impl IntoIterator<Item = &'a str>) -> MapMemory {
    let maps: BTreeMap<u32, u64> = fdinfos.into_iter().filter_map(map_fdinfo).collect();
    MapMemory {
        maps: maps.len(),
        bytes: maps.values().sum(),
    }
}

/// The BPF maps process `pid` holds (descriptors linked to `anon_inode:bpf-map`).
pub fn maps_of(pid: u32) -> Result<MapMemory, BenchError> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let entries = std::fs::read_dir(&dir).map_err(|source| BenchError::Io {
        what: format!("listing {}", dir.display()),
        source,
    })?;
    let mut fdinfos = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        // A descriptor closed since the listing is simply skipped.
        let is_map = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        let fd = entry.file_name();
        let path = format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy());
        if let Ok(text) = std::fs::read_to_string(path) {
            fdinfos.push(text);
        }
    }
    Ok(sum_maps(fdinfos.iter().map(String::as_str)))
}

fn read(path: &str) -> Result<String, BenchError> {
    std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        what: format!("reading {path}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpolicy-agent\nVmHWM:\t   61234 kB\nVmRSS:\t   40000 kB\n\
                          RssAnon:\t   30000 kB\nRssFile:\t   10000 kB\nThreads:\t6\n";

    #[test]
    fn resident_figures_come_from_their_status_lines() {
        let resident = Resident::parse(STATUS);
        assert_eq!(
            resident,
            Some(Resident {
                rss_kib: 40_000,
                hwm_kib: 61_234,
                anon_kib: 30_000,
                file_kib: 10_000,
                threads: 6,
            })
        );
        assert_eq!(Resident::parse("VmRSS:\t1 kB\n"), None, "a line missing");
    }

    fn map(id: u32, memlock: u64) -> String {
        format!(
            "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1\nmap_type:\t1\nkey_size:\t4\n\
             value_size:\t8\nmax_entries:\t1024\nmap_flags:\t0x0\nmap_extra:\t0x0\n\
             memlock:\t{memlock}\nmap_id:\t{id}\nfrozen:\t0\n"
        )
    }

    #[test]
    fn each_map_counts_once_and_other_descriptors_not_at_all() {
        assert_eq!(map_fdinfo(&map(7, 86_016)), Some((7, 86_016)));
        assert_eq!(map_fdinfo("pos:\t0\nflags:\t0100000\nmnt_id:\t24\n"), None);
        let (a, a_again, b) = (map(1, 4_096), map(1, 4_096), map(2, 1_000_000));
        let program = "pos:\t0\nprog_type:\t3\nprog_id:\t9\nmemlock:\t8192\n";
        let sum = sum_maps([a.as_str(), a_again.as_str(), b.as_str(), program]);
        assert_eq!(
            sum,
            MapMemory {
                maps: 2,
                bytes: 1_004_096
            }
        );
    }
}
