//! `suggest`: NetworkPolicies that allow every observed connection and no
//! more than the user generalised to: one policy per workload (the pods of a
//! namespace that share their labels, less the labels a controller stamps on
//! each pod), isolating it both ways, with one rule per peer it talked to, on
//! the ports seen. A pod peer is named by its workload's labels (and its
//! namespace's name when it is another), an address outside the pods by itself.
//!
//! Pure: the observations come in as ends and ports; rendering and reading
//! recordings are the CLI's.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    model::{ClusterState, ObjectRef, Pod, Protocol},
    policy::tables::Direction,
};

/// Labels a controller stamps on each pod, which no two replicas share.
const PER_POD_LABELS: [&str; 6] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "pod-template-generation",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid",
];

/// One end of an observed connection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Observed {
    /// A pod of the state (one it does not have is left out: give its address).
    Pod(ObjectRef),
    /// An address no pod of the state holds.
    Address(IpAddr),
}

/// One observed connection: source, destination, destination port, protocol.
pub type Connection = (Observed, Observed, u16, Protocol);

/// A workload: a namespace and the labels its pods share.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    /// Its namespace.
    pub namespace: String,
    /// The labels that select it (`podSelector.matchLabels`).
    pub labels: BTreeMap<String, String>,
}

/// Whom a suggested rule admits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SuggestedPeer {
    /// The pods of a workload: in the policy's own namespace, or in the one named.
    Pods {
        /// The namespace, when it is not the policy's.
        namespace: Option<String>,
        /// The workload's labels (empty: every pod of that namespace).
        labels: BTreeMap<String, String>,
    },
    /// One address.
    Address(IpAddr),
}

/// One suggested rule and what it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuggestedRule {
    /// Whom it admits.
    pub peer: SuggestedPeer,
    /// The ports it admits, as seen.
    pub ports: BTreeSet<(u16, Protocol)>,
    /// How many observed connections it covers.
    pub flows: usize,
    /// The pods (`namespace/name`) or addresses seen at the other end.
    pub seen: BTreeSet<String>,
}

/// The suggested policy of one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suggestion {
    /// The workload it selects.
    pub workload: Workload,
    /// Its name, from the workload's labels (`suggested-app-web`).
    pub name: String,
    /// One rule per peer that connected to it.
    pub ingress: Vec<SuggestedRule>,
    /// One rule per peer it connected to.
    pub egress: Vec<SuggestedRule>,
}

/// The labels of `pod` that its workload's pods share.
fn workload_of(pod: &Pod) -> Workload {
    Workload {
        namespace: pod.key.namespace.clone(),
        labels: pod
            .labels
            .iter()
            .filter(|(key, _)| !PER_POD_LABELS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
    }
}

/// A policy name for `workload`: `suggested-` and its labels' values, or
/// `suggested-all` for a workload without labels, kept a DNS label.
fn name_of(workload: &Workload, pods: &BTreeSet<String>) -> String {
    let values: Vec<&str> = ["app.kubernetes.io/name", "app", "k8s-app"]
        .iter()
        .find_map(|key| workload.labels.get(*key))
        .map(|value| vec![value.as_str()])
        .unwrap_or_else(|| workload.labels.values().map(String::as_str).collect());
    let base = if values.is_empty() {
        pods.iter()
            .next()
            .and_then(|pod| pod.split_once('/'))
            .map_or("all", |(_, name)| name)
            .to_string()
    } else {
        values.join("-")
    };
    let clean: String = base
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut name = format!("suggested-{}", clean.trim_matches('-'));
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// The policies that allow exactly `observed` in `state` (by workload), sorted by
/// namespace and name.
pub fn suggest(state: &ClusterState, observed: &[Connection]) -> Vec<Suggestion> {
    type Rules = BTreeMap<SuggestedPeer, (BTreeSet<(u16, Protocol)>, usize, BTreeSet<String>)>;
    let mut found: BTreeMap<Workload, (Rules, Rules, BTreeSet<String>)> = BTreeMap::new();
    let end = |observed: &Observed| -> Option<(&Pod, Workload)> {
        match observed {
            Observed::Pod(key) => state
                .pods
                .get(key)
                .filter(|pod| !pod.host_network)
                .map(|pod| (pod, workload_of(pod))),
            Observed::Address(_) => None,
        }
    };
    // A pod the state does not have (or a host-network one) names no peer: the
    // caller gives its address instead.
    let peer = |at: &Workload, other: &Observed| match (other, end(other)) {
        (_, Some((_, workload))) => Some(SuggestedPeer::Pods {
            namespace: (workload.namespace != at.namespace).then_some(workload.namespace),
            labels: workload.labels,
        }),
        (Observed::Pod(_), None) => None,
        (Observed::Address(ip), None) => Some(SuggestedPeer::Address(*ip)),
    };
    let name = |observed: &Observed| match observed {
        Observed::Pod(key) => key.to_string(),
        Observed::Address(ip) => ip.to_string(),
    };
    for (src, dst, port, protocol) in observed {
        for (direction, at, other) in [
            (Direction::Egress, src, dst),
            (Direction::Ingress, dst, src),
        ] {
            let Some((pod, workload)) = end(at) else {
                continue;
            };
            let Some(peer) = peer(&workload, other) else {
                continue;
            };
            let entry = found.entry(workload).or_default();
            entry.2.insert(pod.key.to_string());
            let rules = match direction {
                Direction::Ingress => &mut entry.0,
                Direction::Egress => &mut entry.1,
            };
            let rule = rules.entry(peer).or_default();
            rule.0.insert((*port, *protocol));
            rule.1 += 1;
            rule.2.insert(name(other));
        }
    }
    let rules = |rules: Rules| {
        rules
            .into_iter()
            .map(|(peer, (ports, flows, seen))| SuggestedRule {
                peer,
                ports,
                flows,
                seen,
            })
            .collect()
    };
    let mut out: Vec<Suggestion> = found
        .into_iter()
        .map(|(workload, (ingress, egress, pods))| Suggestion {
            name: name_of(&workload, &pods),
            workload,
            ingress: rules(ingress),
            egress: rules(egress),
        })
        .collect();
    // Two workloads of a namespace may come to one name: number the later ones,
    // skipping numbers another workload's own name has (`web-2` of app=web-2),
    // so that no two policies of a namespace share a name.
    let own: BTreeSet<(String, String)> = out
        .iter()
        .map(|s| (s.workload.namespace.clone(), s.name.clone()))
        .collect();
    let mut taken: BTreeSet<(String, String)> = BTreeSet::new();
    for suggestion in &mut out {
        let namespace = suggestion.workload.namespace.clone();
        let mut name = suggestion.name.clone();
        let mut number = 1;
        while taken.contains(&(namespace.clone(), name.clone()))
            || (number > 1 && own.contains(&(namespace.clone(), name.clone())))
        {
            number += 1;
            let suffix = format!("-{number}");
            let mut base = suggestion.name.clone();
            base.truncate(63 - suffix.len());
            name = format!("{}{suffix}", base.trim_end_matches('-'));
        }
        taken.insert((namespace, name.clone()));
        suggestion.name = name;
    }
    out.sort_by(|a, b| (&a.workload.namespace, &a.name).cmp(&(&b.workload.namespace, &b.name)));
    out
}

#[cfg(test)]
mod tests;
