//! The synthetic cluster (`bench::cluster`) as the Kubernetes objects an API server
//! would serve (pure): the memory benchmark loads them into the stand-in API
//! server, so the agent under test lists and watches the very cluster the compile
//! and event benchmarks build as a model. The generator stays the one source of
//! the cluster's shape; this only writes it out.
//!
//! Each object carries what `source::convert` reads, plus some of what a real API
//! server adds and the agent's reflectors trim away (a uid, a creation time, an
//! image, status conditions, a host IP), so the agent parses objects of a
//! realistic kind. Converting them back gives the model again (the unit tests).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{core::v1 as core, networking::v1 as net},
    apimachinery::pkg::{
        apis::meta::v1::{self as meta, ObjectMeta, Time},
        util::intstr::IntOrString,
    },
    jiff::Timestamp,
};

use crate::{
    model::{
        ClusterState, LabelSelector, NamespaceScope, NetworkPolicy, Peer, Peers, PolicyMode,
        PolicyPort, PortRef, Rule, SelectorOperator,
    },
    source::convert::{ALLOW_TUNNELS_ANNOTATION, MODE_ANNOTATION},
};

/// Every object of a cluster, by kind.
#[derive(Clone, Debug, Default)]
pub struct ApiObjects {
    /// core/v1 Namespaces.
    pub namespaces: Vec<core::Namespace>,
    /// core/v1 Pods.
    pub pods: Vec<core::Pod>,
    /// core/v1 Services.
    pub services: Vec<core::Service>,
    /// networking.k8s.io/v1 NetworkPolicies.
    pub policies: Vec<net::NetworkPolicy>,
}

/// A model object the API cannot express.
#[derive(Debug, thiserror::Error)]
#[error("NetworkPolicy {policy}: {field} is an invalid peer ({reason}), which no API object holds")]
pub struct Unrepresentable {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// The peer's field.
    pub field: String,
    /// Why it was invalid.
    pub reason: String,
}

impl ApiObjects {
    /// The objects of `state`, in its order. Fails only for a policy with an
    /// invalid peer, which the generator never makes.
    pub fn of(state: &ClusterState) -> Result<Self, Unrepresentable> {
        Ok(Self {
            namespaces: state.namespaces.values().map(namespace).collect(),
            pods: state.pods.values().map(pod).collect(),
            services: state.services.values().map(service).collect(),
            policies: state
                .policies
                .values()
                .map(network_policy)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Objects in all.
    pub fn len(&self) -> usize {
        self.namespaces.len() + self.pods.len() + self.services.len() + self.policies.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A fixed creation time: the objects are equal from run to run.
const CREATED: i64 = 1_735_689_600;

fn metadata(
    namespace: Option<&str>,
    name: &str,
    labels: Option<BTreeMap<String, String>>,
) -> ObjectMeta {
    let uid = format!(
        "{:032x}",
        super::cluster::mix(name.len() as u64 ^ hash(name))
    );
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels,
        uid: Some(uid),
        creation_timestamp: Timestamp::from_second(CREATED).ok().map(Time),
        ..ObjectMeta::default()
    }
}

/// A fixed hash of `text` (FNV-1a), for uids.
fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn namespace(ns: &crate::model::Namespace) -> core::Namespace {
    let mut metadata = metadata(None, &ns.name, Some(ns.labels.clone().into()));
    if ns.allow_tunnels {
        metadata.annotations = Some([(ALLOW_TUNNELS_ANNOTATION.into(), "true".into())].into());
    }
    core::Namespace {
        metadata,
        spec: Some(core::NamespaceSpec {
            finalizers: Some(vec!["kubernetes".into()]),
        }),
        status: Some(core::NamespaceStatus {
            phase: Some("Active".into()),
            ..core::NamespaceStatus::default()
        }),
    }
}

fn pod(pod: &crate::model::Pod) -> core::Pod {
    let ports = pod
        .ports
        .iter()
        .map(|port| core::ContainerPort {
            name: port.name.clone(),
            container_port: i32::from(port.port),
            protocol: Some(port.protocol.to_string()),
            ..core::ContainerPort::default()
        })
        .collect();
    let app = pod.labels.get("app").map_or("app", String::as_str);
    let condition = |kind: &str| core::PodCondition {
        type_: kind.to_string(),
        status: "True".into(),
        last_transition_time: Timestamp::from_second(CREATED).ok().map(Time),
        ..core::PodCondition::default()
    };
    let ips: Vec<String> = pod.ips.iter().map(ToString::to_string).collect();
    core::Pod {
        metadata: metadata(
            Some(&pod.key.namespace),
            &pod.key.name,
            Some(pod.labels.clone().into()),
        ),
        spec: Some(core::PodSpec {
            node_name: pod.node_name.clone(),
            host_network: pod.host_network.then_some(true),
            containers: vec![core::Container {
                name: app.to_string(),
                image: Some(format!("registry.example/{app}:1.0")),
                ports: Some(ports),
                ..core::Container::default()
            }],
            ..core::PodSpec::default()
        }),
        status: Some(core::PodStatus {
            phase: Some(if pod.finished { "Succeeded" } else { "Running" }.into()),
            pod_ip: ips.first().cloned(),
            pod_ips: Some(ips.into_iter().map(|ip| core::PodIP { ip }).collect()),
            host_ip: Some("172.16.0.1".into()),
            conditions: Some(
                ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
                    .map(condition)
                    .to_vec(),
            ),
            ..core::PodStatus::default()
        }),
    }
}

fn port_ref(port: &PortRef) -> IntOrString {
    match port {
        PortRef::Number(number) => IntOrString::Int(i32::from(*number)),
        PortRef::Name(name) => IntOrString::String(name.clone()),
    }
}

fn service(svc: &crate::model::Service) -> core::Service {
    let addresses: Vec<String> = svc.addresses().map(|ip| ip.to_string()).collect();
    core::Service {
        metadata: metadata(Some(&svc.key.namespace), &svc.key.name, None),
        spec: Some(core::ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: svc.selector.clone().map(Into::into),
            cluster_ip: addresses.first().cloned(),
            cluster_ips: Some(addresses),
            ports: Some(
                svc.ports
                    .iter()
                    .map(|port| core::ServicePort {
                        name: port.name.clone(),
                        port: i32::from(port.port),
                        target_port: Some(port_ref(&port.target_port)),
                        protocol: Some(port.protocol.to_string()),
                        ..core::ServicePort::default()
                    })
                    .collect(),
            ),
            ..core::ServiceSpec::default()
        }),
        status: None,
    }
}

fn label_selector(selector: &LabelSelector) -> meta::LabelSelector {
    let expressions = selector
        .match_expressions
        .iter()
        .map(|requirement| meta::LabelSelectorRequirement {
            key: requirement.key.clone(),
            operator: match requirement.operator {
                SelectorOperator::In => "In",
                SelectorOperator::NotIn => "NotIn",
                SelectorOperator::Exists => "Exists",
                SelectorOperator::DoesNotExist => "DoesNotExist",
            }
            .into(),
            values: (!requirement.values.is_empty()).then(|| requirement.values.clone()),
        })
        .collect::<Vec<_>>();
    meta::LabelSelector {
        match_labels: (!selector.match_labels.is_empty())
            .then(|| selector.match_labels.clone().into()),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    }
}

fn peer(policy: &NetworkPolicy, peer: &Peer) -> Result<net::NetworkPolicyPeer, Unrepresentable> {
    Ok(match peer {
        Peer::Pods { namespaces, pods } => net::NetworkPolicyPeer {
            pod_selector: Some(label_selector(pods)),
            namespace_selector: match namespaces {
                NamespaceScope::PolicyNamespace => None,
                NamespaceScope::Matching(selector) => Some(label_selector(selector)),
            },
            ip_block: None,
        },
        Peer::IpBlock { cidr, except } => net::NetworkPolicyPeer {
            ip_block: Some(net::IPBlock {
                cidr: cidr.to_string(),
                except: (!except.is_empty())
                    .then(|| except.iter().map(ToString::to_string).collect()),
            }),
            ..net::NetworkPolicyPeer::default()
        },
        Peer::Invalid { field, reason } => {
            return Err(Unrepresentable {
                policy: format!("{}/{}", policy.key.namespace, policy.key.name),
                field: field.clone(),
                reason: reason.clone(),
            })
        }
    })
}

/// A rule's peers (`None`: every peer) and ports (`None`: every port).
type RuleParts = (
    Option<Vec<net::NetworkPolicyPeer>>,
    Option<Vec<net::NetworkPolicyPort>>,
);

fn rule(policy: &NetworkPolicy, rule: &Rule) -> Result<RuleParts, Unrepresentable> {
    let peers = match &rule.peers {
        Peers::All => None,
        Peers::Only(peers) => Some(
            peers
                .iter()
                .map(|p| peer(policy, p))
                .collect::<Result<_, _>>()?,
        ),
    };
    let ports = rule
        .ports
        .iter()
        .map(|port: &PolicyPort| net::NetworkPolicyPort {
            protocol: Some(port.protocol.to_string()),
            port: port.port.as_ref().map(port_ref),
            end_port: port.end_port.map(i32::from),
        })
        .collect::<Vec<_>>();
    Ok((peers, (!ports.is_empty()).then_some(ports)))
}

fn network_policy(policy: &NetworkPolicy) -> Result<net::NetworkPolicy, Unrepresentable> {
    let mut metadata = metadata(Some(&policy.key.namespace), &policy.key.name, None);
    if policy.mode == PolicyMode::Audit {
        metadata.annotations = Some([(MODE_ANNOTATION.into(), "audit".into())].into());
    }
    let mut types = Vec::new();
    if policy.policy_types.ingress {
        types.push("Ingress".to_string());
    }
    if policy.policy_types.egress {
        types.push("Egress".to_string());
    }
    let ingress = policy
        .ingress
        .iter()
        .map(|r| rule(policy, r).map(|(from, ports)| net::NetworkPolicyIngressRule { from, ports }))
        .collect::<Result<Vec<_>, _>>()?;
    let egress = policy
        .egress
        .iter()
        .map(|r| rule(policy, r).map(|(to, ports)| net::NetworkPolicyEgressRule { to, ports }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(net::NetworkPolicy {
        metadata,
        spec: Some(net::NetworkPolicySpec {
            pod_selector: Some(label_selector(&policy.pod_selector)),
            policy_types: Some(types),
            ingress: (!ingress.is_empty()).then_some(ingress),
            egress: (!egress.is_empty()).then_some(egress),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bench::cluster::{self, ClusterSpec},
        source::convert,
    };

    #[test]
    fn the_objects_convert_back_to_the_generated_cluster() {
        let spec = ClusterSpec::new(2_000, 200);
        let state = cluster::generate_with_services(&spec, 20);
        let objects = ApiObjects::of(&state).unwrap_or_default();
        assert_eq!(
            (
                objects.namespaces.len(),
                objects.pods.len(),
                objects.services.len(),
                objects.policies.len()
            ),
            (20, 2_000, 400, 200)
        );
        assert_eq!(objects.len(), 2_620);
        let mut back = ClusterState::default();
        for ns in &objects.namespaces {
            let ns = convert::namespace(ns).unwrap_or_else(|e| panic!("{e}"));
            back.namespaces.insert(ns.name.clone(), ns);
        }
        for pod in &objects.pods {
            let pod = convert::pod(pod).unwrap_or_else(|e| panic!("{e}"));
            back.pods.insert(pod.key.clone(), pod);
        }
        for svc in &objects.services {
            let svc = convert::service(svc).unwrap_or_else(|e| panic!("{e}"));
            back.services.insert(svc.key.clone(), svc);
        }
        for np in &objects.policies {
            let np = convert::network_policy(np).unwrap_or_else(|e| panic!("{e}"));
            back.policies.insert(np.key.clone(), np);
        }
        assert_eq!(back, state);
    }

    #[test]
    fn an_invalid_peer_is_refused_with_its_policy_and_field() {
        use crate::model::builders::{cluster, netpol, rule};
        let state = cluster()
            .policy(
                netpol("prod", "broken")
                    .ingress(
                        rule()
                            .invalid_peer("spec.ingress[0].from[0].ipBlock.cidr", "not a CIDR")
                            .build(),
                    )
                    .build(),
            )
            .build();
        let error = ApiObjects::of(&state)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("prod/broken"), "{error}");
        assert!(
            error.contains("spec.ingress[0].from[0].ipBlock.cidr"),
            "{error}"
        );
    }
}
