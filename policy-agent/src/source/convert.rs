//! Kubernetes objects (k8s-openapi types) -> the model: the ONE place that reads
//! k8s-openapi types, so every source (manifest files, later the API server) applies
//! the same defaults and the same validation.
//!
//! Defaults and checks follow the API server (defaults.go / validation.go of
//! `k8s.io/kubernetes/pkg/apis/{core,networking}`); the spec sentence each rule
//! implements is quoted above it. Bad input is an error naming the field path
//! (`spec.ingress[0].ports[1].endPort`), never silently dropped or widened.
//!
//! May import: `crate::model`, k8s-openapi, ipnet. Nothing else of this crate.

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
    /// An ipBlock CIDR does not parse.
    #[error("{field}: {value:?} is not a CIDR such as 10.0.0.0/8 or fd00::/64")]
    InvalidCidr {
        /// Path of the field.
        field: String,
        /// The text found.
        value: String,
    },
    /// An `except` entry is not a strict subset of its ipBlock's `cidr`.
    #[error("{field}: {except} must be a strict subset of cidr {cidr}")]
    ExceptOutsideCidr {
        /// Path of the `except` entry.
        field: String,
        /// The except range.
        except: IpNet,
        /// The enclosing cidr.
        cidr: IpNet,
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
    /// `endPort` without a numeric `port`.
    #[error("{field}: endPort requires a numeric port (not absent, not a named port)")]
    EndPortWithoutNumericPort {
        /// Path of the `endPort` field.
        field: String,
    },
    /// `endPort` below `port`.
    #[error("{field}: endPort {end_port} must be greater than or equal to port {port}")]
    EndPortBelowPort {
        /// Path of the `endPort` field.
        field: String,
        /// The endPort found.
        end_port: u16,
        /// The port it must not be below.
        port: u16,
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
    Ok(NetworkPolicy {
        key,
        pod_selector,
        policy_types: policy_types(spec)?,
        ingress,
        egress,
    })
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
        (Some(block), None, None) => ip_block(block, &format!("{field}.ipBlock")),
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
fn ip_block(block: &net::IPBlock, field: &str) -> Result<Peer> {
    let cidr = parse_cidr(&block.cidr, &format!("{field}.cidr"))?;
    let mut except = Vec::new();
    for (i, text) in block.except.iter().flatten().enumerate() {
        let except_field = format!("{field}.except[{i}]");
        let net = parse_cidr(text, &except_field)?;
        if !cidr.contains(&net) || net.prefix_len() <= cidr.prefix_len() {
            return Err(ConvertError::ExceptOutsideCidr {
                field: except_field,
                except: net,
                cidr,
            });
        }
        except.push(net);
    }
    Ok(Peer::IpBlock { cidr, except })
}

/// One `ports` entry: protocol (default TCP), port (number or IANA_SVC_NAME) and
/// endPort ("port must be defined and numeric ... endPort >= port").
fn policy_port(port: &net::NetworkPolicyPort, field: &str) -> Result<PolicyPort> {
    let port_field = format!("{field}.port");
    let number_or_name = match &port.port {
        None => None,
        Some(IntOrString::Int(n)) => Some(PortRef::Number(port_number((*n).into(), &port_field)?)),
        Some(IntOrString::String(name)) => Some(PortRef::Name(port_name(name, &port_field)?)),
    };
    let end_field = format!("{field}.endPort");
    let end_port = match (port.end_port, &number_or_name) {
        (None, _) => None,
        (Some(end), Some(PortRef::Number(start))) => {
            let end = port_number(end.into(), &end_field)?;
            if end < *start {
                return Err(ConvertError::EndPortBelowPort {
                    field: end_field,
                    end_port: end,
                    port: *start,
                });
            }
            Some(end)
        }
        (Some(_), _) => return Err(ConvertError::EndPortWithoutNumericPort { field: end_field }),
    };
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

fn parse_cidr(text: &str, field: &str) -> Result<IpNet> {
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| ConvertError::InvalidCidr {
            field: field.to_string(),
            value: text.to_string(),
        })
}

#[cfg(test)]
#[expect(
    clippy::expect_used,
    reason = "a malformed test fixture should fail the test"
)]
mod tests {
    use super::*;

    /// A NetworkPolicy `prod/np` with `spec` written as YAML flow (`{...}`).
    fn netpol(spec: &str) -> Result<NetworkPolicy> {
        let text = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: np, namespace: prod}}\nspec: {spec}\n"
        );
        network_policy(&serde_norway::from_str(&text).expect("fixture is a NetworkPolicy"))
    }

    fn ok(spec: &str) -> NetworkPolicy {
        netpol(spec).unwrap_or_else(|err| panic!("{spec}: {err}"))
    }

    /// Each spec is rejected with a message containing the expected text.
    fn assert_rejected(cases: &[(String, &str)]) {
        for (spec, expected) in cases {
            match netpol(spec) {
                Ok(np) => panic!("{spec}: accepted as {np:?}"),
                Err(err) => assert!(err.to_string().contains(expected), "{spec}: got {err}"),
            }
        }
    }

    /// A policy whose first ingress rule has the given peer.
    fn with_peer(peer: &str) -> String {
        format!("{{ingress: [{{from: [{peer}]}}]}}")
    }

    /// A policy whose first ingress rule has a valid port, then the given one.
    fn with_port(port: &str) -> String {
        format!("{{ingress: [{{ports: [{{port: 1}}, {port}]}}]}}")
    }

    fn selector(labels: &[(&str, &str)]) -> LabelSelector {
        let match_labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        LabelSelector {
            match_labels: match_labels.collect(),
            match_expressions: Vec::new(),
        }
    }

    #[test]
    fn policy_types_default_as_the_api_server_does() {
        // (spec, isolates ingress, isolates egress)
        let cases = [
            // Absent: Ingress always; Egress iff there is at least one egress rule.
            ("{egress: [{}]}", true, true),
            ("{egress: []}", true, false),
            ("{}", true, false),
            ("{policyTypes: [], egress: [{}]}", true, true),
            // Given: exactly what it says, whatever rules are present.
            ("{policyTypes: [Egress], ingress: [{}]}", false, true),
            ("{policyTypes: [Ingress], egress: [{}]}", true, false),
            ("{policyTypes: [Ingress, Egress]}", true, true),
        ];
        for (spec, ingress, egress) in cases {
            assert_eq!(
                ok(spec).policy_types,
                PolicyTypes { ingress, egress },
                "{spec}"
            );
        }
    }

    #[test]
    fn empty_and_absent_peers_and_ports_both_mean_everything() {
        let all = Rule {
            peers: Peers::All,
            ports: Vec::new(),
        };
        for spec in [
            "{ingress: [{}], egress: [{}]}",
            "{ingress: [{from: [], ports: []}], egress: [{to: [], ports: []}]}",
        ] {
            let np = ok(spec);
            assert_eq!(np.ingress, vec![all.clone()], "{spec}");
            assert_eq!(np.egress, vec![all.clone()], "{spec}");
        }
    }

    #[test]
    fn absent_pod_selector_selects_every_pod() {
        assert_eq!(ok("{}").pod_selector, LabelSelector::default());
        let np = ok("{podSelector: {matchLabels: {app: db}}}");
        assert_eq!(np.pod_selector, selector(&[("app", "db")]));
    }

    #[test]
    fn selectors_in_one_peer_are_anded_and_in_two_peers_ored() {
        let one = ok(&with_peer(
            "{namespaceSelector: {matchLabels: {team: a}}, podSelector: {matchLabels: {app: web}}}",
        ));
        let two = ok(&with_peer(
            "{namespaceSelector: {matchLabels: {team: a}}}, {podSelector: {matchLabels: {app: web}}}",
        ));
        let team_a = || NamespaceScope::Matching(selector(&[("team", "a")]));
        let web = || selector(&[("app", "web")]);
        let web_in_team_a = Peer::Pods {
            namespaces: team_a(),
            pods: web(),
        };
        let all_in_team_a = Peer::Pods {
            namespaces: team_a(),
            pods: LabelSelector::default(),
        };
        let web_here = Peer::Pods {
            namespaces: NamespaceScope::PolicyNamespace,
            pods: web(),
        };
        assert_eq!(one.ingress[0].peers, Peers::Only(vec![web_in_team_a]));
        assert_eq!(
            two.ingress[0].peers,
            Peers::Only(vec![all_in_team_a, web_here])
        );
    }

    #[test]
    fn ip_block_keeps_except_inside_cidr_and_truncates_host_bits() {
        let np = ok(
            "{egress: [{to: [{ipBlock: {cidr: 10.1.2.3/16, except: [10.1.5.0/24]}}, \
                     {ipBlock: {cidr: 'fd00::/64'}}]}]}",
        );
        let net = |s: &str| s.parse::<IpNet>().expect("test CIDR");
        let v4 = Peer::IpBlock {
            cidr: net("10.1.0.0/16"),
            except: vec![net("10.1.5.0/24")],
        };
        let v6 = Peer::IpBlock {
            cidr: net("fd00::/64"),
            except: Vec::new(),
        };
        assert_eq!(np.egress[0].peers, Peers::Only(vec![v4, v6]));
    }

    #[test]
    fn ports_default_to_tcp_and_keep_names_and_ranges() {
        let np = ok(
            "{ingress: [{ports: [{port: 80}, {protocol: UDP, port: dns-udp}, \
                     {port: 8000, endPort: 8080}, {protocol: SCTP}]}]}",
        );
        let port = |protocol, port, end_port| PolicyPort {
            protocol,
            port,
            end_port,
        };
        let expected = vec![
            port(Protocol::Tcp, Some(PortRef::Number(80)), None),
            port(Protocol::Udp, Some(PortRef::Name("dns-udp".into())), None),
            port(Protocol::Tcp, Some(PortRef::Number(8000)), Some(8080)),
            port(Protocol::Sctp, None, None),
        ];
        assert_eq!(np.ingress[0].ports, expected);
    }

    #[test]
    fn match_expressions_are_converted_with_their_values() {
        let np = ok(
            "{podSelector: {matchExpressions: [{key: tier, operator: In, values: [a, b]}, \
                     {key: x, operator: DoesNotExist}]}}",
        );
        let req = |key: &str, operator, values: &[&str]| SelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let expected = vec![
            req("tier", SelectorOperator::In, &["a", "b"]),
            req("x", SelectorOperator::DoesNotExist, &[]),
        ];
        assert_eq!(np.pod_selector.match_expressions, expected);
    }

    #[test]
    fn bad_ip_blocks_and_empty_peers_are_rejected_naming_the_field() {
        let peer = "spec.ingress[0].from[0]";
        assert_rejected(&[
            (
                with_peer("{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}"),
                "spec.ingress[0].from[0].ipBlock.except[0]: 11.0.0.0/16 must be a strict subset",
            ),
            (
                with_peer("{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}"),
                "ipBlock.except[0]: 10.0.0.0/8 must be a strict subset of cidr 10.0.0.0/8",
            ),
            (
                with_peer("{ipBlock: {cidr: 10.0.0.0/8, except: ['fd00::/64']}}"),
                "ipBlock.except[0]: fd00::/64 must be a strict subset",
            ),
            (
                with_peer("{ipBlock: {cidr: 10.0.0.1}}"),
                "spec.ingress[0].from[0].ipBlock.cidr: \"10.0.0.1\" is not a CIDR",
            ),
            (
                with_peer("{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}"),
                &format!("{peer}: ipBlock cannot be combined"),
            ),
            (
                with_peer("{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}"),
                &format!("{peer}: ipBlock cannot be combined"),
            ),
            (
                "{egress: [{to: [{}]}]}".into(),
                "spec.egress[0].to[0]: a peer must set",
            ),
        ]);
    }

    #[test]
    fn bad_protocols_ports_and_end_ports_are_rejected_naming_the_field() {
        let at = "spec.ingress[0].ports[1]";
        let bad_name = |name: &str| format!("{at}.port: \"{name}\" is not a valid port name");
        assert_rejected(&[
            (
                with_port("{protocol: tcp}"),
                &format!("{at}.protocol: unsupported protocol \"tcp\""),
            ),
            (
                with_port("{protocol: ICMP}"),
                &format!("{at}.protocol: unsupported protocol"),
            ),
            (
                with_port("{port: 0}"),
                &format!("{at}.port: 0 is not a port number"),
            ),
            (
                with_port("{port: 65536}"),
                &format!("{at}.port: 65536 is not a port number"),
            ),
            (with_port("{port: HTTP}"), &bad_name("HTTP")),
            (
                with_port("{port: '8080'}"),
                &format!("{}: must contain at least one letter", bad_name("8080")),
            ),
            (with_port("{port: a--b}"), &bad_name("a--b")),
            (with_port("{port: web-}"), &bad_name("web-")),
            (
                with_port("{port: abcdefghijklmnop}"),
                &bad_name("abcdefghijklmnop"),
            ),
            (
                with_port("{port: 8080, endPort: 8000}"),
                &format!("{at}.endPort: endPort 8000 must be greater than or equal to port 8080"),
            ),
            (
                with_port("{port: http, endPort: 8000}"),
                &format!("{at}.endPort: endPort requires a numeric port"),
            ),
            (
                with_port("{endPort: 8000}"),
                &format!("{at}.endPort: endPort requires a numeric port"),
            ),
            (
                with_port("{port: 1, endPort: 70000}"),
                &format!("{at}.endPort: 70000 is not a port number"),
            ),
        ]);
    }

    #[test]
    fn bad_policy_types_and_selector_operators_are_rejected_naming_the_field() {
        let expressions = |exprs: &str| format!("{{matchExpressions: [{exprs}]}}");
        assert_rejected(&[
            (
                "{policyTypes: [Ingress, egress]}".into(),
                "spec.policyTypes[1]: unknown policy type \"egress\"",
            ),
            (
                format!(
                    "{{podSelector: {}}}",
                    expressions("{key: a, operator: Equals, values: [b]}")
                ),
                "spec.podSelector.matchExpressions[0].operator: unknown operator \"Equals\"",
            ),
            (
                with_peer(&format!(
                    "{{namespaceSelector: {}}}",
                    expressions("{key: a, operator: In}")
                )),
                "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values: \
                 operator In needs at least one value",
            ),
            (
                with_peer(&format!(
                    "{{podSelector: {}}}",
                    expressions("{key: a, operator: Exists, values: [b]}")
                )),
                "spec.ingress[0].from[0].podSelector.matchExpressions[0].values: \
                 operator Exists must have no values",
            ),
        ]);
    }

    #[test]
    fn object_without_name_is_rejected_and_without_namespace_is_in_default() {
        let unnamed: net::NetworkPolicy =
            serde_norway::from_str("metadata: {namespace: x}").expect("fixture");
        let err = network_policy(&unnamed).expect_err("no name");
        assert_eq!(err.to_string(), "metadata.name: required field is missing");
        let pod = pod_from("metadata: {name: p}").expect("valid pod");
        assert_eq!(pod.key, ObjectRef::new("default", "p"));
    }

    #[test]
    fn namespace_always_carries_its_name_label() {
        let ns: core::Namespace = serde_norway::from_str(
            "metadata: {name: prod, labels: {team: a, kubernetes.io/metadata.name: other}}",
        )
        .expect("fixture");
        let labels = namespace(&ns).expect("valid namespace").labels;
        assert_eq!(
            labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
            Some("prod")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    }

    fn pod_from(yaml: &str) -> Result<Pod> {
        pod(&serde_norway::from_str(yaml).expect("fixture is a Pod"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test IP")
    }

    #[test]
    fn dual_stack_pod_gets_both_ips_from_pod_ips() {
        let pod = pod_from(
            "metadata: {name: web, namespace: prod, labels: {app: web}}\n\
             spec: {nodeName: n1, containers: [{name: c, ports: \
                    [{containerPort: 80, name: http}, {containerPort: 53, protocol: UDP}]}]}\n\
             status: {podIP: 10.0.0.5, podIPs: [{ip: 10.0.0.5}, {ip: 'fd00::5'}]}",
        )
        .expect("valid pod");
        assert_eq!(pod.ips, vec![ip("10.0.0.5"), ip("fd00::5")]);
        assert_eq!(pod.node_name.as_deref(), Some("n1"));
        assert!(!pod.host_network);
        let port = |name: Option<&str>, port, protocol| ContainerPort {
            name: name.map(String::from),
            port,
            protocol,
        };
        let expected = vec![
            port(Some("http"), 80, Protocol::Tcp),
            port(None, 53, Protocol::Udp),
        ];
        assert_eq!(pod.ports, expected);
    }

    #[test]
    fn pod_ip_is_used_when_pod_ips_is_absent_and_bad_ips_are_rejected() {
        let pod = pod_from(
            "metadata: {name: p}\nspec: {hostNetwork: true, containers: []}\n\
                            status: {podIP: 192.0.2.1}",
        )
        .expect("valid pod");
        assert_eq!(pod.ips, vec![ip("192.0.2.1")]);
        assert!(pod.host_network);
        let err = pod_from("metadata: {name: p}\nstatus: {podIPs: [{ip: 10.0.0.1}, {ip: nope}]}")
            .expect_err("bad IP");
        let expected = "status.podIPs[1].ip: \"nope\" is not an IPv4 or IPv6 address";
        assert_eq!(err.to_string(), expected);
        let err = pod_from(
            "metadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}",
        )
        .expect_err("port 0");
        let expected = "spec.containers[0].ports[0].containerPort: 0 is not a port number";
        assert!(err.to_string().starts_with(expected), "{err}");
    }

    #[test]
    fn service_defaults_target_port_and_treats_headless_as_no_cluster_ip() {
        let svc: core::Service = serde_norway::from_str(
            "metadata: {name: db, namespace: prod}\n\
             spec: {selector: {app: db}, clusterIP: None, ports: [{port: 5432}, \
                    {name: m, port: 9000, targetPort: metrics, protocol: UDP}, \
                    {port: 80, targetPort: 8080}]}",
        )
        .expect("fixture");
        let svc = service(&svc).expect("valid service");
        assert_eq!(svc.selector, Some(selector(&[("app", "db")]).match_labels));
        assert_eq!(svc.cluster_ip, None);
        let targets: Vec<_> = svc
            .ports
            .iter()
            .map(|p| (p.port, p.target_port.clone(), p.protocol))
            .collect();
        let expected = vec![
            (5432, PortRef::Number(5432), Protocol::Tcp),
            (9000, PortRef::Name("metrics".into()), Protocol::Udp),
            (80, PortRef::Number(8080), Protocol::Tcp),
        ];
        assert_eq!(targets, expected);
    }

    #[test]
    fn service_with_empty_selector_has_none_and_keeps_its_cluster_ip() {
        let yaml = "metadata: {name: s}\nspec: {selector: {}, clusterIP: 10.96.0.10}";
        let svc = service(&serde_norway::from_str(yaml).expect("fixture")).expect("valid");
        assert_eq!(svc.selector, None);
        assert_eq!(svc.cluster_ip, Some(ip("10.96.0.10")));
    }
}
