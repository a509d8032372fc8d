//! What a datapath's owner publishes so `policy-agent flows` can follow it from
//! another process, and how a reader finds it.
//!
//! Per instance (a lab run, later the node agent), under directories versioned by
//! `policy_common::ABI_VERSION` so a reader never misreads another layout:
//! - `/sys/fs/bpf/podwall/v{ABI}/<instance>/events`: the `EVENTS` ring buffer,
//!   pinned on bpffs (mounted there first if it is not, announced and recorded:
//!   `bpffs`), and `.../stats`:
//!   `STATS`, whose side counters say when events were lost;
//! - `/run/podwall/v{ABI}/<instance>/names.json`: `FlowNames`, rewritten whole
//!   after every table apply (temporary file, then rename: a reader sees the old or
//!   the new file, never half of one). When a rewrite fails the file is removed:
//!   a reader says the names are missing rather than name events with old tables.
//!
//! A ring buffer has one consumer position: each event goes to whichever reader
//! takes it first, so one reader at a time sees every event.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use policy_common::ABI_VERSION;

use super::{
    bpffs::{BpffsMount, HOST_STATE_DIR},
    names::FlowNames,
    FlowLogError,
};
use crate::{causes::causes, dataplane::Datapath};

pub use crate::dataplane::{RUN_ROOT, RUN_ROOT_ENV};
/// Where bpffs is (or gets) mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// The names file of an instance.
pub const NAMES_FILE: &str = "names.json";
/// The pinned ring buffer of an instance.
pub const EVENTS_PIN: &str = "events";
/// The pinned `STATS` of an instance.
pub const STATS_PIN: &str = "stats";
/// The directory of an instance's pinned maps.
pub const MAPS_DIR: &str = "maps";

/// The roots under which instances publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowPaths {
    /// Root of the names files (`/run/podwall`).
    pub run_root: PathBuf,
    /// The bpffs mount (`/sys/fs/bpf`).
    pub bpffs: PathBuf,
    /// Where the record of podwall mounting bpffs and its lock live
    /// (`/run/podwall`, fixed: `bpffs::HOST_STATE_DIR`).
    pub bpffs_state: PathBuf,
}

impl FlowPaths {
    /// `/run/podwall` (or `$PODWALL_RUN_DIR`), `/sys/fs/bpf`, and `/run/podwall`
    /// for the bpffs record (whatever `$PODWALL_RUN_DIR` says).
    pub fn system() -> Self {
        let run_root = std::env::var_os(RUN_ROOT_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(RUN_ROOT), PathBuf::from);
        Self {
            run_root,
            bpffs: PathBuf::from(BPFFS),
            bpffs_state: PathBuf::from(HOST_STATE_DIR),
        }
    }

    /// The bpffs mount the pins go on.
    pub fn bpffs_mount(&self) -> BpffsMount {
        BpffsMount {
            mount_point: self.bpffs.clone(),
            state_dir: self.bpffs_state.clone(),
        }
    }

    /// `<run_root>/v{ABI}`: every instance's names directory is in it.
    pub fn names_root(&self) -> PathBuf {
        self.run_root.join(format!("v{ABI_VERSION}"))
    }

    /// `<bpffs>/podwall/v{ABI}`: every instance's pin directory is in it.
    pub fn pins_root(&self) -> PathBuf {
        self.bpffs.join("podwall").join(format!("v{ABI_VERSION}"))
    }

    /// The names file of `instance`.
    pub fn names_file(&self, instance: &str) -> PathBuf {
        self.names_root().join(instance).join(NAMES_FILE)
    }

    /// The pinned ring buffer of `instance`.
    pub fn events_pin(&self, instance: &str) -> PathBuf {
        self.pins_root().join(instance).join(EVENTS_PIN)
    }

    /// The pinned `STATS` of `instance`.
    pub fn stats_pin(&self, instance: &str) -> PathBuf {
        self.pins_root().join(instance).join(STATS_PIN)
    }

    /// Where `instance`'s maps are pinned for `explain --node` (a node agent's
    /// pin directory keeps all of its maps there).
    pub fn maps_dir(&self, instance: &str) -> PathBuf {
        self.pins_root().join(instance).join(MAPS_DIR)
    }

    /// Names of every instance with a names or pin directory, live or not.
    pub fn instance_names(&self) -> BTreeSet<String> {
        [self.names_root(), self.pins_root()]
            .iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect()
    }

    /// Removes what `instance` published (pins, then names); true if anything
    /// was there. Removing the pins does not stop a running datapath, only the
    /// reading. Pins go first: a reader that finds them gone knows the instance is
    /// gone, never that its names merely went missing.
    pub fn remove(&self, instance: &str) -> Result<bool, FlowLogError> {
        let mut removed = false;
        for dir in [
            self.pins_root().join(instance),
            self.names_root().join(instance),
        ] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(FlowLogError::Io {
                        what: "removing",
                        path: dir,
                        source,
                    })
                }
            }
        }
        Ok(removed)
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FlowLogError {
    let path = path.to_path_buf();
    move |source| FlowLogError::Io { what, path, source }
}

/// Writes `names` to `path` whole: a temporary file beside it, then a rename.
pub fn write_names(path: &Path, names: &FlowNames) -> Result<(), FlowLogError> {
    let json = serde_json::to_vec_pretty(names).map_err(|source| FlowLogError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let temporary = path.with_extension(format!("json.tmp{}", std::process::id()));
    let mut file = File::create(&temporary).map_err(io_error("creating", &temporary))?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", &temporary))?;
    fs::rename(&temporary, path).map_err(io_error("renaming into place", path))
}

/// Replaces the names file at `path` with `names`; when that fails, removes the
/// old file too (a reader then says the names are missing instead of naming new
/// events with old tables) and returns the failure.
pub fn replace_names(path: &Path, names: &FlowNames) -> Result<(), FlowLogError> {
    write_names(path, names).inspect_err(|_| {
        if let Err(error) = fs::remove_file(path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %causes(&error), path = %path.display(), "could not remove the stale names file");
            }
        }
    })
}

/// Reads a names file.
pub fn read_names(path: &Path) -> Result<FlowNames, FlowLogError> {
    let bytes = fs::read(path).map_err(io_error("reading", path))?;
    let names: FlowNames = serde_json::from_slice(&bytes).map_err(|source| FlowLogError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    if names.abi_version != ABI_VERSION {
        return Err(FlowLogError::AbiMismatch {
            path: path.to_path_buf(),
            found: names.abi_version,
        });
    }
    Ok(names)
}

/// What one datapath instance published; removes it when dropped.
#[derive(Debug)]
pub struct Publication {
    paths: FlowPaths,
    instance: String,
    /// The tables `explain --node` reads are pinned too.
    tables: bool,
}

impl Publication {
    /// Pins `datapath`'s `EVENTS` and `STATS` for `instance` (mounting bpffs if
    /// needed), and the maps `explain --node` reads, and makes its names
    /// directory. Call `publish` after every table apply.
    pub fn start(
        datapath: &mut Datapath,
        paths: &FlowPaths,
        instance: &str,
    ) -> Result<Self, FlowLogError> {
        if instance.is_empty() || instance.contains('/') || instance.starts_with('.') {
            return Err(FlowLogError::BadInstance {
                name: instance.to_string(),
            });
        }
        paths.bpffs_mount().ensure()?;
        // From here on, drop removes whatever was made.
        let mut publication = Self {
            paths: paths.clone(),
            instance: instance.to_string(),
            tables: false,
        };
        publication.paths.remove(instance)?;
        let pin = paths.events_pin(instance);
        for dir in [pin.parent(), paths.names_file(instance).parent()]
            .into_iter()
            .flatten()
        {
            fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        }
        datapath.pin_events(&pin)?;
        datapath.pin_stats(&paths.stats_pin(instance))?;
        // Best effort: without its tables, `flows` still follows it.
        let maps = paths.maps_dir(instance);
        let pinned = fs::create_dir_all(&maps)
            .map_err(io_error("creating", &maps))
            .and_then(|()| Ok(datapath.pin_tables(&maps)?));
        match pinned {
            Ok(()) => publication.tables = true,
            Err(error) => {
                tracing::warn!(error = %causes(&error), instance, "`policy-agent explain --node` cannot read this datapath's tables")
            }
        }
        Ok(publication)
    }

    /// The instance name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Where the ring buffer is pinned.
    pub fn events_pin(&self) -> PathBuf {
        self.paths.events_pin(&self.instance)
    }

    /// The names file.
    pub fn names_file(&self) -> PathBuf {
        self.paths.names_file(&self.instance)
    }

    /// Where `STATS` is pinned.
    pub fn stats_pin(&self) -> PathBuf {
        self.paths.stats_pin(&self.instance)
    }

    /// Replaces the names file with `names` and this publication's pin paths.
    /// On failure the old file is removed too (`replace_names`).
    pub fn publish(&self, names: &FlowNames) -> Result<(), FlowLogError> {
        let names = FlowNames {
            events_pin: self.events_pin(),
            stats_pin: self.stats_pin(),
            maps_dir: if self.tables {
                self.paths.maps_dir(&self.instance)
            } else {
                PathBuf::new()
            },
            ..names.clone()
        };
        replace_names(&self.names_file(), &names)
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if let Err(error) = self.paths.remove(&self.instance) {
            tracing::warn!(error = %causes(&error), instance = %self.instance, "could not remove the published flow names and pin");
        }
    }
}

/// Whether process `pid` runs (`/proc/<pid>` exists): how a reader, `lab down`
/// and the lab tell a live owner from a dead one.
pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The file a running node agent holds an exclusive `flock` on, in its
/// instance's names directory (`agent::lock`).
pub const AGENT_LOCK_FILE: &str = "agent.lock";

/// The inode of this process's pid namespace.
pub fn own_pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// Whether some process holds an exclusive `flock` on `path`, and its pid as
/// this process sees it (0 when it is not visible from here), from `/proc/locks`.
pub fn flock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).ok()?;
    let locks = fs::read_to_string("/proc/locks").ok()?;
    let dev = meta.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    locks.lines().find_map(|line| {
        // `1: FLOCK  ADVISORY  WRITE 1234 fe:00:5384395 0 EOF`
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, id) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
        let mut parts = id.split(':');
        let found_major = u64::from_str_radix(parts.next()?, 16).ok()?;
        let found_minor = u64::from_str_radix(parts.next()?, 16).ok()?;
        let inode: u64 = parts.next()?.parse().ok()?;
        let ours =
            *kind == "FLOCK" && inode == meta.ino() && found_major == major && found_minor == minor;
        ours.then(|| pid.parse().unwrap_or(0))
    })
}

/// A published instance as a reader finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Its name.
    pub name: String,
    /// Its names file.
    pub names_file: PathBuf,
    /// The owner's pid, from the names file (`None`: unreadable).
    pub pid: Option<u32>,
    /// The owner's pid namespace, from the names file (`None`: not recorded).
    pub pid_namespace: Option<u64>,
}

impl Instance {
    /// What a reader knows of the instance from its names file.
    fn read(name: String, names_file: PathBuf) -> Self {
        let names = read_names(&names_file).ok();
        Self {
            name,
            pid: names.as_ref().map(|n| n.pid),
            pid_namespace: names.and_then(|n| n.pid_namespace),
            names_file,
        }
    }

    /// Whether its owner runs: its pid, in the owner's pid namespace; from
    /// another one (a node agent in its container, read from the host), whether
    /// the agent's instance lock is held.
    pub fn alive(&self) -> bool {
        let Some(pid) = self.pid else {
            return false;
        };
        match self.pid_namespace {
            Some(theirs) if Some(theirs) != own_pid_namespace() => {
                flock_holder(&self.names_file.with_file_name(AGENT_LOCK_FILE)).is_some()
            }
            _ => process_alive(pid),
        }
    }

    fn describe(&self) -> String {
        match self.pid {
            Some(pid) => format!("{} (pid {pid})", self.name),
            None => format!("{} (unreadable names file)", self.name),
        }
    }
}

/// Every instance with a names file, sorted by name.
pub fn instances(paths: &FlowPaths) -> Vec<Instance> {
    let root = paths.names_root();
    let Ok(entries) = fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut found: Vec<Instance> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| {
            let names_file = root.join(&name).join(NAMES_FILE);
            names_file
                .is_file()
                .then(|| Instance::read(name, names_file))
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The instance a reader follows: `wanted` (an instance name, or the path of its
/// directory or names file), else the only live one. Fails naming what runs.
pub fn choose(paths: &FlowPaths, wanted: Option<&str>) -> Result<Instance, FlowLogError> {
    let all = instances(paths);
    let live: Vec<&Instance> = all.iter().filter(|i| i.alive()).collect();
    let list = |instances: &[&Instance]| {
        instances
            .iter()
            .map(|i| i.describe())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(wanted) = wanted else {
        return match live.as_slice() {
            [] => Err(FlowLogError::NoInstance {
                dir: paths.names_root(),
            }),
            [only] => Ok((*only).clone()),
            several => Err(FlowLogError::SeveralInstances {
                list: list(several),
            }),
        };
    };
    let found = if wanted.contains('/') {
        let path = PathBuf::from(wanted);
        let names_file = if path.is_dir() {
            path.join(NAMES_FILE)
        } else {
            path
        };
        let names = read_names(&names_file)?;
        Instance {
            name: names.instance,
            names_file,
            pid: Some(names.pid),
            pid_namespace: names.pid_namespace,
        }
    } else {
        all.iter()
            .find(|i| i.name == wanted)
            .cloned()
            .ok_or_else(|| FlowLogError::UnknownInstance {
                name: wanted.to_string(),
                running: if live.is_empty() {
                    "none".to_string()
                } else {
                    list(&live)
                },
            })?
    };
    if !found.alive() {
        return Err(FlowLogError::Gone {
            name: found.name.clone(),
            pid: found.pid.unwrap_or(0),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
