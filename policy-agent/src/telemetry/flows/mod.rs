//! Flow logs: verdict events named with pods and policies.
//!
//! - `names`: `FlowNames`, what an event's interface, addresses, endpoint id and
//!   policy ids mean (built from the tables last applied);
//! - `line`: one event named (`FlowLine`), its JSON form;
//! - `filter`, `table`: what `policy-agent flows` prints and how;
//! - `publish`: the pinned ring buffer and `names.json` a datapath's owner
//!   publishes, and how a reader finds them; `follow`: reading them live, each
//!   event named with the tables that decided it;
//! - `bpffs`: mounting bpffs when it is missing (announced and recorded) and
//!   unmounting it when `lab down` finds it unused;
//! - `clock`: event timestamps as UTC.

pub mod bpffs;
pub mod clock;
pub mod filter;
pub mod follow;
pub mod line;
pub mod names;
pub mod publish;
pub mod table;

use std::path::PathBuf;

pub use self::{
    clock::WallClock,
    filter::{FlowFilter, PodPattern},
    follow::{Batch, Follower, Notice},
    line::{DecidingRule, FlowEnd, FlowLine},
    names::FlowNames,
    publish::{FlowPaths, Instance, Publication},
};
use crate::dataplane::DataplaneError;

/// What can go wrong publishing or following flows.
#[derive(Debug, thiserror::Error)]
pub enum FlowLogError {
    /// A file or directory operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A names file could not be written or parsed.
    #[error("names file {}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// A names file of another ABI version (it should not be in this directory).
    #[error("names file {}: ABI version {found}, this policy-agent reads version {}", path.display(), policy_common::ABI_VERSION)]
    AbiMismatch {
        /// The file.
        path: PathBuf,
        /// The version it holds.
        found: u32,
    },
    /// bpffs was not mounted and mounting it failed.
    #[error("mounting bpffs at {} (pinning the event ring buffer needs bpffs there: `mount -t bpf bpf {}`)", path.display(), path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// Unmounting the bpffs podwall mounted failed.
    #[error("unmounting bpffs at {} (podwall mounted it; `umount {}` once nothing uses it)", path.display(), path.display())]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// An instance name that cannot be a directory name.
    #[error("'{name}' cannot name a datapath instance (no '/', not empty, no leading '.')")]
    BadInstance {
        /// The name.
        name: String,
    },
    /// No datapath publishes its flows.
    #[error("no podwall datapath is running (nothing published under {}); a lab publishes its datapath while it runs (`policy-agent lab run`, `lab tour`)", dir.display())]
    NoInstance {
        /// The directory searched.
        dir: PathBuf,
    },
    /// Several datapaths publish; the reader must pick one.
    #[error("several podwall datapaths are running; pick one with --instance: {list}")]
    SeveralInstances {
        /// `name (pid N)` of each.
        list: String,
    },
    /// `--instance` names none that exists.
    #[error("no podwall datapath instance '{name}' (running: {running})")]
    UnknownInstance {
        /// The name asked for.
        name: String,
        /// The running ones.
        running: String,
    },
    /// The instance's owner is no longer running.
    #[error("datapath instance '{name}' is gone (its owner, pid {pid}, has exited); `policy-agent lab down` removes what a lab left")]
    Gone {
        /// The instance.
        name: String,
        /// Its owner's pid.
        pid: u32,
    },
    /// The kernel side failed (pinning, opening the pin).
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

impl FlowLogError {
    /// Whether the caller lacked the privilege (`EACCES`/`EPERM` opening a file or
    /// a pin): the one failure a "run it as root" hint helps with.
    pub fn permission_denied(&self) -> bool {
        const DENIED: [i32; 2] = [nix::libc::EACCES, nix::libc::EPERM];
        match self {
            FlowLogError::Io { source, .. } => {
                source.raw_os_error().is_some_and(|e| DENIED.contains(&e))
            }
            FlowLogError::Dataplane(error) => error.permission_denied(),
            _ => false,
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            FlowLogError::Io { .. } => "io",
            FlowLogError::Json { .. } => "json",
            FlowLogError::AbiMismatch { .. } => "abi_mismatch",
            FlowLogError::Mount { .. } => "mount",
            FlowLogError::Unmount { .. } => "unmount",
            FlowLogError::BadInstance { .. } => "bad_instance",
            FlowLogError::NoInstance { .. } => "no_instance",
            FlowLogError::SeveralInstances { .. } => "several_instances",
            FlowLogError::UnknownInstance { .. } => "unknown_instance",
            FlowLogError::Gone { .. } => "gone",
            FlowLogError::Dataplane(_) => "dataplane",
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(os_error: Option<i32>) -> FlowLogError {
        FlowLogError::Dataplane(DataplaneError::Pinned {
            path: "/sys/fs/bpf/podwall/x/events".into(),
            what: "opening".into(),
            source: None,
            os_error,
        })
    }

    #[test]
    fn only_eacces_and_eperm_count_as_permission_denied() {
        assert!(pinned(Some(nix::libc::EPERM)).permission_denied());
        assert!(pinned(Some(nix::libc::EACCES)).permission_denied());
        assert!(!pinned(Some(nix::libc::ENOENT)).permission_denied());
        assert!(!pinned(None).permission_denied());
        let io = |errno| FlowLogError::Io {
            what: "reading",
            path: "/run/podwall/v4/x/names.json".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert!(io(nix::libc::EACCES).permission_denied());
        assert!(!io(nix::libc::ENOENT).permission_denied());
        let abi = FlowLogError::AbiMismatch {
            path: "/run/podwall/v4/x/names.json".into(),
            found: 2,
        };
        assert!(!abi.permission_denied());
    }
}
