//! Lab nodes for `policy-agent run`: the lab network (no datapath of its own) of
//! one node or several, the stand-in API server listening inside the (first) node
//! namespace, pods and namespaces as API objects, and probes that wait for the
//! expected verdicts. With several nodes, one agent runs per node, each with its
//! `--node-name`, against the one API server.

use std::{
    collections::BTreeMap,
    net::{IpAddr, TcpListener},
    path::PathBuf,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use policy_agent::{
    agent::run::pin_dir,
    dataplane::{Datapath, PinnedStats, Stats},
    lab::{
        netns::in_netns,
        probe::{Family, ProbeSpec},
        topology::{Layout, TopologyKind},
        LabNetwork,
    },
    model::{builders, ClusterState, ObjectRef, Protocol},
    telemetry::flows::publish::FlowPaths,
};
use serde_json::{json, Value};

use super::support::{
    agent::{free_port, AgentArgs, AgentProcess},
    apiserver::{ApiServer, Options},
};

/// The name of a one-node lab's node: pods name it in `spec.nodeName`. (Nodes of
/// a lab of several are `node-1`, `node-2`, ...)
pub const NODE_NAME: &str = "lab-node";
/// The namespace of every test pod whose name has none (`ns/name` names another).
pub const NAMESPACE: &str = "prod";
/// TCP port every pod listens on (new connections).
pub const TCP_PORT: u16 = 5432;
/// UDP port every pod echoes on (long-lived flows).
pub const UDP_PORT: u16 = 5433;
/// How long `expect` waits for verdicts to converge.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long one probe waits for its handshake.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// A lab of one node (or several) with its API server.
pub struct Node {
    /// One node at a time: agents loading BPF next to probes with short timeouts
    /// would make each other's timings.
    _serial: std::sync::MutexGuard<'static, ()>,
    /// The pods' namespaces and veths.
    pub net: LabNetwork,
    /// The stand-in API server, inside the node namespace.
    pub api: ApiServer,
    kubeconfig: tempfile::NamedTempFile,
    /// Each pod's object as last written, by name.
    pods: Mutex<BTreeMap<String, Value>>,
    /// Agent instances started, uninstalled on drop.
    instances: Mutex<Vec<String>>,
}

/// `kind: Namespace` with `labels`.
pub fn namespace_json(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// `kind: NetworkPolicy` selecting `pod_selector`, with `rest` merged into its spec.
pub fn policy_json(namespace: &str, name: &str, pod_selector: Value, rest: Value) -> Value {
    let mut spec = json!({"podSelector": pod_selector});
    if let (Some(spec), Some(rest)) = (spec.as_object_mut(), rest.as_object()) {
        spec.extend(rest.clone());
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// `db` in `NAMESPACE` admits `ports` (JSON port entries) from `app=web` pods only.
pub fn db_from_web(ports: Value) -> Value {
    policy_json(
        NAMESPACE,
        "db-from-web",
        json!({"matchLabels": {"app": "db"}}),
        json!({
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                "ports": ports
            }]
        }),
    )
}

/// Polls `condition` every 50 ms until it holds; panics naming `what` after
/// `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {timeout:?}");
}

impl Node {
    /// The network for `pods` (`(name, app label)`, in `NAMESPACE` unless the name
    /// is `namespace/name`, listening on `TCP_PORT` and echoing on `UDP_PORT`), with
    /// the pods in `later` not wired yet, and the API server; no objects yet.
    pub fn up(pods: &[(&str, &str)], later: &[&str]) -> Self {
        Self::up_with(pods, later, TopologyKind::Routed)
    }

    /// `up`, with the pods wired the way `kind` says.
    pub fn up_with(pods: &[(&str, &str)], later: &[&str], kind: TopologyKind) -> Self {
        Self::up_layout(pods, later, Layout::single(kind))
    }

    /// `up` on the nodes of `layout`: each pod on the node the lab places it on
    /// (in turn), which its object's `spec.nodeName` names. The API server listens
    /// on the first node's address, which every node reaches.
    pub fn up_layout(pods: &[(&str, &str)], later: &[&str], layout: Layout) -> Self {
        Self::up_serving(pods, later, layout, false)
    }

    /// `up` with the API server on HTTPS, for an agent that reaches it the
    /// in-cluster way (`ApiServer::write_service_account`).
    pub fn up_https(pods: &[(&str, &str)]) -> Self {
        Self::up_serving(pods, &[], Layout::single(TopologyKind::Routed), true)
    }

    fn up_serving(pods: &[(&str, &str)], later: &[&str], layout: Layout, https: bool) -> Self {
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = ClusterState::default();
        for (name, app) in pods {
            let key = Self::pod_ref(name);
            let pod = builders::pod(&key.namespace, &key.name)
                .labels([("app", *app)])
                .port(TCP_PORT, Protocol::Tcp)
                .port(UDP_PORT, Protocol::Udp)
                .build();
            state.pods.insert(pod.key.clone(), pod);
        }
        // The agent's pins need bpffs (a DaemonSet gets the host's as a volume).
        FlowPaths::system()
            .bpffs_mount()
            .ensure()
            .unwrap_or_else(|e| panic!("mounting bpffs: {e}"));
        let later: Vec<ObjectRef> = later.iter().map(|n| Self::pod_ref(n)).collect();
        let net = LabNetwork::up_layout(&state, &[], &later, layout)
            .unwrap_or_else(|e| panic!("lab network: {e}"));
        let bind = match net.nodes() {
            [_] => "127.0.0.1:0".to_string(),
            [first, ..] => format!("{}:0", first.addresses.v4),
            [] => panic!("a lab without nodes"),
        };
        let listener = in_netns(net.node_netns(), || TcpListener::bind(bind.as_str()))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("API server listener: {e}"));
        let api = if https {
            ApiServer::serve_https(listener, Options::default())
        } else {
            ApiServer::serve(listener, Options::default())
        }
        .unwrap_or_else(|e| panic!("stand-in API server: {e}"));
        let kubeconfig = api
            .write_kubeconfig()
            .unwrap_or_else(|e| panic!("kubeconfig: {e}"));
        let objects = pods
            .iter()
            .map(|(name, app)| {
                let node = node_name_of(&net, name);
                (name.to_string(), pod_json(name, app, &node))
            })
            .collect();
        Node {
            _serial: serial,
            net,
            api,
            kubeconfig,
            pods: Mutex::new(objects),
            instances: Mutex::new(Vec::new()),
        }
    }

    /// `namespace/name`, or `name` in `NAMESPACE`.
    pub fn pod_ref(name: &str) -> ObjectRef {
        match name.split_once('/') {
            Some((namespace, name)) => ObjectRef::new(namespace, name),
            None => ObjectRef::new(NAMESPACE, name),
        }
    }

    /// The pod's lab addresses as `status` lists them.
    pub fn status_with_ips(&self, name: &str) -> Value {
        let ips: Vec<IpAddr> = [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .map(|family| {
                self.net
                    .pod_address(&Self::pod_ref(name), family)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        json!({
            "phase": "Running",
            "podIP": ips[0].to_string(),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
        })
    }

    fn write_pod(&self, name: &str, edit: impl FnOnce(&mut Value), create: bool) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let object = pods
            .get_mut(name)
            .unwrap_or_else(|| panic!("no pod {name} in this node"));
        edit(object);
        if create {
            self.api.create_value(object.clone());
        } else {
            self.api.update_value(object.clone());
        }
    }

    /// Creates pod `name` running here with its lab addresses.
    pub fn create_pod(&self, name: &str) {
        let status = self.status_with_ips(name);
        self.write_pod(name, |pod| pod["status"] = status, true);
    }

    /// Creates pod `name` scheduled here but without an address yet (pending).
    pub fn create_pod_without_ip(&self, name: &str) {
        self.write_pod(
            name,
            |pod| pod["status"] = json!({"phase": "Pending"}),
            true,
        );
    }

    /// Gives pod `name` its addresses (as the kubelet reports them).
    pub fn set_pod_ip(&self, name: &str) {
        let status = self.status_with_ips(name);
        self.write_pod(name, |pod| pod["status"] = status, false);
    }

    /// Sets pod `name`'s `app` label.
    pub fn relabel(&self, name: &str, app: &str) {
        self.write_pod(
            name,
            |pod| pod["metadata"]["labels"]["app"] = json!(app),
            false,
        );
    }

    /// Wires pods named in `up`'s `later`, as the CNI does.
    pub fn connect(&mut self, names: &[&str]) {
        let pods: Vec<ObjectRef> = names.iter().map(|n| Self::pod_ref(n)).collect();
        self.net
            .connect(&pods)
            .unwrap_or_else(|e| panic!("wiring {names:?}: {e}"));
    }

    /// The pin directory of an agent instance this node started with `tag`.
    pub fn instance(&self, tag: &str) -> String {
        self.instance_on(0, tag)
    }

    /// The pin directory of the agent instance tagged `tag` on node `node`
    /// (0-based; in a one-node lab, `instance`).
    pub fn instance_on(&self, node: usize, tag: &str) -> String {
        if self.net.nodes().len() == 1 {
            format!("{}-{tag}", self.net.instance())
        } else {
            format!("{}-{tag}-n{}", self.net.instance(), node + 1)
        }
    }

    /// The instance tagged `tag` on node `node`, uninstalled when this lab is
    /// dropped (however its agent was started).
    pub fn claim_instance_on(&self, node: usize, tag: &str) -> String {
        let instance = self.instance_on(node, tag);
        let mut instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        if !instances.contains(&instance) {
            instances.push(instance.clone());
        }
        instance
    }

    /// Runs `policy-agent ARGS --kubeconfig <the stand-in's>` in the (first)
    /// node's namespace, where the stand-in API server listens, as a person on
    /// the node would; its output.
    pub fn run_cli(&self, args: &[&str]) -> std::process::Output {
        let netns = &self.net.nodes()[0].netns;
        super::support::agent::in_node(netns)
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig.path())
            .output()
            .unwrap_or_else(|e| panic!("policy-agent {args:?}: {e}"))
    }

    /// Starts `policy-agent run` for this node, pin instance named after `tag`.
    pub fn start_agent(&self, tag: &str) -> AgentProcess {
        self.start_agent_with(tag, |_| {})
    }

    /// Starts `policy-agent run` on node `node` (0-based) with that node's
    /// `--node-name`, pin instance named after `tag` and the node.
    pub fn start_agent_on(&self, node: usize, tag: &str) -> AgentProcess {
        self.start_agent_on_with(node, tag, |_| {})
    }

    /// `start_agent`, letting `adjust` change the command (privileges).
    pub fn start_agent_with(
        &self,
        tag: &str,
        adjust: impl FnOnce(&mut std::process::Command),
    ) -> AgentProcess {
        self.start_agent_on_with(0, tag, adjust)
    }

    /// `start_agent_on`, letting `adjust` change the command.
    fn start_agent_on_with(
        &self,
        node: usize,
        tag: &str,
        adjust: impl FnOnce(&mut std::process::Command),
    ) -> AgentProcess {
        let lab_node = self
            .net
            .nodes()
            .get(node)
            .unwrap_or_else(|| panic!("the lab has no node {}", node + 1));
        let node_name = if self.net.nodes().len() == 1 {
            NODE_NAME.to_string()
        } else {
            lab_node.name.clone()
        };
        let instance = self.claim_instance_on(node, tag);
        let args = AgentArgs {
            node_name: &node_name,
            kubeconfig: self.kubeconfig.path(),
            instance: &instance,
            metrics_port: free_port(&lab_node.netns),
            extra: vec!["--api-backoff-max-ms".into(), "500".into()],
        };
        AgentProcess::start_with(&lab_node.netns, &args, adjust)
    }

    /// Waits until the agent instance `tag` has pinned links on `pod`'s veth.
    pub fn wait_attached_by(&self, tag: &str, pod: &str) {
        let interface = self
            .net
            .host_interface(&Self::pod_ref(pod))
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string();
        let index = in_netns(self.net.node_netns(), || {
            nix::net::if_::if_nametoindex(interface.as_str())
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("no veth {interface}: {e}"));
        let pin: PathBuf = pin_dir(&self.instance(tag))
            .join("links")
            .join(format!("{index}-ingress"));
        eventually(
            &format!("the agent attaches to {interface} ({})", pin.display()),
            Duration::from_secs(10),
            || pin.exists(),
        );
    }

    /// The verdict counters of the agent instance tagged `tag` (from its pins).
    pub fn stats(&self, tag: &str) -> Stats {
        self.stats_on(0, tag)
    }

    /// The verdict counters of the agent instance tagged `tag` on node `node`.
    pub fn stats_on(&self, node: usize, tag: &str) -> Stats {
        let path = pin_dir(&self.instance_on(node, tag))
            .join("maps")
            .join("STATS");
        PinnedStats::open(&path)
            .and_then(|stats| stats.stats())
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// Pod `name`'s network namespace.
    pub fn pod_netns(&self, name: &str) -> String {
        self.net
            .pod_netns(&Self::pod_ref(name))
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    }

    /// Pod `name`'s lab address of `family`.
    pub fn pod_ip(&self, name: &str, family: Family) -> IpAddr {
        self.net
            .pod_address(&Self::pod_ref(name), family)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `wait_attached_by` for the instance tagged `late`.
    pub fn wait_attached(&self, pod: &str) {
        self.wait_attached_by("late", pod);
    }

    /// Probes each `(from, to, allowed)` on `TCP_PORT` (IPv4) until all get the
    /// expected verdict; panics with the last results after `PATIENCE`.
    pub fn expect(&self, what: &str, cases: &[(&str, &str, bool)]) {
        let specs: Vec<ProbeSpec> = cases
            .iter()
            .map(|(from, to, _)| ProbeSpec {
                from: Self::pod_ref(from),
                to: Self::pod_ref(to),
                port: TCP_PORT,
                protocol: Protocol::Tcp,
            })
            .collect();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let results = self
                .net
                .probe(&specs, Family::Ipv4, PROBE_TIMEOUT)
                .unwrap_or_else(|e| panic!("probe: {e}"));
            let wrong: Vec<String> = cases
                .iter()
                .zip(&results)
                .filter(|((_, _, want), got)| got.allowed != *want)
                .map(|((from, to, want), _)| {
                    format!(
                        "{from} -> {to} should be {}",
                        if *want { "allowed" } else { "denied" }
                    )
                })
                .collect();
            if wrong.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: after {PATIENCE:?}: {}",
                wrong.join("; ")
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        for instance in instances.iter() {
            if let Err(error) = Datapath::uninstall(&pin_dir(instance)) {
                eprintln!("could not remove the pins of {instance}: {error}");
            }
            // The lock and the names of its events.
            let _ = std::fs::remove_dir_all(FlowPaths::system().names_root().join(instance));
        }
    }
}

/// The node pod `name` runs on, as its `spec.nodeName` says: `NODE_NAME` in a
/// one-node lab, else the lab node's name.
fn node_name_of(net: &LabNetwork, name: &str) -> String {
    if net.nodes().len() == 1 {
        return NODE_NAME.to_string();
    }
    net.node_of(&Node::pod_ref(name))
        .map(|node| node.name.clone())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A pod object (`name` as `Node::pod_ref` reads it) scheduled to `node`,
/// without status.
pub fn pod_json(name: &str, app: &str, node: &str) -> Value {
    let key = Node::pod_ref(name);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": key.name, "namespace": key.namespace, "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "app",
                "image": "registry.invalid/app",
                "ports": [
                    {"containerPort": TCP_PORT, "protocol": "TCP"},
                    {"containerPort": UDP_PORT, "protocol": "UDP"}
                ]
            }]
        },
    })
}
