//! A loaded `policy-ebpf` object: its classifiers attached to pod interfaces, and
//! what the datapath knows about its banks (`banks.rs`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use aya::{
    maps::{Map, MapData},
    programs::{
        links::FdLink,
        tc::{SchedClassifierLinkId, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader, VerifierLogLevel,
};
use policy_common::{
    bank::BANKS,
    config::Config,
    counters::{RULE_COUNTERS_MAP, RULE_COUNTERS_MAX},
    ct::CONNTRACK_MAP,
    debug::KERNEL_DEBUG_GLOBAL,
    peer::{PEERS_V4_MAP, PEERS_V6_MAP},
};

use super::{
    banks::BankContent,
    counters::DropMeanings,
    kernel_log::KernelLog,
    pins::{PinLayout, PINNED_MAPS},
    quiesce::Quiesce,
    slots::RuleSlots,
    sockets::{self, SocketsLink, NODE_SOCKETS_PROGRAM},
    DataplaneError,
};

/// Program deciding a pod's ingress; runs at TC egress of its host-side veth.
pub(super) const POD_INGRESS_PROGRAM: &str = "pod_ingress";
/// Program deciding a pod's egress; runs at TC ingress of its host-side veth.
pub(super) const POD_EGRESS_PROGRAM: &str = "pod_egress";
/// Program deciding deferred Service egress where it leaves the node; runs at TC
/// egress of the node's exits (`exits.rs`).
pub(super) const NODE_EXIT_PROGRAM: &str = "node_exit";
/// Program marking verified replies coming back through an exit; TC ingress there.
pub(super) const NODE_ENTRY_PROGRAM: &str = "node_entry";
/// `node_exit` for an exit without Ethernet frames.
pub(super) const NODE_EXIT_IP_PROGRAM: &str = "node_exit_ip";
/// `node_entry` for an exit without Ethernet frames.
pub(super) const NODE_ENTRY_IP_PROGRAM: &str = "node_entry_ip";
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
    /// Prefixes each bank of `PEERS_V4` and `PEERS_V6` holds instead of
    /// `PEERS_MAX`, for peer tables larger than the agent's default capacity.
    pub peers_capacity: Option<u32>,
    /// Also load `bench_floor`, the empty classifier `Datapath::bench_run` times as
    /// the floor. It is never attached.
    pub bench_floor: bool,
    /// Turn the kernel debug channel on (the agent's `-vv`): the classifiers'
    /// debug records are drained into `tracing` at debug level under
    /// `KERNEL_LOG_TARGET`. Set once, at load: off, the verifier removes the
    /// logging code and it costs nothing.
    pub kernel_debug: bool,
}

/// What an interface's pair of classifiers is attached for: which two programs,
/// and under which names their links are pinned (`pins::PinLayout::link_pin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum LinkRole {
    /// A pod's host-side veth: `pod_ingress` at TC egress, `pod_egress` at TC
    /// ingress.
    Pod,
    /// A node exit with Ethernet frames (`exits.rs`): `node_exit` at TC egress,
    /// `node_entry` at TC ingress.
    Exit,
    /// A node exit without Ethernet frames: `node_exit_ip`, `node_entry_ip`.
    IpExit,
}

impl LinkRole {
    /// Both roles.
    pub(super) const ALL: [LinkRole; 3] = [LinkRole::Pod, LinkRole::Exit, LinkRole::IpExit];

    /// Its two programs, the one at TC egress first (`attach_pair`'s order).
    pub(super) fn programs(self) -> [&'static str; 2] {
        match self {
            LinkRole::Pod => [POD_INGRESS_PROGRAM, POD_EGRESS_PROGRAM],
            LinkRole::Exit => [NODE_EXIT_PROGRAM, NODE_ENTRY_PROGRAM],
            LinkRole::IpExit => [NODE_EXIT_IP_PROGRAM, NODE_ENTRY_IP_PROGRAM],
        }
    }
}

/// How an interface's two classifiers are attached (in `LinkRole::programs`
/// order).
pub(super) enum Attachment {
    /// TCX links the programs own: detached when the datapath is dropped.
    Owned([SchedClassifierLinkId; 2]),
    /// TCX links pinned under `links/`: attached until their pins are removed,
    /// whatever happens to this process.
    Pinned([FdLink; 2]),
}

/// The loaded object and the interfaces its programs are attached to. Dropped, an
/// unpinned datapath detaches every link it holds and frees its maps; a pinned one
/// (`open_pinned`) leaves programs, links and maps enforcing (`pins.rs`).
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    /// Which `RULE_COUNTERS` slot each allow rule counts in.
    pub(super) rule_slots: RuleSlots,
    /// What the `DROP_COUNTERS` slots mean since the last `apply`.
    pub(super) drop_meanings: DropMeanings,
    /// `DROP_COUNTERS` slots whose meaning changed but whose zeroing failed: the
    /// next `apply` zeroes them.
    pub(super) drop_zero_owed: BTreeSet<u32>,
    /// CPUs the kernel may run on: how many values a per-CPU map entry holds.
    pub(super) possible_cpus: usize,
    /// What each bank of the banked maps holds (index = bank), kept equal to the
    /// kernel entry by entry (`banks.rs`).
    pub(super) shadows: [BankContent; 2],
    /// The bank `ACTIVE` names (`bank_of(generation)`).
    pub(super) active: u32,
    /// The generation `ACTIVE` holds: one more at every flip (`policy_common::bank`).
    pub(super) generation: u32,
    /// Waits, in the background, for classifier runs that may still read the bank
    /// `ACTIVE` left.
    pub(super) quiesce: Quiesce,
    /// Per-bank capacity of each banked map, as the kernel created it.
    pub(super) bank_capacity: BTreeMap<&'static str, u32>,
    /// The `CONFIG` entry last written (`set_config`): conntrack timeouts for the
    /// sweep, and the mark bits.
    pub(super) config: Config,
    /// Where this datapath is pinned (`open_pinned`), if it is.
    pub(super) pins: Option<PinLayout>,
    pub(super) attached: BTreeMap<InterfaceIndex, Attachment>,
    /// The node's exits with `node_exit` and `node_entry` attached (`exits.rs`).
    pub(super) exits: BTreeMap<InterfaceIndex, Attachment>,
    /// The node's exits without Ethernet frames, with `node_exit_ip` and
    /// `node_entry_ip` attached.
    pub(super) ip_exits: BTreeMap<InterfaceIndex, Attachment>,
    /// `node_sockets` on the node's network namespace, once attached
    /// (`sockets.rs`).
    pub(super) sockets: Option<SocketsLink>,
    /// The drain of the classifiers' debug records, when loaded with
    /// `LoadOptions::kernel_debug`.
    pub(super) kernel_log: Option<KernelLog>,
}

/// The `MapData` of the map types this object defines.
pub(super) fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LpmTrie(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::RingBuf(data) => Some(data),
        _ => None,
    }
}

impl Datapath {
    /// Loads the object and both classifiers into the kernel (not attached yet).
    pub fn load(object: &Path) -> Result<Self, DataplaneError> {
        Self::load_with(object, &LoadOptions::default())
    }

    /// `load` with the departures `options` names (map capacities, the benchmark's
    /// floor program).
    pub fn load_with(object: &Path, options: &LoadOptions) -> Result<Self, DataplaneError> {
        Self::load_inner(object, options, None)
    }

    /// `load_with`; with `pins`, every map of `PINNED_MAPS` is the one pinned there
    /// (created and pinned if missing).
    pub(super) fn load_inner(
        object: &Path,
        options: &LoadOptions,
        pins: Option<PinLayout>,
    ) -> Result<Self, DataplaneError> {
        let kernel_debug = u8::from(options.kernel_debug);
        let mut loader = EbpfLoader::new();
        loader.verifier_log_level(VerifierLogLevel::DEBUG | VerifierLogLevel::STATS);
        // Read-only data, frozen before the programs are verified: the verifier
        // takes the flag as a constant and prunes the logging branches when it is 0.
        loader.override_global(KERNEL_DEBUG_GLOBAL, &kernel_debug, true);
        if let Some(capacity) = options.conntrack_capacity {
            loader.map_max_entries(CONNTRACK_MAP, capacity);
        }
        if let Some(capacity) = options.peers_capacity {
            let entries = capacity.saturating_mul(BANKS);
            loader
                .map_max_entries(PEERS_V4_MAP, entries)
                .map_max_entries(PEERS_V6_MAP, entries);
        }
        if let Some(layout) = &pins {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, layout.map_pin(name));
            }
        }
        let mut ebpf = loader
            .load_file(object)
            .map_err(|source| DataplaneError::Load {
                path: object.to_path_buf(),
                source: Box::new(source),
            })?;
        // Before the programs load: they refer to the ring buffer this keeps open.
        let kernel_log = if options.kernel_debug {
            Some(KernelLog::start(&mut ebpf)?)
        } else {
            None
        };
        let floor = options.bench_floor.then_some(BENCH_FLOOR_PROGRAM);
        for name in [
            POD_INGRESS_PROGRAM,
            POD_EGRESS_PROGRAM,
            NODE_EXIT_PROGRAM,
            NODE_ENTRY_PROGRAM,
            NODE_EXIT_IP_PROGRAM,
            NODE_ENTRY_IP_PROGRAM,
        ]
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
        sockets::sockets_program_of(&mut ebpf)?
            .load()
            .map_err(|e| DataplaneError::Program {
                program: NODE_SOCKETS_PROGRAM,
                message: format!("{e:#}"),
            })?;
        let possible_cpus = aya::util::nr_cpus().map_err(|(path, source)| DataplaneError::Map {
            map: RULE_COUNTERS_MAP,
            message: format!("counting possible CPUs for the per-CPU counters ({path}): {source}"),
        })?;
        let bank_capacity = super::maps::bank_capacities(&ebpf)?;
        let mut datapath = Self {
            ebpf,
            rule_slots: RuleSlots::new(RULE_COUNTERS_MAX),
            drop_meanings: DropMeanings::default(),
            drop_zero_owed: BTreeSet::new(),
            possible_cpus,
            shadows: Default::default(),
            active: 0,
            generation: 0,
            quiesce: Quiesce::new()?,
            bank_capacity,
            config: options.config,
            pins,
            attached: BTreeMap::new(),
            exits: BTreeMap::new(),
            ip_exits: BTreeMap::new(),
            sockets: None,
            kernel_log,
        };
        datapath.set_config(&options.config)?;
        Ok(datapath)
    }

    /// Attaches both classifiers to `interface` (a pod's host-side veth) as TCX
    /// links, each first in its hook's chain (`order.rs`), and returns its index.
    /// The calling thread must be in the network namespace of the interface.
    pub fn attach(&mut self, interface: &str) -> Result<InterfaceIndex, DataplaneError> {
        let index = self.attach_as(interface, LinkRole::Pod)?;
        tracing::debug!(interface, ifindex = index, "classifiers attached");
        Ok(index)
    }

    /// Detaches both classifiers from interface `ifindex` (and removes their link
    /// pins). Nothing to do for an interface not attached; an interface that is
    /// gone already lost its links with it.
    pub fn detach(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError> {
        if self.detach_as(ifindex, LinkRole::Pod)? {
            tracing::debug!(ifindex, "classifiers detached");
        }
        Ok(())
    }

    /// The interfaces attached for `role`.
    pub(super) fn attachments(
        &mut self,
        role: LinkRole,
    ) -> &mut BTreeMap<InterfaceIndex, Attachment> {
        match role {
            LinkRole::Pod => &mut self.attached,
            LinkRole::Exit => &mut self.exits,
            LinkRole::IpExit => &mut self.ip_exits,
        }
    }

    /// Attaches `role`'s two programs to `interface` (nothing to do if they are
    /// there), pinning their links when the datapath is pinned.
    pub(super) fn attach_as(
        &mut self,
        interface: &str,
        role: LinkRole,
    ) -> Result<InterfaceIndex, DataplaneError> {
        let index = interface_index(interface)?;
        if self.attachments(role).contains_key(&index) {
            return Ok(index);
        }
        let links = attach_pair(&mut self.ebpf, interface, role.programs())?;
        let attachment = if self.pins.is_some() {
            Attachment::Pinned(self.pin_links(index, role, links)?)
        } else {
            Attachment::Owned(links)
        };
        self.attachments(role).insert(index, attachment);
        Ok(index)
    }

    /// Detaches `role`'s programs from `ifindex` and removes their link pins; false
    /// if they were not attached there.
    pub(super) fn detach_as(
        &mut self,
        ifindex: InterfaceIndex,
        role: LinkRole,
    ) -> Result<bool, DataplaneError> {
        let Some(attachment) = self.attachments(role).remove(&ifindex) else {
            return Ok(false);
        };
        match attachment {
            Attachment::Owned(links) => {
                for (name, link) in role.programs().into_iter().zip(links) {
                    classifier(&mut self.ebpf, name)?
                        .detach(link)
                        .map_err(|e| DataplaneError::Detach {
                            ifindex,
                            message: format!("{name}: {e}"),
                        })?;
                }
            }
            Attachment::Pinned(links) => {
                if let Some(layout) = &self.pins {
                    layout.remove_links(ifindex, role)?;
                }
                drop(links);
            }
        }
        Ok(true)
    }

    /// Interfaces with both classifiers attached.
    pub fn attached_interfaces(&self) -> impl Iterator<Item = InterfaceIndex> + '_ {
        self.attached.keys().copied()
    }

    /// The bank the classifiers read now (as this datapath last wrote or found it).
    pub fn active_bank(&self) -> u32 {
        self.active
    }

    /// Makes the classifiers read bank `bank` as it stands, without writing it: for
    /// tests that show a packet is decided by the bank `ACTIVE` names, and for
    /// diagnostics. The next `apply` writes the other bank, as after any flip.
    pub fn activate_bank(&mut self, bank: u32) -> Result<(), DataplaneError> {
        if policy_common::bank::bank_of(bank) != self.active {
            self.flip()?;
        }
        Ok(())
    }

    /// The generation `ACTIVE` holds (as this datapath last wrote or found it): one
    /// more at every flip, and `bank_of` it is the active bank.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The `CONFIG` entry this datapath wrote last.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether it was loaded with the kernel debug channel on (and drains it).
    pub fn kernel_debug(&self) -> bool {
        self.kernel_log.is_some()
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

/// The index of `interface` in the calling thread's network namespace.
pub(super) fn interface_index(interface: &str) -> Result<InterfaceIndex, DataplaneError> {
    nix::net::if_::if_nametoindex(interface).map_err(|source| DataplaneError::Interface {
        interface: interface.to_string(),
        source,
    })
}

/// Attaches `programs[0]` at TC egress and `programs[1]` at TC ingress of
/// `interface`, each first in its chain; never half: if the second fails, the
/// first link goes with the error.
pub(super) fn attach_pair(
    ebpf: &mut Ebpf,
    interface: &str,
    programs: [&'static str; 2],
) -> Result<[SchedClassifierLinkId; 2], DataplaneError> {
    let [out, inward] = programs;
    let first = attach_one(ebpf, out, interface, TcAttachType::Egress)?;
    match attach_one(ebpf, inward, interface, TcAttachType::Ingress) {
        Ok(second) => Ok([first, second]),
        Err(error) => {
            let _ = classifier(ebpf, out).map(|program| program.detach(first));
            Err(error)
        }
    }
}

fn attach_one(
    ebpf: &mut Ebpf,
    name: &'static str,
    interface: &str,
    hook: TcAttachType,
) -> Result<SchedClassifierLinkId, DataplaneError> {
    // First in the hook's TCX chain: ahead of whatever is there now (see
    // `order.rs` for programs attached ahead of it later).
    let first = TcAttachOptions::TcxOrder(LinkOrder::first());
    classifier(ebpf, name)?
        .attach_with_options(interface, hook, first)
        .map_err(|source| DataplaneError::Attach {
            program: name,
            interface: interface.to_string(),
            source: Box::new(source),
        })
}
