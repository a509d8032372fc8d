//! The node's exits: the uplink and tunnel devices where a Service egress deferred
//! at a local client leaves the node when its backend runs elsewhere. `node_exit`
//! (TC egress) decides such packets, `node_entry` (TC ingress) marks the verified
//! replies coming back (`policy-ebpf/src/exit.rs` has the rules). Every other
//! packet crossing an exit passes untouched, so attaching to a busy uplink costs a
//! mark test per packet out and a parse and two lookups per packet in.

use aya::programs::tc::SchedClassifierLinkId;

use super::{
    datapath::{attach_pair, classifier, interface_index, NODE_ENTRY_PROGRAM, NODE_EXIT_PROGRAM},
    Datapath, DataplaneError, InterfaceIndex,
};

impl Datapath {
    /// Attaches `node_exit` and `node_entry` to `interface`, an exit of the node
    /// (uplink or tunnel device), first in their TCX chains. The calling thread must
    /// be in the interface's network namespace. The links belong to this process:
    /// they go when the datapath is dropped, pinned or not.
    pub fn attach_exit(&mut self, interface: &str) -> Result<InterfaceIndex, DataplaneError> {
        let index = interface_index(interface)?;
        if self.exits.contains_key(&index) {
            return Ok(index);
        }
        let links = attach_pair(
            &mut self.ebpf,
            interface,
            [NODE_EXIT_PROGRAM, NODE_ENTRY_PROGRAM],
        )?;
        tracing::debug!(interface, ifindex = index, "exit classifiers attached");
        self.exits.insert(index, links);
        Ok(index)
    }

    /// Detaches the exit classifiers from `ifindex` (nothing to do if they are not
    /// attached there).
    pub fn detach_exit(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError> {
        let Some(links) = self.exits.remove(&ifindex) else {
            return Ok(());
        };
        detach_links(self, ifindex, links)
    }

    /// Interfaces with the exit classifiers attached.
    pub fn exit_interfaces(&self) -> impl Iterator<Item = InterfaceIndex> + '_ {
        self.exits.keys().copied()
    }
}

fn detach_links(
    datapath: &mut Datapath,
    ifindex: InterfaceIndex,
    links: [SchedClassifierLinkId; 2],
) -> Result<(), DataplaneError> {
    for (name, link) in [NODE_EXIT_PROGRAM, NODE_ENTRY_PROGRAM]
        .into_iter()
        .zip(links)
    {
        classifier(&mut datapath.ebpf, name)?
            .detach(link)
            .map_err(|e| DataplaneError::Detach {
                ifindex,
                message: format!("{name}: {e}"),
            })?;
    }
    tracing::debug!(ifindex, "exit classifiers detached");
    Ok(())
}
