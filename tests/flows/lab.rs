//! The lab's side of flow logs: `lab run --show-drops` and `--audit`, and audit mode
//! in the lab: an audited default-deny keeps traffic flowing and reports exactly
//! the flows that enforcing it drops.

use std::{collections::BTreeSet, path::Path, process::Command};

use policy_agent::{
    lab::{drops, probe::ProbeRoute},
    model::{
        builders::{cluster, netpol, pod, rule, selector},
        ClusterState, PolicyMode, Protocol,
    },
};

use super::{agent_stdout, lab_up, support, AGENT, TIMEOUT};

/// The example `name` under `deploy/examples`.
fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
        .to_str()
        .unwrap_or_default()
        .to_string()
}

/// `lab run` on the secure-app example, probing 80/TCP.
fn lab_run(extra: &[&str]) -> String {
    lab_run_on("secure-app", "80/TCP", extra)
}

/// `lab run` on example `name`, probing `probe`; its stdout.
fn lab_run_on(name: &str, probe: &str, extra: &[&str]) -> String {
    let example = example(name);
    let mut args = vec!["lab", "run", "-f", &example, "--probe", probe];
    args.extend(extra);
    agent_stdout(&args)
}

#[test]
fn a_cluster_network_policy_deny_is_reported_by_its_rule_on_real_packets() {
    let stdout = lab_run_on(
        "cluster-guardrails",
        "5432/TCP",
        &["--show-drops", "-o", "json"],
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let drops = json["drops"].as_array().cloned().unwrap_or_default();
    let named = |from: &str, to: &str| {
        drops
            .iter()
            .find(|d| d["from"] == from && d["to"] == to)
            .map(|d| (d["policies"].clone(), d["denied_by"].clone()))
            .unwrap_or_else(|| panic!("no drop {from} -> {to}: {json}"))
    };
    // The Admin tier's Deny, on a pod a NetworkPolicy also isolates: the rule
    // that dropped it, by name, not the NetworkPolicy.
    assert_eq!(
        named("tenant-b/web", "tenant-a/db"),
        (
            serde_json::json!(["tenant-a-guardrails"]),
            serde_json::json!({"policy": "tenant-a-guardrails", "rule": "deny-other-tenants"})
        )
    );
}

#[test]
fn lab_run_show_drops_lists_each_dropped_flow_with_its_isolating_policies() {
    support::require_root_and_bpf();
    let text = lab_run(&["--show-drops"]);
    let (matrix, drops) = text
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("no drops after the matrix:\n{text}"));
    assert!(
        matrix.ends_with("12 probes: 0 allowed, 12 dropped"),
        "{text}"
    );
    let mut lines = drops.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("drops reported while probing: ")),
        "{text}"
    );
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("from"), "{text}");
    // Every denied pair of the matrix has its row, naming the policies behind it.
    let rows: Vec<Vec<&str>> = lines
        .clone()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let denied = denied_pairs(matrix);
    assert_eq!(denied.len(), 12, "{matrix}");
    for (from, to) in &denied {
        let row = rows
            .iter()
            .find(|r| r.len() > 8 && r[0] == from && r[1] == to && r[2] == "80/TCP")
            .unwrap_or_else(|| panic!("no drop row {from} -> {to}:\n{text}"));
        // from, to, port, verdict, at (pod, direction), reason, policies.., packets
        let policies = &row[7..row.len() - 1];
        assert!(
            policies.iter().all(|p| p.starts_with("secure-app/")),
            "{from} -> {to} names no policy: {row:?}"
        );
    }
    // Egress of the frontend, isolated by the tutorial's egress policy.
    let wanted = [
        "secure-app/frontend",
        "secure-app/backend",
        "80/TCP",
        "dropped",
    ];
    let line = lines
        .clone()
        .find(|l| l.split_whitespace().take(4).eq(wanted))
        .unwrap_or_else(|| panic!("no line starting {wanted:?}:\n{text}"));
    assert!(
        line.contains("secure-app/frontend egress")
            && line.contains("drop_policy")
            && line.contains("secure-app/deny-all-egress-allow-dns"),
        "{line}"
    );

    let json: serde_json::Value = serde_json::from_str(&lab_run(&["--show-drops", "-o", "json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["probes"].as_array().map(Vec::len), Some(12));
    assert_eq!(json["events_lost"]["rate_limited"], 0, "{json}");
    assert_eq!(json["events_lost"]["endpoint_limited"], 0, "{json}");
    assert_eq!(json["events_lost"]["ring_full"], 0, "{json}");
    let drops = json["drops"].as_array().cloned().unwrap_or_default();
    let denied: Vec<&serde_json::Value> = json["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["allowed"] == false)
        .collect();
    assert_eq!(denied.len(), 12, "{json}");
    for probe in denied {
        let drop = drops
            .iter()
            .find(|d| {
                d["from"] == probe["from"] && d["to"] == probe["to"] && d["port"] == probe["port"]
            })
            .unwrap_or_else(|| panic!("denied probe {probe} has no drop: {json}"));
        assert_eq!(drop["verdict"], "dropped", "{drop}");
        assert_eq!(drop["reason"], "drop_policy", "{drop}");
        assert!(
            drop["policies"].as_array().is_some_and(|p| !p.is_empty()),
            "{drop}"
        );
    }
    // coredns reaches no tutorial pod on 80: ingress policies drop it at each one.
    for (to, policies) in [
        (
            "secure-app/backend",
            serde_json::json!([
                "secure-app/allow-frontend-to-backend",
                "secure-app/deny-all-ingress"
            ]),
        ),
        (
            "secure-app/mysql",
            serde_json::json!(["secure-app/deny-all-ingress", "secure-app/mysql-lockdown"]),
        ),
    ] {
        let found = drops
            .iter()
            .find(|d| d["from"] == "kube-system/coredns" && d["to"] == to && d["port"] == 80);
        let drop = found.unwrap_or_else(|| panic!("no drop coredns -> {to}: {json}"));
        assert_eq!(drop["verdict"], "dropped");
        assert_eq!(drop["pod"], to);
        assert_eq!(drop["direction"], "ingress");
        assert_eq!(drop["policies"], policies, "{drop}");
        assert!(drop["packets"].as_u64().is_some_and(|n| n >= 1), "{drop}");
    }
}

/// The `(from, to)` pairs a reachability matrix marks denied (`80 ✗`).
fn denied_pairs(matrix: &str) -> Vec<(String, String)> {
    let mut lines = matrix.lines();
    let columns: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(3) // "from \ to"
        .collect();
    let mut pairs = Vec::new();
    for line in lines.take_while(|l| !l.contains(" probes: ")) {
        let mut cells = line.split_whitespace();
        let from = cells.next().unwrap_or_default().to_string();
        // Each cell is "80 ✗", "80 ✓" or "·" (the pod itself).
        let mut column = 0;
        while let Some(cell) = cells.next() {
            if cell == "·" {
                column += 1;
                continue;
            }
            if cells.next() == Some("✗") {
                pairs.push((from.clone(), columns[column].to_string()));
            }
            column += 1;
        }
    }
    pairs
}

/// `(from, to, port)` of the probes in a `lab run` JSON that satisfy `keep`.
fn probes_where(
    json: &serde_json::Value,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> BTreeSet<String> {
    json["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| keep(p))
        .map(|p| format!("{} -> {} {}", p["from"], p["to"], p["port"]))
        .collect()
}

#[test]
fn lab_run_audit_passes_everything_and_marks_exactly_what_enforcing_drops() {
    support::require_root_and_bpf();
    let enforced: serde_json::Value =
        serde_json::from_str(&lab_run(&["-o", "json"])).unwrap_or_else(|e| panic!("{e}"));
    let audited: serde_json::Value = serde_json::from_str(&lab_run(&["--audit", "-o", "json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    let dropped = probes_where(&enforced, |p| p["allowed"] == false);
    assert!(!dropped.is_empty());
    assert!(
        probes_where(&audited, |p| p["allowed"] == false).is_empty(),
        "{audited}"
    );
    assert_eq!(probes_where(&audited, |p| p["would_drop"] == true), dropped);
    let table = lab_run(&["--audit"]);
    assert!(table.contains("80 ⚠"), "{table}");
    assert!(table.contains("would-drop: audit mode"), "{table}");
}

/// The tutorial's shape in small: a default-deny ingress for the namespace and an
/// allow from `a` to `b` on 80, both in `mode`.
fn default_deny(mode: PolicyMode) -> ClusterState {
    let app = |name: &str| {
        pod("shop", name)
            .labels([("app", name)])
            .port(80, Protocol::Tcp)
            .build()
    };
    cluster()
        .pod(app("a"))
        .pod(app("b"))
        .pod(app("c"))
        .policy(
            netpol("shop", "default-deny-ingress")
                .select(selector().build())
                .types(true, false)
                .mode(mode)
                .build(),
        )
        .policy(
            netpol("shop", "allow-a-to-b")
                .select(selector().label("app", "b").build())
                .ingress(
                    rule()
                        .from_pods(selector().label("app", "a").build())
                        .port(80, Protocol::Tcp)
                        .build(),
                )
                .mode(mode)
                .build(),
        )
        .build()
}

#[test]
fn an_audited_default_deny_keeps_traffic_flowing_and_reports_exactly_the_flows_enforcing_drops() {
    support::require_root_and_bpf();
    let mut lab = lab_up(default_deny(PolicyMode::Audit));
    let specs = lab.probe_specs(&[]);
    assert_eq!(specs.len(), 6);
    let reported = drops::probe_reporting(&mut lab, &specs, ProbeRoute::default(), TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let results = &reported.results;
    let lines = &reported.lines;
    assert!(
        results.iter().all(|r| r.allowed),
        "audit drops nothing: {results:?}"
    );
    let key = |r: &policy_agent::lab::report::ProbeResult| format!("{} -> {}", r.from, r.to);
    let would_drop: BTreeSet<String> = results.iter().filter(|r| r.would_drop).map(key).collect();
    // Every pair but a -> b, which the allow admits.
    assert_eq!(would_drop.len(), 5, "{would_drop:?}");
    assert!(!would_drop.contains("shop/a -> shop/b"), "{would_drop:?}");
    // Each would-drop is reported once, naming the policies isolating its
    // destination.
    let seen = drops::summarize(lines);
    let probes_seen: Vec<_> = seen.iter().filter(|d| d.port == 80).collect();
    assert_eq!(probes_seen.len(), 5, "{seen:?}");
    for seen in probes_seen {
        assert_eq!(seen.packets, 1, "{seen:?}");
        let expected: Vec<&str> = if seen.to == "shop/b" {
            vec!["shop/allow-a-to-b", "shop/default-deny-ingress"]
        } else {
            vec!["shop/default-deny-ingress"]
        };
        assert_eq!(seen.policies, expected, "{seen:?}");
        assert_eq!(seen.reason, "would_drop_policy", "{seen:?}");
    }

    lab.update(default_deny(PolicyMode::Enforce))
        .unwrap_or_else(|e| panic!("update: {e}"));
    let enforced = lab
        .probe(&specs, TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let dropped: BTreeSet<String> = enforced.iter().filter(|r| !r.allowed).map(key).collect();
    assert_eq!(
        dropped, would_drop,
        "enforcing drops exactly what audit reported"
    );
}

#[test]
fn lab_tour_show_drops_lists_each_steps_drops_naming_the_policy_that_isolates() {
    support::require_root_and_bpf();
    let example = example("secure-app");
    let out = Command::new(AGENT)
        .args(["lab", "tour", "--show-drops", "--probe", "80/TCP", "-f"])
        .arg(format!("{example}/cluster.yaml"))
        .arg("--step")
        .arg(format!("{example}/steps/01-deny-all-ingress.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (before, after) = text
        .split_once("== step 1")
        .unwrap_or_else(|| panic!("no step 1:\n{text}"));
    // No policy yet: nothing dropped, and the tour says so.
    assert!(
        before.contains("drops reported while probing: none"),
        "{text}"
    );
    // Default-deny ingress in secure-app: every probe into it is dropped at its
    // destination, and each drop names the policy (kube-system stays open).
    let dropped = after
        .lines()
        .find_map(|l| {
            l.strip_suffix(" dropped")?
                .rsplit_once(", ")?
                .1
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no summary line:\n{text}"));
    assert_eq!(dropped, 9, "{text}");
    assert!(
        after.contains(&format!("drops reported while probing: {dropped} flows")),
        "{text}"
    );
    let named = after
        .lines()
        .filter(|l| l.contains("drop_policy") && l.contains("secure-app/deny-all-ingress"))
        .count();
    assert_eq!(named, dropped, "{text}");
}
