//! `exposure`: for each pod and port, what can open a connection to it from
//! outside the cluster, from any namespace, from its own namespace, and which
//! pods not created yet would reach it (the selectors that would match a new
//! pod), in the spirit of np-guard's exposure analysis. Every answer is a query
//! to the reference evaluator, so ClusterNetworkPolicy tiers and audit mode
//! count as they do everywhere else; an answer that passes only by audit mode
//! counts as reached.
//!
//! A pod not created yet is judged by its labels and namespace alone, without an
//! address: an ipBlock or `networks` rule that would hold its address is not
//! counted, either way (an address-based `Deny` may close what is reported
//! open, an ipBlock over the pod addresses open what is reported closed; `lint`
//! reports such ipBlocks).
//!
//! Pure: the pods that do not exist yet, and the addresses outside the cluster,
//! are made up for the queries and never leave this module.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use serde::Serialize;

use crate::{
    model::{
        ClusterPeer, ClusterState, LabelSelector, Labels, Namespace, NamespaceScope, ObjectRef,
        Peer, Peers, Pod, Protocol, SelectorOperator, NAMESPACE_NAME_LABEL,
    },
    policy::{
        cluster::cluster_rules,
        evaluator::{evaluate, End, Query},
        tables::Direction,
    },
};

/// The made-up namespace that stands for "a namespace nobody labelled".
const ANY_NAMESPACE: &str = "exposure-any-namespace";
/// Addresses outside any cluster, tried when no ipBlock holds them.
const ELSEWHERE: [&str; 2] = ["203.0.113.1", "2001:db8::1"];

/// Who would reach a new pod: its labels, and its namespace (named, or any with
/// these labels).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct NewPods {
    /// The namespace, when the selector names the pod's own (a podSelector alone).
    pub namespace: Option<String>,
    /// The labels a namespace needs (`namespaceSelector`); empty: any namespace.
    pub namespace_labels: BTreeMap<String, String>,
    /// The labels the pod needs.
    pub pod_labels: BTreeMap<String, String>,
}

/// What can reach one port of one pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exposure {
    /// The pod.
    pub pod: String,
    /// Its port.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// Ranges outside the cluster that reach it: the narrowest ipBlock (or
    /// ClusterNetworkPolicy network) holding each address that gets through, or
    /// `0.0.0.0/0` and `::/0` for addresses no policy names.
    pub outside: Vec<IpNet>,
    /// A new pod without labels in a new namespace without labels reaches it.
    pub any_namespace: bool,
    /// A new pod without labels in its own namespace reaches it.
    pub own_namespace: bool,
    /// Pods not created yet that would reach it, by the selectors that admit
    /// them; none listed when any new pod reaches it, and none of its own
    /// namespace when any new pod of that namespace does.
    pub new_pods: Vec<NewPods>,
}

/// The exposure of each pod-network pod of `state` on `ports`, or, without
/// ports, on each TCP and UDP port it declares.
pub fn exposure(state: &ClusterState, ports: &[(u16, Protocol)]) -> Vec<Exposure> {
    let candidates = outside_candidates(state);
    let new_pods = new_pod_candidates(state);
    let mut with_made_up = state.clone();
    with_made_up.namespaces.insert(
        ANY_NAMESPACE.to_string(),
        Namespace::implicit(ANY_NAMESPACE),
    );
    // Each candidate's namespace: the one it names, or a made-up one with the
    // labels it needs (made once: a namespace without pods changes no verdict).
    let candidate_namespaces: Vec<String> = (0..)
        .zip(&new_pods)
        .map(
            |(index, candidate): (usize, &NewPods)| match &candidate.namespace {
                Some(name) => name.clone(),
                None => {
                    let name = format!("exposure-labelled-namespace-{index}");
                    let mut namespace = Namespace::implicit(&name);
                    for (key, value) in &candidate.namespace_labels {
                        namespace.labels.insert(key.clone(), value.clone());
                    }
                    with_made_up.namespaces.insert(name.clone(), namespace);
                    name
                }
            },
        )
        .collect();
    let made_up = |namespace: &str, labels: Labels| Pod {
        key: ObjectRef::new(namespace, format!("exposure-new-{}", labels.len())),
        labels,
        ips: Vec::new(),
        node_name: None,
        host_network: false,
        ports: Vec::new(),
        finished: false,
    };
    let mut out = Vec::new();
    for pod in state
        .pods
        .values()
        .filter(|pod| !pod.host_network && !pod.finished)
    {
        let wanted: BTreeSet<(u16, Protocol)> = if ports.is_empty() {
            pod.ports
                .iter()
                .filter(|p| p.protocol != Protocol::Sctp)
                .map(|p| (p.port, p.protocol))
                .collect()
        } else {
            ports.iter().copied().collect()
        };
        for (port, protocol) in wanted {
            let reaches = |state: &ClusterState, src: End| {
                let query = Query {
                    src,
                    dst: End::Pod(pod.key.clone()),
                    protocol,
                    port,
                };
                evaluate(state, &query).allowed
            };
            let outside: BTreeSet<IpNet> = candidates
                .iter()
                .filter(|(ip, _)| reaches(state, End::Address(*ip)))
                .map(|(_, net)| *net)
                .collect();
            let from_new = |namespace: &str, labels: Labels, state: &mut ClusterState| {
                let new = made_up(namespace, labels);
                let key = new.key.clone();
                state.pods.insert(key.clone(), new);
                let reached = reaches(state, End::Pod(key.clone()));
                state.pods.remove(&key);
                reached
            };
            let any_namespace = from_new(ANY_NAMESPACE, Labels::new(), &mut with_made_up);
            let own_namespace = from_new(&pod.key.namespace, Labels::new(), &mut with_made_up);
            // What any new pod of a namespace reaches, a narrower one does too:
            // only what says more is listed.
            let mut reached_by = Vec::new();
            let telling = new_pods
                .iter()
                .zip(&candidate_namespaces)
                .filter(|(candidate, _)| {
                    let in_own = candidate.namespace.as_ref() == Some(&pod.key.namespace);
                    !(any_namespace || own_namespace && in_own)
                });
            for (candidate, namespace) in telling {
                let labels = Labels::from(candidate.pod_labels.clone());
                if from_new(namespace, labels, &mut with_made_up) {
                    reached_by.push(candidate.clone());
                }
            }
            out.push(Exposure {
                pod: pod.key.to_string(),
                port,
                protocol,
                outside: outside.into_iter().collect(),
                any_namespace,
                own_namespace,
                new_pods: reached_by,
            });
        }
    }
    out
}

/// Addresses to try from outside the cluster, each with the narrowest range
/// that names it: one address of each piece the ipBlocks, excepts and networks
/// the policies name cut the address space into (the first address of each
/// range, and the first after each range inside another, the whole space of each
/// family included), and an address of each family none of them holds.
/// Addresses of pods, Services and nodes are left out (they are inside the
/// cluster).
fn outside_candidates(state: &ClusterState) -> Vec<(IpAddr, IpNet)> {
    let mut nets: BTreeSet<IpNet> = BTreeSet::new();
    for policy in state.policies.values() {
        for rule in policy.ingress.iter() {
            if let Peers::Only(peers) = &rule.peers {
                for peer in peers {
                    if let Peer::IpBlock { cidr, except } = peer {
                        nets.insert(*cidr);
                        nets.extend(except.iter().copied());
                    }
                }
            }
        }
    }
    for policy in state.cluster_policies.values() {
        for rule in cluster_rules(policy, Direction::Ingress) {
            for peer in &rule.peers {
                if let ClusterPeer::Networks(networks) = peer {
                    nets.extend(networks.iter().copied());
                }
            }
        }
    }
    let inside: BTreeSet<IpAddr> = state
        .pods
        .values()
        .flat_map(|pod| pod.ips.iter().copied())
        .chain(state.services.values().filter_map(|s| s.cluster_ip))
        .chain(
            state
                .nodes
                .values()
                .flat_map(|node| node.ips.iter().copied()),
        )
        .collect();
    let narrowest = |ip: IpAddr| {
        nets.iter()
            .filter(|net| net.contains(&ip))
            .max_by_key(|net| net.prefix_len())
            .copied()
            .unwrap_or_else(|| {
                if ip.is_ipv4() {
                    IpNet::from(ipnet::Ipv4Net::default())
                } else {
                    IpNet::from(ipnet::Ipv6Net::default())
                }
            })
    };
    let mut all = nets.clone();
    all.insert(IpNet::from(ipnet::Ipv4Net::default()));
    all.insert(IpNet::from(ipnet::Ipv6Net::default()));
    let mut tried: BTreeSet<IpAddr> = ELSEWHERE
        .iter()
        .filter_map(|text| text.parse::<IpAddr>().ok())
        .collect();
    for outer in &all {
        tried.insert(outer.network());
        for inner in all
            .iter()
            .filter(|inner| *inner != outer && outer.contains(*inner))
        {
            if let Some(next) = after(inner).filter(|next| outer.contains(next)) {
                tried.insert(next);
            }
        }
    }
    tried
        .into_iter()
        .filter(|ip| !inside.contains(ip))
        .map(|ip| (ip, narrowest(ip)))
        .collect()
}

/// The first address after `net`, if the family has one.
fn after(net: &IpNet) -> Option<IpAddr> {
    match net.broadcast() {
        IpAddr::V4(last) => u32::from(last)
            .checked_add(1)
            .map(|next| IpAddr::from(std::net::Ipv4Addr::from(next))),
        IpAddr::V6(last) => u128::from(last)
            .checked_add(1)
            .map(|next| IpAddr::from(std::net::Ipv6Addr::from(next))),
    }
}

/// The labels a selector requires of what it matches (`matchLabels`, the first
/// value of each `In`, some value for each `Exists`); `None` when it can match
/// nothing one could make up (`In` without values).
fn required(selector: &LabelSelector) -> Option<Labels> {
    let mut labels = selector.match_labels.clone();
    for requirement in &selector.match_expressions {
        match requirement.operator {
            SelectorOperator::In => {
                labels.insert(requirement.key.clone(), requirement.values.first()?.clone());
            }
            SelectorOperator::Exists => {
                if !labels.contains_key(&requirement.key) {
                    labels.insert(requirement.key.clone(), "any".to_string());
                }
            }
            SelectorOperator::NotIn | SelectorOperator::DoesNotExist => {}
        }
    }
    Some(labels)
}

/// The new pods the ingress peers of every policy would admit, one per distinct
/// selector pair, without the name label (a made-up namespace has its own).
fn new_pod_candidates(state: &ClusterState) -> Vec<NewPods> {
    let mut out: BTreeSet<NewPods> = BTreeSet::new();
    let mut add =
        |namespace: Option<String>, namespaces: Option<&LabelSelector>, pods: &LabelSelector| {
            let (Some(pod_labels), Some(namespace_labels)) = (
                required(pods),
                namespaces.map_or(Some(Labels::new()), required),
            ) else {
                return;
            };
            // A namespace named by its name label is that namespace.
            let mut namespace_labels: BTreeMap<String, String> = namespace_labels.into();
            let namespace = match namespace_labels.remove(NAMESPACE_NAME_LABEL) {
                Some(name) => Some(name),
                None => namespace,
            };
            out.insert(NewPods {
                namespace,
                namespace_labels,
                pod_labels: pod_labels.into(),
            });
        };
    for policy in state.policies.values() {
        for rule in &policy.ingress {
            let Peers::Only(peers) = &rule.peers else {
                continue;
            };
            for peer in peers {
                if let Peer::Pods { namespaces, pods } = peer {
                    match namespaces {
                        NamespaceScope::PolicyNamespace => {
                            add(Some(policy.key.namespace.clone()), None, pods)
                        }
                        NamespaceScope::Matching(selector) => add(None, Some(selector), pods),
                    }
                }
            }
        }
    }
    for policy in state.cluster_policies.values() {
        for rule in cluster_rules(policy, Direction::Ingress) {
            for peer in &rule.peers {
                match peer {
                    ClusterPeer::Namespaces(namespaces) => {
                        add(None, Some(namespaces), &LabelSelector::default())
                    }
                    ClusterPeer::Pods(selected) => {
                        add(None, Some(&selected.namespaces), &selected.pods)
                    }
                    _ => {}
                }
            }
        }
    }
    out.into_iter()
        .filter(|c| {
            !c.pod_labels.is_empty() || !c.namespace_labels.is_empty() || c.namespace.is_some()
        })
        .collect()
}

#[cfg(test)]
mod tests;
