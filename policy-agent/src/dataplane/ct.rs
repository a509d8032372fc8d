//! `CONNTRACK` from userspace: the flows the classifiers allowed (or deferred), in
//! host types, for tests and diagnostics; and the sweep that removes entries idle
//! past their timeout (`ConntrackSweeper`), the only removal there is: the table is
//! a plain hash, so no flow is ever evicted, and each removal is tallied in
//! `CT_RECLAIMED`, so an interface's count of entries stays exact
//! (`policy_common::ct`). Only tests age entries (`Datapath::age_conntrack`), to
//! see expiry without waiting for it. `Conntrack` owns the three maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use aya::{
    maps::{HashMap, IterableMap, Map, MapData, MapError},
    Ebpf,
};
use policy_common::{
    config::Config,
    counters::NO_COUNTER,
    ct::{
        CtKey, CtValue, CT_FLAG_AUDIT, CT_FLAG_DEFERRED, CT_FLAG_DIRECT, CT_FLAG_LOCAL_OWNED,
        CT_FLAG_REVOKED,
    },
    maps::{self, MapDef},
    verdict::DIRECTION_INGRESS,
};

use super::{
    keys::key_address,
    maps::{duplicate, map_error},
    DataplaneError, InterfaceIndex,
};
use crate::policy::tables::Direction;

/// How much longer than its timeout an entry must be idle before the sweep removes
/// it: the classifiers stamp entries with a clock that lags CLOCK_MONOTONIC by up
/// to three scheduler ticks (the coarse clock, and a per-CPU cached reading of it
/// at most two ticks behind that), and a flow at the edge of its timeout is
/// theirs to decide.
const SWEEP_MARGIN: Duration = Duration::from_secs(1);

/// One tracked flow as its first packet saw it at a pod interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedFlow {
    /// The pod's host-side interface.
    pub ifindex: InterfaceIndex,
    /// Direction of the first packet relative to that pod.
    pub direction: Direction,
    /// Source address and port (ICMP echo: identifier).
    pub source: (IpAddr, u16),
    /// Destination address and port (ICMP echo: identifier).
    pub destination: (IpAddr, u16),
    /// IP protocol number.
    pub protocol: u8,
    /// The `RULE_COUNTERS` slot of the rule that allowed it (with `audit`, the
    /// `DROP_COUNTERS` slot, or the would-denying ClusterNetworkPolicy rule's
    /// `RULE_COUNTERS` slot when the entry has `CT_FLAG_RULE_SLOT`); `None` when
    /// no rule decided (unisolated, node, deferred).
    pub counter_slot: Option<u32>,
    /// A flow that passes only because its direction is in audit mode.
    pub audit: bool,
    /// `policy_common::ct::CT_STATE_*`.
    pub state: u8,
    /// When the flow's latest packet passed: CLOCK_MONOTONIC in nanoseconds, at
    /// tick resolution (`bpf_ktime_get_coarse_ns`); with `state` it decides when the
    /// flow expires.
    pub last_seen_ns: u64,
    /// An egress flow to a Service whose verdict was deferred past DNAT.
    pub deferred: bool,
    /// A flow a later policy denied: its packets are dropped (`drop_revoked`).
    pub revoked: bool,
    /// The `ACTIVE` generation of the state that last decided the flow.
    pub generation: u32,
    /// `CT_FLAG_LOCAL_OWNED`: that decision found the flow's local address (the
    /// first packet's source at egress, its destination at ingress) to be one of
    /// the interface's own pod addresses in its bank, so the classifiers' fast
    /// path may pass the flow's packets of that generation on the entry alone.
    pub local_owned: bool,
    /// `CT_FLAG_DIRECT`: decided at this interface's own hook, not for a Service
    /// flow's translated tuple at the backend's side, so its replies need no
    /// verification for the client.
    pub direct: bool,
}

pub(super) fn tracked_flow(key: CtKey, value: CtValue) -> TrackedFlow {
    TrackedFlow {
        ifindex: key.ifindex,
        direction: if key.direction == DIRECTION_INGRESS {
            Direction::Ingress
        } else {
            Direction::Egress
        },
        source: (key_address(key.saddr), u16::from_be(key.sport_be)),
        destination: (key_address(key.daddr), u16::from_be(key.dport_be)),
        protocol: key.protocol,
        counter_slot: (value.counter_slot != NO_COUNTER).then_some(value.counter_slot),
        audit: value.flags & CT_FLAG_AUDIT != 0,
        state: value.state,
        last_seen_ns: value.last_seen_ns,
        deferred: value.flags & CT_FLAG_DEFERRED != 0,
        revoked: value.flags & CT_FLAG_REVOKED != 0,
        generation: value.generation,
        local_owned: value.flags & CT_FLAG_LOCAL_OWNED != 0,
        direct: value.flags & CT_FLAG_DIRECT != 0,
    }
}

/// `CONNTRACK`, `CT_TRACKED` and `CT_RECLAIMED`: the agent's handles on them.
/// The classifiers add entries; the agent removes them only through a sweeper.
pub(super) struct Conntrack {
    flows: HashMap<MapData, CtKey, CtValue>,
    tracked: HashMap<MapData, u32, u64>,
    reclaimed: HashMap<MapData, u32, u64>,
}

impl Conntrack {
    /// Takes the three maps out of `ebpf`.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            flows: super::maps::hash(ebpf, maps::CONNTRACK)?,
            tracked: super::maps::hash(ebpf, maps::CT_TRACKED)?,
            reclaimed: super::maps::hash(ebpf, maps::CT_RECLAIMED)?,
        })
    }

    /// `CONNTRACK`'s map, for pinning it (`Datapath::pin_tables`).
    pub(super) fn flows_map(&self) -> &MapData {
        self.flows.map()
    }

    /// Every flow the kernel tracks now (entries that vanish while being read, as
    /// the sweep's removals do, are left out).
    pub(super) fn flows(&self) -> Vec<TrackedFlow> {
        self.flows
            .iter()
            .filter_map(Result::ok)
            .map(|(key, value)| tracked_flow(key, value))
            .collect()
    }

    #[cfg(feature = "testing")]
    /// Makes every tracked flow `select` picks look idle `by` longer: its
    /// `last_seen_ns` moves back by `by` (stopping at 0). Returns how many flows
    /// it aged.
    pub(super) fn age(
        &mut self,
        by: Duration,
        select: impl Fn(&TrackedFlow) -> bool,
    ) -> Result<usize, DataplaneError> {
        let by_ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let picked: Vec<(CtKey, CtValue)> = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter(|&(key, value)| select(&tracked_flow(key, value)))
            .collect();
        for &(key, mut value) in &picked {
            value.last_seen_ns = value.last_seen_ns.saturating_sub(by_ns);
            self.flows
                .insert(key, value, 0)
                .map_err(map_error(maps::CONNTRACK.name, "age an entry"))?;
        }
        Ok(picked.len())
    }

    /// A sweeper with handles of its own on the three maps (it can run on a
    /// thread of its own), judging expiry by `config`.
    pub(super) fn sweeper(&self, config: Config) -> Result<ConntrackSweeper, DataplaneError> {
        let capacity = self
            .flows
            .map()
            .info()
            .map_err(map_error(maps::CONNTRACK.name, "read info"))?
            .max_entries();
        Ok(ConntrackSweeper {
            conntrack: own(self.flows.map(), maps::CONNTRACK)?,
            tracked: own(self.tracked.map(), maps::CT_TRACKED)?,
            reclaimed: own(self.reclaimed.map(), maps::CT_RECLAIMED)?,
            config,
            capacity,
        })
    }
}

/// A typed handle of its own on `data`, the map `def` defines.
fn own<K: aya::Pod, V: aya::Pod>(
    data: &MapData,
    def: MapDef<K, V>,
) -> Result<HashMap<MapData, K, V>, DataplaneError> {
    let data = duplicate(data, def.name)?;
    HashMap::try_from(Map::HashMap(data)).map_err(map_error(def.name, "open"))
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Entries the table held when the sweep began.
    pub entries: usize,
    /// Entries it removed (idle past their timeout).
    pub reclaimed: usize,
    /// Counters it removed: interfaces gone that hold no entry.
    pub counters_removed: usize,
}

/// Removes `CONNTRACK` entries idle past their timeout and tallies each removal in
/// `CT_RECLAIMED` (the agent runs one on a thread of its own; `Datapath` makes
/// one per call).
pub struct ConntrackSweeper {
    conntrack: HashMap<MapData, CtKey, CtValue>,
    tracked: HashMap<MapData, u32, u64>,
    reclaimed: HashMap<MapData, u32, u64>,
    config: Config,
    /// `CONNTRACK`'s `max_entries`.
    capacity: u32,
}

/// Whether the table is short of room (`ConntrackSweeper::pressed`): some
/// interface holds at least half its limit of flows (`per_interface`), or all of
/// them together hold at least half the table (`capacity`).
pub fn pressed(held: &BTreeMap<InterfaceIndex, i64>, per_interface: u32, capacity: u32) -> bool {
    let half = |room: u32| i64::from(room.div_ceil(2));
    held.values().any(|&flows| flows >= half(per_interface))
        || held.values().sum::<i64>() >= half(capacity)
}

/// CLOCK_MONOTONIC now, in nanoseconds (the classifiers' clock, at full resolution).
fn monotonic_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(now.tv_nsec()).unwrap_or(0)
    })
}

/// `ENOENT` from a map operation: the key is gone (someone else removed it).
fn not_found(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(nix::libc::ENOENT),
        _ => false,
    }
}

impl ConntrackSweeper {
    /// Whether `value` (under `key`) is idle past its timeout and the margin at `now`.
    fn expired(&self, key: &CtKey, value: &CtValue, now: u64) -> bool {
        let timeout = self.config.ct_timeout_ns(key.protocol, value.state);
        let margin = u64::try_from(SWEEP_MARGIN.as_nanos()).unwrap_or(u64::MAX);
        now.saturating_sub(value.last_seen_ns) > timeout.saturating_add(margin)
    }

    /// Removes every entry idle past its timeout, each read again just before its
    /// removal (a flow that passed meanwhile stays), and adds the removals to
    /// `CT_RECLAIMED`. Then removes both counters of every interface that holds no
    /// entry and is `gone`. A removal racing a packet of its flow (microseconds
    /// apart) makes that flow's next packet decided afresh, as after expiry.
    pub fn sweep(
        &mut self,
        gone: impl Fn(InterfaceIndex) -> bool,
    ) -> Result<SweepReport, DataplaneError> {
        let now = monotonic_now_ns();
        let mut report = SweepReport::default();
        let mut holding = BTreeSet::new();
        let mut expired = Vec::new();
        for entry in self.conntrack.iter() {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(error) if not_found(&error) => continue,
                Err(error) => return Err(map_error(maps::CONNTRACK.name, "read")(error)),
            };
            report.entries += 1;
            if self.expired(&key, &value, now) {
                expired.push(key);
            } else {
                holding.insert(key.ifindex);
            }
        }
        let mut reclaimed: BTreeMap<InterfaceIndex, u64> = BTreeMap::new();
        for key in expired {
            match self.conntrack.get(&key, 0) {
                Ok(value) if self.expired(&key, &value, monotonic_now_ns()) => {}
                Ok(_) => {
                    holding.insert(key.ifindex);
                    continue;
                }
                Err(error) if not_found(&error) => continue,
                Err(error) => return Err(map_error(maps::CONNTRACK.name, "read")(error)),
            }
            match self.conntrack.remove(&key) {
                Ok(()) => *reclaimed.entry(key.ifindex).or_default() += 1,
                Err(error) if not_found(&error) => {}
                Err(error) => return Err(map_error(maps::CONNTRACK.name, "remove")(error)),
            }
        }
        for (ifindex, removed) in reclaimed {
            let before = match self.reclaimed.get(&ifindex, 0) {
                Ok(count) => count,
                Err(error) if not_found(&error) => 0,
                Err(error) => return Err(map_error(maps::CT_RECLAIMED.name, "read")(error)),
            };
            self.reclaimed
                .insert(ifindex, before.wrapping_add(removed), 0)
                .map_err(map_error(maps::CT_RECLAIMED.name, "write"))?;
            report.reclaimed += usize::try_from(removed).unwrap_or(usize::MAX);
        }
        report.counters_removed = self.remove_counters(&holding, gone)?;
        Ok(report)
    }

    /// Removes `CT_TRACKED` and `CT_RECLAIMED` of interfaces `gone` whose counts
    /// net to nothing and that hold no entry; returns how many.
    fn remove_counters(
        &mut self,
        holding: &BTreeSet<InterfaceIndex>,
        gone: impl Fn(InterfaceIndex) -> bool,
    ) -> Result<usize, DataplaneError> {
        let idle: Vec<InterfaceIndex> = self
            .held()?
            .into_iter()
            .filter(|&(ifindex, held)| held <= 0 && !holding.contains(&ifindex) && gone(ifindex))
            .map(|(ifindex, _)| ifindex)
            .collect();
        for ifindex in &idle {
            for (name, map) in [
                (maps::CT_TRACKED.name, &mut self.tracked),
                (maps::CT_RECLAIMED.name, &mut self.reclaimed),
            ] {
                match map.remove(ifindex) {
                    Ok(()) => {}
                    Err(error) if not_found(&error) => {}
                    Err(error) => return Err(map_error(name, "remove")(error)),
                }
            }
        }
        Ok(idle.len())
    }

    /// Whether the table is short of room by the counts the classifiers check
    /// (`pressed`): the agent then sweeps sooner than every `SWEEP_EVERY`, as
    /// Cilium collects its conntrack garbage early when its table fills up, so
    /// the closed flows of a pod opening connections fast give their room back
    /// about when they expire.
    pub fn pressed(&self) -> Result<bool, DataplaneError> {
        Ok(pressed(
            &self.held()?,
            self.config.ct_endpoint_flows,
            self.capacity,
        ))
    }

    /// `CT_TRACKED - CT_RECLAIMED` per interface with a counter.
    pub fn held(&self) -> Result<BTreeMap<InterfaceIndex, i64>, DataplaneError> {
        let mut held = BTreeMap::new();
        for entry in self.tracked.iter() {
            let (ifindex, tracked) = match entry {
                Ok(entry) => entry,
                Err(error) if not_found(&error) => continue,
                Err(error) => return Err(map_error(maps::CT_TRACKED.name, "read")(error)),
            };
            let reclaimed = match self.reclaimed.get(&ifindex, 0) {
                Ok(count) => count,
                Err(error) if not_found(&error) => 0,
                Err(error) => return Err(map_error(maps::CT_RECLAIMED.name, "read")(error)),
            };
            held.insert(ifindex, tracked.wrapping_sub(reclaimed) as i64);
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_pressed_from_half_a_pods_limit_or_half_its_capacity() {
        let held = |counts: &[(InterfaceIndex, i64)]| counts.iter().copied().collect();
        // Half of 8 per pod, half of 100 in all.
        assert!(!pressed(&held(&[(3, 3), (4, 3)]), 8, 100));
        assert!(pressed(&held(&[(3, 4), (4, 0)]), 8, 100));
        assert!(!pressed(&held(&[(3, 3), (4, 3), (5, 3)]), 8, 20));
        assert!(pressed(&held(&[(3, 3), (4, 3), (5, 3), (6, 1)]), 8, 20));
        // An odd limit rounds its half up; nothing held is no pressure.
        assert!(!pressed(&held(&[(3, 4)]), 9, 100));
        assert!(pressed(&held(&[(3, 5)]), 9, 100));
        assert!(!pressed(&BTreeMap::new(), 8, 100));
    }
}
