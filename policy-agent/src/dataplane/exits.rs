//! The node's exits: the uplink and tunnel devices where a Service egress deferred
//! at a local client leaves the node when its backend runs elsewhere. `node_exit`
//! (TC egress) decides such packets, `node_entry` (TC ingress) marks the verified
//! replies coming back (`policy-ebpf/src/exit.rs` has the rules). Every other
//! packet crossing an exit passes untouched, so attaching to a busy uplink costs a
//! mark test per packet out and a parse and two lookups per packet in.

use super::{datapath::LinkRole, Datapath, DataplaneError, InterfaceIndex};

impl Datapath {
    /// Attaches `node_exit` and `node_entry` to `interface`, an exit of the node
    /// (uplink or tunnel device), first in their TCX chains. The calling thread must
    /// be in the interface's network namespace. A pinned datapath pins their links
    /// as it pins a pod's, so the exit keeps deciding while no agent runs and a
    /// successor adopts it; an unpinned one's go when it is dropped.
    pub fn attach_exit(&mut self, interface: &str) -> Result<InterfaceIndex, DataplaneError> {
        let index = self.attach_as(interface, LinkRole::Exit)?;
        tracing::debug!(interface, ifindex = index, "exit classifiers attached");
        Ok(index)
    }

    /// Detaches the exit classifiers from `ifindex` and removes their link pins
    /// (nothing to do if they are not attached there).
    pub fn detach_exit(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError> {
        if self.detach_as(ifindex, LinkRole::Exit)? {
            tracing::debug!(ifindex, "exit classifiers detached");
        }
        Ok(())
    }

    /// Interfaces with the exit classifiers attached.
    pub fn exit_interfaces(&self) -> impl Iterator<Item = InterfaceIndex> + '_ {
        self.exits.keys().copied()
    }
}
