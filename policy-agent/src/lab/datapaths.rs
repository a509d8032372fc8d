//! One podwall datapath per lab node, as the DaemonSet runs one agent per node:
//! its own maps and published events, tables compiled for its own pods (every
//! other pod is a peer by its addresses and labels), its classifiers on its own
//! pods' veths and, in a lab of more than one node, on the interfaces that lead
//! to the other nodes (`fabric::exits`), where a Service connection whose
//! backend is on another node is decided before it leaves; and, as the agent
//! does, a thread that sweeps its conntrack of expired flows, without which a
//! long lab run would fill each pod's share of the table and drop new flows.

use std::{collections::BTreeMap, sync::Arc};

use super::{fabric, flowlog, netns, topology::Topology, LabError};
use crate::{
    agent::{conntrack, metrics::Metrics},
    causes::causes,
    dataplane::{
        Datapath, DataplaneError, EventReader, Frames, InterfaceIndex, LoadOptions, Stats,
        TunnelPorts,
    },
    model::{ClusterState, ObjectRef},
    policy::{compiler::compile, tables::DatapathTables},
    telemetry::flows::{clock, FlowNames, Publication},
};

/// One node's datapath and what was last written to it.
pub(super) struct NodeDatapath {
    /// The index of the node in `Topology::nodes`.
    node: usize,
    /// Its instance name for `policy-agent flows`: the run name in a lab of one
    /// node, else `<run>-<node name>`.
    instance: String,
    datapath: Datapath,
    publication: Option<Publication>,
    /// The host-side veth of each pod of this node.
    interfaces: BTreeMap<ObjectRef, InterfaceIndex>,
    tables: DatapathTables,
    /// When `tables` began to be written (`CLOCK_MONOTONIC` ns), for flow names.
    tables_since_ns: u64,
    /// The conntrack sweep (`policy-agent run`'s), stopped when this is dropped.
    _sweep: conntrack::Sweep,
}

impl NodeDatapath {
    /// Loads node `node`'s datapath with `options`, writes the node's tunnel ports
    /// and publishes its events. Nothing is attached yet.
    pub(super) fn load(
        object: &std::path::Path,
        options: &LoadOptions,
        topology: &Topology,
        node: usize,
        run: &str,
    ) -> Result<Self, LabError> {
        let netns = node_netns(topology, node)?;
        let instance = if topology.nodes.len() == 1 {
            run.to_string()
        } else {
            format!("{run}-{}", topology.nodes[node].name)
        };
        let mut datapath = Datapath::load_with(object, options)?;
        let interfaces = netns::in_netns(netns, || {
            topology
                .pods
                .iter()
                .filter(|(_, pod)| pod.node == node)
                .map(|(key, pod)| {
                    nix::net::if_::if_nametoindex(pod.host_interface.as_str())
                        .map(|index| (key.clone(), index))
                        .map_err(|source| DataplaneError::Interface {
                            interface: pod.host_interface.clone(),
                            source,
                        })
                })
                .collect::<Result<BTreeMap<_, _>, DataplaneError>>()
        })??;
        let node_ports = netns::in_netns(netns, crate::node::tunnel_ports)??;
        datapath.set_tunnel_ports(&node_ports)?;
        let publication = flowlog::start(&mut datapath, &instance);
        // The lab's pods are fixed while it runs, so no interface is ever gone.
        let sweep = conntrack::start_with(
            datapath.conntrack_sweeper()?,
            |_| false,
            Arc::new(Metrics::new()),
        )
        .map_err(|source| LabError::Sweep {
            node: topology.nodes[node].name.clone(),
            source,
        })?;
        Ok(Self {
            node,
            instance,
            datapath,
            publication,
            interfaces,
            tables: DatapathTables::default(),
            tables_since_ns: 0,
            _sweep: sweep,
        })
    }

    /// Attaches the classifiers to this node's pods' veths and to its exits, and
    /// `node_sockets` to its namespace. The lab calls it after the first
    /// `program`, so no packet meets a classifier before its pod is in
    /// `ENDPOINTS` (which would drop it as unknown).
    pub(super) fn attach(&mut self, topology: &Topology) -> Result<(), LabError> {
        let node = self.node;
        let datapath = &mut self.datapath;
        netns::in_netns(node_netns(topology, node)?, || {
            topology
                .pods
                .values()
                .filter(|pod| pod.node == node)
                .try_for_each(|pod| datapath.attach(&pod.host_interface).map(drop))?;
            fabric::exits(topology)
                .into_iter()
                .try_for_each(|exit| datapath.attach_exit(exit, Frames::Ethernet).map(drop))?;
            datapath.attach_node_sockets()
        })??;
        Ok(())
    }

    /// Compiles `state` for this node's pods and writes the tables, then
    /// republishes the names of its events.
    pub(super) fn program(
        &mut self,
        state: &ClusterState,
        topology: &Topology,
    ) -> Result<(), LabError> {
        let node = self.node;
        self.tables = compile(state, &topology.node_addresses(node), |pod| {
            topology.pods.get(&pod.key).is_some_and(|p| p.node == node)
        });
        for diagnostic in &self.tables.diagnostics {
            tracing::warn!(%diagnostic, "not enforced exactly; affected pods fail closed");
        }
        for refusal in &self.tables.refusals {
            tracing::warn!(%refusal, "policy refused: the tables cannot hold it");
        }
        for warning in crate::policy::cluster::warnings(state) {
            tracing::warn!(%warning, "ClusterNetworkPolicy");
        }
        self.write(state)
    }

    /// Writes `tables` as they are, in place of what `state` compiles to, and
    /// republishes the names of its events: for tests that need the kernel to
    /// enforce tables that disagree with the state.
    #[cfg(feature = "testing")]
    pub(super) fn write_tables(
        &mut self,
        tables: DatapathTables,
        state: &ClusterState,
    ) -> Result<(), LabError> {
        self.tables = tables;
        self.write(state)
    }

    /// Writes `self.tables` and republishes the names of its events.
    fn write(&mut self, state: &ClusterState) -> Result<(), LabError> {
        self.tables_since_ns = clock::monotonic_now_ns();
        self.datapath
            .apply(&self.tables, &self.interfaces, &BTreeMap::new())?;
        if let Some(publication) = &self.publication {
            if let Err(error) = publication.publish(&self.flow_names(state)) {
                tracing::warn!(error = %causes(&error), instance = %self.instance, "`policy-agent flows` cannot name this lab node's events: its names file is removed until a later update publishes one");
            }
        }
        Ok(())
    }

    /// The names of this node's datapath now: its pods' interfaces, every pod's
    /// addresses and the tables last applied (pin paths empty:
    /// `Publication::publish` adds them).
    pub(super) fn flow_names(&self, state: &ClusterState) -> FlowNames {
        let addresses = state
            .pods
            .values()
            .flat_map(|pod| pod.ips.iter().map(move |ip| (*ip, &pod.key)));
        FlowNames::new(
            &self.instance,
            self.tables_since_ns,
            (&self.tables, &self.datapath.rule_slots()),
            &self.interfaces,
            addresses,
        )
    }

    /// Writes the UDP ports of the node's tunnel devices into the datapath.
    pub(super) fn refresh_tunnel_ports(
        &mut self,
        topology: &Topology,
    ) -> Result<TunnelPorts, LabError> {
        let node_ports =
            netns::in_netns(node_netns(topology, self.node)?, crate::node::tunnel_ports)??;
        Ok(self.datapath.set_tunnel_ports(&node_ports)?)
    }

    /// The node's index in `Topology::nodes`.
    pub(super) fn node(&self) -> usize {
        self.node
    }

    /// Its instance name for `policy-agent flows`.
    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    /// What it published for `policy-agent flows` (`None` if it could not).
    pub(super) fn publication(&self) -> Option<&Publication> {
        self.publication.as_ref()
    }

    /// The tables last written.
    pub(super) fn tables(&self) -> &DatapathTables {
        &self.tables
    }

    /// The datapath's verdict counters.
    pub(super) fn stats(&mut self) -> Result<Stats, LabError> {
        Ok(self.datapath.stats()?)
    }

    /// A reader of the node's verdict events.
    pub(super) fn event_reader(&mut self) -> Result<EventReader, LabError> {
        Ok(self.datapath.event_reader()?)
    }
}

/// The namespace of node `node`.
fn node_netns(topology: &Topology, node: usize) -> Result<&str, LabError> {
    topology
        .nodes
        .get(node)
        .map(|n| n.netns.as_str())
        .ok_or_else(|| LabError::Layout {
            reason: format!("the lab has no node {}", node + 1),
        })
}
