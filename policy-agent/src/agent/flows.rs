//! What `policy-agent flows` needs to follow a running agent: the names of its
//! events (`FlowNames`), rewritten as `names.json` after every table write, in the
//! instance's run directory beside its lock, naming the `EVENTS` and `STATS` maps
//! the datapath already keeps pinned. The DaemonSet mounts both directories from
//! the host, so `kubectl exec ds/podwall -- policy-agent flows` (or a reader on
//! the node) follows that node's verdicts live.
//!
//! Unlike a lab's `Publication`, nothing is pinned here and nothing is removed
//! when the agent stops: the pins are the datapath, which enforces on without the
//! process. A reader tells a stopped agent by its pid; `policy-agent uninstall`
//! removes the file with the pins.

use std::{collections::BTreeMap, path::PathBuf};

use crate::{
    dataplane::{Datapath, InterfaceIndex},
    model::{ClusterState, ObjectRef},
    policy::tables::DatapathTables,
    telemetry::flows::{
        publish::{replace_names, FlowPaths},
        FlowNames,
    },
};

/// Writes an agent's `names.json`.
#[derive(Clone, Debug)]
pub struct FlowPublisher {
    instance: String,
    names_file: PathBuf,
    events_pin: PathBuf,
    stats_pin: PathBuf,
}

impl FlowPublisher {
    /// The publisher of `instance`, whose datapath is pinned (`None` for one that
    /// is not: nothing another process could open).
    pub fn new(paths: &FlowPaths, instance: &str, datapath: &Datapath) -> Option<Self> {
        let (events_pin, stats_pin) = datapath.pinned_event_maps()?;
        Some(Self {
            instance: instance.to_string(),
            names_file: paths.names_file(instance),
            events_pin,
            stats_pin,
        })
    }

    /// The names file.
    pub fn names_file(&self) -> &std::path::Path {
        &self.names_file
    }

    /// Replaces the names file with the names of `tables` (written to the kernel
    /// from `tables_since_ns`, monotonic) on `interfaces`, every pod of `state`
    /// named by its addresses. A failure is logged and the stale file removed
    /// (`replace_names`): enforcement never waits on it.
    pub fn publish(
        &self,
        tables_since_ns: u64,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        state: &ClusterState,
    ) {
        let addresses = state
            .pods
            .values()
            .flat_map(|pod| pod.ips.iter().map(move |ip| (*ip, &pod.key)));
        let names = FlowNames {
            events_pin: self.events_pin.clone(),
            stats_pin: self.stats_pin.clone(),
            ..FlowNames::new(
                &self.instance,
                tables_since_ns,
                tables,
                interfaces,
                addresses,
            )
        };
        if let Some(dir) = self.names_file.parent() {
            if let Err(error) = std::fs::create_dir_all(dir) {
                tracing::warn!(%error, dir = %dir.display(), "`policy-agent flows` cannot name this node's events: no run directory");
                return;
            }
        }
        if let Err(error) = replace_names(&self.names_file, &names) {
            tracing::warn!(%error, "`policy-agent flows` cannot name this node's events until a later pass publishes them");
        }
    }
}
