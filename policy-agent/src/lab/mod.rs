//! The local lab: a one-node mini-cluster built from manifests. Network namespaces
//! stand in for pods, podwall's real datapath enforces the policies, and probes
//! show who can reach whom.
//!
//! Every pod has an IPv4 and an IPv6 address, the node has one of each (the source
//! of node -> pod traffic), and ClusterIP Services are DNAT rules in the node
//! namespace as kube-proxy's nftables mode makes them. Wires `model` ->
//! `policy::compiler` -> `dataplane` (and `services` -> nft) for a single node; owns
//! its namespaces through a guard that deletes them on drop (success, error or
//! panic), and `netns::delete_own` for Ctrl-C. Publishes its verdict events for
//! `policy-agent flows` under its run name (`flowlog`).

pub mod addresses;
pub mod conformance;
pub mod drops;
mod error;
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
    addresses::{PodAddresses, NODE_V4, NODE_V6},
    probe::{Connect, Family, ProbeRoute, ProbeSpec},
    report::ProbeResult,
    services::ServiceRoute,
    topology::{Topology, TopologyKind},
};
pub use self::{error::LabError, network::LabNetwork};
use crate::{
    dataplane::{
        self, Datapath, DataplaneError, EventReader, InterfaceIndex, LoadOptions, Stats,
        TunnelPorts,
    },
    model::{ClusterState, ObjectRef, Protocol},
    policy::{compiler::compile, evaluator::Endpoint, probes, tables::DatapathTables},
    telemetry::flows::{clock, FlowNames, Publication},
};

/// A running lab. Dropping it removes its published flow names and pin, stops the
/// servers, unloads the datapath and deletes every namespace it made (the Service
/// rules go with the node namespace).
pub struct Lab {
    network: LabNetwork,
    publication: Option<Publication>,
    state: ClusterState,
    tables: DatapathTables,
    /// When `tables` began to be written (`CLOCK_MONOTONIC` ns), for flow names.
    tables_since_ns: u64,
    datapath: Datapath,
    interfaces: BTreeMap<ObjectRef, InterfaceIndex>,
    cluster_ips: BTreeMap<ObjectRef, IpAddr>,
    services: Vec<ServiceRoute>,
}

/// `state` with every pod's addresses replaced by the lab's (IPv4 then IPv6, as
/// `status.podIPs` lists a dual-stack pod's) and every Service's ClusterIP set.
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
    for (key, service) in &mut state.services {
        service.cluster_ip = cluster_ips.get(key).copied().or(service.cluster_ip);
    }
    state
}

/// How a lab is built beyond its manifests.
#[derive(Clone, Copy, Debug)]
pub struct LabOptions {
    /// How pods are wired to the node namespace.
    pub topology: TopologyKind,
    /// The classifiers' settings (conntrack, events, marks).
    pub config: policy_common::config::Config,
}

impl Default for LabOptions {
    /// Routed pods, and the lab's event settings (`flowlog::lab_config`).
    fn default() -> Self {
        Self {
            topology: TopologyKind::Routed,
            config: flowlog::lab_config(),
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

    /// `up`, with the pods wired as `options.topology` says (routed, or ports of a
    /// bridge) and the classifiers' settings `options.config` (`lab run`'s
    /// datapath flags).
    pub fn up_with(
        state: ClusterState,
        extra_ports: &[(u16, Protocol)],
        options: &LabOptions,
    ) -> Result<Self, LabError> {
        let network = LabNetwork::up_with(&state, extra_ports, &[], options.topology)?;
        let pod_addresses = network
            .topology
            .pods
            .iter()
            .map(|(key, pod)| (key.clone(), pod.addresses))
            .collect();
        let cluster_ips = addresses::assign_cluster_ips(&state, &pod_addresses, &BTreeMap::new())?;
        let state = with_lab_addresses(state, &network.topology, &cluster_ips);
        let object = dataplane::object::find()?;
        let options = LoadOptions {
            config: options.config,
            ..LoadOptions::default()
        };
        let mut datapath = Datapath::load_with(&object, &options)?;
        let topology = &network.topology;
        let interfaces = netns::in_netns(&topology.node, || {
            topology
                .pods
                .iter()
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
        let node_ports = netns::in_netns(&topology.node, crate::node::tunnel_ports)??;
        datapath.set_tunnel_ports(&node_ports)?;
        let publication = flowlog::start(&mut datapath, &network.run);
        let mut lab = Self {
            network,
            publication,
            state,
            tables: DatapathTables::default(),
            tables_since_ns: 0,
            datapath,
            interfaces,
            cluster_ips,
            services: Vec::new(),
        };
        lab.program()?;
        lab.attach()?;
        Ok(lab)
    }

    /// Attaches the classifiers to every pod's host-side interface. `up` calls it
    /// after the first `program`, so no packet meets a classifier before its pod is
    /// in `ENDPOINTS` (which would drop it as an unknown endpoint).
    fn attach(&mut self) -> Result<(), LabError> {
        let Self {
            network, datapath, ..
        } = self;
        let topology = &network.topology;
        netns::in_netns(&topology.node, || {
            topology
                .pods
                .values()
                .try_for_each(|pod| datapath.attach(&pod.host_interface).map(drop))
        })??;
        Ok(())
    }

    /// Compiles and writes the policy tables, then replaces the Service rules.
    fn program(&mut self) -> Result<(), LabError> {
        let node_addresses = self.network.topology.node_addresses();
        self.tables = compile(&self.state, &node_addresses, |pod| {
            self.network.topology.pods.contains_key(&pod.key)
        });
        for diagnostic in &self.tables.diagnostics {
            tracing::warn!(%diagnostic, "not enforced exactly; affected pods fail closed");
        }
        for refusal in &self.tables.refusals {
            tracing::warn!(%refusal, "policy refused: the tables cannot hold it");
        }
        self.tables_since_ns = clock::monotonic_now_ns();
        self.datapath
            .apply(&self.tables, &self.interfaces, &BTreeMap::new())?;
        if let Some(publication) = &self.publication {
            if let Err(error) = publication.publish(&self.flow_names()) {
                tracing::warn!(%error, "`policy-agent flows` cannot name this lab's events: its names file is removed until a later update publishes one");
            }
        }
        self.services = services::routes(&self.state, &self.network.topology.pods);
        services::apply(&self.network.topology.node, &self.services)?;
        Ok(())
    }

    /// The lab's run name (`pwlab-<pid>x<n>`): the prefix of its namespaces and
    /// its instance name for `policy-agent flows --instance`.
    pub fn instance(&self) -> &str {
        &self.network.run
    }

    /// What the lab published for `policy-agent flows` (`None` if it could not).
    pub fn publication(&self) -> Option<&Publication> {
        self.publication.as_ref()
    }

    /// The names of the lab's datapath now: pod interfaces and addresses, and the
    /// tables last applied (pin paths empty: `Publication::publish` adds them).
    pub fn flow_names(&self) -> FlowNames {
        let addresses = self
            .state
            .pods
            .values()
            .flat_map(|pod| pod.ips.iter().map(move |ip| (*ip, &pod.key)));
        FlowNames::new(
            &self.network.run,
            self.tables_since_ns,
            &self.tables,
            &self.interfaces,
            addresses,
        )
    }

    /// A reader of the datapath's verdict events, in this process. Events go to
    /// one reader: while it reads, `policy-agent flows` does not see them.
    pub fn event_reader(&mut self) -> Result<EventReader, LabError> {
        Ok(self.datapath.event_reader()?)
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
        let pods: BTreeMap<ObjectRef, PodAddresses> = self
            .network
            .topology
            .pods
            .iter()
            .map(|(key, pod)| (key.clone(), pod.addresses))
            .collect();
        self.cluster_ips = addresses::assign_cluster_ips(&state, &pods, &self.cluster_ips)?;
        self.state = with_lab_addresses(state, &self.network.topology, &self.cluster_ips);
        self.program()
    }

    /// The lab's pods, sorted.
    pub fn pods(&self) -> Vec<ObjectRef> {
        self.network.topology.pods.keys().cloned().collect()
    }

    /// Names of the network namespaces this lab made (pods, then the node).
    pub fn namespaces(&self) -> Vec<String> {
        self.network.topology.namespaces()
    }

    /// The state being enforced: pods carry the lab's IPv4 and IPv6 addresses,
    /// Services their ClusterIPs (from the manifest or allocated by the lab).
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The tables last written to the kernel.
    pub fn tables(&self) -> &DatapathTables {
        &self.tables
    }

    /// The node's own addresses (IPv4, IPv6): the source of `probe_from_node`.
    pub fn node_addresses(&self) -> [IpAddr; 2] {
        addresses::node_addresses()
    }

    /// The node namespace: where the host-side veths and the node's addresses are.
    pub fn node_netns(&self) -> &str {
        self.network.node_netns()
    }

    /// Writes the UDP ports of the node namespace's tunnel devices (vxlan, geneve)
    /// into the datapath, with the defaults, as the agent does on a node (`up` does
    /// it once; call it again after adding a tunnel device). Returns what it wrote.
    pub fn refresh_tunnel_ports(&mut self) -> Result<TunnelPorts, LabError> {
        let node = self.network.node_netns().to_string();
        let node_ports = netns::in_netns(&node, crate::node::tunnel_ports)??;
        Ok(self.datapath.set_tunnel_ports(&node_ports)?)
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
                (Endpoint::Pod(from), Endpoint::Pod(to)) => Some(ProbeSpec {
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

    /// Connects from the node namespace, from the node's address of `family`, to
    /// `pod` on `port`/`protocol`, as a kubelet probe would; true when it got through
    /// within `timeout`.
    pub fn probe_from_node(
        &self,
        pod: &ObjectRef,
        port: u16,
        protocol: Protocol,
        family: Family,
        timeout: Duration,
    ) -> Result<bool, LabError> {
        let source = match family {
            Family::Ipv4 => IpAddr::V4(NODE_V4),
            Family::Ipv6 => IpAddr::V6(NODE_V6),
        };
        let connect = Connect {
            netns: &self.network.topology.node,
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

    /// The datapath's verdict counters.
    pub fn stats(&mut self) -> Result<Stats, LabError> {
        Ok(self.datapath.stats()?)
    }
}
