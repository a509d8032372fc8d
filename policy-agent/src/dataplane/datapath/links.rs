//! Attaching the classifiers: to pod interfaces (`attach`, `detach`), and the
//! helpers the exits, the sockets program and the pins share.

use std::collections::BTreeMap;

use aya::{
    programs::{
        links::FdLink,
        tc::{SchedClassifierLinkId, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf,
};

use super::Datapath;
use crate::dataplane::{programs::LinkRole, DataplaneError, InterfaceIndex};

/// How an interface's two classifiers are attached (in `LinkRole::programs`
/// order).
pub(super) enum Attachment {
    /// TCX links the programs own: detached when the datapath is dropped.
    Owned([SchedClassifierLinkId; 2]),
    /// TCX links pinned under `links/`: attached until their pins are removed,
    /// whatever happens to this process.
    Pinned([FdLink; 2]),
}

impl Datapath {
    /// Attaches both classifiers to `interface` (a pod's host-side veth) as TCX
    /// links, each first in its hook's chain (`order.rs`), and returns its index.
    /// The calling thread must be in the network namespace of the interface.
    pub fn attach(&mut self, interface: &str) -> Result<InterfaceIndex, DataplaneError> {
        let index = self.attach_as(interface, LinkRole::Pod)?;
        tracing::debug!(interface, ifindex = index, "classifiers attached");
        Ok(index)
    }

    /// Detaches both classifiers from interface `ifindex` (and removes their link
    /// pins). Nothing to do for an interface not attached; an interface that is
    /// gone already lost its links with it.
    pub fn detach(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError> {
        if self.detach_as(ifindex, LinkRole::Pod)? {
            tracing::debug!(ifindex, "classifiers detached");
        }
        Ok(())
    }

    /// The interfaces attached for `role`.
    pub(super) fn attachments(
        &mut self,
        role: LinkRole,
    ) -> &mut BTreeMap<InterfaceIndex, Attachment> {
        match role {
            LinkRole::Pod => &mut self.attached,
            LinkRole::Exit => &mut self.exits,
            LinkRole::IpExit => &mut self.ip_exits,
        }
    }

    /// Attaches `role`'s two programs to `interface` (nothing to do if they are
    /// there), pinning their links when the datapath is pinned.
    pub(super) fn attach_as(
        &mut self,
        interface: &str,
        role: LinkRole,
    ) -> Result<InterfaceIndex, DataplaneError> {
        let index = interface_index(interface)?;
        if self.attachments(role).contains_key(&index) {
            return Ok(index);
        }
        let links = attach_pair(&mut self.ebpf, interface, role.programs())?;
        let attachment = if self.pins.is_some() {
            Attachment::Pinned(self.pin_links(index, role, links)?)
        } else {
            Attachment::Owned(links)
        };
        self.attachments(role).insert(index, attachment);
        Ok(index)
    }

    /// Detaches `role`'s programs from `ifindex` and removes their link pins; false
    /// if they were not attached there.
    pub(super) fn detach_as(
        &mut self,
        ifindex: InterfaceIndex,
        role: LinkRole,
    ) -> Result<bool, DataplaneError> {
        let Some(attachment) = self.attachments(role).remove(&ifindex) else {
            return Ok(false);
        };
        match attachment {
            Attachment::Owned(links) => {
                for (name, link) in role.programs().into_iter().zip(links) {
                    classifier(&mut self.ebpf, name)?
                        .detach(link)
                        .map_err(|e| DataplaneError::Detach {
                            ifindex,
                            what: format!("detaching {name}"),
                            source: Some(Box::new(e)),
                        })?;
                }
            }
            Attachment::Pinned(links) => {
                if let Some(layout) = &self.pins {
                    layout.remove_links(ifindex, role)?;
                }
                drop(links);
            }
        }
        Ok(true)
    }

    /// Interfaces with both classifiers attached.
    pub fn attached_interfaces(&self) -> impl Iterator<Item = InterfaceIndex> + '_ {
        self.attached.keys().copied()
    }
}

pub(super) fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    let program = ebpf.program_mut(name).ok_or(DataplaneError::Program {
        program: name,
        what: "not found in the object".into(),
        source: None,
    })?;
    program.try_into().map_err(|e| DataplaneError::Program {
        program: name,
        what: "not a TC classifier".into(),
        source: Some(Box::new(e)),
    })
}

/// The index of `interface` in the calling thread's network namespace.
pub(super) fn interface_index(interface: &str) -> Result<InterfaceIndex, DataplaneError> {
    nix::net::if_::if_nametoindex(interface).map_err(|source| DataplaneError::Interface {
        interface: interface.to_string(),
        source,
    })
}

/// Attaches `programs[0]` at TC egress and `programs[1]` at TC ingress of
/// `interface`, each first in its chain; never half: if the second fails, the
/// first link goes with the error.
pub(super) fn attach_pair(
    ebpf: &mut Ebpf,
    interface: &str,
    programs: [&'static str; 2],
) -> Result<[SchedClassifierLinkId; 2], DataplaneError> {
    let [out, inward] = programs;
    let first = attach_one(ebpf, out, interface, TcAttachType::Egress)?;
    match attach_one(ebpf, inward, interface, TcAttachType::Ingress) {
        Ok(second) => Ok([first, second]),
        Err(error) => {
            let _ = classifier(ebpf, out).map(|program| program.detach(first));
            Err(error)
        }
    }
}

fn attach_one(
    ebpf: &mut Ebpf,
    name: &'static str,
    interface: &str,
    hook: TcAttachType,
) -> Result<SchedClassifierLinkId, DataplaneError> {
    // First in the hook's TCX chain: ahead of whatever is there now (see
    // `order.rs` for programs attached ahead of it later).
    let first = TcAttachOptions::TcxOrder(LinkOrder::first());
    classifier(ebpf, name)?
        .attach_with_options(interface, hook, first)
        .map_err(|source| DataplaneError::Attach {
            program: name,
            interface: interface.to_string(),
            source: Box::new(source),
        })
}
