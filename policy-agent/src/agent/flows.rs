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
    causes::causes,
    dataplane::{Datapath, InterfaceIndex, RuleName},
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
    maps_dir: PathBuf,
    /// What the file holds now (`None`: unknown, written at the next pass).
    written: Option<FlowNames>,
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
            maps_dir: datapath.pinned_maps_dir()?,
            written: None,
        })
    }

    /// The names file.
    pub fn names_file(&self) -> &std::path::Path {
        &self.names_file
    }

    /// Replaces the names file with the names of `tables` (written to the kernel
    /// from `tables_since_ns`, monotonic) and their rules' counter slots
    /// (`Datapath::rule_slots`) on `interfaces`, every pod of `state`
    /// named by its addresses, unless it already holds the same names (then it
    /// keeps its older `tables_since_ns`, which names the same events alike). A
    /// failure is logged and the stale file removed (`replace_names`):
    /// enforcement never waits on it.
    pub fn publish(
        &mut self,
        tables_since_ns: u64,
        tables: (&DatapathTables, &BTreeMap<u32, RuleName>),
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
            maps_dir: self.maps_dir.clone(),
            ..FlowNames::new(
                &self.instance,
                tables_since_ns,
                tables,
                interfaces,
                addresses,
            )
        };
        let unchanged = self.written.as_ref().is_some_and(|written| {
            FlowNames {
                tables_since_ns: written.tables_since_ns,
                ..names.clone()
            } == *written
        });
        if unchanged {
            return;
        }
        self.written = None;
        if let Some(dir) = self.names_file.parent() {
            if let Err(error) = std::fs::create_dir_all(dir) {
                tracing::warn!(error = %causes(&error), dir = %dir.display(), "`policy-agent flows` cannot name this node's events: no run directory");
                return;
            }
        }
        match replace_names(&self.names_file, &names) {
            Ok(()) => self.written = Some(names),
            Err(error) => {
                tracing::warn!(error = %causes(&error), "`policy-agent flows` cannot name this node's events until a later pass publishes them")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::builders, telemetry::flows::publish::read_names};

    fn publisher(dir: &std::path::Path) -> FlowPublisher {
        FlowPublisher {
            instance: "agent".into(),
            names_file: dir.join("agent/names.json"),
            events_pin: "/sys/fs/bpf/podwall/test/agent/maps/EVENTS".into(),
            stats_pin: "/sys/fs/bpf/podwall/test/agent/maps/STATS".into(),
            maps_dir: "/sys/fs/bpf/podwall/test/agent/maps".into(),
            written: None,
        }
    }

    #[test]
    fn names_are_rewritten_when_they_change_and_only_then() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut flows = publisher(dir.path());
        let tables = DatapathTables::default();
        let slots = BTreeMap::new();
        let web = builders::pod("shop", "web").ip("10.0.0.2").build();
        let state = builders::cluster().pod(web.clone()).build();
        let interfaces = BTreeMap::from([(web.key.clone(), 7)]);
        flows.publish(100, (&tables, &slots), &interfaces, &state);
        let first = read_names(flows.names_file()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.tables_since_ns, 100);
        assert_eq!(
            first.interfaces.get(&7).map(String::as_str),
            Some("shop/web")
        );
        assert!(first.events_pin.ends_with("maps/EVENTS"));

        // The same names: the file keeps the tables' first moment.
        flows.publish(200, (&tables, &slots), &interfaces, &state);
        let same = read_names(flows.names_file()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(same.tables_since_ns, 100);

        // A new pod address: rewritten.
        let state = builders::cluster()
            .pod(web)
            .pod(builders::pod("shop", "db").ip("10.0.0.3").build())
            .build();
        flows.publish(300, (&tables, &slots), &interfaces, &state);
        let changed = read_names(flows.names_file()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(changed.tables_since_ns, 300);
        assert_eq!(changed.pods.len(), 2);
    }
}
