//! Kubernetes objects (k8s-openapi types) -> the model: the ONE place that reads
//! k8s-openapi types, so every source (manifest files, the API server) applies the
//! same defaults and the same validation. `kinds` lists the converted kinds for the
//! sources' shared state builder.
//!
//! Defaults and checks follow the API server (defaults.go / validation.go of
//! `k8s.io/kubernetes/pkg/apis/{core,networking}`); the spec sentence each rule
//! implements is quoted above it. Bad input is never silently dropped or widened:
//! - input the model cannot hold (a port name that is not an IANA_SVC_NAME, a port
//!   out of range, an unknown protocol) is an error naming the field path
//!   (`spec.ingress[0].ports[1].port`);
//! - a bad ipBlock (a cidr or except that is not a CIDR, an except not strictly
//!   inside its cidr) becomes `Peer::Invalid`, and an endPort below its port or
//!   without a numeric port is kept as given; both match nothing, so the policy still
//!   isolates its pods (fail closed), and each is logged as a warning naming the
//!   policy and the field;
//! - a `podwall.io/mode` annotation other than `audit` or `enforce` enforces the
//!   policy (fail closed) and is logged as a warning naming the policy and value;
//!   a Namespace's `podwall.io/allow-tunnels` other than `"true"` or `"false"`
//!   allows nothing (fail closed) and is logged likewise;
//! - a NetworkPolicy that is an error has a fail-closed stand-in
//!   (`network_policy_fail_closed`) for sources that keep going (the API server's
//!   watch); the manifest loader stops instead;
//! - an object over a cap (`caps`: too many rules, peers, ports, labels...) is an
//!   error too; its kind's fail-closed stand-in is in `kinds`.
//!
//! - a ClusterNetworkPolicy (a CRD: no k8s-openapi type; its wire shape is read in
//!   `cluster_network_policy` alone) follows the same pattern: entries the API
//!   server would reject become `Invalid` and fail closed, the rest is an error
//!   with a fail-closed stand-in (`cluster_network_policy_fail_closed`).
//!
//! May import: `crate::model`, k8s-openapi, ipnet, tracing (those warnings),
//! serde, serde_json and serde_path_to_error (the ClusterNetworkPolicy wire shape).
//! Nothing else of this crate.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::{
    api::core::v1 as core,
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};

use crate::model::{
    ContainerPort, Labels, Namespace, ObjectRef, Pod, PortRef, Protocol, SelectorOperator, Service,
    ServicePort, NAMESPACE_NAME_LABEL,
};

/// Why a Kubernetes object could not be converted. Every variant carries the path of
/// the offending field, relative to the object (`spec.ingress[0].from[1].ipBlock`),
/// so the message tells the user exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A field the model cannot do without (e.g. `metadata.name`) is absent or empty.
    #[error("{field}: required field is missing")]
    Missing {
        /// Path of the missing field.
        field: String,
    },
    /// An IP address does not parse.
    #[error("{field}: {value:?} is not an IPv4 or IPv6 address")]
    InvalidIp {
        /// Path of the field.
        field: String,
        /// The text found.
        value: String,
    },
    /// A peer sets ipBlock together with podSelector or namespaceSelector.
    #[error(
        "{field}: ipBlock cannot be combined with podSelector or namespaceSelector in one \
         peer; write them as separate peers"
    )]
    IpBlockWithSelector {
        /// Path of the peer.
        field: String,
    },
    /// A peer sets none of podSelector, namespaceSelector and ipBlock.
    #[error("{field}: a peer must set podSelector, namespaceSelector or ipBlock")]
    EmptyPeer {
        /// Path of the peer.
        field: String,
    },
    /// A protocol other than `TCP`, `UDP` or `SCTP` (the API is case-sensitive).
    #[error("{field}: unsupported protocol {value:?}; use TCP, UDP or SCTP (upper case)")]
    InvalidProtocol {
        /// Path of the field.
        field: String,
        /// The text found.
        value: String,
    },
    /// A port number outside 1..=65535.
    #[error("{field}: {value} is not a port number (1-65535)")]
    PortOutOfRange {
        /// Path of the field.
        field: String,
        /// The number found.
        value: i64,
    },
    /// A port name that is not a valid IANA_SVC_NAME.
    #[error(
        "{field}: {value:?} is not a valid port name: {reason} (a name is 1-15 characters \
         of a-z, 0-9 and '-', with at least one letter)"
    )]
    InvalidPortName {
        /// Path of the field.
        field: String,
        /// The text found.
        value: String,
        /// Which rule of IANA_SVC_NAME it breaks.
        reason: &'static str,
    },
    /// A policyTypes entry other than `Ingress` or `Egress`.
    #[error("{field}: unknown policy type {value:?}; use Ingress or Egress")]
    InvalidPolicyType {
        /// Path of the entry.
        field: String,
        /// The text found.
        value: String,
    },
    /// A matchExpressions operator other than In, NotIn, Exists, DoesNotExist.
    #[error("{field}: unknown operator {value:?}; use In, NotIn, Exists or DoesNotExist")]
    InvalidOperator {
        /// Path of the operator.
        field: String,
        /// The text found.
        value: String,
    },
    /// In/NotIn without values, or Exists/DoesNotExist with values.
    #[error("{field}: operator {operator:?} {expected}")]
    SelectorValues {
        /// Path of the `values` field.
        field: String,
        /// The requirement's operator.
        operator: SelectorOperator,
        /// What that operator requires of its values.
        expected: &'static str,
    },
    /// A field does not have the shape of its type (for objects read as JSON:
    /// ClusterNetworkPolicy).
    #[error("{field}: {message}")]
    Malformed {
        /// Path of the field.
        field: String,
        /// What the deserializer said.
        message: String,
    },
    /// A value the API server's validation rejects (for ClusterNetworkPolicy, whose
    /// checks are the CRD schema's): out of range, not one of the allowed values,
    /// a list too long, not exactly one of a set of fields.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// Which rule it breaks, with the value found.
        reason: String,
    },
    /// The object holds more than podwall handles (`caps`).
    #[error("{field}: {what}")]
    OverCap {
        /// Path of the field (or `spec` for totals over the whole object).
        field: String,
        /// What is over which cap (`40000 rules, over the cap of 32768`).
        what: String,
    },
}

type Result<T> = std::result::Result<T, ConvertError>;

/// The Namespace annotation that lets its pods send encapsulated traffic, which
/// their egress hooks drop otherwise: `podwall.io/allow-tunnels: "true"`.
pub const ALLOW_TUNNELS_ANNOTATION: &str = "podwall.io/allow-tunnels";

/// Converts a Namespace. The API server always sets the label
/// `kubernetes.io/metadata.name` to the namespace's name, so it is set here too
/// (overriding any other value a manifest gives it). `allow_tunnels` comes from
/// `ALLOW_TUNNELS_ANNOTATION` (see `allow_tunnels`).
pub fn namespace(ns: &core::Namespace) -> Result<Namespace> {
    caps::namespace(ns)?;
    let name = required_name(&ns.metadata)?;
    let mut labels = Labels::from(ns.metadata.labels.clone().unwrap_or_default());
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
    let (allow_tunnels, warning) = allow_tunnels(&name, ns.metadata.annotations.as_ref());
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    Ok(Namespace {
        name,
        labels,
        allow_tunnels,
    })
}

/// Whether `annotations` of namespace `name` allow its pods to tunnel: only the
/// value `true` does. Any other value but `false` (`True`, `yes`, a typo) allows
/// nothing, since a mistyped annotation must never open a hole (fail closed), and
/// comes back as a warning naming the namespace and the value.
pub fn allow_tunnels(
    name: &str,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> (bool, Option<String>) {
    match annotations.and_then(|all| all.get(ALLOW_TUNNELS_ANNOTATION)) {
        None => (false, None),
        Some(value) if value == "true" => (true, None),
        Some(value) if value == "false" => (false, None),
        Some(value) => (
            false,
            Some(format!(
                "Namespace {name}: metadata.annotations[{ALLOW_TUNNELS_ANNOTATION}]: {value:?} \
                 is not \"true\" or \"false\"; its pods may not tunnel"
            )),
        ),
    }
}

/// Converts a Pod: labels, IPs (`status.podIPs`, else `status.podIP`; none once the
/// pod has terminated), node, hostNetwork and the ports of all containers (what
/// named policy ports resolve to). `source::api_server::trim` keeps exactly these fields.
pub fn pod(pod: &core::Pod) -> Result<Pod> {
    caps::pod(pod)?;
    let key = object_ref(&pod.metadata)?;
    let spec = pod.spec.as_ref();
    let mut ports = Vec::new();
    let containers = spec
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default();
    for (c, container) in containers.iter().enumerate() {
        for (p, port) in container.ports.iter().flatten().enumerate() {
            let field = format!("spec.containers[{c}].ports[{p}]");
            ports.push(ContainerPort {
                name: port.name.clone().filter(|name| !name.is_empty()),
                port: port_number(
                    port.container_port.into(),
                    &format!("{field}.containerPort"),
                )?,
                protocol: protocol(port.protocol.as_deref(), &format!("{field}.protocol"))?,
            });
        }
    }
    Ok(Pod {
        key,
        labels: Labels::from(pod.metadata.labels.clone().unwrap_or_default()),
        ips: pod_ips(pod.status.as_ref())?,
        node_name: spec.and_then(|spec| spec.node_name.clone()),
        host_network: spec.and_then(|spec| spec.host_network).unwrap_or(false),
        ports,
        finished: finished(pod.status.as_ref()),
    })
}

/// `status.podIPs` when it has entries (it holds both families of a dual-stack pod),
/// else `status.podIP`; an empty `podIP` means "not assigned yet". A pod whose
/// phase is `Succeeded` or `Failed` has none: its containers have stopped and its
/// sandbox is gone, but the API keeps its last IPs in the status, which the network
/// may already have given to a new pod (two claimants make an address no pod's).
fn pod_ips(status: Option<&core::PodStatus>) -> Result<Vec<IpAddr>> {
    let Some(status) = status else {
        return Ok(Vec::new());
    };
    if finished(Some(status)) {
        return Ok(Vec::new());
    }
    match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips
            .iter()
            .enumerate()
            .map(|(i, ip)| parse_ip(&ip.ip, &format!("status.podIPs[{i}].ip")))
            .collect(),
        _ => match status.pod_ip.as_deref() {
            None | Some("") => Ok(Vec::new()),
            Some(ip) => Ok(vec![parse_ip(ip, "status.podIP")?]),
        },
    }
}

/// Whether the pod's phase is `Succeeded` or `Failed`: stopped for good.
fn finished(status: Option<&core::PodStatus>) -> bool {
    status.is_some_and(|status| matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")))
}

/// Converts a Service: selector, cluster IP and ports with their target ports.
pub fn service(svc: &core::Service) -> Result<Service> {
    caps::service(svc)?;
    let key = object_ref(&svc.metadata)?;
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(Service {
            key,
            selector: None,
            cluster_ip: None,
            extra_ips: Vec::new(),
            ports: Vec::new(),
        });
    };
    // An empty selector is dropped by the API server's serialization (omitempty),
    // so `selector: {}` is a Service without a selector, not one selecting all pods.
    let selector = spec
        .selector
        .clone()
        .filter(|sel| !sel.is_empty())
        .map(Labels::from);
    // "None" marks a headless Service; "" means not allocated.
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => None,
        Some(ip) => Some(parse_ip(ip, "spec.clusterIP")?),
    };
    let extra_ips = extra_ips(svc, cluster_ip)?;
    let mut ports = Vec::new();
    for (i, sp) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        let port = port_number(sp.port.into(), &format!("{field}.port"))?;
        let target_field = format!("{field}.targetPort");
        // Defaulting: a targetPort of 0 or "" (or absent) is the Service port.
        let target_port = match &sp.target_port {
            None => PortRef::Number(port),
            Some(IntOrString::Int(0)) => PortRef::Number(port),
            Some(IntOrString::String(name)) if name.is_empty() => PortRef::Number(port),
            Some(IntOrString::Int(n)) => PortRef::Number(port_number((*n).into(), &target_field)?),
            Some(IntOrString::String(name)) => PortRef::Name(port_name(name, &target_field)?),
        };
        ports.push(ServicePort {
            name: sp.name.clone().filter(|name| !name.is_empty()),
            port,
            target_port,
            protocol: protocol(sp.protocol.as_deref(), &format!("{field}.protocol"))?,
        });
    }
    Ok(Service {
        key,
        selector,
        cluster_ip,
        extra_ips,
        ports,
    })
}

/// `Service::extra_ips` of `svc`: its other cluster IPs, external IPs and load
/// balancer ingress IPs (not those with `ipMode: Proxy`), without `cluster_ip`.
/// An address that does not parse is an error: dropping it would let a pod's
/// packets to it be decided as if it were no Service's.
pub fn extra_ips(svc: &core::Service, cluster_ip: Option<IpAddr>) -> Result<Vec<IpAddr>> {
    let spec = svc.spec.as_ref();
    let cluster_ips = spec
        .and_then(|s| s.cluster_ips.as_ref())
        .into_iter()
        .flatten()
        .filter(|ip| !matches!(ip.as_str(), "" | "None"))
        .map(|ip| (ip, "spec.clusterIPs"));
    let external = spec
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|ip| (ip, "spec.externalIPs"));
    let balanced = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|ingress| ingress.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|ingress| ingress.ip.as_ref())
        .map(|ip| (ip, "status.loadBalancer.ingress[].ip"));
    let mut out = Vec::new();
    for (text, field) in cluster_ips.chain(external).chain(balanced) {
        let ip = parse_ip(text, field)?;
        if Some(ip) != cluster_ip {
            out.push(ip);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub use cluster_network_policy::{
    cluster_network_policy, cluster_network_policy_fail_closed, deny_everything,
    ClusterNetworkPolicy,
};
pub use kinds::{conversion_error, over_cap_policy, ApiKind};
pub use network_policy::{
    label_selector, network_policy, network_policy_fail_closed, MODE_ANNOTATION,
};
pub use node::node;

/// `metadata.name`, required and non-empty.
fn required_name(meta: &ObjectMeta) -> Result<String> {
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(ConvertError::Missing {
            field: "metadata.name".to_string(),
        }),
    }
}

/// `namespace/name` of a namespaced object; no namespace means `default`, as
/// `kubectl apply` without `-n` would put it there.
fn object_ref(meta: &ObjectMeta) -> Result<ObjectRef> {
    let namespace = match meta.namespace.as_deref() {
        None | Some("") => "default",
        Some(ns) => ns,
    };
    Ok(ObjectRef::new(namespace, required_name(meta)?))
}

/// A protocol as the API spells it; absent means TCP. Unlike `Protocol::parse`
/// this is case-sensitive, because the API server rejects `tcp`.
fn protocol(text: Option<&str>, field: &str) -> Result<Protocol> {
    match text {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some("SCTP") => Ok(Protocol::Sctp),
        Some(other) => Err(ConvertError::InvalidProtocol {
            field: field.to_string(),
            value: other.to_string(),
        }),
    }
}

/// A port number in 1..=65535.
fn port_number(value: i64, field: &str) -> Result<u16> {
    u16::try_from(value)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| ConvertError::PortOutOfRange {
            field: field.to_string(),
            value,
        })
}

/// A port name, validated as IANA_SVC_NAME (RFC 6335), as the API server does.
fn port_name(name: &str, field: &str) -> Result<String> {
    let reason = if name.is_empty() || name.len() > 15 {
        Some("must be 1-15 characters long")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("may contain only lowercase letters, digits and '-'")
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        Some("must contain at least one letter")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must not begin or end with '-'")
    } else if name.contains("--") {
        Some("must not contain '--'")
    } else {
        None
    };
    match reason {
        None => Ok(name.to_string()),
        Some(reason) => Err(ConvertError::InvalidPortName {
            field: field.to_string(),
            value: name.to_string(),
            reason,
        }),
    }
}

fn parse_ip(text: &str, field: &str) -> Result<IpAddr> {
    text.parse().map_err(|_| ConvertError::InvalidIp {
        field: field.to_string(),
        value: text.to_string(),
    })
}

/// A CIDR, truncated to its network; `None` when `text` is not one.
fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>().ok().map(|net| net.trunc())
}

pub mod caps;
mod cluster_network_policy;
mod kinds;
mod network_policy;
mod node;
#[cfg(test)]
mod tests;
