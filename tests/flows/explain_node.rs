//! `explain --node` on a running lab: the verdict read from the lab's pinned
//! maps agrees with the evaluator and with real packets for every probe of an
//! example with ClusterNetworkPolicy tiers and NetworkPolicies; tables that do
//! not hold what the manifests say are reported as a disagreement, with exit
//! code 5, and the packets prove the node's reading right.

use std::{path::PathBuf, process::Command};

use policy_agent::{
    lab::{
        probe::{Family, ProbeRoute, ProbeSpec},
        Lab,
    },
    model::ObjectRef,
    source::load_all,
};

use super::{support, AGENT, TIMEOUT};

/// An example's directory (its cluster and every step, read as one set).
fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

/// `explain --node -o json` for `spec` on `lab`, judged against `manifests`
/// at the pods' addresses of `family`: the JSON and the exit code.
fn explain_node(
    lab: &Lab,
    manifests: &PathBuf,
    spec: &ProbeSpec,
    family: Family,
) -> (serde_json::Value, i32) {
    let port = format!("{}/{}", spec.port, spec.protocol);
    let family = match family {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    };
    let out = Command::new(AGENT)
        .args([
            "explain",
            "--node",
            "--instance",
            lab.instance(),
            "-o",
            "json",
        ])
        .args(["--family", family])
        .arg("-f")
        .arg(manifests)
        .args([
            "--from",
            &spec.from.to_string(),
            "--to",
            &spec.to.to_string(),
        ])
        .args(["--port", &port])
        .output()
        .unwrap_or_else(|e| panic!("running explain --node: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "explain --node printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, out.status.code().unwrap_or(-1))
}

/// Whether the node's reading lets the connection through: neither side
/// drops it.
fn node_passes(json: &serde_json::Value) -> bool {
    ["egress", "ingress"]
        .iter()
        .all(|side| json["node"][side]["verdict"] != "dropped")
}

/// Every probe of `name`'s lab, read from the node and probed for real to
/// the pods' addresses of `family`; the rules the node's reading names.
fn agreement_on(name: &str, family: Family) -> Vec<String> {
    let manifests = example(name);
    let state = load_all(std::slice::from_ref(&manifests))
        .unwrap_or_else(|e| panic!("loading the example: {e}"));
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let specs = lab.probe_specs(&[]);
    let results = lab
        .probe_via(&specs, ProbeRoute::Pod(family), TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let mut rules = Vec::new();
    let (mut passed, mut dropped) = (0, 0);
    for (spec, result) in specs.iter().zip(&results) {
        let (json, code) = explain_node(&lab, &manifests, spec, family);
        let node = &json["node"];
        assert_eq!(node["agrees"], true, "{name} {spec:?}: {node:#}");
        assert_ne!(code, 5, "{name} {spec:?}: a disagreement: {node:#}");
        for (side, pod) in [("egress", &spec.from), ("ingress", &spec.to)] {
            assert_eq!(
                node[side]["agrees"], true,
                "{name} {spec:?} {side}: {node:#}"
            );
            assert_eq!(node[side]["pod"], pod.to_string(), "{node:#}");
            if let Some(rule) = node[side]["rule"].as_str() {
                rules.push(rule.to_string());
            }
        }
        assert_eq!(
            node_passes(&json),
            result.allowed,
            "{name} {spec:?}: the packet went {} the node's tables say: {node:#}",
            if result.allowed {
                "through where"
            } else {
                "nowhere where"
            }
        );
        assert_eq!(
            json["allowed"], result.allowed,
            "{name} {spec:?}: evaluator"
        );
        if result.allowed {
            passed += 1;
        } else {
            dropped += 1;
        }
    }
    assert!(
        passed > 0 && dropped > 0,
        "{name}: {passed} passed, {dropped} dropped"
    );
    rules
}

#[test]
fn the_nodes_tables_agree_with_the_evaluator_and_the_packets_on_every_probe() {
    support::require_root_and_bpf();
    // ClusterNetworkPolicy tiers over a NetworkPolicy: the kernel's entries name
    // a cluster rule by its name.
    let rules = agreement_on("cluster-guardrails", Family::Ipv4);
    assert!(
        rules
            .iter()
            .any(|r| r == "tenant-a-guardrails/deny-other-tenants"),
        "{rules:?}"
    );
    // NetworkPolicies only, egress to any namespace among them (the endpoint's
    // set for every class): a NetworkPolicy rule by its path.
    for family in [Family::Ipv4, Family::Ipv6] {
        let rules = agreement_on("secure-app", family);
        assert!(
            rules.iter().any(|r| r.contains(" spec.egress[")),
            "{family:?}: {rules:?}"
        );
    }
}

#[test]
fn tables_that_do_not_hold_what_the_manifests_say_are_reported_as_a_disagreement() {
    support::require_root_and_bpf();
    let manifests = example("secure-app");
    let state = load_all(std::slice::from_ref(&manifests))
        .unwrap_or_else(|e| panic!("loading the example: {e}"));
    let mut lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let spec = ProbeSpec {
        from: ObjectRef::new("secure-app", "frontend"),
        to: ObjectRef::new("secure-app", "backend"),
        port: 80,
        protocol: policy_agent::model::Protocol::Tcp,
    };
    // As compiled: the backend's ingress admits the frontend.
    let (json, _) = explain_node(&lab, &manifests, &spec, Family::Ipv4);
    assert_eq!(json["node"]["ingress"]["verdict"], "allowed", "{json:#}");
    assert_eq!(json["node"]["agrees"], true, "{json:#}");
    // Tables whose backend endpoint has no rule set: isolated, nothing allowed.
    let mut tables = lab.tables().clone();
    let backend = tables
        .endpoints
        .get(&spec.to)
        .unwrap_or_else(|| panic!("the backend has no endpoint"))
        .endpoint_id;
    tables.rule_sets.retain(|set, _| set.endpoint_id != backend);
    lab.write_tables(0, tables)
        .unwrap_or_else(|e| panic!("writing the wrong tables: {e}"));
    let out = Command::new(AGENT)
        .args(["explain", "--node", "--instance", lab.instance(), "-f"])
        .arg(&manifests)
        .args([
            "--from",
            "secure-app/frontend",
            "--to",
            "secure-app/backend",
        ])
        .args(["--port", "80"])
        .output()
        .unwrap_or_else(|e| panic!("running explain --node: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("BUG: datapath")
            && stderr.contains("disagree on ingress to secure-app/backend")
            && stderr.contains("the kernel's tables say dropped, the evaluator says allowed"),
        "{stderr}"
    );
    assert!(
        stdout.contains("ingress to secure-app/backend")
            && stdout.contains("DISAGREES with the evaluator")
            && stdout.contains("RULE_SETS: none for this class or any class"),
        "{stdout}"
    );
    // The kernel does what its tables say, not what the manifests do.
    let (json, code) = explain_node(&lab, &manifests, &spec, Family::Ipv4);
    assert_eq!(code, 5);
    assert_eq!(json["node"]["agrees"], false, "{json:#}");
    assert_eq!(json["node"]["ingress"]["evaluator"], "allowed", "{json:#}");
    let results = lab
        .probe(std::slice::from_ref(&spec), TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    assert!(!results[0].allowed, "the wrong tables drop the probe");
    assert!(!node_passes(&json), "{json:#}");
}

#[test]
fn udp_to_a_tunnel_port_is_read_as_dropped_before_policy_and_exits_dropped() {
    support::require_root_and_bpf();
    // No policy anywhere: the evaluator allows everything, the datapath drops
    // VXLAN from a pod whatever policy says.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let manifests = dir.path().join("open.yaml");
    std::fs::write(
        &manifests,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: open}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: open}\n\
         spec: {containers: [{name: c, image: x}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: open}\n\
         spec: {containers: [{name: c, image: x, ports: [{containerPort: 4789, protocol: UDP}]}]}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let state = load_all(std::slice::from_ref(&manifests))
        .unwrap_or_else(|e| panic!("loading the manifest: {e}"));
    let lab = Lab::up(state, &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let spec = ProbeSpec {
        from: ObjectRef::new("open", "a"),
        to: ObjectRef::new("open", "b"),
        port: 4789,
        protocol: policy_agent::model::Protocol::Udp,
    };
    let (json, code) = explain_node(&lab, &manifests, &spec, Family::Ipv4);
    assert_eq!(code, 3, "the kernel drops it: {json:#}");
    assert_eq!(
        json["allowed"], true,
        "the evaluator knows no tunnels: {json:#}"
    );
    let egress = &json["node"]["egress"];
    assert_eq!(egress["verdict"], "dropped", "{json:#}");
    assert!(egress["agrees"].is_null(), "not compared: {json:#}");
    assert!(
        egress["decision"]
            .as_str()
            .is_some_and(|d| d.contains("tunnel port")),
        "{json:#}"
    );
    assert_eq!(json["node"]["agrees"], true, "no disagreement: {json:#}");
    let results = lab
        .probe(std::slice::from_ref(&spec), TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    assert!(!results[0].allowed, "VXLAN from a pod is dropped");
}
