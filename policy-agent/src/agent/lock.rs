//! The instance lock: `/run/podwall/v{ABI}/<instance>/agent.lock`, an exclusive
//! `flock` a running agent holds for its life (the kernel releases it when the
//! process dies, `kill -9` included). A second agent on the same pins refuses to
//! start, and `policy-agent uninstall` refuses to take enforcement off under a
//! running agent (which would attach again at its next sync), unless asked to stop
//! it first: it finds the holder in `/proc/locks`, which names it in the reader's
//! own PID namespace, so a lock held from a container is never mistaken for a
//! process of the host's with the same number.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::telemetry::flows::publish::{flock_holder, FlowPaths, AGENT_LOCK_FILE};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another policy-agent runs instance {instance} (it holds {}{}); stop it or pass another --instance", lock.display(), holder.map(|pid| format!(", pid {pid}")).unwrap_or_default())]
    Busy {
        /// The instance.
        instance: String,
        /// Its lock file.
        lock: PathBuf,
        /// The holder's pid as this process sees it, if it can.
        holder: Option<u32>,
    },
    /// The lock file could not be made or locked.
    #[error("instance lock {}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The holder did not let go after SIGTERM.
    #[error("the agent holding {} (pid {pid}) did not stop within {waited:?}", lock.display())]
    StillHeld {
        /// The lock file.
        lock: PathBuf,
        /// The holder.
        pid: u32,
        /// How long this process waited.
        waited: Duration,
    },
}

/// A held instance lock, released when dropped.
#[derive(Debug)]
pub struct InstanceLock {
    path: PathBuf,
    _lock: Flock<File>,
}

/// The lock file of `instance`.
pub fn lock_path(instance: &str) -> PathBuf {
    FlowPaths::system()
        .names_root()
        .join(instance)
        .join(AGENT_LOCK_FILE)
}

impl InstanceLock {
    /// Takes the lock of `instance` without waiting.
    pub fn acquire(instance: &str) -> Result<Self, LockError> {
        Self::acquire_at(lock_path(instance), instance)
    }

    /// Takes the lock file `path` of `instance` without waiting (another
    /// datapath version's lock: `agent::versions`). The lock is the file's: it
    /// holds across PID namespaces (agents in other pods) where `/proc/locks`
    /// cannot name the holder.
    pub fn acquire_at(path: PathBuf, instance: &str) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { path, _lock: lock }),
            Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Busy {
                instance: instance.to_string(),
                holder: holder(&path),
                lock: path,
            }),
            Err((_, errno)) => Err(io(std::io::Error::from(errno))),
        }
    }

    /// Takes the lock of `instance`; if an agent holds it, sends that agent
    /// SIGTERM (it exits leaving enforcement in place) and waits up to `patience`
    /// for it to let go.
    pub fn acquire_stopping_holder(instance: &str, patience: Duration) -> Result<Self, LockError> {
        let pid = match Self::acquire(instance) {
            Err(LockError::Busy {
                holder: Some(pid), ..
            }) => pid,
            other => return other,
        };
        tracing::info!(pid, instance, "stopping the agent that holds the instance");
        let signalled = i32::try_from(pid)
            .ok()
            .map(|raw| kill(Pid::from_raw(raw), Signal::SIGTERM));
        if let Some(Err(errno)) = signalled {
            tracing::warn!(pid, %errno, "could not signal the agent");
        }
        let started = Instant::now();
        loop {
            match Self::acquire(instance) {
                Err(LockError::Busy { .. }) if started.elapsed() < patience => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(LockError::Busy { lock, .. }) => {
                    return Err(LockError::StillHeld {
                        lock,
                        pid,
                        waited: patience,
                    })
                }
                other => return other,
            }
        }
    }

    /// Removes the lock file (still holding the lock: the next agent makes a new
    /// one), so nothing of the instance is left under `/run/podwall`.
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            // Only if empty: other files of the instance stay.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The pid (as this process sees it) holding an exclusive `flock` on `path`;
/// `None` if none does or it is not visible from here.
fn holder(path: &Path) -> Option<u32> {
    flock_holder(path).filter(|pid| *pid > 0)
}
