//! What the running agent does for a watch event before the compile `latency`
//! times, on the events' cluster (pure, no kernel): the source rebuilds the whole
//! `ClusterState` from its stores once per batch of notices (the one conversion
//! point, `source::state::StateBuilder`, here over the cluster's objects as an
//! API server serves them, `bench::api_objects`); the compile job diffs that
//! state against the last one to find what changed (`ClusterState::changes`);
//! and a change of the tables the sync loop still holds copies them first
//! (`Incremental` changes its tables through `Arc::make_mut`). The event rows
//! start after all three. Each step is timed alone, the three in turns.

use std::time::{Duration, Instant};

use crate::{
    bench::{api_objects::ApiObjects, BenchError},
    model::ClusterState,
    policy::tables::DatapathTables,
    source::state::StateBuilder,
};

/// The three steps' durations, one per round each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceSideFigures {
    /// The whole state converted from the objects (`StateBuilder`).
    pub rebuild: Vec<Duration>,
    /// The rebuilt state diffed against the last (`ClusterState::changes`).
    pub diff: Vec<Duration>,
    /// The node's tables copied (`DatapathTables::clone`).
    pub copy: Vec<Duration>,
}

impl SourceSideFigures {
    /// Each step's label and durations, in the order a watch event meets them.
    pub fn steps(&self) -> [(&'static str, &[Duration]); 3] {
        [
            (
                "source: the whole state rebuilt from the stores, per batch",
                &self.rebuild,
            ),
            (
                "compile job: the new state diffed against the last",
                &self.diff,
            ),
            (
                "compile job: the tables the sync loop holds copied before a change",
                &self.copy,
            ),
        ]
    }
}

/// Times the three steps `rounds` times on `state`, whose node tables are
/// `tables`.
pub fn run(
    state: &ClusterState,
    tables: &DatapathTables,
    rounds: usize,
) -> Result<SourceSideFigures, BenchError> {
    let objects = ApiObjects::of(state).map_err(|error| BenchError::Event {
        event: "source side".into(),
        message: error.to_string(),
    })?;
    let mut figures = SourceSideFigures::default();
    for _ in 0..rounds {
        let started = Instant::now();
        let rebuilt = rebuild(&objects);
        figures.rebuild.push(started.elapsed());
        let started = Instant::now();
        let changes = state.changes(&rebuilt);
        figures.diff.push(started.elapsed());
        let started = Instant::now();
        std::hint::black_box(tables.clone());
        figures.copy.push(started.elapsed());
        // The rebuild must be the same cluster, or the diff timed another case.
        if changes.kinds() != 0 {
            return Err(BenchError::Event {
                event: "source side".into(),
                message: format!(
                    "the rebuilt state differs from the one it was made from: {} namespaces, {} pods, {} policies, {} Services",
                    changes.namespaces.len(),
                    changes.pods.len(),
                    changes.policies.len(),
                    changes.services.len()
                ),
            });
        }
    }
    Ok(figures)
}

/// The state as the source builds it from its stores.
fn rebuild(objects: &ApiObjects) -> ClusterState {
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
    builder.finish().0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bench::{agent::events, cluster},
        model::StateChanges,
    };

    #[test]
    fn the_rebuilt_state_is_the_cluster_and_every_step_is_timed() {
        let state = cluster::generate(&cluster::ClusterSpec::new(300, 20));
        let tables = events::compile(&state);
        let figures = run(&state, &tables, 2).unwrap_or_else(|e| panic!("{e}"));
        let objects = ApiObjects::of(&state).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rebuild(&objects).changes(&state), StateChanges::default());
        for (label, durations) in figures.steps() {
            assert_eq!(durations.len(), 2, "{label}");
        }
    }
}
