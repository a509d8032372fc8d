//! `policy-agent run` put together: start-up checks, the pinned datapath (adopted
//! or loaded), the HTTP endpoints, the API server watch, the link watch and the
//! sync loop, until a shutdown signal. A shutdown leaves the pins enforcing.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use policy_common::config::Config;

use super::{
    conntrack,
    flows::FlowPublisher,
    health::Health,
    http::{self, HttpLimits},
    lock::{InstanceLock, LockError},
    metrics::Metrics,
    startup::{self, StartupError},
    sync::{self, SyncConfig, Syncer},
    versions,
};
use crate::{
    causes::causes,
    dataplane::{self, Adoption, Datapath, DataplaneError, LoadOptions},
    node::{LinkWatch, NodeError},
    source::api_server::{self as api_server, ClientError, WatchOptions},
    telemetry::flows::publish::FlowPaths,
};

/// How long the loop may go without a tick before `/healthz` fails.
const LIVENESS_THRESHOLD: Duration = Duration::from_secs(30);

/// What `policy-agent run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// This node's name (`--node-name` / `NODE_NAME`).
    pub node_name: String,
    /// A kubeconfig file; else in-cluster or inferred.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use, instead of its current one.
    pub context: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// What one client may hold of that server.
    pub http_limits: HttpLimits,
    /// The pin directory's name under `/sys/fs/bpf/podwall/v{ABI}/`.
    pub instance: String,
    /// Every policy in audit mode.
    pub audit: bool,
    /// The eBPF object; else the usual places (`dataplane::object::find`).
    pub bpf_object: Option<PathBuf>,
    /// Interface name prefixes attached on sight.
    pub interface_prefixes: Vec<String>,
    /// Bridges whose veth ports are pods' (`--pod-bridge`).
    pub pod_bridges: Vec<String>,
    /// Retry delays of the API server watches.
    pub watch: WatchOptions,
    /// The classifiers' settings (`CONFIG`): conntrack timeouts and limits, mark
    /// bits, whether tracked flows outlive a policy change that denies them.
    pub datapath: Config,
    /// Load the classifiers with the kernel debug channel on (`-vv`): their debug
    /// records are logged at debug level (`LoadOptions::kernel_debug`).
    pub kernel_debug: bool,
}

/// Why the agent could not start (once running, failures are logged, counted and
/// retried instead).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The kernel lacks something podwall needs.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// No API server client.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Loading, pinning or adopting the datapath failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// Netlink could not be opened.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Another agent runs this instance (two would write each other's banks), or
    /// its lock file could not be made.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The conntrack sweep thread could not start.
    #[error("starting the conntrack sweep thread")]
    Sweep(#[source] std::io::Error),
    /// No bpffs where the pins go.
    #[error("bpffs is not mounted at {0}: the pins that keep pods enforced across restarts live there; mount it on the host (`mount -t bpf bpf /sys/fs/bpf`) and give the agent a hostPath volume of it")]
    NoBpffs(PathBuf),
}

/// Checks an instance name (`--instance`): one path component of letters,
/// digits, `.`, `_` and `-`, not `.` or `..`, since it names directories under
/// `/sys/fs/bpf/podwall/v{ABI}` and `/run/podwall/v{ABI}` that are removed whole.
pub fn check_instance(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name == "." || name == ".." || !name.chars().all(allowed) {
        return Err(format!(
            "instance {name:?}: use letters, digits, '.', '_' and '-' (not '.' or '..')"
        ));
    }
    Ok(())
}

/// The pin directory of `instance`: `/sys/fs/bpf/podwall/v{ABI}/<instance>`.
pub fn pin_dir(instance: &str) -> PathBuf {
    FlowPaths::system().pins_root().join(instance)
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    startup::check_kernel()?;
    let object = match &options.bpf_object {
        Some(path) => path.clone(),
        None => dataplane::object::find()?,
    };
    let bpffs = FlowPaths::system().bpffs_mount();
    if !bpffs.is_mounted() {
        return Err(RunError::NoBpffs(bpffs.mount_point));
    }
    let _lock = InstanceLock::acquire(&options.instance)?;
    let pins = pin_dir(&options.instance);
    let load = LoadOptions {
        config: options.datapath,
        kernel_debug: options.kernel_debug,
        ..LoadOptions::default()
    };
    let (datapath, adoption) = Datapath::open_pinned(&object, &load, &pins)?;
    match adoption {
        Adoption::Fresh => tracing::info!(pins = %pins.display(), "datapath loaded and pinned"),
        Adoption::Adopted { interfaces } => tracing::info!(
            pins = %pins.display(),
            interfaces,
            "adopted the pinned datapath; it keeps enforcing the last state until the first sync"
        ),
    }
    let metrics = Arc::new(Metrics::new());
    let _sweep = conntrack::start(datapath.conntrack_sweeper()?, Arc::clone(&metrics))
        .map_err(RunError::Sweep)?;
    let health = Arc::new(Health::new(LIVENESS_THRESHOLD));
    // Served from a task of its own, bound (and re-bound after a failure) there:
    // enforcement never waits for the port.
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::run(
        options.metrics_addr,
        http::router(Arc::clone(&metrics), Arc::clone(&health)),
        options.http_limits,
        Arc::clone(&metrics),
        Arc::clone(&health),
        async {
            let _ = http_stopped.await;
        },
    ));
    let client =
        api_server::client(options.kubeconfig.as_deref(), options.context.as_deref()).await?;
    let watch = api_server::watch_cluster_with(client, options.watch.clone());
    let links = LinkWatch::open()?;
    let flows = FlowPublisher::new(&FlowPaths::system(), &options.instance, &datapath);
    // Once ready, another version's programs left on the pod interfaces go.
    let others = tokio::spawn(versions::remove_when_ready(
        FlowPaths::system(),
        options.instance.clone(),
        Arc::clone(&health),
    ));
    let syncer = Syncer::new(
        SyncConfig {
            node_name: options.node_name.clone(),
            audit: options.audit,
            interface_prefixes: options.interface_prefixes.clone(),
            pod_bridges: options.pod_bridges.clone(),
        },
        datapath,
        metrics,
        health,
        links.known(),
        flows,
    );
    tracing::info!(node = %options.node_name, "watching the API server");
    sync::run(syncer, watch.receiver(), links, shutdown).await;
    others.abort();
    let _ = stop_http.send(());
    if let Err(error) = server.await {
        tracing::warn!(error = %causes(&error), "the HTTP server task failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_instance;

    #[test]
    fn an_instance_is_one_plain_path_component() {
        for good in ["agent", "bench-memory-12", "pwlab.a_b"] {
            assert_eq!(check_instance(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(check_instance(bad).is_err(), "{bad:?}");
        }
    }
}
