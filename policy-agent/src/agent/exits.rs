//! The node's exits in the sync loop: `node_exit`/`node_entry` go on every link the
//! plan names an exit (`plan` rule 12) and come off links that stop being one (a
//! link that turns out to be a pod's, or gets enslaved); `node_sockets` goes on the
//! agent's network namespace (the node's) once. One failure does not stop the
//! others, and none fails the pass: the next pass retries.

use std::collections::{BTreeMap, BTreeSet};

use super::{dataplane::Dataplane, sync::Syncer};
use crate::causes::causes;
use crate::dataplane::{Frames, InterfaceIndex};

impl<D: Dataplane> Syncer<D> {
    /// Makes the exit classifiers sit on `exits` and nowhere else, and
    /// `node_sockets` on the node's network namespace.
    pub(super) fn reconcile_exits(&mut self, exits: &BTreeMap<InterfaceIndex, Frames>) {
        if !self.datapath.node_sockets_attached() {
            match self.datapath.attach_node_sockets() {
                Ok(()) => tracing::info!("node_sockets attached to the node's network namespace"),
                Err(error) => {
                    tracing::warn!(error = %causes(&error), "attaching node_sockets failed; Service egress to the node itself is not decided until a pass attaches it");
                    self.metrics.error(error.kind());
                }
            }
        }
        let current = self.datapath.exits();
        let wanted: BTreeSet<InterfaceIndex> = exits.keys().copied().collect();
        for index in current.difference(&wanted) {
            if let Err(error) = self.datapath.detach_exit(*index) {
                tracing::warn!(error = %causes(&error), ifindex = index, "detaching the exit classifiers failed; retried next pass");
                self.metrics.error(error.kind());
            }
        }
        for (index, frames) in exits.iter().filter(|(index, _)| !current.contains(index)) {
            let Some(name) = self.links.get(index).map(|link| link.name.clone()) else {
                continue; // gone since the plan
            };
            match self.datapath.attach_exit(&name, *frames) {
                Ok(_) => tracing::info!(interface = %name, "exit classifiers attached"),
                Err(error) => {
                    tracing::warn!(error = %causes(&error), interface = %name, "attaching the exit classifiers failed; Service egress leaving by it is not decided until a pass attaches them");
                    self.metrics.error(error.kind());
                }
            }
        }
        let attached = self.datapath.exits();
        self.health.set_exits_attached(
            self.datapath.node_sockets_attached()
                && wanted
                    .iter()
                    .all(|index| attached.contains(index) || !self.links.contains_key(index)),
        );
    }
}
