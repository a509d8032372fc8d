//! Writes `DatapathTables` into the kernel maps and reads the verdict counters.
//!
//! The only place that converts the compiler's host-order tables into
//! `policy_common` layouts and wire byte order.

use std::collections::BTreeMap;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray};
use policy_common::{
    config::{Config, CONFIG_MAP},
    counters::{DENY_COUNTERS_MAP, NO_COUNTER, RULE_COUNTERS_MAP},
    endpoint::{ENDPOINTS_MAP, ENDPOINT_ADDRS_MAP},
    peer::{PEERS_V4_MAP, PEERS_V6_MAP},
    policy::{PolicyKey, PolicyValue, POLICY_MAP},
    verdict::{STATS_LEN, STATS_MAP, STAT_NAMES, STAT_VERDICTS},
};

use super::{
    counters::DenyMeanings,
    datapath::Datapath,
    keys::{self, LpmEntry},
    slots::{rule_name, RuleName},
    DataplaneError, InterfaceIndex,
};
use crate::{
    model::ObjectRef,
    policy::tables::{CountedRule, DatapathTables},
};

/// Verdict counters summed over CPUs, with their names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `(name, count)` for every named counter, in `STATS` order.
    pub counters: Vec<(&'static str, u64)>,
}

impl Stats {
    /// The count of one counter by name (0 when unknown).
    pub fn get(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    }

    /// Every counter that grew since `before`, with how much, in `STATS` order.
    pub fn growth_since(&self, before: &Stats) -> Vec<(&'static str, u64)> {
        self.counters
            .iter()
            .map(|&(name, count)| (name, count.saturating_sub(before.get(name))))
            .filter(|&(_, grown)| grown > 0)
            .collect()
    }

    /// `growth_since` of the verdict counters only (below `STAT_VERDICTS`: each
    /// packet bumps exactly one), leaving out side counters such as lost events.
    pub fn verdict_growth_since(&self, before: &Stats) -> Vec<(&'static str, u64)> {
        let verdicts = &STAT_NAMES[..STAT_VERDICTS as usize];
        self.growth_since(before)
            .into_iter()
            .filter(|(name, _)| verdicts.contains(name))
            .collect()
    }
}

/// Turns an aya map error into a `DataplaneError::MapOp` naming map and operation.
pub(super) fn map_error(
    map: &'static str,
    operation: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::MapOp {
        map,
        operation,
        source: Box::new(source),
    }
}

/// The keys of map `name` that `keep` rejects. A key listing that fails part way is
/// an error, not a shorter list: the keys it never reached could be stale allows.
fn stale_keys<K>(
    name: &'static str,
    keys: impl IntoIterator<Item = Result<K, aya::maps::MapError>>,
    keep: impl Fn(&K) -> bool,
) -> Result<Vec<K>, DataplaneError> {
    let mut stale = Vec::new();
    for key in keys {
        let key = key.map_err(map_error(name, "list keys"))?;
        if !keep(&key) {
            stale.push(key);
        }
    }
    Ok(stale)
}

impl Datapath {
    /// The map `name` of the loaded object.
    pub(super) fn map(
        &mut self,
        name: &'static str,
    ) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf.map_mut(name).ok_or(DataplaneError::Map {
            map: name,
            message: "not found in the object".into(),
        })
    }

    pub(super) fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, DataplaneError> {
        let map = self.map(name)?;
        HashMap::try_from(map).map_err(|e| DataplaneError::Map {
            map: name,
            message: e.to_string(),
        })
    }

    fn lpm_trie<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<LpmTrie<&mut MapData, K, V>, DataplaneError> {
        let map = self.map(name)?;
        LpmTrie::try_from(map).map_err(|e| DataplaneError::Map {
            map: name,
            message: e.to_string(),
        })
    }

    /// Makes the maps hold exactly `tables`, for the pods `interfaces` names.
    ///
    /// Order: new and changed `POLICY` entries, then `PEERS_V4`, `PEERS_V6`,
    /// `ENDPOINT_ADDRS` and `ENDPOINTS`; then stale entries are removed in the same
    /// order. New allow rules get `RULE_COUNTERS` slots (a reused slot is zeroed
    /// first; a rule keeps its slot across updates, see `slots.rs`), and last the
    /// deny slots whose isolating policies changed are zeroed. Writing allows before the identities
    /// that use them keeps an unchanged
    /// flow allowed throughout; a renumbered class can still mis-decide a packet
    /// during the write (hole-free incremental updates are the node-agent issue's
    /// work).
    pub fn apply(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
    ) -> Result<(), DataplaneError> {
        let interface = |pod: &ObjectRef| {
            interfaces
                .get(pod)
                .copied()
                .ok_or_else(|| DataplaneError::NoInterface {
                    pod: pod.to_string(),
                })
        };
        let mut endpoints = BTreeMap::new();
        for (pod, entry) in &tables.endpoints {
            endpoints.insert(interface(pod)?, keys::endpoint_value(entry));
        }
        let mut addresses = BTreeMap::new();
        for (addr, pod) in &tables.endpoint_addresses {
            addresses.insert(keys::address_key(*addr), interface(pod)?);
        }
        // Reused slots start from zero before any entry of their new rule can count
        // in them.
        let mut slots = self.rule_slots.clone();
        let named: Vec<(CountedRule, RuleName)> = tables
            .counted_rules()
            .into_iter()
            .filter_map(|rule| Some((rule, rule_name(tables, &rule)?)))
            .collect();
        let names: Vec<RuleName> = named.iter().map(|(_, name)| name.clone()).collect();
        let reused = slots.assign(&names)?;
        self.zero_counters(RULE_COUNTERS_MAP, &reused)?;
        // Each rule's slot once, not per POLICY entry (a rule has many).
        let slot_of: BTreeMap<CountedRule, u32> = named
            .iter()
            .filter_map(|(rule, name)| Some((*rule, slots.slot(name)?)))
            .collect();
        let policy: BTreeMap<LpmEntry<PolicyKey>, PolicyValue> = tables
            .policy
            .iter()
            .map(|(m, rule)| {
                let key = keys::policy_key(m);
                let slot = slot_of
                    .get(&CountedRule::of(m, rule))
                    .copied()
                    .unwrap_or(NO_COUNTER);
                (
                    (key.prefix_len(), key.data()),
                    keys::policy_value(rule, slot),
                )
            })
            .collect();
        let (peers_v4, peers_v6) = keys::peer_keys(&tables.peers);

        self.insert_lpm(POLICY_MAP, &policy)?;
        self.insert_lpm(PEERS_V4_MAP, &peers_v4)?;
        self.insert_lpm(PEERS_V6_MAP, &peers_v6)?;
        self.insert_all(ENDPOINT_ADDRS_MAP, &addresses)?;
        self.insert_all(ENDPOINTS_MAP, &endpoints)?;

        self.remove_other_prefixes(POLICY_MAP, &policy)?;
        self.remove_other_prefixes(PEERS_V4_MAP, &peers_v4)?;
        self.remove_other_prefixes(PEERS_V6_MAP, &peers_v6)?;
        self.remove_others(ENDPOINT_ADDRS_MAP, &addresses)?;
        self.remove_others(ENDPOINTS_MAP, &endpoints)?;

        self.rule_slots = slots;
        // The old meanings stay until their changed slots are zeroed: an `apply`
        // that fails here zeroes the same slots next time, not every slot.
        let meanings = DenyMeanings::of(tables);
        let changed = self.deny_meanings.changed_slots(&meanings);
        self.zero_counters(DENY_COUNTERS_MAP, &changed)?;
        self.deny_meanings = meanings;
        Ok(())
    }

    /// Inserts or updates every entry of `entries` in LPM trie `name`.
    fn insert_lpm<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        entries: &BTreeMap<LpmEntry<K>, V>,
    ) -> Result<(), DataplaneError> {
        let mut trie = self.lpm_trie::<K, V>(name)?;
        for ((prefix_len, data), value) in entries {
            trie.insert(&Key::new(*prefix_len, *data), value, 0)
                .map_err(map_error(name, "insert"))?;
        }
        Ok(())
    }

    /// Removes from LPM trie `name` every prefix that `keep` does not hold.
    fn remove_other_prefixes<K: aya::Pod + Ord, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keep: &BTreeMap<LpmEntry<K>, V>,
    ) -> Result<(), DataplaneError> {
        let mut trie = self.lpm_trie::<K, V>(name)?;
        let stale = stale_keys(name, trie.keys(), |key: &Key<K>| {
            keep.contains_key(&(key.prefix_len(), key.data()))
        })?;
        for key in &stale {
            trie.remove(key).map_err(map_error(name, "remove"))?;
        }
        Ok(())
    }

    /// Inserts or updates every entry of `entries` in hash map `name`.
    fn insert_all<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        entries: &BTreeMap<K, V>,
    ) -> Result<(), DataplaneError> {
        let mut map = self.hash_map::<K, V>(name)?;
        for (key, value) in entries {
            map.insert(key, value, 0)
                .map_err(map_error(name, "insert"))?;
        }
        Ok(())
    }

    /// Removes from hash map `name` every key that `keep` does not hold.
    fn remove_others<K: aya::Pod + Ord, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keep: &BTreeMap<K, V>,
    ) -> Result<(), DataplaneError> {
        let mut map = self.hash_map::<K, V>(name)?;
        let stale = stale_keys(name, map.keys(), |key| keep.contains_key(key))?;
        for key in &stale {
            map.remove(key).map_err(map_error(name, "remove"))?;
        }
        Ok(())
    }

    /// Writes the `CONFIG` entry the classifiers read per packet; takes effect
    /// from the next packet.
    pub fn set_config(&mut self, config: &Config) -> Result<(), DataplaneError> {
        let map = self.map(CONFIG_MAP)?;
        let mut array: Array<&mut MapData, Config> =
            Array::try_from(map).map_err(|e| DataplaneError::Map {
                map: CONFIG_MAP,
                message: e.to_string(),
            })?;
        array
            .set(0, config, 0)
            .map_err(map_error(CONFIG_MAP, "write"))
    }

    /// Reads the verdict counters, summed over CPUs.
    pub fn stats(&mut self) -> Result<Stats, DataplaneError> {
        let map = self.map(STATS_MAP)?;
        let array: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| DataplaneError::Map {
                map: STATS_MAP,
                message: e.to_string(),
            })?;
        let mut counters = Vec::new();
        for index in 0..STATS_LEN {
            let name = STAT_NAMES[index as usize];
            if name.is_empty() {
                continue;
            }
            let values = array.get(&index, 0).map_err(map_error(STATS_MAP, "read"))?;
            counters.push((name, values.iter().sum()));
        }
        Ok(Stats { counters })
    }
}

#[cfg(test)]
mod tests {
    use aya::{maps::MapError, sys::SyscallError};

    use super::*;

    #[test]
    fn a_key_listing_that_fails_part_way_is_an_error_not_a_shorter_list() {
        let failed = MapError::SyscallError(SyscallError {
            call: "bpf_map_get_next_key",
            io_error: std::io::Error::from_raw_os_error(nix::libc::EFAULT),
        });
        let keys = vec![Ok(1u32), Err(failed), Ok(3)];
        match stale_keys("ENDPOINTS", keys, |_| false) {
            Err(DataplaneError::MapOp { map, operation, .. }) => {
                assert_eq!((map, operation), ("ENDPOINTS", "list keys"));
            }
            other => panic!("expected a map error, got {other:?}"),
        }
        let keys: Vec<Result<u32, MapError>> = vec![Ok(1), Ok(2), Ok(3)];
        assert_eq!(
            stale_keys("ENDPOINTS", keys, |key| *key == 2).ok(),
            Some(vec![1, 3])
        );
    }
}
