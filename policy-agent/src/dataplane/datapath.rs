//! A loaded `policy-ebpf` object: its classifiers attached to pod interfaces.

use std::{collections::BTreeMap, path::Path};

use aya::{
    programs::{tc::SchedClassifierLinkId, SchedClassifier, TcAttachType},
    Ebpf, EbpfLoader, VerifierLogLevel,
};
use policy_common::{
    config::Config,
    counters::{RULE_COUNTERS_MAP, RULE_COUNTERS_MAX},
    ct::CONNTRACK_MAP,
    peer::{PEERS_V4_MAP, PEERS_V6_MAP},
};

use super::{counters::DenyMeanings, slots::RuleSlots, DataplaneError};

/// Program deciding a pod's ingress; runs at TC egress of its host-side veth.
pub(super) const POD_INGRESS_PROGRAM: &str = "pod_ingress";
/// Program deciding a pod's egress; runs at TC ingress of its host-side veth.
pub(super) const POD_EGRESS_PROGRAM: &str = "pod_egress";
/// The empty classifier `cargo xtask bench datapath` measures as its floor.
pub(super) const BENCH_FLOOR_PROGRAM: &str = "bench_floor";

/// Kernel interface index of a pod's host-side veth.
pub type InterfaceIndex = u32;

/// How `Datapath::load_with` departs from what the agent loads. The defaults are
/// the agent's; the benchmark and tests set the rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The `CONFIG` entry written right after loading (conntrack timeouts, event
    /// rate and whether allows are reported).
    pub config: Config,
    /// `max_entries` of `CONNTRACK` instead of `CONNTRACK_MAX`, to show what a full
    /// table does without opening a quarter of a million flows.
    pub conntrack_capacity: Option<u32>,
    /// `max_entries` of `PEERS_V4` and `PEERS_V6` instead of `PEERS_MAX`, for peer
    /// tables larger than the agent's default capacity.
    pub peers_capacity: Option<u32>,
    /// Also load `bench_floor`, the empty classifier `Datapath::bench_run` times as
    /// the floor. It is never attached.
    pub bench_floor: bool,
}

/// The loaded object and the interfaces its programs are attached to. Dropping it
/// detaches every link it holds and frees the maps (nothing is pinned yet).
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    /// Which `RULE_COUNTERS` slot each allow rule counts in.
    pub(super) rule_slots: RuleSlots,
    /// What the `DENY_COUNTERS` slots mean since the last `apply`.
    pub(super) deny_meanings: DenyMeanings,
    /// CPUs the kernel may run on: how many values a per-CPU map entry holds.
    pub(super) possible_cpus: usize,
    attached: BTreeMap<InterfaceIndex, [SchedClassifierLinkId; 2]>,
}

impl Datapath {
    /// Loads the object and both classifiers into the kernel (not attached yet).
    pub fn load(object: &Path) -> Result<Self, DataplaneError> {
        Self::load_with(object, &LoadOptions::default())
    }

    /// `load` with the departures `options` names (map capacities, the benchmark's
    /// floor program).
    pub fn load_with(object: &Path, options: &LoadOptions) -> Result<Self, DataplaneError> {
        let mut loader = EbpfLoader::new();
        loader.verifier_log_level(VerifierLogLevel::DEBUG | VerifierLogLevel::STATS);
        if let Some(capacity) = options.conntrack_capacity {
            loader.map_max_entries(CONNTRACK_MAP, capacity);
        }
        if let Some(capacity) = options.peers_capacity {
            loader
                .map_max_entries(PEERS_V4_MAP, capacity)
                .map_max_entries(PEERS_V6_MAP, capacity);
        }
        let mut ebpf = loader
            .load_file(object)
            .map_err(|source| DataplaneError::Load {
                path: object.to_path_buf(),
                source: Box::new(source),
            })?;
        let floor = options.bench_floor.then_some(BENCH_FLOOR_PROGRAM);
        for name in [POD_INGRESS_PROGRAM, POD_EGRESS_PROGRAM]
            .into_iter()
            .chain(floor)
        {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|e| DataplaneError::Program {
                    program: name,
                    message: format!("{e:#}"),
                })?;
        }
        let possible_cpus = aya::util::nr_cpus().map_err(|(path, source)| DataplaneError::Map {
            map: RULE_COUNTERS_MAP,
            message: format!("counting possible CPUs for the per-CPU counters ({path}): {source}"),
        })?;
        let mut datapath = Self {
            ebpf,
            rule_slots: RuleSlots::new(RULE_COUNTERS_MAX),
            deny_meanings: DenyMeanings::default(),
            possible_cpus,
            attached: BTreeMap::new(),
        };
        datapath.set_config(&options.config)?;
        Ok(datapath)
    }

    /// Attaches both classifiers to `interface` (a pod's host-side veth) as TCX
    /// links, and returns its index. The calling thread must be in the network
    /// namespace of the interface.
    pub fn attach(&mut self, interface: &str) -> Result<InterfaceIndex, DataplaneError> {
        let index = nix::net::if_::if_nametoindex(interface).map_err(|source| {
            DataplaneError::Interface {
                interface: interface.to_string(),
                source,
            }
        })?;
        if self.attached.contains_key(&index) {
            return Ok(index);
        }
        let ingress = attach_one(
            &mut self.ebpf,
            POD_INGRESS_PROGRAM,
            interface,
            TcAttachType::Egress,
        )?;
        let egress = attach_one(
            &mut self.ebpf,
            POD_EGRESS_PROGRAM,
            interface,
            TcAttachType::Ingress,
        )?;
        self.attached.insert(index, [ingress, egress]);
        Ok(index)
    }

    /// Interfaces with both classifiers attached.
    pub fn attached_interfaces(&self) -> impl Iterator<Item = InterfaceIndex> + '_ {
        self.attached.keys().copied()
    }
}

pub(super) fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    let program = ebpf.program_mut(name).ok_or(DataplaneError::Program {
        program: name,
        message: "not found in the object".to_string(),
    })?;
    program.try_into().map_err(|e| DataplaneError::Program {
        program: name,
        message: format!("not a TC classifier: {e}"),
    })
}

fn attach_one(
    ebpf: &mut Ebpf,
    name: &'static str,
    interface: &str,
    hook: TcAttachType,
) -> Result<SchedClassifierLinkId, DataplaneError> {
    classifier(ebpf, name)?
        .attach(interface, hook)
        .map_err(|source| DataplaneError::Attach {
            program: name,
            interface: interface.to_string(),
            source: Box::new(source),
        })
}
