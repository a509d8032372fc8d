//! Datapaths another version of podwall left for this instance.
//!
//! Pins live under a directory per datapath version
//! (`/sys/fs/bpf/podwall/v<N>/<instance>`), and an agent adopts only its own
//! version's. After an upgrade (or a rollback) the previous agent's programs stay
//! attached next to this agent's: podwall's own go first and pass what they allow
//! on to the next program, so the other programs still judge every packet podwall
//! allows, against their last, frozen tables, and a policy that allows more since
//! then would stay cut short there. So once this agent is ready (every local pod
//! attached, the first sync written) and its exits and `node_sockets` are
//! attached, it removes every other version's datapath of its instance: links
//! detached, pins, state and names gone. It takes that version's instance lock
//! for the removal (the file's `flock`, which holds across the PID namespaces of
//! agents in other pods): an agent of that version that still runs the instance
//! holds it and keeps its datapath until it stops; this agent looks again later.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use policy_common::ABI_VERSION;

use super::{
    health::Health,
    lock::{InstanceLock, LockError},
    run::check_instance,
};
use crate::{
    causes::causes,
    dataplane::{version_of, Datapath, DataplaneError},
    telemetry::flows::publish::{FlowPaths, AGENT_LOCK_FILE},
};

/// How often a ready agent looks again while another version's agent still runs.
const LOOK_AGAIN: Duration = Duration::from_secs(60);
/// How often a starting agent asks whether it is ready.
const READY_POLL: Duration = Duration::from_secs(1);

/// Another version's datapath of an instance, found on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherVersion {
    /// Its datapath version (`policy_common::ABI_VERSION` of the build that made it).
    pub version: u32,
    /// Its pin directory, `<bpffs>/podwall/v<N>/<instance>` (may be absent).
    pub pin_dir: PathBuf,
    /// Its run directory (state, names, lock), `<run_root>/v<N>/<instance>`
    /// (may be absent).
    pub run_dir: PathBuf,
}

/// What became of another version's datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its links are detached and its files removed.
    Removed,
    /// An agent of that version holds its instance lock: left alone.
    StillRunning,
}

/// Why another version's datapath could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// Its instance lock could not be made or taken.
    #[error(transparent)]
    Lock(LockError),
    /// Detaching its links or removing its pins failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// A file of its run directory could not be removed.
    #[error("removing {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// The datapaths of `instance` of every version but this build's, under `paths`
/// (a version counts if it has pins or a run directory for the instance; links
/// and anything but real directories named `v<N>` are passed over).
pub fn other_versions(paths: &FlowPaths, instance: &str) -> Vec<OtherVersion> {
    if check_instance(instance).is_err() {
        return Vec::new();
    }
    let pins_parent = paths.bpffs.join("podwall");
    let mut found: Vec<(u32, String)> = [pins_parent.as_path(), paths.run_root.as_path()]
        .into_iter()
        .flat_map(|root| versions_with(root, instance))
        .filter(|(version, _)| *version != ABI_VERSION)
        .collect();
    found.sort_unstable();
    found.dedup();
    found
        .into_iter()
        .map(|(version, name)| OtherVersion {
            version,
            pin_dir: pins_parent.join(&name).join(instance),
            run_dir: paths.run_root.join(&name).join(instance),
        })
        .collect()
}

/// The version directories (`v<N>`, as named) under `root` that have an
/// `instance` directory; neither may be a symbolic link.
fn versions_with(root: &Path, instance: &str) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = version_of(&name)?;
            let own = fs::symlink_metadata(entry.path().join(instance)).ok()?;
            own.is_dir().then_some((version, name))
        })
        .collect()
}

/// Removes `other` (of `instance`) holding its instance lock, unless an agent of
/// its version holds that lock.
pub fn remove(other: &OtherVersion, instance: &str) -> Result<Outcome, RemoveError> {
    let lock = match InstanceLock::acquire_at(other.run_dir.join(AGENT_LOCK_FILE), instance) {
        Ok(lock) => lock,
        Err(LockError::Busy { .. }) => return Ok(Outcome::StillRunning),
        Err(error) => return Err(RemoveError::Lock(error)),
    };
    if fs::symlink_metadata(&other.pin_dir).is_ok_and(|meta| meta.is_dir()) {
        Datapath::uninstall(&other.pin_dir)?;
    }
    // The rest of its run directory (its names file), then the lock file.
    for entry in fs::read_dir(&other.run_dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name() == AGENT_LOCK_FILE {
            continue;
        }
        let removed = if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|source| RemoveError::Io {
            path: path.clone(),
            source,
        })?;
    }
    lock.remove_file();
    // The version directories go once no instance is left in them.
    for dir in [other.pin_dir.parent(), other.run_dir.parent()]
        .into_iter()
        .flatten()
    {
        let _ = fs::remove_dir(dir);
    }
    Ok(Outcome::Removed)
}

/// What `remove_all` saw last of each version, so a repeated look logs only
/// what changed.
type Seen = Vec<(u32, String)>;

/// Removes every other version's datapath of `instance`; true if one is left
/// (its agent still runs, or removing it failed). Logs what differs from `seen`.
fn remove_all(paths: &FlowPaths, instance: &str, seen: &mut Seen) -> bool {
    let mut now = Seen::new();
    for other in other_versions(paths, instance) {
        let said = match remove(&other, instance) {
            Ok(Outcome::Removed) => {
                tracing::info!(
                    version = other.version,
                    pins = %other.pin_dir.display(),
                    "removed the datapath another podwall version left for this instance"
                );
                continue;
            }
            Ok(Outcome::StillRunning) => "still running".to_string(),
            Err(error) => causes(&error).to_string(),
        };
        if !seen.contains(&(other.version, said.clone())) {
            tracing::warn!(
                version = other.version,
                pins = %other.pin_dir.display(),
                what = %said,
                "another podwall version's datapath of this instance stays for now (an agent of that version holds its lock, or removing it failed); looking again every minute"
            );
        }
        now.push((other.version, said));
    }
    let left = !now.is_empty();
    *seen = now;
    left
}

/// Waits until the agent is ready and its exits are attached, then removes
/// other versions' datapaths of `instance`, looking again every `LOOK_AGAIN`
/// while one is left.
pub async fn remove_when_ready(paths: FlowPaths, instance: String, health: Arc<Health>) {
    while health.readiness().is_err() || !health.exits_attached() {
        tokio::time::sleep(READY_POLL).await;
    }
    let mut seen = Seen::new();
    loop {
        let (paths, instance, mut looked) = (paths.clone(), instance.clone(), seen);
        let result = tokio::task::spawn_blocking(move || {
            let left = remove_all(&paths, &instance, &mut looked);
            (left, looked)
        })
        .await;
        match result {
            Ok((false, _)) => return,
            Ok((true, looked)) => seen = looked,
            Err(error) => {
                tracing::warn!(error = %causes(&error), "removing other versions' datapaths stopped");
                seen = Seen::new();
            }
        }
        tokio::time::sleep(LOOK_AGAIN).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(root: &Path) -> FlowPaths {
        FlowPaths {
            run_root: root.join("run"),
            bpffs: root.join("bpffs"),
            bpffs_state: root.join("state"),
        }
    }

    #[test]
    fn other_versions_of_the_instance_are_found_in_pins_and_run_directories() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let paths = paths(root.path());
        let current = format!("v{ABI_VERSION}");
        for dir in [
            format!("bpffs/podwall/{current}/agent"),
            "bpffs/podwall/v3/agent".into(),
            "bpffs/podwall/v4/other-instance".into(),
            "bpffs/podwall/vx/agent".into(),
            "run/v5/agent".into(),
            "run/v3/agent".into(),
        ] {
            fs::create_dir_all(root.path().join(dir)).unwrap_or_else(|e| panic!("{e}"));
        }
        // Links are passed over: a version directory that is one (to this
        // version's pins), and an instance directory that is one.
        std::os::unix::fs::symlink(
            root.path().join(format!("bpffs/podwall/{current}")),
            root.path().join("bpffs/podwall/v6"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        fs::create_dir_all(root.path().join("bpffs/podwall/v2")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(
            root.path().join(format!("bpffs/podwall/{current}/agent")),
            root.path().join("bpffs/podwall/v2/agent"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let found = other_versions(&paths, "agent");
        assert_eq!(found.iter().map(|o| o.version).collect::<Vec<_>>(), [3, 5]);
        assert_eq!(found[0].pin_dir, root.path().join("bpffs/podwall/v3/agent"));
        assert_eq!(found[1].run_dir, root.path().join("run/v5/agent"));
        // Names that are not one plain path component find nothing.
        for bad in ["", ".", "..", "a/b", "../agent"] {
            assert!(other_versions(&paths, bad).is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn a_version_whose_agent_holds_its_lock_stays_and_one_without_goes() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let paths = paths(root.path());
        for dir in ["run/v3/agent", "run/v4/agent"] {
            fs::create_dir_all(root.path().join(dir)).unwrap_or_else(|e| panic!("{e}"));
        }
        let lock = root.path().join("run/v3/agent").join(AGENT_LOCK_FILE);
        let file = fs::File::create(&lock).unwrap_or_else(|e| panic!("{e}"));
        let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .unwrap_or_else(|(_, e)| panic!("{e}"));
        fs::write(root.path().join("run/v4/agent/names.json"), "{}")
            .unwrap_or_else(|e| panic!("{e}"));
        let found = other_versions(&paths, "agent");
        assert!(matches!(
            remove(&found[0], "agent"),
            Ok(Outcome::StillRunning)
        ));
        assert!(root.path().join("run/v3/agent").exists());
        assert!(matches!(remove(&found[1], "agent"), Ok(Outcome::Removed)));
        assert!(
            !root.path().join("run/v4").exists(),
            "the empty version directory goes too"
        );
        drop(held);
        assert!(matches!(remove(&found[0], "agent"), Ok(Outcome::Removed)));
        assert!(other_versions(&paths, "agent").is_empty());
    }
}
