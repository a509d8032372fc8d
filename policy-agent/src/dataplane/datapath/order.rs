//! Where podwall's classifiers run among the TCX programs of a pod interface.
//!
//! `attach` puts each classifier first (`LinkOrder::first()`: `BPF_F_BEFORE` with
//! no anchor). The kernel keeps no exclusive "first" slot: another agent that
//! also attaches first later goes ahead of podwall's, and one that returns
//! `TCX_PASS` (`TC_ACT_OK`) there ends the chain before podwall decides. Podwall
//! does not fight for the slot (two agents re-attaching would take turns
//! forever); it finds what runs ahead (`programs_ahead`, a `BPF_PROG_QUERY` of
//! each hook) and the agent reports it. The query needs `CAP_NET_ADMIN`; naming
//! another program needs `CAP_SYS_ADMIN`, which the agent lacks, so it is named
//! by id (and by name when the caller may open it, as in tests).

use std::{collections::BTreeMap, fmt};

use aya::programs::ProgramInfo;

use super::{links::classifier, Datapath};
use crate::dataplane::{
    programs::{POD_EGRESS_PROGRAM, POD_INGRESS_PROGRAM},
    sys::{self, BPF_TCX_EGRESS, BPF_TCX_INGRESS},
    DataplaneError, InterfaceIndex,
};

/// The name program `id` was loaded with, if this process may open it
/// (`CAP_SYS_ADMIN`); else empty.
fn program_name(id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|info: &ProgramInfo| info.id() == id)
        .and_then(|info| info.name_as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A program that runs before one of podwall's on a pod interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProgramAhead {
    /// The interface.
    pub ifindex: InterfaceIndex,
    /// Its name.
    pub interface: String,
    /// The podwall program it runs ahead of (`pod_ingress` at TC egress,
    /// `pod_egress` at TC ingress).
    pub podwall: &'static str,
    /// The other program's id.
    pub id: u32,
    /// Its name as loaded (at most 15 bytes); empty if it has none or this
    /// process may not read it.
    pub name: String,
}

impl fmt::Display for ProgramAhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hook = if self.podwall == POD_EGRESS_PROGRAM {
            "tc ingress"
        } else {
            "tc egress"
        };
        let name = if self.name.is_empty() {
            String::new()
        } else {
            format!("{} ", self.name)
        };
        write!(
            f,
            "{} (ifindex {}) {hook}: program {name}(id {}) runs before podwall's {}",
            self.interface, self.ifindex, self.id, self.podwall
        )
    }
}

impl Datapath {
    /// Every program that runs ahead of podwall's on the attached interfaces named
    /// in `names` (ifindex -> name; others are skipped). The calling thread must be
    /// in the interfaces' network namespace. An interface that went away meanwhile
    /// is skipped.
    pub fn programs_ahead(
        &mut self,
        names: &BTreeMap<InterfaceIndex, String>,
    ) -> Result<Vec<ProgramAhead>, DataplaneError> {
        let mut ours = Vec::new();
        for (program, hook) in [
            (POD_INGRESS_PROGRAM, BPF_TCX_EGRESS),
            (POD_EGRESS_PROGRAM, BPF_TCX_INGRESS),
        ] {
            let info = classifier(&mut self.ebpf, program)?.info().map_err(|e| {
                DataplaneError::Program {
                    program,
                    what: "reading its id".into(),
                    source: Some(Box::new(e)),
                }
            })?;
            ours.push((program, hook, info.id()));
        }
        let mut out = Vec::new();
        for ifindex in self.attached.keys() {
            let Some(interface) = names.get(ifindex) else {
                continue;
            };
            for (podwall, hook, id) in &ours {
                let Ok(ids) = sys::tcx_program_ids(*ifindex, *hook) else {
                    tracing::debug!(interface, "TCX query failed (interface gone?)");
                    continue;
                };
                // Not in the chain at all (detached behind our back): nothing
                // is ahead of what does not run; `attached` is fixed elsewhere.
                let Some(position) = ids.iter().position(|other| other == id) else {
                    continue;
                };
                out.extend(ids[..position].iter().map(|other| ProgramAhead {
                    ifindex: *ifindex,
                    interface: interface.clone(),
                    podwall,
                    id: *other,
                    name: program_name(*other),
                }));
            }
        }
        Ok(out)
    }
}
