//! How long the kernel takes to attach a pod's two classifiers to a fresh
//! interface, each way it could (benchmarks only: `bench agent`'s attach floor):
//! TCX links as `links.rs` makes them, the hooks in turn or from two threads at
//! once, and legacy TC, a `clsact` qdisc and a `cls_bpf` filter in direct-action
//! mode per hook over rtnetlink. What a probe attaches is detached before it
//! returns (not timed); the qdisc stays until the interface goes.

use std::{
    os::fd::AsFd,
    sync::Barrier,
    thread,
    time::{Duration, Instant},
};

use aya::programs::{
    tc::{qdisc_add_clsact, NlOptions, TcAttachOptions},
    ProgramFd, TcAttachType,
};

use super::{links::classifier, Datapath};
use crate::dataplane::{
    programs::{POD_EGRESS_PROGRAM, POD_INGRESS_PROGRAM},
    sys, DataplaneError, InterfaceIndex,
};

/// How `Datapath::probe_attach` attaches the two classifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachWay {
    /// Two TCX links (`BPF_LINK_CREATE`), TC egress then TC ingress, as `attach`.
    TcxInTurn,
    /// The same two links, each from a thread of its own, released together.
    TcxTogether,
    /// A `clsact` qdisc, then a `cls_bpf` filter per hook (`RTM_NEWTFILTER`).
    Netlink,
}

/// What one probe timed, each from its call to its return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachTimes {
    /// Adding the `clsact` qdisc (`AttachWay::Netlink` only).
    pub qdisc: Option<Duration>,
    /// The TC egress hook's program (`pod_ingress`).
    pub egress: Duration,
    /// The TC ingress hook's program (`pod_egress`).
    pub ingress: Duration,
    /// From the first call to both hooks attached (qdisc included).
    pub both: Duration,
}

/// Maps an I/O error of a raw call on `program` to the dataplane's error.
fn raw_error(program: &'static str, what: &str) -> impl FnOnce(std::io::Error) -> DataplaneError {
    let what = what.to_string();
    move |source| DataplaneError::Program {
        program,
        what,
        source: Some(Box::new(source)),
    }
}

impl Datapath {
    /// A descriptor of program `name` of its own, for a thread.
    fn program_fd(&mut self, name: &'static str) -> Result<ProgramFd, DataplaneError> {
        let fd =
            classifier(&mut self.ebpf, name)?
                .fd()
                .map_err(|source| DataplaneError::Program {
                    program: name,
                    what: "reading its descriptor".into(),
                    source: Some(Box::new(source)),
                })?;
        fd.try_clone()
            .map_err(raw_error(name, "duplicating its descriptor"))
    }

    /// Attaches `pod_ingress` at TC egress and `pod_egress` at TC ingress of
    /// `interface` (index `ifindex`, none of this datapath's) the `way` says,
    /// times the kernel calls, and detaches both again.
    pub fn probe_attach(
        &mut self,
        interface: &str,
        ifindex: InterfaceIndex,
        way: AttachWay,
    ) -> Result<AttachTimes, DataplaneError> {
        match way {
            AttachWay::TcxInTurn => self.probe_tcx_in_turn(ifindex),
            AttachWay::TcxTogether => self.probe_tcx_together(ifindex),
            AttachWay::Netlink => self.probe_netlink(interface),
        }
    }

    fn probe_tcx_in_turn(
        &mut self,
        ifindex: InterfaceIndex,
    ) -> Result<AttachTimes, DataplaneError> {
        let out = self.program_fd(POD_INGRESS_PROGRAM)?;
        let inward = self.program_fd(POD_EGRESS_PROGRAM)?;
        let started = Instant::now();
        let egress_link = sys::tcx_link_create(out.as_fd(), ifindex, sys::BPF_TCX_EGRESS)
            .map_err(raw_error(POD_INGRESS_PROGRAM, "TCX link at egress"))?;
        let egress = started.elapsed();
        let ingress_started = Instant::now();
        let ingress_link = sys::tcx_link_create(inward.as_fd(), ifindex, sys::BPF_TCX_INGRESS)
            .map_err(raw_error(POD_EGRESS_PROGRAM, "TCX link at ingress"))?;
        let times = AttachTimes {
            qdisc: None,
            egress,
            ingress: ingress_started.elapsed(),
            both: started.elapsed(),
        };
        drop((egress_link, ingress_link));
        Ok(times)
    }

    fn probe_tcx_together(
        &mut self,
        ifindex: InterfaceIndex,
    ) -> Result<AttachTimes, DataplaneError> {
        let fds = [
            self.program_fd(POD_INGRESS_PROGRAM)?,
            self.program_fd(POD_EGRESS_PROGRAM)?,
        ];
        let barrier = Barrier::new(2);
        let hooks = [
            (POD_INGRESS_PROGRAM, sys::BPF_TCX_EGRESS),
            (POD_EGRESS_PROGRAM, sys::BPF_TCX_INGRESS),
        ];
        let results: Vec<_> = thread::scope(|scope| {
            let handles: Vec<_> = fds
                .iter()
                .zip(hooks)
                .map(|(fd, (name, hook))| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        let started = Instant::now();
                        let link = sys::tcx_link_create(fd.as_fd(), ifindex, hook)
                            .map_err(raw_error(name, "TCX link from a thread"));
                        (started, Instant::now(), link)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().map_err(|_| DataplaneError::Program {
                        program: POD_INGRESS_PROGRAM,
                        what: "an attaching thread panicked".into(),
                        source: None,
                    })
                })
                .collect()
        });
        let mut spans = Vec::new();
        let mut links = Vec::new();
        for result in results {
            let (started, ended, link) = result?;
            links.push(link?);
            spans.push((started, ended));
        }
        let [(egress_start, egress_end), (ingress_start, ingress_end)] = spans[..] else {
            return Err(DataplaneError::Program {
                program: POD_INGRESS_PROGRAM,
                what: "an attaching thread is missing".into(),
                source: None,
            });
        };
        let times = AttachTimes {
            qdisc: None,
            egress: egress_end - egress_start,
            ingress: ingress_end - ingress_start,
            both: egress_end.max(ingress_end) - egress_start.min(ingress_start),
        };
        drop(links);
        Ok(times)
    }

    fn probe_netlink(&mut self, interface: &str) -> Result<AttachTimes, DataplaneError> {
        let started = Instant::now();
        qdisc_add_clsact(interface).map_err(|source| DataplaneError::Program {
            program: POD_INGRESS_PROGRAM,
            what: format!("adding a clsact qdisc to {interface}"),
            source: Some(Box::new(source)),
        })?;
        let qdisc = started.elapsed();
        let (mut spent, mut links) = (Vec::new(), Vec::new());
        for (name, hook) in [
            (POD_INGRESS_PROGRAM, TcAttachType::Egress),
            (POD_EGRESS_PROGRAM, TcAttachType::Ingress),
        ] {
            let program = classifier(&mut self.ebpf, name)?;
            let filter_started = Instant::now();
            let link = program
                .attach_with_options(
                    interface,
                    hook,
                    TcAttachOptions::Netlink(NlOptions::default()),
                )
                .map_err(|source| DataplaneError::Attach {
                    program: name,
                    interface: interface.to_string(),
                    source: Box::new(source),
                })?;
            spent.push(filter_started.elapsed());
            links.push((name, link));
        }
        for (name, link) in links {
            classifier(&mut self.ebpf, name)?
                .detach(link)
                .map_err(|source| DataplaneError::Attach {
                    program: name,
                    interface: interface.to_string(),
                    source: Box::new(source),
                })?;
        }
        Ok(AttachTimes {
            qdisc: Some(qdisc),
            egress: spent.first().copied().unwrap_or_default(),
            ingress: spent.get(1).copied().unwrap_or_default(),
            both: qdisc + spent.iter().sum::<Duration>(),
        })
    }
}
