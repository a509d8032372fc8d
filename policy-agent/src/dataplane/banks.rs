//! The two banks of the desired-state maps (`policy_common::bank`): what each one
//! holds, in host terms, and the writes that turn one bank into another content.
//!
//! `BankContent` is one bank with the bank left out of every key (zero in the
//! keys that carry it as a field): the shadow the
//! datapath keeps per bank (so an update diffs against memory, not the kernel),
//! what `Datapath::read_bank` reads back, and what `apply` wants a bank to hold.
//! `write_bank` changes only the entries that differ, removals first (so a bank
//! never holds more than its capacity), and keeps the shadow equal to the kernel
//! entry by entry, even when a write fails part way.

use std::collections::BTreeMap;

use aya::maps::{lpm_trie::Key, Array, MapData};
use policy_common::{
    bank::{bank_of, other, ACTIVE_MAP},
    endpoint::{AddressKey, EndpointInfo, EndpointKey, ENDPOINTS_MAP, ENDPOINT_ADDRS_MAP},
    peer::{PeerClass, PeerKeyV4, PeerKeyV6, PEERS_V4_MAP, PEERS_V6_MAP, PEER_PREFIX_BANK},
    policy::{PolicyKey, PolicyValue, RuleSetKey, POLICY_MAP, RULE_SETS_MAP},
};

use super::{keys, maps::map_error, Datapath, DataplaneError, InterfaceIndex};
use crate::policy::tables::EndpointEntry;

/// A peer prefix as `(address prefix length, address)`; the bank's 32 bits are
/// added to the length only in the kernel key.
pub type PeerPrefix<A> = (u32, A);

/// A `POLICY` entry's key as `(LPM prefix length, key with bank 0)`.
pub type PolicyPrefix = (u32, PolicyKey);

/// What one bank holds, keys without their bank.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankContent {
    /// `ENDPOINTS`: host-side interface -> the endpoint behind it.
    pub endpoints: BTreeMap<InterfaceIndex, EndpointInfo>,
    /// `ENDPOINT_ADDRS`: address key (`address_key`) -> interface.
    pub addresses: BTreeMap<[u8; 16], InterfaceIndex>,
    /// `PEERS_V4`.
    pub peers_v4: BTreeMap<PeerPrefix<[u8; 4]>, PeerClass>,
    /// `PEERS_V6`.
    pub peers_v6: BTreeMap<PeerPrefix<[u8; 16]>, PeerClass>,
    /// `RULE_SETS`: key with bank 0 -> rule set id.
    pub rule_sets: BTreeMap<RuleSetKey, u32>,
    /// `POLICY`.
    pub policy: BTreeMap<PolicyPrefix, PolicyValue>,
}

impl BankContent {
    /// Entries of each banked map, by map name.
    pub fn entries(&self) -> [(&'static str, usize); 6] {
        [
            (ENDPOINTS_MAP, self.endpoints.len()),
            (ENDPOINT_ADDRS_MAP, self.addresses.len()),
            (PEERS_V4_MAP, self.peers_v4.len()),
            (PEERS_V6_MAP, self.peers_v6.len()),
            (RULE_SETS_MAP, self.rule_sets.len()),
            (POLICY_MAP, self.policy.len()),
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

impl Datapath {
    /// Makes the classifiers decide by what the active bank holds plus `extra`
    /// `ENDPOINTS` entries (an entry the active bank has for the same interface is
    /// kept): for a new pod veth that appears before this agent has tables of its
    /// own to write (an adopted datapath whose first sync failed). Hole-free and
    /// refused before any write like `apply`; nothing to add flips nothing.
    pub fn add_endpoints(
        &mut self,
        extra: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        let mut want = self.shadows[self.active as usize].clone();
        for (ifindex, entry) in extra {
            want.endpoints
                .entry(*ifindex)
                .or_insert_with(|| keys::endpoint_value(entry));
        }
        Ok(self.install(&want, |_| Ok(()))?.0)
    }

    /// Makes `want` what the classifiers read, hole-free: refused before any write
    /// if it does not fit one bank; when it differs from the active bank, waits out
    /// the last flip's grace period, runs `before_write`, writes the idle bank and
    /// flips. Returns the report and whether it flipped.
    pub(super) fn install(
        &mut self,
        want: &BankContent,
        before_write: impl FnOnce(&mut Self) -> Result<(), DataplaneError>,
    ) -> Result<(ApplyReport, bool), DataplaneError> {
        self.check_fits(want)?;
        let mut report = ApplyReport {
            bank: self.active,
            ..ApplyReport::default()
        };
        if *want == self.shadows[self.active as usize] {
            return Ok((report, false));
        }
        self.quiesce.finish()?;
        before_write(self)?;
        let target = other(self.active);
        (report.written, report.removed) = self.write_bank(target, want)?;
        self.flip()?;
        report.bank = target;
        Ok((report, true))
    }

    /// Makes bank `bank` of every banked map hold `want`, writing only what differs
    /// from `self.shadows[bank]` and updating that shadow as each write lands.
    pub(super) fn write_bank(
        &mut self,
        bank: u32,
        want: &BankContent,
    ) -> Result<(usize, usize), DataplaneError> {
        let bank = bank_of(bank);
        let index = bank as usize;
        let mut shadow = std::mem::take(&mut self.shadows[index]);
        let result = self.write_maps(bank, &mut shadow, want);
        self.shadows[index] = shadow;
        let done = result?;
        Ok((done.written, done.removed))
    }

    fn write_maps(
        &mut self,
        bank: u32,
        shadow: &mut BankContent,
        want: &BankContent,
    ) -> Result<Written, DataplaneError> {
        let mut done = Written::default();
        // ENDPOINTS
        let (upserts, removals) = diff(&shadow.endpoints, &want.endpoints);
        let mut map = self.hash_map::<EndpointKey, EndpointInfo>(ENDPOINTS_MAP)?;
        for ifindex in removals {
            removed_or_absent(map.remove(&EndpointKey { ifindex, bank }))
                .map_err(map_error(ENDPOINTS_MAP, "remove"))?;
            shadow.endpoints.remove(&ifindex);
            done.removed += 1;
        }
        for (ifindex, info) in upserts {
            map.insert(EndpointKey { ifindex, bank }, info, 0)
                .map_err(map_error(ENDPOINTS_MAP, "insert"))?;
            shadow.endpoints.insert(ifindex, info);
            done.written += 1;
        }
        // ENDPOINT_ADDRS
        let (upserts, removals) = diff(&shadow.addresses, &want.addresses);
        let mut map = self.hash_map::<AddressKey, u32>(ENDPOINT_ADDRS_MAP)?;
        for addr in removals {
            removed_or_absent(map.remove(&AddressKey { addr, bank }))
                .map_err(map_error(ENDPOINT_ADDRS_MAP, "remove"))?;
            shadow.addresses.remove(&addr);
            done.removed += 1;
        }
        for (addr, ifindex) in upserts {
            map.insert(AddressKey { addr, bank }, ifindex, 0)
                .map_err(map_error(ENDPOINT_ADDRS_MAP, "insert"))?;
            shadow.addresses.insert(addr, ifindex);
            done.written += 1;
        }
        // RULE_SETS
        let (upserts, removals) = diff(&shadow.rule_sets, &want.rule_sets);
        let mut map = self.hash_map::<RuleSetKey, u32>(RULE_SETS_MAP)?;
        for key in removals {
            removed_or_absent(map.remove(&RuleSetKey { bank, ..key }))
                .map_err(map_error(RULE_SETS_MAP, "remove"))?;
            shadow.rule_sets.remove(&key);
            done.removed += 1;
        }
        for (key, rule_set) in upserts {
            map.insert(RuleSetKey { bank, ..key }, rule_set, 0)
                .map_err(map_error(RULE_SETS_MAP, "insert"))?;
            shadow.rule_sets.insert(key, rule_set);
            done.written += 1;
        }
        // PEERS_V4, PEERS_V6, POLICY
        let v4 = |(len, addr): PeerPrefix<[u8; 4]>| {
            Key::new(PEER_PREFIX_BANK + len, PeerKeyV4 { bank, addr })
        };
        self.write_trie(
            PEERS_V4_MAP,
            &mut shadow.peers_v4,
            &want.peers_v4,
            v4,
            &mut done,
        )?;
        let v6 = |(len, addr): PeerPrefix<[u8; 16]>| {
            Key::new(PEER_PREFIX_BANK + len, PeerKeyV6 { bank, addr })
        };
        self.write_trie(
            PEERS_V6_MAP,
            &mut shadow.peers_v6,
            &want.peers_v6,
            v6,
            &mut done,
        )?;
        let policy = |(len, key): PolicyPrefix| Key::new(len, PolicyKey { bank, ..key });
        self.write_trie(
            POLICY_MAP,
            &mut shadow.policy,
            &want.policy,
            policy,
            &mut done,
        )?;
        Ok(done)
    }

    /// `write_maps` for one LPM trie whose kernel key of a shadow key is `key`.
    fn write_trie<S: Ord + Clone, K: aya::Pod, V: aya::Pod + PartialEq>(
        &mut self,
        name: &'static str,
        shadow: &mut BTreeMap<S, V>,
        want: &BTreeMap<S, V>,
        key: impl Fn(S) -> Key<K>,
        done: &mut Written,
    ) -> Result<(), DataplaneError> {
        let (upserts, removals) = diff(shadow, want);
        let mut trie = self.lpm_trie::<K, V>(name)?;
        for k in removals {
            removed_or_absent(trie.remove(&key(k.clone()))).map_err(map_error(name, "remove"))?;
            shadow.remove(&k);
            done.removed += 1;
        }
        for (k, v) in upserts {
            trie.insert(&key(k.clone()), v, 0)
                .map_err(map_error(name, "insert"))?;
            shadow.insert(k, v);
            done.written += 1;
        }
        Ok(())
    }

    /// What the kernel's banked maps hold now, per bank (index = bank). Entries
    /// whose bank field is neither 0 nor 1 are left out (nothing writes them).
    pub fn read_banks(&mut self) -> Result<[BankContent; 2], DataplaneError> {
        let mut banks: [BankContent; 2] = Default::default();
        let slot = |bank: u32| (bank < 2).then_some(bank as usize);
        let map = self.hash_map::<EndpointKey, EndpointInfo>(ENDPOINTS_MAP)?;
        for entry in map.iter() {
            let (key, info) = entry.map_err(map_error(ENDPOINTS_MAP, "read"))?;
            if let Some(i) = slot(key.bank) {
                banks[i].endpoints.insert(key.ifindex, info);
            }
        }
        let map = self.hash_map::<AddressKey, u32>(ENDPOINT_ADDRS_MAP)?;
        for entry in map.iter() {
            let (key, ifindex) = entry.map_err(map_error(ENDPOINT_ADDRS_MAP, "read"))?;
            if let Some(i) = slot(key.bank) {
                banks[i].addresses.insert(key.addr, ifindex);
            }
        }
        let map = self.hash_map::<RuleSetKey, u32>(RULE_SETS_MAP)?;
        for entry in map.iter() {
            let (key, rule_set) = entry.map_err(map_error(RULE_SETS_MAP, "read"))?;
            if let Some(i) = slot(key.bank) {
                banks[i]
                    .rule_sets
                    .insert(RuleSetKey { bank: 0, ..key }, rule_set);
            }
        }
        let trie = self.lpm_trie::<PeerKeyV4, PeerClass>(PEERS_V4_MAP)?;
        for entry in trie.iter() {
            let (key, class) = entry.map_err(map_error(PEERS_V4_MAP, "read"))?;
            let (len, data) = (key.prefix_len(), key.data());
            if let (Some(i), Some(len)) = (slot(data.bank), len.checked_sub(PEER_PREFIX_BANK)) {
                banks[i].peers_v4.insert((len, data.addr), class);
            }
        }
        let trie = self.lpm_trie::<PeerKeyV6, PeerClass>(PEERS_V6_MAP)?;
        for entry in trie.iter() {
            let (key, class) = entry.map_err(map_error(PEERS_V6_MAP, "read"))?;
            let (len, data) = (key.prefix_len(), key.data());
            if let (Some(i), Some(len)) = (slot(data.bank), len.checked_sub(PEER_PREFIX_BANK)) {
                banks[i].peers_v6.insert((len, data.addr), class);
            }
        }
        let trie = self.lpm_trie::<PolicyKey, PolicyValue>(POLICY_MAP)?;
        for entry in trie.iter() {
            let (key, value) = entry.map_err(map_error(POLICY_MAP, "read"))?;
            let (len, data) = (key.prefix_len(), key.data());
            if let Some(i) = slot(data.bank) {
                banks[i]
                    .policy
                    .insert((len, PolicyKey { bank: 0, ..data }), value);
            }
        }
        Ok(banks)
    }

    fn active_array(&mut self) -> Result<Array<&mut MapData, u32>, DataplaneError> {
        let map = self.map(ACTIVE_MAP)?;
        Array::try_from(map).map_err(|e| DataplaneError::Map {
            map: ACTIVE_MAP,
            message: e.to_string(),
        })
    }

    /// The bank `ACTIVE` names in the kernel now.
    pub fn read_active_bank(&mut self) -> Result<u32, DataplaneError> {
        Ok(bank_of(self.read_generation()?))
    }

    /// The generation `ACTIVE` holds in the kernel now (`policy_common::bank`).
    pub(super) fn read_generation(&mut self) -> Result<u32, DataplaneError> {
        let array = self.active_array()?;
        array.get(&0, 0).map_err(map_error(ACTIVE_MAP, "read"))
    }

    /// Flips `ACTIVE` to the next generation, whose bank is the other one: from
    /// the next packet on the classifiers read it, and every tracked flow decided
    /// by an earlier generation is re-decided at its next packet.
    pub(super) fn flip(&mut self) -> Result<(), DataplaneError> {
        let next = self.generation.wrapping_add(1);
        let mut array = self.active_array()?;
        array
            .set(0, next, 0)
            .map_err(map_error(ACTIVE_MAP, "flip"))?;
        self.generation = next;
        self.active = bank_of(next);
        self.quiesce.start();
        Ok(())
    }
}

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
