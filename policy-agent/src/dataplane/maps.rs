//! Writes `DatapathTables` into the kernel maps (through the banks, `banks.rs`)
//! and reads the verdict counters and how full the maps are.
//!
//! With `keys.rs`, the only place that converts the compiler's host-order tables
//! into `policy_common` layouts and wire byte order.

use std::collections::BTreeMap;

use aya::{
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray},
    Ebpf,
};
use policy_common::{
    bank::{bank_of, ACTIVE_MAP, BANKS},
    config::{Config, CONFIG_MAP},
    counters::{
        TrafficCounter, DROP_COUNTERS_MAP, NO_COUNTER, RULE_COUNTERS_MAP, RULE_COUNTERS_MAX,
    },
    ct::{CtKey, CtValue, CONNTRACK_MAP, CT_RECLAIMED_MAP, CT_TRACKED_MAP},
    endpoint::{
        AddressKey, EndpointInfo, EndpointKey, ENDPOINTS_MAP, ENDPOINT_ADDRS_MAP,
        PENDING_ENDPOINT_ID,
    },
    peer::{PeerClass, PeerKeyV4, PeerKeyV6, PEERS_V4_MAP, PEERS_V6_MAP},
    policy::{PolicyKey, PolicyValue, RuleSetKey, POLICY_MAP, RULE_SETS_MAP},
    verdict::{STATS_LEN, STATS_MAP, STAT_NAMES, STAT_VERDICTS},
};

use super::{
    banks::{ApplyReport, BankContent},
    counters::DropMeanings,
    datapath::{map_data, Datapath},
    keys,
    slots::{rule_name, RuleName},
    DataplaneError, InterfaceIndex,
};
use crate::{
    model::ObjectRef,
    policy::tables::{CountedRule, DatapathTables, EndpointEntry},
};

/// How full one map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapUsage {
    /// Map name.
    pub map: &'static str,
    /// Entries in use (for a banked map: in the active bank).
    pub entries: usize,
    /// Entries it can hold (for a banked map: per bank).
    pub capacity: u32,
}

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

    pub(super) fn lpm_trie<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<LpmTrie<&mut MapData, K, V>, DataplaneError> {
        let map = self.map(name)?;
        LpmTrie::try_from(map).map_err(|e| DataplaneError::Map {
            map: name,
            message: e.to_string(),
        })
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
    /// New allow rules get `RULE_COUNTERS` slots (a reused slot is zeroed before
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
        let mut slots = self.rule_slots.clone();
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
            .flat_map(|(id, set)| set.allows.iter().map(move |(m, rule)| (*id, set, m, rule)))
            .map(|(id, set, m, rule)| {
                let key = keys::policy_key(id, m);
                let slot = slot_of
                    .get(&CountedRule::of(set.direction, rule))
                    .copied()
                    .unwrap_or(NO_COUNTER);
                (
                    (key.prefix_len(), key.data()),
                    keys::policy_value(rule, slot),
                )
            })
            .collect();
        (want.peers_v4, want.peers_v6) = keys::peer_keys(&tables.peers);
        // Reused slots start from zero before any entry of their new rule can count
        // in them.
        let (report, flipped) = self.install(&want, |datapath| {
            datapath.zero_counters(RULE_COUNTERS_MAP, &reused)
        })?;
        if flipped {
            // Only an assignment that became active is worth keeping across a
            // restart.
            self.save_slots(&slots);
        }
        self.rule_slots = slots;
        // The new state is live (or was already): from here on a failure is
        // logged, never returned, or the caller would take the previous state
        // for the one enforcing. Deny slots whose zeroing fails are zeroed again
        // by the next `apply`.
        let meanings = DropMeanings::of(tables);
        self.drop_zero_owed
            .extend(self.drop_meanings.changed_slots(&meanings));
        self.drop_meanings = meanings;
        let owed: Vec<u32> = self.drop_zero_owed.iter().copied().collect();
        match self.zero_counters(DROP_COUNTERS_MAP, &owed) {
            Ok(()) => self.drop_zero_owed.clear(),
            Err(error) => tracing::warn!(
                %error,
                slots = owed.len(),
                "deny counters of changed isolating policies not zeroed (the new state is active); the next apply zeroes them"
            ),
        }
        tracing::debug!(
            written = report.written,
            removed = report.removed,
            bank = report.bank,
            "tables applied"
        );
        Ok(report)
    }

    /// Refuses `want` if some banked map would hold more entries in one bank than
    /// a bank holds: the map as a whole would take them while the other bank is
    /// small, and fail part way once it is not.
    pub(super) fn check_fits(&self, want: &BankContent) -> Result<(), DataplaneError> {
        for (map, entries) in want.entries() {
            let capacity = self.bank_capacity.get(map).copied().unwrap_or(0);
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

    /// Entries and per-bank capacity of each banked map (the active bank's
    /// entries), and the `RULE_COUNTERS` slots held by rules. Read from this
    /// datapath's memory, no syscall: cheap enough for every metrics scrape.
    pub fn map_usage(&self) -> Vec<MapUsage> {
        let active = &self.shadows[self.active as usize];
        let mut usage: Vec<MapUsage> = active
            .entries()
            .into_iter()
            .map(|(map, entries)| MapUsage {
                map,
                entries,
                capacity: self.bank_capacity.get(map).copied().unwrap_or(0),
            })
            .collect();
        usage.push(MapUsage {
            map: RULE_COUNTERS_MAP,
            entries: self.rule_slots.len(),
            capacity: RULE_COUNTERS_MAX,
        });
        usage
    }

    /// What bank `bank` holds, as this datapath last wrote or read it (for tests
    /// and diagnostics; `read_banks` reads the kernel).
    pub fn bank_shadow(&self, bank: u32) -> &BankContent {
        &self.shadows[bank_of(bank) as usize]
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
            .map_err(map_error(CONFIG_MAP, "write"))?;
        self.config = *config;
        Ok(())
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

/// Per-bank capacity of each banked map in `ebpf`: its `max_entries` in the
/// kernel over `BANKS`.
pub(super) fn bank_capacities(ebpf: &Ebpf) -> Result<BTreeMap<&'static str, u32>, DataplaneError> {
    let mut capacities = BTreeMap::new();
    for name in BANKED_MAPS {
        let data = ebpf
            .map(name)
            .and_then(map_data)
            .ok_or(DataplaneError::Map {
                map: name,
                message: "not found in the object".into(),
            })?;
        let info = data.info().map_err(map_error(name, "read info"))?;
        capacities.insert(name, info.max_entries() / BANKS);
    }
    Ok(capacities)
}

/// The banked maps.
pub(super) const BANKED_MAPS: [&str; 6] = [
    ENDPOINTS_MAP,
    ENDPOINT_ADDRS_MAP,
    PEERS_V4_MAP,
    PEERS_V6_MAP,
    RULE_SETS_MAP,
    POLICY_MAP,
];

/// `(map, key size, value size)` this agent's layouts give the pinned maps (an
/// LPM trie's key is its data plus the 4-byte prefix length; `EVENTS`, a ring
/// buffer, has neither).
pub(super) fn pinned_sizes() -> [(&'static str, u32, u32); 14] {
    fn size<T>() -> u32 {
        u32::try_from(size_of::<T>()).unwrap_or(u32::MAX)
    }
    let lpm = |data: u32| data + 4;
    [
        (ACTIVE_MAP, 4, 4),
        (ENDPOINTS_MAP, size::<EndpointKey>(), size::<EndpointInfo>()),
        (ENDPOINT_ADDRS_MAP, size::<AddressKey>(), 4),
        (PEERS_V4_MAP, lpm(size::<PeerKeyV4>()), size::<PeerClass>()),
        (PEERS_V6_MAP, lpm(size::<PeerKeyV6>()), size::<PeerClass>()),
        (RULE_SETS_MAP, size::<RuleSetKey>(), 4),
        (POLICY_MAP, lpm(size::<PolicyKey>()), size::<PolicyValue>()),
        (CONNTRACK_MAP, size::<CtKey>(), size::<CtValue>()),
        (CT_TRACKED_MAP, 4, 8),
        (CT_RECLAIMED_MAP, 4, 8),
        (STATS_MAP, 4, 8),
        (CONFIG_MAP, 4, size::<Config>()),
        (RULE_COUNTERS_MAP, 4, size::<TrafficCounter>()),
        (DROP_COUNTERS_MAP, 4, size::<TrafficCounter>()),
    ]
}
