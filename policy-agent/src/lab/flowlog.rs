//! The lab as a published datapath: its event ring buffer pinned and its names
//! file written (`telemetry::flows::publish`) under the lab's run name, so
//! `policy-agent flows` can follow a running lab; and removal of what dead labs
//! left (`lab down`, Ctrl-C), including the bpffs mount a lab made, once no lab
//! runs.

use std::collections::BTreeSet;

use policy_common::config::{Config, CONFIG_FLAG_ALLOW_EVENTS};

use super::netns::{self, LAB_PREFIX};
use crate::{
    causes::causes,
    dataplane::Datapath,
    telemetry::flows::{
        bpffs::Release, publish::process_alive, FlowLogError, FlowPaths, Publication,
    },
};

/// The lab's `CONFIG`: the agent's conntrack timeouts, allow events on (so
/// `flows` shows what passed too), and an event rate no probe matrix reaches (a
/// lab reports every verdict; events lost anyway are counted and reported).
pub fn lab_config() -> Config {
    Config {
        events_per_second: 1_000_000,
        events_burst: 100_000,
        events_per_endpoint_per_second: 1_000_000,
        events_per_endpoint_burst: 100_000,
        flags: CONFIG_FLAG_ALLOW_EVENTS,
        ..Config::DEFAULT
    }
}

/// Pins `datapath`'s events as instance `run`. A lab that cannot publish still
/// runs (only `flows` cannot follow it), so a failure is a warning.
pub(super) fn start(datapath: &mut Datapath, run: &str) -> Option<Publication> {
    match Publication::start(datapath, &FlowPaths::system(), run) {
        Ok(publication) => Some(publication),
        Err(error) => {
            tracing::warn!(error = %causes(&error), "`policy-agent flows` cannot follow this lab");
            None
        }
    }
}

/// Removes the published names and pins of labs whose process is gone (with
/// `all`, of every lab). Returns the instances removed.
pub fn sweep(all: bool) -> Result<Vec<String>, FlowLogError> {
    let paths = FlowPaths::system();
    let mut removed = Vec::new();
    for instance in paths.instance_names() {
        if !instance.starts_with(LAB_PREFIX) {
            continue;
        }
        let dead = netns::owner_pid(&instance).is_none_or(|pid| !process_alive(pid));
        if (all || dead) && paths.remove(&instance)? {
            removed.push(instance);
        }
    }
    Ok(removed)
}

/// Removes what this process's labs published (used on Ctrl-C, when their
/// guards do not run).
pub fn delete_own() -> Result<Vec<String>, FlowLogError> {
    let paths = FlowPaths::system();
    let own = format!("{LAB_PREFIX}{}x", std::process::id());
    let mut removed = Vec::new();
    for instance in paths.instance_names() {
        if instance.starts_with(&own) && paths.remove(&instance)? {
            removed.push(instance);
        }
    }
    Ok(removed)
}

/// The pids of the lab processes running now (from their namespaces and what they
/// published). `lab down` takes them before sweeping: `--all` removes running
/// labs' namespaces, not the labs.
pub fn running_labs() -> BTreeSet<u32> {
    netns::lab_namespaces()
        .into_iter()
        .chain(FlowPaths::system().instance_names())
        .filter_map(|name| netns::owner_pid(&name))
        .filter(|pid| process_alive(*pid))
        .collect()
}

/// Unmounts the bpffs a lab mounted at `/sys/fs/bpf` unless a lab of `running`
/// still runs or something is pinned there (`bpffs::BpffsMount::release`).
pub fn release_bpffs(running: &BTreeSet<u32>) -> Result<Release, FlowLogError> {
    let still: Vec<String> = running
        .iter()
        .filter(|pid| process_alive(**pid))
        .map(|pid| format!("pid {pid}"))
        .collect();
    FlowPaths::system().bpffs_mount().release(still)
}
