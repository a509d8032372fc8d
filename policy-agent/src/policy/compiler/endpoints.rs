//! Step 1: local pods -> endpoint ids and isolation.
//!
//! Endpoint ids identify a set of local pods that every policy treats alike, so the
//! `POLICY` map grows with distinct (namespace, applying policies), not with pods.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::DIRECTIONS;
use crate::{
    model::{ClusterState, NetworkPolicy, ObjectRef, Pod},
    policy::{
        evaluator::applies_to,
        tables::{Diagnostic, Direction, EndpointEntry},
    },
};

/// The policies that apply to one endpoint id, as indices into the sorted policies.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Applying {
    /// Policies applying for ingress, ascending.
    pub ingress: Vec<u32>,
    /// Policies applying for egress, ascending.
    pub egress: Vec<u32>,
}

impl Applying {
    /// The policies applying for `direction`.
    pub fn get(&self, direction: Direction) -> &[u32] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// The endpoint step's result.
#[derive(Clone, Debug, Default)]
pub(super) struct Endpoints {
    /// `DatapathTables::endpoints`.
    pub entries: BTreeMap<ObjectRef, EndpointEntry>,
    /// Endpoint id -> the policies applying to its pods.
    pub by_id: BTreeMap<u32, Applying>,
    /// (policy index, direction) pairs that apply to at least one local endpoint:
    /// only their rules shape peer classes and entries.
    pub applied: BTreeSet<(u32, Direction)>,
    /// Local pods the tables cannot fully enforce (IPv6).
    pub diagnostics: Vec<Diagnostic>,
}

/// Assigns endpoint ids to the local pods: pod-network pods with an IPv4 address.
///
/// Signature = (namespace, policies applying for ingress, for egress); ids are dense
/// from 1 in sorted signature order.
pub(super) fn assign(
    state: &ClusterState,
    policies: &[&NetworkPolicy],
    is_local: impl Fn(&Pod) -> bool,
) -> Endpoints {
    let local: Vec<&Pod> = state
        .pods
        .values()
        .filter(|pod| is_local(pod) && !pod.host_network)
        .collect();
    let mut groups: BTreeMap<(&str, Applying), Vec<&ObjectRef>> = BTreeMap::new();
    for pod in local
        .iter()
        .filter(|pod| pod.ipv4_addresses().next().is_some())
    {
        let applying = applying(policies, pod);
        groups
            .entry((pod.key.namespace.as_str(), applying))
            .or_default()
            .push(&pod.key);
    }
    let mut out = Endpoints {
        diagnostics: ipv6_diagnostics(policies, &local),
        ..Endpoints::default()
    };
    for (endpoint_id, ((_, applying), pods)) in (1..).zip(groups) {
        for (policy, direction) in DIRECTIONS
            .iter()
            .flat_map(|d| applying.get(*d).iter().map(move |p| (*p, *d)))
        {
            out.applied.insert((policy, direction));
        }
        let entry = EndpointEntry {
            endpoint_id,
            isolated_ingress: !applying.ingress.is_empty(),
            isolated_egress: !applying.egress.is_empty(),
        };
        for pod in pods {
            out.entries.insert(pod.clone(), entry);
        }
        out.by_id.insert(endpoint_id, applying);
    }
    out
}

/// The policies applying to `pod`, by direction.
fn applying(policies: &[&NetworkPolicy], pod: &Pod) -> Applying {
    let ids = |direction| {
        (0..)
            .zip(policies)
            .filter(|(_, policy)| applies_to(policy, pod, direction))
            .map(|(id, _)| id)
            .collect()
    };
    Applying {
        ingress: ids(Direction::Ingress),
        egress: ids(Direction::Egress),
    }
}

/// One diagnostic per policy that applies to local pods with IPv6 addresses: the
/// tables hold IPv4 only, so those pods' IPv6 traffic is not enforced yet.
fn ipv6_diagnostics(policies: &[&NetworkPolicy], local: &[&Pod]) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for policy in policies {
        let affected: Vec<String> = local
            .iter()
            .filter(|pod| pod.ips.iter().any(IpAddr::is_ipv6))
            .filter(|pod| DIRECTIONS.iter().any(|d| applies_to(policy, pod, *d)))
            .map(|pod| pod.key.to_string())
            .collect();
        if !affected.is_empty() {
            diagnostics.push(Diagnostic {
                policy: policy.key.clone(),
                message: format!(
                    "selects local pods with IPv6 addresses ({}): IPv6 is not enforced yet; \
                     their IPv6 traffic is dropped",
                    affected.join(", ")
                ),
            });
        }
    }
    diagnostics
}
