//! The node's exits: the uplink and tunnel devices where a Service egress deferred
//! at a local client leaves the node when its backend runs elsewhere. `node_exit`
//! (TC egress) decides such packets, `node_entry` (TC ingress) marks the verified
//! replies coming back (`policy-ebpf/src/exit.rs` has the rules). Every other
//! packet crossing an exit passes untouched, so attaching to a busy uplink costs a
//! mark test per packet out and a parse and two lookups per packet in.

use super::Datapath;
use crate::dataplane::{programs::LinkRole, DataplaneError, InterfaceIndex};

/// What the packets of an exit start with, which decides its pair of classifiers.
/// A link whose packets start with neither is never an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Frames {
    /// An Ethernet header (`ARPHRD_ETHER`): an uplink, a bond, a vxlan or geneve
    /// device, a bridge. `node_exit` and `node_entry`.
    Ethernet,
    /// The IP header itself (`ARPHRD_NONE`, `TUNNEL`, `TUNNEL6`, `SIT`, `RAWIP`): an
    /// IP-in-IP device such as Calico's `tunl0`, WireGuard, tun. `node_exit_ip` and
    /// `node_entry_ip`.
    Ip,
}

impl Datapath {
    /// Attaches the exit classifiers for `frames` (`node_exit` and `node_entry`, or
    /// their `_ip` twins) to `interface`, an exit of the node (uplink or tunnel
    /// device), first in their TCX chains. The calling thread must be in the
    /// interface's network namespace. A pinned datapath pins their links as it
    /// pins a pod's, so the exit keeps deciding while no agent runs and a successor
    /// adopts it; an unpinned one's go when it is dropped.
    pub fn attach_exit(
        &mut self,
        interface: &str,
        frames: Frames,
    ) -> Result<InterfaceIndex, DataplaneError> {
        let role = match frames {
            Frames::Ethernet => LinkRole::Exit,
            Frames::Ip => LinkRole::IpExit,
        };
        let index = self.attach_as(interface, role)?;
        tracing::debug!(
            interface,
            ifindex = index,
            ?frames,
            "exit classifiers attached"
        );
        Ok(index)
    }

    /// Detaches the exit classifiers from `ifindex` and removes their link pins
    /// (nothing to do if they are not attached there).
    pub fn detach_exit(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError> {
        let ethernet = self.detach_as(ifindex, LinkRole::Exit)?;
        if ethernet || self.detach_as(ifindex, LinkRole::IpExit)? {
            tracing::debug!(ifindex, "exit classifiers detached");
        }
        Ok(())
    }

    /// Interfaces with the exit classifiers attached, and which.
    pub fn exit_interfaces(&self) -> impl Iterator<Item = InterfaceIndex> + '_ {
        self.exits.keys().chain(self.ip_exits.keys()).copied()
    }
}
