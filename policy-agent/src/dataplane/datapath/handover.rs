//! A new pod interface enforced at once: its two classifiers go on as `cls_bpf`
//! filters (`attach_now`), and move to TCX links later, from a thread of their
//! own (`Handover`).
//!
//! Why: a TCX link's attach waits out an RCU grace period while it holds
//! `rtnl_lock` (two per interface, about 24 ms at the median on the project's
//! VM), where a `clsact` qdisc and two `cls_bpf` filters in direct-action mode
//! take about 0.2 ms. The filters run the same two loaded programs on the same
//! maps, so packets meet the same decisions; TCX links stay the steady state
//! (pinned, first in their hook's chain, moved atomically across restarts).
//!
//! The handover, in three steps, each hook on its own:
//! 1. `link`: a TCX link of `pod_yield`, first in the hook's chain, pinned where
//!    the pod's link will be. `pod_yield` returns TCX_NEXT without reading the
//!    packet, so the filter behind it still decides every packet; the grace
//!    periods are spent here, with nothing changed for packets.
//! 2. `update`: the link moves to the real program in one `bpf_link_update`;
//!    from that instant the link decides.
//! 3. `remove_filters`: the filters are deleted.
//!
//! Between 2 and 3 (one netlink round trip, tens of microseconds) a packet the
//! link allows (TCX_NEXT) is decided a second time by the filter. A second run
//! only ever sees packets the first one passed, so it can drop, never pass: it
//! drops a Service reply to an ingress-isolated client, whose reply-verified mark
//! the first run consumed (the security model's known limits).
//!
//! A handover that fails in step 1 or 2 removes its links (the filters decide
//! as before) and is tried again; one that fails in step 3 keeps its links and
//! the next `handover` removes the filters. An agent that stops
//! part way leaves filters on the interface, as it leaves pinned links: the next
//! agent replaces a filter it finds in place (`RTM_NEWTFILTER` on the same
//! priority and handle: atomic) and hands over again; links pinned in step 1 are
//! adopted as any (moved to its programs), and the filters beside them removed
//! at its first `handover`.

use std::{
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
};

use aya::programs::{
    tc::{qdisc_add_clsact, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
    Link, ProgramError, ProgramFd, TcAttachType,
};

use super::{
    links::{classifier, interface_index, Attachment},
    Datapath,
};
use crate::dataplane::{
    programs::{LinkRole, POD_EGRESS_PROGRAM, POD_INGRESS_PROGRAM, POD_YIELD_PROGRAM},
    sys::{self, BPF_F_BEFORE, BPF_TCX_EGRESS, BPF_TCX_INGRESS},
    DataplaneError, InterfaceIndex,
};

/// The priority of podwall's filters: 1, the first a `clsact` hook runs.
pub const FILTER_PRIORITY: u16 = 1;
/// The handle of podwall's filters at `FILTER_PRIORITY` ("pw").
pub const FILTER_HANDLE: u32 = 0x7077;
/// `FILTER_HANDLE` as aya takes it.
const HANDLE: TcHandle = TcHandle::new(0, FILTER_HANDLE as u16);

/// The two hooks of a pod interface in `LinkRole::programs` order: the program,
/// its TC hook and its TCX attach type.
const HOOKS: [(&str, TcAttachType, u32); 2] = [
    (POD_INGRESS_PROGRAM, TcAttachType::Egress, BPF_TCX_EGRESS),
    (POD_EGRESS_PROGRAM, TcAttachType::Ingress, BPF_TCX_INGRESS),
];

fn errno(error: &ProgramError) -> Option<i32> {
    match error {
        ProgramError::TcError(TcError::NetlinkError(e)) => e.raw_os_error(),
        other => crate::dataplane::maps::os_error(other),
    }
}

/// Adds the `clsact` qdisc to `interface` unless it has one.
fn add_clsact(interface: &str) -> Result<(), DataplaneError> {
    match qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(nix::libc::EEXIST) => Ok(()),
        Err(e) => Err(DataplaneError::Program {
            program: POD_INGRESS_PROGRAM,
            what: format!("adding a clsact qdisc to {interface}"),
            source: Some(Box::new(e)),
        }),
    }
}

/// Deletes podwall's filter at `hook` of `interface` (index `ifindex`); true if
/// there was one (none either when the name now belongs to another interface).
/// The calling thread must be in the interface's network namespace.
pub(super) fn remove_filter(
    interface: &str,
    ifindex: InterfaceIndex,
    hook: TcAttachType,
) -> Result<bool, DataplaneError> {
    let failed = |what: &str, source: Option<crate::dataplane::Cause>| DataplaneError::Handover {
        interface: interface.to_string(),
        what: what.to_string(),
        source,
    };
    // The name may have moved to another interface since.
    if interface_index(interface).ok() != Some(ifindex) {
        return Ok(false);
    }
    let filter = SchedClassifierLink::attached(interface, hook, FILTER_PRIORITY, HANDLE, None)
        .map_err(|e| failed("naming its filter", Some(Box::new(e))))?;
    match filter.detach() {
        Ok(()) => Ok(true),
        // No such filter; EINVAL: no clsact qdisc at all.
        Err(e) if matches!(errno(&e), Some(nix::libc::ENOENT | nix::libc::EINVAL)) => Ok(false),
        Err(e) => Err(failed("deleting its filter", Some(Box::new(e)))),
    }
}

/// Deletes podwall's filters running one of `programs` (ids) from every
/// interface of the calling thread's network namespace (`uninstall`: a veth not
/// yet handed over to links keeps them, and with them the programs and maps,
/// until it goes); how many.
pub(super) fn remove_filters_of(programs: &[u32]) -> usize {
    let Ok(interfaces) = nix::net::if_::if_nameindex() else {
        return 0;
    };
    let mut removed = 0;
    for interface in interfaces.iter() {
        let name = interface.name().to_string_lossy();
        let index = interface.index();
        for (_, hook, _) in HOOKS {
            let ingress = matches!(hook, TcAttachType::Ingress);
            let ours = crate::node::tc_filters(index, ingress).is_ok_and(|filters| {
                filters.iter().any(|f| {
                    f.priority == FILTER_PRIORITY
                        && f.handle == FILTER_HANDLE
                        && f.program_id.is_some_and(|id| programs.contains(&id))
                })
            });
            if !ours {
                continue;
            }
            match remove_filter(&name, index, hook) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(error = %crate::causes::causes(&error), interface = %name, "podwall's filter not removed")
                }
            }
        }
    }
    removed
}

impl Datapath {
    /// A descriptor of program `name` of its own, for another thread.
    pub(super) fn program_fd(&mut self, name: &'static str) -> Result<ProgramFd, DataplaneError> {
        let fd =
            classifier(&mut self.ebpf, name)?
                .fd()
                .map_err(|source| DataplaneError::Program {
                    program: name,
                    what: "reading its descriptor".into(),
                    source: Some(Box::new(source)),
                })?;
        fd.try_clone().map_err(|source| DataplaneError::Program {
            program: name,
            what: "duplicating its descriptor".into(),
            source: Some(Box::new(source)),
        })
    }

    /// Attaches both classifiers to `interface` (a pod's host-side veth) at once
    /// as `cls_bpf` filters (`FILTER_PRIORITY`, `FILTER_HANDLE`; a filter already
    /// there, left by an agent before, is replaced in place), and returns its
    /// index; `handover` later moves them to TCX links. Nothing to do for an
    /// interface attached either way. The calling thread must be in the network
    /// namespace of the interface.
    pub fn attach_now(&mut self, interface: &str) -> Result<InterfaceIndex, DataplaneError> {
        let index = interface_index(interface)?;
        if self.attached.contains_key(&index) {
            return Ok(index);
        }
        add_clsact(interface)?;
        let pinned = self.pins.is_some();
        for (name, hook, _) in HOOKS {
            let program = classifier(&mut self.ebpf, name)?;
            let options = NlOptions {
                priority: FILTER_PRIORITY,
                handle: HANDLE,
                ..NlOptions::default()
            };
            let attached = match program.attach_with_options(
                interface,
                hook,
                TcAttachOptions::Netlink(options),
            ) {
                Err(e) if errno(&e) == Some(nix::libc::EEXIST) => {
                    let left = SchedClassifierLink::attached(
                        interface,
                        hook,
                        FILTER_PRIORITY,
                        HANDLE,
                        None,
                    )
                    .map_err(|source| DataplaneError::Interface {
                        interface: interface.to_string(),
                        source: nix::Error::from_raw(
                            source.raw_os_error().unwrap_or(nix::libc::ENODEV),
                        ),
                    })?;
                    tracing::info!(
                        interface,
                        program = name,
                        "replacing a filter an agent before left"
                    );
                    program.attach_to_link(left)
                }
                other => other,
            };
            let id = attached.map_err(|source| DataplaneError::Attach {
                program: name,
                interface: interface.to_string(),
                source: Box::new(source),
            })?;
            if pinned {
                // A pinned datapath's filters outlive it, as its links do: out of
                // aya's hands, which would delete them when the datapath goes.
                let filter = program
                    .take_link(id)
                    .map_err(|source| DataplaneError::Attach {
                        program: name,
                        interface: interface.to_string(),
                        source: Box::new(source),
                    })?;
                std::mem::forget(filter);
            }
        }
        self.attached
            .insert(index, Attachment::Filters(interface.to_string()));
        tracing::debug!(
            interface,
            ifindex = index,
            "classifiers attached as filters"
        );
        Ok(index)
    }

    /// The handover of a pod interface still on filters (the lowest index
    /// first), with the descriptors it needs; `None` when every interface is on
    /// links. Run it (`Handover::run`) in the interface's network namespace,
    /// then give its outcome to `handed_over`.
    pub fn handover(&mut self) -> Result<Option<Handover>, DataplaneError> {
        self.remove_left_filters();
        let Some((ifindex, interface)) =
            self.attached
                .iter()
                .find_map(|(index, attachment)| match attachment {
                    Attachment::Filters(name) => Some((*index, name.clone())),
                    _ => None,
                })
        else {
            return Ok(None);
        };
        let pins = self
            .pins
            .as_ref()
            .map(|layout| [0, 1].map(|hook| layout.link_pin(ifindex, LinkRole::Pod, hook)));
        Ok(Some(Handover {
            ifindex,
            interface,
            stand_in: self.program_fd(POD_YIELD_PROGRAM)?,
            programs: [
                self.program_fd(POD_INGRESS_PROGRAM)?,
                self.program_fd(POD_EGRESS_PROGRAM)?,
            ],
            pins,
            links: Vec::new(),
        }))
    }

    /// Removes the filters that may be left beside links (`filters_unchecked`),
    /// in the calling thread's network namespace; one that cannot be removed now
    /// is tried again at the next `handover`.
    fn remove_left_filters(&mut self) {
        let unchecked = std::mem::take(&mut self.filters_unchecked);
        for ifindex in unchecked {
            let Ok(name) = nix::net::if_::if_indextoname(ifindex) else {
                continue; // gone, and its filters with it
            };
            let interface = name.to_string_lossy().into_owned();
            for (_, hook, _) in HOOKS {
                match remove_filter(&interface, ifindex, hook) {
                    Ok(true) => tracing::info!(
                        interface,
                        "removed a filter left beside the interface's links"
                    ),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(error = %crate::causes::causes(&error), interface, "a filter left beside the interface's links; tried again later");
                        self.filters_unchecked.insert(ifindex);
                    }
                }
            }
        }
    }

    /// Records what a handover did: on success the interface is on its links
    /// (unless it was detached meanwhile: then they go too); on failure it stays
    /// on its filters and `handover` offers it again.
    pub fn handed_over(&mut self, outcome: HandedOver) {
        let HandedOver {
            ifindex,
            links,
            filters_left,
        } = outcome;
        let Ok(links) = links else {
            return;
        };
        match self.attached.get(&ifindex) {
            Some(Attachment::Filters(_)) => {
                self.attached.insert(ifindex, Attachment::Handed(links));
                if filters_left {
                    self.filters_unchecked.insert(ifindex);
                }
            }
            _ => {
                // Detached (or attached anew) while the handover ran.
                if let Some(layout) = &self.pins {
                    if let Err(error) = layout.remove_links(ifindex, LinkRole::Pod) {
                        tracing::warn!(error = %crate::causes::causes(&error), ifindex, "removing the links of a handover whose interface was detached meanwhile");
                    }
                }
                drop(links);
            }
        }
    }
}

/// Moving one pod interface from its filters to TCX links (module comment),
/// holding what it needs so it runs without the datapath: `run` does it all, the
/// steps are there for tests that look at packets between them.
pub struct Handover {
    ifindex: InterfaceIndex,
    interface: String,
    stand_in: ProgramFd,
    /// `pod_ingress` and `pod_egress`.
    programs: [ProgramFd; 2],
    /// Where the links are pinned, for a pinned datapath.
    pins: Option<[PathBuf; 2]>,
    /// The links made so far, in `HOOKS` order.
    links: Vec<OwnedFd>,
}

/// What `Handover::run` did, for `Datapath::handed_over`.
pub struct HandedOver {
    /// The interface.
    pub ifindex: InterfaceIndex,
    /// Its two links, deciding (in `LinkRole::programs` order), or why not.
    pub links: Result<[OwnedFd; 2], DataplaneError>,
    /// The filters could not be removed: the next `Datapath::handover` does.
    pub filters_left: bool,
}

impl Handover {
    /// The interface handed over.
    pub fn ifindex(&self) -> InterfaceIndex {
        self.ifindex
    }

    fn failed(&self, what: &str, source: std::io::Error) -> DataplaneError {
        DataplaneError::Handover {
            interface: self.interface.clone(),
            what: what.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// Step 1: a pinned TCX link of `pod_yield` first in each hook (the filters
    /// still decide).
    pub fn link(&mut self) -> Result<(), DataplaneError> {
        for (hook, (_, _, attach_type)) in HOOKS.iter().enumerate() {
            let link = sys::tcx_link_create(
                self.stand_in.as_fd(),
                self.ifindex,
                *attach_type,
                BPF_F_BEFORE,
            )
            .map_err(|e| self.failed("linking pod_yield", e))?;
            if let Some(pins) = &self.pins {
                let path = &pins[hook];
                // A pin left by a failed handover names a link that is gone.
                let _ = std::fs::remove_file(path);
                sys::pin(link.as_fd(), path).map_err(|e| self.failed("pinning a link", e))?;
            }
            self.links.push(link);
        }
        Ok(())
    }

    /// Step 2: each link moves to its real program in one update (it decides
    /// from then on).
    pub fn update(&mut self) -> Result<(), DataplaneError> {
        for (link, program) in self.links.iter().zip(&self.programs) {
            sys::update_link(link.as_fd(), program.as_fd())
                .map_err(|e| self.failed("moving a link to its program", e))?;
        }
        Ok(())
    }

    /// Step 3: the filters go. The calling thread must be in the interface's
    /// network namespace.
    pub fn remove_filters(&mut self) -> Result<(), DataplaneError> {
        for (_, hook, _) in HOOKS {
            remove_filter(&self.interface, self.ifindex, hook)?;
        }
        Ok(())
    }

    /// The links, once steps 1 and 2 are done; else the links made are removed
    /// (the filters decide as before).
    pub fn finish(mut self, done: Result<(), DataplaneError>, filters_left: bool) -> HandedOver {
        let links = match done {
            Ok(()) => match <[OwnedFd; 2]>::try_from(std::mem::take(&mut self.links)) {
                Ok(links) => Ok(links),
                Err(_) => Err(DataplaneError::Handover {
                    interface: self.interface.clone(),
                    what: "finished before both links were made".into(),
                    source: None,
                }),
            },
            Err(error) => Err(error),
        };
        if links.is_err() {
            self.unlink();
        }
        HandedOver {
            ifindex: self.ifindex,
            links,
            filters_left,
        }
    }

    /// Removes the links made so far and their pins.
    fn unlink(&mut self) {
        if let Some(pins) = &self.pins {
            for path in pins {
                let _ = sys::detach_pinned_link(path);
                let _ = std::fs::remove_file(path);
            }
        }
        self.links.clear();
    }

    /// All three steps. A failure to remove the filters is logged, not
    /// returned: the links decide, and the interface's next attach removes them.
    pub fn run(mut self) -> HandedOver {
        let done = self.link().and_then(|()| self.update());
        let mut filters_left = false;
        if done.is_ok() {
            if let Err(error) = self.remove_filters() {
                tracing::warn!(error = %crate::causes::causes(&error), interface = %self.interface, "filters left beside the links; removed at the next handover");
                filters_left = true;
            }
        }
        self.finish(done, filters_left)
    }
}
