//! The per-policy traffic counters (`RULE_COUNTERS`, `DROP_COUNTERS`) and their
//! owner, `Counters`: which rule each slot counts for, the zeroing of a slot whose
//! meaning changes, and readings named with the tables that gave the slots
//! meaning.
//! The kernel bumps packets, then bytes, without a lock: a reading taken while
//! traffic flows may catch a CPU in between (bytes one packet behind).

use crate::causes::causes;
use std::collections::{BTreeMap, BTreeSet};

use aya::{
    maps::{MapData, PerCpuArray, PerCpuValues},
    Ebpf,
};
use policy_common::{
    counters::{drop_slot, TrafficCounter, RULE_COUNTERS_MAX},
    maps,
};
use serde::Serialize;

use super::{
    maps::{map_error, MapUsage},
    slots::{rule_name, RuleSlots},
    DataplaneError,
};
use crate::{
    model::ObjectRef,
    policy::tables::{DatapathTables, Direction, Isolation, RuleVerdict},
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

/// What one rule decided: every packet of the flows it allowed, or, for a
/// ClusterNetworkPolicy `Deny` rule, what it dropped (or would drop, and every
/// later packet of those flows, in audit mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleTraffic {
    /// The policy.
    pub policy: ObjectRef,
    /// Ingress or egress rule.
    pub direction: Direction,
    /// Index of the rule in the policy's ingress or egress list.
    pub rule_index: u32,
    /// What the rule is called (`DatapathTables::rule_label`).
    pub rule: String,
    /// What the rule's packets were: allowed, dropped or would-drop.
    pub verdict: RuleVerdict,
    /// Packets and bytes.
    pub traffic: Traffic,
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
    /// Traffic per rule (policy, direction, index), in `counted_rules` order.
    pub rules: Vec<RuleTraffic>,
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

/// `RULE_COUNTERS` and `DROP_COUNTERS`, and what their slots mean: the only writer
/// of them.
pub(super) struct Counters {
    rule: PerCpuArray<MapData, TrafficCounter>,
    deny: PerCpuArray<MapData, TrafficCounter>,
    /// Which `RULE_COUNTERS` slot each rule counts in.
    slots: RuleSlots,
    /// What the `DROP_COUNTERS` slots mean since the last update.
    drop_meanings: DropMeanings,
    /// `DROP_COUNTERS` slots whose meaning changed but whose zeroing failed: the
    /// next update zeroes them.
    drop_zero_owed: BTreeSet<u32>,
    /// CPUs the kernel may run on: how many values a per-CPU map entry holds.
    possible_cpus: usize,
}

impl Counters {
    /// Takes both counter maps out of `ebpf`; no slot is assigned yet.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let possible_cpus = aya::util::nr_cpus().map_err(|(path, source)| DataplaneError::Map {
            map: maps::RULE_COUNTERS.name,
            what: format!("counting possible CPUs for the per-CPU counters ({path})"),
            source: Some(Box::new(source)),
        })?;
        Ok(Self {
            rule: super::maps::per_cpu_array(ebpf, maps::RULE_COUNTERS)?,
            deny: super::maps::per_cpu_array(ebpf, maps::DROP_COUNTERS)?,
            slots: RuleSlots::new(RULE_COUNTERS_MAX),
            drop_meanings: DropMeanings::default(),
            drop_zero_owed: BTreeSet::new(),
            possible_cpus,
        })
    }

    /// Which slot each rule counts in.
    pub(super) fn slots(&self) -> &RuleSlots {
        &self.slots
    }

    /// Takes `slots` as the assignment in force (once the tables it was made for
    /// are active, or when adopting a pinned datapath).
    pub(super) fn set_slots(&mut self, slots: RuleSlots) {
        self.slots = slots;
    }

    /// The `RULE_COUNTERS` slots held by rules.
    pub(super) fn usage(&self) -> MapUsage {
        MapUsage {
            map: maps::RULE_COUNTERS.name,
            entries: self.slots.len(),
            capacity: RULE_COUNTERS_MAX,
        }
    }

    /// Zeroes `slots` of `RULE_COUNTERS` on every CPU (before a reused slot's new
    /// rule can count in it).
    pub(super) fn zero_rule_slots(&mut self, slots: &[u32]) -> Result<(), DataplaneError> {
        zero(
            &mut self.rule,
            maps::RULE_COUNTERS.name,
            slots,
            self.possible_cpus,
        )
    }

    /// After `tables` became active: zeroes the `DROP_COUNTERS` slots whose
    /// isolating policies changed. A failure is logged, never returned (the new
    /// state is live); those slots are zeroed by the next call.
    pub(super) fn tables_applied(&mut self, tables: &DatapathTables) {
        let meanings = DropMeanings::of(tables);
        self.drop_zero_owed
            .extend(self.drop_meanings.changed_slots(&meanings));
        self.drop_meanings = meanings;
        let owed: Vec<u32> = self.drop_zero_owed.iter().copied().collect();
        match zero(
            &mut self.deny,
            maps::DROP_COUNTERS.name,
            &owed,
            self.possible_cpus,
        ) {
            Ok(()) => self.drop_zero_owed.clear(),
            Err(error) => tracing::warn!(
                error = %causes(&error),
                slots = owed.len(),
                "deny counters of changed isolating policies not zeroed (the new state is active); the next apply zeroes them"
            ),
        }
    }

    /// Every per-policy counter, summed over CPUs and named with `tables` (the
    /// tables last applied; a rule without a slot is not reported).
    pub(super) fn policy_counters(
        &self,
        tables: &DatapathTables,
    ) -> Result<PolicyCounters, DataplaneError> {
        let rule = |slot| read(&self.rule, maps::RULE_COUNTERS.name, slot);
        let deny = |slot| read(&self.deny, maps::DROP_COUNTERS.name, slot);
        let mut rules = Vec::new();
        for counted in tables.counted_rules() {
            let Some(policy) = tables.policy_names.get(counted.policy_id as usize) else {
                continue;
            };
            let Some(slot) = rule_name(tables, &counted).and_then(|name| self.slots.slot(&name))
            else {
                continue;
            };
            rules.push(RuleTraffic {
                policy: policy.clone(),
                direction: counted.direction,
                rule_index: counted.rule_index,
                rule: tables.rule_label(policy, counted.direction, counted.rule_index),
                verdict: counted.verdict,
                traffic: rule(slot)?,
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
                let dropped = deny(drop_slot(id, code, false))?;
                let audited = deny(drop_slot(id, code, true))?;
                let total = denied.entry((policies.to_vec(), direction)).or_default();
                total.0 = add(total.0, dropped);
                total.1 = add(total.1, audited);
            }
        }
        Ok(PolicyCounters {
            rules,
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

/// One slot of a counter map, summed over CPUs; an out-of-range slot reads as
/// zero.
fn read(
    array: &PerCpuArray<MapData, TrafficCounter>,
    name: &'static str,
    slot: u32,
) -> Result<Traffic, DataplaneError> {
    if slot >= array.len() {
        return Ok(Traffic::default());
    }
    let values = array.get(&slot, 0).map_err(map_error(name, "read"))?;
    Ok(Traffic::sum(&values))
}

/// Zeroes `slots` of a counter map on every CPU (out-of-range slots are left
/// alone).
fn zero(
    array: &mut PerCpuArray<MapData, TrafficCounter>,
    name: &'static str,
    slots: &[u32],
    cpus: usize,
) -> Result<(), DataplaneError> {
    let len = array.len();
    for &slot in slots.iter().filter(|&&slot| slot < len) {
        let zeros =
            PerCpuValues::try_from(vec![TrafficCounter::default(); cpus]).map_err(|source| {
                DataplaneError::Map {
                    map: name,
                    what: "building zeroed per-CPU values".into(),
                    source: Some(Box::new(source)),
                }
            })?;
        array.set(slot, zeros, 0).map_err(map_error(name, "zero"))?;
    }
    Ok(())
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
