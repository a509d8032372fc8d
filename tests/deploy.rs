//! The manifests in `deploy/base` keep their promises: no privileged container,
//! exactly the documented capabilities (`agent::REQUIRED_CAPABILITIES`), read-only
//! RBAC, the wiring `policy-agent run` relies on (node name, probes and the port
//! they reach, pins), and what a cluster admin expects (Pod Security level, Linux
//! nodes, JSON logs, scrape annotations and the PodMonitor overlay). Everything is
//! read from what `kubectl kustomize` renders, as `kubectl apply -k` would apply
//! it; no cluster and no root needed, but kubectl is.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Container, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use policy_agent::agent::{DEFAULT_METRICS_ADDR, REQUIRED_CAPABILITIES};
use serde_json::Value;

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base")
}

/// Every document `kubectl kustomize` renders from `deploy/base`.
fn documents() -> Vec<Value> {
    rendered(&base())
}

/// Every document `kubectl kustomize DIR` renders.
fn rendered(dir: &Path) -> Vec<Value> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("the deploy tests render the manifests with `kubectl kustomize` and need kubectl on PATH: {e}")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The documents of `kind`, deserialized as `T` (which checks their shape).
fn objects<T: serde::de::DeserializeOwned>(kind: &str) -> Vec<T> {
    documents()
        .into_iter()
        .filter(|doc| doc.get("kind").and_then(Value::as_str) == Some(kind))
        .map(|doc| {
            serde_json::from_value(doc)
                .unwrap_or_else(|e| panic!("a {kind} that does not parse: {e}"))
        })
        .collect()
}

fn one<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let mut found = objects::<T>(kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found.remove(0)
}

fn daemonset() -> DaemonSet {
    one("DaemonSet")
}

fn containers(ds: &DaemonSet) -> Vec<Container> {
    let pod = ds
        .spec
        .template
        .spec
        .clone()
        .unwrap_or_else(|| panic!("DaemonSet without a pod spec"));
    pod.containers
        .into_iter()
        .chain(pod.init_containers.unwrap_or_default())
        .collect()
}

#[test]
fn no_container_is_privileged_and_capabilities_are_exactly_the_documented_set() {
    let expected: BTreeSet<String> = REQUIRED_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    for container in containers(&daemonset()) {
        let security = container
            .security_context
            .unwrap_or_else(|| panic!("{}: no securityContext", container.name));
        assert_ne!(
            security.privileged,
            Some(true),
            "{}: privileged",
            container.name
        );
        let capabilities = security
            .capabilities
            .unwrap_or_else(|| panic!("{}: no capabilities", container.name));
        assert_eq!(
            capabilities.drop.unwrap_or_default(),
            ["ALL"],
            "{}: must drop ALL first",
            container.name
        );
        let added: BTreeSet<String> = capabilities
            .add
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.trim_start_matches("CAP_").to_string())
            .collect();
        assert_eq!(added, expected, "{}: added capabilities", container.name);
        assert!(
            !added.contains("SYS_ADMIN"),
            "{}: SYS_ADMIN",
            container.name
        );
    }
}

#[test]
fn rbac_is_read_only_and_limited_to_what_policy_reads() {
    let role: ClusterRole = one("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        for verb in &rule.verbs {
            assert!(
                ["get", "list", "watch"].contains(&verb.as_str()),
                "verb {verb:?} in {rule:?}"
            );
        }
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                granted.insert(format!("{group}/{resource}"));
            }
        }
    }
    let expected: BTreeSet<String> = [
        "/namespaces",
        "/nodes",
        "/pods",
        "/services",
        "networking.k8s.io/networkpolicies",
        "policy.networking.k8s.io/clusternetworkpolicies",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(granted, expected);
    assert!(
        objects::<Value>("Role").is_empty(),
        "no namespaced Role either"
    );

    let binding: ClusterRoleBinding = one("ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let account: ServiceAccount = one("ServiceAccount");
    let pod_spec = daemonset()
        .spec
        .template
        .spec
        .unwrap_or_else(|| panic!("no pod spec"));
    let subjects = binding.subjects.unwrap_or_default();
    assert!(
        subjects.iter().any(|s| s.kind == "ServiceAccount"
            && Some(&s.name) == account.metadata.name.as_ref()
            && s.namespace == account.metadata.namespace),
        "the binding names the agent's ServiceAccount: {subjects:?}"
    );
    assert_eq!(pod_spec.service_account_name, account.metadata.name);
}

#[test]
fn the_agent_runs_on_the_host_network_with_its_node_name_probes_and_pins() {
    let ds = daemonset();
    let pod = ds
        .spec
        .template
        .spec
        .unwrap_or_else(|| panic!("no pod spec"));
    assert_eq!(
        pod.host_network,
        Some(true),
        "pod veths live in the node's namespace"
    );
    let agent = pod
        .containers
        .first()
        .unwrap_or_else(|| panic!("no container"));
    let node_name = agent
        .env
        .iter()
        .flatten()
        .find(|var| var.name == "NODE_NAME")
        .and_then(|var| var.value_from.as_ref())
        .and_then(|from| from.field_ref.as_ref())
        .map(|field| field.field_path.as_str());
    assert_eq!(node_name, Some("spec.nodeName"));
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|get| get.path.clone())
    };
    assert_eq!(
        probe_path(&agent.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(&agent.readiness_probe).as_deref(),
        Some("/readyz")
    );
    let limits = agent
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .unwrap_or_else(|| panic!("no resource limits"));
    assert!(limits.contains_key("memory"), "a memory limit");

    let mounts = agent.volume_mounts.clone().unwrap_or_default();
    let bpffs = mounts
        .iter()
        .find(|m| m.mount_path == "/sys/fs/bpf")
        .unwrap_or_else(|| panic!("bpffs is not mounted"));
    // Bidirectional propagation is only allowed for privileged containers.
    assert_eq!(bpffs.mount_propagation.as_deref(), Some("HostToContainer"));
    assert!(mounts.iter().any(|m| m.mount_path == "/run/podwall"));
    let host_paths: BTreeSet<String> = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.host_path.map(|h| h.path))
        .collect();
    assert_eq!(
        host_paths,
        BTreeSet::from(["/sys/fs/bpf".to_string(), "/run/podwall".to_string()])
    );
}

#[test]
fn the_probes_reach_the_port_the_agent_listens_on_and_it_is_the_default() {
    let ds = daemonset();
    let agent = ds
        .spec
        .template
        .spec
        .and_then(|pod| pod.containers.into_iter().next())
        .unwrap_or_else(|| panic!("no container"));
    let args = agent.args.clone().unwrap_or_default();
    let listen = args
        .iter()
        .position(|a| a == "--metrics-addr")
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("no --metrics-addr in {args:?}"));
    assert_eq!(
        listen, DEFAULT_METRICS_ADDR,
        "the manifest says the default out loud"
    );
    let port: i32 = listen
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listen}"));
    assert_ne!(port, 9090, "Prometheus' own port");
    let declared = agent
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .map(|p| p.container_port);
    assert_eq!(declared, Some(port), "the metrics containerPort");
    for probe in [&agent.liveness_probe, &agent.readiness_probe] {
        let target = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|get| get.port.clone());
        assert_eq!(
            target,
            Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                    "metrics".to_string()
                )
            ),
            "probes go to the named metrics port"
        );
    }
}

#[test]
fn the_agent_may_call_bpf_under_any_runtimes_seccomp_profile() {
    for container in containers(&daemonset()) {
        let profile = container
            .security_context
            .and_then(|s| s.seccomp_profile)
            .map(|p| p.type_);
        assert_eq!(
            profile.as_deref(),
            Some("Unconfined"),
            "{}: runtime-default profiles refuse bpf() without CAP_SYS_ADMIN",
            container.name
        );
    }
}

#[test]
fn the_image_is_the_one_cargo_xtask_image_tags_with_this_version() {
    let images: Vec<Option<String>> = containers(&daemonset())
        .into_iter()
        .map(|c| c.image)
        .collect();
    let expected = format!("podwall/policy-agent:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(images, [Some(expected.clone())]);
    // The file alone (`kubectl apply -f`) names it too.
    let raw = std::fs::read_to_string(base().join("daemonset.yaml"))
        .unwrap_or_else(|e| panic!("daemonset.yaml: {e}"));
    assert!(
        raw.contains(&format!("image: {expected}\n")),
        "daemonset.yaml names {expected}"
    );
}

#[test]
fn the_kustomization_renders_every_file_of_the_base_and_nothing_else() {
    let kinds: BTreeSet<String> = documents()
        .iter()
        .filter_map(|doc| doc.get("kind").and_then(Value::as_str).map(str::to_string))
        .collect();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "DaemonSet",
        "Namespace",
        "ServiceAccount",
    ];
    assert_eq!(kinds, expected.iter().map(|k| k.to_string()).collect());
}

#[test]
fn the_namespace_admits_the_agent_at_the_privileged_pod_security_level() {
    let namespace: k8s_openapi::api::core::v1::Namespace = one("Namespace");
    let labels = namespace.metadata.labels.unwrap_or_default();
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            labels
                .get(&format!("pod-security.kubernetes.io/{mode}"))
                .map(String::as_str),
            Some("privileged"),
            "{mode}: host capabilities, network and paths need the privileged level"
        );
    }
}

#[test]
fn the_agent_runs_on_linux_nodes_logs_json_and_is_scraped_on_its_metrics_port() {
    let ds = daemonset();
    let template = ds.spec.template;
    let pod = template.spec.unwrap_or_else(|| panic!("no pod spec"));
    assert_eq!(
        pod.node_selector
            .unwrap_or_default()
            .get("kubernetes.io/os")
            .map(String::as_str),
        Some("linux")
    );
    let agent = pod
        .containers
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no container"));
    let args = agent.args.unwrap_or_default();
    let format = args
        .iter()
        .position(|a| a == "--log-format")
        .and_then(|i| args.get(i + 1));
    assert_eq!(format.map(String::as_str), Some("json"), "{args:?}");
    let port = agent
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .unwrap_or_else(|| panic!("no port named metrics"));
    let annotations = template
        .metadata
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    let annotation = |key: &str| annotations.get(key).map(String::as_str);
    assert_eq!(annotation("prometheus.io/scrape"), Some("true"));
    assert_eq!(
        annotation("prometheus.io/port"),
        Some(port.container_port.to_string().as_str())
    );
    assert_eq!(annotation("prometheus.io/path"), Some("/metrics"));
    let strategy = ds
        .spec
        .update_strategy
        .and_then(|s| s.type_)
        .unwrap_or_default();
    assert_eq!(strategy, "RollingUpdate");
}

#[test]
fn the_podmonitor_overlay_adds_a_podmonitor_scraping_the_agents_metrics_port() {
    let overlay = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/overlays/podmonitor");
    let documents = rendered(&overlay);
    let monitors: Vec<&Value> = documents
        .iter()
        .filter(|doc| doc.get("kind").and_then(Value::as_str) == Some("PodMonitor"))
        .collect();
    assert_eq!(monitors.len(), 1, "one PodMonitor");
    let spec = monitors[0].get("spec").unwrap_or_else(|| panic!("no spec"));
    let selected = spec
        .get("selector")
        .and_then(|s| s.get("matchLabels"))
        .and_then(|l| l.get("app.kubernetes.io/name"))
        .and_then(Value::as_str);
    assert_eq!(selected, Some("podwall"));
    let port = spec
        .get("podMetricsEndpoints")
        .and_then(Value::as_array)
        .and_then(|endpoints| endpoints.first())
        .and_then(|endpoint| endpoint.get("port"))
        .and_then(Value::as_str);
    assert_eq!(port, Some("metrics"));
    // The base is all there too.
    assert_eq!(documents.len(), rendered(&base()).len() + 1);
}

#[test]
fn the_cluster_network_policy_crd_is_upstreams_and_what_the_agent_watches() {
    let crd: Value = one("CustomResourceDefinition");
    let spec = &crd["spec"];
    assert_eq!(
        crd["metadata"]["name"],
        "clusternetworkpolicies.policy.networking.k8s.io"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["policy.networking.k8s.io/bundle-version"],
        "v0.2.0"
    );
    assert_eq!(spec["group"], "policy.networking.k8s.io");
    assert_eq!(spec["scope"], "Cluster");
    assert_eq!(spec["names"]["kind"], "ClusterNetworkPolicy");
    assert_eq!(spec["names"]["plural"], "clusternetworkpolicies");
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    assert!(
        versions
            .iter()
            .any(|v| v["name"] == "v1alpha2" && v["served"] == true),
        "v1alpha2 is served: {versions:?}"
    );
    // The agent's wire type names the same resource.
    use k8s_openapi::Resource as _;
    type Cnp = policy_agent::source::convert::ClusterNetworkPolicy;
    assert_eq!(spec["group"], Cnp::GROUP);
    assert_eq!(spec["names"]["plural"], Cnp::URL_PATH_SEGMENT);
    let credit = std::fs::read_to_string(base().join("crd-clusternetworkpolicies.yaml"))
        .unwrap_or_else(|e| panic!("reading the CRD: {e}"));
    assert!(
        credit.contains("kubernetes-sigs/network-policy-api v0.2.0")
            && credit.contains("Apache License 2.0"),
        "the CRD file credits its origin"
    );
}
