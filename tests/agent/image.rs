//! The image `cargo xtask image` builds runs for real: podman with runc starts it
//! as `deploy/base/daemonset.yaml` says a node runs it (every field that shapes the
//! container is read from the manifest and mapped to podman's flags; one that
//! cannot be mapped fails the test), in the lab node's network namespace (the
//! host network), with the service account mount and in-cluster environment the
//! kubelet adds, against the stand-in API server over HTTPS. It enforces, answers
//! `/readyz`, serves `policy-agent flows` and `explain --node --in-cluster`
//! through `podman exec` (as `kubectl exec ds/podwall -- policy-agent flows`), keeps enforcing through `podman kill`
//! and a restart, and `policy-agent uninstall` from the image takes it off.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Container};
use policy_agent::agent::{run::pin_dir, REQUIRED_CAPABILITIES};

use super::{
    capability_number, create_web_db_other,
    flows::{
        assert_names_other_to_db, explain_node_agrees, first_drop_args, first_drop_from_other,
    },
    harness::{self, Node},
    support::{
        self,
        agent::{effective_capabilities, get_in},
    },
};

/// Where the kubelet mounts a pod's service account.
const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The token the stand-in hands out, and expects back.
const TOKEN: &str = "stand-in-service-account-token";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The reference `cargo xtask image` last built (its tag file), checked to be
/// built from the checked-out commit (its revision label).
fn built_image() -> String {
    let reference = tagged_image();
    let revision = podman(&[
        "image",
        "inspect",
        "--format",
        "{{index .Labels \"org.opencontainers.image.revision\"}}",
        &reference,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let head = Command::new("git")
        .current_dir(workspace())
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap_or_else(|e| panic!("git rev-parse HEAD: {e}"));
    let head = String::from_utf8_lossy(&head.stdout);
    assert_eq!(
        revision.trim(),
        head.trim(),
        "{reference} was built from another commit: run `cargo xtask image` again"
    );
    reference
}

/// The reference in `cargo xtask image`'s tag file.
fn tagged_image() -> String {
    let tag = workspace().join("target/image/policy-agent.tag");
    let reference = std::fs::read_to_string(&tag).unwrap_or_else(|e| {
        panic!(
            "this test runs the agent's image and needs it built: run `cargo xtask image` \
             (`cargo xtask test` does); {}: {e}",
            tag.display()
        )
    });
    reference.trim().to_string()
}

/// Fails naming the tool when podman or runc is missing.
fn require_podman_and_runc() {
    for tool in ["podman", "runc"] {
        let found = Command::new(tool).arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "this test runs the image with {tool}, which is not installed: `cargo xtask setup` \
             installs podman and runc"
        );
    }
}

fn daemonset() -> DaemonSet {
    let path = workspace().join("deploy/base/daemonset.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the kubelet would fill in for this pod on this node.
struct Placement<'a> {
    /// The container's name in podman.
    name: &'a str,
    /// The node's network namespace (`hostNetwork`).
    node_netns: &'a str,
    /// `spec.nodeName`.
    node_name: &'a str,
    /// The service account mount's source.
    service_account: &'a Path,
    /// The API server, for `KUBERNETES_SERVICE_HOST`/`_PORT`.
    api: SocketAddr,
}

/// The fields of the pod spec and of the container this test knows: each is
/// mapped to podman below, or shapes nothing a container runtime does (where
/// the pod is scheduled, its probes, its declared ports, its service account,
/// which the test stands in for). A field not here fails the test, so a
/// manifest change cannot slip past the mapping.
const KNOWN_POD_FIELDS: [&str; 9] = [
    "containers",
    "dnsPolicy",
    "hostNetwork",
    "nodeSelector",
    "priorityClassName",
    "serviceAccountName",
    "terminationGracePeriodSeconds",
    "tolerations",
    "volumes",
];
const KNOWN_CONTAINER_FIELDS: [&str; 10] = [
    "args",
    "env",
    "image",
    "livenessProbe",
    "name",
    "ports",
    "readinessProbe",
    "resources",
    "securityContext",
    "volumeMounts",
];
/// The label of every container this test starts.
const TEST_LABEL: &str = "podwall.test=image";

/// Fails naming the keys of `object` not in `known`.
fn only_known_fields(what: &str, object: &impl serde::Serialize, known: &[&str]) {
    let value = serde_json::to_value(object).unwrap_or_else(|e| panic!("{e}"));
    let unknown: Vec<&String> = value
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(|key| !known.contains(&key.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "the {what} sets {unknown:?}, which this test does not map to podman"
    );
}

/// `podman run` flags for the DaemonSet's one container, from the manifest:
/// network, environment, security context, memory limit, mounts; then the
/// image. Panics on a field this mapping does not know (`only_known_fields`).
fn podman_flags(daemonset: &DaemonSet, placement: &Placement<'_>) -> (Vec<String>, Container) {
    let spec = daemonset
        .spec
        .template
        .spec
        .as_ref()
        .unwrap_or_else(|| panic!("the DaemonSet has no pod spec"));
    only_known_fields("pod spec", spec, &KNOWN_POD_FIELDS);
    assert_eq!(
        spec.host_network,
        Some(true),
        "the agent runs on the host network"
    );
    assert!(
        spec.init_containers.is_none(),
        "init containers are not mapped"
    );
    let [container] = spec.containers.as_slice() else {
        panic!(
            "one container is mapped, the DaemonSet has {}",
            spec.containers.len()
        );
    };
    only_known_fields("container", container, &KNOWN_CONTAINER_FIELDS);
    let mut flags: Vec<String> = vec![
        // Every test container carries it, so a run sweeps what a killed one left.
        "--label".into(),
        TEST_LABEL.into(),
        "--name".into(),
        placement.name.into(),
        "--network".into(),
        format!("ns:/run/netns/{}", placement.node_netns),
        // Logs in a file, as the kubelet keeps them (journald may be absent).
        "--log-driver".into(),
        "k8s-file".into(),
        // Kubernetes adds no tmpfs to a read-only root; podman would.
        "--read-only-tmpfs=false".into(),
        // This machine's hard limits are below podman's defaults.
        "--ulimit".into(),
        "nofile=1024:1024".into(),
        "--ulimit".into(),
        "nproc=1024:1024".into(),
        // What the kubelet adds to every pod.
        "-v".into(),
        format!(
            "{}:{SERVICE_ACCOUNT_MOUNT}:ro",
            placement.service_account.display()
        ),
        "-e".into(),
        format!("KUBERNETES_SERVICE_HOST={}", placement.api.ip()),
        "-e".into(),
        format!("KUBERNETES_SERVICE_PORT={}", placement.api.port()),
    ];
    for env in container.env.iter().flatten() {
        let value = match (&env.value, &env.value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("spec.nodeName") => placement.node_name.to_string(),
                other => panic!("env {}: {other:?} is not mapped", env.name),
            },
            other => panic!("env {}: {other:?} is not mapped", env.name),
        };
        flags.extend(["-e".into(), format!("{}={value}", env.name)]);
    }
    let security = container
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("the agent's container has no securityContext"));
    assert_ne!(
        security.privileged,
        Some(true),
        "a privileged container is not mapped"
    );
    let capabilities = security
        .capabilities
        .as_ref()
        .unwrap_or_else(|| panic!("no capabilities in the securityContext"));
    for dropped in capabilities.drop.iter().flatten() {
        flags.extend(["--cap-drop".into(), dropped.clone()]);
    }
    for added in capabilities.add.iter().flatten() {
        flags.extend(["--cap-add".into(), added.clone()]);
    }
    if security.allow_privilege_escalation == Some(false) {
        flags.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    match security.seccomp_profile.as_ref().map(|p| p.type_.as_str()) {
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => flags.extend(["--security-opt".into(), "seccomp=unconfined".into()]),
        Some(other) => panic!("seccompProfile {other} is not mapped"),
    }
    if security.read_only_root_filesystem == Some(true) {
        flags.push("--read-only".into());
    }
    if let Some(user) = security.run_as_user {
        flags.extend(["--user".into(), user.to_string()]);
    }
    if let Some(memory) = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|limits| limits.get("memory"))
    {
        let quantity = memory.0.as_str();
        let megabytes = quantity
            .strip_suffix("Mi")
            .unwrap_or_else(|| panic!("memory limit {quantity}: only Mi is mapped"));
        flags.extend(["--memory".into(), format!("{megabytes}m")]);
    }
    for mount in container.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("volume {} is not declared", mount.name));
        let host = volume
            .host_path
            .as_ref()
            .unwrap_or_else(|| panic!("volume {}: only hostPath volumes are mapped", mount.name));
        if host.type_.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&host.path).unwrap_or_else(|e| panic!("{}: {e}", host.path));
        }
        let mut options = Vec::new();
        match mount.mount_propagation.as_deref() {
            None | Some("None") => {}
            Some("HostToContainer") => options.push("rslave"),
            Some(other) => panic!("mountPropagation {other} is not mapped"),
        }
        if mount.read_only == Some(true) {
            options.push("ro");
        }
        let suffix = if options.is_empty() {
            String::new()
        } else {
            format!(":{}", options.join(","))
        };
        flags.extend([
            "-v".into(),
            format!("{}:{}{suffix}", host.path, mount.mount_path),
        ]);
    }
    (flags, container.clone())
}

/// A container podman runs; removed (with `rm -f`) when dropped.
struct Running {
    name: String,
}

impl Running {
    /// Its state and the end of its log.
    fn logs(&self) -> String {
        let state = podman(&[
            "inspect",
            "--format",
            "{{.State.Status}} exit={{.State.ExitCode}} {{.State.Error}}",
            &self.name,
        ]);
        let log = podman(&["logs", "--tail", "40", &self.name]);
        format!(
            "{}\n{}",
            state.unwrap_or_else(|e| e),
            log.unwrap_or_else(|e| e)
        )
    }

    /// Its main process's effective capabilities (CapEff), seen from the host.
    fn effective_capabilities(&self) -> u64 {
        let pid = podman(&["inspect", "--format", "{{.State.Pid}}", &self.name])
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = pid
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("the container's pid {pid:?}: {e}"));
        effective_capabilities(pid)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "--time", "0", &self.name]);
    }
}

/// Removes every container an earlier run of this test left (one killed
/// before its guard could): they would hold a lab's namespace and pins.
fn sweep_test_containers() {
    let filter = format!("label={TEST_LABEL}");
    let left = podman(&["ps", "--all", "--quiet", "--filter", &filter]).unwrap_or_default();
    for id in left.split_whitespace() {
        let _ = podman(&["rm", "-f", "--time", "0", id]);
    }
}

/// `podman --runtime runc ARGS`: stdout, or stdout and stderr as the error.
fn podman(args: &[&str]) -> Result<String, String> {
    let out = Command::new("podman")
        .args(["--runtime", "runc"])
        .args(args)
        .output()
        .map_err(|e| format!("podman {args:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "podman {args:?}: {}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Waits until `/readyz` at `addr` in `netns` answers 200; panics with the
/// container's log after `timeout`.
fn wait_ready(running: &Running, netns: &str, addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        last = get_in(netns, addr, "/readyz");
        if matches!(last, Some((200, _))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the agent's container is not ready after {timeout:?} (last /readyz: {last:?}); its log:\n{}",
        running.logs()
    );
}

/// The port of the container's `--metrics-addr`.
fn metrics_port(args: &[String]) -> u16 {
    args.iter()
        .position(|a| a == "--metrics-addr")
        .and_then(|i| args.get(i + 1))
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        .map(|addr| addr.port())
        .unwrap_or_else(|| panic!("the DaemonSet passes no --metrics-addr: {args:?}"))
}

#[test]
fn the_image_runs_as_the_daemonset_says_enforces_survives_a_kill_and_uninstalls() {
    support::require_root_and_bpf();
    require_podman_and_runc();
    let image = built_image();
    let node = Node::up_https(&[("web", "web"), ("db", "db"), ("other", "other")]);
    create_web_db_other(&node);
    let service_account = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    node.api
        .write_service_account(service_account.path(), TOKEN)
        .unwrap_or_else(|e| panic!("service account: {e}"));
    // A pin directory of its own (the DaemonSet's is `agent`): the only flag added.
    let instance = node.claim_instance_on(0, "image");
    let name = format!("podwall-{instance}");
    let placement = Placement {
        name: &name,
        node_netns: node.net.node_netns(),
        node_name: harness::NODE_NAME,
        service_account: service_account.path(),
        api: node.api.addr(),
    };
    let (flags, container) = podman_flags(&daemonset(), &placement);
    let mut args = container.args.clone().unwrap_or_default();
    args.extend(["--instance".to_string(), instance.clone()]);
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port(&args)));
    sweep_test_containers();
    let mut run: Vec<&str> = vec!["run", "--detach"];
    run.extend(flags.iter().map(String::as_str));
    run.push(&image);
    run.extend(args.iter().map(String::as_str));
    // Removed on drop, a failed start included.
    let running = Running { name: name.clone() };
    podman(&run).unwrap_or_else(|e| panic!("{e}"));
    let netns = node.net.node_netns().to_string();
    wait_ready(&running, &netns, metrics, Duration::from_secs(60));

    let wanted: u64 = REQUIRED_CAPABILITIES
        .iter()
        .map(|cap| 1u64 << capability_number(cap))
        .sum();
    let effective = running.effective_capabilities();
    assert_eq!(
        effective, wanted,
        "the container's agent runs with exactly {REQUIRED_CAPABILITIES:?} (CapEff {effective:#x})"
    );
    assert_eq!(
        node.api.authorization().as_deref(),
        Some(format!("Bearer {TOKEN}").as_str()),
        "the agent reaches the API server with the service account's token (in-cluster)"
    );
    node.expect(
        "the image enforces",
        &[("web", "db", true), ("other", "db", false)],
    );

    // `kubectl exec ds/podwall -- policy-agent flows`.
    let mut exec = Command::new("podman");
    exec.args(["--runtime", "runc", "exec", &name, "policy-agent"])
        .args(first_drop_args(&instance));
    assert_names_other_to_db(&first_drop_from_other(&node, &instance, exec));
    // `kubectl exec ds/podwall -- policy-agent explain --node --in-cluster ...`:
    // the node's tables beside the cluster read with the service account.
    explain_node_agrees(&instance, |args| {
        Command::new("podman")
            .args(["--runtime", "runc", "exec", &name, "policy-agent"])
            .args(args)
            .arg("--in-cluster")
            .output()
            .unwrap_or_else(|e| panic!("podman exec: {e}"))
    });

    podman(&["kill", &name]).unwrap_or_else(|e| panic!("{e}"));
    node.expect(
        "enforcement kept while the container is down",
        &[("web", "db", true), ("other", "db", false)],
    );
    podman(&["start", &name]).unwrap_or_else(|e| panic!("{e}"));
    wait_ready(&running, &netns, metrics, Duration::from_secs(60));
    node.relabel("other", "web");
    node.expect(
        "the restarted agent follows the API server",
        &[("other", "db", true)],
    );
    node.relabel("other", "other");
    node.expect("and enforces again", &[("other", "db", false)]);

    // Delete the DaemonSet, then take enforcement off with the image's uninstall.
    podman(&["rm", "-f", "--time", "0", &name]).unwrap_or_else(|e| panic!("{e}"));
    let uninstall_name = format!("{name}-uninstall");
    let uninstall_placement = Placement {
        name: &uninstall_name,
        ..placement
    };
    let (flags, _) = podman_flags(&daemonset(), &uninstall_placement);
    let mut uninstall: Vec<&str> = vec!["run", "--rm"];
    uninstall.extend(flags.iter().map(String::as_str));
    uninstall.extend([image.as_str(), "uninstall", "--instance", &instance]);
    let said = podman(&uninstall).unwrap_or_else(|e| panic!("{e}"));
    assert!(said.contains("programs detached"), "{said}");
    assert!(
        !pin_dir(&instance).exists(),
        "uninstall leaves {}",
        pin_dir(&instance).display()
    );
    node.expect(
        "nothing enforces after uninstall",
        &[("web", "db", true), ("other", "db", true)],
    );
}

/// Every file under `dir`, as absolute paths inside it.
fn files_under(dir: &Path, prefix: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        let inside = prefix.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            files_under(&entry.path(), &inside, found);
        } else {
            found.push(inside);
        }
    }
}

#[test]
fn the_image_holds_the_agent_its_object_and_the_agents_libraries_only() {
    support::require_root_and_bpf();
    require_podman_and_runc();
    let image = built_image();
    /// Unmounts the image, even when the test fails.
    struct Mounted<'a>(&'a str);
    impl Drop for Mounted<'_> {
        fn drop(&mut self) {
            let _ = podman(&["image", "unmount", self.0]);
        }
    }
    let root = podman(&["image", "mount", &image]).unwrap_or_else(|e| panic!("{e}"));
    let mounted = Mounted(&image);
    let mut files = Vec::new();
    files_under(Path::new(root.trim()), Path::new("/"), &mut files);
    drop(mounted);
    files.sort();
    let (ours, runtime): (Vec<&PathBuf>, Vec<&PathBuf>) = files.iter().partition(|f| {
        ["/usr/bin/policy-agent", "/usr/lib/podwall/policy-ebpf.o"]
            .contains(&f.to_str().unwrap_or_default())
    });
    assert_eq!(ours.len(), 2, "the agent and its object: {files:?}");
    assert!(
        !runtime.is_empty()
            && runtime.iter().all(|f| {
                let name = f.to_string_lossy();
                (name.starts_with("/lib/") || name.starts_with("/lib64/")) && name.contains(".so")
            }),
        "besides them only shared libraries and the loader: {files:?}"
    );
}

#[test]
fn the_images_agent_has_the_node_agents_commands_and_not_the_workstation_tools() {
    support::require_root_and_bpf();
    require_podman_and_runc();
    let image = built_image();
    // This machine's hard limits are below podman's defaults.
    let run = [
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    let help = podman(&[&run[..], &[&image, "--help"]].concat()).unwrap_or_else(|e| panic!("{e}"));
    for command in ["run", "uninstall", "flows", "explain"] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(command)),
            "the shipped agent lacks `{command}`:\n{help}"
        );
    }
    for tool in ["lab", "simulate", "diff", "bench", "e2e"] {
        let refused = podman(&[&run[..], &[&image, tool, "--help"]].concat());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("unrecognized subcommand")),
            "the shipped agent should not carry `{tool}`: {refused:?}"
        );
    }
}
