//! The local lab: a one-node mini-cluster built from manifests. Network namespaces
//! stand in for pods, podwall's real datapath enforces the policies, and probes
//! show who can reach whom.
//!
//! Wires `model` -> `policy::compiler` -> `dataplane` for a single node; owns its
//! namespaces through a guard that deletes them on drop (success, error or panic),
//! and `netns::delete_own` for Ctrl-C.

pub mod conformance;
pub mod netns;
pub mod probe;
pub mod report;
mod servers;
pub mod topology;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use self::{probe::ProbeSpec, report::ProbeResult, servers::Servers, topology::Topology};
use crate::{
    dataplane::{self, Datapath, DataplaneError, InterfaceIndex, Stats},
    model::{ClusterState, ObjectRef, Protocol},
    policy::{compiler::compile, tables::DatapathTables},
};

/// What can stop the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab creates namespaces and loads BPF programs.
    #[error("the lab needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF): run it as root")]
    NotRoot,
    /// Entering or opening a network namespace failed.
    #[error("network namespace {name}: {source}")]
    Netns {
        /// Namespace name.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Setting a sysctl inside a lab namespace failed.
    #[error("sysctl {key} in {netns}: {source}")]
    Sysctl {
        /// Namespace name.
        netns: String,
        /// Path under /proc/sys.
        key: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An `ip` command failed.
    #[error("{command}: {message}")]
    Command {
        /// What was run.
        command: String,
        /// What it said.
        message: String,
    },
    /// A helper thread panicked.
    #[error("a lab thread panicked during: {what}")]
    Thread {
        /// What it was doing.
        what: String,
    },
    /// A listener or probe socket could not be made.
    #[error("pod {pod}: cannot {what}: {source}")]
    Socket {
        /// The pod.
        pod: String,
        /// What was attempted.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// SCTP sockets need a kernel built with SCTP.
    #[error("SCTP cannot be probed: this kernel has no SCTP support (CONFIG_IP_SCTP)")]
    SctpUnavailable,
    /// A probe names a pod the lab does not have.
    #[error("pod {pod} is not in the lab")]
    UnknownPod {
        /// The pod.
        pod: String,
    },
    /// Two pods claim one address in their manifests.
    #[error("pod {pod}: address {ip} is already used by another pod")]
    DuplicateAddress {
        /// The second pod.
        pod: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// More pods than the lab range holds.
    #[error("the lab address range 10.244.0.0/16 is exhausted")]
    AddressesExhausted,
    /// An update added or removed pods (the lab's pods are fixed when it starts).
    #[error("the lab's pods are fixed when it starts; this update changes them: {detail}")]
    PodsChanged {
        /// Which pods differ.
        detail: String,
    },
    /// The datapath failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

/// Deletes every namespace of one run when dropped.
struct RunGuard {
    run: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let prefix = format!("{}-", self.run);
        let names: Vec<String> = netns::lab_namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if let Err(error) = netns::delete(&names) {
            tracing::error!(%error, run = %self.run, "could not delete the lab's namespaces; run `policy-agent lab down`");
        }
    }
}

/// A running lab. Dropping it stops the servers, unloads the datapath and deletes
/// every namespace it made.
pub struct Lab {
    topology: Topology,
    state: ClusterState,
    tables: DatapathTables,
    datapath: Datapath,
    interfaces: BTreeMap<ObjectRef, InterfaceIndex>,
    _servers: Servers,
    _guard: RunGuard,
}

/// `state` with every pod's addresses replaced by the lab's.
fn with_lab_addresses(mut state: ClusterState, topology: &Topology) -> ClusterState {
    for (key, pod) in &mut state.pods {
        if let Some(lab_pod) = topology.pods.get(key) {
            pod.ips = vec![IpAddr::V4(lab_pod.ip)];
        }
    }
    state
}

impl Lab {
    /// Builds the lab for `state`: namespaces, listeners on every declared container
    /// port and on `extra_ports`, the datapath loaded and attached, policies applied.
    pub fn up(state: ClusterState, extra_ports: &[(u16, Protocol)]) -> Result<Self, LabError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(LabError::NotRoot);
        }
        let object = dataplane::object::find()?;
        let run = format!(
            "{}{}x{}",
            netns::LAB_PREFIX,
            std::process::id(),
            NEXT_RUN.fetch_add(1, Ordering::Relaxed)
        );
        let guard = RunGuard { run: run.clone() };
        let addresses = topology::assign_addresses(&state)?;
        let topology = topology::create(&run, &addresses)?;
        let state = with_lab_addresses(state, &topology);
        tracing::info!(run = %run, pods = topology.pods.len(), "lab network created");

        let mut listeners = Vec::new();
        for (key, lab_pod) in &topology.pods {
            let mut ports: BTreeSet<(u16, Protocol)> = extra_ports.iter().copied().collect();
            if let Some(pod) = state.pods.get(key) {
                ports.extend(pod.ports.iter().map(|p| (p.port, p.protocol)));
            }
            let ports: Vec<_> = ports.into_iter().collect();
            listeners.extend(servers::open_listeners(
                &lab_pod.netns,
                &key.to_string(),
                &ports,
            )?);
        }
        let servers = Servers::start(listeners);

        let mut datapath = Datapath::load(&object)?;
        let interfaces = netns::in_netns(&topology.node, || {
            topology
                .pods
                .iter()
                .map(|(key, pod)| Ok((key.clone(), datapath.attach(&pod.host_interface)?)))
                .collect::<Result<BTreeMap<_, _>, DataplaneError>>()
        })??;
        let mut lab = Self {
            topology,
            state,
            tables: DatapathTables::default(),
            datapath,
            interfaces,
            _servers: servers,
            _guard: guard,
        };
        lab.program()?;
        Ok(lab)
    }

    fn program(&mut self) -> Result<(), LabError> {
        self.tables = compile(&self.state, &[], |pod| {
            self.topology.pods.contains_key(&pod.key)
        });
        for diagnostic in &self.tables.diagnostics {
            tracing::warn!(%diagnostic, "not enforced exactly; affected pods fail closed");
        }
        self.datapath.apply(&self.tables, &self.interfaces)?;
        Ok(())
    }

    /// Replaces the cluster state (policies, labels, namespaces) and reprograms the
    /// datapath. The set of pods must stay the same.
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
        self.state = with_lab_addresses(state, &self.topology);
        self.program()
    }

    /// The lab's pods, sorted.
    pub fn pods(&self) -> Vec<ObjectRef> {
        self.topology.pods.keys().cloned().collect()
    }

    /// Names of the network namespaces this lab made (pods, then the node).
    pub fn namespaces(&self) -> Vec<String> {
        self.topology.namespaces()
    }

    /// The state being enforced, with the lab's pod addresses.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The tables last written to the kernel.
    pub fn tables(&self) -> &DatapathTables {
        &self.tables
    }

    /// One probe from every pod to every other pod on each of `ports`; with no
    /// ports, on each destination's declared TCP and UDP container ports (declared
    /// SCTP ports cannot be probed on a kernel without SCTP and are left out).
    pub fn probe_specs(&self, ports: &[(u16, Protocol)]) -> Vec<ProbeSpec> {
        let pods = self.pods();
        let mut specs = Vec::new();
        for from in &pods {
            for to in pods.iter().filter(|to| *to != from) {
                let declared: Vec<(u16, Protocol)> = self
                    .state
                    .pods
                    .get(to)
                    .map(|p| {
                        p.ports
                            .iter()
                            .filter(|c| c.protocol != Protocol::Sctp)
                            .map(|c| (c.port, c.protocol))
                            .collect()
                    })
                    .unwrap_or_default();
                let targets = if ports.is_empty() { &declared } else { ports };
                let unique: BTreeSet<&(u16, Protocol)> = targets.iter().collect();
                specs.extend(unique.into_iter().map(|&(port, protocol)| ProbeSpec {
                    from: from.clone(),
                    to: to.clone(),
                    port,
                    protocol,
                }));
            }
        }
        specs
    }

    /// Runs probes through the real datapath; a probe that gets no answer within
    /// `timeout` counts as dropped.
    pub fn probe(
        &self,
        specs: &[ProbeSpec],
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, LabError> {
        probe::run(&self.topology, specs, timeout)
    }

    /// Sends one ICMP echo request from `from` to `to` and reports whether the
    /// reply came back within `timeout`.
    pub fn ping(
        &self,
        from: &ObjectRef,
        to: &ObjectRef,
        timeout: Duration,
    ) -> Result<bool, LabError> {
        probe::ping(&self.topology, from, to, timeout)
    }

    /// The datapath's verdict counters.
    pub fn stats(&mut self) -> Result<Stats, LabError> {
        Ok(self.datapath.stats()?)
    }
}
