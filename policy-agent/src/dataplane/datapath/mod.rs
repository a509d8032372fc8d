//! A loaded `policy-ebpf` object, composed of the owners of its maps: `Banks`
//! (the policy state, hole-free updates), `Counters` (per-policy traffic),
//! `Conntrack`, `VerdictReports` (`STATS`, `EVENTS`) and `CONFIG`, which it writes
//! itself. Its programs stay in the object; the child modules attach them to pod
//! interfaces (`links`), the node's exits (`exits`) and its network namespace
//! (`sockets`), pin and adopt them (`pinned`), find what runs ahead of them
//! (`order`) and run them on test frames (`test_run`); `in_place` writes one
//! local pod's entries without a flip. Methods that only tests
//! and benchmarks call are behind the `testing` feature.

#[cfg(feature = "testing")]
mod attach_probe;
mod exits;
mod in_place;
mod links;
mod order;
mod pinned;
mod sockets;
#[cfg(feature = "testing")]
mod test_run;

#[cfg(feature = "testing")]
use std::time::Duration;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, MapData},
    Ebpf, EbpfLoader, VerifierLogLevel,
};
use ipnet::IpNet;
use policy_common::{
    bank::BANKS,
    config::{Config, CONFIG_FLAG_TABLES_WRITING},
    counters::NO_COUNTER,
    debug::KERNEL_DEBUG_GLOBAL,
    endpoint::PENDING_ENDPOINT_ID,
    maps,
};

/// Writes `config` into `CONFIG`, with `CONFIG_FLAG_TABLES_WRITING` when
/// `writing` and without it when not.
fn write_config(
    map: &mut Array<MapData, Config>,
    config: &Config,
    writing: bool,
) -> Result<(), DataplaneError> {
    let flags = if writing {
        config.flags | CONFIG_FLAG_TABLES_WRITING
    } else {
        config.flags & !CONFIG_FLAG_TABLES_WRITING
    };
    map.set(0, Config { flags, ..*config }, 0)
        .map_err(map_error(maps::CONFIG.name, "write"))
}

/// The fewest stamps (`Config::mark_stamps`) with which whole tables, or classes
/// of same-node pods (`update_classes`), are written in place: each such write
/// moves the generation by two without a grace period, so a packet held between
/// a client's and a server's hook across this many of them could be taken for
/// current, its verdicts from states no single write's check compared.
const IN_PLACE_MIN_STAMPS: u32 = 15;

#[cfg(feature = "testing")]
pub use self::attach_probe::{AttachTimes, AttachWay};
#[cfg(feature = "testing")]
pub use self::test_run::{BenchProgram, BenchRun, Hook, TestRunOutcome};
pub use self::{exits::Frames, order::ProgramAhead, pinned::Adoption};
use self::{
    links::{classifier, Attachment},
    sockets::{sockets_program_of, SocketsLink},
};
use super::{
    banks::{trie_changes, ApplyReport, BankContent, Banks},
    counters::{Counters, PolicyCounters},
    ct::{Conntrack, ConntrackSweeper, TrackedFlow},
    events::{EventReader, VerdictReports},
    kernel_log::KernelLog,
    keys,
    maps::{map_error, MapUsage, Stats},
    pins::{pinned_maps, PinLayout},
    programs::{BENCH_FLOOR_PROGRAM, CLASSIFIERS, NODE_SOCKETS_PROGRAM},
    slots::{rule_name, RuleName},
    tunnels::TunnelPorts,
    DataplaneError, InterfaceIndex,
};
use crate::{
    model::ObjectRef,
    policy::tables::{CountedRule, DatapathTables, EndpointEntry, PeerEntry},
};

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
    /// Prefixes each bank of a family's peer maps (`PEERS_V4` and
    /// `PEER_HOSTS_V4`, `PEERS_V6` and `PEER_HOSTS_V6`) holds instead of
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

/// The loaded object and the interfaces its programs are attached to. Dropped, an
/// unpinned datapath detaches every link it holds and frees its maps; a pinned one
/// (`open_pinned`) leaves programs, links and maps enforcing (`pinned`).
pub struct Datapath {
    /// The object: its programs (every map is taken out by its owner below).
    ebpf: Ebpf,
    banks: Banks,
    counters: Counters,
    conntrack: Conntrack,
    reports: VerdictReports,
    config_map: Array<MapData, Config>,
    /// The `CONFIG` entry last written (`set_config`): conntrack timeouts for the
    /// sweep, and the mark bits.
    config: Config,
    /// `CONFIG` carries `CONFIG_FLAG_TABLES_WRITING`: whole tables are being
    /// written into the active bank, or a write left it part-written (set before
    /// the first write, cleared once an apply leaves one whole state).
    tables_writing: bool,
    /// Where this datapath is pinned (`open_pinned`), if it is.
    pins: Option<PinLayout>,
    /// Pod interfaces with `pod_ingress` and `pod_egress` attached.
    attached: BTreeMap<InterfaceIndex, Attachment>,
    /// The node's exits with `node_exit` and `node_entry` attached (`exits`).
    exits: BTreeMap<InterfaceIndex, Attachment>,
    /// The node's exits without Ethernet frames, with `node_exit_ip` and
    /// `node_entry_ip` attached.
    ip_exits: BTreeMap<InterfaceIndex, Attachment>,
    /// `node_sockets` on the node's network namespace, once attached (`sockets`).
    sockets: Option<SocketsLink>,
    /// The drain of the classifiers' debug records, when loaded with
    /// `LoadOptions::kernel_debug`.
    kernel_log: Option<KernelLog>,
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

    /// `load_with`; with `pins`, every shared map is the one pinned there (created
    /// and pinned if missing).
    fn load_inner(
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
            loader.map_max_entries(maps::CONNTRACK.name, capacity);
        }
        if let Some(capacity) = options.peers_capacity {
            let entries = capacity.saturating_mul(BANKS);
            loader
                .map_max_entries(maps::PEERS_V4.name, entries)
                .map_max_entries(maps::PEERS_V6.name, entries)
                .map_max_entries(maps::PEER_HOSTS_V4.name, entries)
                .map_max_entries(maps::PEER_HOSTS_V6.name, entries);
        }
        if let Some(layout) = &pins {
            for name in pinned_maps() {
                loader.map_pin_path(name, layout.map_pin(name));
            }
        }
        let mut ebpf = loader
            .load_file(object)
            .map_err(|source| DataplaneError::Load {
                path: object.to_path_buf(),
                source: Box::new(source),
            })?;
        // The maps exist (made, or opened from their pins) once the object is
        // loaded: refuse one of another layout before any program uses it.
        super::maps::check_layouts(&ebpf)?;
        // Before the programs load: they refer to the ring buffer this keeps open.
        let kernel_log = if options.kernel_debug {
            Some(KernelLog::start(&mut ebpf)?)
        } else {
            None
        };
        let floor = options.bench_floor.then_some(BENCH_FLOOR_PROGRAM);
        for name in CLASSIFIERS.into_iter().chain(floor) {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|e| DataplaneError::Program {
                    program: name,
                    what: "loading".into(),
                    source: Some(Box::new(e)),
                })?;
        }
        sockets_program_of(&mut ebpf)?
            .load()
            .map_err(|e| DataplaneError::Program {
                program: NODE_SOCKETS_PROGRAM,
                what: "loading".into(),
                source: Some(Box::new(e)),
            })?;
        let mut datapath = Self {
            banks: Banks::take(&mut ebpf)?,
            counters: Counters::take(&mut ebpf)?,
            conntrack: Conntrack::take(&mut ebpf)?,
            reports: VerdictReports::take(&mut ebpf)?,
            config_map: super::maps::array(&mut ebpf, maps::CONFIG)?,
            ebpf,
            config: options.config,
            tables_writing: false,
            pins,
            attached: BTreeMap::new(),
            exits: BTreeMap::new(),
            ip_exits: BTreeMap::new(),
            sockets: None,
            kernel_log,
        };
        // A pinned CONFIG may say an agent before was writing tables in place when
        // it stopped: the bank may be part-written, so denials stay untrusted
        // until this agent's first apply.
        datapath.tables_writing = datapath
            .config_in_kernel()
            .is_ok_and(|config| config.flags & CONFIG_FLAG_TABLES_WRITING != 0);
        datapath.set_config(&options.config)?;
        Ok(datapath)
    }

    /// Makes the classifiers decide by `tables`, for the pods `interfaces` names,
    /// plus `extra_endpoints`: `ENDPOINTS` entries for interfaces that are no pod of
    /// `tables` (an interface attached before its pod is known, with
    /// `PENDING_ENDPOINT_ID`); a pod of `tables` on the same interface wins.
    ///
    /// Hole-free (`policy_common::bank`): every banked entry of the new state is
    /// written into the bank no packet reads (only the entries that differ from
    /// what that bank holds, per its shadow), then `ACTIVE` flips to it in one
    /// store; each packet is decided wholly by the old or wholly by the new state.
    /// Before writing, the call makes sure no packet still uses that bank: the RCU
    /// grace period each flip starts waiting for in the background (`quiesce.rs`)
    /// is joined here, so neither flip is delayed by the other's wait unless two
    /// come within one grace period. Tables equal to the active bank's content
    /// write and flip nothing.
    ///
    /// Refused before anything is written (`BankFull`, `EndpointId`) when some
    /// banked map would hold more entries in one bank than a bank holds, or an
    /// endpoint id of `tables` is not below `PENDING_ENDPOINT_ID`.
    ///
    /// New rules get `RULE_COUNTERS` slots (a reused slot is zeroed before
    /// the flip; a rule keeps its slot across updates, see `slots.rs`; the
    /// assignment is saved for a restart once it is active), and after the flip
    /// the deny slots whose isolating policies changed are zeroed. On error
    /// nothing flips: the previous state stays active, and the inactive bank's
    /// shadow still matches what was written of it. Once the flip is done the
    /// call succeeds: a deny slot that could not be zeroed is logged and zeroed
    /// by the next call.
    pub fn apply(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        self.apply_with(tables, interfaces, extra_endpoints, None)
    }

    /// `apply`, but written into the active bank itself, with no flip and no
    /// grace period to wait, when that is hole-free: the interfaces and their
    /// addresses stay, only pod addresses change class, and no packet spanning
    /// the writes can combine old and new entries into an allow that both the
    /// state before and the state after deny (`banks/rewrite.rs` has the order
    /// and the checks). Otherwise it is `apply`. Tracked flows are re-decided at
    /// their next packet either way. The active bank's rule set ids may then
    /// differ from the tables' (a rule set keeps the id of its content).
    pub fn apply_in_place(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        self.apply_with(tables, interfaces, extra_endpoints, Some(&mut || {}))
    }

    /// `apply_in_place`, calling `between` after each write into the active bank
    /// (tests send packets there, to meet every state on the way).
    #[cfg(feature = "testing")]
    pub fn apply_in_place_observed(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
        between: &mut dyn FnMut(),
    ) -> Result<ApplyReport, DataplaneError> {
        self.apply_with(tables, interfaces, extra_endpoints, Some(between))
    }

    /// `apply` (`in_place` `None`), or `apply_in_place` calling `in_place` after
    /// each write.
    fn apply_with(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
        in_place: Option<&mut dyn FnMut()>,
    ) -> Result<ApplyReport, DataplaneError> {
        let interface = |pod: &ObjectRef| {
            interfaces
                .get(pod)
                .copied()
                .ok_or_else(|| DataplaneError::NoInterface {
                    pod: pod.to_string(),
                })
        };
        check_endpoint_ids(tables)?;
        let mut want = BankContent::default();
        for (pod, entry) in &tables.endpoints {
            want.endpoints
                .insert(interface(pod)?, keys::endpoint_value(entry));
        }
        for (ifindex, entry) in extra_endpoints {
            want.endpoints
                .entry(*ifindex)
                .or_insert_with(|| keys::endpoint_value(entry));
        }
        for (addr, pod) in &tables.endpoint_addresses {
            want.addresses
                .insert(keys::address_key(*addr), interface(pod)?);
        }
        let mut slots = self.counters.slots().clone();
        let named: Vec<(CountedRule, RuleName)> = tables
            .counted_rules()
            .into_iter()
            .filter_map(|rule| Some((rule, rule_name(tables, &rule)?)))
            .collect();
        let names: Vec<RuleName> = named.iter().map(|(_, name)| name.clone()).collect();
        let reused = slots.assign(&names)?;
        // Each rule's slot once, not per POLICY entry (a rule has many).
        let slot_of: BTreeMap<CountedRule, u32> = named
            .iter()
            .filter_map(|(rule, name)| Some((*rule, slots.slot(name)?)))
            .collect();
        want.rule_sets = tables
            .rule_sets
            .iter()
            .map(|(m, id)| (keys::rule_set_key(m), *id))
            .collect();
        want.policy = tables
            .policy
            .iter()
            .flat_map(|(id, set)| {
                set.entries
                    .iter()
                    .map(move |(m, decision)| (*id, set, m, decision))
            })
            .map(|(id, set, m, decision)| {
                let key = keys::policy_key(id, m);
                let slot = CountedRule::of(set.direction, decision)
                    .and_then(|rule| slot_of.get(&rule))
                    .copied()
                    .unwrap_or(NO_COUNTER);
                (
                    (key.prefix_len(), key.data()),
                    keys::decision_value(decision, slot),
                )
            })
            .collect();
        (want.peers_v4, want.peers_v6) = keys::peer_keys(&tables.peers);
        // Reused slots start from zero before any entry of their new rule can count
        // in them.
        let zeroed = std::cell::Cell::new(false);
        let counters = &mut self.counters;
        let zero = || {
            zeroed.set(true);
            counters.zero_rule_slots(&reused)
        };
        let (report, flipped) = match in_place {
            Some(between) if self.config.mark_stamps() >= IN_PLACE_MIN_STAMPS => {
                // Right before the first write in place, denials stop being
                // trusted (`CONFIG_FLAG_TABLES_WRITING`).
                let (map, config, writing) =
                    (&mut self.config_map, &self.config, &mut self.tables_writing);
                let mark = || {
                    write_config(map, config, true)?;
                    *writing = true;
                    Ok(())
                };
                self.banks.install_in_place(&want, zero, mark, between)?
            }
            Some(_) | None => self.banks.install(&want, zero)?,
        };
        // The active bank holds one whole state again (an error above leaves the
        // flag set): denials are trusted from here on.
        if self.tables_writing {
            match write_config(&mut self.config_map, &self.config, false) {
                Ok(()) => self.tables_writing = false,
                Err(error) => tracing::warn!(
                    error = %crate::causes::causes(&error),
                    "clearing the tables-writing flag in CONFIG failed; the next apply clears it"
                ),
            }
        }
        if !zeroed.get() && !reused.is_empty() {
            // Nothing was written: the maps already held the new state, a new
            // rule's entries equal to a gone rule's, slot included (the slot is
            // all a `POLICY` value holds). Its counts so far are the gone rule's.
            if let Err(error) = self.counters.zero_rule_slots(&reused) {
                tracing::warn!(
                    error = %crate::causes::causes(&error),
                    slots = reused.len(),
                    "reused rule counter slots not zeroed; they keep the counts of the rules they had"
                );
            }
        }
        if flipped || slots != *self.counters.slots() {
            // Only an assignment that became active (written, or already what
            // the maps hold) is worth keeping across a restart.
            self.save_slots(&slots);
        }
        self.counters.set_slots(slots);
        // The new state is live (or was already): from here on a failure is
        // logged, never returned, or the caller would take the previous state
        // for the one enforcing.
        self.counters.tables_applied(tables);
        tracing::debug!(
            written = report.written,
            removed = report.removed,
            bank = report.bank,
            "tables applied"
        );
        Ok(report)
    }

    /// Brings the peer entries of `changed` to what `tables` holds (absent: no
    /// entry), in the active bank, without a flip or a grace period to wait: for
    /// tables that differ from those last applied in these entries alone, the
    /// addresses of one pod of another node (`policy::compiler::Recompiled::Peers`).
    /// Tracked flows are re-decided at their next packet, as after `apply`. See
    /// `Banks::update_peers` for why this is hole-free; anything else goes through
    /// `apply`.
    pub fn update_peers(
        &mut self,
        tables: &DatapathTables,
        changed: &[IpNet],
    ) -> Result<ApplyReport, DataplaneError> {
        let present: BTreeMap<IpNet, PeerEntry> = changed
            .iter()
            .filter_map(|net| Some((*net, *tables.peers.get(net)?)))
            .collect();
        let absent: BTreeMap<IpNet, PeerEntry> = changed
            .iter()
            .filter(|net| !present.contains_key(net))
            .map(|net| (*net, PeerEntry::default()))
            .collect();
        let (set_v4, set_v6) = keys::peer_keys(&present);
        let (gone_v4, gone_v6) = keys::peer_keys(&absent);
        let report = self.banks.update_peers(
            &trie_changes(set_v4, gone_v4.into_keys()),
            &trie_changes(set_v6, gone_v6.into_keys()),
        )?;
        tracing::debug!(
            written = report.written,
            removed = report.removed,
            bank = report.bank,
            "peer entries updated in place"
        );
        Ok(report)
    }

    /// Brings the peer entries of `moved` (addresses) to the classes `tables`
    /// gives them, in the active bank, without a flip, when no packet judged at
    /// two hooks can combine a class before with one after into a pass neither
    /// gives: for tables that differ from those last applied in these entries
    /// alone, each only moving class (`policy::compiler::Recompiled::Reclassed`).
    /// See `Banks::update_classes`. `None`, with nothing written, when that does
    /// not hold, or with fewer stamps than whole tables need to be written in
    /// place (`IN_PLACE_MIN_STAMPS`): the caller goes through `apply`.
    pub fn update_classes(
        &mut self,
        tables: &DatapathTables,
        moved: &[IpNet],
    ) -> Result<Option<ApplyReport>, DataplaneError> {
        // Each such write moves the generation by two without a grace period,
        // as a whole-table write in place does, and it changes what same-node
        // pods' hooks read: the same floor of stamps.
        if self.config.mark_stamps() < IN_PLACE_MIN_STAMPS {
            return Ok(None);
        }
        let present: BTreeMap<IpNet, PeerEntry> = moved
            .iter()
            .filter_map(|net| Some((*net, *tables.peers.get(net)?)))
            .collect();
        if present.len() != moved.len() {
            return Ok(None);
        }
        let (v4, v6) = keys::peer_keys(&present);
        let report = self
            .banks
            .update_classes(&trie_changes(v4, None), &trie_changes(v6, None))?;
        if let Some(report) = &report {
            tracing::debug!(
                written = report.written,
                bank = report.bank,
                "peer classes moved in place"
            );
        }
        Ok(report)
    }

    /// Makes the classifiers decide by what the active bank holds plus `extra`
    /// `ENDPOINTS` entries (an entry the active bank has for the same interface is
    /// kept): for a new pod veth that appears before this agent has tables of its
    /// own to write (an adopted datapath whose first sync failed). Hole-free and
    /// refused before any write like `apply`; nothing to add flips nothing.
    pub fn add_endpoints(
        &mut self,
        extra: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        let mut want = self.banks.active_content().clone();
        for (ifindex, entry) in extra {
            want.endpoints
                .entry(*ifindex)
                .or_insert_with(|| keys::endpoint_value(entry));
        }
        Ok(self.banks.install(&want, || Ok(()))?.0)
    }

    /// Adds `ENDPOINTS` entries for interfaces none of this datapath's
    /// classifiers run on yet (a new pod veth, before `attach`), in place in both
    /// banks with no flip: no packet looks an entry up before its interface's
    /// classifiers are attached, so the write is invisible until then. Cheaper
    /// than `add_endpoints`' flip, which catches the idle bank up with the last
    /// update, waits out the last flip's grace period and has every tracked flow
    /// re-decided; that is what the sync loop's new pod veths must not wait for.
    /// An entry the active bank has for the same interface is kept; when some of
    /// `extra`'s interfaces have classifiers (pod or exit) the call is
    /// `add_endpoints`.
    pub fn add_unattached_endpoints(
        &mut self,
        extra: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        let classified = |ifindex: &InterfaceIndex| {
            self.attached.contains_key(ifindex)
                || self.exits.contains_key(ifindex)
                || self.ip_exits.contains_key(ifindex)
        };
        if extra.keys().any(classified) {
            return self.add_endpoints(extra);
        }
        let values = extra
            .iter()
            .map(|(ifindex, entry)| (*ifindex, keys::endpoint_value(entry)))
            .collect();
        let written = self.banks.add_unread_endpoints(&values)?;
        Ok(ApplyReport {
            written,
            removed: 0,
            bank: self.banks.active(),
        })
    }

    /// Entries and per-bank capacity of each banked map (the active bank's
    /// entries), and the `RULE_COUNTERS` slots held by rules. Read from this
    /// datapath's memory, no syscall: cheap enough for every metrics scrape.
    pub fn map_usage(&self) -> Vec<MapUsage> {
        let mut usage = self.banks.usage();
        usage.push(self.counters.usage());
        usage
    }

    #[cfg(feature = "testing")]
    /// What bank `bank` holds, as this datapath last wrote or read it (for tests
    /// and diagnostics; `read_banks` reads the kernel).
    pub fn bank_shadow(&self, bank: u32) -> &BankContent {
        self.banks.shadow(bank)
    }

    #[cfg(feature = "testing")]
    /// The own addresses the kernel's `ENDPOINTS` values claim now, per bank
    /// (index = bank), by interface.
    pub fn read_own_addresses(
        &self,
    ) -> Result<[BTreeMap<InterfaceIndex, policy_common::endpoint::OwnAddresses>; 2], DataplaneError>
    {
        self.banks.read_own()
    }

    #[cfg(feature = "testing")]
    /// What the kernel's banked maps hold now, per bank (index = bank). Entries
    /// whose bank field is neither 0 nor 1 are left out (nothing writes them).
    pub fn read_banks(&self) -> Result<[BankContent; 2], DataplaneError> {
        self.banks.read()
    }

    #[cfg(feature = "testing")]
    /// How many prefixes each family's peer maps hold in the kernel now, both
    /// banks together, by map name: `PEERS_V4`, `PEER_HOSTS_V4`, `PEERS_V6`,
    /// `PEER_HOSTS_V6` (`read_banks` merges each family's two into one table).
    pub fn peer_map_entries(&self) -> Result<[(&'static str, usize); 4], DataplaneError> {
        self.banks.peer_map_entries()
    }

    #[cfg(feature = "testing")]
    /// The bank the classifiers read now (as this datapath last wrote or found it).
    pub fn active_bank(&self) -> u32 {
        self.banks.active()
    }

    #[cfg(feature = "testing")]
    /// The bank `ACTIVE` names in the kernel now.
    pub fn read_active_bank(&self) -> Result<u32, DataplaneError> {
        Ok(policy_common::bank::bank_of(self.banks.read_generation()?))
    }

    #[cfg(feature = "testing")]
    /// Makes the classifiers read bank `bank` as it stands, without writing it: for
    /// tests that show a packet is decided by the bank `ACTIVE` names, and for
    /// diagnostics. The next `apply` writes the other bank, as after any flip.
    pub fn activate_bank(&mut self, bank: u32) -> Result<(), DataplaneError> {
        if policy_common::bank::bank_of(bank) != self.banks.active() {
            self.banks.flip()?;
        }
        Ok(())
    }

    #[cfg(feature = "testing")]
    /// A handle that moves `ACTIVE` on from another thread, as writes in place
    /// do, behind this datapath's back (tests).
    pub fn active_mover(&self) -> Result<crate::dataplane::ActiveMover, DataplaneError> {
        self.banks.active_mover()
    }

    #[cfg(feature = "testing")]
    /// A reader of `CONFIG` as the classifiers see it, usable while this datapath
    /// is borrowed (tests look at it between writes in place).
    pub fn config_reader(&self) -> Result<impl FnMut() -> Option<Config>, DataplaneError> {
        let config = super::banks::reopen(&self.config_map, maps::CONFIG.name)?;
        Ok(move || config.get(&0, 0).ok())
    }

    #[cfg(feature = "testing")]
    /// The generation `ACTIVE` holds (as this datapath last wrote or found it): one
    /// more at every flip, and `bank_of` it is the active bank.
    pub fn generation(&self) -> u32 {
        self.banks.generation()
    }

    /// Writes the `CONFIG` entry the classifiers read per packet; takes effect
    /// from the next packet. `CONFIG_FLAG_TABLES_WRITING` is this datapath's own
    /// to set (`apply_in_place`): taken out of `config`, kept as it stands.
    pub fn set_config(&mut self, config: &Config) -> Result<(), DataplaneError> {
        let config = Config {
            flags: config.flags & !CONFIG_FLAG_TABLES_WRITING,
            ..*config
        };
        write_config(&mut self.config_map, &config, self.tables_writing)?;
        self.config = config;
        Ok(())
    }

    #[cfg(feature = "testing")]
    /// Sets or clears `CONFIG_FLAG_TABLES_WRITING` as a write in place does
    /// (tests of what the classifiers do meanwhile).
    pub fn set_tables_writing(&mut self, on: bool) -> Result<(), DataplaneError> {
        write_config(&mut self.config_map, &self.config, on)?;
        self.tables_writing = on;
        Ok(())
    }

    /// The `CONFIG` entry this datapath wrote last.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether it was loaded with the kernel debug channel on (and drains it).
    pub fn kernel_debug(&self) -> bool {
        self.kernel_log.is_some()
    }

    /// The `CONFIG` entry as the classifiers read it (`config` is what this
    /// datapath last wrote).
    fn config_in_kernel(&self) -> Result<Config, DataplaneError> {
        self.config_map
            .get(&0, 0)
            .map_err(map_error(maps::CONFIG.name, "read"))
    }

    /// Writes `TunnelPorts::for_node(node_ports)` into `CONFIG`, keeping its other
    /// settings; takes effect from the next packet. Returns what it wrote.
    pub fn set_tunnel_ports(&mut self, node_ports: &[u16]) -> Result<TunnelPorts, DataplaneError> {
        let ports = TunnelPorts::for_node(node_ports);
        let mut config = self.config_in_kernel()?;
        config.tunnel_ports_be = Config::tunnel_ports(&ports.ports);
        self.set_config(&config)?;
        Ok(ports)
    }

    /// The tunnel ports `CONFIG` holds, host byte order, unused slots left out.
    pub fn tunnel_ports(&self) -> Result<Vec<u16>, DataplaneError> {
        Ok(self
            .config_in_kernel()?
            .tunnel_ports_be
            .iter()
            .map(|port| u16::from_be(*port))
            .filter(|port| *port != 0)
            .collect())
    }

    /// Every per-policy counter, summed over CPUs and named with `tables` (the
    /// tables last applied; a rule without a slot is not reported).
    pub fn policy_counters(
        &self,
        tables: &DatapathTables,
    ) -> Result<PolicyCounters, DataplaneError> {
        self.counters.policy_counters(tables)
    }

    /// The rule each `RULE_COUNTERS` slot belongs to in the tables last applied:
    /// how a slot in a verdict event (`VerdictRecord::rule_slot`) is named.
    pub fn rule_slots(&self) -> BTreeMap<u32, RuleName> {
        self.counters.slots().by_slot()
    }

    /// Every flow the kernel tracks now (entries that vanish while being read, as
    /// the sweep's removals do, are left out).
    pub fn conntrack(&self) -> Result<Vec<TrackedFlow>, DataplaneError> {
        Ok(self.conntrack.flows())
    }

    #[cfg(feature = "testing")]
    /// Makes every tracked flow `select` picks look idle `by` longer: its
    /// `last_seen_ns` moves back by `by` (stopping at 0, so a `by` longer than the
    /// machine's uptime ages less). For tests of expiry, which cannot wait out the
    /// timeouts. Returns how many flows it aged.
    pub fn age_conntrack(
        &mut self,
        by: Duration,
        select: impl Fn(&TrackedFlow) -> bool,
    ) -> Result<usize, DataplaneError> {
        self.conntrack.age(by, select)
    }

    #[cfg(feature = "testing")]
    /// Removes every entry idle past its timeout now (`ConntrackSweeper::sweep`),
    /// counting an interface gone once it is no longer attached here.
    pub fn sweep_conntrack(&self) -> Result<super::ct::SweepReport, DataplaneError> {
        self.conntrack_sweeper()?
            .sweep(|ifindex| !self.attached.contains_key(&ifindex))
    }

    /// A sweeper of this datapath's `CONNTRACK` with handles of its own (it can
    /// run on a thread of its own), judging expiry by the `CONFIG` this datapath
    /// wrote last.
    pub fn conntrack_sweeper(&self) -> Result<ConntrackSweeper, DataplaneError> {
        self.conntrack.sweeper(self.config)
    }

    #[cfg(feature = "testing")]
    /// Flows each interface holds now by the counts the classifiers check
    /// (`CT_TRACKED - CT_RECLAIMED`), for tests and diagnostics.
    pub fn conntrack_held(&self) -> Result<BTreeMap<InterfaceIndex, i64>, DataplaneError> {
        self.conntrack_sweeper()?.held()
    }

    /// Reads the verdict counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats, DataplaneError> {
        self.reports.stats()
    }

    /// A reader of this datapath's `EVENTS` (a second handle on the same ring
    /// buffer; the datapath keeps its own).
    pub fn event_reader(&self) -> Result<EventReader, DataplaneError> {
        self.reports.reader()
    }

    /// Where `EVENTS` and `STATS` are pinned, for a datapath opened on pins
    /// (`open_pinned`): what `policy-agent flows` opens to follow it. `None` for
    /// an unpinned datapath (pin them with `pin_events` and `pin_stats`).
    pub fn pinned_event_maps(&self) -> Option<(PathBuf, PathBuf)> {
        let layout = self.pins.as_ref()?;
        Some((
            layout.map_pin(maps::EVENTS.name),
            layout.map_pin(maps::STATS.name),
        ))
    }

    /// Where this datapath's maps are pinned (`<dir>/<MAP>`), for a datapath
    /// opened on pins (`open_pinned`): what `explain --node` reads. `None` for
    /// an unpinned datapath (pin them with `pin_tables`).
    pub fn pinned_maps_dir(&self) -> Option<PathBuf> {
        let layout = self.pins.as_ref()?;
        layout
            .map_pin(maps::ACTIVE.name)
            .parent()
            .map(Path::to_path_buf)
    }

    /// Pins the maps `explain --node` reads (`INSPECTED_MAPS`) in `dir` (on
    /// bpffs, which must exist), so another process can read the verdicts this
    /// datapath makes; the pins outlive this process until removed.
    pub fn pin_tables(&self, dir: &Path) -> Result<(), DataplaneError> {
        use aya::maps::IterableMap as _;
        let own = [
            (maps::CONFIG.name, self.config_map.map()),
            (maps::CONNTRACK.name, self.conntrack.flows_map()),
        ];
        let mut pinned = Vec::new();
        for (name, data) in self.banks.maps().into_iter().chain(own) {
            if super::INSPECTED_MAPS.contains(&name) {
                super::maps::pin(data, &dir.join(name))?;
                pinned.push(name);
            }
        }
        match super::INSPECTED_MAPS
            .iter()
            .find(|name| !pinned.contains(name))
        {
            Some(missing) => Err(DataplaneError::Map {
                map: missing,
                what: "has no handle to pin for `explain --node`".into(),
                source: None,
            }),
            None => Ok(()),
        }
    }

    /// Pins `EVENTS` at `path` (on bpffs) so another process (`policy-agent flows`)
    /// can follow it; the pin outlives this process until removed.
    pub fn pin_events(&self, path: &Path) -> Result<(), DataplaneError> {
        self.reports.pin_events(path)
    }

    /// Pins `STATS` at `path` (on bpffs), beside the pinned `EVENTS`, so a reader
    /// in another process can tell when events were lost; the pin outlives this
    /// process until removed.
    pub fn pin_stats(&self, path: &Path) -> Result<(), DataplaneError> {
        self.reports.pin_stats(path)
    }
}

/// Refuses tables with an endpoint id at or above `PENDING_ENDPOINT_ID`: a pending
/// interface (that id) would get the allows of its group.
fn check_endpoint_ids(tables: &DatapathTables) -> Result<(), DataplaneError> {
    let out_of_range = |endpoint_id: u32, owner: &dyn Fn() -> String| {
        if endpoint_id >= PENDING_ENDPOINT_ID {
            Err(DataplaneError::EndpointId {
                endpoint_id,
                owner: owner(),
                limit: PENDING_ENDPOINT_ID,
            })
        } else {
            Ok(())
        }
    };
    for (pod, entry) in &tables.endpoints {
        out_of_range(entry.endpoint_id, &|| format!("pod {pod}"))?;
    }
    for m in tables.rule_sets.keys() {
        out_of_range(m.endpoint_id, &|| format!("a RULE_SETS entry ({m:?})"))?;
    }
    for id in tables.isolation.keys() {
        out_of_range(*id, &|| "an isolation entry".to_string())?;
    }
    Ok(())
}
