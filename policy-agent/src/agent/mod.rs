//! The node agent (`policy-agent run`): what the sync loop decides and reports.
//!
//! - `plan`: pure: which pods are local, which interfaces to attach and detach,
//!   and what a pending interface (a pod's veth before its route is known) enforces;
//! - `metrics`: the Prometheus families the loop updates;
//! - `health`: liveness and readiness, with the reasons for not being ready;
//! - `notices`: identity conflicts and programs ahead of podwall's, reported
//!   while they last;
//! - `observe`: route lookups and links as `plan` takes them;
//! - `dataplane`: what the loop needs of the datapath, as a trait (faked in tests);
//! - `http`: `/metrics`, `/healthz`, `/readyz`;
//! - `lock`: the instance lock one running agent holds (and `uninstall` respects);
//! - `startup`: kernel features podwall cannot run without;
//! - `sync`: the loop: snapshots and link events in, a programmed datapath out;
//! - `conntrack`: the thread that removes tracked flows idle past their timeout;
//! - `flows`: the names of the datapath's events, for `policy-agent flows`;
//! - `versions`: removing the datapath another podwall version left, once ready;
//! - `run`: `policy-agent run` put together (datapath, endpoints, watches, loop).
//!
//! May import `model`, `policy`, `node`, `source` and `dataplane` (the agent is
//! where they meet); `plan` imports only `model` and `policy`.

pub mod conntrack;
pub mod dataplane;
mod exits;
pub mod flows;
pub mod health;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod notices;
mod observe;
pub mod plan;
pub mod run;
pub mod startup;
pub mod sync;
pub mod versions;

/// The Linux capabilities the agent needs, and the only ones the DaemonSet in
/// `deploy/` adds (after dropping all): `BPF` to load programs and create maps,
/// `NET_ADMIN` to attach TC programs (TCX links) to pod interfaces, `PERFMON` so
/// the verifier treats the loader as trusted: without it, loading the classifiers
/// fails ("pointer arithmetic with it prohibited for !root"; tried with
/// `setpriv --bounding-set -all,+bpf,+net_admin`). No `SYS_ADMIN`: bpffs is
/// mounted by the host and reached through a hostPath volume.
pub const REQUIRED_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];

/// Bridges whose veth ports are pods' from the start (`--pod-bridge`): the bridge
/// CNI's and flannel's `cni0`, kubenet's `cbr0`. A bridge a local pod's route goes
/// through is one too; the veths of any other bridge (`docker0`, `podman0`, a
/// runtime's own) are never attached on sight.
pub const DEFAULT_POD_BRIDGES: [&str; 2] = ["cni0", "cbr0"];
/// Where `/metrics`, `/healthz` and `/readyz` listen by default (`--metrics-addr`):
/// every address of the node (the DaemonSet runs on the host network, where
/// Prometheus and the kubelet reach it), port 9978, which is neither Prometheus'
/// own 9090 nor one the usual node agents take (Calico Felix 9091 and 9099, Typha
/// 9093 and 9098, cilium-agent 9962, its operator 9963, Envoy 9964, Hubble 9965,
/// node-exporter 9100, kube-proxy 10249 and 10256, the kubelet 10248 and 10250).
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9978";

/// Interface name prefixes the agent attaches to as soon as they appear
/// (`--interface-prefix`): veth (kindnet, bridge), cali (Calico), lxc (Cilium-style
/// names), pw (podwall's lab).
pub const DEFAULT_INTERFACE_PREFIXES: [&str; 4] = ["veth", "cali", "lxc", "pw"];
