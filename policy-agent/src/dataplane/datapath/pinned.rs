//! A datapath pinned on bpffs, so enforcement outlives the agent: a restarted
//! agent adopts it, `uninstall` removes it.
//!
//! Layout under the pin directory (`/sys/fs/bpf/podwall/v{ABI}/<instance>/`):
//! - `maps/<MAP>`: every shared map (`policy_common::maps::SHARED`: banks,
//!   `ACTIVE`, conntrack, counters, `CONFIG`, `STATS`, `EVENTS`); kernel-only
//!   scratch maps are not pinned, each load makes its own;
//! - `programs/pod_ingress`, `programs/pod_egress`: the classifiers last loaded;
//! - `links/<ifindex>-ingress`, `links/<ifindex>-egress`: the TCX links of
//!   `pod_ingress` and `pod_egress` on that pod interface;
//!   `links/<ifindex>-exit`, `links/<ifindex>-entry`: those of `node_exit` and
//!   `node_entry` on that exit of the node (`exits.rs`). A pinned bpf_link keeps
//!   its program attached after every fd to it is closed, so a killed agent keeps
//!   enforcing, at its pods and at its exits;
//! - `links/node-sockets`: the link of `node_sockets` on the node's network
//!   namespace (`sockets.rs`). Removing a link's pin detaches it first
//!   (`BPF_LINK_DETACH`, `sys.rs`), so enforcement ends when `detach` or
//!   `uninstall` returns.
//!
//! Beside them, in `/run/podwall/v<N>/<instance>/state.json` (`v<N>` as the pin
//! directory's parent names it, `v{ABI}` for this build's; or under
//! `$PODWALL_RUN_DIR`, the root `policy-agent flows` reads names from), the rule
//! counter slots (`slots::SlotState`): the maps hold each entry's slot, but not
//! which rule by name it belongs to, and a slot must keep its rule across a
//! restart or tracked flows would count in another rule's slot. A JSON file was
//! chosen over reconstructing names from `POLICY` values because the values name
//! policies by index into tables the new agent does not have; both vanish on
//! reboot with bpffs and /run.
//!
//! Adoption (`open_pinned` finds every map pinned) loads the object again with its
//! maps taken from the pins, then moves each pinned link to the new program in one
//! `bpf_link_update` (atomic: the hook is never without a program), so the
//! agent always runs its own programs on the old state. It does not write `ACTIVE`
//! or either bank: enforcement goes on unchanged until the first `apply` flips to
//! the bank it wrote. It does write `CONFIG` (timeouts, event settings: this
//! agent's settings, not policy). A map pin set that is incomplete while links are
//! pinned is refused (`DataplaneError::IncompletePins`) and left as it is: its
//! links keep enforcing its last state, where removing them would leave every
//! pod open (and with nothing at all if the fresh load failed); `uninstall`
//! removes it. Without link pins nothing enforces, and leftovers are removed
//! and loaded fresh.

use crate::causes::causes;
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, SchedClassifierLinkId},
};
use policy_common::counters::RULE_COUNTERS_MAX;

use super::{
    links::{classifier, Attachment},
    Datapath, LoadOptions,
};
use crate::dataplane::{
    maps::os_error,
    pins::{entries, parse_link_name, remove_file, PinLayout, SOCKETS_LINK},
    programs::{LinkRole, POD_EGRESS_PROGRAM, POD_INGRESS_PROGRAM},
    slots::RuleSlots,
    Cause, DataplaneError, InterfaceIndex,
};

/// `bpf_link_update` on a TCX link whose interface is gone.
const ENOLINK: i32 = nix::libc::ENOLINK;

/// Whether `open_pinned` found a datapath to adopt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// Nothing (complete) was pinned: loaded, pinned, nothing attached, both banks
    /// empty (every packet on an attached interface is dropped as unknown until
    /// the first `apply`).
    Fresh,
    /// A pinned datapath was adopted: still enforcing its last state.
    Adopted {
        /// Interfaces whose pinned links were adopted.
        interfaces: usize,
    },
}

impl Datapath {
    /// Opens the datapath pinned at `pin_dir` (on bpffs), or makes one there.
    ///
    /// If every map of this ABI is pinned there, adopts it: the maps, the links
    /// (moved to freshly loaded programs in one atomic update each), the attached
    /// set, both banks' shadows and `ACTIVE` as the kernel holds them, and the rule
    /// slots (from `state.json`, or, without a usable one, all counted as used so
    /// each one handed out is zeroed). No bank entry is written until the first
    /// `apply`; `ACTIVE` moves on two generations in the same bank (`Banks::adopt`). If some map is missing while links are
    /// pinned, fails with `IncompletePins` and removes nothing (the links keep
    /// enforcing; `policy-agent uninstall` starts over). Otherwise removes
    /// whatever is left under `pin_dir` (no link, so nothing that enforces) and
    /// loads and pins a fresh datapath. Links are adopted through
    /// their pins, so any network namespace will do; `attach` afterwards needs the
    /// interfaces' one. Capacities (`options`) apply to a fresh load only: adopted
    /// maps keep the sizes they were pinned with.
    pub fn open_pinned(
        object: &Path,
        options: &LoadOptions,
        pin_dir: &Path,
    ) -> Result<(Datapath, Adoption), DataplaneError> {
        let layout = PinLayout::new(pin_dir);
        let missing = layout.missing_maps();
        let adopt = missing.is_empty();
        if !adopt && layout.has_links()? {
            return Err(DataplaneError::IncompletePins {
                dir: pin_dir.to_path_buf(),
                instance: layout.instance(),
                missing,
            });
        }
        if !adopt && layout.remove_all()? {
            tracing::warn!(pin_dir = %pin_dir.display(), "the leftovers of an incomplete pinned datapath without links were removed");
        }
        layout.create_dirs()?;
        let mut datapath = Self::load_inner(object, options, Some(layout.clone()))?;
        datapath.pin_programs(&layout)?;
        if !adopt {
            tracing::info!(pin_dir = %pin_dir.display(), "datapath loaded and pinned");
            return Ok((datapath, Adoption::Fresh));
        }
        let interfaces = datapath.adopt_links(&layout)?;
        datapath.adopt_sockets_link(&layout)?;
        datapath.banks.adopt()?;
        let in_use: BTreeSet<u32> = [0, 1]
            .iter()
            .flat_map(|&bank| datapath.banks.shadow(bank).policy.values())
            .map(|value| value.rule_slot)
            .filter(|slot| *slot < RULE_COUNTERS_MAX)
            .collect();
        let slots = match layout.load_slots() {
            Some(state) => RuleSlots::from_state(&state, RULE_COUNTERS_MAX, &in_use),
            None => None,
        }
        .unwrap_or_else(|| {
            tracing::warn!(state = %layout.state_file.display(), "no usable rule slot state: every rule counter starts from zero");
            RuleSlots::unknown(RULE_COUNTERS_MAX)
        });
        datapath.counters.set_slots(slots);
        tracing::info!(pin_dir = %pin_dir.display(), interfaces, bank = datapath.banks.active(), "pinned datapath adopted");
        Ok((datapath, Adoption::Adopted { interfaces }))
    }

    /// Removes the datapath pinned at `pin_dir`: detaches every pinned link (even
    /// one a running agent holds) and removes its pin, then the programs, maps,
    /// the directory and the state file. True if anything was there.
    pub fn uninstall(pin_dir: &Path) -> Result<bool, DataplaneError> {
        let removed = PinLayout::new(pin_dir).remove_all()?;
        if removed {
            tracing::info!(pin_dir = %pin_dir.display(), "pinned datapath removed");
        }
        Ok(removed)
    }

    /// Pins both classifiers under `programs/`, replacing earlier pins.
    fn pin_programs(&mut self, layout: &PinLayout) -> Result<(), DataplaneError> {
        for name in [POD_INGRESS_PROGRAM, POD_EGRESS_PROGRAM] {
            let path = layout.program_pin(name);
            remove_file(&path)?;
            classifier(&mut self.ebpf, name)?
                .pin(&path)
                .map_err(|source| DataplaneError::Pinned {
                    path: path.clone(),
                    what: "pinning".into(),
                    os_error: os_error(&source),
                    source: Some(Box::new(source)),
                })?;
        }
        Ok(())
    }

    /// Takes the two links `attach_as` just made for `role` from their programs
    /// and pins them.
    pub(super) fn pin_links(
        &mut self,
        ifindex: InterfaceIndex,
        role: LinkRole,
        ids: [SchedClassifierLinkId; 2],
    ) -> Result<[FdLink; 2], DataplaneError> {
        let Some(layout) = self.pins.clone() else {
            return Err(DataplaneError::Detach {
                ifindex,
                what: "not a pinned datapath".into(),
                source: None,
            });
        };
        let [out, inward] = ids;
        let first = self.pin_link(&layout, ifindex, role, 0, out);
        let second = self.pin_link(&layout, ifindex, role, 1, inward);
        match (first, second) {
            (Ok(a), Ok(b)) => Ok([a, b]),
            (Err(e), _) | (_, Err(e)) => {
                // Whatever got pinned goes; the dropped links detach.
                layout.remove_links(ifindex, role)?;
                Err(e)
            }
        }
    }

    fn pin_link(
        &mut self,
        layout: &PinLayout,
        ifindex: InterfaceIndex,
        role: LinkRole,
        hook: usize,
        id: SchedClassifierLinkId,
    ) -> Result<FdLink, DataplaneError> {
        let name = role.programs()[hook.min(1)];
        let path = layout.link_pin(ifindex, role, hook);
        let pinned_error = |what: String, source: Cause| DataplaneError::Pinned {
            path: path.clone(),
            what,
            source: Some(source),
            os_error: None,
        };
        let link = classifier(&mut self.ebpf, name)?
            .take_link(id)
            .map_err(|e| pinned_error(format!("taking the {name} link"), Box::new(e)))?;
        let link = FdLink::try_from(link)
            .map_err(|e| pinned_error(format!("the {name} link"), Box::new(e)))?;
        // A pin left by a link this datapath does not hold (a detach that failed
        // half way) names a link that is gone or about to be replaced.
        remove_file(&path)?;
        let pinned = link.pin(&path).map_err(|source| DataplaneError::Pinned {
            path: path.clone(),
            what: "pinning".into(),
            os_error: os_error(&source),
            source: Some(Box::new(source)),
        })?;
        Ok(FdLink::from(pinned))
    }

    /// Moves every pinned link to this datapath's programs and records it as
    /// attached (a pod's) or as an exit; returns how many pod interfaces were
    /// adopted. A link whose interface is gone, or whose pair is missing, has its
    /// pins removed.
    fn adopt_links(&mut self, layout: &PinLayout) -> Result<usize, DataplaneError> {
        let mut found: BTreeMap<(LinkRole, InterfaceIndex), [Option<PathBuf>; 2]> = BTreeMap::new();
        for path in entries(&layout.links_dir())? {
            if path.file_name().is_some_and(|name| name == SOCKETS_LINK) {
                continue; // `adopt_sockets_link`
            }
            let parsed = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_link_name);
            match parsed {
                Some((ifindex, role, hook)) => {
                    found.entry((role, ifindex)).or_default()[hook.min(1)] = Some(path);
                }
                None => {
                    tracing::warn!(pin = %path.display(), "not a podwall link pin; removed");
                    remove_file(&path)?;
                }
            }
        }
        for ((role, ifindex), [first, second]) in found {
            let (Some(first), Some(second)) = (first, second) else {
                tracing::warn!(ifindex, ?role, "only one of the interface's two link pins was left; removed (the agent attaches it again)");
                layout.remove_links(ifindex, role)?;
                continue;
            };
            let [out, inward] = role.programs();
            let first = self.adopt_link(&first, out);
            let second = self.adopt_link(&second, inward);
            match (first, second) {
                (Ok(Some(a)), Ok(Some(b))) => {
                    self.attachments(role)
                        .insert(ifindex, Attachment::Pinned([a, b]));
                }
                (Ok(_), Ok(_)) => {
                    tracing::info!(ifindex, ?role, "interface gone: its link pins were removed");
                    layout.remove_links(ifindex, role)?;
                }
                (Err(e), _) | (_, Err(e)) => return Err(e),
            }
        }
        Ok(self.attached.len())
    }

    /// Moves the link pinned at `path` to program `name`; `None` when the link's
    /// interface is gone.
    fn adopt_link(
        &mut self,
        path: &Path,
        name: &'static str,
    ) -> Result<Option<FdLink>, DataplaneError> {
        let pinned_error =
            |what: String, os_error: Option<i32>, source: Cause| DataplaneError::Pinned {
                path: path.to_path_buf(),
                what,
                source: Some(source),
                os_error,
            };
        let pinned = PinnedLink::from_pin(path)
            .map_err(|e| pinned_error("opening".into(), os_error(&e), Box::new(e)))?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned))
            .map_err(|e| pinned_error("not a TCX link".into(), None, Box::new(e)))?;
        let program = classifier(&mut self.ebpf, name)?;
        let id = match program.attach_to_link(link) {
            Ok(id) => id,
            Err(e) if os_error(&e) == Some(ENOLINK) => return Ok(None),
            Err(e) => {
                return Err(pinned_error(
                    format!("moving the link to the new {name}"),
                    os_error(&e),
                    Box::new(e),
                ))
            }
        };
        let link = program
            .take_link(id)
            .map_err(|e| pinned_error(format!("taking the {name} link"), None, Box::new(e)))?;
        FdLink::try_from(link)
            .map(Some)
            .map_err(|e| pinned_error(format!("the {name} link"), None, Box::new(e)))
    }

    /// Saves the rule slots next to the pins (a pinned datapath only). A failure
    /// is logged, not returned: it costs counter continuity after a restart, never
    /// enforcement.
    pub(super) fn save_slots(&self, slots: &RuleSlots) {
        if let Some(layout) = &self.pins {
            if let Err(error) = layout.save_slots(slots) {
                tracing::warn!(error = %causes(&error), "rule slots not saved: a restarted agent zeroes every rule counter");
            }
        }
    }
}
