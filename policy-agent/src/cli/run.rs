//! `policy-agent run`: the node agent (what the DaemonSet runs), and
//! `policy-agent uninstall`: removing its pinned datapath on purpose.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Args;

use policy_common::config::Config;

use super::datapath::DatapathArgs;
use crate::{
    agent::{
        http::HttpLimits,
        lock::{InstanceLock, LockError},
        run::{pin_dir, run, RunOptions},
        DEFAULT_INTERFACE_PREFIXES, DEFAULT_METRICS_ADDR, DEFAULT_POD_BRIDGES,
    },
    dataplane::Datapath,
    source::api_server::WatchOptions,
    telemetry::flows::FlowPaths,
};

/// Arguments of `run`.
#[derive(Args)]
pub struct RunArgs {
    /// This node's name, as pods' spec.nodeName says it (the DaemonSet passes
    /// spec.nodeName through NODE_NAME).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// A kubeconfig file; without it the in-cluster service account, else
    /// $KUBECONFIG or ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its current one (with or without
    /// --kubeconfig, as kubectl takes it).
    #[arg(long)]
    context: Option<String>,
    /// Address and port of /metrics, /healthz and /readyz. Port 9978: not
    /// Prometheus' own 9090, nor one the usual node agents take (Calico Felix
    /// 9091/9099, Cilium 9962-9965, node-exporter 9100, kube-proxy 10249/10256).
    #[arg(long, env = "PODWALL_METRICS_ADDR", default_value = DEFAULT_METRICS_ADDR)]
    metrics_addr: SocketAddr,
    /// Connections /metrics, /healthz and /readyz keep open at once; one more
    /// closes the oldest.
    #[arg(long, default_value_t = HttpLimits::default().max_connections)]
    http_max_connections: usize,
    /// Seconds a client of that endpoint has to send a request's head, after
    /// connecting and after each response (read and idle timeout).
    #[arg(long, default_value_t = HttpLimits::default().header_timeout.as_secs())]
    http_header_timeout_s: u64,
    /// Seconds a connection to that endpoint lives at most.
    #[arg(long, default_value_t = HttpLimits::default().max_age.as_secs())]
    http_max_age_s: u64,
    /// Name of this agent's pin directory, /sys/fs/bpf/podwall/v<ABI>/<instance>.
    #[arg(long, default_value = "agent", value_parser = parse_instance)]
    instance: String,
    /// Put every policy in audit mode: nothing is dropped; would-be drops are
    /// counted and reported.
    #[arg(long)]
    audit: bool,
    /// The eBPF object (default: next to the binary or the workspace build).
    #[arg(long, env = "PODWALL_BPF_OBJECT")]
    bpf_object: Option<PathBuf>,
    /// Interface name prefixes attached the moment they appear, before their pod
    /// is known (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_INTERFACE_PREFIXES.map(String::from))]
    interface_prefix: Vec<String>,
    /// Bridges whose veth ports are pods' from the start (comma-separated); a bridge
    /// a local pod's route goes through is one too. Veths of any other bridge (a
    /// container runtime's, e.g. docker0 or podman0) are never attached on sight.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_POD_BRIDGES.map(String::from))]
    pod_bridge: Vec<String>,
    /// The longest delay between API server retries, in milliseconds (tests
    /// shorten it to see recovery quickly).
    #[arg(long, hide = true, default_value_t = 30_000)]
    api_backoff_max_ms: u64,
    #[command(flatten)]
    datapath: DatapathArgs,
}

/// Arguments of `uninstall`.
#[derive(Args)]
pub struct UninstallArgs {
    /// The agent instance whose pinned datapath to remove.
    #[arg(long, default_value = "agent", value_parser = parse_instance)]
    instance: String,
    /// If an agent runs this instance, stop it first (SIGTERM, then wait for it to
    /// exit) instead of refusing. A DaemonSet restarts its agent, which installs
    /// again: delete the DaemonSet first.
    #[arg(long)]
    stop_agent: bool,
}

/// How long `uninstall --stop-agent` waits for the agent to exit.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// Runs the agent until SIGTERM or SIGINT; the pinned datapath keeps enforcing
/// after it exits. `kernel_debug` (`-vv`) loads the classifiers with their debug
/// channel on.
pub fn run_agent(args: RunArgs, kernel_debug: bool) -> anyhow::Result<()> {
    let options = RunOptions {
        node_name: args.node_name,
        kubeconfig: args.kubeconfig,
        context: args.context,
        metrics_addr: args.metrics_addr,
        http_limits: HttpLimits {
            max_connections: args.http_max_connections,
            header_timeout: Duration::from_secs(args.http_header_timeout_s),
            max_age: Duration::from_secs(args.http_max_age_s),
        },
        instance: args.instance,
        audit: args.audit,
        bpf_object: args.bpf_object,
        interface_prefixes: args.interface_prefix,
        pod_bridges: args.pod_bridge,
        watch: WatchOptions {
            backoff_min: Duration::from_millis(args.api_backoff_max_ms.min(800)),
            backoff_max: Duration::from_millis(args.api_backoff_max_ms),
        },
        datapath: args.datapath.config(Config::DEFAULT),
        kernel_debug,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Listening from the start: a SIGTERM during start-up (loading, adopting)
        // ends the agent cleanly instead of killing it half way.
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        let shutdown = async move {
            let mut term = term;
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        run(options, shutdown).await.map_err(anyhow::Error::from)
    })?;
    Ok(())
}

/// Removes the pinned datapath of `instance`: programs come off every pod
/// interface, and the maps go. Refuses while an agent runs the instance (it would
/// attach again at its next sync) unless `--stop-agent`; holds the instance lock
/// while it removes, so no agent starts half way.
pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<()> {
    let lock = if args.stop_agent {
        InstanceLock::acquire_stopping_holder(&args.instance, STOP_PATIENCE)
    } else {
        InstanceLock::acquire(&args.instance)
    };
    let lock = match lock {
        Ok(lock) => lock,
        Err(error @ LockError::Busy { .. }) => bail!(
            "{error}: refusing to take enforcement off under a running agent (it would attach again); \
             stop it first (a DaemonSet: delete it) or pass --stop-agent"
        ),
        Err(error) => return Err(error.into()),
    };
    let dir = pin_dir(&args.instance);
    let removed = Datapath::uninstall(&dir)?;
    // What `policy-agent flows` read to name the datapath's events.
    let names = FlowPaths::system().names_file(&args.instance);
    if let Err(error) = std::fs::remove_file(&names) {
        if error.kind() != std::io::ErrorKind::NotFound {
            return Err(error).with_context(|| format!("removing {}", names.display()));
        }
    }
    lock.remove_file();
    if removed {
        println!(
            "removed podwall instance {}: programs detached, pins under {} deleted",
            args.instance,
            dir.display()
        );
    } else {
        println!("nothing pinned under {}", dir.display());
    }
    Ok(())
}

/// `--instance`: a name `agent::run::check_instance` accepts.
fn parse_instance(name: &str) -> Result<String, String> {
    crate::agent::run::check_instance(name).map(|()| name.to_string())
}
