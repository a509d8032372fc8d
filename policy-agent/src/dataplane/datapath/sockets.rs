//! The node's own sockets: `node_sockets`, an `sk_lookup` program on the node's
//! network namespace, decides a local pod's connection that meets a socket of the
//! node itself after DNAT, i.e. a Service egress whose backend is the node (a
//! hostNetwork pod), which crosses no classifier (`policy-ebpf/src/sockets.rs` has
//! the rules). A flow from anything but a local pod passes with one lookup.
//!
//! A pinned datapath pins its link as `links/node-sockets`: a killed agent leaves
//! it deciding, and the next agent moves it to its own program in one
//! `bpf_link_update` (`sys::update_pinned_link`), as it moves the classifiers'.

use crate::causes::causes;
use std::{fs::File, os::fd::AsFd};

use aya::programs::{links::FdLink, sk_lookup::SkLookupLinkId, SkLookup};

use super::Datapath;
use crate::dataplane::{
    maps::os_error, pins::PinLayout, programs::NODE_SOCKETS_PROGRAM, sys, Cause, DataplaneError,
};

/// The network namespace of the calling thread.
const OWN_NETNS: &str = "/proc/thread-self/ns/net";

/// How `node_sockets` is attached.
pub(super) enum SocketsLink {
    /// A link the program owns: detached when the datapath is dropped.
    Owned(SkLookupLinkId),
    /// The link pinned at `PinLayout::sockets_pin`: attached until the pin is
    /// removed, whatever happens to this process.
    Pinned,
}

impl Datapath {
    /// Attaches `node_sockets` to the calling thread's network namespace (the
    /// node's), once: nothing to do when it is attached, or was adopted from the
    /// pins. Pinned when the datapath is.
    pub fn attach_node_sockets(&mut self) -> Result<(), DataplaneError> {
        if self.sockets.is_some() {
            return Ok(());
        }
        let netns = File::open(OWN_NETNS).map_err(|e| DataplaneError::Pinned {
            path: OWN_NETNS.into(),
            what: "opening the network namespace".into(),
            os_error: e.raw_os_error(),
            source: Some(Box::new(e)),
        })?;
        let id = sockets_program(self)?
            .attach(netns.as_fd())
            .map_err(|source| DataplaneError::Attach {
                program: NODE_SOCKETS_PROGRAM,
                interface: "the node's network namespace".to_string(),
                source: Box::new(source),
            })?;
        let link = match self.pins.clone() {
            None => SocketsLink::Owned(id),
            Some(layout) => {
                pin_link(self, &layout, id)?;
                SocketsLink::Pinned
            }
        };
        tracing::debug!("node_sockets attached to the node's network namespace");
        self.sockets = Some(link);
        Ok(())
    }

    /// Detaches `node_sockets` (and removes its pin); nothing to do if it is not
    /// attached.
    pub fn detach_node_sockets(&mut self) -> Result<(), DataplaneError> {
        match self.sockets.take() {
            None => Ok(()),
            Some(SocketsLink::Owned(id)) => {
                sockets_program(self)?
                    .detach(id)
                    .map_err(|e| DataplaneError::Detach {
                        ifindex: 0,
                        what: format!("detaching {NODE_SOCKETS_PROGRAM}"),
                        source: Some(Box::new(e)),
                    })
            }
            Some(SocketsLink::Pinned) => match &self.pins {
                Some(layout) => layout.remove_sockets_link().map(drop),
                None => Ok(()),
            },
        }
    }

    /// Whether `node_sockets` is attached (by this datapath, or adopted).
    pub fn node_sockets_attached(&self) -> bool {
        self.sockets.is_some()
    }

    /// Moves the `node_sockets` link pinned in `layout` (if any) to this datapath's
    /// program; true if one was adopted. A pin whose network namespace is gone
    /// (`ENOLINK`) is removed: `attach_node_sockets` makes a new one. Any other
    /// failure leaves the link as it is, deciding with the program it has on the
    /// same maps, and counts as adopted: removing it would leave Service egress to
    /// the node undecided until the first sync attaches a new one.
    pub(super) fn adopt_sockets_link(
        &mut self,
        layout: &PinLayout,
    ) -> Result<bool, DataplaneError> {
        let path = layout.sockets_pin();
        if !path.exists() {
            return Ok(false);
        }
        let program = sockets_program(self)?;
        let fd = program.fd().map_err(|e| DataplaneError::Program {
            program: NODE_SOCKETS_PROGRAM,
            what: "loading".into(),
            source: Some(Box::new(e)),
        })?;
        let moved = sys::update_pinned_link(&path, fd.as_fd());
        match moved {
            Err(error) if error.raw_os_error() == Some(nix::libc::ENOLINK) => {
                tracing::info!(pin = %path.display(), "the pinned node_sockets link's namespace is gone; replaced");
                layout.remove_sockets_link()?;
                Ok(false)
            }
            Err(error) => {
                tracing::warn!(pin = %path.display(), error = %causes(&error), "the pinned node_sockets link could not be moved to the new program; it keeps deciding with its own");
                self.sockets = Some(SocketsLink::Pinned);
                Ok(true)
            }
            Ok(()) => {
                self.sockets = Some(SocketsLink::Pinned);
                Ok(true)
            }
        }
    }
}

/// `node_sockets` of the datapath's object.
fn sockets_program(datapath: &mut Datapath) -> Result<&mut SkLookup, DataplaneError> {
    sockets_program_of(&mut datapath.ebpf)
}

/// `node_sockets` of `ebpf`.
pub(super) fn sockets_program_of(ebpf: &mut aya::Ebpf) -> Result<&mut SkLookup, DataplaneError> {
    let program = ebpf
        .program_mut(NODE_SOCKETS_PROGRAM)
        .ok_or(DataplaneError::Program {
            program: NODE_SOCKETS_PROGRAM,
            what: "not in the object".into(),
            source: None,
        })?;
    program.try_into().map_err(|e| DataplaneError::Program {
        program: NODE_SOCKETS_PROGRAM,
        what: "loading".into(),
        source: Some(Box::new(e)),
    })
}

/// Takes the link `attach_node_sockets` just made from the program and pins it
/// (replacing a pin left behind).
fn pin_link(
    datapath: &mut Datapath,
    layout: &PinLayout,
    id: SkLookupLinkId,
) -> Result<(), DataplaneError> {
    let path = layout.sockets_pin();
    let pinned_error =
        |what: String, os_error: Option<i32>, source: Cause| DataplaneError::Pinned {
            path: path.clone(),
            what,
            source: Some(source),
            os_error,
        };
    let link = sockets_program(datapath)?.take_link(id).map_err(|e| {
        pinned_error(
            format!("taking the {NODE_SOCKETS_PROGRAM} link"),
            None,
            Box::new(e),
        )
    })?;
    let link = FdLink::from(link);
    layout.remove_sockets_link()?;
    link.pin(&path)
        .map(drop)
        .map_err(|e| pinned_error("pinning".into(), os_error(&e), Box::new(e)))
}
