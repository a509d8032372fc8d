//! `simulate`, `explain`, `lint`, `exposure` and `diff` reading a live cluster
//! (`--kubeconfig`): the stand-in API server on this machine's loopback, read
//! once and read-only, its objects judged with the addresses they have.

use serde_json::{json, Value};

use super::{
    agent,
    support::apiserver::{ApiServer, Resource},
};

/// prod: web (app=web) at 10.1.0.2 and db (app=db, declares 5432) at 10.1.0.3;
/// NetworkPolicy db admits web on 5432.
fn cluster() -> ApiServer {
    let api = ApiServer::start().unwrap_or_else(|e| panic!("stand-in: {e}"));
    api.create_value(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "prod", "labels": {"kubernetes.io/metadata.name": "prod"}}}));
    let pod = |name: &str, ip: &str, ports: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "prod", "labels": {"app": name}},
            "spec": {"nodeName": "n1", "containers": [{"name": name, "image": "x", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
    };
    api.create_value(pod("web", "10.1.0.2", json!([{"containerPort": 80}])));
    api.create_value(pod("db", "10.1.0.3", json!([{"containerPort": 5432}])));
    api.create_value(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                              "ports": [{"port": 5432}]}]}}),
    );
    api
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = agent(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_analysis_reads_a_live_cluster_with_its_own_addresses() {
    let api = cluster();
    let kubeconfig = api
        .write_kubeconfig()
        .unwrap_or_else(|e| panic!("kubeconfig: {e}"));
    let k = kubeconfig.path().display().to_string();

    let (code, stdout, stderr) = run(&["simulate", "--kubeconfig", &k, "-o", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        json["probes"],
        json!([
            {"from": "prod/db", "to": "prod/web", "port": 80, "protocol": "TCP", "allowed": true},
            {"from": "prod/web", "to": "prod/db", "port": 5432, "protocol": "TCP", "allowed": true}
        ])
    );

    // The cluster's own addresses: an address of a pod names it.
    let (code, stdout, _) = run(&[
        "explain",
        "--kubeconfig",
        &k,
        "--from",
        "10.1.0.2",
        "--to",
        "prod/db",
        "--port",
        "5432",
    ]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.starts_with("10.1.0.2 (pod prod/web) -> prod/db (10.1.0.3)"),
        "{stdout}"
    );

    let (code, stdout, stderr) = run(&["lint", "--kubeconfig", &k]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("1 NetworkPolicies from the cluster of"),
        "{stderr}"
    );

    let (code, stdout, stderr) = run(&["exposure", "--kubeconfig", &k, "-o", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(json.as_array().is_some_and(|all| all
        .iter()
        .any(|e| e["pod"] == "prod/db" && e["outside"] == json!([]))));

    // Against the cluster: a default-deny applied over it closes web -> db.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let deny = dir.path().join("deny.yaml");
    std::fs::write(
        &deny,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: prod}\n\
         spec: {podSelector: {matchLabels: {app: db}}, policyTypes: [Ingress]}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let deny = deny.display().to_string();
    let (code, stdout, stderr) = run(&["diff", "--kubeconfig", &k, "--new", &deny, "-o", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        json["closed"],
        json!([{"from": "prod/web", "to": "prod/db", "port": 5432, "protocol": "TCP", "allowed": false}])
    );
}

#[test]
fn in_cluster_outside_a_pod_reads_the_cluster_of_the_default_kubeconfig() {
    let api = cluster();
    let kubeconfig = api
        .write_kubeconfig()
        .unwrap_or_else(|e| panic!("kubeconfig: {e}"));
    let out = std::process::Command::new(super::AGENT)
        .args(["simulate", "--in-cluster", "-o", "json"])
        .env("KUBECONFIG", kubeconfig.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(json["probes"].as_array().map(Vec::len), Some(2), "{json}");
    let (code, _, stderr) = run(&["lint", "--in-cluster", "--kubeconfig", "k.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn a_cluster_that_refuses_a_kind_is_an_error_naming_the_refusal_not_a_wait() {
    let api = cluster();
    api.set_refused(Resource::Pods, true);
    let kubeconfig = api
        .write_kubeconfig()
        .unwrap_or_else(|e| panic!("kubeconfig: {e}"));
    let k = kubeconfig.path().display().to_string();
    let (code, stdout, stderr) = run(&["simulate", "--kubeconfig", &k]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("the API server refused the read")
            && stderr.contains("Pod watch")
            && stderr.contains("pods is forbidden")
            && stderr.contains("list and watch on namespaces, pods"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("did not list every kind within"),
        "{stderr}"
    );
}

#[test]
fn manifests_and_a_cluster_are_one_or_the_other() {
    let (code, _, stderr) = run(&["lint", "-f", "x.yaml", "--kubeconfig", "k.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, _, stderr) = run(&["lint"]);
    assert_eq!(code, Some(2), "{stderr}");
}
