//! The only code that touches BPF: finds and loads the `policy-ebpf` object,
//! attaches its classifiers to pod interfaces and writes `DatapathTables` into its
//! maps, one bank at a time (`banks.rs`), pinned so that enforcement outlives the
//! agent (`pins.rs`). Imports `policy` (for the tables) and `policy_common`; never
//! `source`.

mod banks;
mod counters;
mod ct;
mod datapath;
mod event_loss;
mod events;
mod exits;
mod kernel_log;
mod keys;
mod maps;
pub mod object;
mod order;
mod pins;
mod quiesce;
mod slots;
mod sockets;
mod sys;
#[cfg(feature = "testing")]
mod test_run;
mod tunnels;

use std::path::PathBuf;

pub use banks::{ApplyReport, BankContent, PeerPrefix, PolicyPrefix};
pub use counters::{DropTraffic, PolicyCounters, RuleTraffic, Traffic};
pub use ct::{ConntrackSweeper, SweepReport, TrackedFlow};
pub use datapath::{Datapath, InterfaceIndex, LoadOptions};
pub use event_loss::{EventsLost, PinnedStats};
pub use events::{EventReader, EventVerdict, VerdictRecord};
pub use exits::Frames;
pub use kernel_log::KERNEL_LOG_TARGET;
pub use keys::{address_key, key_address};
pub use maps::{MapUsage, Stats};
pub use order::ProgramAhead;
pub use pins::Adoption;
#[cfg(feature = "testing")]
pub use test_run::{BenchProgram, BenchRun, Hook, TestRunOutcome};
pub use tunnels::TunnelPorts;

/// Everything that can go wrong between the agent and the kernel.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// No eBPF object in any of the places the agent looks.
    #[error("the eBPF object was not found (looked at: {}); build it with `cargo xtask build-ebpf` or set PODWALL_BPF_OBJECT", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    ObjectNotFound {
        /// Every path tried, in order.
        searched: Vec<PathBuf>,
    },
    /// The object could not be parsed or loaded.
    #[error("loading eBPF object {path}: {source}")]
    Load {
        /// The object file.
        path: PathBuf,
        /// What aya reported.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program is missing from the object, or the kernel rejected it.
    #[error("eBPF program {program}: {message}")]
    Program {
        /// Program name in the object.
        program: &'static str,
        /// What went wrong (for a verifier rejection, the verifier's log).
        message: String,
    },
    /// Attaching a classifier to an interface failed.
    #[error("attaching {program} to interface {interface}: {source}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Interface name.
        interface: String,
        /// What the kernel said.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The interface does not exist in the current network namespace.
    #[error("interface {interface} not found: {source}")]
    Interface {
        /// Interface name.
        interface: String,
        /// The lookup error.
        #[source]
        source: nix::Error,
    },
    /// A map is missing from the object or has the wrong type.
    #[error("eBPF map {map}: {message}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A pinned map could not be pinned or opened.
    #[error("pinned eBPF map {}: {message} (is a podwall datapath running, and is bpffs mounted at /sys/fs/bpf?)", path.display())]
    Pinned {
        /// The pin path on bpffs.
        path: PathBuf,
        /// What went wrong.
        message: String,
        /// The errno of the failed syscall, when one failed (`EACCES`/`EPERM`: the
        /// caller lacks the privilege, as opposed to a missing pin or wrong map).
        os_error: Option<i32>,
    },
    /// The tables name more allow rules than `RULE_COUNTERS` has slots.
    #[error("{rules} policy rules have entries, but the rule counters hold {capacity}; the tables were not written")]
    TooManyRules {
        /// Rules with `POLICY` entries.
        rules: usize,
        /// `RULE_COUNTERS_MAX`.
        capacity: u32,
    },
    /// The tables want more entries in one bank of a banked map than a bank holds
    /// (the map holds `BANKS` times as many, but each bank gets only its share).
    #[error("eBPF map {map}: the tables want {entries} entries, but one bank holds {capacity}; nothing was written, the previous state stays active")]
    BankFull {
        /// Map name.
        map: &'static str,
        /// Entries the tables want in it.
        entries: usize,
        /// Per-bank capacity (`max_entries` over `BANKS`).
        capacity: u32,
    },
    /// An endpoint id of the tables is not below `PENDING_ENDPOINT_ID`: pending
    /// interfaces, which carry that id, would get its allows.
    #[error("endpoint id {endpoint_id} of {owner} is not below {limit} (the id of pending interfaces, which would get its allows); nothing was written, the previous state stays active")]
    EndpointId {
        /// The offending id.
        endpoint_id: u32,
        /// What carries it (a pod, or a `POLICY` or isolation entry).
        owner: String,
        /// `PENDING_ENDPOINT_ID`.
        limit: u32,
    },
    /// Some maps of a pinned datapath are pinned and some are not: it can be
    /// neither adopted nor replaced without detaching the links that still
    /// enforce its last state.
    #[error("the pinned datapath at {} is incomplete (missing maps: {}); its pinned links keep enforcing its last state and nothing was removed; `policy-agent uninstall --instance {instance}` removes it to start over", dir.display(), missing.join(", "))]
    IncompletePins {
        /// The pin directory.
        dir: PathBuf,
        /// The instance (the directory's last component).
        instance: String,
        /// Maps of `PINNED_MAPS` without a pin.
        missing: Vec<&'static str>,
    },
    /// Reading or writing a map entry failed (for example: the map is full).
    #[error("eBPF map {map}: {operation}: {source}")]
    MapOp {
        /// Map name.
        map: &'static str,
        /// What was being done.
        operation: &'static str,
        /// What the kernel said.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Detaching the classifiers from an interface failed.
    #[error("detaching from interface {ifindex}: {message}")]
    Detach {
        /// The interface.
        ifindex: u32,
        /// What went wrong.
        message: String,
    },
    /// A local pod in the tables has no interface to attach to.
    #[error("pod {pod} has no interface on this node")]
    NoInterface {
        /// The pod.
        pod: String,
    },
    /// The kernel debug channel (`LoadOptions::kernel_debug`) could not be opened.
    #[error("kernel debug channel: {message}")]
    KernelLog {
        /// What went wrong, and what to do about it.
        message: String,
    },
}

impl DataplaneError {
    /// A short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DataplaneError::ObjectNotFound { .. } => "object_not_found",
            DataplaneError::Load { .. } => "load",
            DataplaneError::Program { .. } => "program",
            DataplaneError::Attach { .. } => "attach",
            DataplaneError::Detach { .. } => "detach",
            DataplaneError::Interface { .. } => "interface",
            DataplaneError::Map { .. } => "map",
            DataplaneError::TooManyRules { .. } => "too_many_rules",
            DataplaneError::BankFull { .. } => "bank_full",
            DataplaneError::EndpointId { .. } => "endpoint_id",
            DataplaneError::IncompletePins { .. } => "incomplete_pins",
            DataplaneError::Pinned { .. } => "pinned",
            DataplaneError::MapOp { .. } => "map_op",
            DataplaneError::NoInterface { .. } => "no_interface",
            DataplaneError::KernelLog { .. } => "kernel_log",
        }
    }
}
