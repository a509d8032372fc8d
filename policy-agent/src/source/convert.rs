//! Kubernetes objects (k8s-openapi types) -> the model: the ONE place that reads
//! k8s-openapi types, so every source (manifest files, later the API server) applies
//! the same defaults and the same validation.
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
//!   policy and the field.
//!
//! May import: `crate::model`, k8s-openapi, ipnet, tracing (those warnings).
//! Nothing else of this crate.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::{
    api::{core::v1 as core, networking::v1 as net},
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector as K8sSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use crate::model::{
    ContainerPort, LabelSelector, Namespace, NamespaceScope, NetworkPolicy, ObjectRef, Peer, Peers,
    Pod, PolicyPort, PolicyTypes, PortRef, Protocol, Rule, SelectorOperator, SelectorRequirement,
    Service, ServicePort, NAMESPACE_NAME_LABEL,
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
}

type Result<T> = std::result::Result<T, ConvertError>;

/// Converts a Namespace. The API server always sets the label
/// `kubernetes.io/metadata.name` to the namespace's name, so it is set here too
/// (overriding any other value a manifest gives it).
pub fn namespace(ns: &core::Namespace) -> Result<Namespace> {
    let name = required_name(&ns.metadata)?;
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
    Ok(Namespace { name, labels })
}

/// Converts a Pod: labels, IPs (`status.podIPs`, else `status.podIP`), node,
/// hostNetwork and the ports of all containers (what named policy ports resolve to).
pub fn pod(pod: &core::Pod) -> Result<Pod> {
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
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ips: pod_ips(pod.status.as_ref())?,
        node_name: spec.and_then(|spec| spec.node_name.clone()),
        host_network: spec.and_then(|spec| spec.host_network).unwrap_or(false),
        ports,
    })
}

/// `status.podIPs` when it has entries (it holds both families of a dual-stack pod),
/// else `status.podIP`; an empty `podIP` means "not assigned yet".
fn pod_ips(status: Option<&core::PodStatus>) -> Result<Vec<IpAddr>> {
    let Some(status) = status else {
        return Ok(Vec::new());
    };
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

/// Converts a Service: selector, cluster IP and ports with their target ports.
pub fn service(svc: &core::Service) -> Result<Service> {
    let key = object_ref(&svc.metadata)?;
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(Service {
            key,
            selector: None,
            cluster_ip: None,
            ports: Vec::new(),
        });
    };
    // An empty selector is dropped by the API server's serialization (omitempty),
    // so `selector: {}` is a Service without a selector, not one selecting all pods.
    let selector = spec.selector.clone().filter(|sel| !sel.is_empty());
    // "None" marks a headless Service; "" means not allocated.
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => None,
        Some(ip) => Some(parse_ip(ip, "spec.clusterIP")?),
    };
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
        ports,
    })
}

/// Converts a NetworkPolicy, applying the API server's defaults: policyTypes,
/// an absent podSelector selecting every pod, empty and absent lists folded.
pub fn network_policy(np: &net::NetworkPolicy) -> Result<NetworkPolicy> {
    let key = object_ref(&np.metadata)?;
    let default_spec = net::NetworkPolicySpec::default();
    let spec = np.spec.as_ref().unwrap_or(&default_spec);
    let pod_selector = optional_selector(spec.pod_selector.as_ref(), "spec.podSelector")?;
    let ingress = spec
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            rule(
                r.from.as_deref(),
                r.ports.as_deref(),
                &format!("spec.ingress[{i}]"),
                "from",
            )
        })
        .collect::<Result<_>>()?;
    let egress = spec
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            rule(
                r.to.as_deref(),
                r.ports.as_deref(),
                &format!("spec.egress[{i}]"),
                "to",
            )
        })
        .collect::<Result<_>>()?;
    let policy = NetworkPolicy {
        key,
        pod_selector,
        policy_types: policy_types(spec)?,
        ingress,
        egress,
    };
    for (field, reason) in entries_matching_nothing(&policy) {
        tracing::warn!(
            "NetworkPolicy {}: {field}: {reason}; this entry matches nothing, so the \
             pods the policy selects fail closed",
            policy.key
        );
    }
    Ok(policy)
}

/// `(field, reason)` of every entry of `policy` that matches nothing because the
/// API server would have rejected it: `Peer::Invalid` peers, and endPorts below
/// their port or without a numeric port.
fn entries_matching_nothing(policy: &NetworkPolicy) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (list, rules) in [("ingress", &policy.ingress), ("egress", &policy.egress)] {
        for (r, rule) in rules.iter().enumerate() {
            if let Peers::Only(peers) = &rule.peers {
                for peer in peers {
                    if let Peer::Invalid { field, reason } = peer {
                        found.push((field.clone(), reason.clone()));
                    }
                }
            }
            for (p, port) in rule.ports.iter().enumerate() {
                let field = || format!("spec.{list}[{r}].ports[{p}].endPort");
                match (&port.port, port.end_port) {
                    (_, None) => {}
                    (Some(PortRef::Number(first)), Some(end)) if end >= *first => {}
                    (Some(PortRef::Number(first)), Some(end)) => {
                        found.push((field(), format!("endPort {end} is below port {first}")));
                    }
                    (_, Some(_)) => found.push((
                        field(),
                        "endPort requires a numeric port (not absent, not a named port)"
                            .to_string(),
                    )),
                }
            }
        }
    }
    found
}

/// The API server's defaulting (pkg/apis/networking/v1/defaults.go):
/// ```go
/// if len(obj.Spec.PolicyTypes) == 0 {
///     // Any policy that does not specify policyTypes implies at least "Ingress".
///     obj.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
///     if len(obj.Spec.Egress) != 0 {
///         obj.Spec.PolicyTypes = append(obj.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
///     }
/// }
/// ```
fn policy_types(spec: &net::NetworkPolicySpec) -> Result<PolicyTypes> {
    let given = spec.policy_types.as_deref().unwrap_or_default();
    if given.is_empty() {
        return Ok(PolicyTypes {
            ingress: true,
            egress: spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()),
        });
    }
    let mut types = PolicyTypes::default();
    for (i, value) in given.iter().enumerate() {
        match value.as_str() {
            "Ingress" => types.ingress = true,
            "Egress" => types.egress = true,
            _ => {
                return Err(ConvertError::InvalidPolicyType {
                    field: format!("spec.policyTypes[{i}]"),
                    value: value.clone(),
                })
            }
        }
    }
    Ok(types)
}

/// One ingress or egress rule. `peers_key` is `from` or `to`.
fn rule(
    peers: Option<&[net::NetworkPolicyPeer]>,
    ports: Option<&[net::NetworkPolicyPort]>,
    field: &str,
    peers_key: &str,
) -> Result<Rule> {
    Ok(Rule {
        peers: rule_peers(peers, &format!("{field}.{peers_key}"))?,
        ports: ports
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, port)| policy_port(port, &format!("{field}.ports[{i}]")))
            .collect::<Result<_>>()?,
    })
}

/// "If this field is empty or missing, this rule matches all sources (traffic not
/// restricted by source). If this field is present and contains at least one item,
/// this rule allows traffic only if the traffic matches at least one item."
fn rule_peers(peers: Option<&[net::NetworkPolicyPeer]>, field: &str) -> Result<Peers> {
    match peers {
        None | Some([]) => Ok(Peers::All),
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, p)| peer(p, &format!("{field}[{i}]")))
            .collect::<Result<_>>()
            .map(Peers::Only),
    }
}

/// "ipBlock ... If this field is set then neither of the other fields can be."
/// "If namespaceSelector is also set, then the NetworkPolicyPeer as a whole selects
/// the pods matching podSelector in the Namespaces selected by NamespaceSelector.
/// Otherwise it selects the pods matching podSelector in the policy's own namespace."
fn peer(peer: &net::NetworkPolicyPeer, field: &str) -> Result<Peer> {
    let pods = peer.pod_selector.as_ref();
    let namespaces = peer.namespace_selector.as_ref();
    match (&peer.ip_block, pods, namespaces) {
        (Some(block), None, None) => Ok(ip_block(block, &format!("{field}.ipBlock"))),
        (Some(_), _, _) => Err(ConvertError::IpBlockWithSelector {
            field: field.to_string(),
        }),
        (None, None, None) => Err(ConvertError::EmptyPeer {
            field: field.to_string(),
        }),
        (None, _, _) => Ok(Peer::Pods {
            namespaces: match namespaces {
                None => NamespaceScope::PolicyNamespace,
                Some(sel) => NamespaceScope::Matching(label_selector(
                    sel,
                    &format!("{field}.namespaceSelector"),
                )?),
            },
            pods: optional_selector(pods, &format!("{field}.podSelector"))?,
        }),
    }
}

/// "except is a list of CIDRs that should not be included within an IPBlock ...
/// Except values will be rejected if they are outside the cidr range"; validation
/// requires each to be a strict subset. CIDRs are stored truncated to their network.
/// What the API server would reject becomes `Peer::Invalid` naming the first bad
/// field: the whole entry then matches nothing (dropping only a bad except would
/// widen the block).
fn ip_block(block: &net::IPBlock, field: &str) -> Peer {
    let invalid = |field: String, reason: String| Peer::Invalid { field, reason };
    let cidr_field = format!("{field}.cidr");
    let Some(cidr) = parse_cidr(&block.cidr) else {
        return invalid(cidr_field, not_a_cidr(&block.cidr));
    };
    let mut except = Vec::new();
    for (i, text) in block.except.iter().flatten().enumerate() {
        let except_field = format!("{field}.except[{i}]");
        let Some(net) = parse_cidr(text) else {
            return invalid(except_field, not_a_cidr(text));
        };
        if net.addr().is_ipv4() != cidr.addr().is_ipv4() {
            let reason = format!("{net} is not of the address family of cidr {cidr}");
            return invalid(except_field, reason);
        }
        if !cidr.contains(&net) || net.prefix_len() <= cidr.prefix_len() {
            let reason = format!("{net} must be a strict subset of cidr {cidr}");
            return invalid(except_field, reason);
        }
        except.push(net);
    }
    Peer::IpBlock { cidr, except }
}

fn not_a_cidr(text: &str) -> String {
    format!("{text:?} is not a CIDR such as 10.0.0.0/8 or fd00::/64")
}

/// One `ports` entry: protocol (default TCP), port (number or IANA_SVC_NAME) and
/// endPort ("port must be defined and numeric ... endPort >= port"; when it is not,
/// the entry is kept and matches nothing).
fn policy_port(port: &net::NetworkPolicyPort, field: &str) -> Result<PolicyPort> {
    let port_field = format!("{field}.port");
    let number_or_name = match &port.port {
        None => None,
        Some(IntOrString::Int(n)) => Some(PortRef::Number(port_number((*n).into(), &port_field)?)),
        Some(IntOrString::String(name)) => Some(PortRef::Name(port_name(name, &port_field)?)),
    };
    // An endPort below port, or without a numeric port, is kept as given: the model
    // defines such an entry to match nothing (the API server would reject it).
    let end_port = port
        .end_port
        .map(|end| port_number(end.into(), &format!("{field}.endPort")))
        .transpose()?;
    Ok(PolicyPort {
        protocol: protocol(port.protocol.as_deref(), &format!("{field}.protocol"))?,
        port: number_or_name,
        end_port,
    })
}

/// A selector field that may be absent: absent selects everything, like `{}`.
fn optional_selector(sel: Option<&K8sSelector>, field: &str) -> Result<LabelSelector> {
    sel.map_or_else(
        || Ok(LabelSelector::default()),
        |sel| label_selector(sel, field),
    )
}

/// Converts a label selector. "operator ... Valid operators are In, NotIn, Exists
/// and DoesNotExist. If the operator is In or NotIn, the values array must be
/// non-empty. If the operator is Exists or DoesNotExist, the values array must be
/// empty."
pub fn label_selector(sel: &K8sSelector, field: &str) -> Result<LabelSelector> {
    let mut match_expressions = Vec::new();
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let req_field = format!("{field}.matchExpressions[{i}]");
        let operator = match req.operator.as_str() {
            "In" => SelectorOperator::In,
            "NotIn" => SelectorOperator::NotIn,
            "Exists" => SelectorOperator::Exists,
            "DoesNotExist" => SelectorOperator::DoesNotExist,
            other => {
                return Err(ConvertError::InvalidOperator {
                    field: format!("{req_field}.operator"),
                    value: other.to_string(),
                })
            }
        };
        let values = req.values.clone().unwrap_or_default();
        let needs_values = matches!(operator, SelectorOperator::In | SelectorOperator::NotIn);
        if needs_values == values.is_empty() {
            return Err(ConvertError::SelectorValues {
                field: format!("{req_field}.values"),
                operator,
                expected: if needs_values {
                    "needs at least one value"
                } else {
                    "must have no values"
                },
            });
        }
        match_expressions.push(SelectorRequirement {
            key: req.key.clone(),
            operator,
            values,
        });
    }
    Ok(LabelSelector {
        match_labels: sel.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

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

#[cfg(test)]
mod tests;
