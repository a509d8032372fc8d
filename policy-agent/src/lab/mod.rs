//! The local lab: a mini-cluster of one node or more built from manifests.
//! Network namespaces stand in for pods and nodes, podwall's real datapath (one
//! per node) enforces the policies, and probes show who can reach whom.
//!
//! Every pod has an IPv4 and an IPv6 address, every node one of each (the source
//! of node -> pod traffic), and ClusterIP Services are DNAT rules in every node's
//! namespace as kube-proxy's nftables mode makes them. Wires `model` ->
//! `policy::compiler` -> `dataplane` (and `services` -> nft) for each node; owns
//! its namespaces through a guard that deletes them on drop (success, error or
//! panic), and `netns::delete_own` for Ctrl-C. Publishes each node's verdict
//! events for `policy-agent flows` (`flowlog`): under the run name in a lab of
//! one node, else under `<run>-<node name>`.

pub mod addresses;
pub mod conformance;
mod datapaths;
pub mod drops;
mod error;
pub mod fabric;
pub mod flowlog;
pub mod netns;
pub mod network;
pub mod probe;
pub mod report;
mod servers;
pub mod services;
pub mod topology;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use self::{
    addresses::PodAddresses,
    datapaths::NodeDatapath,
    probe::{Connect, Family, ProbeRoute, ProbeSpec},
    report::ProbeResult,
    services::ServiceRoute,
    topology::{LabNode, Layout, Topology},
};
pub use self::{error::LabError, network::LabNetwork};
use crate::{
    dataplane::{self, EventReader, LoadOptions, Stats, TunnelPorts},
    model::{change_each, ClusterState, ObjectRef, Protocol},
    policy::{evaluator::End, probes, tables::DatapathTables},
    telemetry::flows::{FlowNames, Publication},
};

/// A running lab. Dropping it removes its published flow names and pins, stops
/// the servers, unloads the datapaths and deletes every namespace it made (the
/// Service rules go with the node namespaces).
pub struct Lab {
    network: LabNetwork,
    state: ClusterState,
    /// One per node, in node order.
    datapaths: Vec<NodeDatapath>,
    cluster_ips: BTreeMap<ObjectRef, IpAddr>,
    services: Vec<ServiceRoute>,
}

/// `state` with every pod's addresses replaced by the lab's (IPv4 then IPv6, as
/// `status.podIPs` lists a dual-stack pod's), its `spec.nodeName` set to the lab
/// node it runs on, and every Service's ClusterIP set.
fn with_lab_addresses(
    state: ClusterState,
    topology: &Topology,
    cluster_ips: &BTreeMap<ObjectRef, IpAddr>,
) -> ClusterState {
    let pod_ips: BTreeMap<ObjectRef, Vec<IpAddr>> = topology
        .pods
        .iter()
        .map(|(key, lab_pod)| (key.clone(), lab_pod.addresses.both().to_vec()))
        .collect();
    let mut state = probes::with_addresses(state, &pod_ips);
    if topology.nodes.len() > 1 {
        change_each(&mut state.pods, |key, pod| {
            if let Some(node) = topology.pods.get(key).and_then(|p| topology.node_of(p)) {
                pod.node_name = Some(node.name.clone());
            }
        });
    }
    change_each(&mut state.services, |key, service| {
        service.cluster_ip = cluster_ips.get(key).copied().or(service.cluster_ip);
    });
    state
}

/// How a lab is built beyond its manifests.
#[derive(Clone, Copy, Debug)]
pub struct LabOptions {
    /// How many nodes (each with its own datapath and Service rules), how pods
    /// are wired to their node and how pod traffic crosses between nodes.
    pub layout: Layout,
    /// The classifiers' settings (conntrack, events, marks).
    pub config: policy_common::config::Config,
    /// Load every node's datapath with the kernel debug channel on
    /// (`LoadOptions::kernel_debug`; `lab run -vv`).
    pub kernel_debug: bool,
}

impl Default for LabOptions {
    /// One node, routed pods, and the lab's event settings
    /// (`flowlog::lab_config`).
    fn default() -> Self {
        Self {
            layout: Layout::default(),
            config: flowlog::lab_config(),
            kernel_debug: false,
        }
    }
}

impl LabOptions {
    /// The default options with the shape `layout`.
    pub fn of_layout(layout: Layout) -> Self {
        Self {
            layout,
            ..Self::default()
        }
    }
}

impl Lab {
    /// Builds the lab for `state`: namespaces, listeners on every declared container
    /// port and on `extra_ports`, the datapath loaded and attached, policies applied,
    /// Services turned into DNAT rules.
    pub fn up(state: ClusterState, extra_ports: &[(u16, Protocol)]) -> Result<Self, LabError> {
        Self::up_with(state, extra_ports, &LabOptions::default())
    }

    /// `up`, on the nodes, with the pods wired and the nodes joined as `options`
    /// says, and the classifiers' settings `options.config` (`lab run`'s
    /// datapath flags).
    pub fn up_with(
        state: ClusterState,
        extra_ports: &[(u16, Protocol)],
        options: &LabOptions,
    ) -> Result<Self, LabError> {
        let network = LabNetwork::up_layout(&state, extra_ports, &[], options.layout)?;
        let topology = &network.topology;
        let pod_addresses = pod_addresses(topology);
        let cluster_ips = addresses::assign_cluster_ips(
            &state,
            &pod_addresses,
            topology.nodes.len(),
            &BTreeMap::new(),
        )?;
        let state = with_lab_addresses(state, topology, &cluster_ips);
        let object = dataplane::object::find()?;
        let load = LoadOptions {
            config: options.config,
            kernel_debug: options.kernel_debug,
            ..LoadOptions::default()
        };
        let datapaths = (0..topology.nodes.len())
            .map(|node| NodeDatapath::load(&object, &load, topology, node, &network.run))
            .collect::<Result<Vec<_>, LabError>>()?;
        let mut lab = Self {
            network,
            state,
            datapaths,
            cluster_ips,
            services: Vec::new(),
        };
        lab.program()?;
        for datapath in &mut lab.datapaths {
            datapath.attach(&lab.network.topology)?;
        }
        Ok(lab)
    }

    /// Compiles and writes every node's policy tables, then replaces every
    /// node's Service rules.
    fn program(&mut self) -> Result<(), LabError> {
        let topology = &self.network.topology;
        for datapath in &mut self.datapaths {
            datapath.program(&self.state, topology)?;
        }
        self.services = services::routes(&self.state, &topology.pods);
        for node in &topology.nodes {
            services::apply(&node.netns, &self.services)?;
        }
        Ok(())
    }

    /// The lab's run name (`pwlab-<pid>x<n>`): the prefix of its namespaces and
    /// its instance name for `policy-agent flows --instance`.
    pub fn instance(&self) -> &str {
        &self.network.run
    }

    /// What the (first) node published for `policy-agent flows` (`None` if it
    /// could not).
    pub fn publication(&self) -> Option<&Publication> {
        self.datapaths.first().and_then(NodeDatapath::publication)
    }

    /// The instance name under which each node publishes its events for
    /// `policy-agent flows --instance`, in node order: the run name in a lab of
    /// one node, else `<run>-<node name>`.
    pub fn instances(&self) -> Vec<&str> {
        self.datapaths.iter().map(NodeDatapath::instance).collect()
    }

    /// The names of the (first) node's datapath now: its pods' interfaces, every
    /// pod's addresses and the tables last applied (pin paths empty:
    /// `Publication::publish` adds them).
    pub fn flow_names(&self) -> FlowNames {
        self.node_flow_names(0).unwrap_or_default()
    }

    /// `flow_names` of node `node` (`None` when the lab has no such node).
    pub fn node_flow_names(&self, node: usize) -> Option<FlowNames> {
        Some(self.datapaths.get(node)?.flow_names(&self.state))
    }

    /// A reader of the (first) node's verdict events, in this process. Events go
    /// to one reader: while it reads, `policy-agent flows` does not see them.
    pub fn event_reader(&mut self) -> Result<EventReader, LabError> {
        self.event_readers()?
            .into_iter()
            .next()
            .map(|(_, reader)| reader)
            .ok_or_else(|| LabError::Layout {
                reason: "the lab has no node".to_string(),
            })
    }

    /// A reader of every node's verdict events, with the node's index.
    pub fn event_readers(&mut self) -> Result<Vec<(usize, EventReader)>, LabError> {
        self.datapaths
            .iter_mut()
            .map(|datapath| Ok((datapath.node(), datapath.event_reader()?)))
            .collect()
    }

    /// Replaces the cluster state (policies, labels, namespaces, Services) and
    /// reprograms the datapath and the Service rules. The set of pods must stay the
    /// same; a Service keeps its ClusterIP across updates.
    pub fn update(&mut self, state: ClusterState) -> Result<(), LabError> {
        let old: BTreeSet<&ObjectRef> = self.state.pods.keys().collect();
        let new: BTreeSet<&ObjectRef> = state.pods.keys().collect();
        if old != new {
            let detail = old
                .symmetric_difference(&new)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(LabError::PodsChanged { detail });
        }
        let topology = &self.network.topology;
        self.cluster_ips = addresses::assign_cluster_ips(
            &state,
            &pod_addresses(topology),
            topology.nodes.len(),
            &self.cluster_ips,
        )?;
        self.state = with_lab_addresses(state, &self.network.topology, &self.cluster_ips);
        self.program()
    }

    /// Writes `tables` to node `node`'s datapath as they are, in place of what
    /// the lab's state compiles to (until the next `update`): for tests that
    /// need the kernel to enforce tables that disagree with the state.
    #[cfg(feature = "testing")]
    pub fn write_tables(&mut self, node: usize, tables: DatapathTables) -> Result<(), LabError> {
        let state = &self.state;
        Self::node_datapath(&mut self.datapaths, node)?.write_tables(tables, state)
    }

    /// Node `node`'s datapath of `datapaths`.
    fn node_datapath(
        datapaths: &mut [NodeDatapath],
        node: usize,
    ) -> Result<&mut NodeDatapath, LabError> {
        datapaths.get_mut(node).ok_or_else(|| LabError::Layout {
            reason: format!("the lab has no node {}", node + 1),
        })
    }

    /// The lab's pods, sorted.
    pub fn pods(&self) -> Vec<ObjectRef> {
        self.network.topology.pods.keys().cloned().collect()
    }

    /// Names of the network namespaces this lab made (pods, then the nodes,
    /// then the fabric of a lab of several nodes).
    pub fn namespaces(&self) -> Vec<String> {
        self.network.namespaces()
    }

    /// The state being enforced: pods carry the lab's IPv4 and IPv6 addresses,
    /// Services their ClusterIPs (from the manifest or allocated by the lab).
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The tables last written to the (first) node's kernel.
    pub fn tables(&self) -> &DatapathTables {
        static EMPTY: std::sync::OnceLock<DatapathTables> = std::sync::OnceLock::new();
        self.datapaths.first().map_or_else(
            || EMPTY.get_or_init(DatapathTables::default),
            NodeDatapath::tables,
        )
    }

    /// The tables last written to node `node`'s kernel.
    pub fn node_tables(&self, node: usize) -> Option<&DatapathTables> {
        self.datapaths.get(node).map(NodeDatapath::tables)
    }

    /// The (first) node's own addresses (IPv4, IPv6).
    pub fn node_addresses(&self) -> [IpAddr; 2] {
        addresses::node_addresses()
    }

    /// The (first) node's namespace: where its host-side veths and its addresses
    /// are.
    pub fn node_netns(&self) -> &str {
        self.network.node_netns()
    }

    /// The lab's nodes, first to last.
    pub fn nodes(&self) -> &[LabNode] {
        self.network.nodes()
    }

    /// The node `pod` runs on.
    pub fn node_of(&self, pod: &ObjectRef) -> Result<&LabNode, LabError> {
        self.network.node_of(pod)
    }

    /// Writes the UDP ports of each node namespace's tunnel devices (vxlan,
    /// geneve) into its datapath, with the defaults, as the agent does on a node
    /// (`up` does it once; call it again after adding a tunnel device). Returns
    /// what it wrote on the first node.
    pub fn refresh_tunnel_ports(&mut self) -> Result<TunnelPorts, LabError> {
        let topology = &self.network.topology;
        let mut first = None;
        for datapath in &mut self.datapaths {
            let written = datapath.refresh_tunnel_ports(topology)?;
            first.get_or_insert(written);
        }
        first.ok_or_else(|| LabError::Layout {
            reason: "the lab has no node".to_string(),
        })
    }

    /// Every Service port with its backends, as the node's DNAT rules have them.
    pub fn services(&self) -> &[ServiceRoute] {
        &self.services
    }

    /// One probe from every pod to every other pod on each of `ports`; with no
    /// ports, on each destination's declared TCP and UDP container ports (declared
    /// SCTP ports cannot be probed on a kernel without SCTP and are left out). The
    /// plan `simulate` judges too (`policy::probes::plan`).
    pub fn probe_specs(&self, ports: &[(u16, Protocol)]) -> Vec<ProbeSpec> {
        probes::plan(&self.state, &self.pods(), ports, &[])
            .into_iter()
            .filter_map(|probe| match (probe.from, probe.to) {
                (End::Pod(from), End::Pod(to)) => Some(ProbeSpec {
                    from,
                    to,
                    port: probe.port,
                    protocol: probe.protocol,
                }),
                _ => None,
            })
            .collect()
    }

    /// Where each of `specs` connects to when it takes `route`: the destination
    /// pod's address of a family, or `clusterIP:port` of the Service that leads to
    /// it alone (see `ProbeRoute::Service`). Fails naming every destination that
    /// has no such Service.
    pub fn targets(
        &self,
        specs: &[ProbeSpec],
        route: ProbeRoute,
    ) -> Result<Vec<SocketAddr>, LabError> {
        let family = match route {
            ProbeRoute::Pod(family) => family,
            ProbeRoute::Service => {
                let found: Vec<Option<SocketAddr>> =
                    specs.iter().map(|s| self.service_target(s)).collect();
                let missing: BTreeSet<String> = specs
                    .iter()
                    .zip(&found)
                    .filter(|(_, found)| found.is_none())
                    .map(|(s, _)| format!("{} {}/{}", s.to, s.port, s.protocol))
                    .collect();
                if !missing.is_empty() {
                    let missing = missing.into_iter().collect::<Vec<_>>().join(", ");
                    return Err(LabError::NoService { missing });
                }
                return Ok(found.into_iter().flatten().collect());
            }
        };
        specs
            .iter()
            .map(|spec| {
                Ok(SocketAddr::new(
                    self.pod_address(&spec.to, family)?,
                    spec.port,
                ))
            })
            .collect()
    }

    /// `clusterIP:port` of the Service that leads to `spec`'s destination pod and
    /// port alone (see `ProbeRoute::Service`), if there is one.
    pub fn service_target(&self, spec: &ProbeSpec) -> Option<SocketAddr> {
        services::address_of(&self.services, &spec.to, spec.port, spec.protocol)
    }

    /// The lab's record of `pod`.
    fn lab_pod(&self, pod: &ObjectRef) -> Result<&topology::LabPod, LabError> {
        self.network.lab_pod(pod)
    }

    /// The lab address of `pod` in `family`.
    pub fn pod_address(&self, pod: &ObjectRef, family: Family) -> Result<IpAddr, LabError> {
        self.network.pod_address(pod, family)
    }

    /// Runs `f` inside `pod`'s network namespace (on a helper thread), for traffic
    /// the probes do not make: a socket bound to a chosen port, a long-lived flow.
    pub fn in_pod<T: Send>(
        &self,
        pod: &ObjectRef,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T, LabError> {
        netns::in_netns(&self.lab_pod(pod)?.netns, f)
    }

    /// The network namespace standing in for `pod`: where its sockets live, for
    /// callers that probe while the lab is being updated.
    pub fn pod_netns(&self, pod: &ObjectRef) -> Result<&str, LabError> {
        self.network.pod_netns(pod)
    }

    /// Runs probes through the real datapath to each destination's IPv4 address; a
    /// probe that gets no answer within `timeout` counts as dropped.
    pub fn probe(
        &self,
        specs: &[ProbeSpec],
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, LabError> {
        self.probe_via(specs, ProbeRoute::default(), timeout)
    }

    /// Runs probes that take `route` to their destination (its IPv4 or IPv6
    /// address, or its Service); results are keyed by pods and pod port as with
    /// `probe`. With `ProbeRoute::Service`, fails before sending anything when a
    /// destination has no Service leading to it alone.
    pub fn probe_via(
        &self,
        specs: &[ProbeSpec],
        route: ProbeRoute,
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, LabError> {
        let targets = self.targets(specs, route)?;
        self.network.probe_to(specs, &targets, timeout)
    }

    /// Serves `ports` on every node's own addresses, as a host-network pod does
    /// (until the lab goes down), for probes to a node's address (`probe_at`).
    pub fn serve_on_nodes(&mut self, ports: &[(u16, Protocol)]) -> Result<(), LabError> {
        self.network.serve_on_nodes(ports)
    }

    /// Runs probes from each spec's source pod to the matching address of
    /// `targets` (a node's address, say, where `spec.to` is a host-network pod);
    /// results are keyed by the specs as with `probe`.
    pub fn probe_at(
        &self,
        specs: &[ProbeSpec],
        targets: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, LabError> {
        self.network.probe_to(specs, targets, timeout)
    }

    /// Connects from the namespace of the node `pod` runs on, from that node's
    /// address of `family`, to `pod` on `port`/`protocol`, as a kubelet probe
    /// would; true when it got through within `timeout`.
    pub fn probe_from_node(
        &self,
        pod: &ObjectRef,
        port: u16,
        protocol: Protocol,
        family: Family,
        timeout: Duration,
    ) -> Result<bool, LabError> {
        let node = self.node_of(pod)?;
        let PodAddresses { v4, v6 } = node.addresses;
        let source = match family {
            Family::Ipv4 => IpAddr::V4(v4),
            Family::Ipv6 => IpAddr::V6(v6),
        };
        let connect = Connect {
            netns: &node.netns,
            who: "the node".to_string(),
            source: Some(source),
            target: SocketAddr::new(self.pod_address(pod, family)?, port),
            protocol,
        };
        let reached = probe::connect_all(&[connect], timeout)?;
        Ok(reached.first().copied().unwrap_or(false))
    }

    /// Sends one ICMP echo request from `from` to `to` (IPv4) and reports whether
    /// the reply came back within `timeout`.
    pub fn ping(
        &self,
        from: &ObjectRef,
        to: &ObjectRef,
        timeout: Duration,
    ) -> Result<bool, LabError> {
        probe::ping(&self.network.topology, from, to, timeout)
    }

    /// The datapaths' verdict counters, summed over the nodes.
    pub fn stats(&mut self) -> Result<Stats, LabError> {
        let mut total: Option<Stats> = None;
        for datapath in &mut self.datapaths {
            let stats = datapath.stats()?;
            match &mut total {
                None => total = Some(stats),
                Some(total) => {
                    for ((_, sum), (_, count)) in total.counters.iter_mut().zip(&stats.counters) {
                        *sum += count;
                    }
                }
            }
        }
        Ok(total.unwrap_or(Stats {
            counters: Vec::new(),
        }))
    }

    /// The verdict counters of node `node`'s datapath.
    pub fn node_stats(&mut self, node: usize) -> Result<Stats, LabError> {
        Self::node_datapath(&mut self.datapaths, node)?.stats()
    }
}

/// Every pod's addresses.
fn pod_addresses(topology: &Topology) -> BTreeMap<ObjectRef, PodAddresses> {
    topology
        .pods
        .iter()
        .map(|(key, pod)| (key.clone(), pod.addresses))
        .collect()
}
