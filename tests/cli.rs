//! The `policy-agent` binary as a user runs it: lab JSON output, errors on bad
//! manifests, `lab down` and Ctrl-C cleanup, `simulate`, `explain`, `diff`, `lint` and `exposure`.

mod support;

#[path = "cli/cluster_policies.rs"]
mod cluster_policies;
#[path = "cli/diff.rs"]
mod diff;
#[path = "cli/exposure.rs"]
mod exposure;
#[path = "cli/lint.rs"]
mod lint;
#[path = "cli/live.rs"]
mod live;

use policy_agent::e2e::examples::Expectation;
use std::{
    collections::BTreeSet,
    ffi::OsStr,
    fmt::Debug,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

const AGENT: &str = env!("CARGO_BIN_EXE_policy-agent");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/secure-app")
}

fn agent<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(AGENT)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {AGENT}: {e}"))
}

/// The lab namespaces whose names start with `prefix` (e.g. one process's).
fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    policy_agent::lab::netns::lab_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Starts `lab run` on the tutorial with `extra` arguments; returns the child and
/// the prefix of the namespaces it will create.
fn spawn_lab_run(extra: &[&str]) -> (std::process::Child, String) {
    let example = example();
    let child = Command::new(AGENT)
        .args(["lab", "run", "-f", example.to_str().unwrap_or_default()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {AGENT}: {e}"));
    let prefix = format!("pwlab-{}x", child.id());
    (child, prefix)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podwall-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// A fresh temporary directory holding `manifest` as `cluster.yaml`, and its path
/// as `-f` takes it.
fn manifest_dir(name: &str, manifest: &str) -> (PathBuf, String) {
    let dir = temp_dir(name);
    std::fs::write(dir.join("cluster.yaml"), manifest).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.to_string_lossy().into_owned();
    (dir, path)
}

#[test]
fn lab_run_json_prints_exactly_the_documented_shape() {
    support::require_root_and_bpf();
    let cluster = example().join("cluster.yaml");
    let out = agent(&[
        "-v",
        "lab",
        "run",
        "-f",
        cluster.to_str().unwrap_or_default(),
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}"));
    let object = json
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {json}"));
    assert_eq!(object.keys().collect::<Vec<_>>(), vec!["probes"]);
    // Its logs went to a pipe: plain text, no colour codes.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INFO"), "-v logs: {stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in piped logs: {stderr:?}"
    );
    let probes = json["probes"]
        .as_array()
        .unwrap_or_else(|| panic!("probes is not a list"));
    // 4 pods; each probes the declared ports of the 3 others: 3 + 3 + 3 + 3*2 (DNS) = 15.
    assert_eq!(probes.len(), 15);
    for probe in probes {
        // serde_json::Value sorts keys; their order is checked on the raw text below.
        let keys: Vec<&String> = probe
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            vec!["allowed", "from", "port", "protocol", "to"],
            "{probe}"
        );
        assert_eq!(
            probe["allowed"], true,
            "no policy: everything is open: {probe}"
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(r#"{"probes":[{"from":""#), "{text}");
    assert_eq!(text.matches(r#","protocol":"#).count(), 15, "{text}");
    assert!(text.contains(r#"{"from":"secure-app/frontend","to":"secure-app/backend","port":80,"protocol":"TCP","allowed":true}"#));
}

#[test]
fn lab_run_probes_the_ports_given_with_probe() {
    support::require_root_and_bpf();
    let out = agent(&[
        "lab",
        "run",
        "-f",
        example().to_str().unwrap_or_default(),
        "--probe",
        "80/TCP",
        "--probe",
        "53/udp",
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let probes = json["probes"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        probes.len(),
        4 * 3 * 2,
        "every ordered pod pair on both ports"
    );
    let allowed = |from: &str, to: &str, port: u64| {
        probes.iter().any(|p| {
            p["from"] == from && p["to"] == to && p["port"] == port && p["allowed"] == true
        })
    };
    // With all four tutorial policies, secure-app pods may only reach DNS.
    assert!(allowed("secure-app/frontend", "kube-system/coredns", 53));
    assert!(!allowed("secure-app/frontend", "secure-app/backend", 80));
    assert!(!allowed("kube-system/coredns", "secure-app/backend", 80));
}

#[test]
fn a_malformed_manifest_names_file_object_and_field_and_nothing_runs() {
    let dir = temp_dir("malformed");
    std::fs::write(dir.join("notes.txt"), "not yaml: [").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db-lockdown, namespace: prod}\n\
         spec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: TCP, port: 0}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = agent(&["lab", "run", "-f", dir.to_str().unwrap_or_default()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(
        stderr.contains("NetworkPolicy prod/db-lockdown"),
        "{stderr}"
    );
    assert!(stderr.contains("spec.ingress[0].ports[0].port"), "{stderr}");
    assert_eq!(
        stderr.matches("is not a port number").count(),
        1,
        "the cause is said once: {stderr}"
    );
    assert!(
        !stderr.contains("notes.txt"),
        "non-YAML files are ignored: {stderr}"
    );
    assert!(
        !stderr.contains("lab: datapath attached"),
        "nothing may run: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn lab_down_removes_namespaces_a_dead_run_left_behind() {
    support::require_root_and_bpf();
    let mut child = Command::new("true")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let dead = child.id();
    let _ = child.wait();
    let name = format!("pwlab-{dead}x0-node");
    let made = Command::new("ip").args(["netns", "add", &name]).status();
    assert!(made.is_ok_and(|s| s.success()), "could not create {name}");
    let out = agent(&["lab", "down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&name));
    assert!(
        !Path::new("/run/netns").join(&name).exists(),
        "{name} is still there"
    );
}

#[test]
fn ctrl_c_during_a_lab_run_removes_the_lab() {
    support::require_root_and_bpf();
    // Probes that are dropped wait for the full timeout: time to interrupt.
    let (child, prefix) = spawn_lab_run(&["--timeout-ms", "20000"]);
    let started = Instant::now();
    let own = || namespaces_with_prefix(&prefix).len();
    while own() < 5 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(own(), 5, "the lab (node + 4 pods) never came up");
    std::thread::sleep(Duration::from_millis(300));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(own(), 0, "the interrupted lab left namespaces behind");
}

#[test]
fn an_sctp_probe_fails_with_a_clear_message_and_leaves_nothing_behind() {
    support::require_root_and_bpf();
    let (child, prefix) = spawn_lab_run(&["--probe", "80/SCTP"]);
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("SCTP"), "{stderr}");
    let left = namespaces_with_prefix(&prefix);
    assert!(left.is_empty(), "a failed run left {left:?}");
}

/// Runs the agent and returns its stdout, failing the test with its stderr if it
/// did not succeed.
fn agent_ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let out = agent(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn example_str() -> String {
    example().to_str().unwrap_or_default().to_string()
}

/// The arguments of `explain` on the tutorial for `from` -> `to` on `port`, then
/// `extra`.
fn explain_args(from: &str, to: &str, port: &str, extra: &[&str]) -> Vec<String> {
    let example = example_str();
    [
        "explain", "-f", &example, "--from", from, "--to", to, "--port", port,
    ]
    .iter()
    .chain(extra)
    .map(|arg| arg.to_string())
    .collect()
}

/// Runs `explain` on the tutorial for `from` -> `to` on `port` and returns its
/// exit code (its verdict: 0 allowed, 3 dropped, 4 would-drop) and stdout.
fn explain(from: &str, to: &str, port: &str) -> (Option<i32>, String) {
    explained(&explain_args(from, to, port, &[]))
}

/// Runs `explain` with `args`: its exit code and stdout (stderr when it says
/// nothing).
fn explained<S: AsRef<OsStr> + Debug>(args: &[S]) -> (Option<i32>, String) {
    let out = agent(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if stdout.is_empty() {
        return (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
    }
    (out.status.code(), stdout)
}

/// `(from, to, port, protocol) -> allowed` of a `{"probes":[...]}` document.
fn verdict_of(json: &serde_json::Value, from: &str, to: &str, port: u64, protocol: &str) -> bool {
    let probes = json["probes"].as_array().cloned().unwrap_or_default();
    let found: Vec<&serde_json::Value> = probes
        .iter()
        .filter(|p| {
            p["from"] == from && p["to"] == to && p["port"] == port && p["protocol"] == protocol
        })
        .collect();
    assert_eq!(found.len(), 1, "{from} -> {to} {port}/{protocol} in {json}");
    found[0]["allowed"] == true
}

#[test]
fn simulate_json_has_the_lab_shape_and_the_tutorial_verdicts_with_peers_both_ways() {
    let example = example_str();
    let stdout = agent_ok(&[
        "simulate",
        "-f",
        &example,
        "--peer",
        "203.0.113.7",
        "-o",
        "json",
    ]);
    assert!(stdout.starts_with(r#"{"probes":[{"from":""#), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}"));
    let keys: Vec<&String> = json
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, vec!["probes"]);
    // With all four tutorial policies, secure-app pods may only reach DNS.
    assert!(verdict_of(
        &json,
        "secure-app/frontend",
        "kube-system/coredns",
        53,
        "UDP"
    ));
    assert!(!verdict_of(
        &json,
        "secure-app/frontend",
        "secure-app/backend",
        80,
        "TCP"
    ));
    // The peer is keyed by its address, as a source and as a destination.
    assert!(verdict_of(
        &json,
        "203.0.113.7",
        "kube-system/coredns",
        53,
        "TCP"
    ));
    assert!(!verdict_of(
        &json,
        "203.0.113.7",
        "secure-app/mysql",
        3306,
        "TCP"
    ));
    assert!(verdict_of(
        &json,
        "secure-app/backend",
        "203.0.113.7",
        53,
        "UDP"
    ));
    assert!(!verdict_of(
        &json,
        "secure-app/backend",
        "203.0.113.7",
        3306,
        "TCP"
    ));
    assert!(verdict_of(
        &json,
        "kube-system/coredns",
        "203.0.113.7",
        8080,
        "TCP"
    ));
    // 15 pod-to-pod probes; each of the 4 pods to the peer on the 5 distinct
    // declared ports; the peer to each pod on its own declared ports (2+1+1+1).
    let probes = json["probes"].as_array().map_or(0, Vec::len);
    assert_eq!(probes, 15 + 4 * 5 + 5, "{json}");
}

#[test]
fn simulate_prints_the_lab_matrix_with_peers_as_rows_and_columns() {
    let example = example_str();
    let stdout = agent_ok(&[
        "simulate", "-f", &example, "--probe", "80/TCP", "--peer", "fd00::7",
    ]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("from \\ to"), "{stdout}");
    assert!(lines[0].trim_end().ends_with("peer/fd00::7"), "{stdout}");
    let row = |name: &str| {
        lines
            .iter()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name}: {stdout}"))
            .to_string()
    };
    // frontend may not reach anything on 80 (egress is DNS only), coredns may.
    assert_eq!(
        row("secure-app/frontend").matches("80 ✗").count(),
        4,
        "{stdout}"
    );
    assert_eq!(
        row("kube-system/coredns").matches("80 ✓").count(),
        1,
        "only the peer: every secure-app pod is isolated for ingress: {stdout}"
    );
    assert!(row("peer/fd00::7").contains("80 ✓"), "{stdout}");
    // 5 x 4 ordered pairs but never peer to peer.
    assert_eq!(
        lines.last().copied(),
        Some("20 probes: 2 allowed, 18 dropped"),
        "{stdout}"
    );
}

#[test]
fn explain_names_the_deciding_rule_of_an_allow() {
    let (code, stdout) = explain("secure-app/frontend", "kube-system/coredns", "53/UDP");
    assert_eq!(code, Some(0), "an allowed connection exits 0: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("secure-app/frontend (10.244."),
        "{stdout}"
    );
    assert!(lines[0].ends_with("53/UDP: allowed"), "{stdout}");
    assert_eq!(
        lines[1],
        "egress from secure-app/frontend: allowed by secure-app/deny-all-egress-allow-dns \
         spec.egress[0] (peer and port match)"
    );
    assert_eq!(
        lines[2],
        "ingress to kube-system/coredns: allowed: no policy selects it for ingress"
    );
}

#[test]
fn explain_says_which_policies_deny_and_whether_peer_or_port_failed() {
    let (code, stdout) = explain("203.0.113.7", "secure-app/mysql", "3306");
    assert_eq!(code, Some(3), "a dropped connection exits 3: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("203.0.113.7 -> secure-app/mysql (10.244."),
        "{stdout}"
    );
    assert!(lines[0].ends_with(" 3306/TCP: dropped"), "{stdout}");
    assert_eq!(
        lines[1..],
        [
            "egress from 203.0.113.7: allowed: not a pod of the cluster, no policy applies",
            "ingress to secure-app/mysql: dropped: isolated by these policies, no rule matches",
            "  secure-app/deny-all-ingress",
            "    no ingress rules: it allows nothing",
            "  secure-app/mysql-lockdown",
            "    spec.ingress[0]: port matches, peer does not",
        ],
        "{stdout}"
    );
    let (_, stdout) = explain("secure-app/frontend", "secure-app/backend", "80/TCP");
    assert!(stdout.contains("80/TCP: dropped"), "{stdout}");
    assert!(
        stdout.contains("  secure-app/deny-all-egress-allow-dns\n    spec.egress[0]: peer matches, port does not\n"),
        "{stdout}"
    );
}

#[test]
fn explain_json_parses_and_carries_every_rule_of_every_isolating_policy() {
    let (code, stdout) = explained(&explain_args(
        "secure-app/frontend",
        "secure-app/mysql",
        "3306/TCP",
        &["--output", "json"],
    ));
    assert_eq!(code, Some(3), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}: {stdout}"));
    assert_eq!(json["from"], "secure-app/frontend");
    assert_eq!(json["to"], "secure-app/mysql");
    assert_eq!(json["port"], 3306);
    assert_eq!(json["protocol"], "TCP");
    assert_eq!(json["allowed"], false);
    assert_eq!(json["egress"]["allowed"], false);
    assert_eq!(json["egress"]["status"], "isolated");
    let rule = &json["egress"]["policies"][0]["rules"][0];
    assert_eq!(rule["rule"], "spec.egress[0]");
    assert_eq!(
        (&rule["peer_matched"], &rule["port_matched"]),
        (&true.into(), &false.into())
    );
    assert_eq!(json["ingress"]["allowed"], true);
    assert_eq!(
        json["ingress"]["allowed_by"]["policy"],
        "secure-app/mysql-lockdown"
    );
    assert_eq!(json["ingress"]["allowed_by"]["rule"], "spec.ingress[0]");
    let names: Vec<&serde_json::Value> = json["ingress"]["policies"]
        .as_array()
        .map(|list| list.iter().map(|p| &p["policy"]).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        vec!["secure-app/deny-all-ingress", "secure-app/mysql-lockdown"]
    );
}

#[test]
fn explain_refuses_a_pod_the_manifests_do_not_have_naming_it() {
    let out = agent(&explain_args(
        "secure-app/nope",
        "secure-app/mysql",
        "3306",
        &[],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an error is no verdict: {stderr}"
    );
    assert!(stderr.contains("pod secure-app/nope is not in"), "{stderr}");
}

/// Runs the agent where it must fail: exit code 1, nothing on stdout. Returns its
/// whole stderr, for tests that compare complete lines (no logs: `RUST_LOG` is
/// removed, so only warnings would print, and these failures have none).
fn agent_error(args: &[&str]) -> String {
    let out = Command::new(AGENT)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("PODWALL_RUN_DIR")
        .output()
        .unwrap_or_else(|e| panic!("running {AGENT}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    stderr
}

/// A fresh temporary directory holding `file` with `text`; the file's path.
fn manifest_file(name: &str, file: &str, text: &str) -> (PathBuf, String) {
    let dir = temp_dir(name);
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    (dir, path.to_string_lossy().into_owned())
}

#[test]
fn a_missing_manifest_path_is_one_line_naming_it_and_the_os_error() {
    let dir = temp_dir("missing-path");
    let missing = dir.join("missing.yaml");
    let missing = missing.to_str().unwrap_or_default();
    assert_eq!(
        agent_error(&["simulate", "-f", missing]),
        format!("error: {missing}: No such file or directory (os error 2)\n")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_mistyped_manifest_field_is_one_line_naming_file_object_field_and_the_decoder_error() {
    let (dir, file) = manifest_file(
        "mistyped-field",
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: db, namespace: prod}\n\
         spec: {containers: [{name: c, ports: [{containerPort: eighty}]}]}\n",
    );
    assert_eq!(
        agent_error(&["simulate", "-f", &file]),
        format!(
            "error: {file}: Pod prod/db: spec.containers[0].ports[0].containerPort: \
             invalid type: string \"eighty\", expected i32\n"
        )
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_invalid_policy_port_is_one_line_naming_file_policy_field_and_the_rule() {
    let (dir, file) = manifest_file(
        "invalid-port",
        "policy.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: db-lockdown, namespace: prod}\n\
         spec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: TCP, port: 0}\n",
    );
    assert_eq!(
        agent_error(&[
            "explain", "-f", &file, "--from", "prod/a", "--to", "prod/b", "--port", "80"
        ]),
        format!(
            "error: {file}: NetworkPolicy prod/db-lockdown: spec.ingress[0].ports[0].port: \
             0 is not a port number (1-65535)\n"
        )
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_manifest_syntax_error_is_one_line_naming_the_file_and_the_parser_error() {
    let (dir, file) = manifest_file("syntax", "pod.json", "{\"kind\": \"Pod\",\n}");
    assert_eq!(
        agent_error(&["simulate", "-f", &file]),
        format!("error: {file}: syntax error: trailing comma at line 2 column 1\n")
    );
    let _ = std::fs::remove_dir_all(dir);
    // YAML: one line too, no code snippet.
    let (dir, file) = manifest_file("syntax-yaml", "pod.yaml", "kind: Pod\nmetadata: [a\n");
    assert_eq!(
        agent_error(&["simulate", "-f", &file]),
        format!("error: {file}: syntax error: unclosed bracket '[' at line 2, column 11\n")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn explain_of_a_pod_the_manifests_do_not_have_is_one_line() {
    let example = example_str();
    let args = explain_args("secure-app/nope", "secure-app/mysql", "3306", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(
        agent_error(&args),
        format!("error: pod secure-app/nope is not in {example}\n")
    );
}

#[test]
fn flows_without_a_running_datapath_is_one_line_saying_what_was_looked_at() {
    let dir = temp_dir("flows-none");
    let run_dir = dir.to_str().unwrap_or_default();
    assert_eq!(
        agent_error(&["flows", "--run-dir", run_dir]),
        format!(
            "error: no podwall datapath is running (nothing published under {run_dir}/v{}); \
             a lab publishes its datapath while it runs (`policy-agent lab run`, `lab tour`)\n",
            policy_common::ABI_VERSION
        )
    );
    assert_eq!(
        agent_error(&["flows", "--run-dir", run_dir, "--instance", "gone"]),
        "error: no podwall datapath instance 'gone' (running: none)\n"
    );
    let names = dir.join("gone/names.json");
    let names = names.to_str().unwrap_or_default();
    assert_eq!(
        agent_error(&["flows", "--instance", names]),
        format!("error: reading {names}: No such file or directory (os error 2)\n")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_ip_block_is_reported_and_fails_closed_instead_of_stopping_the_load() {
    let dir = temp_dir("bad-ipblock");
    std::fs::write(
        dir.join("cluster.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: db, namespace: prod, labels: {app: db}}\n\
         spec: {containers: [{name: c, ports: [{containerPort: 5432}]}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: prod}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db-in, namespace: prod}\n\
         spec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 0.0.0.0/0, except: [not-a-cidr]}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = agent(&[
        "simulate",
        "-f",
        dir.to_str().unwrap_or_default(),
        "-o",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("NetworkPolicy prod/db-in"), "{stderr}");
    assert!(
        stderr.contains("spec.ingress[0].from[0].ipBlock.except[0]"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        !verdict_of(&json, "prod/client", "prod/db", 5432, "TCP"),
        "the invalid block must not admit anything: {json}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn simulate_gives_the_same_json_and_matrix_as_lab_run_on_the_tutorial() {
    support::require_root_and_bpf();
    let example = example_str();
    for extra in [
        &["-o", "json"][..],
        &["--probe", "80/TCP", "--probe", "53/UDP"][..],
    ] {
        let lab = agent_ok(&[&["lab", "run", "-f", &example][..], extra].concat());
        let simulated = agent_ok(&[&["simulate", "-f", &example][..], extra].concat());
        assert_eq!(simulated, lab, "{extra:?}");
    }
}

#[test]
fn lab_run_and_tour_in_the_bridge_topology_give_the_routed_verdicts() {
    support::require_root_and_bpf();
    let example = example_str();
    let simulated = agent_ok(&["simulate", "-f", &example, "-o", "json"]);
    let bridged = agent_ok(&[
        "lab",
        "run",
        "--topology",
        "bridge",
        "-f",
        &example,
        "-o",
        "json",
    ]);
    assert_eq!(bridged, simulated);
    let steps = example_steps();
    let mut tour = tutorial_tour(&example, &steps);
    let routed = agent_ok(&tour);
    tour.extend(["--topology".to_string(), "bridge".into()]);
    assert_eq!(agent_ok(&tour), routed);
    assert_eq!(routed.lines().count(), steps.len() + 1, "{routed}");
}

#[test]
fn lab_run_and_tour_on_three_nodes_give_the_one_node_verdicts_in_the_same_json() {
    support::require_root_and_bpf();
    let example = example_str();
    let one = agent_ok(&["lab", "run", "-f", &example, "-o", "json"]);
    for overlay in ["none", "vxlan"] {
        let three = agent(&[
            "lab",
            "run",
            "--nodes",
            "3",
            "--overlay",
            overlay,
            "-f",
            &example,
            "-o",
            "json",
        ]);
        assert!(three.status.success(), "{overlay}: {three:?}");
        assert_eq!(String::from_utf8_lossy(&three.stdout), one, "{overlay}");
        let progress = String::from_utf8_lossy(&three.stderr);
        assert!(
            progress.contains("a datapath attached on each of 3 nodes: node-1 ("),
            "{overlay}: the progress line says where pods run: {progress}"
        );
        assert!(
            (1..=3).all(|n| progress.contains(&format!("-node-{n})"))),
            "{overlay}: the progress line names each node's events instance: {progress}"
        );
    }
    let steps = example_steps();
    let mut tour = tutorial_tour(&example, &steps);
    let single = agent_ok(&tour);
    tour.extend(["--nodes".to_string(), "3".into()]);
    assert_eq!(agent_ok(&tour), single);
}

#[test]
fn an_overlay_without_a_second_node_and_a_lab_of_no_nodes_are_refused() {
    support::require_root_and_bpf();
    let out = agent(&["lab", "run", "--overlay", "vxlan", "-f", &example_str()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("an overlay carries pod traffic between nodes: give 2 or more nodes"),
        "{stderr}"
    );
    let zero = agent(&["lab", "run", "--nodes", "0", "-f", &example_str()]);
    assert!(!zero.status.success(), "--nodes 0 is refused");
}

/// `lab tour -o json` of the tutorial in `example`: its cluster, then `steps`.
fn tutorial_tour(example: &str, steps: &[String]) -> Vec<String> {
    let mut tour = vec![
        "lab".to_string(),
        "tour".into(),
        "-f".into(),
        format!("{example}/cluster.yaml"),
        "-o".into(),
        "json".into(),
    ];
    for step in steps {
        tour.extend(["--step".to_string(), step.clone()]);
    }
    tour
}

/// The tutorial's step files, in order.
fn example_steps() -> Vec<String> {
    let mut steps: Vec<String> = std::fs::read_dir(example().join("steps"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path().display().to_string())
        .collect();
    steps.sort();
    steps
}

#[test]
fn simulate_and_lab_run_agree_per_family_when_an_ip_block_holds_one_family() {
    support::require_root_and_bpf();
    // x/b admits only the lab's IPv6 pod range: x/a reaches it over IPv6, not IPv4.
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-v6-pods, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress: [{from: [{ipBlock: {cidr: "fd00:10:244::/64"}}]}]
"#;
    let (dir, path) = manifest_dir("family", manifest);
    for (family, allowed) in [("ipv4", false), ("ipv6", true)] {
        let args = ["-f", &path, "--family", family, "-o", "json"];
        let lab = agent_ok(&[&["lab", "run"][..], &args[..]].concat());
        let simulated = agent_ok(&[&["simulate"][..], &args[..]].concat());
        assert_eq!(simulated, lab, "--family {family}");
        let json: serde_json::Value =
            serde_json::from_str(&lab).unwrap_or_else(|e| panic!("{e}: {lab}"));
        assert_eq!(
            verdict_of(&json, "x/a", "x/b", 80, "TCP"),
            allowed,
            "--family {family}: {json}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Three pods serving 80/TCP in `x`, and a default-deny for both directions whose
/// metadata carries `annotations` (YAML flow).
fn default_deny_manifest(annotations: &str) -> String {
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: x}}\n\
             spec: {{containers: [{{name: c, image: i, ports: [{{containerPort: 80}}]}}]}}\n---\n"
        )
    };
    format!(
        "{}{}{}apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: deny-all, namespace: x, annotations: {annotations}}}\n\
         spec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}\n",
        pod("a"),
        pod("b"),
        pod("c")
    )
}

/// `simulate -o json` on a directory holding `manifest`, plus `extra` arguments:
/// every probe's (allowed, would_drop).
fn simulate_probes(name: &str, manifest: &str, extra: &[&str]) -> Vec<(bool, bool)> {
    let (dir, path) = manifest_dir(name, manifest);
    let stdout = agent_ok(&[&["simulate", "-f", &path, "-o", "json"][..], extra].concat());
    let _ = std::fs::remove_dir_all(dir);
    let json: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let probes = json["probes"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        probes.len(),
        6,
        "3 pods, each probed by 2 on 80/TCP: {stdout}"
    );
    probes
        .iter()
        .map(|p| (p["allowed"] == true, p["would_drop"] == true))
        .collect()
}

#[test]
fn simulate_shows_every_pair_reachable_and_would_drop_under_an_audited_default_deny() {
    let audited = default_deny_manifest("{podwall.io/mode: audit}");
    let probes = simulate_probes("audit-json", &audited, &[]);
    assert!(probes.iter().all(|p| *p == (true, true)), "{probes:?}");
    // The same policy enforced drops exactly those, and is no would-drop.
    let enforced = default_deny_manifest("{podwall.io/mode: enforce}");
    let probes = simulate_probes("enforce-json", &enforced, &[]);
    assert!(probes.iter().all(|p| *p == (false, false)), "{probes:?}");
    // The agent-wide --audit audits the enforced policy.
    let probes = simulate_probes("agent-audit-json", &enforced, &["--audit"]);
    assert!(probes.iter().all(|p| *p == (true, true)), "{probes:?}");
    // An unknown mode enforces (fail closed).
    let typo = default_deny_manifest("{podwall.io/mode: Audit}");
    let probes = simulate_probes("typo-json", &typo, &[]);
    assert!(probes.iter().all(|p| *p == (false, false)), "{probes:?}");
}

#[test]
fn simulate_marks_would_drops_in_the_matrix_and_warns_of_an_unknown_mode() {
    let audited = default_deny_manifest("{podwall.io/mode: audit}");
    let (dir, path) = manifest_dir("audit-matrix", &audited);
    let stdout = agent_ok(&["simulate", "-f", &path]);
    let lines: Vec<&str> = stdout.lines().collect();
    for pod in ["x/a", "x/b", "x/c"] {
        let row = lines
            .iter()
            .find(|line| line.starts_with(pod))
            .unwrap_or_else(|| panic!("no row {pod}: {stdout}"));
        assert_eq!(row.matches("80 ⚠").count(), 2, "{stdout}");
    }
    assert!(!stdout.contains('✗') && !stdout.contains('✓'), "{stdout}");
    assert_eq!(
        lines.last().copied(),
        Some("6 probes: 6 allowed (6 of them ⚠ would-drop: audit mode), 0 dropped"),
        "{stdout}"
    );
    let typo = default_deny_manifest("{podwall.io/mode: dry-run}");
    std::fs::write(dir.join("cluster.yaml"), &typo).unwrap_or_else(|e| panic!("{e}"));
    let out = agent(&["simulate", "-f", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("NetworkPolicy x/deny-all") && stderr.contains("\"dry-run\""),
        "the warning names the policy and the value: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn explain_names_the_audit_mode_policies_of_a_would_drop() {
    let audited = default_deny_manifest("{podwall.io/mode: audit}");
    let (dir, path) = manifest_dir("audit-explain", &audited);
    let args = [
        "explain", "-f", &path, "--from", "x/a", "--to", "x/b", "--port", "80",
    ];
    let (code, stdout) = explained(&args);
    assert_eq!(code, Some(4), "a would-drop exits 4: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains(": would-drop"), "{stdout}");
    assert!(
        lines[1].starts_with("egress from x/a: would-drop") && lines[1].contains("audit mode"),
        "{stdout}"
    );
    assert_eq!(lines[2], "  x/deny-all", "{stdout}");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("ingress to x/b: would-drop")));
    let (_, json) = explained(&[&args[..], &["-o", "json"][..]].concat());
    let json: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(json["allowed"], true, "{json}");
    assert_eq!(json["would_drop"], true, "{json}");
    assert_eq!(json["egress"]["mode"], "audit", "{json}");
    assert_eq!(json["ingress"]["would_drop"], true, "{json}");
    assert_eq!(json["ingress"]["policies"][0]["policy"], "x/deny-all");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn manifests_given_with_several_f_are_read_as_one_set() {
    let example = example();
    let cluster = example.join("cluster.yaml");
    let steps = example_steps();
    let (Some(cluster), Some(first)) = (cluster.to_str(), steps.first()) else {
        panic!("tutorial files");
    };
    // The cluster alone admits frontend -> mysql; with the first step's
    // deny-all-ingress beside it, it does not.
    let args = |extra: Option<&str>| {
        let mut args = vec!["explain".to_string(), "-f".into(), cluster.to_string()];
        if let Some(extra) = extra {
            args.extend(["-f".to_string(), extra.to_string()]);
        }
        for arg in [
            "--from",
            "secure-app/frontend",
            "--to",
            "secure-app/mysql",
            "--port",
            "3306",
        ] {
            args.push(arg.to_string());
        }
        args
    };
    assert_eq!(explained(&args(None)).0, Some(0));
    let (code, stdout) = explained(&args(Some(first.as_str())));
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("secure-app/deny-all-ingress"), "{stdout}");
    let simulated = agent_ok(&["simulate", "-f", cluster, "-f", first.as_str()]);
    assert!(simulated.contains("secure-app/mysql"), "{simulated}");
}

#[test]
fn completions_are_printed_for_each_shell_from_the_flags_themselves() {
    for shell in ["bash", "zsh", "fish"] {
        let script = agent_ok(&["completions", shell]);
        for word in ["policy-agent", "simulate", "explain", "filename"] {
            assert!(script.contains(word), "{shell}: no {word} in the script");
        }
    }
    assert_eq!(agent(&["completions", "tcsh"]).status.code(), Some(2));
}

/// The expectations a manifest file states in its leading comments.
fn expectations(path: &Path) -> Vec<Expectation> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    policy_agent::e2e::examples::expectations(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_example_gives_the_verdicts_its_files_expect_after_each_step() {
    for (_, files) in support::examples() {
        for (index, file) in files.iter().enumerate() {
            let expected = expectations(file);
            assert!(
                !expected.is_empty(),
                "{}: no `# expect:` lines",
                file.display()
            );
            let mut args = vec!["simulate".to_string()];
            for applied in &files[..=index] {
                args.extend(["-f".to_string(), applied.display().to_string()]);
            }
            for port in expected
                .iter()
                .map(|e| format!("{}/{}", e.port, e.protocol))
                .collect::<BTreeSet<_>>()
            {
                args.extend(["--probe".to_string(), port]);
            }
            args.extend(["-o".to_string(), "json".to_string()]);
            let json: serde_json::Value = serde_json::from_str(&agent_ok(&args))
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for want in &expected {
                let protocol = want.protocol.to_string();
                assert_eq!(
                    verdict_of(
                        &json,
                        &want.from.to_string(),
                        &want.to.to_string(),
                        u64::from(want.port),
                        &protocol
                    ),
                    want.allowed,
                    "{}: {want}",
                    file.display(),
                );
            }
        }
    }
}
