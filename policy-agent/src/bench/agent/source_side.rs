//! What the running agent does for a watch event before the compile `latency`
//! times, on the events' cluster (pure, no kernel): the source converts the
//! changed object into the state it keeps (`source::state::KeptState`, here
//! over the cluster's objects as an API server serves them,
//! `bench::api_objects`) and hands on a copy; and the compile job diffs that
//! state against the last one to find what changed (`ClusterState::changes`).
//! The event rows start after both (a change made in the tables the sync loop
//! still holds copies them first, within the rows' compile: `latency`). Each
//! step is timed alone, the two in turns, with one pod's labels changed per
//! round. Also timed, not per event: the whole state converted from every
//! object, as after a relist.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    bench::{api_objects::ApiObjects, BenchError},
    model::{ClusterState, StateChanges},
    source::state::{KeptState, SourceKey, StateBuilder},
};

/// The steps' durations, one per round each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceSideFigures {
    /// The whole state converted from the objects (`StateBuilder`), as after a
    /// relist: not per event.
    pub rebuild: Vec<Duration>,
    /// One changed object converted into the kept state, and the state copied
    /// for the snapshot (`KeptState::apply`, `settle`, `ClusterState::clone`).
    pub update: Vec<Duration>,
    /// The new state diffed against the last (`ClusterState::changes`).
    pub diff: Vec<Duration>,
}

impl SourceSideFigures {
    /// Each per-event step's label and durations, in the order a watch event
    /// meets them.
    pub fn steps(&self) -> [(&'static str, &[Duration]); 2] {
        [
            (
                "source: the changed object converted into the kept state",
                &self.update,
            ),
            (
                "compile job: the new state diffed against the last",
                &self.diff,
            ),
        ]
    }

    /// The label and durations of the whole rebuild (not per event).
    pub fn relist(&self) -> (&'static str, &[Duration]) {
        (
            "source: the whole state converted from every object, after a relist (not per event)",
            &self.rebuild,
        )
    }
}

fn failed(message: String) -> BenchError {
    BenchError::Event {
        event: "source side".into(),
        message,
    }
}

/// Times the steps `rounds` times on `state`.
pub fn run(state: &ClusterState, rounds: usize) -> Result<SourceSideFigures, BenchError> {
    let objects = ApiObjects::of(state).map_err(|error| failed(error.to_string()))?;
    let mut kept = rebuild(&objects);
    // The rebuild must be the same cluster, or the rounds time another case.
    let changes = state.changes(kept.state());
    if changes.kinds() != 0 {
        return Err(failed(format!(
            "the rebuilt state differs from the one it was made from: {}",
            counted(&changes)
        )));
    }
    let mut figures = SourceSideFigures::default();
    for round in 0..rounds {
        let started = Instant::now();
        std::hint::black_box(rebuild(&objects));
        figures.rebuild.push(started.elapsed());

        let Some(pod) = objects.pods.get(round % objects.pods.len().max(1)) else {
            return Err(failed("the cluster has no pods".into()));
        };
        let mut pod = pod.clone();
        pod.metadata
            .labels
            .get_or_insert_default()
            .insert("bench-round".into(), round.to_string());
        let last = Arc::new(kept.state().clone());
        let started = Instant::now();
        kept.apply(&SourceKey::of(&pod), Some(&pod))
            .and_then(|()| kept.settle())
            .map_err(|_| failed("a pod's label change needed a whole rebuild".into()))?;
        let next = Arc::new(kept.state().clone());
        figures.update.push(started.elapsed());

        let started = Instant::now();
        let changes = last.changes(&next);
        figures.diff.push(started.elapsed());
        // One pod changed, or the diff timed another case.
        if changes.kinds() != 1 || changes.pods.len() != 1 {
            return Err(failed(format!(
                "one pod's label change changed {}",
                counted(&changes)
            )));
        }
    }
    Ok(figures)
}

/// How many objects of each kind `changes` names, for a message.
fn counted(changes: &StateChanges) -> String {
    format!(
        "{} namespaces, {} pods, {} policies, {} Services",
        changes.namespaces.len(),
        changes.pods.len(),
        changes.policies.len(),
        changes.services.len()
    )
}

/// The state as the source builds it from its stores.
fn rebuild(objects: &ApiObjects) -> KeptState {
    let mut builder = StateBuilder::default();
    for namespace in &objects.namespaces {
        builder.add_or_record(namespace);
    }
    for pod in &objects.pods {
        builder.add_or_record(pod);
    }
    for policy in &objects.policies {
        builder.add_or_record(policy);
    }
    for service in &objects.services {
        builder.add_or_record(service);
    }
    builder.finish_kept()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::cluster;

    #[test]
    fn the_rebuilt_state_is_the_cluster_and_every_step_is_timed() {
        let state = cluster::generate(&cluster::ClusterSpec::new(300, 20));
        let figures = run(&state, 2).unwrap_or_else(|e| panic!("{e}"));
        let objects = ApiObjects::of(&state).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rebuild(&objects).state().changes(&state),
            StateChanges::default()
        );
        for (label, durations) in figures.steps().into_iter().chain([figures.relist()]) {
            assert_eq!(durations.len(), 2, "{label}");
        }
    }
}
