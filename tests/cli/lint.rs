//! `lint` as a user runs it: findings as a table or JSON, exit code 1 on an
//! error-level finding, 0 with warnings only.

use std::path::Path;

use super::agent;

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn warnings_exit_zero_and_name_code_policy_field_and_fix() {
    let out = agent(&["lint", "-f", &example("nginx")]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(
            "warning PW102 web/backend-deny-egress spec.policyTypes: isolates the egress of web/backend"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n        fix: add an egress rule to port 53"),
        "{stdout}"
    );
    let clean = agent(&["lint", "-f", &example("secure-app")]);
    assert_eq!(clean.status.code(), Some(0));
    assert!(
        clean.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
}

#[test]
fn an_error_exits_one_and_json_lists_every_finding() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec: {containers: [{name: db, image: postgres}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - ports: [{port: 5432, endPort: 5000}]
"#;
    std::fs::write(dir.path().join("bad.yaml"), manifest).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().display().to_string();
    let out = agent(&["lint", "-f", &path, "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        json,
        serde_json::json!([{
            "code": "PW002", "name": "invalid-end-port", "severity": "error",
            "policy": "prod/db", "field": "spec.ingress[0].ports[0].endPort",
            "message": "endPort 5000 is below port 5432; the entry matches nothing",
            "fix": "give a numeric port and an endPort at or above it, or drop endPort"
        }])
    );
}
