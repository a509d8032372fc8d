//! podwall in the e2e bench: one datapath per lab node and scale, loaded once
//! with the tables of the synthetic cluster of that scale merged with the bench
//! pods (`scenario::merged`), then attached for each of its measurements and
//! detached after, so it is never active beside another enforcer.
//!
//! Each lab node compiles as the agent would for its node: the bench pods the lab
//! placed there and the synthetic pods of the synthetic node of the same index
//! are its endpoints (about 100), every other pod a peer. The synthetic pods have
//! no interface: they get made-up interface indexes (`apply` only keys
//! `ENDPOINTS` by them), above any the lab's nodes use.

use std::collections::BTreeMap;

use policy_common::{config::Config, peer::PEERS_MAX};

use super::{scenario, Scale};
use crate::{
    bench::BenchError,
    dataplane::{Datapath, Frames, InterfaceIndex, LoadOptions, Stats},
    lab::{netns, LabError, LabNetwork},
    model::{ClusterState, ObjectRef},
    policy::compiler::compile,
};

/// The first made-up interface index of a synthetic local pod.
const FIRST_FAKE_INDEX: InterfaceIndex = 1_000_000;
/// Counters that must not move while podwall carries the bench's traffic: a
/// flow dropped for want of conntrack room would stall a test, not measure it.
const MUST_STAY: [&str; 2] = ["drop_ct_endpoint_limit", "drop_ct_full"];

/// One node's datapath.
struct NodeWall {
    netns: String,
    datapath: Datapath,
    /// The host-side veths of the bench pods on this node.
    veths: Vec<String>,
}

/// podwall at one scale, on every lab node.
pub(super) struct Podwall {
    nodes: Vec<NodeWall>,
    attached: bool,
}

impl Podwall {
    /// Loads and programs a datapath per node of `network` for `scale`; `bench`
    /// is the bench state with the lab's addresses. Nothing is attached.
    pub(super) fn load(
        object: &std::path::Path,
        network: &LabNetwork,
        bench: &ClusterState,
        scale: Scale,
    ) -> Result<Self, BenchError> {
        let state = scenario::merged(bench, &scale.cluster());
        let mut nodes = Vec::new();
        for (index, node) in network.nodes().iter().enumerate() {
            let node_addresses = node.addresses.both().to_vec();
            let tables = compile(&state, &node_addresses, |pod| {
                scenario::is_local(pod, index)
            });
            if !tables.refusals.is_empty() || !tables.diagnostics.is_empty() {
                tracing::warn!(refusals = tables.refusals.len(), diagnostics = tables.diagnostics.len(), scale = ?scale, "the bench cluster does not compile exactly");
            }
            let bench_pods: Vec<(ObjectRef, String)> = bench
                .pods
                .keys()
                .filter(|key| network.node_of(key).is_ok_and(|n| n.name == node.name))
                .map(|key| Ok((key.clone(), network.host_interface(key)?.to_string())))
                .collect::<Result<_, LabError>>()?;
            let real: BTreeMap<ObjectRef, InterfaceIndex> = netns::in_netns(&node.netns, || {
                bench_pods
                    .iter()
                    .map(|(key, veth)| {
                        nix::net::if_::if_nametoindex(veth.as_str())
                            .map(|i| (key.clone(), i))
                            .map_err(|source| crate::dataplane::DataplaneError::Interface {
                                interface: veth.clone(),
                                source,
                            })
                    })
                    .collect::<Result<_, _>>()
            })??;
            let interfaces: BTreeMap<ObjectRef, InterfaceIndex> = tables
                .endpoints
                .keys()
                .enumerate()
                .map(|(i, pod)| {
                    let fake = FIRST_FAKE_INDEX + i as InterfaceIndex;
                    (pod.clone(), real.get(pod).copied().unwrap_or(fake))
                })
                .collect();
            let needed = u32::try_from(tables.peers.len()).unwrap_or(u32::MAX);
            let options = LoadOptions {
                config: Config::DEFAULT,
                peers_capacity: Some(needed.saturating_mul(2).max(PEERS_MAX)),
                ..LoadOptions::default()
            };
            let mut datapath = Datapath::load_with(object, &options)?;
            let ports =
                netns::in_netns(&node.netns, crate::node::tunnel_ports)?.map_err(LabError::from)?;
            datapath.set_tunnel_ports(&ports)?;
            datapath.apply(&tables, &interfaces, &BTreeMap::new())?;
            nodes.push(NodeWall {
                netns: node.netns.clone(),
                datapath,
                veths: bench_pods.into_iter().map(|(_, veth)| veth).collect(),
            });
        }
        Ok(Self {
            nodes,
            attached: false,
        })
    }

    /// Attaches every node's classifiers: its bench pods' veths, its exits
    /// (`exits`) and the node's sockets, as the agent does.
    pub(super) fn attach(&mut self, exits: &[&'static str]) -> Result<(), BenchError> {
        self.attached = true;
        for node in &mut self.nodes {
            let (veths, datapath) = (&node.veths, &mut node.datapath);
            netns::in_netns(&node.netns, || {
                veths
                    .iter()
                    .try_for_each(|veth| datapath.attach(veth).map(drop))?;
                exits
                    .iter()
                    .try_for_each(|exit| datapath.attach_exit(exit, Frames::Ethernet).map(drop))?;
                datapath.attach_node_sockets()
            })??;
        }
        Ok(())
    }

    /// Detaches everything `attach` attached.
    pub(super) fn detach(&mut self) -> Result<(), BenchError> {
        for node in &mut self.nodes {
            let datapath = &mut node.datapath;
            netns::in_netns(&node.netns, || {
                let pods: Vec<InterfaceIndex> = datapath.attached_interfaces().collect();
                pods.into_iter().try_for_each(|i| datapath.detach(i))?;
                let exits: Vec<InterfaceIndex> = datapath.exit_interfaces().collect();
                exits
                    .into_iter()
                    .try_for_each(|i| datapath.detach_exit(i))?;
                datapath.detach_node_sockets()
            })??;
        }
        self.attached = false;
        Ok(())
    }

    /// Whether its classifiers are attached now.
    pub(super) fn attached(&self) -> bool {
        self.attached
    }

    /// Removes the conntrack entries idle past their timeout, as the agent's
    /// sweeper does every few seconds.
    pub(super) fn sweep(&self) -> Result<(), BenchError> {
        for node in &self.nodes {
            node.datapath.sweep_conntrack()?;
        }
        Ok(())
    }

    /// Every node's counters, in node order.
    pub(super) fn stats(&self) -> Result<Vec<Stats>, BenchError> {
        self.nodes
            .iter()
            .map(|node| Ok(node.datapath.stats()?))
            .collect()
    }
}

/// Fails when a counter of `MUST_STAY` or `drop_policy` moved other than it
/// should between `before` and `after`: conntrack room must never run out, and
/// the intruder's probes must have been dropped by policy (`dropped` of them).
pub(super) fn check_counters(
    before: &[Stats],
    after: &[Stats],
    dropped: u64,
) -> Result<(), String> {
    let delta = |name: &str| -> u64 {
        after
            .iter()
            .zip(before)
            .map(|(a, b)| a.get(name).saturating_sub(b.get(name)))
            .sum()
    };
    for name in MUST_STAY {
        let moved = delta(name);
        if moved > 0 {
            return Err(format!(
                "{name} counted {moved} packets: conntrack ran out of room, so tests stalled"
            ));
        }
    }
    let policy = delta("drop_policy");
    if policy < dropped {
        return Err(format!(
            "drop_policy counted {policy} packets, fewer than the {dropped} probes the intruder sent"
        ));
    }
    Ok(())
}
