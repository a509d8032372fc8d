//! Everything that can stop the lab, with the object it concerns.

use std::net::IpAddr;

use crate::dataplane::DataplaneError;

/// What can stop the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab creates namespaces and loads BPF programs.
    #[error("the lab needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF): run it as root")]
    NotRoot,
    /// Entering or opening a network namespace failed.
    #[error("network namespace {name}")]
    Netns {
        /// Namespace name.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Setting a sysctl inside a lab namespace failed.
    #[error("sysctl {key} in {netns}")]
    Sysctl {
        /// Namespace name.
        netns: String,
        /// Path under /proc/sys.
        key: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An `ip` or `nft` command failed.
    #[error("{command}: {message}")]
    Command {
        /// What was run.
        command: String,
        /// What it said.
        message: String,
    },
    /// An `ip` or `nft` command could not be started or fed its input.
    #[error("{command}: cannot {what}")]
    CommandIo {
        /// What was run.
        command: String,
        /// What was attempted (`run \`ip\` (install iproute2)`, `write its input`).
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A helper thread panicked.
    #[error("a lab thread panicked during: {what}")]
    Thread {
        /// What it was doing.
        what: String,
    },
    /// A node's conntrack sweep thread could not be started.
    #[error("node {node}: cannot start the conntrack sweep thread")]
    Sweep {
        /// The node's name.
        node: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A listener or probe socket could not be made.
    #[error("pod {pod}: cannot {what}")]
    Socket {
        /// The pod.
        pod: String,
        /// What was attempted.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// SCTP sockets need a kernel built with SCTP.
    #[error("SCTP cannot be probed: this kernel has no SCTP support (CONFIG_IP_SCTP)")]
    SctpUnavailable,
    /// A probe names a pod the lab does not have.
    #[error("pod {pod} is not in the lab")]
    UnknownPod {
        /// The pod.
        pod: String,
    },
    /// Two objects (pods, Services, the node) claim one address in their manifests.
    #[error("{claimant}: address {ip} is already used by {owner}")]
    DuplicateAddress {
        /// The second claimant, e.g. `pod ns/a` or `Service ns/s`.
        claimant: String,
        /// The address.
        ip: IpAddr,
        /// Who has it already.
        owner: String,
    },
    /// More pods or Services than a lab range holds.
    #[error("the lab address range {range} is exhausted")]
    AddressesExhausted {
        /// The range.
        range: String,
    },
    /// `--via-service` probes need a Service leading to each destination pod only.
    #[error(
        "no Service leads to only the destination pod for these probes (the lab does not \
         invent Services; add a ClusterIP Service in the pod's namespace whose selector \
         matches that pod alone and whose targetPort resolves to the port): {missing}"
    )]
    NoService {
        /// `ns/pod port/PROTO` of every destination without one.
        missing: String,
    },
    /// The lab cannot be built in the shape asked for (`topology::Layout`).
    #[error("cannot build this lab: {reason}")]
    Layout {
        /// Why.
        reason: String,
    },
    /// An update added or removed pods (the lab's pods are fixed when it starts).
    #[error("the lab's pods are fixed when it starts; this update changes them: {detail}")]
    PodsChanged {
        /// Which pods differ.
        detail: String,
    },
    /// The datapath failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// Reading the node namespace over rtnetlink failed.
    #[error("lab node namespace")]
    Node(#[from] crate::node::NodeError),
}
