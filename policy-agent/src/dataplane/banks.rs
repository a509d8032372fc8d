//! The two banks of the desired-state maps (`policy_common::bank`) and their owner,
//! `Banks`: the six banked maps, `ACTIVE`, a shadow of each bank, and the wait for
//! the grace period after a flip. Nothing else writes these maps.
//!
//! `BankContent` is one bank with the bank left out of every key (zero in the
//! keys that carry it as a field): the shadow kept per bank (so an update diffs
//! against memory, not the kernel), what `Banks::read` reads back, and what an
//! update wants a bank to hold. A family's peer prefixes are one table there;
//! in the kernel its host prefixes go to `PEER_HOSTS_*` and the rest to the
//! `PEERS_*` trie (`SplitMaps`, `policy_common::peer`), and `POLICY`'s
//! single-port entries go to `POLICY_PORTS`, the rest to the `POLICY` trie
//! (`policy_common::policy`). The own addresses in each `ENDPOINTS` value are
//! derived from `ENDPOINT_ADDRS` (`own_addresses`), shadowed beside the bank.
//! `write_bank` changes only the entries that differ, removals first (so a bank never holds more than its capacity), and keeps the
//! shadow equal to the kernel entry by entry, even when a write fails part way.

mod in_place;
mod rewrite;

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData},
    Ebpf,
};
use policy_common::{
    bank::{bank_of, other, BANKS},
    endpoint::{
        AddressKey, EndpointInfo, EndpointKey, EndpointValue, OwnAddresses, OWN_V4, OWN_V6,
    },
    maps,
    peer::{PeerClass, PeerKeyV4, PeerKeyV6, PEER_PREFIX_BANK},
    policy::{PolicyKey, PolicyValue, RuleSetKey, PREFIX_FULL},
};

use super::{
    keys::{PeerPrefix, PolicyPrefix},
    maps::{map_error, MapUsage},
    quiesce::Quiesce,
    DataplaneError, InterfaceIndex,
};

pub(super) use self::in_place::EndpointEntries;

/// The own addresses each `ENDPOINTS` value of a bank carries
/// (`policy_common::endpoint::OwnAddresses`), by interface: one entry per
/// `ENDPOINTS` entry, kept beside the bank's shadow.
pub(super) type OwnShadow = BTreeMap<InterfaceIndex, OwnAddresses>;

/// The own addresses of every endpoint of `endpoints` as `addresses` (address key
/// -> interface) gives them: of each family the address that names its
/// interface, when exactly one does (none claimed otherwise: the classifiers
/// then look the address up, as for any address not claimed).
pub(super) fn own_addresses(
    endpoints: &BTreeMap<InterfaceIndex, EndpointInfo>,
    addresses: &BTreeMap<[u8; 16], InterfaceIndex>,
) -> OwnShadow {
    // Per interface: the address of each family and how many it has.
    let mut found: BTreeMap<InterfaceIndex, ([u8; 16], u32, [u8; 16], u32)> = BTreeMap::new();
    for (addr, ifindex) in addresses {
        if !endpoints.contains_key(ifindex) {
            continue;
        }
        let entry = found.entry(*ifindex).or_default();
        if is_ipv4_mapped(addr) {
            (entry.0, entry.1) = (*addr, entry.1 + 1);
        } else {
            (entry.2, entry.3) = (*addr, entry.3 + 1);
        }
    }
    endpoints
        .keys()
        .map(|ifindex| {
            let mut own = OwnAddresses::default();
            if let Some((v4, v4_count, v6, v6_count)) = found.get(ifindex) {
                if *v4_count == 1 {
                    own.flags |= OWN_V4;
                    own.v4 = [v4[12], v4[13], v4[14], v4[15]];
                }
                if *v6_count == 1 {
                    own.flags |= OWN_V6;
                    own.v6 = *v6;
                }
            }
            (*ifindex, own)
        })
        .collect()
}

/// What both `a` and `b` claim: a family's address only where both claim the
/// same one. Written before `b` replaces `a`, it takes out every claim `b` drops
/// and adds none.
pub(super) fn own_common(a: &OwnAddresses, b: &OwnAddresses) -> OwnAddresses {
    let mut own = OwnAddresses::default();
    if a.flags & b.flags & OWN_V4 != 0 && a.v4 == b.v4 {
        own.flags |= OWN_V4;
        own.v4 = a.v4;
    }
    if a.flags & b.flags & OWN_V6 != 0 && a.v6 == b.v6 {
        own.flags |= OWN_V6;
        own.v6 = a.v6;
    }
    own
}

/// Whether an address key (`keys::address_key`) is IPv4-mapped (`::ffff:a.b.c.d`).
fn is_ipv4_mapped(addr: &[u8; 16]) -> bool {
    addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff
}

/// What one bank holds, keys without their bank.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankContent {
    /// `ENDPOINTS`: host-side interface -> the endpoint behind it.
    pub endpoints: BTreeMap<InterfaceIndex, EndpointInfo>,
    /// `ENDPOINT_ADDRS`: address key (`address_key`) -> interface.
    pub addresses: BTreeMap<[u8; 16], InterfaceIndex>,
    /// IPv4 peer prefixes: /32s in `PEER_HOSTS_V4`, the rest in `PEERS_V4`.
    pub peers_v4: BTreeMap<PeerPrefix<[u8; 4]>, PeerClass>,
    /// IPv6 peer prefixes: /128s in `PEER_HOSTS_V6`, the rest in `PEERS_V6`.
    pub peers_v6: BTreeMap<PeerPrefix<[u8; 16]>, PeerClass>,
    /// `RULE_SETS`: key with bank 0 -> rule set id.
    pub rule_sets: BTreeMap<RuleSetKey, u32>,
    /// Allow entries: single ports in `POLICY_PORTS`, the rest in `POLICY`.
    pub policy: BTreeMap<PolicyPrefix, PolicyValue>,
}

impl BankContent {
    /// Entries of each banked map, by map name; a family's peer prefixes (host
    /// prefixes in the hash included) count under its trie's name, whose per-bank
    /// capacity bounds them together, and so do allow entries under `POLICY`'s
    /// (`POLICY_PORTS`' included).
    pub fn entries(&self) -> [(&'static str, usize); 6] {
        [
            (maps::ENDPOINTS.name, self.endpoints.len()),
            (maps::ENDPOINT_ADDRS.name, self.addresses.len()),
            (maps::PEERS_V4.name, self.peers_v4.len()),
            (maps::PEERS_V6.name, self.peers_v6.len()),
            (maps::RULE_SETS.name, self.rule_sets.len()),
            (maps::POLICY.name, self.policy.len()),
        ]
    }
}

/// What one `apply` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries inserted or changed in the bank that became active.
    pub written: usize,
    /// Entries removed from it.
    pub removed: usize,
    /// The bank active after the call (unchanged when there was nothing to write).
    pub bank: u32,
}

/// The entries of `new` that `old` lacks or holds with another value, and the keys
/// of `old` that `new` lacks.
fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> (Vec<(K, V)>, Vec<K>) {
    let upserts = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let removals = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    (upserts, removals)
}

/// A `remove` whose key is already gone did what it was asked.
fn removed_or_absent(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(nix::libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Counts of what one map's write did.
#[derive(Default)]
struct Written {
    written: usize,
    removed: usize,
}

/// The banked maps and `ACTIVE`, with what each bank holds: the only writer of
/// them. `install` is the hole-free update every change of policy state goes
/// through.
pub(super) struct Banks {
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    addresses: HashMap<MapData, AddressKey, u32>,
    rule_sets: HashMap<MapData, RuleSetKey, u32>,
    peers_v4: SplitMaps<PeerKeyV4, PeerClass>,
    peers_v6: SplitMaps<PeerKeyV6, PeerClass>,
    policy: SplitMaps<PolicyKey, PolicyValue>,
    active_map: Array<MapData, u32>,
    /// What each bank holds (index = bank), kept equal to the kernel entry by
    /// entry.
    shadows: [BankContent; 2],
    /// The own addresses in each bank's `ENDPOINTS` values (index = bank), kept
    /// equal to the kernel entry by entry like `shadows`.
    owns: [OwnShadow; 2],
    /// The bank `ACTIVE` names (`bank_of(generation)`).
    active: u32,
    /// The generation `ACTIVE` holds: one more at every flip (`policy_common::bank`).
    generation: u32,
    /// Entries of the active bank changed in place and `ACTIVE` has not moved on
    /// since (`renew`): tracked flows may still pass on decisions made with the
    /// entries replaced, until it does.
    renew_owed: bool,
    /// Waits, in the background, for classifier runs that may still read the bank
    /// `ACTIVE` left (and, after adoption, for the programs of the agent before).
    quiesce: Quiesce,
    /// Adopted, and the wait started then not yet over: programs of the agent
    /// before may still run, which do not drop a decision whose lookups span a
    /// write in place (`STAT_DROP_STATE_CHANGED`), so no whole table is written
    /// in place until it is.
    adoption_wait_owed: bool,
    /// Per-bank capacity of each banked map, as the kernel created it.
    capacity: BTreeMap<&'static str, u32>,
}

impl Banks {
    /// Takes the banked maps and `ACTIVE` out of `ebpf`; both banks are taken to
    /// be empty and bank 0 active (`adopt` reads a pinned datapath's instead).
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let mut capacity = BTreeMap::new();
        for name in BANKED_MAPS {
            capacity.insert(name, super::maps::max_entries(ebpf, name)? / BANKS);
        }
        // A family's prefixes count against its trie's capacity (`entries`); its
        // host hash must be able to take them all, or a write could fail part way
        // after the count said it fits.
        // The same for allow entries and `POLICY_PORTS`.
        for (trie, hosts) in [
            (maps::PEERS_V4.name, maps::PEER_HOSTS_V4.name),
            (maps::PEERS_V6.name, maps::PEER_HOSTS_V6.name),
            (maps::POLICY.name, maps::POLICY_PORTS.name),
        ] {
            let per_bank = super::maps::max_entries(ebpf, hosts)? / BANKS;
            let wanted = capacity.get(trie).copied().unwrap_or(0);
            capacity.insert(trie, wanted.min(per_bank));
        }
        Ok(Self {
            endpoints: super::maps::hash(ebpf, maps::ENDPOINTS)?,
            addresses: super::maps::hash(ebpf, maps::ENDPOINT_ADDRS)?,
            rule_sets: super::maps::hash(ebpf, maps::RULE_SETS)?,
            peers_v4: SplitMaps {
                trie: super::maps::lpm_trie(ebpf, maps::PEERS_V4)?,
                hosts: super::maps::hash(ebpf, maps::PEER_HOSTS_V4)?,
                names: (maps::PEERS_V4.name, maps::PEER_HOSTS_V4.name),
                host_len: 32,
                bias: PEER_PREFIX_BANK,
            },
            peers_v6: SplitMaps {
                trie: super::maps::lpm_trie(ebpf, maps::PEERS_V6)?,
                hosts: super::maps::hash(ebpf, maps::PEER_HOSTS_V6)?,
                names: (maps::PEERS_V6.name, maps::PEER_HOSTS_V6.name),
                host_len: 128,
                bias: PEER_PREFIX_BANK,
            },
            policy: SplitMaps {
                trie: super::maps::lpm_trie(ebpf, maps::POLICY)?,
                hosts: super::maps::hash(ebpf, maps::POLICY_PORTS)?,
                names: (maps::POLICY.name, maps::POLICY_PORTS.name),
                host_len: PREFIX_FULL,
                bias: 0,
            },
            active_map: super::maps::array(ebpf, maps::ACTIVE)?,
            shadows: Default::default(),
            owns: Default::default(),
            active: 0,
            generation: 0,
            renew_owed: false,
            quiesce: Quiesce::new()?,
            adoption_wait_owed: false,
            capacity,
        })
    }

    /// Each map of the banks and `ACTIVE` by name, for pinning them where a
    /// reader in another process opens them (`Datapath::pin_tables`).
    pub(super) fn maps(&self) -> [(&'static str, &MapData); 10] {
        use aya::maps::IterableMap as _;
        [
            (maps::ACTIVE.name, self.active_map.map()),
            (maps::ENDPOINTS.name, self.endpoints.map()),
            (maps::ENDPOINT_ADDRS.name, self.addresses.map()),
            (maps::RULE_SETS.name, self.rule_sets.map()),
            (self.peers_v4.names.0, self.peers_v4.trie.map()),
            (self.peers_v4.names.1, self.peers_v4.hosts.map()),
            (self.peers_v6.names.0, self.peers_v6.trie.map()),
            (self.peers_v6.names.1, self.peers_v6.hosts.map()),
            (self.policy.names.0, self.policy.trie.map()),
            (self.policy.names.1, self.policy.hosts.map()),
        ]
    }

    /// Takes on what a pinned datapath's maps hold: both banks as the kernel has
    /// them and the generation `ACTIVE` holds; no bank is written. The agent before
    /// may have flipped and died before its wait was over, so a wait starts; and it
    /// may have died between an in-place write and the move of `ACTIVE` that
    /// follows one, so that move is made (`renew`: the same bank, every tracked
    /// flow re-decided once at its next packet, with the tables that enforce now).
    pub(super) fn adopt(&mut self) -> Result<(), DataplaneError> {
        (self.shadows, self.owns) = self.read_all()?;
        self.generation = self.read_generation()?;
        self.active = bank_of(self.generation);
        self.quiesce.start();
        self.adoption_wait_owed = true;
        self.renew_owed = true;
        if let Err(error) = self.renew(false) {
            // The links have moved already: failing here would stop the agent
            // with nothing wrong in what enforces. The move stays owed, and the
            // first write makes it.
            tracing::warn!(error = %crate::causes::causes(&error), "moving ACTIVE on at adoption failed; the first write makes the move");
        }
        Ok(())
    }

    /// Moves `ACTIVE` on by two generations (the same bank: every tracked flow is
    /// re-decided at its next packet, as after a flip) when entries of the active
    /// bank were written in place (`landed`), or a move is owed from before (an
    /// earlier renew failed, or adoption). Until one succeeds it stays owed, and
    /// the next `install` or in-place write makes it even with nothing to write.
    pub(super) fn renew(&mut self, landed: bool) -> Result<(), DataplaneError> {
        if !landed && !self.renew_owed {
            return Ok(());
        }
        self.renew_owed = true;
        let next = self.generation.wrapping_add(BANKS);
        self.active_map
            .set(0, next, 0)
            .map_err(map_error(maps::ACTIVE.name, "renew"))?;
        self.generation = next;
        self.renew_owed = false;
        Ok(())
    }

    /// The bank the classifiers read now (as last written or found).
    pub(super) fn active(&self) -> u32 {
        self.active
    }

    /// The generation `ACTIVE` holds (as last written or found).
    #[cfg(feature = "testing")]
    pub(super) fn generation(&self) -> u32 {
        self.generation
    }

    /// What bank `bank` holds, as last written or read.
    pub(super) fn shadow(&self, bank: u32) -> &BankContent {
        &self.shadows[bank_of(bank) as usize]
    }

    /// What the active bank holds.
    pub(super) fn active_content(&self) -> &BankContent {
        self.shadow(self.active)
    }

    /// Entries and per-bank capacity of each banked map (the active bank's).
    pub(super) fn usage(&self) -> Vec<MapUsage> {
        self.active_content()
            .entries()
            .into_iter()
            .map(|(map, entries)| MapUsage {
                map,
                entries,
                capacity: self.capacity.get(map).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Refuses `want` if some banked map would hold more entries in one bank than
    /// a bank holds: the map as a whole would take them while the other bank is
    /// small, and fail part way once it is not.
    fn check_fits(&self, want: &BankContent) -> Result<(), DataplaneError> {
        self.check_counts(want.entries())
    }

    /// `check_fits` for the entries each named map would hold.
    fn check_counts(
        &self,
        counts: impl IntoIterator<Item = (&'static str, usize)>,
    ) -> Result<(), DataplaneError> {
        for (map, entries) in counts {
            let capacity = self.capacity.get(map).copied().unwrap_or(0);
            if entries > capacity as usize {
                return Err(DataplaneError::BankFull {
                    map,
                    entries,
                    capacity,
                });
            }
        }
        Ok(())
    }

    /// Writes `extra` `ENDPOINTS` entries into both banks in place, with no flip,
    /// for interfaces no classifier reads yet: the caller's guarantee that nothing
    /// is attached to them, so no packet of either bank's generation looks these
    /// keys up and each write is invisible until the attach. An interface the
    /// active bank has an entry for keeps it. Refused before any write when a bank
    /// would hold more entries than it can. Returns the entries written per bank.
    pub(super) fn add_unread_endpoints(
        &mut self,
        extra: &BTreeMap<InterfaceIndex, EndpointInfo>,
    ) -> Result<usize, DataplaneError> {
        let active = &self.shadows[self.active as usize].endpoints;
        let new: Vec<(InterfaceIndex, EndpointInfo)> = extra
            .iter()
            .filter(|(ifindex, _)| !active.contains_key(ifindex))
            .map(|(ifindex, info)| (*ifindex, *info))
            .collect();
        let name = maps::ENDPOINTS.name;
        let capacity = self.capacity.get(name).copied().unwrap_or(0);
        for shadow in &self.shadows {
            let entries = shadow.endpoints.len()
                + new
                    .iter()
                    .filter(|(ifindex, _)| !shadow.endpoints.contains_key(ifindex))
                    .count();
            if entries > capacity as usize {
                return Err(DataplaneError::BankFull {
                    map: name,
                    entries,
                    capacity,
                });
            }
        }
        for bank in 0..BANKS {
            for (ifindex, info) in &new {
                let ifindex = *ifindex;
                // No own address: a new interface claims none until a write
                // that gives it its addresses (`update_endpoint`, `install`).
                let value = EndpointValue {
                    info: *info,
                    own: OwnAddresses::default(),
                };
                self.endpoints
                    .insert(EndpointKey { ifindex, bank }, value, 0)
                    .map_err(map_error(name, "insert"))?;
                self.shadows[bank as usize].endpoints.insert(ifindex, *info);
                self.owns[bank as usize].insert(ifindex, value.own);
            }
        }
        Ok(new.len())
    }

    /// Makes `want` what the classifiers read, hole-free: refused before any write
    /// if it does not fit one bank; when it differs from the active bank, waits out
    /// the last flip's grace period, runs `before_write`, writes the idle bank and
    /// flips. Returns the report and whether it flipped.
    pub(super) fn install(
        &mut self,
        want: &BankContent,
        before_write: impl FnOnce() -> Result<(), DataplaneError>,
    ) -> Result<(ApplyReport, bool), DataplaneError> {
        // An owed move first, whatever happens next (a refusal, a failed write).
        self.renew(false)?;
        self.check_fits(want)?;
        let mut report = ApplyReport {
            bank: self.active,
            ..ApplyReport::default()
        };
        let want_own = own_addresses(&want.endpoints, &want.addresses);
        let active = self.active as usize;
        if *want == self.shadows[active] && want_own == self.owns[active] {
            return Ok((report, false));
        }
        self.quiesce.finish()?;
        self.adoption_wait_owed = false;
        before_write()?;
        let target = other(self.active);
        (report.written, report.removed) = self.write_bank(target, want, &want_own)?;
        self.flip()?;
        report.bank = target;
        Ok((report, true))
    }

    /// Brings the peer entries of the prefixes in `v4` and `v6` (`Some`: insert or
    /// change, `None`: remove) to those values in the active bank itself (a host
    /// prefix in its family's hash, any other in its trie: `SplitMaps`), then moves
    /// `ACTIVE` on by two generations: the same bank, and every tracked flow is
    /// re-decided at its next packet, as after a flip. No bank is left, so nothing
    /// waits for a grace period.
    ///
    /// Hole-free only for the caller that knows the active bank differs from what it
    /// wants in these entries alone, and that no decision reads two of them (the
    /// addresses of one pod of another node: `policy::compiler::Recompiled::Peers`):
    /// each entry changes in one update (a changed prefix is overwritten, never
    /// removed and added), so a packet decides with its peer's old entry or its new
    /// one, each a whole state. The other bank catches up at the next `install`,
    /// which writes what its shadow lacks. Refused before any write if a map would
    /// outgrow its bank. Entries the bank already holds are not written, and with
    /// nothing to write the generation stays; whatever landed is followed by the
    /// move, even when a later write failed; a move that fails stays owed
    /// (`renew`), and one an agent killed in between left undone is made at
    /// adoption.
    pub(super) fn update_peers(
        &mut self,
        v4: &[(PeerPrefix<[u8; 4]>, Option<PeerClass>)],
        v6: &[(PeerPrefix<[u8; 16]>, Option<PeerClass>)],
    ) -> Result<ApplyReport, DataplaneError> {
        // An owed move first, whatever happens next (a refusal, a failed write).
        self.renew(false)?;
        let bank = self.active;
        let shadow = &self.shadows[bank as usize];
        // What the bank already holds is not written, and nothing to write moves
        // nothing: a pass that changed nothing re-decides no flow.
        let v4 = news(&shadow.peers_v4, v4);
        let v6 = news(&shadow.peers_v6, v6);
        let mut done = Written::default();
        if v4.is_empty() && v6.is_empty() {
            return Ok(ApplyReport {
                written: 0,
                removed: 0,
                bank,
            });
        }
        self.check_counts([
            (maps::PEERS_V4.name, grown(&shadow.peers_v4, &v4)),
            (maps::PEERS_V6.name, grown(&shadow.peers_v6, &v6)),
        ])?;
        let mut shadow = std::mem::take(&mut self.shadows[bank as usize]);
        let result = self.set_peers(bank, &mut shadow, &v4, &v6, &mut done);
        self.shadows[bank as usize] = shadow;
        // Whatever landed is followed by the bump, even when a later write failed:
        // no flow keeps a decision made with the entries it replaced.
        // The write's own error first: the renew's says less.
        let renewed = self.renew(done.written + done.removed > 0);
        result?;
        renewed?;
        Ok(ApplyReport {
            written: done.written,
            removed: done.removed,
            bank,
        })
    }

    /// Moves the peer entries of the addresses in `v4` and `v6` to their new
    /// classes in the active bank itself, as `update_peers` writes, when that is
    /// hole-free with the rules the bank holds (`rewrite::classes_move_safely`):
    /// for a caller that knows the active bank differs from what it wants in
    /// these entries alone, each an address's entry before and after, neither
    /// a node's nor a Service's, that only moves class
    /// (`policy::compiler::Recompiled::Reclassed`). `None`, with nothing
    /// written, when it is not: the caller writes the tables whole.
    pub(super) fn update_classes(
        &mut self,
        v4: &[(PeerPrefix<[u8; 4]>, Option<PeerClass>)],
        v6: &[(PeerPrefix<[u8; 16]>, Option<PeerClass>)],
    ) -> Result<Option<ApplyReport>, DataplaneError> {
        // An owed move first, whatever happens next.
        self.renew(false)?;
        let shadow = &self.shadows[self.active as usize];
        let mut moves = BTreeSet::new();
        let moving = rewrite::class_moves(&shadow.peers_v4, v4, 32, &mut moves)
            && rewrite::class_moves(&shadow.peers_v6, v6, 128, &mut moves);
        if !moving || !rewrite::classes_move_safely(shadow, &moves) {
            return Ok(None);
        }
        self.update_peers(v4, v6).map(Some)
    }

    /// Sets the peer entries `v4` and `v6` of bank `bank` (`SplitMaps::set`), in
    /// order, keeping `shadow` (that bank's, taken out) equal to the kernel.
    fn set_peers(
        &mut self,
        bank: u32,
        shadow: &mut BankContent,
        v4: &[(PeerPrefix<[u8; 4]>, Option<PeerClass>)],
        v6: &[(PeerPrefix<[u8; 16]>, Option<PeerClass>)],
        done: &mut Written,
    ) -> Result<(), DataplaneError> {
        self.peers_v4.set(
            &mut shadow.peers_v4,
            v4,
            |addr| PeerKeyV4 { bank, addr },
            done,
        )?;
        self.peers_v6.set(
            &mut shadow.peers_v6,
            v6,
            |addr| PeerKeyV6 { bank, addr },
            done,
        )
    }

    /// Makes bank `bank` of every banked map hold `want`, writing only what differs
    /// from `self.shadows[bank]` and updating that shadow as each write lands.
    fn write_bank(
        &mut self,
        bank: u32,
        want: &BankContent,
        want_own: &OwnShadow,
    ) -> Result<(usize, usize), DataplaneError> {
        let bank = bank_of(bank);
        let index = bank as usize;
        let mut shadow = std::mem::take(&mut self.shadows[index]);
        let mut own = std::mem::take(&mut self.owns[index]);
        let result = self.write_maps(bank, &mut shadow, &mut own, want, want_own);
        self.shadows[index] = shadow;
        self.owns[index] = own;
        let done = result?;
        Ok((done.written, done.removed))
    }

    /// The bank is not read while it is written (`install`), so the order of
    /// the maps does not matter; each map's removals go first.
    fn write_maps(
        &mut self,
        bank: u32,
        shadow: &mut BankContent,
        own: &mut OwnShadow,
        want: &BankContent,
        want_own: &OwnShadow,
    ) -> Result<Written, DataplaneError> {
        let mut done = Written::default();
        // ENDPOINTS: an entry whose endpoint or own addresses differ
        let (_, removals) = diff(&shadow.endpoints, &want.endpoints);
        let map = &mut self.endpoints;
        let name = maps::ENDPOINTS.name;
        for ifindex in removals {
            removed_or_absent(map.remove(&EndpointKey { ifindex, bank }))
                .map_err(map_error(name, "remove"))?;
            shadow.endpoints.remove(&ifindex);
            own.remove(&ifindex);
            done.removed += 1;
        }
        for (ifindex, info) in &want.endpoints {
            let value = EndpointValue {
                info: *info,
                own: want_own.get(ifindex).copied().unwrap_or_default(),
            };
            if shadow.endpoints.get(ifindex) == Some(info) && own.get(ifindex) == Some(&value.own) {
                continue;
            }
            map.insert(
                EndpointKey {
                    ifindex: *ifindex,
                    bank,
                },
                value,
                0,
            )
            .map_err(map_error(name, "insert"))?;
            shadow.endpoints.insert(*ifindex, *info);
            own.insert(*ifindex, value.own);
            done.written += 1;
        }
        // ENDPOINT_ADDRS
        let (upserts, removals) = diff(&shadow.addresses, &want.addresses);
        let map = &mut self.addresses;
        let name = maps::ENDPOINT_ADDRS.name;
        for addr in removals {
            removed_or_absent(map.remove(&AddressKey { addr, bank }))
                .map_err(map_error(name, "remove"))?;
            shadow.addresses.remove(&addr);
            done.removed += 1;
        }
        for (addr, ifindex) in upserts {
            map.insert(AddressKey { addr, bank }, ifindex, 0)
                .map_err(map_error(name, "insert"))?;
            shadow.addresses.insert(addr, ifindex);
            done.written += 1;
        }
        // RULE_SETS
        let (upserts, removals) = diff(&shadow.rule_sets, &want.rule_sets);
        let map = &mut self.rule_sets;
        let name = maps::RULE_SETS.name;
        for key in removals {
            removed_or_absent(map.remove(&RuleSetKey { bank, ..key }))
                .map_err(map_error(name, "remove"))?;
            shadow.rule_sets.remove(&key);
            done.removed += 1;
        }
        for (key, rule_set) in upserts {
            map.insert(RuleSetKey { bank, ..key }, rule_set, 0)
                .map_err(map_error(name, "insert"))?;
            shadow.rule_sets.insert(key, rule_set);
            done.written += 1;
        }
        // PEERS_V4 and PEER_HOSTS_V4, PEERS_V6 and PEER_HOSTS_V6, POLICY and
        // POLICY_PORTS
        let (upserts, removals) = diff(&shadow.peers_v4, &want.peers_v4);
        self.peers_v4.set(
            &mut shadow.peers_v4,
            &trie_changes(upserts, removals),
            |addr| PeerKeyV4 { bank, addr },
            &mut done,
        )?;
        let (upserts, removals) = diff(&shadow.peers_v6, &want.peers_v6);
        self.peers_v6.set(
            &mut shadow.peers_v6,
            &trie_changes(upserts, removals),
            |addr| PeerKeyV6 { bank, addr },
            &mut done,
        )?;
        // Removals first, as for every map: a bank never holds more than its
        // capacity. (The bank is not read while it is written: `install`.)
        let (upserts, removals) = diff(&shadow.policy, &want.policy);
        self.policy.set(
            &mut shadow.policy,
            &trie_changes(upserts, removals),
            |key| PolicyKey { bank, ..key },
            &mut done,
        )?;
        Ok(done)
    }

    /// What the kernel's banked maps hold now, per bank (index = bank). Entries
    /// whose bank field is neither 0 nor 1 are left out (nothing writes them).
    #[cfg(feature = "testing")]
    pub(super) fn read(&self) -> Result<[BankContent; 2], DataplaneError> {
        Ok(self.read_all()?.0)
    }

    /// The own addresses in the kernel's `ENDPOINTS` values now, per bank.
    #[cfg(feature = "testing")]
    pub(super) fn read_own(&self) -> Result<[OwnShadow; 2], DataplaneError> {
        Ok(self.read_all()?.1)
    }

    /// `read`, with the own addresses of the `ENDPOINTS` values.
    fn read_all(&self) -> Result<([BankContent; 2], [OwnShadow; 2]), DataplaneError> {
        let mut banks: [BankContent; 2] = Default::default();
        let mut owns: [OwnShadow; 2] = Default::default();
        let slot = |bank: u32| (bank < 2).then_some(bank as usize);
        for entry in self.endpoints.iter() {
            let (key, value) = entry.map_err(map_error(maps::ENDPOINTS.name, "read"))?;
            if let Some(i) = slot(key.bank) {
                banks[i].endpoints.insert(key.ifindex, value.info);
                owns[i].insert(key.ifindex, value.own);
            }
        }
        for entry in self.addresses.iter() {
            let (key, ifindex) = entry.map_err(map_error(maps::ENDPOINT_ADDRS.name, "read"))?;
            if let Some(i) = slot(key.bank) {
                banks[i].addresses.insert(key.addr, ifindex);
            }
        }
        for entry in self.rule_sets.iter() {
            let (key, rule_set) = entry.map_err(map_error(maps::RULE_SETS.name, "read"))?;
            if let Some(i) = slot(key.bank) {
                banks[i]
                    .rule_sets
                    .insert(RuleSetKey { bank: 0, ..key }, rule_set);
            }
        }
        for ((len, data), class) in self.peers_v4.read()? {
            if let Some(i) = slot(data.bank) {
                banks[i].peers_v4.insert((len, data.addr), class);
            }
        }
        for ((len, data), class) in self.peers_v6.read()? {
            if let Some(i) = slot(data.bank) {
                banks[i].peers_v6.insert((len, data.addr), class);
            }
        }
        for ((len, data), value) in self.policy.read()? {
            if let Some(i) = slot(data.bank) {
                banks[i]
                    .policy
                    .insert((len, PolicyKey { bank: 0, ..data }), value);
            }
        }
        Ok((banks, owns))
    }

    /// Entries of each family's trie and host hash in the kernel, both banks.
    #[cfg(feature = "testing")]
    pub(super) fn peer_map_entries(&self) -> Result<[(&'static str, usize); 4], DataplaneError> {
        let (v4, v6) = (self.peers_v4.counts()?, self.peers_v6.counts()?);
        Ok([
            (self.peers_v4.names.0, v4.0),
            (self.peers_v4.names.1, v4.1),
            (self.peers_v6.names.0, v6.0),
            (self.peers_v6.names.1, v6.1),
        ])
    }

    /// The generation `ACTIVE` holds in the kernel now (`policy_common::bank`).
    pub(super) fn read_generation(&self) -> Result<u32, DataplaneError> {
        self.active_map
            .get(&0, 0)
            .map_err(map_error(maps::ACTIVE.name, "read"))
    }

    /// An own handle on `ACTIVE`, for another thread (`ActiveMover`).
    #[cfg(feature = "testing")]
    pub(super) fn active_mover(&self) -> Result<ActiveMover, DataplaneError> {
        Ok(ActiveMover(reopen(&self.active_map, maps::ACTIVE.name)?))
    }

    /// Flips `ACTIVE` to the next generation, whose bank is the other one: from
    /// the next packet on the classifiers read it, and every tracked flow decided
    /// by an earlier generation is re-decided at its next packet.
    pub(super) fn flip(&mut self) -> Result<(), DataplaneError> {
        let next = self.generation.wrapping_add(1);
        self.active_map
            .set(0, next, 0)
            .map_err(map_error(maps::ACTIVE.name, "flip"))?;
        self.generation = next;
        self.active = bank_of(next);
        // A new generation re-decides every tracked flow: no move is owed.
        self.renew_owed = false;
        self.quiesce.start();
        Ok(())
    }
}

/// A handle of its own on the array `array` (named `name`), for another thread or
/// a closure that runs while the datapath is borrowed (tests).
#[cfg(feature = "testing")]
pub(super) fn reopen<V: aya::Pod>(
    array: &Array<MapData, V>,
    name: &'static str,
) -> Result<Array<MapData, V>, DataplaneError> {
    use aya::maps::IterableMap;
    use std::os::fd::AsFd;
    let fd = array
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| DataplaneError::Map {
            map: name,
            what: format!("duplicating its fd: {e}"),
            source: None,
        })?;
    let open = |source| DataplaneError::MapOp {
        map: name,
        operation: "open again",
        source: Box::new(source),
    };
    let data = MapData::from_fd(fd).map_err(open)?;
    let map = aya::maps::Map::from_map_data(data).map_err(open)?;
    Array::try_from(map).map_err(open)
}

/// A handle on `ACTIVE` of its own that moves it on by two generations (the same
/// bank), as every write in place ends, from any thread: for tests of decisions
/// during which it moves. The datapath it came from does not learn of the moves.
#[cfg(feature = "testing")]
pub struct ActiveMover(Array<MapData, u32>);

#[cfg(feature = "testing")]
impl ActiveMover {
    /// Moves `ACTIVE` on by two generations; returns the new one.
    pub fn move_on(&mut self) -> Result<u32, DataplaneError> {
        let now = self
            .0
            .get(&0, 0)
            .map_err(map_error(maps::ACTIVE.name, "read"))?;
        let next = now.wrapping_add(BANKS);
        self.0
            .set(0, next, 0)
            .map_err(map_error(maps::ACTIVE.name, "move on"))?;
        Ok(next)
    }
}

/// One set of prefixes in the kernel split by length: full-length prefixes
/// (`host_len` bits) in the hash `hosts`, every shorter one in the LPM trie
/// `trie`, under the same key data `K` (bank and the rest). A family's peer
/// prefixes (`policy_common::peer`: hosts in `PEER_HOSTS_*`) and allow entries
/// (`policy_common::policy`: single ports in `POLICY_PORTS`) are kept so. A prefix
/// always lives in the one map its length picks, so changing its value is one
/// overwrite there, as it was in the trie alone (what `Banks::update_peers`
/// needs), and the classifiers' hash-then-trie lookup finds what one trie
/// holding every prefix would: a full-length prefix is the longest there is.
struct SplitMaps<K, V> {
    trie: LpmTrie<MapData, K, V>,
    hosts: HashMap<MapData, K, V>,
    /// The trie's and the hash's map names, for errors.
    names: (&'static str, &'static str),
    /// A prefix this long (as the shadow counts it) is a full-length one.
    host_len: u32,
    /// What the trie's prefix length adds to the shadow's: the bank's bits for
    /// peers (`PEER_PREFIX_BANK`), 0 for allow entries, whose shadow length is the
    /// trie's.
    bias: u32,
}

/// One prefix `SplitMaps::read` found: (shadow prefix length, key data), value.
type SplitRead<K, V> = ((u32, K), V);

impl<K: aya::Pod, V: aya::Pod> SplitMaps<K, V> {
    /// Sets the prefixes `changes` names (`None`: removed), in order, each in
    /// the map its length picks, keeping `shadow` equal to the kernel entry by
    /// entry. `data` is the key data of a prefix in the bank being written.
    fn set<A: Ord + Clone>(
        &mut self,
        shadow: &mut BTreeMap<(u32, A), V>,
        changes: &[((u32, A), Option<V>)],
        data: impl Fn(A) -> K,
        done: &mut Written,
    ) -> Result<(), DataplaneError> {
        let (trie_name, hosts_name) = self.names;
        for (prefix, class) in changes {
            let (len, addr) = prefix.clone();
            let key = data(addr);
            let result = match (len == self.host_len, class) {
                (true, Some(class)) => self
                    .hosts
                    .insert(key, *class, 0)
                    .map_err(map_error(hosts_name, "insert")),
                (true, None) => removed_or_absent(self.hosts.remove(&key))
                    .map_err(map_error(hosts_name, "remove")),
                (false, Some(class)) => self
                    .trie
                    .insert(&Key::new(self.bias + len, key), *class, 0)
                    .map_err(map_error(trie_name, "insert")),
                (false, None) => {
                    removed_or_absent(self.trie.remove(&Key::new(self.bias + len, key)))
                        .map_err(map_error(trie_name, "remove"))
                }
            };
            result?;
            match class {
                Some(class) => {
                    shadow.insert(prefix.clone(), *class);
                    done.written += 1;
                }
                None => {
                    shadow.remove(prefix);
                    done.removed += 1;
                }
            }
        }
        Ok(())
    }

    /// Entries the trie and the hash hold, both banks.
    #[cfg(feature = "testing")]
    fn counts(&self) -> Result<(usize, usize), DataplaneError> {
        let (trie_name, hosts_name) = self.names;
        let mut trie = 0;
        for entry in self.trie.iter() {
            entry.map_err(map_error(trie_name, "read"))?;
            trie += 1;
        }
        let mut hosts = 0;
        for entry in self.hosts.iter() {
            entry.map_err(map_error(hosts_name, "read"))?;
            hosts += 1;
        }
        Ok((trie, hosts))
    }

    /// Every prefix both maps hold, as (shadow prefix length, key data).
    /// Trie entries shorter than the bank field are left out (nothing writes
    /// them). A full-length prefix in the trie is refused: this build never
    /// writes one there, and `set` would never remove it (it removes those from
    /// the hash), so it would answer for its key for good.
    fn read(&self) -> Result<Vec<SplitRead<K, V>>, DataplaneError> {
        let (trie_name, hosts_name) = self.names;
        let mut all = Vec::new();
        for entry in self.trie.iter() {
            let (key, class) = entry.map_err(map_error(trie_name, "read"))?;
            if let Some(len) = key.prefix_len().checked_sub(self.bias) {
                if len == self.host_len {
                    return Err(DataplaneError::Map {
                        map: trie_name,
                        what: "holds a full-length prefix (a host prefix, a single port), \
                               which this agent keeps in a hash map: written by another \
                               build; `policy-agent uninstall` removes it"
                            .to_string(),
                        source: None,
                    });
                }
                all.push(((len, key.data()), class));
            }
        }
        for entry in self.hosts.iter() {
            let (key, class) = entry.map_err(map_error(hosts_name, "read"))?;
            all.push(((self.host_len, key), class));
        }
        Ok(all)
    }
}

/// What `SplitMaps::set` takes: the keys `gone` removed first, then `set`
/// inserted or changed.
pub(super) fn trie_changes<S, V>(
    set: impl IntoIterator<Item = (S, V)>,
    gone: impl IntoIterator<Item = S>,
) -> Vec<(S, Option<V>)> {
    gone.into_iter()
        .map(|k| (k, None))
        .chain(set.into_iter().map(|(k, v)| (k, Some(v))))
        .collect()
}

/// How many entries a map holding `shadow` holds at most once `changes` are
/// made: an overwrite is no growth.
fn grown<S: Ord, V>(shadow: &BTreeMap<S, V>, changes: &[(S, Option<V>)]) -> usize {
    let added = changes
        .iter()
        .filter(|(k, v)| v.is_some() && !shadow.contains_key(k))
        .count();
    shadow.len() + added
}

/// The `changes` that `shadow` does not already hold.
fn news<S: Ord + Clone, V: PartialEq + Copy>(
    shadow: &BTreeMap<S, V>,
    changes: &[(S, Option<V>)],
) -> Vec<(S, Option<V>)> {
    changes
        .iter()
        .filter(|(k, v)| shadow.get(k).copied() != *v)
        .cloned()
        .collect()
}

/// The banked maps whose per-bank capacity `entries` is checked against (a
/// split map's hash bounds its trie's count: `Banks::take`).
const BANKED_MAPS: [&str; 6] = [
    maps::ENDPOINTS.name,
    maps::ENDPOINT_ADDRS.name,
    maps::PEERS_V4.name,
    maps::PEERS_V6.name,
    maps::RULE_SETS.name,
    maps::POLICY.name,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_names_only_new_changed_and_gone_entries() {
        let old = BTreeMap::from([(1, 'a'), (2, 'b'), (3, 'c')]);
        let new = BTreeMap::from([(2, 'b'), (3, 'x'), (4, 'd')]);
        let (upserts, removals) = diff(&old, &new);
        assert_eq!(upserts, vec![(3, 'x'), (4, 'd')]);
        assert_eq!(removals, vec![1]);
        let (upserts, removals) = diff(&new, &new);
        assert!(upserts.is_empty() && removals.is_empty());
    }
}
