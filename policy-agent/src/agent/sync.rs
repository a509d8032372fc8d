//! The sync loop of `policy-agent run`: source snapshots and link events in, a
//! programmed datapath out.
//!
//! - A *pass* plans from data (`plan`), compiles for the local pods, writes the
//!   tables (one bank flip: the old state enforces until the new one is whole) and
//!   only then attaches new interfaces, so no packet meets a classifier before its
//!   interface has an entry.
//! - A new interface whose name marks it as a pod veth does not wait for a pass: it
//!   gets a pending entry, written in place in both banks (no classifier reads it
//!   before the attach, so no flip is needed) under the tables the datapath
//!   enforces, and is attached at once (`attach_new`), also while passes fail or
//!   compile, and also before any pass has succeeded once one has planned (under
//!   the adopted state). Before any plan (the source not synced) the first pass
//!   attaches it.
//! - A policy the maps cannot hold is refused by the compiler, not the pass: the
//!   pass programs everything else, and the refusal is logged, counted and a
//!   `/readyz` detail (`report_refusals`).
//! - A failed pass leaves the previous state enforcing and is retried with backoff.
//! - A pass compiles off the loop's task (`driver`: at most one compile in flight,
//!   the newest snapshot next), so link events are handled while it runs; a veth
//!   attached as pending meanwhile keeps its entry when the pass writes its tables
//!   (`pass`: the plan did not know it).
//! - The UDP ports of the node's own tunnel devices (vxlan, geneve) reach `CONFIG`
//!   at every pass and whenever a link that is no pod veth appears, so pods cannot
//!   reach a tunnel the node brought up later.

mod compile;
mod driver;
mod pass;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

pub use self::{
    compile::{default_compiler, CompileJob, Compiled, Compiler},
    driver::{run, LinkEvents},
    pass::Planned,
};
use super::{
    dataplane::Dataplane, flows::FlowPublisher, health::Health, metrics::Metrics, notices::Notices,
    observe, plan,
};
use crate::{
    causes::causes,
    dataplane::{Datapath, DataplaneError, InterfaceIndex},
    model::{ClusterState, ObjectRef},
    node::{Link, LinkEvent, NodeError},
    policy::{
        capacity::Refusal,
        tables::{DatapathTables, EndpointEntry},
    },
    source::api_server::SourceSnapshot,
};

/// How often the loop wakes without news: refreshes counters, keeps `/healthz`
/// fresh and retries what is left to do.
const TICK: Duration = Duration::from_secs(1);
/// The longest wait between retries of a failing pass.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// How often the per-policy counters are read without a pass.
const COUNTERS_EVERY: Duration = Duration::from_secs(5);

/// What can stop one sync pass. The loop logs it, counts it and keeps enforcing
/// what the maps hold.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading addresses, routes or links failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Writing the maps failed; the previous state stays active.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The compile did not finish (it panicked: a bug in the compiler, whose
    /// message is in the log); the previous state stays active and the pass is
    /// retried.
    #[error("compiling the node's tables did not finish")]
    Compile(#[source] tokio::task::JoinError),
}

impl SyncError {
    /// The `podwall_errors_total` kind.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Node(error) => error.kind(),
            SyncError::Dataplane(error) => error.kind(),
            SyncError::Compile(_) => "compile",
        }
    }
}

/// The loop's settings (from `policy-agent run`'s flags).
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// This node's name.
    pub node_name: String,
    /// Every policy in audit mode (`--audit`).
    pub audit: bool,
    /// Interface name prefixes attached on sight (`--interface-prefix`).
    pub interface_prefixes: Vec<String>,
    /// Bridges whose veth ports are pods' even before a pod route goes through
    /// them (`--pod-bridge`).
    pub pod_bridges: Vec<String>,
}

/// What the last successful write put in the maps: what `attach_new` writes again
/// with one more pending interface.
struct Written {
    /// The tables written, shared with the compiler that made them.
    tables: Arc<DatapathTables>,
    interfaces: BTreeMap<ObjectRef, InterfaceIndex>,
    pending: BTreeMap<InterfaceIndex, EndpointEntry>,
    /// The entry a new pending interface gets (the last pass's rule 7).
    pending_entry: EndpointEntry,
}

/// The loop's state between passes, over the datapath `D` (`Datapath`; a fake in
/// the unit tests).
pub struct Syncer<D: Dataplane = Datapath> {
    config: SyncConfig,
    pub(super) datapath: D,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<Health>,
    /// Links of this namespace, by index (from the link watch).
    pub(super) links: BTreeMap<InterfaceIndex, Link>,
    /// The last plan's pod bridges: whose veth ports `attach_new` takes.
    pod_bridges: BTreeSet<u32>,
    /// Identity conflicts and programs ahead, reported while they last.
    notices: Notices,
    /// Conversion errors counted and logged, while they last.
    reported: BTreeSet<String>,
    /// ClusterNetworkPolicy warnings logged, while they last.
    cluster_warnings: BTreeSet<String>,
    /// Refused policies (and the resource) counted and logged, while they last.
    refused: BTreeSet<(ObjectRef, &'static str)>,
    /// The newest source change already counted in the latency histogram.
    last_change: Option<Instant>,
    /// The last successful write.
    written: Option<Written>,
    /// The pending entry of the last plan, failed passes' included: what a new
    /// veth gets before any pass has succeeded.
    planned_pending: Option<EndpointEntry>,
    /// Something is left to do (unmapped pods, a failed pass): when to retry.
    retry_at: Option<Instant>,
    /// Passes failed in a row (for the retry backoff).
    failures: u32,
    /// When the counters were last read into the metrics.
    counters_read: Instant,
    /// The node's tunnel ports last written to `CONFIG` (`None`: not yet).
    tunnel_ports: Option<Vec<u16>>,
    /// Writes the names of the datapath's events after every pass, for
    /// `policy-agent flows` (`None`: the datapath is not pinned).
    flows: Option<FlowPublisher>,
    /// Veths `attach_new` attached since the last plan: the pass of that plan
    /// keeps their pending entries.
    attached_since_plan: BTreeSet<InterfaceIndex>,
    /// How passes compile (`default_compiler`; the unit tests gate it).
    pub(super) compiler: Compiler,
    /// The compile whose tables the maps hold (`Compiled::id`), if the last
    /// write succeeded: a compile made from it may write only what it changed.
    written_compile: Option<u64>,
    /// A write happened since the counters were last read (`counters_due`).
    counters_due: bool,
    /// With `--audit`: the last source state and its audit-mode copy, which
    /// the next copy is made from (`ClusterState::in_audit_after`).
    audited: Option<(Arc<ClusterState>, Arc<ClusterState>)>,
}

impl<D: Dataplane> Syncer<D> {
    /// A loop over `datapath` (loaded or adopted), reporting to `metrics` and
    /// `health`, knowing the links `links` (the link watch's initial view),
    /// publishing the names of its events with `flows`.
    pub fn new(
        config: SyncConfig,
        datapath: D,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        links: &BTreeMap<InterfaceIndex, Link>,
        flows: Option<FlowPublisher>,
    ) -> Self {
        Self {
            config,
            datapath,
            metrics,
            health,
            links: links.clone(),
            pod_bridges: BTreeSet::new(),
            notices: Notices::default(),
            reported: BTreeSet::new(),
            cluster_warnings: BTreeSet::new(),
            refused: BTreeSet::new(),
            last_change: None,
            written: None,
            planned_pending: None,
            retry_at: Some(Instant::now()),
            failures: 0,
            counters_read: Instant::now(),
            tunnel_ports: None,
            flows,
            attached_since_plan: BTreeSet::new(),
            compiler: default_compiler(),
            written_compile: None,
            counters_due: false,
            audited: None,
        }
    }

    /// The same loop compiling with `compiler` instead of `default_compiler`:
    /// for benchmarks that time the compiles, and tests that hold them.
    pub fn with_compiler(mut self, compiler: Compiler) -> Self {
        self.compiler = compiler;
        self
    }

    /// Records a link event. Returns whether a pass is needed: a link with programs
    /// went away, or turned out to be no pod's (enslaved to a foreign bridge). A new
    /// pod veth is attached here as pending; the pass that maps it to its pod comes
    /// with the pod's address (or the retry of unmapped pods).
    pub fn link_event(&mut self, event: LinkEvent) -> bool {
        match event {
            LinkEvent::Added(link) => {
                let index = link.index;
                self.links.insert(index, link);
                let links = observe::plan_links(&self.links);
                // The last plan's, and a named one made since (a fresh node's
                // first pod brings its bridge along).
                let mut pod_bridges = plan::named_pod_bridges(&links, &self.config.pod_bridges);
                pod_bridges.extend(&self.pod_bridges);
                let candidate = links.get(&index).is_some_and(|link| {
                    plan::is_candidate(link, &links, &self.config.interface_prefixes, &pod_bridges)
                });
                if candidate {
                    self.attach_new(index);
                    return false;
                }
                if let Err(error) = self.refresh_tunnel_ports() {
                    tracing::warn!(error = %causes(&error), "reading the node's tunnel ports; the next pass retries");
                    self.metrics.error(error.kind());
                }
                // Attached as pending, then enslaved to a bridge that is no pod's.
                let mapped = self
                    .written
                    .as_ref()
                    .is_some_and(|w| w.interfaces.values().any(|i| *i == index));
                // A new link that may be an exit (an uplink, a tunnel device), or
                // one enslaved since it was (plan rule 12): the pass places the
                // exit classifiers.
                let exit_changed = links.get(&index).is_some_and(|link| link.master.is_none())
                    || self.datapath.exits().contains(&index);
                exit_changed || (!mapped && self.datapath.attached().contains(&index))
            }
            LinkEvent::Removed(link) => {
                self.links.remove(&link.index);
                self.datapath.attached().contains(&link.index)
            }
        }
    }

    /// Attaches a new pod veth at once, before any pass: first its pending entry
    /// (the last plan's rule 11), written in place under the tables the datapath
    /// enforces (`add_unattached_endpoints`: no flip to wait for), then its
    /// classifiers. Remembered until the next plan, so a pass planned before it
    /// keeps its entry.
    fn attach_new(&mut self, index: InterfaceIndex) {
        if self.datapath.attached().contains(&index) {
            return;
        }
        let started = Instant::now();
        // Before this agent's first successful pass it has no tables of its own:
        // once a pass has planned (and failed, or is compiling), the entry goes
        // under what the datapath enforces (adopted pins); before any plan (a
        // source not synced yet) the first pass attaches it.
        let entry = match (&self.written, self.planned_pending) {
            (Some(written), _) => written.pending_entry,
            (None, Some(entry)) => entry,
            (None, None) => {
                tracing::debug!(
                    ifindex = index,
                    "new interface before the first pass; the first pass attaches it"
                );
                return;
            }
        };
        let extra = BTreeMap::from([(index, entry)]);
        if let Err(error) = self.datapath.add_unattached_endpoints(&extra) {
            tracing::warn!(error = %causes(&error), ifindex = index, "cannot add a pending entry; the next pass attaches it");
            self.metrics.error(error.kind());
            return;
        }
        if let Some(written) = &mut self.written {
            // What the maps hold: an entry goes only when a write removes it.
            written.pending.insert(index, entry);
        }
        if self.attach_each(&BTreeSet::from([index])) == 0 {
            self.attached_since_plan.insert(index);
            tracing::debug!(
                ifindex = index,
                took_ms = started.elapsed().as_secs_f64() * 1e3,
                "new pod interface attached with a pending entry"
            );
        }
    }

    /// Writes the ports of the node's tunnel devices into `CONFIG` when they
    /// changed since the last write (`Datapath::set_tunnel_ports`).
    fn refresh_tunnel_ports(&mut self) -> Result<(), SyncError> {
        let node_ports = crate::node::tunnel_ports()?;
        if self.tunnel_ports.as_ref() == Some(&node_ports) {
            return Ok(());
        }
        let written = self.datapath.set_tunnel_ports(&node_ports)?;
        if !written.left_out.is_empty() {
            tracing::warn!(
                left_out = ?written.left_out,
                "more tunnel ports than the datapath has slots for; pods can send to these"
            );
        }
        tracing::info!(ports = ?written.ports, "UDP tunnel ports pods may not send to");
        self.tunnel_ports = Some(node_ports);
        Ok(())
    }

    /// Whether a pass was written since the counters were last read: the loop
    /// reads them when no link event waits.
    pub fn counters_due(&self) -> bool {
        self.counters_due
    }

    /// Whether a retry is due.
    pub fn wants_retry(&self) -> bool {
        self.retry_at.is_some_and(|at| Instant::now() >= at)
    }

    /// Attaches each of `indexes`, one failure not stopping the others; how many
    /// could not be attached (gone meanwhile, or refused: counted and logged).
    fn attach_each(&mut self, indexes: &BTreeSet<InterfaceIndex>) -> usize {
        let mut missing = 0;
        for index in indexes {
            let name = match self.links.get(index) {
                Some(link) => Some(link.name.clone()),
                None => crate::node::interface_name(*index).ok().flatten(),
            };
            let Some(name) = name else {
                missing += 1; // gone since the plan: the next pass forgets it
                continue;
            };
            match self.datapath.attach(&name) {
                Ok(found) if found == *index => {}
                Ok(found) => {
                    tracing::warn!(interface = %name, planned = index, found, "interface recreated while attaching; the next pass fixes it");
                    missing += 1;
                }
                Err(error) => {
                    tracing::warn!(error = %causes(&error), interface = %name, "attach failed; retried next pass");
                    self.metrics.error(error.kind());
                    missing += 1;
                }
            }
        }
        missing
    }

    /// Per-map use and per-policy traffic into the metrics (after each pass and
    /// every `COUNTERS_EVERY`, so the counters move while the cluster is quiet).
    pub fn refresh_counters(&mut self) {
        self.counters_read = Instant::now();
        self.counters_due = false;
        let usage = self.datapath.map_usage();
        let samples: Vec<(&str, usize, u32)> = usage
            .iter()
            .map(|u| (u.map, u.entries, u.capacity))
            .collect();
        self.metrics.set_map_usage(&samples);
        self.notices
            .refresh(&mut self.datapath, &self.links, &self.metrics, &self.health);
        let Some(written) = &self.written else {
            return;
        };
        match self.datapath.policy_counters(&written.tables) {
            Ok(counters) => self.metrics.set_policy_traffic(&counters),
            Err(error) => {
                tracing::warn!(error = %causes(&error), "reading the policy counters");
                self.metrics.error(error.kind());
            }
        }
    }

    /// `podwall_ready` follows `/readyz`.
    fn publish_readiness(&self) {
        self.metrics.set_ready(self.health.readiness().is_ok());
    }

    /// Logs and counts each conversion error once while it lasts; all of them are
    /// `/readyz` details. Logs each ClusterNetworkPolicy warning
    /// (`policy::cluster::warnings`) once while it lasts.
    fn report_conversion_errors(&mut self, snapshot: &SourceSnapshot) {
        let current: BTreeSet<String> = snapshot.conversion_errors.iter().cloned().collect();
        for error in current.difference(&self.reported) {
            tracing::error!(%error, "object cannot be converted; the pods it may select fail closed");
            self.metrics.error("conversion");
        }
        self.reported = current;
        self.health
            .set_not_converted(snapshot.conversion_errors.clone());
        self.metrics.set_over_cap(&snapshot.over_cap);
        let warnings: BTreeSet<String> = crate::policy::cluster::warnings(&snapshot.state)
            .into_iter()
            .collect();
        for warning in warnings.difference(&self.cluster_warnings) {
            tracing::warn!(%warning, "ClusterNetworkPolicy");
        }
        self.cluster_warnings = warnings;
    }

    /// Logs and counts each refused policy once while its refusal (for one
    /// resource) lasts; all of them are `/readyz` details and the
    /// `podwall_policies_refused` gauge.
    fn report_refusals(&mut self, refusals: &[Refusal]) {
        let mut current = BTreeSet::new();
        for refusal in refusals {
            let key = (refusal.policy.clone(), refusal.reason.resource().label());
            if !self.refused.contains(&key) {
                tracing::error!(%refusal, "policy refused: this node's tables cannot hold it");
                self.metrics.refusal(key.1);
            }
            current.insert(key);
        }
        self.refused = current;
        self.metrics.set_refused(refusals.len());
        self.health
            .set_refused(refusals.iter().map(ToString::to_string).collect());
    }
}

#[cfg(test)]
mod tests;
