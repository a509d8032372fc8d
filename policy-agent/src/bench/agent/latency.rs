//! Event -> maps programmed, and -> first packet with the new verdict, on a real
//! loaded datapath (needs root): each event changes the `ClusterState`, the local
//! node's tables are compiled, `Datapath::apply` writes them, then the probe packet
//! runs through its classifier (`BPF_PROG_TEST_RUN`) until it gets the new verdict.
//!
//! Nothing is attached and nothing is sent. Local pods get made-up interface
//! indexes (`apply` only keys `ENDPOINTS` by them), stable per pod as real ones
//! are; the probe's pod gets the loopback's index, 1, because a test run puts its
//! skb on a device that must exist (the loopback for any index below 2).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use policy_common::peer::PEERS_MAX;

use super::{
    events::{self, Change, EventKind, Probe},
    report::{EventRow, EventSample},
};
use crate::{
    bench::{cluster, frames, BenchError},
    dataplane::{Datapath, Hook, InterfaceIndex, LoadOptions},
    model::{ClusterState, ObjectRef},
    policy::{
        compiler::{Incremental, Recompiled},
        tables::{DatapathTables, Direction},
    },
};

/// The loopback device: the probe pod's interface index (see the module comment).
const LOOPBACK: InterfaceIndex = 1;
/// The first made-up interface index of the other local pods.
const FIRST_FAKE_INDEX: InterfaceIndex = 1000;
/// Test runs after `apply` before the benchmark gives up on the new verdict.
const MAX_PROBE_RUNS: u32 = 10_000;
/// The probe packets' source port.
const PROBE_SPORT: u16 = 40_000;

/// Made-up interface indexes, stable per pod, the probe pod's being the loopback.
#[derive(Debug, Default)]
pub struct FakeInterfaces {
    known: BTreeMap<ObjectRef, InterfaceIndex>,
    probe: Option<ObjectRef>,
}

impl FakeInterfaces {
    /// Makes `pod` the one on the loopback (the others keep their numbers).
    pub fn set_probe(&mut self, pod: &ObjectRef) {
        self.probe = Some(pod.clone());
    }

    /// The index `pod` has (or had): the loopback for the probe's pod.
    fn index_of(&self, pod: &ObjectRef) -> Option<InterfaceIndex> {
        if self.probe.as_ref() == Some(pod) {
            return Some(LOOPBACK);
        }
        self.known.get(pod).copied()
    }

    /// An index for every local pod of `tables`, as the agent resolves them.
    pub fn for_tables(&mut self, tables: &DatapathTables) -> BTreeMap<ObjectRef, InterfaceIndex> {
        tables
            .endpoints
            .keys()
            .map(|pod| {
                if self.probe.as_ref() == Some(pod) {
                    return (pod.clone(), LOOPBACK);
                }
                let next = FIRST_FAKE_INDEX + self.known.len() as u32;
                (pod.clone(), *self.known.entry(pod.clone()).or_insert(next))
            })
            .collect()
    }
}

/// The loaded datapath and what the events run against.
pub struct Bench {
    datapath: Datapath,
    state: ClusterState,
    /// The node's tables of `state`, kept across events.
    compiler: Incremental,
    /// The tables last programmed, held while the next event compiles as the
    /// sync loop holds what it last wrote: a change made in the compiler's
    /// tables copies them first (`Incremental::shared_tables`), within the
    /// compile's time, as in the agent.
    tables: Arc<DatapathTables>,
    interfaces: FakeInterfaces,
    /// How long the first apply (every entry into empty maps) took.
    pub first_apply: Duration,
}

/// The one `Datapath::apply` call of the benchmark, so an API change is a change
/// here.
fn program(
    datapath: &mut Datapath,
    tables: &DatapathTables,
    interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
) -> Result<(), BenchError> {
    datapath.apply(tables, interfaces, &BTreeMap::new())?;
    Ok(())
}

/// A datapath loaded with room for `tables` (and as many peers again, for the
/// events' changes).
pub fn load_for(object: &Path, tables: &DatapathTables) -> Result<Datapath, BenchError> {
    let needed = u32::try_from(tables.peers.len()).unwrap_or(u32::MAX);
    let options = LoadOptions {
        peers_capacity: Some(needed.saturating_mul(2).max(PEERS_MAX)),
        ..LoadOptions::default()
    };
    Ok(Datapath::load_with(object, &options)?)
}

impl Bench {
    /// Loads a datapath for `state` and programs its tables.
    pub fn load(object: &Path, state: ClusterState) -> Result<Self, BenchError> {
        let compiler = events::incremental(&state);
        let tables = compiler.shared_tables();
        let mut datapath = load_for(object, &tables)?;
        let mut interfaces = FakeInterfaces::default();
        let started = Instant::now();
        let indexes = interfaces.for_tables(&tables);
        program(&mut datapath, &tables, &indexes)?;
        let first_apply = started.elapsed();
        Ok(Self {
            datapath,
            state,
            compiler,
            tables,
            interfaces,
            first_apply,
        })
    }

    /// The state the events change.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Runs `kind` `iterations` times (forward and backward in turns, ending on the
    /// original state for an even count) and returns the samples of each label.
    pub fn run_kind(
        &mut self,
        kind: &EventKind,
        iterations: usize,
    ) -> Result<Vec<EventRow>, BenchError> {
        let no_flip = || BenchError::Event {
            event: kind.forward_label.to_string(),
            message: "no probe packet changes its verdict".into(),
        };
        let mut after_state = self.state.clone();
        kind.forward.apply(&mut after_state);
        let after = events::compile(&after_state);
        let probe =
            events::find_probe(&after_state, kind, &self.tables, &after).ok_or_else(no_flip)?;
        drop((after_state, after));
        // Untimed: put the probe's pod on the loopback.
        self.interfaces.set_probe(&probe.pod);
        let indexes = self.interfaces.for_tables(&self.tables);
        program(&mut self.datapath, &self.tables, &indexes)?;
        let frame = probe_frame(&probe).ok_or_else(no_flip)?;
        let mut forward = EventRow::new(kind.forward_label);
        let mut backward = EventRow::new(kind.backward_label);
        for i in 0..iterations {
            let (change, row, passes_now) = if i % 2 == 0 {
                (&kind.forward, &mut forward, probe.passes_before)
            } else {
                (&kind.backward, &mut backward, !probe.passes_before)
            };
            let label = row.label;
            if self.probe_passes(&probe, &frame)? != passes_now {
                return Err(BenchError::Event {
                    event: label.to_string(),
                    message: format!(
                        "before the event, the probe {probe:?} did not pass={passes_now}"
                    ),
                });
            }
            row.samples
                .push(self.event(change, &probe, &frame, !passes_now, label)?);
        }
        if forward.label == backward.label {
            forward.samples.append(&mut backward.samples);
            return Ok(vec![forward]);
        }
        Ok(vec![forward, backward])
    }

    /// One event, timed: the change, compile (`Incremental::changed`: what the
    /// changed object touches when the guards allow, else in full), the maps
    /// programmed (`Datapath::update_peers` when only peer entries changed,
    /// `update_endpoint` when a local pod came or went in an endpoint id that
    /// stays, else `apply`), then the probe until it `passes_after`.
    fn event(
        &mut self,
        change: &Change,
        probe: &Probe,
        frame: &[u8],
        passes_after: bool,
        label: &str,
    ) -> Result<EventSample, BenchError> {
        let started = Instant::now();
        let changes = change.apply_recorded(&mut self.state);
        let recompiled =
            self.compiler
                .changed(&self.state, &changes, events::is_local, events::is_local);
        let tables = self.compiler.tables();
        let compiled = started.elapsed();
        match recompiled {
            Recompiled::Peers(prefixes) => {
                self.datapath.update_peers(tables, &prefixes)?;
            }
            Recompiled::Endpoint(change) => {
                // As the sync loop: the pod's entries alone, on the interface it
                // has (came) or had (went).
                let indexes = self.interfaces.for_tables(tables);
                let ifindex =
                    self.interfaces
                        .index_of(&change.pod)
                        .ok_or_else(|| BenchError::Event {
                            event: label.to_string(),
                            message: format!("no interface for {}", change.pod),
                        })?;
                self.datapath.update_endpoint(
                    tables,
                    &indexes,
                    &BTreeMap::new(),
                    &change,
                    ifindex,
                )?;
            }
            Recompiled::Reclassed(prefixes) => {
                // As the sync loop: the moved entries alone when hole-free, else
                // the tables whole.
                if self.datapath.update_classes(tables, &prefixes)?.is_none() {
                    let indexes = self.interfaces.for_tables(tables);
                    self.datapath
                        .apply_in_place(tables, &indexes, &BTreeMap::new())?;
                }
            }
            Recompiled::Entries | Recompiled::Full => {
                // As the sync loop: in place when hole-free, else a flip.
                let indexes = self.interfaces.for_tables(tables);
                self.datapath
                    .apply_in_place(tables, &indexes, &BTreeMap::new())?;
            }
        }
        let programmed = started.elapsed();
        let mut runs = 0;
        while self.probe_passes(probe, frame)? != passes_after {
            runs += 1;
            if runs >= MAX_PROBE_RUNS {
                return Err(BenchError::Event {
                    event: label.to_string(),
                    message: format!("the probe {probe:?} never got pass={passes_after}"),
                });
            }
        }
        let first_packet = started.elapsed();
        self.tables = self.compiler.shared_tables();
        Ok(EventSample {
            compile: compiled,
            apply: programmed - compiled,
            programmed,
            first_packet,
            probe_runs: runs + 1,
        })
    }

    /// Runs the probe packet through its classifier once.
    fn probe_passes(&mut self, probe: &Probe, frame: &[u8]) -> Result<bool, BenchError> {
        let hook = match probe.direction {
            Direction::Ingress => Hook::PodIngress,
            Direction::Egress => Hook::PodEgress,
        };
        Ok(self.datapath.test_run(hook, LOOPBACK, 0, frame)?.passed)
    }
}

/// The probe as a TCP SYN frame (always decided afresh: conntrack is not consulted
/// for a SYN).
fn probe_frame(probe: &Probe) -> Option<Vec<u8>> {
    let (src, dst): (IpAddr, IpAddr) = match probe.direction {
        Direction::Ingress => (probe.peer, probe.pod_address),
        Direction::Egress => (probe.pod_address, probe.peer),
    };
    frames::tcp(src, dst, PROBE_SPORT, probe.port, frames::SYN)
}

/// Generates the cluster, loads the datapath and replays every event kind.
pub fn run(
    object: &Path,
    spec: &cluster::ClusterSpec,
    iterations: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<(Duration, Vec<EventRow>), BenchError> {
    let state = cluster::generate(spec);
    let kinds = events::kinds(spec, &state).map_err(|message| BenchError::Event {
        event: "setup".into(),
        message,
    })?;
    progress(&format!(
        "loading the datapath and programming {} pods x {} policies",
        spec.pods, spec.policies
    ));
    let mut bench = Bench::load(object, state)?;
    let mut rows = Vec::new();
    for kind in &kinds {
        progress(&format!(
            "{} / {}: {iterations} events",
            kind.forward_label, kind.backward_label
        ));
        rows.extend(bench.run_kind(kind, iterations)?);
    }
    Ok((bench.first_apply, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tables::EndpointEntry;

    #[test]
    fn fake_indexes_stay_with_their_pod_and_the_probe_gets_the_loopback() {
        let mut tables = DatapathTables::default();
        for name in ["a", "c"] {
            tables
                .endpoints
                .insert(ObjectRef::new("ns", name), EndpointEntry::default());
        }
        let mut fake = FakeInterfaces::default();
        let first = fake.for_tables(&tables);
        tables
            .endpoints
            .insert(ObjectRef::new("ns", "b"), EndpointEntry::default());
        fake.set_probe(&ObjectRef::new("ns", "b"));
        let second = fake.for_tables(&tables);
        assert_eq!(
            second[&ObjectRef::new("ns", "a")],
            first[&ObjectRef::new("ns", "a")]
        );
        assert_eq!(
            second[&ObjectRef::new("ns", "c")],
            first[&ObjectRef::new("ns", "c")]
        );
        assert_eq!(second[&ObjectRef::new("ns", "b")], LOOPBACK);
        let numbers: std::collections::BTreeSet<_> = second.values().collect();
        assert_eq!(numbers.len(), 3, "distinct indexes");
    }
}
