//! The agent's Prometheus metrics: families the sync loop updates through
//! `Metrics`'s methods, encoded as OpenMetrics text for `/metrics`.
//!
//! Per-map usage and per-policy traffic are snapshots (the kernel keeps the
//! counts; the loop copies them in), exposed through a collector so a map or
//! policy that is gone disappears from the next scrape instead of lingering. A
//! per-policy counter can go down when the datapath reassigns a slot (a rule
//! removed and re-added starts from zero): Prometheus reads that as a reset.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{text::encode, DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

use crate::{
    dataplane::{EventsLost, PolicyCounters, Traffic},
    model::ObjectRef,
    policy::tables::{Direction, RuleVerdict},
};

/// `Content-Type` of what `Metrics::encode` returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Error kinds `podwall_errors_total` shows from the start (at 0), so alerts can
/// use `increase()` on them before the first one happens; other kinds appear when
/// first counted. `conversion`: an object the converter rejected (or over a cap);
/// `apply`: the maps could not take the new state (it stays on the old one);
/// `attach`/`detach`: TC programs on an interface; `route_lookup`: netlink; `source`:
/// a watch of the API server failed.
pub const KNOWN_ERROR_KINDS: [&str; 6] = [
    "conversion",
    "apply",
    "attach",
    "detach",
    "route_lookup",
    "source",
];

/// Label set of `podwall_errors_total`.
type KindLabel = [(&'static str, String); 1];

/// Label set of `podwall_policy_refusals_total`: the resource a policy was
/// refused for (`policy::capacity::Resource::label`).
type ResourceLabel = [(&'static str, &'static str); 1];

/// Label set of `podwall_http_connections_closed_total` and of
/// `podwall_events_lost` (`rate_limited`, `endpoint_limited`, `ring_full`): why.
type ReasonLabel = [(&'static str, &'static str); 1];

/// Why the HTTP server closes a connection itself (`agent::http`), shown from the
/// start at 0: `evicted` (the oldest, for a new one past the cap),
/// `header_timeout` (no request head in time: idle or slow), `max_age`.
pub const HTTP_CLOSE_REASONS: [&str; 3] = ["evicted", "header_timeout", "max_age"];

/// Label set of `podwall_objects_over_cap`.
type ObjectKindLabel = [(&'static str, &'static str); 1];

/// The kinds `podwall_objects_over_cap` shows from the start (at 0).
pub const OVER_CAP_KINDS: [&str; 4] = ["Namespace", "Pod", "Service", "NetworkPolicy"];

/// Every `podwall_policy_refusals_total` resource, shown from the start at 0.
pub const REFUSAL_RESOURCES: [&str; 5] = [
    "rules",
    "rule_sets",
    "policy_entries",
    "peers_v4",
    "peers_v6",
];

/// One map's use: name, entries (the active bank's for banked maps), capacity.
pub type MapUsageSample<'a> = (&'a str, usize, u32);

/// Every metric family of the agent, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    endpoints: Gauge,
    policies: Gauge,
    sync_duration: Histogram,
    programming_latency: Histogram,
    errors: Family<KindLabel, Counter>,
    ready: Gauge,
    stale: Gauge,
    identity: IdentityMetrics,
    refused: Gauge,
    refusals: Family<ResourceLabel, Counter>,
    http_connections: Gauge,
    http_closed: Family<ReasonLabel, Counter>,
    over_cap: Family<ObjectKindLabel, Gauge>,
    snapshot: Arc<Mutex<Snapshot>>,
}

/// What the loop reports about identity, ordering and lost events.
#[derive(Debug, Default)]
struct IdentityMetrics {
    conflicts: Gauge,
    ahead: Gauge,
    events_lost: Family<ReasonLabel, Gauge>,
}

impl IdentityMetrics {
    fn register(registry: &mut Registry) -> Self {
        let out = Self::default();
        registry.register(
            "podwall_identity_conflicts",
            "Pod addresses something says belong to another interface than the pod's (not followed; listed in /readyz)",
            out.conflicts.clone(),
        );
        registry.register(
            "podwall_programs_ahead",
            "Pod interface hooks where another TC program runs before podwall's (listed in /readyz)",
            out.ahead.clone(),
        );
        for reason in ["rate_limited", "endpoint_limited", "ring_full"] {
            drop(out.events_lost.get_or_create(&[("reason", reason)]));
        }
        registry.register(
            "podwall_events_lost",
            "Verdict events the datapath could not report since it was loaded, by reason",
            out.events_lost.clone(),
        );
        out
    }
}

/// What the loop copied in last: map usage and per-policy traffic.
#[derive(Debug, Default)]
struct Snapshot {
    /// Map name -> (entries, capacity).
    maps: BTreeMap<String, (usize, u32)>,
    /// (policy, direction) -> traffic its allow rules let through.
    allowed: BTreeMap<(ObjectRef, Direction), Traffic>,
    /// (policy, direction) -> traffic dropped at endpoints it isolates.
    denied: BTreeMap<(ObjectRef, Direction), Traffic>,
    /// (policy, direction) -> traffic audit mode let pass that it would drop.
    would_drop: BTreeMap<(ObjectRef, Direction), Traffic>,
    /// Every ClusterNetworkPolicy rule's traffic, labelled.
    cluster_rules: Vec<ClusterRuleTraffic>,
}

/// One ClusterNetworkPolicy rule's counters, as
/// `podwall_cluster_policy_rule_*` labels them.
#[derive(Debug)]
struct ClusterRuleTraffic {
    policy: String,
    direction: Direction,
    rule: String,
    verdict: RuleVerdict,
    traffic: Traffic,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let endpoints = Gauge::default();
        registry.register(
            "podwall_endpoints",
            "Local pods programmed as endpoints (with an interface)",
            endpoints.clone(),
        );
        let policies = Gauge::default();
        registry.register(
            "podwall_policies",
            "NetworkPolicies in the cluster state the agent enforces",
            policies.clone(),
        );
        // 0.5 ms .. ~16 s.
        let sync_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "podwall_sync_duration_seconds",
            "Time to compile the tables and apply them to the maps",
            sync_duration.clone(),
        );
        let programming_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "podwall_programming_latency_seconds",
            "Time from the cluster event that changed state to the maps holding it",
            programming_latency.clone(),
        );
        let errors = Family::<KindLabel, Counter>::default();
        for kind in KNOWN_ERROR_KINDS {
            drop(errors.get_or_create(&[("kind", kind.to_string())]));
        }
        registry.register("podwall_errors", "Errors by kind", errors.clone());
        let ready = Gauge::default();
        registry.register("podwall_ready", "1 when /readyz answers 200", ready.clone());
        let stale = Gauge::default();
        registry.register(
            "podwall_source_stale",
            "1 while a watch of the API server is failing (enforcing the last state)",
            stale.clone(),
        );
        let identity = IdentityMetrics::register(&mut registry);
        let refused = Gauge::default();
        registry.register(
            "podwall_policies_refused",
            "Policies this node's tables leave out now because they do not fit (their pods fail closed)",
            refused.clone(),
        );
        let refusals = Family::<ResourceLabel, Counter>::default();
        for resource in REFUSAL_RESOURCES {
            drop(refusals.get_or_create(&[("resource", resource)]));
        }
        registry.register(
            "podwall_policy_refusals",
            "Policies refused because the tables could not hold them, counted when each refusal starts, by the resource they were over",
            refusals.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "podwall_http_connections",
            "Connections open to /metrics, /healthz and /readyz",
            http_connections.clone(),
        );
        let http_closed = Family::<ReasonLabel, Counter>::default();
        for reason in HTTP_CLOSE_REASONS {
            drop(http_closed.get_or_create(&[("reason", reason)]));
        }
        registry.register(
            "podwall_http_connections_closed",
            "Connections the HTTP server closed itself, by reason",
            http_closed.clone(),
        );
        let over_cap = Family::<ObjectKindLabel, Gauge>::default();
        for kind in OVER_CAP_KINDS {
            drop(over_cap.get_or_create(&[("kind", kind)]));
        }
        registry.register(
            "podwall_objects_over_cap",
            "Objects from the API server over a size or count cap, standing in fail-closed now, by kind",
            over_cap.clone(),
        );
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        registry.register_collector(Box::new(SnapshotCollector(snapshot.clone())));
        Self {
            registry,
            endpoints,
            policies,
            sync_duration,
            programming_latency,
            errors,
            ready,
            stale,
            identity,
            refused,
            refusals,
            http_connections,
            http_closed,
            over_cap,
            snapshot,
        }
    }

    /// Sets `podwall_identity_conflicts`.
    pub fn set_identity_conflicts(&self, conflicts: usize) {
        self.identity
            .conflicts
            .set(i64::try_from(conflicts).unwrap_or(i64::MAX));
    }

    /// Sets `podwall_programs_ahead`.
    pub fn set_programs_ahead(&self, hooks: usize) {
        self.identity
            .ahead
            .set(i64::try_from(hooks).unwrap_or(i64::MAX));
    }

    /// Sets `podwall_events_lost` from the datapath's side counters.
    pub fn set_events_lost(&self, lost: EventsLost) {
        for (reason, value) in [
            ("rate_limited", lost.rate_limited),
            ("endpoint_limited", lost.endpoint_limited),
            ("ring_full", lost.ring_full),
        ] {
            self.identity
                .events_lost
                .get_or_create(&[("reason", reason)])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Sets `podwall_objects_over_cap` from the source's counts by kind.
    pub fn set_over_cap(&self, counts: &BTreeMap<&'static str, usize>) {
        for kind in OVER_CAP_KINDS {
            let count = counts.get(kind).copied().unwrap_or(0);
            self.over_cap
                .get_or_create(&[("kind", kind)])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Sets `podwall_http_connections`.
    pub fn set_http_connections(&self, open: usize) {
        self.http_connections
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// Counts one connection the HTTP server closed for `reason`
    /// (`HTTP_CLOSE_REASONS`).
    pub fn http_closed(&self, reason: &'static str) {
        self.http_closed.get_or_create(&[("reason", reason)]).inc();
    }

    /// How many connections were closed for `reason` (for tests).
    #[cfg(test)]
    pub fn http_closed_count(&self, reason: &'static str) -> u64 {
        self.http_closed.get_or_create(&[("reason", reason)]).get()
    }

    /// Sets `podwall_policies_refused`.
    pub fn set_refused(&self, policies: usize) {
        self.refused
            .set(i64::try_from(policies).unwrap_or(i64::MAX));
    }

    /// Counts one new refusal for `resource` (`Resource::label`).
    pub fn refusal(&self, resource: &'static str) {
        self.refusals.get_or_create(&[("resource", resource)]).inc();
    }

    /// How many refusals for `resource` were counted (for tests and logs).
    pub fn refusals(&self, resource: &'static str) -> u64 {
        self.refusals.get_or_create(&[("resource", resource)]).get()
    }

    /// One compile + apply took `duration`.
    pub fn record_sync(&self, duration: Duration) {
        self.sync_duration.observe(duration.as_secs_f64());
    }

    /// The maps hold a state `latency` after the event that made it arrived.
    pub fn record_programmed(&self, latency: Duration) {
        self.programming_latency.observe(latency.as_secs_f64());
    }

    /// Counts one error of `kind` (e.g. an error type's `kind()`).
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&[("kind", kind.to_string())])
            .inc();
    }

    /// How many errors of `kind` were counted (for tests and logs).
    pub fn errors(&self, kind: &str) -> u64 {
        self.errors
            .get_or_create(&[("kind", kind.to_string())])
            .get()
    }

    /// Replaces the per-map usage: (map, entries, capacity) for every map.
    pub fn set_map_usage(&self, usage: &[MapUsageSample<'_>]) {
        let maps = usage
            .iter()
            .map(|(map, entries, capacity)| (map.to_string(), (*entries, *capacity)))
            .collect();
        self.lock().maps = maps;
    }

    /// Replaces the per-policy traffic with `counters` (summed over each policy's
    /// rules; a drop by no rule counts under every policy isolating where it
    /// happened), and the per-rule traffic of ClusterNetworkPolicies.
    pub fn set_policy_traffic(&self, counters: &PolicyCounters) {
        let (mut allowed, mut denied, mut would_drop) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let mut cluster_rules = Vec::new();
        for rule in &counters.rules {
            let totals = match rule.verdict {
                RuleVerdict::Allowed => &mut allowed,
                RuleVerdict::Dropped => &mut denied,
                RuleVerdict::WouldDrop => &mut would_drop,
            };
            add(totals, &rule.policy, rule.direction, rule.traffic);
            if rule.policy.is_cluster_scoped() {
                cluster_rules.push(ClusterRuleTraffic {
                    policy: rule.policy.name.clone(),
                    direction: rule.direction,
                    rule: rule.rule.clone(),
                    verdict: rule.verdict,
                    traffic: rule.traffic,
                });
            }
        }
        for deny in &counters.denied {
            for policy in &deny.policies {
                add(&mut denied, policy, deny.direction, deny.denied);
                add(&mut would_drop, policy, deny.direction, deny.would_drop);
            }
        }
        let mut snapshot = self.lock();
        snapshot.allowed = allowed;
        snapshot.denied = denied;
        snapshot.would_drop = would_drop;
        snapshot.cluster_rules = cluster_rules;
    }

    /// Sets `podwall_ready`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Sets `podwall_source_stale`.
    pub fn set_stale(&self, stale: bool) {
        self.stale.set(i64::from(stale));
    }

    /// Sets `podwall_endpoints`.
    pub fn set_endpoints(&self, endpoints: usize) {
        self.endpoints
            .set(i64::try_from(endpoints).unwrap_or(i64::MAX));
    }

    /// Sets `podwall_policies`.
    pub fn set_policies(&self, policies: usize) {
        self.policies
            .set(i64::try_from(policies).unwrap_or(i64::MAX));
    }

    /// Every family as OpenMetrics text (`CONTENT_TYPE`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        // A panic while holding the lock leaves a consistent snapshot (every
        // write replaces whole maps): keep serving it.
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn add(
    totals: &mut BTreeMap<(ObjectRef, Direction), Traffic>,
    policy: &ObjectRef,
    direction: Direction,
    traffic: Traffic,
) {
    let total = totals.entry((policy.clone(), direction)).or_default();
    total.packets = total.packets.wrapping_add(traffic.packets);
    total.bytes = total.bytes.wrapping_add(traffic.bytes);
}

fn direction_label(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// Encodes `Metrics::snapshot` at each scrape.
#[derive(Debug)]
struct SnapshotCollector(Arc<Mutex<Snapshot>>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let maps: Vec<(&str, usize, u32)> = snapshot
            .maps
            .iter()
            .map(|(name, (entries, capacity))| (name.as_str(), *entries, *capacity))
            .collect();
        let mut family = encoder.encode_descriptor(
            "podwall_map_entries",
            "Entries per BPF map (the active bank's for banked maps)",
            None,
            MetricType::Gauge,
        )?;
        for (map, entries, _) in &maps {
            ConstGauge::new(*entries).encode(family.encode_family(&[("map", *map)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "podwall_map_capacity",
            "Capacity per BPF map",
            None,
            MetricType::Gauge,
        )?;
        for (map, _, capacity) in &maps {
            ConstGauge::new(*capacity).encode(family.encode_family(&[("map", *map)])?)?;
        }
        let families: [(&str, &str, &BTreeMap<_, Traffic>); 3] = [
            (
                "podwall_policy_allowed",
                "allowed by the policy's rules (every packet of the flows they allowed)",
                &snapshot.allowed,
            ),
            (
                "podwall_policy_dropped",
                "dropped at pods the policy isolates",
                &snapshot.denied,
            ),
            (
                "podwall_policy_would_drop",
                "passed only because the policy is in audit mode",
                &snapshot.would_drop,
            ),
        ];
        for (prefix, what, totals) in families {
            for (unit, value) in [
                ("packets", (|t: &Traffic| t.packets) as fn(&Traffic) -> u64),
                ("bytes", |t: &Traffic| t.bytes),
            ] {
                let name = format!("{prefix}_{unit}");
                let help = format!("{} {what}", capitalized(unit));
                let mut family =
                    encoder.encode_descriptor(&name, &help, None, MetricType::Counter)?;
                for ((policy, direction), traffic) in totals {
                    let labels = [
                        ("namespace", policy.namespace.as_str()),
                        ("policy", policy.name.as_str()),
                        ("direction", direction_label(*direction)),
                    ];
                    ConstCounter::new(value(traffic)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (unit, value) in [
            ("packets", (|t: &Traffic| t.packets) as fn(&Traffic) -> u64),
            ("bytes", |t: &Traffic| t.bytes),
        ] {
            let name = format!("podwall_cluster_policy_rule_{unit}");
            let help = format!(
                "{} each ClusterNetworkPolicy rule decided: allowed, dropped, or would-drop in audit mode",
                capitalized(unit)
            );
            let mut family = encoder.encode_descriptor(&name, &help, None, MetricType::Counter)?;
            for rule in &snapshot.cluster_rules {
                let labels = [
                    ("policy", rule.policy.as_str()),
                    ("direction", direction_label(rule.direction)),
                    ("rule", rule.rule.as_str()),
                    ("verdict", rule.verdict.name()),
                ];
                ConstCounter::new(value(&rule.traffic)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
