//! What the sync loop reports without acting on it: identity conflicts (a pod
//! address that something says belongs elsewhere, `plan::Conflict`) and programs
//! another agent attached ahead of podwall's on a pod interface. Each is logged
//! once while it lasts, counted in a gauge and listed in `/readyz` details; none
//! makes the node unready.

use std::collections::{BTreeMap, BTreeSet};

use super::{dataplane::Dataplane, health::Health, metrics::Metrics};
use crate::{causes::causes, dataplane::EventsLost, node::Link};

/// What was reported last, so a notice is logged once while it lasts.
#[derive(Debug, Default)]
pub struct Notices {
    conflicts: BTreeSet<String>,
    ahead: BTreeSet<String>,
}

impl Notices {
    /// Reports the identity conflicts of the last plan.
    pub fn conflicts(
        &mut self,
        current: impl IntoIterator<Item = String>,
        metrics: &Metrics,
        health: &Health,
    ) {
        let current: BTreeSet<String> = current.into_iter().collect();
        for conflict in current.difference(&self.conflicts) {
            tracing::warn!(%conflict, "identity conflict: not followed");
        }
        metrics.set_identity_conflicts(current.len());
        health.set_identity_conflicts(current.iter().cloned().collect());
        self.conflicts = current;
    }

    /// Reads what the datapath reports on its own (programs ahead of podwall's on
    /// the attached interfaces of `links`, lost events) into the metrics and
    /// `/readyz`; a failed read is logged and counted.
    pub fn refresh(
        &mut self,
        datapath: &mut impl Dataplane,
        links: &BTreeMap<u32, Link>,
        metrics: &Metrics,
        health: &Health,
    ) {
        match datapath.stats() {
            Ok(stats) => metrics.set_events_lost(EventsLost::of(&stats)),
            Err(error) => metrics.error(error.kind()),
        }
        let names = links
            .iter()
            .map(|(index, link)| (*index, link.name.clone()))
            .collect();
        match datapath.programs_ahead(&names) {
            Ok(ahead) => self.ahead(ahead.iter().map(ToString::to_string), metrics, health),
            Err(error) => {
                tracing::warn!(error = %causes(&error), "reading the TCX chains of pod interfaces");
                metrics.error(error.kind());
            }
        }
    }

    /// Reports the programs found running ahead of podwall's (`Datapath::programs_ahead`).
    pub fn ahead(
        &mut self,
        current: impl IntoIterator<Item = String>,
        metrics: &Metrics,
        health: &Health,
    ) {
        let current: BTreeSet<String> = current.into_iter().collect();
        for ahead in current.difference(&self.ahead) {
            tracing::warn!(%ahead, "a program runs ahead of podwall's: it sees (and may pass) the pod's packets first");
        }
        metrics.set_programs_ahead(current.len());
        health.set_programs_ahead(current.iter().cloned().collect());
        self.ahead = current;
    }
}
