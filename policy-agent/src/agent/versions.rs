//! Datapaths another version of podwall left for this instance.
//!
//! Pins live under a directory per datapath version
//! (`/sys/fs/bpf/podwall/v<N>/<instance>`), and an agent adopts only its own
//! version's. After an upgrade (or a rollback) the previous agent's programs stay
//! attached next to this agent's: podwall's own go first and pass what they allow
//! on to the next program, so the older programs still judge every packet podwall
//! allows, against their last, frozen tables, and a policy that allows more since
//! then would stay cut short there. So once this agent is ready (every local pod
//! attached, the first sync written: no moment without enforcement), it removes
//! every other version's datapath of its instance: links detached, pins, state
//! and names gone. An agent of that version that still runs the instance (it
//! holds that version's instance lock, as during a rolling update with a surge)
//! keeps its datapath until it stops; this agent looks again later.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use policy_common::ABI_VERSION;

use super::health::Health;
use crate::{
    causes::causes,
    dataplane::{version_of, Datapath, DataplaneError},
    telemetry::flows::publish::{flock_holder, FlowPaths, AGENT_LOCK_FILE},
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
    /// An agent of that version holds its instance lock (pid as this process sees
    /// it, 0 if not visible): left alone.
    StillRunning(u32),
}

/// The datapaths of `instance` of every version but this build's, under `paths`
/// (a version counts if it has pins or a run directory for the instance).
pub fn other_versions(paths: &FlowPaths, instance: &str) -> Vec<OtherVersion> {
    let pins_parent = paths.bpffs.join("podwall");
    let mut versions: Vec<u32> = [pins_parent.as_path(), paths.run_root.as_path()]
        .into_iter()
        .flat_map(|root| versions_with(root, instance))
        .filter(|version| *version != ABI_VERSION)
        .collect();
    versions.sort_unstable();
    versions.dedup();
    versions
        .into_iter()
        .map(|version| OtherVersion {
            version,
            pin_dir: pins_parent.join(format!("v{version}")).join(instance),
            run_dir: paths.run_root.join(format!("v{version}")).join(instance),
        })
        .collect()
}

/// The versions `v<N>` under `root` that have an `instance` directory.
fn versions_with(root: &Path, instance: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = version_of(&entry.file_name().to_string_lossy())?;
            entry.path().join(instance).is_dir().then_some(version)
        })
        .collect()
}

/// Removes `other` unless an agent of its version still holds its lock.
pub fn remove(other: &OtherVersion) -> Result<Outcome, DataplaneError> {
    if let Some(pid) = flock_holder(&other.run_dir.join(AGENT_LOCK_FILE)) {
        return Ok(Outcome::StillRunning(pid));
    }
    if other.pin_dir.exists() {
        Datapath::uninstall(&other.pin_dir)?;
    }
    match fs::remove_dir_all(&other.run_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DataplaneError::Pinned {
                path: other.run_dir.clone(),
                what: "removing another version's run directory".into(),
                os_error: e.raw_os_error(),
                source: Some(Box::new(e)),
            })
        }
    }
    // The version directories go once no instance is left in them.
    for dir in [other.pin_dir.parent(), other.run_dir.parent()]
        .into_iter()
        .flatten()
    {
        let _ = fs::remove_dir(dir);
    }
    Ok(Outcome::Removed)
}

/// Removes every other version's datapath of `instance`; true if one is left
/// (its agent still runs).
fn remove_all(paths: &FlowPaths, instance: &str) -> bool {
    let mut left = false;
    for other in other_versions(paths, instance) {
        match remove(&other) {
            Ok(Outcome::Removed) => tracing::info!(
                version = other.version,
                pins = %other.pin_dir.display(),
                "removed the datapath another podwall version left for this instance"
            ),
            Ok(Outcome::StillRunning(pid)) => {
                left = true;
                tracing::info!(
                    version = other.version,
                    pid,
                    "an agent of another podwall version still runs this instance; its datapath stays until it stops"
                );
            }
            Err(error) => {
                left = true;
                tracing::warn!(version = other.version, error = %causes(&error), "cannot remove another version's datapath");
            }
        }
    }
    left
}

/// Waits until the agent is ready, then removes other versions' datapaths of
/// `instance`, looking again every `LOOK_AGAIN` while one is left.
pub async fn remove_when_ready(paths: FlowPaths, instance: String, health: Arc<Health>) {
    while health.readiness().is_err() {
        tokio::time::sleep(READY_POLL).await;
    }
    loop {
        let (paths, instance) = (paths.clone(), instance.clone());
        let left = tokio::task::spawn_blocking(move || remove_all(&paths, &instance))
            .await
            .unwrap_or(true);
        if !left {
            return;
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
        let found = other_versions(&paths, "agent");
        assert_eq!(found.iter().map(|o| o.version).collect::<Vec<_>>(), [3, 5]);
        assert_eq!(found[0].pin_dir, root.path().join("bpffs/podwall/v3/agent"));
        assert_eq!(found[1].run_dir, root.path().join("run/v5/agent"));
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
        assert!(matches!(remove(&found[0]), Ok(Outcome::StillRunning(_))));
        assert!(root.path().join("run/v3/agent").exists());
        assert_eq!(remove(&found[1]).ok(), Some(Outcome::Removed));
        assert!(
            !root.path().join("run/v4").exists(),
            "the empty version directory goes too"
        );
        drop(held);
        assert_eq!(remove(&found[0]).ok(), Some(Outcome::Removed));
        assert!(other_versions(&paths, "agent").is_empty());
    }
}
