//! Reads `CONNTRACK`: the flows the classifiers allowed (or deferred), in host
//! types, for tests and diagnostics. The agent never writes it; only tests age
//! entries (`Datapath::age_conntrack`), to see expiry without waiting for it.

use std::{net::IpAddr, time::Duration};

use policy_common::{
    counters::NO_COUNTER,
    ct::{CtKey, CtValue, CONNTRACK_MAP, CT_FLAG_AUDIT, CT_FLAG_DEFERRED},
    verdict::DIRECTION_INGRESS,
};

use super::{keys::key_address, Datapath, DataplaneError, InterfaceIndex};
use crate::policy::tables::Direction;

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
    /// `DENY_COUNTERS` slot); `None` when no rule decided (unisolated, node, deferred).
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
}

fn tracked_flow(key: CtKey, value: CtValue) -> TrackedFlow {
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
    }
}

impl Datapath {
    /// Every flow the kernel tracks now (entries that vanish while being read, as
    /// LRU evictions do, are left out).
    pub fn conntrack(&mut self) -> Result<Vec<TrackedFlow>, DataplaneError> {
        let map = self.hash_map::<CtKey, CtValue>(CONNTRACK_MAP)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .map(|(key, value)| tracked_flow(key, value))
            .collect())
    }

    /// Makes every tracked flow `select` picks look idle `by` longer: its
    /// `last_seen_ns` moves back by `by` (stopping at 0, so a `by` longer than the
    /// machine's uptime ages less). For tests of expiry, which cannot wait out the
    /// timeouts. Returns how many flows it aged. Each rewrite is an insert into an LRU
    /// map, which in a full table may evict another entry.
    pub fn age_conntrack(
        &mut self,
        by: Duration,
        select: impl Fn(&TrackedFlow) -> bool,
    ) -> Result<usize, DataplaneError> {
        let by_ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let mut map = self.hash_map::<CtKey, CtValue>(CONNTRACK_MAP)?;
        let picked: Vec<(CtKey, CtValue)> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|&(key, value)| select(&tracked_flow(key, value)))
            .collect();
        for &(key, mut value) in &picked {
            value.last_seen_ns = value.last_seen_ns.saturating_sub(by_ns);
            map.insert(key, value, 0)
                .map_err(|source| DataplaneError::MapOp {
                    map: CONNTRACK_MAP,
                    operation: "age an entry",
                    source: Box::new(source),
                })?;
        }
        Ok(picked.len())
    }
}
