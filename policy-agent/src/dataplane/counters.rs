//! Reads the per-policy traffic counters (`RULE_COUNTERS`, `DROP_COUNTERS`) while
//! traffic flows, and names them with the tables that gave their slots meaning.
//! The kernel bumps packets, then bytes, without a lock: a reading taken while
//! traffic flows may catch a CPU in between (bytes one packet behind).

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use policy_common::counters::{drop_slot, TrafficCounter, DROP_COUNTERS_MAP, RULE_COUNTERS_MAP};
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
pub struct DropTraffic {
    /// The policies isolating those pods in `direction`.
    pub policies: Vec<ObjectRef>,
    /// Direction relative to the pods.
    pub direction: Direction,
    /// Dropped.
    pub denied: Traffic,
    /// Passed only because every isolating policy is in audit mode.
    pub would_drop: Traffic,
}

/// Every per-policy counter, named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PolicyCounters {
    /// Allowed traffic per (policy, direction, rule), in `counted_rules` order.
    pub allowed: Vec<RuleTraffic>,
    /// Denied traffic per (isolating policies, direction); endpoints isolated by
    /// the same policies are summed.
    pub denied: Vec<DropTraffic>,
}

/// The names of the policies isolating one endpoint id, per direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct IsolatingNames {
    /// Policies isolating for ingress.
    ingress: Vec<ObjectRef>,
    /// Policies isolating for egress.
    egress: Vec<ObjectRef>,
}

impl IsolatingNames {
    /// `isolation`'s policy ids named with `tables`.
    fn of(tables: &DatapathTables, isolation: &Isolation) -> Self {
        Self {
            ingress: policy_names(tables, &isolation.ingress),
            egress: policy_names(tables, &isolation.egress),
        }
    }

    /// The policies isolating in `direction`.
    fn get(&self, direction: Direction) -> &[ObjectRef] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// The names of policy ids `ids` in `tables` (an id without a name is left out).
fn policy_names(tables: &DatapathTables, ids: &[u32]) -> Vec<ObjectRef> {
    ids.iter()
        .filter_map(|id| tables.policy_names.get(*id as usize).cloned())
        .collect()
}

/// What the `DROP_COUNTERS` slots meant at the last `apply` (endpoint id -> its
/// isolating policies, by name so renumbered ids compare), so a slot whose meaning
/// changes is zeroed instead of carrying other policies' counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct DropMeanings {
    /// Endpoint id -> the policies isolating it.
    isolation: BTreeMap<u32, IsolatingNames>,
}

impl DropMeanings {
    /// The meanings `tables` gives the deny slots.
    pub fn of(tables: &DatapathTables) -> Self {
        Self {
            isolation: tables
                .isolation
                .iter()
                .map(|(id, isolation)| (*id, IsolatingNames::of(tables, isolation)))
                .collect(),
        }
    }

    /// The policies isolating endpoint id `id` in `direction`; `None` for an id
    /// these meanings do not have.
    fn policies(&self, id: u32, direction: Direction) -> Option<&[ObjectRef]> {
        self.isolation.get(&id).map(|names| names.get(direction))
    }

    /// The deny slots (drops and would-drops) of every endpoint id and direction
    /// whose isolating policies differ between these meanings and `new` (an id
    /// only one of them has differs too).
    pub fn changed_slots(&self, new: &DropMeanings) -> Vec<u32> {
        let ids: BTreeSet<u32> = self
            .isolation
            .keys()
            .chain(new.isolation.keys())
            .copied()
            .collect();
        let mut slots = Vec::new();
        for id in ids {
            for direction in [Direction::Ingress, Direction::Egress] {
                if self.policies(id, direction) != new.policies(id, direction) {
                    slots.extend([false, true].map(|audit| drop_slot(id, direction.code(), audit)));
                }
            }
        }
        slots
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

    /// One slot of `RULE_COUNTERS` or `DROP_COUNTERS`, summed over CPUs; an
    /// out-of-range slot reads as zero.
    fn counter(&mut self, name: &'static str, slot: u32) -> Result<Traffic, DataplaneError> {
        let array = self.counter_array(name)?;
        if slot >= array.len() {
            return Ok(Traffic::default());
        }
        let values = array.get(&slot, 0).map_err(map_error(name, "read"))?;
        Ok(Traffic::sum(&values))
    }

    /// Zeroes `slots` of `RULE_COUNTERS` or `DROP_COUNTERS` on every CPU
    /// (out-of-range slots are left alone).
    pub(super) fn zero_counters(
        &mut self,
        name: &'static str,
        slots: &[u32],
    ) -> Result<(), DataplaneError> {
        if slots.is_empty() {
            return Ok(());
        }
        let cpus = self.possible_cpus;
        let mut array = self.counter_array(name)?;
        let len = array.len();
        for &slot in slots.iter().filter(|&&slot| slot < len) {
            let zeros = PerCpuValues::try_from(vec![TrafficCounter::default(); cpus]).map_err(
                |source| DataplaneError::Map {
                    map: name,
                    message: format!("building zeroed per-CPU values: {source}"),
                },
            )?;
            array.set(slot, zeros, 0).map_err(map_error(name, "zero"))?;
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
        for (id, isolating) in DropMeanings::of(tables).isolation {
            for direction in [Direction::Ingress, Direction::Egress] {
                let policies = isolating.get(direction);
                if policies.is_empty() {
                    continue;
                }
                let code = direction.code();
                let dropped = self.counter(DROP_COUNTERS_MAP, drop_slot(id, code, false))?;
                let audited = self.counter(DROP_COUNTERS_MAP, drop_slot(id, code, true))?;
                let total = denied.entry((policies.to_vec(), direction)).or_default();
                total.0 = add(total.0, dropped);
                total.1 = add(total.1, audited);
            }
        }
        Ok(PolicyCounters {
            allowed,
            denied: denied
                .into_iter()
                .map(
                    |((policies, direction), (denied, would_drop))| DropTraffic {
                        policies,
                        direction,
                        denied,
                        would_drop,
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

#[cfg(test)]
mod tests {
    use policy_common::verdict::{DIRECTION_EGRESS, DIRECTION_INGRESS};

    use super::*;

    /// Tables naming `names` (ids by position) with `isolation` as
    /// (endpoint id, ingress ids, egress ids).
    fn tables(names: &[&str], isolation: &[(u32, &[u32], &[u32])]) -> DatapathTables {
        DatapathTables {
            policy_names: names
                .iter()
                .map(|&name| ObjectRef::new("x", name))
                .collect(),
            isolation: isolation
                .iter()
                .map(|(id, ingress, egress)| {
                    let isolation = Isolation {
                        ingress: ingress.to_vec(),
                        egress: egress.to_vec(),
                    };
                    (*id, isolation)
                })
                .collect(),
            ..DatapathTables::default()
        }
    }

    fn slots(id: u32, direction: u8) -> [u32; 2] {
        [
            drop_slot(id, direction, false),
            drop_slot(id, direction, true),
        ]
    }

    #[test]
    fn renumbered_policy_ids_with_the_same_names_change_no_deny_slot() {
        let before = DropMeanings::of(&tables(&["a", "b"], &[(1, &[1], &[0, 1])]));
        let after = DropMeanings::of(&tables(&["0", "a", "b"], &[(1, &[2], &[1, 2])]));
        assert_eq!(before.changed_slots(&after), Vec::<u32>::new());
        assert_eq!(before.changed_slots(&before), Vec::<u32>::new());
    }

    #[test]
    fn only_the_direction_whose_isolating_policies_changed_has_its_slots_zeroed() {
        let before = DropMeanings::of(&tables(&["a", "b"], &[(1, &[0], &[1]), (2, &[0], &[])]));
        let after = DropMeanings::of(&tables(&["a", "b"], &[(1, &[0, 1], &[1]), (2, &[0], &[])]));
        assert_eq!(before.changed_slots(&after), slots(1, DIRECTION_INGRESS));
    }

    #[test]
    fn an_endpoint_id_only_one_side_has_changes_both_its_directions() {
        let before = DropMeanings::of(&tables(&["a"], &[(1, &[0], &[])]));
        let after = DropMeanings::of(&tables(&["a"], &[(2, &[], &[])]));
        let mut want = [
            slots(1, DIRECTION_INGRESS),
            slots(1, DIRECTION_EGRESS),
            slots(2, DIRECTION_INGRESS),
            slots(2, DIRECTION_EGRESS),
        ]
        .concat();
        let mut got = before.changed_slots(&after);
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
        // Nothing before (a fresh datapath): every slot the tables give a meaning.
        assert_eq!(
            DropMeanings::default().changed_slots(&before).len(),
            4,
            "{before:?}"
        );
    }
}
