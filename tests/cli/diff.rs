//! `diff`: what a change of manifests opens and closes, on the secure-app
//! example, and the recorded flows it would drop.

use std::path::PathBuf;

use super::{agent, example};

/// `-f` for the cluster and the steps `common`, `--new` for `new`.
fn args(common: &[&str], new: &[&str], extra: &[&str]) -> Vec<String> {
    let path = |name: &str| -> PathBuf {
        if name == "cluster.yaml" {
            example().join(name)
        } else {
            example().join("steps").join(name)
        }
    };
    let mut args = vec!["diff".to_string()];
    for name in common {
        args.extend(["-f".to_string(), path(name).display().to_string()]);
    }
    for name in new {
        args.extend(["--new".to_string(), path(name).display().to_string()]);
    }
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args
}

const UP_TO_STEP_3: [&str; 4] = [
    "cluster.yaml",
    "01-deny-all-ingress.yaml",
    "02-allow-frontend-to-backend.yaml",
    "03-mysql-lockdown.yaml",
];

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn a_new_policy_opens_and_a_default_deny_closes_the_connections_simulate_judges() {
    let opened = json(&agent(&args(
        &UP_TO_STEP_3[..2],
        &["02-allow-frontend-to-backend.yaml"],
        &["-o", "json"],
    )));
    assert_eq!(
        opened,
        serde_json::json!({"opened": [{"from": "secure-app/frontend", "to": "secure-app/backend",
            "port": 80, "protocol": "TCP", "allowed": true}], "closed": []})
    );
    let out = agent(&args(
        &UP_TO_STEP_3,
        &["04-deny-all-egress-allow-dns.yaml"],
        &[],
    ));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "opened: 0\nclosed: 2\n  secure-app/frontend -> secure-app/backend 80/TCP\n  \
         secure-app/frontend -> secure-app/mysql 3306/TCP\n"
    );
}

#[test]
fn recorded_flows_the_change_drops_are_listed() {
    // As `flows --output json` prints them (one object a line), from another lab.
    // (source port, from, to, port, protocol, verdict)
    type Recorded<'a> = (u16, &'a str, &'a str, u16, &'a str, &'a str);
    let line = |(sport, from, to, port, protocol, verdict): Recorded<'_>| {
        serde_json::json!({
            "time": "2026-12-07T08:00:00.000000Z", "pod": to, "interface": 7,
            "direction": "ingress",
            "source": {"address": "10.244.9.2", "port": sport, "pod": from},
            "destination": {"address": "10.244.9.3", "port": port, "pod": to},
            "protocol": protocol, "verdict": verdict, "reason": "allow_policy",
            "policies": [], "allowed_by": null, "denied_by": null, "bytes": 74
        })
        .to_string()
    };
    let (frontend, backend, mysql) = (
        "secure-app/frontend",
        "secure-app/backend",
        "secure-app/mysql",
    );
    let recording = [
        (40000, frontend, backend, 80, "TCP", "allowed"),
        (40001, frontend, backend, 80, "TCP", "allowed"),
        (40002, frontend, "kube-system/coredns", 53, "UDP", "allowed"),
        // Dropped already (one end allowing what the other drops), or without
        // ports: nothing for the change to break.
        (40003, mysql, backend, 80, "TCP", "dropped"),
        (40004, frontend, mysql, 3306, "TCP", "allowed"),
        (40004, frontend, mysql, 3306, "TCP", "dropped"),
        (40005, frontend, backend, 0, "ICMP", "allowed"),
    ]
    .map(line)
    .join("\n");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("flows.jsonl");
    std::fs::write(&file, recording).unwrap_or_else(|e| panic!("{e}"));
    let file = file.display().to_string();
    let report = json(&agent(&args(
        &UP_TO_STEP_3,
        &["04-deny-all-egress-allow-dns.yaml"],
        &["--flows", &file, "-o", "json"],
    )));
    assert_eq!(
        report["broken"],
        serde_json::json!([{"from": "secure-app/frontend", "to": "secure-app/backend",
            "port": 80, "protocol": "TCP", "flows": 2}])
    );
    // Without the change nothing breaks.
    let report = json(&agent(&args(
        &UP_TO_STEP_3[..3],
        &["03-mysql-lockdown.yaml"],
        &["--flows", &file, "-o", "json"],
    )));
    assert_eq!(report["broken"], serde_json::json!([]));
}

#[test]
fn diff_without_a_side_to_compare_says_what_to_give() {
    let out = agent(&args(&UP_TO_STEP_3, &[], &[]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to compare"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
