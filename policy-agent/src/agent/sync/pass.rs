//! One pass in three steps, so the loop can compile off its own task while it
//! keeps attaching new pod veths:
//!
//! 1. `Syncer::begin` (on the loop): plans from data and netlink reads, and
//!    returns a `Planned` pass holding a `CompileJob`;
//! 2. the compile (`compile::default_compiler`, pure and CPU-bound: anywhere, the loop
//!    runs it with `spawn_blocking`);
//! 3. `Syncer::finish` (on the loop, the maps' one writer): writes the tables,
//!    keeping the pending entries of veths attached since the plan, then detaches
//!    and attaches what the plan says.
//!
//! `Syncer::sync` runs the three in line (the unit tests' and a merge's anchor).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use policy_common::endpoint::PENDING_ENDPOINT_ID;

use super::{
    compile::{CompileJob, Compiled},
    SyncError, Syncer, Written, MAX_RETRY_DELAY, TICK,
};
use crate::{
    agent::{
        dataplane::Dataplane,
        observe,
        plan::{self, Plan, PlanInput},
    },
    causes::causes,
    dataplane::InterfaceIndex,
    policy::{
        compiler::{EndpointChange, Recompiled},
        tables::EndpointEntry,
    },
    source::api_server::SourceSnapshot,
    telemetry::flows::clock,
};

/// A pass planned and not yet written: what the plan decided, and what its
/// compile needs.
#[derive(Debug)]
pub struct Planned {
    plan: Plan,
    job: Arc<CompileJob>,
    /// The source change the pass carries (for the programmed-latency histogram).
    changed: Option<Instant>,
    started: Instant,
}

impl Planned {
    /// What to compile.
    pub fn job(&self) -> Arc<CompileJob> {
        Arc::clone(&self.job)
    }
}

impl<D: Dataplane> Syncer<D> {
    /// One pass in line: make the datapath enforce `snapshot`. Before the initial
    /// lists are done it changes nothing (the pinned state keeps enforcing).
    pub fn sync(&mut self, snapshot: &SourceSnapshot) -> Result<(), SyncError> {
        let Some(planned) = self.begin(snapshot)? else {
            return Ok(());
        };
        let compiled = (self.compiler)(&planned.job);
        let result = self.finish(planned, compiled);
        if self.counters_due() {
            self.refresh_counters();
        }
        result
    }

    /// The first step of a pass: health and reports from `snapshot`, then the
    /// plan. `None` before the source is synced (nothing to do, no retry) and when
    /// planning failed (the error is returned, a retry scheduled).
    pub fn begin(&mut self, snapshot: &SourceSnapshot) -> Result<Option<Planned>, SyncError> {
        self.health.tick();
        self.health.set_synced(snapshot.synced);
        self.health.set_stale(
            snapshot
                .stale
                .then(|| snapshot.last_error.clone().unwrap_or_default()),
        );
        self.metrics.set_stale(snapshot.stale);
        self.report_conversion_errors(snapshot);
        if !snapshot.synced {
            self.retry_at = None;
            self.publish_readiness();
            return Ok(None);
        }
        // This pass is the retry, if one was due: the outcome schedules the next.
        self.retry_at = None;
        match self.plan_pass(snapshot) {
            Ok(planned) => Ok(Some(planned)),
            Err(error) => Err(self.failed(error)),
        }
    }

    /// The last step of a pass: writes `compiled` (the compile of `planned`'s
    /// job) and carries the plan out; retry, backoff and readiness follow the
    /// outcome.
    pub fn finish(&mut self, planned: Planned, compiled: Compiled) -> Result<(), SyncError> {
        match self.write_pass(planned, compiled) {
            Ok(left) => {
                self.failures = 0;
                self.retry_at = left.then(|| Instant::now() + TICK);
                self.publish_readiness();
                Ok(())
            }
            Err(error) => Err(self.failed(error)),
        }
    }

    /// A pass that failed (planning, compiling or writing): the previous state
    /// keeps enforcing, a retry is due after a backoff, and the node is not ready.
    pub(super) fn failed(&mut self, error: SyncError) -> SyncError {
        self.failures = self.failures.saturating_add(1);
        let delay = retry_delay(self.failures);
        self.retry_at = Some(Instant::now() + delay);
        self.health.set_programmed(false);
        self.publish_readiness();
        error
    }

    /// Plans a pass from data: which pods are local on which interface, what to
    /// attach and detach, the pending entry.
    fn plan_pass(&mut self, snapshot: &SourceSnapshot) -> Result<Planned, SyncError> {
        let started = Instant::now();
        let state = if self.config.audit {
            let audited = Arc::new(match &self.audited {
                Some((last, audited)) => snapshot.state.in_audit_after(last, audited),
                None => (*snapshot.state).clone().with_every_policy_in_audit(),
            });
            self.audited = Some((Arc::clone(&snapshot.state), Arc::clone(&audited)));
            audited
        } else {
            Arc::clone(&snapshot.state)
        };
        let node_addresses = crate::node::node_addresses()?;
        self.refresh_tunnel_ports()?;
        let resolved =
            observe::Resolved::of(plan::local_addresses(&state, &self.config.node_name))?;
        let attached = self.datapath.attached();
        let no_previous = Default::default();
        let plan = plan::plan(&PlanInput {
            state: &state,
            node_name: &self.config.node_name,
            routes: &resolved.routes,
            neighbours: &resolved.neighbours,
            route_bridges: &resolved.bridges,
            previous: self
                .written
                .as_ref()
                .map_or(&no_previous, |w| &w.interfaces),
            attached: &attached,
            links: &observe::plan_links(&self.links),
            prefixes: &self.config.interface_prefixes,
            pod_bridge_names: &self.config.pod_bridges,
            pending_endpoint_id: PENDING_ENDPOINT_ID,
        });
        self.pod_bridges.clone_from(&plan.pod_bridges);
        self.notices.conflicts(
            plan.conflicts.iter().map(ToString::to_string),
            &self.metrics,
            &self.health,
        );
        self.planned_pending = Some(plan.pending_entry);
        // The plan saw what is attached now; what `attach_new` attaches from here
        // on is news to it.
        self.attached_since_plan.clear();
        let job = CompileJob {
            state,
            node_addresses,
            local: plan.interfaces.keys().cloned().collect(),
        };
        Ok(Planned {
            plan,
            job: Arc::new(job),
            changed: snapshot.changed,
            started,
        })
    }

    /// Writes the tables of `planned` and carries its plan out; true when
    /// something is left for a retry.
    fn write_pass(&mut self, planned: Planned, compiled: Compiled) -> Result<bool, SyncError> {
        let Planned {
            plan,
            job,
            changed,
            started,
        } = planned;
        let Compiled {
            tables,
            recompiled,
            base,
            id,
        } = compiled;
        for diagnostic in &tables.diagnostics {
            tracing::warn!(%diagnostic, "not enforced exactly; the affected pods fail closed");
        }
        self.report_refusals(&tables.refusals);
        let pending = self.pending_with_news(&plan);
        let tables_since_ns = clock::monotonic_now_ns();
        let in_place = self.in_place(&plan, &pending, &recompiled, base);
        self.written_compile = None;
        let write_started = Instant::now();
        let report = match in_place {
            Some(InPlace::Peers(prefixes)) => self.datapath.update_peers(&tables, prefixes)?,
            Some(InPlace::Classes(prefixes)) => {
                match self.datapath.update_classes(&tables, prefixes)? {
                    Some(report) => report,
                    None => self.datapath.apply(&tables, &plan.interfaces, &pending)?,
                }
            }
            Some(InPlace::Endpoint(change, ifindex)) => self.datapath.update_endpoint(
                &tables,
                &plan.interfaces,
                &pending,
                change,
                ifindex,
            )?,
            None => self.datapath.apply(&tables, &plan.interfaces, &pending)?,
        };
        let write_ms = write_started.elapsed().as_secs_f64() * 1e3;
        self.written_compile = Some(id);
        if let Some(flows) = &mut self.flows {
            let slots = self.datapath.rule_slots();
            flows.publish(
                tables_since_ns,
                (&tables, &slots),
                &plan.interfaces,
                &job.state,
            );
        }
        if let Some(changed) = changed {
            if self.last_change != Some(changed) {
                self.metrics.record_programmed(changed.elapsed());
                self.last_change = Some(changed);
            }
        }
        // Detach only once the entries of what is gone are gone too.
        for index in &plan.detach {
            if let Err(error) = self.datapath.detach(*index) {
                tracing::warn!(error = %causes(&error), ifindex = index, "detach failed; retried next pass");
                self.metrics.error(error.kind());
            }
        }
        self.reconcile_exits(&plan.exits);
        let missing = self.attach_each(&plan.attach);
        self.health.set_programmed(true);
        self.health
            .set_pods_without_programs(plan.unmapped.len() + missing);
        self.metrics.set_endpoints(plan.interfaces.len());
        self.metrics.set_policies(job.state.policies.len());
        self.metrics.record_sync(started.elapsed());
        tracing::info!(
            endpoints = plan.interfaces.len(),
            pending = pending.len(),
            unmapped = plan.unmapped.len(),
            written = report.written,
            removed = report.removed,
            bank = report.bank,
            write_ms,
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "programmed"
        );
        let left = !plan.unmapped.is_empty() || !plan.contested.is_empty() || missing > 0;
        self.written = Some(Written {
            tables,
            interfaces: plan.interfaces,
            pending,
            pending_entry: plan.pending_entry,
        });
        // Read by the loop once no link event waits (`driver`), or at the end
        // of `sync`.
        self.counters_due = true;
        Ok(left)
    }

    /// What of `recompiled` can be written in place, when the maps hold the tables
    /// it was made from (`base`):
    /// - only peer entries changed (a pod of another node's, Service addresses'),
    ///   with the same interfaces and pending entries, and nothing to detach:
    ///   those entries alone (`update_peers`);
    /// - only addresses moved class (a namespace's labels), on the same terms:
    ///   those entries alone when that is hole-free (`update_classes`), else a
    ///   full `apply`;
    /// - a local pod came or went in an endpoint id that stays, and the
    ///   interfaces and pending entries differ from those written in that pod's
    ///   and its interface's alone, nothing but its interface to detach (after
    ///   the write): its entries alone (`update_endpoint`).
    ///
    /// Anything else is `None`: a full `apply`.
    pub(super) fn in_place<'a>(
        &self,
        plan: &Plan,
        pending: &BTreeMap<InterfaceIndex, EndpointEntry>,
        recompiled: &'a Recompiled,
        base: Option<u64>,
    ) -> Option<InPlace<'a>> {
        let written = self.written.as_ref()?;
        if base.is_none() || base != self.written_compile {
            return None;
        }
        match recompiled {
            Recompiled::Peers(prefixes)
                if plan.detach.is_empty()
                    && written.interfaces == plan.interfaces
                    && written.pending == *pending =>
            {
                Some(InPlace::Peers(prefixes))
            }
            Recompiled::Reclassed(prefixes)
                if plan.detach.is_empty()
                    && written.interfaces == plan.interfaces
                    && written.pending == *pending =>
            {
                Some(InPlace::Classes(prefixes))
            }
            Recompiled::Endpoint(change) => {
                let pod = &change.pod;
                let ifindex = match (written.interfaces.get(pod), plan.interfaces.get(pod)) {
                    (None, Some(ifindex)) | (Some(ifindex), None) => *ifindex,
                    _ => return None,
                };
                let same = plan.detach.iter().all(|index| *index == ifindex)
                    && equal_but(&written.interfaces, &plan.interfaces, pod)
                    && equal_but(&written.pending, pending, &ifindex)
                    && !plan
                        .interfaces
                        .iter()
                        .any(|(other, index)| *index == ifindex && other != pod);
                same.then_some(InPlace::Endpoint(change, ifindex))
            }
            _ => None,
        }
    }

    /// The plan's pending entries, plus one (the plan's pending entry) for each
    /// veth `attach_new` attached since the plan that is still there and the plan
    /// does not map: written without it, that veth would meet packets with no
    /// entry.
    fn pending_with_news(&self, plan: &Plan) -> BTreeMap<InterfaceIndex, EndpointEntry> {
        let mut pending = plan.pending.clone();
        let attached = self.datapath.attached();
        for index in &self.attached_since_plan {
            let mapped = plan.interfaces.values().any(|i| i == index);
            if !mapped && self.links.contains_key(index) && attached.contains(index) {
                pending.entry(*index).or_insert(plan.pending_entry);
            }
        }
        pending
    }
}

/// A write `Syncer::in_place` found possible.
pub(super) enum InPlace<'a> {
    /// `Datapath::update_peers` of these prefixes.
    Peers(&'a [ipnet::IpNet]),
    /// `Datapath::update_classes` of these addresses (else `apply`).
    Classes(&'a [ipnet::IpNet]),
    /// `Datapath::update_endpoint` of this change, on this interface.
    Endpoint(&'a EndpointChange, InterfaceIndex),
}

/// Whether `a` and `b` hold the same entries but for key `except`'s.
fn equal_but<K: Ord, V: PartialEq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>, except: &K) -> bool {
    a.iter()
        .filter(|(k, _)| *k != except)
        .eq(b.iter().filter(|(k, _)| *k != except))
}

/// How long after the `failures`th failure in a row the pass is retried: doubling
/// from two ticks, at most `MAX_RETRY_DELAY`.
fn retry_delay(failures: u32) -> Duration {
    TICK.saturating_mul(1 << failures.min(5))
        .min(MAX_RETRY_DELAY)
}
