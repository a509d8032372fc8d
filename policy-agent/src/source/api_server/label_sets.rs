//! One shared map per distinct label set in the Pod store. The pods of a
//! Deployment, a ReplicaSet or a Job carry the same labels (they come from one
//! template); interning each pod's labels as it is stored makes the labels'
//! memory follow the number of distinct label sets rather than the number of
//! pods, in the store and in the model converted from it, which shares them.

use std::{
    collections::HashSet,
    sync::{Mutex, PoisonError},
};

use crate::model::Labels;

/// No sweep below this many sets.
const FIRST_SWEEP: usize = 1024;

/// The label sets the Pod store holds, each once.
#[derive(Debug, Default)]
pub struct LabelSets {
    inner: Mutex<Sets>,
}

#[derive(Debug, Default)]
struct Sets {
    held: HashSet<Labels>,
    /// Sweep when `held` grows to this many (twice what the last sweep kept).
    sweep_at: usize,
}

impl LabelSets {
    /// The map equal to `labels` that is already held, if any; else `labels`,
    /// held from now on. Sets no one else holds any more are forgotten once the
    /// table has doubled since the last sweep, so it stays within twice the sets
    /// in use.
    pub fn intern(&self, labels: Labels) -> Labels {
        // A panic while the lock was held cannot leave the set inconsistent.
        let mut sets = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = sets.held.get(&labels) {
            return held.clone();
        }
        if sets.held.len() >= sets.sweep_at.max(FIRST_SWEEP) {
            sets.held.retain(|set| set.holders() > 1);
            sets.sweep_at = sets.held.len() * 2;
        }
        sets.held.insert(labels.clone());
        labels
    }

    /// How many sets are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(app: &str, n: usize) -> Labels {
        Labels::from([
            ("app".to_string(), app.to_string()),
            ("n".to_string(), n.to_string()),
        ])
    }

    #[test]
    fn equal_label_sets_become_one_map_and_different_ones_stay_apart() {
        let sets = LabelSets::default();
        let first = sets.intern(labels("web", 1));
        let again = sets.intern(labels("web", 1));
        let other = sets.intern(labels("db", 1));
        assert!(again.shares(&first));
        assert_eq!(again, labels("web", 1));
        assert!(!other.shares(&first));
        assert_eq!(other, labels("db", 1));
    }

    #[test]
    fn sets_no_one_holds_are_forgotten_and_the_table_stays_bounded() {
        let sets = LabelSets::default();
        let kept = sets.intern(labels("kept", 0));
        for n in 0..10 * FIRST_SWEEP {
            drop(sets.intern(labels("gone", n)));
        }
        assert!(sets.len() <= 2 * FIRST_SWEEP, "{} sets held", sets.len());
        assert!(sets.intern(labels("kept", 0)).shares(&kept));
    }
}
