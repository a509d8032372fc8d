//! Stable `RULE_COUNTERS` slots. A rule, named by its policy's namespace/name, its
//! direction and its index in that policy's list, keeps its slot for as long as it
//! has `POLICY` entries, so its counts survive updates that add or remove other
//! rules or policies (which renumber the tables' policy ids).
//! A tracked flow keeps counting in the slot of the rule that allowed it even after
//! that rule is gone, so a new rule takes a slot never used before, and only when
//! none is left the one released longest ago: another rule's late packets reach a
//! reused slot as rarely as the capacity allows. Only a reused slot needs zeroing
//! before its new rule counts in it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::DataplaneError;
use crate::{
    model::ObjectRef,
    policy::tables::{CountedRule, DatapathTables, Direction},
};

/// A rule as it is known across updates: policy name, direction, index.
pub(super) type RuleName = (ObjectRef, Direction, u32);

/// The name of `rule` in `tables`; `None` for a policy id without a name.
pub(super) fn rule_name(tables: &DatapathTables, rule: &CountedRule) -> Option<RuleName> {
    let policy = tables.policy_names.get(rule.policy_id as usize)?;
    Some((policy.clone(), rule.direction, rule.rule_index))
}

/// Which rule counts in which slot, and which slots are free.
#[derive(Clone, Debug)]
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

    /// The slot of `rule`, if it has one.
    pub fn slot(&self, rule: &RuleName) -> Option<u32> {
        self.assigned.get(rule).copied()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rule_index: u32) -> RuleName {
        let policy = ObjectRef {
            namespace: "x".into(),
            name: "web".into(),
        };
        (policy, Direction::Ingress, rule_index)
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
