//! bpffs at `/sys/fs/bpf`, where a datapath's owner pins its maps for readers.
//!
//! Mounting it changes the host, so podwall says so and leaves a record:
//! 1. a publisher that finds no bpffs there mounts one, warns on stderr, and
//!    writes the marker `/run/podwall/bpffs-mounted`;
//! 2. the mount outlives the lab (another lab or `flows` may use it);
//! 3. `lab down` unmounts it when the marker exists, no lab runs, and nothing is
//!    pinned on it (neither podwall's nor anyone else's pins), then removes the
//!    marker; otherwise it says what keeps it mounted.
//!
//! The marker and the lock that serializes mounting and unmounting sit in a fixed
//! directory (`HOST_STATE_DIR`), not under `PODWALL_RUN_DIR`: there is one
//! `/sys/fs/bpf`, so every run directory must share them.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use nix::{
    fcntl::{Flock, FlockArg},
    mount::{mount, umount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};

use super::FlowLogError;

/// Where the bpffs marker and lock live, whatever `PODWALL_RUN_DIR` says.
pub const HOST_STATE_DIR: &str = "/run/podwall";
/// The marker: present while a bpffs podwall mounted is mounted.
pub const MOUNTED_MARKER: &str = "bpffs-mounted";
/// The lock serializing mount, unmount and the checks around them.
pub const LOCK_FILE: &str = "bpffs.lock";

/// What the kernel itself puts at the root of every bpffs it mounts (the
/// `bpf_preload` iterators): nobody's pins.
const KERNEL_FILES: [&str; 2] = ["maps.debug", "progs.debug"];

/// At most this many pins are named when pins keep bpffs mounted.
const PINS_NAMED: usize = 5;

/// A bpffs mount point and where podwall records mounting it
/// (`FlowPaths::bpffs_mount`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpffsMount {
    /// The mount point (`/sys/fs/bpf`).
    pub mount_point: PathBuf,
    /// The directory of the marker and the lock (`HOST_STATE_DIR`).
    pub state_dir: PathBuf,
}

/// What `BpffsMount::release` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    /// No marker: podwall did not mount what is there (or nothing is); untouched.
    NotOurs,
    /// Unmounted, marker removed.
    Unmounted,
    /// The marker was left but bpffs is no longer mounted there (unmounted by
    /// hand); the marker is removed.
    AlreadyUnmounted,
    /// Kept mounted: these labs still run.
    KeptForLabs(Vec<String>),
    /// Kept mounted: these are pinned on it (the first few).
    KeptForPins(Vec<PathBuf>),
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FlowLogError {
    let path = path.to_path_buf();
    move |source| FlowLogError::Io { what, path, source }
}

/// Files (pins) anywhere under bpffs root `root`, up to `limit`, sorted;
/// directories alone hold nothing, nor do the kernel's own files at the root
/// (`KERNEL_FILES`).
pub fn pinned_files(root: &Path, limit: usize) -> Vec<PathBuf> {
    let kernel: Vec<PathBuf> = KERNEL_FILES.iter().map(|f| root.join(f)).collect();
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                _ if kernel.contains(&entry.path()) => {}
                _ => found.push(entry.path()),
            }
        }
    }
    found.sort();
    found.truncate(limit);
    found
}

/// What `release` should do, given whether the marker exists, whether bpffs is
/// mounted, the labs still running and what is pinned.
fn decide(marker: bool, mounted: bool, labs: Vec<String>, pins: Vec<PathBuf>) -> Release {
    if !marker {
        Release::NotOurs
    } else if !mounted {
        Release::AlreadyUnmounted
    } else if !labs.is_empty() {
        Release::KeptForLabs(labs)
    } else if !pins.is_empty() {
        Release::KeptForPins(pins)
    } else {
        Release::Unmounted
    }
}

impl BpffsMount {
    /// The marker file.
    pub fn marker(&self) -> PathBuf {
        self.state_dir.join(MOUNTED_MARKER)
    }

    /// Whether bpffs is mounted at the mount point.
    pub fn is_mounted(&self) -> bool {
        statfs(&self.mount_point).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
    }

    fn lock(&self) -> Result<Flock<File>, FlowLogError> {
        fs::create_dir_all(&self.state_dir).map_err(io_error("creating", &self.state_dir))?;
        let path = self.state_dir.join(LOCK_FILE);
        let file = File::create(&path).map_err(io_error("creating", &path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| FlowLogError::Io {
            what: "locking",
            path,
            source: errno.into(),
        })
    }

    /// Mounts bpffs unless one is there, then warns and writes the marker. The
    /// lock keeps two publishers from stacking two mounts (the second would hide
    /// the first one's pins) and `lab down` from unmounting meanwhile.
    pub fn ensure(&self) -> Result<(), FlowLogError> {
        if self.is_mounted() {
            return Ok(());
        }
        let _lock = self.lock()?;
        if self.is_mounted() {
            return Ok(());
        }
        mount(
            Some("bpf"),
            &self.mount_point,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| FlowLogError::Mount {
            path: self.mount_point.clone(),
            source,
        })?;
        let marker = self.marker();
        tracing::warn!(
            "podwall mounted bpffs at {} (it was not mounted; flow logs pin their maps \
             there); it stays mounted after the lab ends, recorded in {}; \
             `policy-agent lab down` unmounts it once no lab runs",
            self.mount_point.display(),
            marker.display()
        );
        let note = format!(
            "podwall (pid {}) mounted bpffs at {}\n",
            std::process::id(),
            self.mount_point.display()
        );
        fs::write(&marker, note).map_err(io_error("writing", &marker))
    }

    /// Unmounts the bpffs podwall mounted (the marker says so) unless `labs` (the
    /// labs still running) or pins still use it; see `Release`.
    pub fn release(&self, labs: Vec<String>) -> Result<Release, FlowLogError> {
        let _lock = self.lock()?;
        let marker = self.marker();
        let mounted = self.is_mounted();
        let pins = if mounted {
            pinned_files(&self.mount_point, PINS_NAMED)
        } else {
            Vec::new()
        };
        let release = decide(marker.exists(), mounted, labs, pins);
        if release == Release::Unmounted {
            umount(&self.mount_point).map_err(|source| FlowLogError::Unmount {
                path: self.mount_point.clone(),
                source,
            })?;
        }
        if matches!(release, Release::Unmounted | Release::AlreadyUnmounted) {
            fs::remove_file(&marker).map_err(io_error("removing", &marker))?;
        }
        Ok(release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mount_podwall_made_and_nothing_uses_is_unmounted() {
        let lab = || vec!["pwlab-7x0".to_string()];
        let pin = || vec![PathBuf::from("/sys/fs/bpf/cilium/x")];
        assert_eq!(decide(false, true, vec![], vec![]), Release::NotOurs);
        assert_eq!(decide(false, true, lab(), pin()), Release::NotOurs);
        assert_eq!(
            decide(true, false, vec![], vec![]),
            Release::AlreadyUnmounted
        );
        assert_eq!(
            decide(true, true, lab(), pin()),
            Release::KeptForLabs(lab())
        );
        assert_eq!(
            decide(true, true, vec![], pin()),
            Release::KeptForPins(pin())
        );
        assert_eq!(decide(true, true, vec![], vec![]), Release::Unmounted);
    }

    #[test]
    fn pinned_files_are_found_at_any_depth_and_empty_directories_are_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path();
        let empty = root.join("podwall/v4/pwlab-1x0");
        fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
        for name in KERNEL_FILES {
            fs::write(root.join(name), b"").unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(pinned_files(root, 5).is_empty());
        // The kernel's names count deeper down: only the root's are the kernel's.
        fs::write(empty.join("maps.debug"), b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pinned_files(root, 5), vec![empty.join("maps.debug")]);
        fs::remove_file(empty.join("maps.debug")).unwrap_or_else(|e| panic!("{e}"));
        let deep = root.join("podwall/v4/pwlab-2x0");
        fs::create_dir_all(&deep).unwrap_or_else(|e| panic!("{e}"));
        for name in ["events", "stats"] {
            fs::write(deep.join(name), b"").unwrap_or_else(|e| panic!("{e}"));
        }
        fs::write(root.join("other"), b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pinned_files(root, 5),
            vec![root.join("other"), deep.join("events"), deep.join("stats")]
        );
        assert_eq!(pinned_files(root, 1), vec![root.join("other")]);
    }

    #[test]
    fn release_without_the_marker_touches_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mount = BpffsMount {
            mount_point: dir.path().join("bpf"),
            state_dir: dir.path().join("state"),
        };
        assert_eq!(mount.release(vec![]).ok(), Some(Release::NotOurs));
        // A marker left over a mount point that is no bpffs is cleared.
        fs::write(mount.marker(), b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mount.release(vec![]).ok(), Some(Release::AlreadyUnmounted));
        assert!(!mount.marker().exists());
    }
}
