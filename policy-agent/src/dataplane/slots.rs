//! Stable `RULE_COUNTERS` slots. A rule, named by its policy's namespace/name, its
//! direction, its index in that policy's list and what it counts (allowed,
//! dropped or would-drop: a ClusterNetworkPolicy rule whose action or mode
//! changes is a new rule, whose counts start anew), keeps its slot for as long as it
//! has `POLICY` entries, so its counts survive updates that add or remove other
//! rules or policies (which renumber the tables' policy ids). The slot is also
//! all the kernel holds of the rule (`POLICY` values, allow events): such an
//! update changes no `POLICY` value, and an event names its rule through
//! `RuleSlots::by_slot`.
//! A tracked flow keeps counting in the slot of the rule that allowed it even after
//! that rule is gone, so a new rule takes a slot never used before, and only when
//! none is left the one released longest ago: another rule's late packets reach a
//! reused slot as rarely as the capacity allows. Only a reused slot needs zeroing
//! before its new rule counts in it.
//!
//! A pinned datapath outlives the agent, and so do the slots its `POLICY` entries
//! and tracked flows count in: `SlotState` is the assignment as JSON, written next
//! to the pins (`pins.rs`) before every bank flip and read back on adoption.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::DataplaneError;
use crate::{
    model::ObjectRef,
    policy::tables::{CountedRule, DatapathTables, Direction, RuleVerdict},
};

/// A rule as it is known across updates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleName {
    /// Its policy.
    pub policy: ObjectRef,
    /// Whether it is an ingress or an egress rule.
    pub direction: Direction,
    /// Its index in the policy's list of that direction.
    pub rule_index: u32,
    /// What its slot counts.
    pub verdict: RuleVerdict,
}

/// The name of `rule` in `tables`; `None` for a policy id without a name.
pub(super) fn rule_name(tables: &DatapathTables, rule: &CountedRule) -> Option<RuleName> {
    let policy = tables.policy_names.get(rule.policy_id as usize)?;
    Some(RuleName {
        policy: policy.clone(),
        direction: rule.direction,
        rule_index: rule.rule_index,
        verdict: rule.verdict,
    })
}

/// Which rule counts in which slot, and which slots are free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RuleSlots {
    capacity: u32,
    assigned: BTreeMap<RuleName, u32>,
    /// Released slots, the longest released first.
    released: VecDeque<u32>,
    /// Slots below this have been handed out at least once.
    next_unused: u32,
}

impl RuleSlots {
    /// No rule has a slot yet; `capacity` is `RULE_COUNTERS`' size.
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            assigned: BTreeMap::new(),
            released: VecDeque::new(),
            next_unused: 0,
        }
    }

    /// How many rules have a slot.
    pub fn len(&self) -> usize {
        self.assigned.len()
    }

    /// The slot of `rule`, if it has one.
    pub fn slot(&self, rule: &RuleName) -> Option<u32> {
        self.assigned.get(rule).copied()
    }

    /// Every assigned slot and its rule: what a slot in a `POLICY` value or a
    /// verdict event names.
    pub fn by_slot(&self) -> BTreeMap<u32, RuleName> {
        self.assigned
            .iter()
            .map(|(rule, slot)| (*slot, rule.clone()))
            .collect()
    }

    /// Gives exactly `rules` slots: rules that had one keep it, the slots of rules
    /// not listed are released, new rules get free slots. Returns the released
    /// slots handed to new rules: their counters must be zeroed before the new
    /// rules count in them. A slot never handed out before is left out, as nothing
    /// has counted in it since the map was created. On error nothing changes.
    pub fn assign(&mut self, rules: &[RuleName]) -> Result<Vec<u32>, DataplaneError> {
        let wanted: BTreeSet<&RuleName> = rules.iter().collect();
        if wanted.len() > self.capacity as usize {
            return Err(DataplaneError::TooManyRules {
                rules: wanted.len(),
                capacity: self.capacity,
            });
        }
        let mut next = self.clone();
        let gone: Vec<RuleName> = next
            .assigned
            .keys()
            .filter(|rule| !wanted.contains(rule))
            .cloned()
            .collect();
        for rule in gone {
            if let Some(slot) = next.assigned.remove(&rule) {
                next.released.push_back(slot);
            }
        }
        let mut reused = Vec::new();
        for rule in wanted {
            if next.assigned.contains_key(rule) {
                continue;
            }
            let slot = if next.next_unused < next.capacity {
                next.next_unused += 1;
                next.next_unused - 1
            } else {
                // At most `capacity` rules are wanted, so a slot is free.
                let slot = next
                    .released
                    .pop_front()
                    .ok_or(DataplaneError::TooManyRules {
                        rules: rules.len(),
                        capacity: self.capacity,
                    })?;
                reused.push(slot);
                slot
            };
            next.assigned.insert(rule.clone(), slot);
        }
        *self = next;
        Ok(reused)
    }
}

/// One assigned slot as `SlotState` stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SlotRecord {
    /// `namespace/name` of the policy; the name alone for a ClusterNetworkPolicy.
    pub policy: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// Index of the rule in that policy's list.
    pub rule_index: u32,
    /// What the slot counts (`RuleVerdict::name`); `allowed` in a state written
    /// before rules had anything else to count.
    #[serde(default = "allowed")]
    pub verdict: String,
    /// Its `RULE_COUNTERS` slot.
    pub slot: u32,
}

/// `RuleSlots` as persisted (`state.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SlotState {
    /// `RULE_COUNTERS` capacity the slots were handed out from.
    pub capacity: u32,
    /// Every rule with a slot.
    pub rules: Vec<SlotRecord>,
    /// Released slots, the longest released first.
    pub released: Vec<u32>,
    /// Slots below this have been handed out at least once.
    pub next_unused: u32,
}

fn allowed() -> String {
    RuleVerdict::Allowed.name().to_string()
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

impl RuleSlots {
    /// Slots after an adoption that could not learn which rule had which: every
    /// slot counts as released (so each one handed out is zeroed first) and none
    /// as never used.
    pub fn unknown(capacity: u32) -> Self {
        Self {
            capacity,
            assigned: BTreeMap::new(),
            released: (0..capacity).collect(),
            next_unused: capacity,
        }
    }

    /// The assignment as `SlotState`.
    pub fn to_state(&self) -> SlotState {
        SlotState {
            capacity: self.capacity,
            rules: self
                .assigned
                .iter()
                .map(|(rule, slot)| SlotRecord {
                    policy: rule.policy.to_string(),
                    direction: direction_name(rule.direction).to_string(),
                    rule_index: rule.rule_index,
                    verdict: rule.verdict.name().to_string(),
                    slot: *slot,
                })
                .collect(),
            released: self.released.iter().copied().collect(),
            next_unused: self.next_unused,
        }
    }

    /// The assignment `state` describes, if it is one for `capacity` slots in which
    /// every slot is below `next_unused` and held by at most one rule or release,
    /// and `in_use` (the slots the maps' entries name) are all handed out.
    pub fn from_state(state: &SlotState, capacity: u32, in_use: &BTreeSet<u32>) -> Option<Self> {
        if state.capacity != capacity || state.next_unused > capacity {
            return None;
        }
        let mut seen = BTreeSet::new();
        let mut assigned = BTreeMap::new();
        for record in &state.rules {
            let policy = match record.policy.split_once('/') {
                Some((namespace, name)) => ObjectRef::new(namespace, name),
                None => ObjectRef::cluster(&record.policy),
            };
            let direction = match record.direction.as_str() {
                "ingress" => Direction::Ingress,
                "egress" => Direction::Egress,
                _ => return None,
            };
            let verdict = [
                RuleVerdict::Allowed,
                RuleVerdict::Dropped,
                RuleVerdict::WouldDrop,
            ]
            .into_iter()
            .find(|verdict| verdict.name() == record.verdict)?;
            if record.slot >= state.next_unused || !seen.insert(record.slot) {
                return None;
            }
            let rule = RuleName {
                policy,
                direction,
                rule_index: record.rule_index,
                verdict,
            };
            assigned.insert(rule, record.slot);
        }
        for &slot in &state.released {
            if slot >= state.next_unused || !seen.insert(slot) {
                return None;
            }
        }
        if in_use.iter().any(|slot| *slot >= state.next_unused) {
            return None;
        }
        Some(Self {
            capacity,
            assigned,
            released: state.released.iter().copied().collect(),
            next_unused: state.next_unused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rule_index: u32) -> RuleName {
        RuleName {
            policy: ObjectRef::new("x", "web"),
            direction: Direction::Ingress,
            rule_index,
            verdict: RuleVerdict::Allowed,
        }
    }

    fn slots_of(slots: &RuleSlots, rules: &[u32]) -> Vec<Option<u32>> {
        rules.iter().map(|&r| slots.slot(&rule(r))).collect()
    }

    #[test]
    fn a_rule_keeps_its_slot_while_rules_before_it_come_and_go() {
        let mut slots = RuleSlots::new(8);
        assert_eq!(slots.assign(&[rule(1), rule(2)]).ok(), Some(vec![]));
        assert_eq!(slots_of(&slots, &[1, 2]), [Some(0), Some(1)]);
        assert_eq!(
            slots.assign(&[rule(0), rule(1), rule(2)]).ok(),
            Some(vec![])
        );
        assert_eq!(slots_of(&slots, &[0, 1, 2]), [Some(2), Some(0), Some(1)]);
        assert_eq!(slots.assign(&[rule(2)]).ok(), Some(vec![]));
        assert_eq!(slots_of(&slots, &[0, 1, 2]), [None, None, Some(1)]);
    }

    #[test]
    fn new_rules_take_never_used_slots_before_the_longest_released_and_only_reused_ones_are_returned(
    ) {
        let mut slots = RuleSlots::new(3);
        assert_eq!(slots.assign(&[rule(0), rule(1)]).ok(), Some(vec![]));
        // Rule 0 goes (slot 0 released), then rule 1 (slot 1 released).
        assert_eq!(slots.assign(&[rule(1)]).ok(), Some(vec![]));
        assert_eq!(slots.assign(&[]).ok(), Some(vec![]));
        // Slot 2 was never used: it goes first, and needs no zeroing; then slot 0,
        // released longest ago, then slot 1.
        assert_eq!(slots.assign(&[rule(5)]).ok(), Some(vec![]));
        assert_eq!(slots_of(&slots, &[5]), [Some(2)]);
        assert_eq!(slots.assign(&[rule(5), rule(6)]).ok(), Some(vec![0]));
        assert_eq!(slots_of(&slots, &[6]), [Some(0)]);
        assert_eq!(
            slots.assign(&[rule(5), rule(6), rule(7)]).ok(),
            Some(vec![1])
        );
        assert_eq!(slots_of(&slots, &[5, 6, 7]), [Some(2), Some(0), Some(1)]);
    }

    #[test]
    fn a_persisted_assignment_reads_back_and_a_stale_one_is_refused() {
        let mut slots = RuleSlots::new(8);
        assert!(slots.assign(&[rule(0), rule(1), rule(2)]).is_ok());
        assert!(slots.assign(&[rule(1), rule(2)]).is_ok());
        let state = slots.to_state();
        let json = serde_json::to_string(&state).unwrap_or_default();
        let parsed: SlotState = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        let in_use = BTreeSet::from([1, 2]);
        let back = RuleSlots::from_state(&parsed, 8, &in_use).unwrap_or_else(|| panic!("refused"));
        assert_eq!(slots_of(&back, &[0, 1, 2]), [None, Some(1), Some(2)]);
        assert_eq!(back.to_state(), state);
        // A slot the maps use that the state never handed out: the state is older
        // than the maps.
        assert!(RuleSlots::from_state(&parsed, 8, &BTreeSet::from([3])).is_none());
        // Another capacity, or a slot held twice.
        assert!(RuleSlots::from_state(&parsed, 16, &in_use).is_none());
        let twice = SlotState {
            released: vec![1],
            ..parsed
        };
        assert!(RuleSlots::from_state(&twice, 8, &in_use).is_none());
    }

    #[test]
    fn a_cluster_policy_rule_and_what_it_counts_read_back() {
        let deny = RuleName {
            policy: ObjectRef::cluster("guardrails"),
            direction: Direction::Egress,
            rule_index: 2,
            verdict: RuleVerdict::WouldDrop,
        };
        let mut slots = RuleSlots::new(8);
        assert!(slots.assign(&[rule(0), deny.clone()]).is_ok());
        let state = slots.to_state();
        let back = RuleSlots::from_state(&state, 8, &BTreeSet::from([0, 1]))
            .unwrap_or_else(|| panic!("refused: {state:?}"));
        assert!(back.slot(&deny).is_some());
        assert_eq!(back.slot(&deny), slots.slot(&deny));
        assert_eq!(back.slot(&rule(0)), slots.slot(&rule(0)));
        // The same rule now dropping is another rule: a slot of its own.
        let enforced = RuleName {
            verdict: RuleVerdict::Dropped,
            ..deny
        };
        assert_eq!(back.slot(&enforced), None);
    }

    #[test]
    fn unknown_slots_are_all_released_so_each_one_handed_out_is_zeroed() {
        let mut slots = RuleSlots::unknown(3);
        assert_eq!(slots.assign(&[rule(0), rule(1)]).ok(), Some(vec![0, 1]));
    }

    #[test]
    fn more_rules_than_slots_is_an_error_that_changes_nothing() {
        let mut slots = RuleSlots::new(2);
        assert!(slots.assign(&[rule(0)]).is_ok());
        assert!(matches!(
            slots.assign(&[rule(1), rule(2), rule(3)]),
            Err(DataplaneError::TooManyRules {
                rules: 3,
                capacity: 2
            })
        ));
        assert_eq!(slots_of(&slots, &[0, 1, 2, 3]), [Some(0), None, None, None]);
        // Slot 1 was never handed out: the failed call did not use it up.
        assert_eq!(slots.assign(&[rule(0), rule(1)]).ok(), Some(vec![]));
        assert_eq!(slots_of(&slots, &[0, 1]), [Some(0), Some(1)]);
    }
}
