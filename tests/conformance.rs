//! The conformance runner (`policy-agent lab conformance`) judged on cases whose
//! answer is known: a case with one expectation flipped must fail and name that
//! cell, a file that does not parse must fail on its own while the run goes on, an
//! SCTP case must never pass on a kernel without SCTP, and the summary and exit
//! code must follow. The vendored cases themselves run in `cargo xtask
//! conformance` (part of `cargo xtask test`), not here.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use policy_agent::lab::conformance::{
    cluster::{self, case::ClusterCase},
    expand, sctp_supported, Addresses, Case, Matrix, LAB_NO_SCTP, NO_SCTP,
};

const AGENT: &str = env!("CARGO_BIN_EXE_policy-agent");

fn vendored() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/conformance")
}

fn read_case(file: &str) -> String {
    let path = vendored().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("podwall-conformance-{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temporary directory: {e}"))
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap_or_else(|e| panic!("writing {file}: {e}"));
}

fn run(dir: &Path, extra: &[&str]) -> Output {
    Command::new(AGENT)
        .args(["lab", "conformance", "--cases"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("running {AGENT}: {e}"))
}

/// `text` with the matrix cell (`from` row, `to` column) of every expected
/// matrix flipped between `.` and `X`.
fn flip(text: &str, from: &str, to: &str) -> String {
    let mut columns: Vec<String> = Vec::new();
    let mut flipped = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"-") {
                columns = words[1..].iter().map(ToString::to_string).collect();
            }
            if words.first() != Some(&from) || words.len() != columns.len() + 1 {
                return line.to_string();
            }
            let column = columns.iter().position(|c| c == to).unwrap_or(usize::MAX);
            let marks: Vec<&str> = words[1..]
                .iter()
                .enumerate()
                .map(|(i, mark)| match (i == column, *mark) {
                    (true, ".") => "X",
                    (true, _) => ".",
                    (false, mark) => mark,
                })
                .collect();
            flipped += 1;
            let indent = &line[..line.len() - line.trim_start().len()];
            format!("{indent}{from}  {}", marks.join("   "))
        })
        .collect();
    assert_eq!(flipped, 1, "expected exactly one matrix row {from} to flip");
    lines.join("\n") + "\n"
}

#[test]
fn every_vendored_case_parses_and_exactly_the_sctp_ones_probe_sctp() {
    let files =
        policy_agent::lab::conformance::case_files(&vendored()).unwrap_or_else(|e| panic!("{e}"));
    assert!(files.len() >= 34, "only {} vendored cases", files.len());
    let mut sctp = Vec::new();
    for file in &files {
        let case = Case::load(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!case.steps.is_empty(), "{}", case.name);
        if case.probes_sctp() {
            sctp.push(case.name);
        }
    }
    assert_eq!(
        sctp,
        [
            "46-sctp-default-deny-ingress",
            "47-sctp-ingress-ports",
            "48-sctp-ingress-pod-in-other-namespace"
        ]
    );
}

#[test]
fn a_case_that_is_not_the_documented_shape_names_the_field() {
    let text = read_case("01-default-deny-ingress.yaml")
        .replace("{port: 80, protocol: TCP}", "{port: 80, protocol: ICMP}");
    let error = Case::parse("bad", Path::new("bad.yaml"), &text)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some(r#"steps[0].probes[0]: "ICMP" is not TCP, UDP or SCTP"#)
    );
    let text = read_case("01-default-deny-ingress.yaml").replace("\"80/TCP\":", "\"81/TCP\":");
    let error = Case::parse("bad", Path::new("bad.yaml"), &text)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some(r#"steps[0].expect."80/TCP": probed but no matrix is expected"#)
    );
    // A type error names the field, then the YAML reader's cause with its line.
    let text = read_case("01-default-deny-ingress.yaml")
        .replace("{port: 80, protocol: TCP}", "{port: eighty, protocol: TCP}");
    let error = Case::parse("bad", Path::new("bad.yaml"), &text)
        .err()
        .map(|e| policy_agent::causes::causes(&e).to_string());
    assert_eq!(
        error.as_deref(),
        Some("steps[0].probes[0].port: invalid u16 at line 30, column 12")
    );
}

#[test]
fn a_matrix_must_cover_every_fixture_pod_with_dots_and_crosses() {
    let good = "-   x/a x/b x/c y/a y/b y/c z/a z/b z/c\n".to_string()
        + &[
            "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
        ]
        .map(|pod| format!("{pod}  X   .   .   .   .   .   .   .   .\n"))
        .concat();
    let matrix = Matrix::parse(&good).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(matrix.allowed("y/a", "x/a"), Some(false));
    assert_eq!(matrix.allowed("y/a", "x/b"), Some(true));
    assert_eq!(matrix.allowed("q/a", "x/b"), None);

    let bad_mark = good.replacen("x/a  X", "x/a  ?", 1);
    assert_eq!(
        Matrix::parse(&bad_mark),
        Err(r#"row x/a, column x/a: "?" is neither '.' nor 'X'"#.into())
    );
    let missing_row: String = good.lines().take(9).map(|l| format!("{l}\n")).collect();
    assert_eq!(Matrix::parse(&missing_row), Err("no row for z/c".into()));
    let short_row = good.replacen("z/c  X   .", "z/c  X", 1);
    assert_eq!(
        Matrix::parse(&short_row),
        Err("row z/c has 8 marks; expected 9".into())
    );
}

#[test]
fn ipblock_placeholders_expand_to_the_pod_address() {
    let addresses: Addresses = [(
        policy_agent::model::ObjectRef::new("y", "b"),
        "10.244.1.7".parse().unwrap_or_else(|e| panic!("{e}")),
    )]
    .into();
    let expand = |text: &str| expand(text, &addresses);
    assert_eq!(expand("{ip:y/b}"), Ok("10.244.1.7".into()));
    assert_eq!(expand("{host-cidr:y/b}"), Ok("10.244.1.7/32".into()));
    assert_eq!(expand("{subnet-of:y/b}/4"), Ok("0.0.0.0/4".into()));
    assert_eq!(expand("{subnet-of:y/b}/24"), Ok("10.244.1.0/24".into()));
    assert_eq!(expand("10.0.0.0/8"), Ok("10.0.0.0/8".into()));
    assert!(expand("{ip:z/q}").is_err_and(|e| e.contains("z/q")));
    assert!(expand("{subnet-of:y/b}").is_err_and(|e| e.contains("/PREFIX")));
    assert!(expand("{subnet-of:y/b}/33").is_err_and(|e| e.contains("too long")));
}

#[test]
fn a_flipped_expectation_fails_the_run_and_names_the_cell() {
    support::require_root_and_bpf();
    let dir = temp_dir("flipped");
    let deny = read_case("01-default-deny-ingress.yaml");
    write(dir.path(), "01-default-deny-ingress.yaml", &deny);
    // Namespace y has no policy, so y/a reaches y/b; the flipped file says it must not.
    write(dir.path(), "02-flipped.yaml", &flip(&deny, "y/a", "y/b"));
    write(
        dir.path(),
        "03-broken.yaml",
        "model: [not, a, mapping]\nsteps: []\n",
    );
    let sctp = "46-sctp-default-deny-ingress.yaml";
    write(dir.path(), sctp, &read_case(sctp));

    let out = run(dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        !out.status.success(),
        "a failed case must fail the run\n{stdout}\n{stderr}"
    );
    assert_eq!(lines.len(), 5, "{stdout}\n{stderr}");
    assert!(
        lines[0].starts_with("PASS 01-default-deny-ingress (1 step, 72 probes, "),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        lines[1],
        "FAIL 02-flipped: step 1 80/TCP y/a -> y/b expected dropped, got allowed"
    );
    let broken = dir.path().join("03-broken.yaml");
    assert!(
        lines[2].starts_with(&format!("FAIL 03-broken: {}: model: ", broken.display())),
        "{}",
        lines[2]
    );
    let why = if sctp_supported() {
        LAB_NO_SCTP
    } else {
        NO_SCTP
    };
    assert_eq!(
        lines[3],
        format!("SKIP 46-sctp-default-deny-ingress: {why}")
    );
    assert_eq!(lines[4], "1 passed, 2 failed, 1 skipped");
}

#[test]
fn skipped_cases_alone_do_not_fail_the_run_and_json_counts_them() {
    support::require_root_and_bpf();
    let dir = temp_dir("skips");
    for file in [
        "01-default-deny-ingress.yaml",
        "46-sctp-default-deny-ingress.yaml",
    ] {
        write(dir.path(), file, &read_case(file));
    }
    let out = run(dir.path(), &["--output", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}\n{stderr}"));
    assert_eq!(json["passed"], 1, "{json}");
    assert_eq!(json["cases"][0]["case"], "01-default-deny-ingress");
    assert_eq!(json["cases"][0]["result"], "pass");
    assert_eq!(json["cases"][0]["probes"], 72);
    assert_eq!(json["cases"][1]["case"], "46-sctp-default-deny-ingress");
    let why = if sctp_supported() {
        LAB_NO_SCTP
    } else {
        NO_SCTP
    };
    assert_eq!(json["cases"][1]["result"], "skip", "{json}");
    assert_eq!(json["cases"][1]["reason"], why, "{json}");
    assert_eq!(
        (json["failed"].clone(), json["skipped"].clone()),
        (0.into(), 1.into())
    );
    assert!(
        out.status.success(),
        "skips alone must not fail the run\n{stderr}"
    );
}

#[test]
fn cases_pass_in_the_bridge_topology_too() {
    support::require_root_and_bpf();
    let dir = temp_dir("bridge");
    // Ingress and egress isolation, namespaces, named ports, an ipBlock of a pod's
    // address, an update: pods of one bridge that resolve each other over ARP.
    for file in [
        "02-default-deny-all.yaml",
        "10-ingress-podselector-and-namespaceselector.yaml",
        "17-ingress-named-port.yaml",
        "20-ingress-policy-update-allow-to-deny.yaml",
        "28-egress-client-side-deny-despite-server-allow.yaml",
        "34-egress-ipblock-host-cidr.yaml",
    ] {
        write(dir.path(), file, &read_case(file));
    }
    let out = run(dir.path(), &["--topology", "bridge", "--output", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        (json["passed"].clone(), json["failed"].clone()),
        (6.into(), 0.into()),
        "{json}"
    );
    assert!(out.status.success());
}

#[test]
fn a_pod_its_service_no_longer_selects_is_unreachable_and_the_case_still_runs() {
    support::require_root_and_bpf();
    // Case 01 plus a step that relabels y/b out of its Service `s-y-b`: upstream sees
    // every probe to y/b fail; the runner must count them as dropped, not abort.
    let relabel_step = r#"
- apply: []
  delete: []
  relabel:
  - {pod: y/b, labels: {pod: gone}}
  probes:
  - {port: 80, protocol: TCP}
  expect:
    "80/TCP": |
      -   x/a x/b x/c y/a y/b y/c z/a z/b z/c
      x/a  X   X   X   .   X   .   .   .   .
      x/b  X   X   X   .   X   .   .   .   .
      x/c  X   X   X   .   X   .   .   .   .
      y/a  X   X   X   .   X   .   .   .   .
      y/b  X   X   X   .   X   .   .   .   .
      y/c  X   X   X   .   X   .   .   .   .
      z/a  X   X   X   .   X   .   .   .   .
      z/b  X   X   X   .   X   .   .   .   .
      z/c  X   X   X   .   X   .   .   .   .
"#;
    let dir = temp_dir("unselected");
    let text = read_case("01-default-deny-ingress.yaml");
    write(
        dir.path(),
        "01-relabelled.yaml",
        &format!("{}{relabel_step}", text.trim_end()),
    );
    let out = run(dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.starts_with("PASS 01-relabelled (2 steps, 144 probes, "),
        "{stdout}\n{stderr}"
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
}

// ClusterNetworkPolicy cases (tests/data/cluster-conformance): the probe-list format
// and its own fixture.

fn cluster_cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/cluster-conformance")
}

#[test]
fn every_cluster_case_parses_and_is_told_apart_from_the_matrix_format() {
    let files = policy_agent::lab::conformance::case_files(&cluster_cases())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.len(), 24, "one case per upstream test");
    let (mut probes, mut experimental, mut to_nodes, mut from_nodes, mut only_sctp) =
        (0, 0, 0, 0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{e}"));
        assert!(cluster::is_cluster_case(&text), "{}", file.display());
        let case = ClusterCase::load(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        probes += case.probes().count();
        experimental += usize::from(!case.experimental.is_empty());
        to_nodes += usize::from(!case.host_network_ports().is_empty());
        from_nodes += usize::from(case.probes_from_host_network());
        only_sctp += usize::from(case.probes_only_sctp());
    }
    assert_eq!(
        (probes, experimental, to_nodes, from_nodes, only_sctp),
        (301, 6, 2, 0, 4)
    );
    assert!(!cluster::is_cluster_case(&read_case(
        "01-default-deny-ingress.yaml"
    )));
}

const NP_ONLY_CASE: &str = r#"
name: np-only
fixture: network-policy-api
upstream: {test: none}
steps:
- subtest: a NetworkPolicy isolates gryffindor but for slytherin
  apply:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: only-slytherin, namespace: network-policy-conformance-gryffindor}
    spec:
      podSelector: {}
      policyTypes: [Ingress, Egress]
      ingress:
      - from:
        - namespaceSelector: {matchLabels: {conformance-house: slytherin}}
      egress:
      - to:
        - namespaceSelector: {matchLabels: {conformance-house: slytherin}}
  probes:
  - {from: network-policy-conformance-slytherin/draco-malfoy-0, to: network-policy-conformance-gryffindor/harry-potter-0, protocol: TCP, port: 80, expect: allowed}
  - {from: network-policy-conformance-ravenclaw/luna-lovegood-0, to: network-policy-conformance-gryffindor/harry-potter-0, protocol: TCP, port: 8080, expect: dropped}
  - {from: network-policy-conformance-ravenclaw/luna-lovegood-1, to: network-policy-conformance-gryffindor/harry-potter-1, protocol: UDP, port: 53, expect: dropped}
  - {from: network-policy-conformance-gryffindor/harry-potter-1, to: network-policy-conformance-hufflepuff/cedric-diggory-0, protocol: UDP, port: 5353, expect: dropped}
  - {from: network-policy-conformance-gryffindor/harry-potter-1, to: network-policy-conformance-slytherin/draco-malfoy-1, protocol: UDP, port: 5353, expect: allowed}
  - {from: network-policy-conformance-hufflepuff/cedric-diggory-1, to: network-policy-conformance-ravenclaw/luna-lovegood-0, protocol: UDP, port: 53, expect: allowed}
  - {from: network-policy-conformance-slytherin/draco-malfoy-0, to: network-policy-conformance-gryffindor/harry-potter-0, protocol: SCTP, port: 9003, expect: allowed}
- subtest: slytherin relabelled out of the policy
  relabel:
  - {namespace: network-policy-conformance-slytherin, labels: {conformance-house: denied-namespace-label}}
  probes:
  - {from: network-policy-conformance-slytherin/draco-malfoy-0, to: network-policy-conformance-gryffindor/harry-potter-0, protocol: TCP, port: 80, expect: dropped}
- subtest: the policy deleted
  delete:
  - {kind: NetworkPolicy, namespace: network-policy-conformance-gryffindor, name: only-slytherin}
  probes:
  - {from: network-policy-conformance-ravenclaw/luna-lovegood-0, to: network-policy-conformance-gryffindor/harry-potter-0, protocol: TCP, port: 8080, expect: allowed}
"#;

#[test]
fn a_cluster_case_that_is_not_the_documented_shape_names_the_field() {
    let parse = |text: &str| {
        ClusterCase::parse("bad", Path::new("bad.yaml"), text)
            .err()
            .map(|e| e.to_string())
    };
    assert!(parse(NP_ONLY_CASE).is_none());
    assert_eq!(
        parse(&NP_ONLY_CASE.replacen("expect: allowed", "expect: maybe", 1)).as_deref(),
        Some(r#"steps[0].probes[0].expect: "maybe" is neither allowed nor dropped"#)
    );
    assert_eq!(
        parse(&NP_ONLY_CASE.replacen("draco-malfoy-0", "draco-malfoy-7", 1)).as_deref(),
        Some(
            r#"steps[0].probes[0].from: "network-policy-conformance-slytherin/draco-malfoy-7" is no fixture pod"#
        )
    );
    assert_eq!(
        parse(&NP_ONLY_CASE.replacen("kind: NetworkPolicy", "kind: Pod", 1)).as_deref(),
        Some("steps[0].apply[0].kind: only ClusterNetworkPolicy and NetworkPolicy objects can be applied")
    );
}

#[test]
fn cluster_cases_probe_pod_and_node_addresses_and_skip_what_the_lab_cannot_probe() {
    support::require_root_and_bpf();
    let dir = temp_dir("cluster");
    write(dir.path(), "1-np-only.yaml", NP_ONLY_CASE);
    // Slytherin's pods reach gryffindor's; the flipped file says they must not.
    let flipped = NP_ONLY_CASE.replacen(
        "TCP, port: 80, expect: allowed",
        "TCP, port: 80, expect: dropped",
        1,
    );
    write(dir.path(), "2-np-flipped.yaml", &flipped);
    let cases = cluster_cases();
    let copy = |from: &str, to: &str| {
        let text = std::fs::read_to_string(cases.join(from)).unwrap_or_else(|e| panic!("{e}"));
        write(dir.path(), to, &text);
    };
    copy("admin-tier-ingress-sctp.yaml", "3-sctp.yaml");
    copy("admin-tier-egress-node-peers.yaml", "4-node-peers.yaml");
    copy("admin-tier-ingress-tcp.yaml", "5-admin-tcp.yaml");

    let out = run(dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}\n{stderr}");
    assert!(
        lines[0].starts_with("PASS 1-np-only (3 steps, 8 probes, ")
            && lines[0].ends_with("; 1 SCTP probes skipped)"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        lines[1],
        "FAIL 2-np-flipped: step 1 80/TCP network-policy-conformance-slytherin/draco-malfoy-0 -> \
         network-policy-conformance-gryffindor/harry-potter-0 expected dropped, got allowed"
    );
    let sctp = if sctp_supported() {
        LAB_NO_SCTP
    } else {
        NO_SCTP
    };
    assert_eq!(lines[2], format!("SKIP 3-sctp: {sctp}"));
    // Until the manifest reader reads ClusterNetworkPolicies the cases that
    // apply them are skipped; from then on they must pass (which takes the
    // compiler's tiers too). The node peers' probes go to a node's address,
    // which every node serves.
    let readable = cluster::fixture::cluster_policies_readable();
    if readable {
        assert!(
            lines[3].starts_with("PASS 4-node-peers (3 steps, 4 probes, ")
                && lines[3].ends_with("; 1 SCTP probes skipped)"),
            "{stdout}\n{stderr}"
        );
        assert!(
            lines[4].starts_with("PASS 5-admin-tcp (6 steps, 12 probes, "),
            "{stdout}\n{stderr}"
        );
        assert_eq!(lines[5], "3 passed, 1 failed, 1 skipped");
    } else {
        for (line, name) in [(3, "4-node-peers"), (4, "5-admin-tcp")] {
            assert_eq!(
                lines[line],
                format!("SKIP {name}: {}", cluster::NO_CNP_READER)
            );
        }
        assert_eq!(lines[5], "1 passed, 1 failed, 3 skipped");
    }
    assert!(!out.status.success(), "a failed case must fail the run");
}
