//! The lab's network without a datapath: namespaces, veths, routes and listeners
//! for a state's pods. `Lab` adds podwall's datapath on top; tests of the node agent
//! use it alone and let `policy-agent run` enforce, as on a real node.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use super::{
    addresses, netns,
    probe::{self, Family, ProbeSpec},
    report::ProbeResult,
    servers::{self, Servers},
    topology::{self, LabPod, Layout, Topology, TopologyKind},
    LabError,
};
use crate::causes::causes;
use crate::model::{ClusterState, ObjectRef, Protocol};

static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

/// Deletes every namespace of one run (`<run>-*`) when dropped: made before
/// anything is created, so a failed set-up cleans up too.
pub struct RunGuard {
    run: String,
}

impl RunGuard {
    /// A guard over the namespaces named `<run>-*`.
    pub fn new(run: &str) -> Self {
        Self {
            run: run.to_string(),
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let prefix = format!("{}-", self.run);
        let names: Vec<String> = netns::lab_namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if let Err(error) = netns::delete(&names) {
            tracing::error!(error = %causes(&error), run = %self.run, "could not delete the lab's namespaces; run `policy-agent lab down`");
        }
    }
}

/// A lab network. Dropping it stops the listeners and deletes every namespace it
/// made (on success, error or panic).
pub struct LabNetwork {
    pub(super) run: String,
    pub(super) topology: Topology,
    /// Ports each pod listens on, for pods wired later.
    ports: BTreeMap<ObjectRef, Vec<(u16, Protocol)>>,
    /// Pods whose namespace and veth exist.
    connected: BTreeSet<ObjectRef>,
    /// Ports every node serves on its own addresses (`serve_on_nodes`).
    node_ports: BTreeSet<(u16, Protocol)>,
    _servers: Vec<Servers>,
    _guard: RunGuard,
}

impl LabNetwork {
    /// Names of the network namespaces this network made (pods, then the nodes,
    /// then the fabric of a lab of several nodes).
    pub fn namespaces(&self) -> Vec<String> {
        self.topology.namespaces()
    }

    /// Builds the network for `state`'s pods: an address pair each (see
    /// `addresses::assign_pods`), listeners on every declared container port and on
    /// `extra_ports`. Pods in `later` get their addresses now but their namespace and
    /// veth only from `connect`.
    pub fn up(
        state: &ClusterState,
        extra_ports: &[(u16, Protocol)],
        later: &[ObjectRef],
    ) -> Result<Self, LabError> {
        Self::up_with(state, extra_ports, later, TopologyKind::Routed)
    }

    /// `up`, wired the way `kind` says.
    pub fn up_with(
        state: &ClusterState,
        extra_ports: &[(u16, Protocol)],
        later: &[ObjectRef],
        kind: TopologyKind,
    ) -> Result<Self, LabError> {
        Self::up_layout(state, extra_ports, later, Layout::single(kind))
    }

    /// `up`, on as many nodes, wired and joined the way `layout` says: each pod on
    /// the node its `spec.nodeName` names, else the next in turn.
    pub fn up_layout(
        state: &ClusterState,
        extra_ports: &[(u16, Protocol)],
        later: &[ObjectRef],
        layout: Layout,
    ) -> Result<Self, LabError> {
        layout.check()?;
        if !nix::unistd::geteuid().is_root() {
            return Err(LabError::NotRoot);
        }
        let run = format!(
            "{}{}x{}",
            netns::LAB_PREFIX,
            std::process::id(),
            NEXT_RUN.fetch_add(1, Ordering::Relaxed)
        );
        let guard = RunGuard::new(&run);
        let placed = addresses::assign_pods(state, layout.nodes)?;
        let topology = topology::create(&run, &placed, |pod| !later.contains(pod), layout)?;
        let ports = topology
            .pods
            .keys()
            .map(|key| {
                let mut ports: BTreeSet<(u16, Protocol)> = extra_ports.iter().copied().collect();
                if let Some(pod) = state.pods.get(key) {
                    ports.extend(pod.ports.iter().map(|p| (p.port, p.protocol)));
                }
                (key.clone(), ports.into_iter().collect())
            })
            .collect();
        tracing::info!(run = %run, pods = topology.pods.len(), nodes = topology.nodes.len(), "lab network created");
        let mut network = Self {
            run,
            topology,
            ports,
            connected: BTreeSet::new(),
            node_ports: BTreeSet::new(),
            _servers: Vec::new(),
            _guard: guard,
        };
        let now: Vec<ObjectRef> = network
            .topology
            .pods
            .keys()
            .filter(|pod| !later.contains(pod))
            .cloned()
            .collect();
        network.listen(&now)?;
        Ok(network)
    }

    /// Wires `pods` (named in `up`'s `later`): namespace, veth, addresses, routes
    /// and listeners, as a CNI does when a pod starts.
    pub fn connect(&mut self, pods: &[ObjectRef]) -> Result<(), LabError> {
        let new: Vec<ObjectRef> = pods
            .iter()
            .filter(|pod| !self.connected.contains(*pod))
            .cloned()
            .collect();
        self.topology.connect_all(&new)?;
        self.listen(&new)
    }

    /// Opens the listeners of `pods` (already wired) and marks them connected.
    fn listen(&mut self, pods: &[ObjectRef]) -> Result<(), LabError> {
        if pods.is_empty() {
            return Ok(());
        }
        let mut listeners = Vec::new();
        for key in pods {
            let ports = self.ports.get(key).cloned().unwrap_or_default();
            listeners.extend(servers::open_listeners(
                &self.lab_pod(key)?.netns,
                &key.to_string(),
                &ports,
            )?);
            self.connected.insert(key.clone());
        }
        self._servers.push(Servers::start(listeners));
        Ok(())
    }

    /// Serves `ports` on every node's namespace (its own addresses), as a
    /// host-network pod does, until the network goes down; a port served already
    /// is left as it is. SCTP ports are skipped as for pods.
    pub(super) fn serve_on_nodes(&mut self, ports: &[(u16, Protocol)]) -> Result<(), LabError> {
        let new: Vec<(u16, Protocol)> = ports
            .iter()
            .filter(|port| !self.node_ports.contains(port))
            .copied()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut listeners = Vec::new();
        for node in &self.topology.nodes {
            listeners.extend(servers::open_listeners(&node.netns, &node.name, &new)?);
        }
        self.node_ports.extend(new);
        self._servers.push(Servers::start(listeners));
        Ok(())
    }

    /// The run name (`pwlab-<pid>x<n>`): the prefix of every namespace it made.
    pub fn instance(&self) -> &str {
        &self.run
    }

    /// The (first) node's namespace: where the host-side veths, the pod routes
    /// and the node's addresses are.
    pub fn node_netns(&self) -> &str {
        self.topology.first_node()
    }

    /// The network's nodes, first to last.
    pub fn nodes(&self) -> &[topology::LabNode] {
        &self.topology.nodes
    }

    /// The node `pod` runs on.
    pub fn node_of(&self, pod: &ObjectRef) -> Result<&topology::LabNode, LabError> {
        let lab_pod = self.lab_pod(pod)?;
        self.topology
            .node_of(lab_pod)
            .ok_or_else(|| LabError::UnknownPod {
                pod: pod.to_string(),
            })
    }

    /// The interfaces of every node that lead to other nodes, where podwall's
    /// exit classifiers go (`fabric::exits`; none in a lab of one node).
    pub fn exits(&self) -> Vec<&'static str> {
        super::fabric::exits(&self.topology)
    }

    /// The network's pods (wired or not), sorted.
    pub fn pods(&self) -> Vec<ObjectRef> {
        self.topology.pods.keys().cloned().collect()
    }

    /// The lab's record of `pod`.
    pub(super) fn lab_pod(&self, pod: &ObjectRef) -> Result<&LabPod, LabError> {
        self.topology
            .pods
            .get(pod)
            .ok_or_else(|| LabError::UnknownPod {
                pod: pod.to_string(),
            })
    }

    /// The network namespace standing in for `pod`: where its sockets live.
    pub fn pod_netns(&self, pod: &ObjectRef) -> Result<&str, LabError> {
        Ok(&self.lab_pod(pod)?.netns)
    }

    /// The host-side veth of `pod`, in its node's namespace.
    pub fn host_interface(&self, pod: &ObjectRef) -> Result<&str, LabError> {
        Ok(&self.lab_pod(pod)?.host_interface)
    }

    /// The lab address of `pod` in `family`.
    pub fn pod_address(&self, pod: &ObjectRef, family: Family) -> Result<IpAddr, LabError> {
        let lab_pod = self.lab_pod(pod)?;
        Ok(match family {
            Family::Ipv4 => IpAddr::V4(lab_pod.addresses.v4),
            Family::Ipv6 => IpAddr::V6(lab_pod.addresses.v6),
        })
    }

    /// Every pod's addresses (IPv4, then IPv6), as `status.podIPs` lists them.
    pub fn pod_ips(&self) -> BTreeMap<ObjectRef, Vec<IpAddr>> {
        self.topology
            .pods
            .iter()
            .map(|(key, lab_pod)| (key.clone(), lab_pod.addresses.both().to_vec()))
            .collect()
    }

    /// Runs each of `specs` to its destination's address of `family`; a probe that
    /// gets no answer within `timeout` counts as dropped.
    pub fn probe(
        &self,
        specs: &[ProbeSpec],
        family: Family,
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, LabError> {
        let targets = specs
            .iter()
            .map(|spec| {
                Ok(SocketAddr::new(
                    self.pod_address(&spec.to, family)?,
                    spec.port,
                ))
            })
            .collect::<Result<Vec<_>, LabError>>()?;
        self.probe_to(specs, &targets, timeout)
    }

    /// Runs each of `specs` to `targets[i]` from its source pod.
    pub(super) fn probe_to(
        &self,
        specs: &[ProbeSpec],
        targets: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, LabError> {
        probe::run(&self.topology, specs, targets, timeout)
    }
}
