//! Writes `DatapathTables` into the kernel maps and reads the verdict counters.
//!
//! The only place that converts the compiler's host-order tables into
//! `policy_common` layouts and wire byte order.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::maps::{lpm_trie::Key, HashMap, LpmTrie, MapData, PerCpuArray};
use policy_common::{
    endpoint::{EndpointInfo, ENDPOINTS_MAP, ISOLATED_EGRESS, ISOLATED_INGRESS},
    peer::{PeerClass, PEERS_V4_MAP},
    policy::{
        PolicyKey, PolicyValue, POLICY_MAP, PREFIX_ALL_PORTS, PREFIX_ALL_PROTOCOLS, PREFIX_FULL,
    },
    verdict::{STATS_LEN, STATS_MAP, STAT_NAMES},
};

use super::{datapath::Datapath, DataplaneError, InterfaceIndex};
use crate::{
    model::ObjectRef,
    policy::tables::{DatapathTables, EndpointEntry, PolicyMatch, RuleRef},
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
}

fn map_error(
    map: &'static str,
    operation: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::MapOp {
        map,
        operation,
        source: Box::new(source),
    }
}

fn endpoint_value(entry: &EndpointEntry) -> EndpointInfo {
    let mut flags = 0;
    if entry.isolated_ingress {
        flags |= ISOLATED_INGRESS;
    }
    if entry.isolated_egress {
        flags |= ISOLATED_EGRESS;
    }
    EndpointInfo {
        endpoint_id: entry.endpoint_id,
        flags,
    }
}

/// The `POLICY` key for a match: wildcards become a shorter prefix.
fn policy_key(m: &PolicyMatch) -> Key<PolicyKey> {
    let prefix = match (m.protocol, m.port) {
        (None, _) => PREFIX_ALL_PROTOCOLS,
        (Some(_), None) => PREFIX_ALL_PORTS,
        (Some(_), Some(block)) => (PREFIX_ALL_PORTS + u32::from(block.bits)).min(PREFIX_FULL),
    };
    Key::new(
        prefix,
        PolicyKey {
            endpoint_id: m.endpoint_id,
            class_id: m.class_id,
            direction: m.direction.code(),
            protocol: m.protocol.unwrap_or(0),
            port_be: m.port.map_or(0, |block| block.first).to_be(),
        },
    )
}

/// An IPv4 address as the `PEERS_V4` key: its bytes in packet order.
fn peer_key(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

impl Datapath {
    /// The map `name` of the loaded object.
    fn map(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf.map_mut(name).ok_or(DataplaneError::Map {
            map: name,
            message: "not found in the object".into(),
        })
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, DataplaneError> {
        let map = self.map(name)?;
        HashMap::try_from(map).map_err(|e| DataplaneError::Map {
            map: name,
            message: e.to_string(),
        })
    }

    fn policy_map(
        &mut self,
    ) -> Result<LpmTrie<&mut MapData, PolicyKey, PolicyValue>, DataplaneError> {
        let map = self.map(POLICY_MAP)?;
        LpmTrie::try_from(map).map_err(|e| DataplaneError::Map {
            map: POLICY_MAP,
            message: e.to_string(),
        })
    }

    /// Makes the maps hold exactly `tables`, for the pods `interfaces` names.
    ///
    /// Order: new and changed `POLICY` entries, then `PEERS_V4`, then `ENDPOINTS`, then
    /// stale entries are removed in the same order. Writing allows before the
    /// identities that use them keeps an unchanged flow allowed throughout; a
    /// renumbered class can still mis-decide a packet during the write (hole-free
    /// incremental updates are the node-agent issue's work).
    pub fn apply(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
    ) -> Result<(), DataplaneError> {
        let mut endpoints = BTreeMap::new();
        for (pod, entry) in &tables.endpoints {
            let index = interfaces
                .get(pod)
                .ok_or_else(|| DataplaneError::NoInterface {
                    pod: pod.to_string(),
                })?;
            endpoints.insert(*index, endpoint_value(entry));
        }
        let policy: Vec<(Key<PolicyKey>, PolicyValue)> = tables
            .policy
            .iter()
            .map(
                |(
                    m,
                    RuleRef {
                        policy_id,
                        rule_index,
                    },
                )| {
                    (
                        policy_key(m),
                        PolicyValue {
                            policy_id: *policy_id,
                            rule_index: *rule_index,
                        },
                    )
                },
            )
            .collect();
        let peers: BTreeMap<u32, PeerClass> = tables
            .peers
            .iter()
            .filter_map(|(net, entry)| match net {
                ipnet::IpNet::V4(v4) if v4.prefix_len() == 32 => Some((
                    peer_key(v4.addr()),
                    PeerClass {
                        class_id: entry.class_id,
                        flags: 0,
                    },
                )),
                _ => None,
            })
            .collect();

        let mut policy_map = self.policy_map()?;
        for (key, value) in &policy {
            policy_map
                .insert(key, value, 0)
                .map_err(map_error(POLICY_MAP, "insert"))?;
        }
        self.insert_all(PEERS_V4_MAP, &peers)?;
        self.insert_all(ENDPOINTS_MAP, &endpoints)?;

        let wanted: BTreeSet<(u32, PolicyKey)> = policy
            .iter()
            .map(|(key, _)| (key.prefix_len(), key.data()))
            .collect();
        let mut policy_map = self.policy_map()?;
        let stale: Vec<Key<PolicyKey>> = policy_map
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !wanted.contains(&(key.prefix_len(), key.data())))
            .collect();
        for key in &stale {
            policy_map
                .remove(key)
                .map_err(map_error(POLICY_MAP, "remove"))?;
        }
        self.remove_others(PEERS_V4_MAP, &peers)?;
        self.remove_others(ENDPOINTS_MAP, &endpoints)
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
        let stale: Vec<K> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !keep.contains_key(key))
            .collect();
        for key in &stale {
            map.remove(key).map_err(map_error(name, "remove"))?;
        }
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
