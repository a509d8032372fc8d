//! Reads the per-policy traffic counters (`RULE_COUNTERS`, `DENY_COUNTERS`) while
//! traffic flows, and names them with the tables that gave their slots meaning.
//! The kernel bumps packets, then bytes, without a lock: a reading taken while
//! traffic flows may catch a CPU in between (bytes one packet behind).

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use policy_common::counters::{deny_slot, TrafficCounter, DENY_COUNTERS_MAP, RULE_COUNTERS_MAP};
use serde::Serialize;

use super::{maps::map_error, slots::rule_name, Datapath, DataplaneError};
use crate::{
    model::ObjectRef,
    policy::tables::{DatapathTables, Direction, Isolation},
};

/// Packets and bytes summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Packets.
    pub packets: u64,
    /// Bytes (`skb->len`, Ethernet header included).
    pub bytes: u64,
}

impl Traffic {
    fn sum(values: &PerCpuValues<TrafficCounter>) -> Self {
        values.iter().fold(Self::default(), |total, cpu| Traffic {
            packets: total.packets.wrapping_add(cpu.packets),
            bytes: total.bytes.wrapping_add(cpu.bytes),
        })
    }
}

/// What one allow rule let through: every packet of the flows it allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleTraffic {
    /// The policy.
    pub policy: ObjectRef,
    /// Ingress or egress rule.
    pub direction: Direction,
    /// Index of the rule in the policy's ingress or egress list.
    pub rule_index: u32,
    /// Packets and bytes allowed.
    pub allowed: Traffic,
}

/// What was denied (or, in audit mode, would have been) at pods isolated by one
/// set of policies in one direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DenyTraffic {
    /// The policies isolating those pods in `direction`.
    pub policies: Vec<ObjectRef>,
    /// Direction relative to the pods.
    pub direction: Direction,
    /// Dropped.
    pub denied: Traffic,
    /// Passed only because every isolating policy is in audit mode.
    pub would_deny: Traffic,
}

/// Every per-policy counter, named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PolicyCounters {
    /// Allowed traffic per (policy, direction, rule), in `counted_rules` order.
    pub allowed: Vec<RuleTraffic>,
    /// Denied traffic per (isolating policies, direction); endpoints isolated by
    /// the same policies are summed.
    pub denied: Vec<DenyTraffic>,
}

/// What the `DENY_COUNTERS` slots meant at the last `apply` (endpoint id -> its
/// isolating policies, by name so renumbered ids compare), so a slot whose meaning
/// changes is zeroed instead of carrying other policies' counts.
#[derive(Clone, Debug, Default)]
pub(super) struct DenyMeanings {
    /// Endpoint id -> (ingress, egress) isolating policies.
    pub isolation: BTreeMap<u32, (Vec<ObjectRef>, Vec<ObjectRef>)>,
}

impl DenyMeanings {
    /// The meanings `tables` gives the deny slots.
    pub fn of(tables: &DatapathTables) -> Self {
        let names = |ids: &[u32]| -> Vec<ObjectRef> {
            ids.iter()
                .filter_map(|id| tables.policy_names.get(*id as usize).cloned())
                .collect()
        };
        Self {
            isolation: tables
                .isolation
                .iter()
                .map(|(id, isolation)| (*id, (names(&isolation.ingress), names(&isolation.egress))))
                .collect(),
        }
    }
}

impl Datapath {
    fn counter_array(
        &mut self,
        name: &'static str,
    ) -> Result<PerCpuArray<&mut MapData, TrafficCounter>, DataplaneError> {
        PerCpuArray::try_from(self.map(name)?).map_err(|e| DataplaneError::Map {
            map: name,
            message: e.to_string(),
        })
    }

    /// One slot of `RULE_COUNTERS` or `DENY_COUNTERS`, summed over CPUs; an
    /// out-of-range slot reads as zero.
    fn counter(&mut self, name: &'static str, slot: u32) -> Result<Traffic, DataplaneError> {
        let array = self.counter_array(name)?;
        if slot >= array.len() {
            return Ok(Traffic::default());
        }
        let values = array.get(&slot, 0).map_err(map_error(name, "read"))?;
        Ok(Traffic::sum(&values))
    }

    /// Zeroes one slot on every CPU.
    pub(super) fn zero_counter(
        &mut self,
        name: &'static str,
        slot: u32,
    ) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| DataplaneError::Map {
            map: name,
            message: format!("counting possible CPUs: {source}"),
        })?;
        let mut array = self.counter_array(name)?;
        if slot >= array.len() {
            return Ok(());
        }
        let zeros =
            PerCpuValues::try_from(vec![TrafficCounter::default(); cpus]).map_err(|source| {
                DataplaneError::Map {
                    map: name,
                    message: format!("building zeroed per-CPU values: {source}"),
                }
            })?;
        array.set(slot, zeros, 0).map_err(map_error(name, "zero"))
    }

    /// Zeroes the deny slots whose endpoint id stands for other isolating policies
    /// in `new` than in `old`.
    pub(super) fn zero_changed_deny_counters(
        &mut self,
        old: &DenyMeanings,
        new: &DenyMeanings,
    ) -> Result<(), DataplaneError> {
        let ids: std::collections::BTreeSet<u32> = old
            .isolation
            .keys()
            .chain(new.isolation.keys())
            .copied()
            .collect();
        for id in ids {
            let (before, after) = (old.isolation.get(&id), new.isolation.get(&id));
            for (index, direction) in [Direction::Ingress, Direction::Egress]
                .into_iter()
                .enumerate()
            {
                let side = |meaning: Option<&(Vec<ObjectRef>, Vec<ObjectRef>)>| {
                    meaning.map(|(ingress, egress)| {
                        if index == 0 {
                            ingress.clone()
                        } else {
                            egress.clone()
                        }
                    })
                };
                if side(before) != side(after) {
                    for audit in [false, true] {
                        self.zero_counter(
                            DENY_COUNTERS_MAP,
                            deny_slot(id, direction.code(), audit),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every per-policy counter, summed over CPUs and named with `tables` (the
    /// tables last applied; a rule without a slot is not reported).
    pub fn policy_counters(
        &mut self,
        tables: &DatapathTables,
    ) -> Result<PolicyCounters, DataplaneError> {
        let mut allowed = Vec::new();
        for rule in tables.counted_rules() {
            let Some(policy) = tables.policy_names.get(rule.policy_id as usize) else {
                continue;
            };
            let Some(slot) = rule_name(tables, &rule).and_then(|name| self.rule_slots.slot(&name))
            else {
                continue;
            };
            allowed.push(RuleTraffic {
                policy: policy.clone(),
                direction: rule.direction,
                rule_index: rule.rule_index,
                allowed: self.counter(RULE_COUNTERS_MAP, slot)?,
            });
        }
        let mut denied: BTreeMap<(Vec<ObjectRef>, Direction), (Traffic, Traffic)> = BTreeMap::new();
        for (id, isolation) in &tables.isolation {
            for direction in [Direction::Ingress, Direction::Egress] {
                let policies = isolating_names(tables, isolation, direction);
                if policies.is_empty() {
                    continue;
                }
                let code = direction.code();
                let dropped = self.counter(DENY_COUNTERS_MAP, deny_slot(*id, code, false))?;
                let audited = self.counter(DENY_COUNTERS_MAP, deny_slot(*id, code, true))?;
                let total = denied.entry((policies, direction)).or_default();
                total.0 = add(total.0, dropped);
                total.1 = add(total.1, audited);
            }
        }
        Ok(PolicyCounters {
            allowed,
            denied: denied
                .into_iter()
                .map(
                    |((policies, direction), (denied, would_deny))| DenyTraffic {
                        policies,
                        direction,
                        denied,
                        would_deny,
                    },
                )
                .collect(),
        })
    }
}

fn add(a: Traffic, b: Traffic) -> Traffic {
    Traffic {
        packets: a.packets.wrapping_add(b.packets),
        bytes: a.bytes.wrapping_add(b.bytes),
    }
}

/// The names of the policies isolating an endpoint id in `direction`.
fn isolating_names(
    tables: &DatapathTables,
    isolation: &Isolation,
    direction: Direction,
) -> Vec<ObjectRef> {
    isolation
        .get(direction)
        .iter()
        .filter_map(|id| tables.policy_names.get(*id as usize).cloned())
        .collect()
}
