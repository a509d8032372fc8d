//! `suggest` on a real recording: the secure-app example (three steps of
//! policies) probed in a lab while `flows` records what passes; the policies
//! suggested from that recording, enforcing in a second lab over the bare
//! cluster, let every recorded connection through and deny every pair the
//! recording never saw.

use std::{collections::BTreeSet, ffi::OsStr, path::Path, time::Duration};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use policy_agent::{
    lab::{report::ProbeResult, Lab},
    source::load_all,
};

use super::{
    agent_stdout, spawn_flows, stdout_of, support, wait_exit, wait_until_following, TIMEOUT,
};

fn secure_app(files: &[&str]) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/secure-app");
    files.iter().map(|f| root.join(f)).collect()
}

/// The matrix on every declared port: the probes that passed, and all of them.
fn matrix(lab: &Lab) -> (BTreeSet<(String, String, u16)>, usize) {
    let results: Vec<ProbeResult> = lab
        .probe(&lab.probe_specs(&[]), TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let passed = results
        .iter()
        .filter(|r| r.allowed)
        .map(|r| (r.from.clone(), r.to.clone(), r.port))
        .collect();
    (passed, results.len())
}

#[test]
fn policies_suggested_from_recorded_flows_pass_them_all_and_deny_the_rest() {
    support::require_root_and_bpf();
    let cluster = secure_app(&["cluster.yaml"]);
    let policies = secure_app(&[
        "cluster.yaml",
        "steps/01-deny-all-ingress.yaml",
        "steps/02-allow-frontend-to-backend.yaml",
        "steps/03-mysql-lockdown.yaml",
    ]);
    let recorded_lab = Lab::up(load_all(&policies).unwrap_or_else(|e| panic!("{e}")), &[])
        .unwrap_or_else(|e| panic!("lab: {e}"));
    // Every verdict: a connection one end allowed and the other dropped did not
    // happen, and only the drop says so.
    let (mut flows, stderr) =
        spawn_flows(&["--output", "json", "--instance", recorded_lab.instance()]);
    wait_until_following(&stderr);
    let (recorded, all) = matrix(&recorded_lab);
    assert!(
        !recorded.is_empty() && recorded.len() < all,
        "the policies let some probes through and drop others: {recorded:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    kill(
        Pid::from_raw(i32::try_from(flows.id()).unwrap_or(0)),
        Signal::SIGINT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let status = wait_exit(&mut flows, Duration::from_secs(10));
    let recording = stdout_of(&mut flows);
    assert!(status.success(), "{status}");
    drop(recorded_lab);

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("flows.jsonl");
    std::fs::write(&file, &recording).unwrap_or_else(|e| panic!("{e}"));
    let suggestion = agent_stdout(&[
        OsStr::new("suggest"),
        OsStr::new("-f"),
        cluster[0].as_os_str(),
        OsStr::new("--flows"),
        file.as_os_str(),
        OsStr::new("--enforce"),
    ]);
    let suggested = dir.path().join("suggested.yaml");
    std::fs::write(&suggested, &suggestion).unwrap_or_else(|e| panic!("{e}"));

    let mut files = cluster;
    files.push(suggested);
    let state = load_all(&files).unwrap_or_else(|e| panic!("{e}"));
    assert!(!state.policies.is_empty(), "{suggestion}");
    let enforced_lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let (passed, total) = matrix(&enforced_lab);
    assert_eq!(total, all);
    assert_eq!(
        passed, recorded,
        "every recorded connection passes, and nothing else:\n{suggestion}"
    );
}
