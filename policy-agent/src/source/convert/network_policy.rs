//! NetworkPolicy conversion: defaults (policyTypes, absent selectors), rules, peers,
//! ipBlocks (bad ones become `Peer::Invalid`), ports, label selectors, and the
//! podwall mode annotation.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1 as net,
    apimachinery::pkg::{apis::meta::v1::LabelSelector as K8sSelector, util::intstr::IntOrString},
};

use super::{object_ref, parse_cidr, port_name, port_number, protocol, ConvertError, Result};
use crate::model::{
    LabelSelector, Labels, NamespaceScope, NetworkPolicy, Peer, Peers, PolicyMode, PolicyPort,
    PolicyTypes, PortRef, Rule, SelectorOperator, SelectorRequirement,
};

/// The annotation that sets a NetworkPolicy's mode: `podwall.io/mode: audit` puts it
/// in audit mode, `enforce` (or no annotation) enforces it.
pub const MODE_ANNOTATION: &str = "podwall.io/mode";

/// Converts a NetworkPolicy, applying the API server's defaults: policyTypes,
/// an absent podSelector selecting every pod, empty and absent lists folded; the
/// mode comes from the `podwall.io/mode` annotation (see `mode`).
pub fn network_policy(np: &net::NetworkPolicy) -> Result<NetworkPolicy> {
    super::caps::network_policy(np)?;
    let key = object_ref(&np.metadata)?;
    let (mode, mode_warning) = mode(
        &format!("NetworkPolicy {key}"),
        np.metadata.annotations.as_ref(),
    );
    if let Some(warning) = mode_warning {
        tracing::warn!("{warning}");
    }
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
        mode,
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

/// What stands in for a NetworkPolicy that `network_policy` rejects (D6, fail
/// closed): a policy of the same name selecting every pod of its namespace, for
/// the policyTypes it names (both when they are what failed), with no rules, so
/// those pods are isolated and this policy allows nothing. Its mode comes from the
/// annotation as usual: a rejected audit-mode policy stays audit-only (it reports
/// would-drops and never drops, as the user asked of that policy). `None` when
/// the object has no name (nothing to name it by; the API server never sends one).
pub fn network_policy_fail_closed(np: &net::NetworkPolicy) -> Option<NetworkPolicy> {
    let key = object_ref(&np.metadata).ok()?;
    let (mode, _) = mode(
        &format!("NetworkPolicy {key}"),
        np.metadata.annotations.as_ref(),
    );
    let default_spec = net::NetworkPolicySpec::default();
    let spec = np.spec.as_ref().unwrap_or(&default_spec);
    let policy_types = policy_types(spec).unwrap_or(PolicyTypes {
        ingress: true,
        egress: true,
    });
    Some(NetworkPolicy {
        key,
        pod_selector: LabelSelector::default(),
        policy_types,
        ingress: Vec::new(),
        egress: Vec::new(),
        mode,
    })
}

/// The mode `annotations` give a policy (a NetworkPolicy or a
/// ClusterNetworkPolicy, named in messages as `object`, e.g. `NetworkPolicy
/// prod/db`): `audit` audits, `enforce` or no annotation enforces. Any other
/// value (`Audit`, `dry-run`, a typo) enforces, since a mistyped annotation must
/// never stop enforcement (fail closed), and comes back with a warning naming the
/// policy and the value.
pub(super) fn mode(
    object: &str,
    annotations: Option<&BTreeMap<String, String>>,
) -> (PolicyMode, Option<String>) {
    match annotations
        .and_then(|all| all.get(MODE_ANNOTATION))
        .map(String::as_str)
    {
        None | Some("enforce") => (PolicyMode::Enforce, None),
        Some("audit") => (PolicyMode::Audit, None),
        Some(other) => (
            PolicyMode::Enforce,
            Some(format!(
                "{object}: metadata.annotations[{MODE_ANNOTATION}]: unknown mode \
                 {other:?}; use \"audit\" or \"enforce\"; the policy is enforced"
            )),
        ),
    }
}

/// `(field, reason)` of every entry of `policy` that matches nothing because the
/// API server would have rejected it: `Peer::Invalid` peers, and endPorts below
/// their port or without a numeric port.
pub(super) fn entries_matching_nothing(policy: &NetworkPolicy) -> Vec<(String, String)> {
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
                if let Some(reason) = port.rejected_end_port() {
                    found.push((format!("spec.{list}[{r}].ports[{p}].endPort"), reason));
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
        match_labels: sel
            .match_labels
            .clone()
            .map(Labels::from)
            .unwrap_or_default(),
        match_expressions,
    })
}
