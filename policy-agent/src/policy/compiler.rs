//! The compiler: cluster state -> the `DatapathTables` of one node.
//!
//! Pure; imports only `crate::model`, `crate::policy::*` and `policy_common`'s
//! constants. Its output, looked up with `DatapathTables::lookup` as the BPF program
//! looks it up, agrees with the reference evaluator on every query it enforces
//! (property-tested in `compiler/properties.rs`), and is never wider on the rest.
//!
//! Three steps, each in its own module:
//! 1. `endpoints`: local pods -> endpoint ids (pods every policy treats alike share
//!    one) and isolation flags;
//! 2. `classes`: every pod address -> peer class (addresses every rule of every local
//!    endpoint treats alike share one; unnamed addresses are `CLASS_WORLD`);
//! 3. `entries`: (endpoint, direction, class, protocol, port) -> the first rule that
//!    allows it, plus diagnostics for what is not enforced yet (fail closed).

mod classes;
mod endpoints;
mod entries;

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;

use crate::{
    model::{ClusterState, NetworkPolicy, Pod},
    policy::tables::{DatapathTables, Direction, PeerEntry},
};

/// Compiles `state` into the tables for the pods `is_local` accepts (the pods of one
/// node), whose own addresses are `node_addresses`. Deterministic: equal inputs give
/// equal tables, ids included.
pub fn compile(
    state: &ClusterState,
    node_addresses: &[IpAddr],
    is_local: impl Fn(&Pod) -> bool,
) -> DatapathTables {
    let _ = node_addresses;
    let policies: Vec<&NetworkPolicy> = state.policies.values().collect();
    let endpoints = endpoints::assign(state, &policies, is_local);
    let classes = classes::assign(state, &policies, &endpoints.applied);
    let policy = entries::allow_entries(&policies, &endpoints, &classes);
    let mut diagnostics = entries::diagnostics(&policies, &endpoints.applied);
    diagnostics.extend(endpoints.diagnostics);
    DatapathTables {
        endpoints: endpoints.entries,
        endpoint_addresses: BTreeMap::new(),
        peers: classes
            .peers_v4
            .iter()
            .map(|(ip, class_id)| {
                let entry = PeerEntry {
                    class_id: *class_id,
                    ..PeerEntry::default()
                };
                (IpNet::from(IpAddr::V4(*ip)), entry)
            })
            .collect(),
        policy,
        policy_names: policies.iter().map(|policy| policy.key.clone()).collect(),
        diagnostics,
    }
}

/// Both directions, ingress first: the order entries and diagnostics are made in.
const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

#[cfg(test)]
mod properties;
#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests parse address literals")]
mod tests;
