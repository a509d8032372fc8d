//! `explain` and `simulate` on ClusterNetworkPolicies: the walk through the
//! tiers, the deciding rule, audit mode, on the cluster-guardrails example.

use std::path::Path;

use super::agent;

/// The cluster-guardrails example's files up to step `last` (0: the cluster
/// alone), as `-f` arguments.
fn files(last: usize) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/cluster-guardrails");
    let steps = [
        "01-admin-tenant-guardrails.yaml",
        "02-baseline-default-deny.yaml",
        "03-tenant-a-opens-its-db-to-web.yaml",
    ];
    let mut paths = vec![root.join("cluster.yaml")];
    paths.extend(
        steps[..last]
            .iter()
            .map(|step| root.join("steps").join(step)),
    );
    paths
        .iter()
        .flat_map(|path| ["-f".to_string(), path.display().to_string()])
        .collect()
}

/// `explain` up to step `last`: exit code and stdout.
fn explain(last: usize, from: &str, to: &str, port: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["explain".to_string()];
    args.extend(files(last));
    args.extend(["--from", from, "--to", to, "--port", port].map(String::from));
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let out = agent(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn explain_names_the_admin_rule_that_denies_and_the_walk_to_it() {
    let (code, stdout) = explain(3, "tenant-b/web", "tenant-a/db", "5432", &[]);
    assert_eq!(code, Some(3), "a dropped connection exits 3: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[2..],
        [
            "ingress to tenant-a/db: dropped by Admin tenant-a-guardrails/deny-other-tenants: Deny",
            "  tiers: Admin tenant-a-guardrails/deny-other-tenants: Deny",
        ],
        "{stdout}"
    );
}

#[test]
fn explain_walks_a_pass_to_the_network_policy_and_to_the_baseline() {
    let (code, stdout) = explain(3, "tenant-a/web", "tenant-a/db", "5432", &[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "ingress to tenant-a/db: allowed by tenant-a/web-to-db spec.ingress[0] (peer and port match)\n  \
             tiers: Admin tenant-a-guardrails/same-tenant: Pass -> NetworkPolicy: allowed\n"
        ),
        "{stdout}"
    );
    let (code, stdout) = explain(2, "tenant-a/db", "tenant-a/web", "80", &[]);
    assert_eq!(code, Some(3), "{stdout}");
    assert!(
        stdout.contains(
            "ingress to tenant-a/web: dropped by Baseline tenant-default-deny/deny-the-rest: Deny\n  \
             tiers: Admin tenant-a-guardrails/same-tenant: Pass -> NetworkPolicy: no policy \
             selects it -> Baseline tenant-default-deny/deny-the-rest: Deny\n"
        ),
        "{stdout}"
    );
    // JSON names the deciding rule and lists each tier's policies.
    let (_, json) = explain(2, "tenant-a/db", "tenant-a/web", "80", &["-o", "json"]);
    let value: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(
        value["ingress"]["decided_by"],
        serde_json::json!({"tier": "Baseline", "policy": "tenant-default-deny", "rule": "deny-the-rest", "action": "Deny"})
    );
    assert_eq!(
        value["ingress"]["admin"][0]["policy"],
        "tenant-a-guardrails"
    );
    assert_eq!(value["ingress"]["admin"][0]["rules"][1]["matched"], true);
}

#[test]
fn in_audit_mode_an_admin_deny_is_a_would_drop_naming_its_rule() {
    let (code, stdout) = explain(1, "tenant-b/web", "tenant-a/web", "80", &["--audit"]);
    assert_eq!(code, Some(4), "a would-drop exits 4: {stdout}");
    assert!(
        stdout.contains(
            "ingress to tenant-a/web: would-drop: Admin tenant-a-guardrails/deny-other-tenants \
             denies it, and the policy is in audit mode"
        ),
        "{stdout}"
    );
}

#[test]
fn simulate_counts_cluster_policies_and_judges_the_tiers() {
    let mut args = vec!["simulate".to_string()];
    args.extend(files(3));
    let out = agent(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 policies, 3 cluster policies"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = |from: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(from))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("tenant-b/web").contains("5432 ✗, 9187 ✗"), "{stdout}");
    assert!(
        row("monitoring/prometheus").contains("5432 ✓, 9187 ✓"),
        "{stdout}"
    );
    assert!(row("tenant-a/web").contains("5432 ✓, 9187 ✗"), "{stdout}");
}
