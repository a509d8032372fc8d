//! What attaching a new pod veth costs with nothing else running (needs root):
//! the floor under the loop's RTM_NEWLINK -> attached. In a scratch network
//! namespace of its own, on an empty loaded datapath, each round makes a fresh
//! veth per way of attaching and times the kernel calls (`Datapath::probe_attach`):
//! two TCX links in turn (what the agent does), the same two from two threads at
//! once, and legacy TC (a `clsact` qdisc and a `cls_bpf` filter per hook over
//! rtnetlink); then the agent's own steps on one more veth, the pending entry
//! (`add_unattached_endpoints`) and `Datapath::attach`; and one RCU grace period
//! waited alone (`GracePeriod`), which every TCX attach waits under `rtnl_lock`.
//! The ways take turns in every round, so drift hits all alike.

use std::{collections::BTreeMap, thread, time::Duration};

use nix::sched::{unshare, CloneFlags};

use super::report::percentile;
use crate::{
    bench::BenchError,
    dataplane::{AttachTimes, AttachWay, Datapath, GracePeriod},
    node::{interface_index, scratch::Scratch},
    policy::tables::EndpointEntry,
};

/// One round: every way on a fresh veth of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloorSample {
    /// One grace period (`synchronize_rcu()`), waited alone.
    pub grace_period: Duration,
    /// Two TCX links, egress then ingress.
    pub tcx_in_turn: AttachTimes,
    /// Two TCX links from two threads at once.
    pub tcx_together: AttachTimes,
    /// Legacy TC over rtnetlink: qdisc, then a filter per hook.
    pub netlink: AttachTimes,
    /// The agent's pending entry, written in place in both banks.
    pub pending_entry: Duration,
    /// The agent's `Datapath::attach` (name lookup and both TCX links).
    pub agent_attach: Duration,
}

/// Every round, in run order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachFloor {
    /// The rounds.
    pub samples: Vec<FloorSample>,
}

/// Which duration of a round a row is about.
type Pick = fn(&FloorSample) -> Duration;

/// The rows of the floor's table: label and what it picks.
pub const ROWS: [(&str, Pick); 11] = [
    ("one RCU grace period (synchronize_rcu, alone)", |s| {
        s.grace_period
    }),
    ("TCX link at TC egress", |s| s.tcx_in_turn.egress),
    ("TCX link at TC ingress", |s| s.tcx_in_turn.ingress),
    ("TCX both hooks in turn (the agent's way)", |s| {
        s.tcx_in_turn.both
    }),
    ("TCX both hooks from two threads (wall)", |s| {
        s.tcx_together.both
    }),
    ("legacy TC: clsact qdisc", |s| {
        s.netlink.qdisc.unwrap_or_default()
    }),
    ("legacy TC: cls_bpf filter at egress", |s| s.netlink.egress),
    ("legacy TC: cls_bpf filter at ingress", |s| {
        s.netlink.ingress
    }),
    ("legacy TC: qdisc and both filters", |s| s.netlink.both),
    ("agent: pending entry (both banks)", |s| s.pending_entry),
    ("agent: Datapath::attach (both TCX links)", |s| {
        s.agent_attach
    }),
];

impl AttachFloor {
    /// Each row's label with its p50 and p99.
    pub fn rows(&self) -> Vec<(&'static str, Option<Duration>, Option<Duration>)> {
        ROWS.iter()
            .map(|(label, pick)| {
                let values: Vec<Duration> = self.samples.iter().map(pick).collect();
                (*label, percentile(&values, 50.0), percentile(&values, 99.0))
            })
            .collect()
    }
}

fn failed(message: String) -> BenchError {
    BenchError::Event {
        event: "attach floor".into(),
        message,
    }
}

/// Runs `rounds` rounds (see the module comment) in a thread of its own network
/// namespace.
pub fn run(object: &std::path::Path, rounds: usize) -> Result<AttachFloor, BenchError> {
    let object = object.to_path_buf();
    thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| BenchError::Io {
            what: "unsharing a scratch network namespace".into(),
            source: errno.into(),
        })?;
        in_scratch(&object, rounds)
    })
    .join()
    .unwrap_or_else(|_| Err(failed("the measuring thread panicked".into())))
}

fn in_scratch(object: &std::path::Path, rounds: usize) -> Result<AttachFloor, BenchError> {
    let mut datapath = Datapath::load(object)?;
    let mut grace = GracePeriod::new()?;
    let mut scratch = Scratch::open()?;
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut sample = FloorSample {
            grace_period: grace.wait()?,
            ..FloorSample::default()
        };
        for (n, way) in [
            AttachWay::TcxInTurn,
            AttachWay::TcxTogether,
            AttachWay::Netlink,
        ]
        .into_iter()
        .enumerate()
        {
            let (name, index) = fresh_veth(&mut scratch, round, n)?;
            let times = datapath.probe_attach(&name, index, way);
            scratch.delete_link(index)?;
            let times = times?;
            match way {
                AttachWay::TcxInTurn => sample.tcx_in_turn = times,
                AttachWay::TcxTogether => sample.tcx_together = times,
                AttachWay::Netlink => sample.netlink = times,
            }
        }
        let (name, index) = fresh_veth(&mut scratch, round, 3)?;
        let entry = BTreeMap::from([(index, EndpointEntry::default())]);
        let started = std::time::Instant::now();
        let written = datapath.add_unattached_endpoints(&entry);
        sample.pending_entry = started.elapsed();
        let started = std::time::Instant::now();
        let attached = datapath.attach(&name);
        sample.agent_attach = started.elapsed();
        let detached = datapath.detach(index);
        scratch.delete_link(index)?;
        written?;
        attached?;
        detached?;
        samples.push(sample);
    }
    Ok(AttachFloor { samples })
}

/// Makes veth `pwf<round>x<n>` and returns its name and index.
fn fresh_veth(scratch: &mut Scratch, round: usize, n: usize) -> Result<(String, u32), BenchError> {
    let (name, peer) = (format!("pwf{round}x{n}"), format!("pwg{round}x{n}"));
    scratch.create_veth(&name, &peer)?;
    let index = interface_index(&name)?
        .ok_or_else(|| failed(format!("{name} is gone right after it was made")))?;
    Ok((name, index))
}
