//! The metric text as a scraper reads it.

use std::time::Duration;

use super::Metrics;
use crate::{
    dataplane::{DropTraffic, PolicyCounters, RuleTraffic, Traffic},
    model::ObjectRef,
    policy::tables::{Direction, RuleVerdict},
};

fn text(metrics: &Metrics) -> String {
    metrics.encode().unwrap_or_else(|e| panic!("encoding: {e}"))
}

fn has_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

#[test]
fn every_documented_family_is_exposed_from_the_start() {
    let text = text(&Metrics::new());
    for family in [
        "podwall_endpoints",
        "podwall_policies",
        "podwall_map_entries",
        "podwall_map_capacity",
        "podwall_policy_allowed_packets",
        "podwall_policy_allowed_bytes",
        "podwall_policy_dropped_packets",
        "podwall_policy_dropped_bytes",
        "podwall_policy_would_drop_packets",
        "podwall_cluster_policy_rule_packets",
        "podwall_cluster_policy_rule_bytes",
        "podwall_sync_duration_seconds",
        "podwall_programming_latency_seconds",
        "podwall_errors",
        "podwall_ready",
        "podwall_source_stale",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# TYPE {family} "))),
            "no family {family} in:\n{text}"
        );
    }
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
}

#[test]
fn gauges_and_errors_show_what_the_loop_set() {
    let metrics = Metrics::new();
    metrics.set_endpoints(12);
    metrics.set_policies(3);
    metrics.set_ready(true);
    metrics.set_stale(true);
    metrics.error("apply");
    metrics.error("apply");
    metrics.error("conversion");
    let text = text(&metrics);
    has_line(&text, "podwall_endpoints 12");
    has_line(&text, "podwall_policies 3");
    has_line(&text, "podwall_ready 1");
    has_line(&text, "podwall_source_stale 1");
    has_line(&text, "podwall_errors_total{kind=\"apply\"} 2");
    has_line(&text, "podwall_errors_total{kind=\"conversion\"} 1");
    assert_eq!(metrics.errors("apply"), 2);
    metrics.set_ready(false);
    has_line(&self::text(&metrics), "podwall_ready 0");
}

#[test]
fn histograms_count_each_sync_and_programming() {
    let metrics = Metrics::new();
    metrics.record_sync(Duration::from_millis(3));
    metrics.record_sync(Duration::from_millis(5));
    metrics.record_programmed(Duration::from_millis(20));
    let text = text(&metrics);
    has_line(&text, "podwall_sync_duration_seconds_count 2");
    has_line(&text, "podwall_sync_duration_seconds_sum 0.008");
    has_line(&text, "podwall_programming_latency_seconds_count 1");
}

#[test]
fn map_usage_is_replaced_not_accumulated() {
    let metrics = Metrics::new();
    metrics.set_map_usage(&[("POLICY", 394, 65536), ("ENDPOINTS", 8, 4096)]);
    metrics.set_map_usage(&[("POLICY", 10, 65536)]);
    let text = text(&metrics);
    has_line(&text, "podwall_map_entries{map=\"POLICY\"} 10");
    has_line(&text, "podwall_map_capacity{map=\"POLICY\"} 65536");
    assert!(
        !text.contains("ENDPOINTS"),
        "a map no longer reported is gone:\n{text}"
    );
}

fn allowed_by(policy: &ObjectRef, rule_index: u32, traffic: Traffic) -> RuleTraffic {
    RuleTraffic {
        policy: policy.clone(),
        direction: Direction::Ingress,
        rule_index,
        rule: format!("spec.ingress[{rule_index}]"),
        verdict: RuleVerdict::Allowed,
        traffic,
    }
}

#[test]
fn cluster_policy_rules_count_per_rule_and_under_their_policy_by_verdict() {
    let guardrails = ObjectRef::cluster("guardrails");
    let traffic = |packets, bytes| Traffic { packets, bytes };
    let rule = |rule_index: u32, rule: &str, verdict, traffic| RuleTraffic {
        policy: guardrails.clone(),
        direction: Direction::Egress,
        rule_index,
        rule: rule.into(),
        verdict,
        traffic,
    };
    let counters = PolicyCounters {
        rules: vec![
            rule(0, "monitoring", RuleVerdict::Allowed, traffic(7, 700)),
            rule(1, "other-tenants", RuleVerdict::Dropped, traffic(3, 180)),
            rule(2, "spec.egress[2]", RuleVerdict::WouldDrop, traffic(2, 120)),
            allowed_by(&ObjectRef::new("prod", "web"), 0, traffic(1, 10)),
        ],
        denied: Vec::new(),
    };
    let metrics = Metrics::new();
    metrics.set_policy_traffic(&counters);
    let text = text(&metrics);
    let per_policy = r#"{namespace="",policy="guardrails",direction="egress"}"#;
    has_line(
        &text,
        &format!("podwall_policy_allowed_packets_total{per_policy} 7"),
    );
    has_line(
        &text,
        &format!("podwall_policy_dropped_packets_total{per_policy} 3"),
    );
    has_line(
        &text,
        &format!("podwall_policy_would_drop_bytes_total{per_policy} 120"),
    );
    let per_rule = |rule: &str, verdict: &str| {
        format!(r#"{{policy="guardrails",direction="egress",rule="{rule}",verdict="{verdict}"}}"#)
    };
    has_line(
        &text,
        &format!(
            "podwall_cluster_policy_rule_packets_total{} 3",
            per_rule("other-tenants", "dropped")
        ),
    );
    has_line(
        &text,
        &format!(
            "podwall_cluster_policy_rule_bytes_total{} 700",
            per_rule("monitoring", "allowed")
        ),
    );
    has_line(
        &text,
        &format!(
            "podwall_cluster_policy_rule_packets_total{} 2",
            per_rule("spec.egress[2]", "would-drop")
        ),
    );
    assert!(
        !text.contains(r#"podwall_cluster_policy_rule_packets_total{policy="web""#),
        "a NetworkPolicy's rules are counted per policy only:\n{text}"
    );
}

#[test]
fn policy_traffic_is_summed_per_policy_and_drops_count_under_each_isolating_policy() {
    let web = ObjectRef::new("prod", "web");
    let db = ObjectRef::new("prod", "db");
    let traffic = |packets, bytes| Traffic { packets, bytes };
    let counters = PolicyCounters {
        rules: vec![
            allowed_by(&web, 0, traffic(3, 300)),
            allowed_by(&web, 1, traffic(2, 200)),
        ],
        denied: vec![DropTraffic {
            policies: vec![web.clone(), db.clone()],
            direction: Direction::Egress,
            denied: traffic(4, 400),
            would_drop: traffic(1, 60),
        }],
    };
    let metrics = Metrics::new();
    metrics.set_policy_traffic(&counters);
    let text = text(&metrics);
    let labels = |policy: &str, direction: &str| {
        format!("{{namespace=\"prod\",policy=\"{policy}\",direction=\"{direction}\"}}")
    };
    has_line(
        &text,
        &format!(
            "podwall_policy_allowed_packets_total{} 5",
            labels("web", "ingress")
        ),
    );
    has_line(
        &text,
        &format!(
            "podwall_policy_allowed_bytes_total{} 500",
            labels("web", "ingress")
        ),
    );
    for policy in ["web", "db"] {
        has_line(
            &text,
            &format!(
                "podwall_policy_dropped_packets_total{} 4",
                labels(policy, "egress")
            ),
        );
        has_line(
            &text,
            &format!(
                "podwall_policy_would_drop_bytes_total{} 60",
                labels(policy, "egress")
            ),
        );
    }
    metrics.set_policy_traffic(&PolicyCounters::default());
    assert!(
        !self::text(&metrics).contains("policy=\"web\""),
        "a deleted policy's series go"
    );
}
