//! The `policy-agent` binary as a user runs it: lab JSON output, errors on bad
//! manifests, `lab down` and Ctrl-C cleanup.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

const AGENT: &str = env!("CARGO_BIN_EXE_policy-agent");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/secure-app")
}

fn agent(args: &[&str]) -> Output {
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

#[test]
fn lab_run_json_prints_exactly_the_documented_shape() {
    support::require_root_and_bpf();
    let cluster = example().join("cluster.yaml");
    let out = agent(&[
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
