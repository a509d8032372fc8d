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
mod inspect;
mod kernel_log;
mod keys;
mod maps;
pub mod object;
mod pins;
mod programs;
mod quiesce;
mod slots;
mod sys;
mod tunnels;

use std::path::PathBuf;

#[cfg(feature = "testing")]
pub use banks::ActiveMover;
pub use banks::{ApplyReport, BankContent};
pub use counters::{DropTraffic, PolicyCounters, RuleTraffic, Traffic};
pub use ct::{ConntrackSweeper, SweepReport, TrackedFlow};
pub use datapath::{Adoption, Datapath, Frames, LoadOptions, ProgramAhead};
#[cfg(feature = "testing")]
pub use datapath::{AttachTimes, AttachWay, BenchProgram, BenchRun, Hook, TestRunOutcome};
pub use event_loss::{EventsLost, PinnedStats};
pub use events::{EventReader, EventVerdict, VerdictRecord};
pub use inspect::{
    KernelVerdict, PeerReading, PinnedTables, PolicyReading, RuleSetReading, SideLookup,
    SideReading, INSPECTED_MAPS,
};
pub use kernel_log::KERNEL_LOG_TARGET;
pub use keys::{address_key, key_address, PeerPrefix, PolicyPrefix};
pub use maps::{MapUsage, Stats};
pub use pins::{version_of, RUN_ROOT, RUN_ROOT_ENV};
#[cfg(feature = "testing")]
pub use quiesce::GracePeriod;
pub use slots::RuleName;
pub use tunnels::TunnelPorts;

/// Kernel interface index of a pod's host-side veth (or of a node exit).
pub type InterfaceIndex = u32;

/// A cause beneath a `DataplaneError`: what aya, the kernel or serde reported.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    #[error("loading eBPF object {path}")]
    Load {
        /// The object file.
        path: PathBuf,
        /// What aya reported.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program is missing from the object, or the kernel rejected it.
    #[error("eBPF program {program}: {what}")]
    Program {
        /// Program name in the object.
        program: &'static str,
        /// What was being done, or what is wrong.
        what: String,
        /// What aya or the kernel reported (for a verifier rejection, with the
        /// verifier's log).
        #[source]
        source: Option<Cause>,
    },
    /// Attaching a classifier to an interface failed.
    #[error("attaching {program} to interface {interface}")]
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
    #[error("interface {interface} not found")]
    Interface {
        /// Interface name.
        interface: String,
        /// The lookup error.
        #[source]
        source: nix::Error,
    },
    /// A map is missing from the object or has the wrong type.
    #[error("eBPF map {map}: {what}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What was being done, or what is wrong.
        what: String,
        /// What aya or the kernel reported, if anything.
        #[source]
        source: Option<Cause>,
    },
    /// A pinned map could not be pinned or opened.
    #[error("pinned eBPF object {}: {what} (is a podwall datapath running, and is bpffs mounted at /sys/fs/bpf?)", path.display())]
    Pinned {
        /// The pin path on bpffs (or the state file beside the pins).
        path: PathBuf,
        /// What was being done.
        what: String,
        /// What aya or the kernel reported.
        #[source]
        source: Option<Cause>,
        /// The errno of the failed syscall, when one failed (`EACCES`/`EPERM`: the
        /// caller lacks the privilege, as opposed to a missing pin or wrong map).
        os_error: Option<i32>,
    },
    /// A map of the object, or a pinned one, has other key or value sizes than
    /// its definition in `policy_common::maps` (a layout change without an ABI
    /// bump would otherwise be read as garbage).
    #[error("eBPF map {map}: key/value sizes {}/{}, this agent's are {}/{}: a pinned map of another build is removed with `policy-agent uninstall`", found.0, found.1, want.0, want.1)]
    MapLayout {
        /// Map name.
        map: &'static str,
        /// Key and value size the kernel reports.
        found: (u32, u32),
        /// Key and value size of the definition.
        want: (u32, u32),
    },
    /// A map of the object, or a pinned one, is of another kind than its definition
    /// (an LRU `CONNTRACK` would evict flows the per-interface counts rely on).
    #[error("eBPF map {map}: of kind {found} (BPF_MAP_TYPE_*), this agent's is {want}: a pinned map of another build is removed with `policy-agent uninstall`")]
    MapKind {
        /// Map name.
        map: &'static str,
        /// The kind the kernel reports.
        found: u32,
        /// The kind of the definition.
        want: u32,
    },
    /// The tables name more rules than `RULE_COUNTERS` has slots.
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
    #[error("eBPF map {map}: {operation}")]
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
    #[error("detaching from interface {ifindex}: {what}")]
    Detach {
        /// The interface.
        ifindex: u32,
        /// What was being done, or what is wrong.
        what: String,
        /// What aya or the kernel reported, if anything.
        #[source]
        source: Option<Cause>,
    },
    /// A local pod in the tables has no interface to attach to.
    #[error("pod {pod} has no interface on this node")]
    NoInterface {
        /// The pod.
        pod: String,
    },
    /// The kernel debug channel (`LoadOptions::kernel_debug`) could not be opened.
    #[error("kernel debug channel: {what}")]
    KernelLog {
        /// What was being done, and what to do about it.
        what: &'static str,
        /// What aya-log or the system reported.
        #[source]
        source: Option<Cause>,
    },
}

impl DataplaneError {
    /// Whether the caller lacked the privilege (`EACCES`/`EPERM` opening a
    /// pin): the one failure a "run it as root" hint helps with.
    pub fn permission_denied(&self) -> bool {
        matches!(
            self,
            DataplaneError::Pinned { os_error: Some(e), .. }
                if *e == nix::libc::EACCES || *e == nix::libc::EPERM
        )
    }

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
            DataplaneError::MapLayout { .. } | DataplaneError::MapKind { .. } => "map_layout",
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

/// Whether both TCX hooks of interface `ifindex` (in the calling thread's network
/// namespace) run some program: how a benchmark outside the agent sees that a
/// new interface got its classifiers. False when a query fails (the interface is
/// gone).
#[cfg(feature = "testing")]
pub fn tcx_hooks_occupied(ifindex: InterfaceIndex) -> bool {
    [sys::BPF_TCX_INGRESS, sys::BPF_TCX_EGRESS]
        .into_iter()
        .all(|hook| sys::tcx_program_ids(ifindex, hook).is_ok_and(|ids| !ids.is_empty()))
}
