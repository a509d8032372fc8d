//! The memory of the whole agent (a step of `bench agent`, or alone with
//! `--memory-only`): the stand-in API server serves the synthetic cluster as API
//! objects (`bench::api_objects`; 10k pods on 100 nodes, 1k policies, 100
//! namespaces and 2k Services by default), a real `policy-agent run` for the
//! benchmarked node watches it from a scratch network namespace (`scratch`), and
//! once it is ready and has settled, its resident set and the BPF map memory it
//! holds are read from `/proc` (`proc`). Each of the node's 100 pods has a veth
//! with a route to its address, which the agent attaches to.

mod proc;
pub mod report;
mod scratch;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use self::scratch::ScratchNode;
pub use self::{
    proc::{MapMemory, Resident},
    report::MemoryReport,
};
use super::super::{api_objects::ApiObjects, cluster, cluster::ClusterSpec, BenchError};

/// What the memory step serves and how long it waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryOptions {
    /// The cluster's pods, policies and namespaces.
    pub spec: ClusterSpec,
    /// Services in the cluster, spread evenly over the namespaces (at least one
    /// per app: five per namespace).
    pub services: usize,
    /// How long the agent runs after it is ready before it is measured.
    pub settle: Duration,
    /// How long it may take to become ready.
    pub ready_timeout: Duration,
    /// The `policy-agent` binary to run as the agent (for one built as the
    /// DaemonSet's image has it, without lab and bench); else the benchmark's own.
    pub agent: Option<PathBuf>,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            spec: ClusterSpec::new(10_000, 1_000),
            services: 2_000,
            settle: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(180),
            agent: None,
        }
    }
}

impl MemoryOptions {
    /// Services per namespace: `services` over the namespaces, rounded up.
    pub fn services_per_namespace(&self) -> Result<usize, BenchError> {
        let namespaces = self.spec.namespaces.max(1);
        let per_namespace = self.services.div_ceil(namespaces);
        if !(cluster::APP_SERVICES..=cluster::MAX_SERVICES_PER_NAMESPACE).contains(&per_namespace) {
            return Err(BenchError::Option {
                option: "memory-services",
                message: format!(
                    "{} Services over {namespaces} namespaces is {per_namespace} per namespace; \
                     it must be {} to {}",
                    self.services,
                    cluster::APP_SERVICES,
                    cluster::MAX_SERVICES_PER_NAMESPACE
                ),
            });
        }
        Ok(per_namespace)
    }
}

/// Serves the cluster `options` describes, runs `options.agent` or else `agent`
/// (`policy-agent`, with the eBPF object `bpf_object`) against it and measures
/// it. Needs root.
pub fn run(
    options: &MemoryOptions,
    agent: &Path,
    bpf_object: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<MemoryReport, BenchError> {
    let state = cluster::generate_with_services(&options.spec, options.services_per_namespace()?);
    let objects = ApiObjects::of(&state)?;
    let mut node = ScratchNode::create(options.agent.as_deref().unwrap_or(agent))?;
    let local: Vec<_> = cluster::local_pods(&state)
        .iter()
        .filter_map(|key| state.pods.get(key))
        .flat_map(|pod| pod.ips.iter().copied())
        .collect();
    node.add_pod_interfaces(&local)?;
    let api = stand_in_apiserver::ApiServer::serve(node.listen()?, Default::default()).map_err(
        |source| BenchError::Io {
            what: "starting the stand-in API server".into(),
            source,
        },
    )?;
    progress(&format!(
        "memory: serving {} namespaces, {} pods, {} Services, {} NetworkPolicies from the stand-in API server",
        objects.namespaces.len(),
        objects.pods.len(),
        objects.services.len(),
        objects.policies.len()
    ));
    for namespace in &objects.namespaces {
        api.create(namespace);
    }
    for pod in &objects.pods {
        api.create(pod);
    }
    for service in &objects.services {
        api.create(service);
    }
    for policy in &objects.policies {
        api.create(policy);
    }
    let kubeconfig = api.write_kubeconfig().map_err(|source| BenchError::Io {
        what: "writing the stand-in's kubeconfig".into(),
        source,
    })?;
    let pid = node.start_agent(cluster::LOCAL_NODE, kubeconfig.path(), bpf_object)?;
    progress(&format!(
        "memory: policy-agent run (pid {pid}, log {}) watching it as {}",
        node.log.display(),
        cluster::LOCAL_NODE
    ));
    let ready_after = node.wait_ready(options.ready_timeout)?;
    progress(&format!(
        "memory: ready after {:.1} s; letting it settle for {} s",
        ready_after.as_secs_f64(),
        options.settle.as_secs()
    ));
    let settled = Instant::now();
    while settled.elapsed() < options.settle {
        node.check_running()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let resident = Resident::of(pid)?;
    let maps = proc::maps_of(pid)?;
    if !node.stop_agent() {
        tracing::warn!(log = %node.log.display(), "the agent did not exit cleanly on SIGTERM");
    }
    Ok(MemoryReport {
        spec: options.spec,
        services: objects.services.len(),
        local_pods: cluster::local_pods(&state).len(),
        ready_after,
        settle: options.settle,
        resident,
        maps,
    })
}
