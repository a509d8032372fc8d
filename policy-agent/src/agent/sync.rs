//! The sync loop of `policy-agent run`: source snapshots and link events in, a
//! programmed datapath out. Each pass plans from data (`plan`), compiles for the
//! local pods, writes the tables (one bank flip: the old state enforces until the
//! new one is whole) and only then attaches new interfaces, so no packet meets a
//! classifier before its interface has an entry.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use policy_common::endpoint::PENDING_ENDPOINT_ID;

use super::{
    health::Health,
    metrics::{MapUsageSample, Metrics},
    plan::{self, PlanInput},
};
use crate::{
    dataplane::{Datapath, DataplaneError, InterfaceIndex},
    model::ClusterState,
    node::{LinkEvent, LinkWatch, NodeError, RouteResolver},
    policy::{compiler::compile, tables::DatapathTables},
    source::kube::SourceSnapshot,
};

/// How often the loop wakes without news: retries pods still without a route and
/// keeps `/healthz` fresh.
const TICK: Duration = Duration::from_secs(1);

/// What can stop one sync pass. The loop logs it, counts it and keeps enforcing
/// what the maps hold.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading addresses, routes or links failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Writing the maps or attaching failed; the previous state stays active.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

impl SyncError {
    /// The `podwall_errors_total` kind.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Node(error) => error.kind(),
            SyncError::Dataplane(error) => error.kind(),
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
}

/// The loop's state between passes.
pub struct Syncer {
    config: SyncConfig,
    datapath: Datapath,
    routes: RouteResolver,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Links of this namespace, by index (from the link watch).
    links: BTreeMap<InterfaceIndex, String>,
    /// Conversion errors already counted and logged.
    reported: BTreeSet<String>,
    /// The newest source change already counted in the latency histogram.
    last_change: Option<Instant>,
    /// Something is left to do on the next tick (unmapped pods, a failed pass).
    retry: bool,
}

impl Syncer {
    /// A loop over `datapath` (loaded or adopted), reporting to `metrics` and
    /// `health`.
    pub fn new(
        config: SyncConfig,
        datapath: Datapath,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, SyncError> {
        Ok(Self {
            config,
            datapath,
            routes: RouteResolver::open()?,
            metrics,
            health,
            links: BTreeMap::new(),
            reported: BTreeSet::new(),
            last_change: None,
            retry: true,
        })
    }

    /// Records a link event; true when it concerns an interface the loop cares
    /// about (a candidate by name, or one with programs).
    pub fn link_event(&mut self, event: LinkEvent) -> bool {
        let (index, name, added) = match event {
            LinkEvent::Added(link) => (link.index, link.name, true),
            LinkEvent::Removed(link) => (link.index, link.name, false),
        };
        if added {
            self.links.insert(index, name.clone());
        } else {
            self.links.remove(&index);
        }
        plan::matches_prefix(&name, &self.config.interface_prefixes)
            || self.datapath.attached_interfaces().any(|i| i == index)
    }

    /// Whether the next tick should run a pass even without news.
    pub fn wants_retry(&self) -> bool {
        self.retry
    }

    /// One pass: make the datapath enforce `snapshot`. Before the initial lists
    /// are done it changes nothing (the pinned state keeps enforcing).
    pub fn sync(&mut self, snapshot: &SourceSnapshot) -> Result<(), SyncError> {
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
            return Ok(());
        }
        self.retry = true;
        let started = Instant::now();
        let state: ClusterState = if self.config.audit {
            (*snapshot.state).clone().with_every_policy_in_audit()
        } else {
            (*snapshot.state).clone()
        };
        let node_addresses = crate::node::node_addresses()?;
        let mut routes: BTreeMap<IpAddr, u32> = BTreeMap::new();
        for ip in plan::local_addresses(&state, &self.config.node_name) {
            if let Some(index) = self.routes.resolve(ip)? {
                routes.insert(ip, index);
            }
        }
        let attached: BTreeSet<InterfaceIndex> = self.datapath.attached_interfaces().collect();
        let candidates: BTreeMap<u32, String> = self
            .links
            .iter()
            .filter(|(_, name)| plan::matches_prefix(name, &self.config.interface_prefixes))
            .map(|(index, name)| (*index, name.clone()))
            .collect();
        let plan = plan::plan(&PlanInput {
            state: &state,
            node_name: &self.config.node_name,
            routes: &routes,
            attached: &attached,
            candidates: &candidates,
            pending_endpoint_id: PENDING_ENDPOINT_ID,
        });
        let tables = compile(&state, &node_addresses, |pod| {
            plan.interfaces.contains_key(&pod.key)
        });
        for diagnostic in &tables.diagnostics {
            tracing::warn!(%diagnostic, "not enforced exactly; the affected pods fail closed");
        }
        for index in &plan.detach {
            self.datapath.detach(*index)?;
        }
        let report = self
            .datapath
            .apply(&tables, &plan.interfaces, &plan.pending)?;
        for index in &plan.attach {
            let Some(name) = self.interface_name(*index)? else {
                continue; // gone since the plan: the next pass detaches it
            };
            let attached = self.datapath.attach(&name)?;
            if attached != *index {
                tracing::warn!(interface = %name, planned = index, found = attached, "interface recreated while attaching; the next pass fixes it");
            }
        }
        self.health.set_programmed(true);
        self.health.set_pods_without_programs(plan.unmapped.len());
        self.metrics.set_endpoints(plan.interfaces.len());
        self.metrics.set_policies(state.policies.len());
        self.record_maps(&tables)?;
        self.metrics.record_sync(started.elapsed());
        if let Some(changed) = snapshot.changed {
            if self.last_change != Some(changed) {
                self.metrics.record_programmed(changed.elapsed());
                self.last_change = Some(changed);
            }
        }
        self.retry = !plan.unmapped.is_empty() || !plan.contested.is_empty();
        tracing::info!(
            endpoints = plan.interfaces.len(),
            pending = plan.pending.len(),
            unmapped = plan.unmapped.len(),
            written = report.written,
            removed = report.removed,
            bank = report.bank,
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "programmed"
        );
        Ok(())
    }

    /// The name of interface `index` now, from the link watch or the kernel.
    fn interface_name(&self, index: InterfaceIndex) -> Result<Option<String>, SyncError> {
        match self.links.get(&index) {
            Some(name) => Ok(Some(name.clone())),
            None => Ok(crate::node::interface_name(index)?),
        }
    }

    /// Map use and per-policy traffic into the metrics.
    fn record_maps(&mut self, tables: &DatapathTables) -> Result<(), SyncError> {
        let usage = self.datapath.map_usage();
        let samples: Vec<MapUsageSample<'_>> = usage
            .iter()
            .map(|u| (u.map, u.entries, u.capacity))
            .collect();
        self.metrics.set_map_usage(&samples);
        let counters = self.datapath.policy_counters(tables)?;
        self.metrics.set_policy_traffic(&counters);
        Ok(())
    }

    /// Logs and counts each conversion error once.
    fn report_conversion_errors(&mut self, snapshot: &SourceSnapshot) {
        for error in &snapshot.conversion_errors {
            if self.reported.insert(error.clone()) {
                tracing::error!(%error, "object cannot be converted; the pods it may select fail closed");
                self.metrics.error("policy_conversion");
            }
        }
    }
}

/// Runs passes until `shutdown` completes: on every source change, on link events
/// that concern pod interfaces, and on ticks while something is left to do.
pub async fn run(
    mut syncer: Syncer,
    mut snapshots: tokio::sync::watch::Receiver<SourceSnapshot>,
    mut links: LinkWatch,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(TICK);
    let mut source_open = true;
    loop {
        let run_pass = tokio::select! {
            () = &mut shutdown => break,
            changed = snapshots.changed(), if source_open => {
                if changed.is_err() {
                    tracing::error!("the API server source stopped; enforcing the last state");
                    source_open = false;
                }
                true
            }
            event = links.next() => match event {
                Ok(event) => syncer.link_event(event),
                Err(error) => {
                    tracing::warn!(%error, "link watch");
                    syncer.metrics.error(error.kind());
                    false
                }
            },
            _ = ticker.tick() => {
                syncer.health.tick();
                syncer.wants_retry()
            }
        };
        if !run_pass {
            continue;
        }
        let snapshot = snapshots.borrow_and_update().clone();
        if let Err(error) = syncer.sync(&snapshot) {
            tracing::error!(%error, kind = error.kind(), "sync failed; the previous state keeps enforcing");
            syncer.metrics.error(error.kind());
            syncer.health.set_programmed(false);
        }
    }
    tracing::info!("stopping; the pinned datapath keeps enforcing");
}
