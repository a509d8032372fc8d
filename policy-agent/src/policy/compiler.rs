//! The compiler: cluster state -> the `DatapathTables` of one node.
//!
//! Pure; imports only `crate::model`, `crate::policy::*` and `policy_common`'s
//! constants. Its output, looked up with `DatapathTables::lookup` as the BPF program
//! looks it up, agrees with the reference evaluator on every query (property-tested
//! in `compiler/properties.rs`); bad input narrows both alike and is reported.
//!
//! Steps, each in its own module:
//! 1. `endpoints`: local pods -> endpoint ids (pods every policy treats alike, named
//!    ports of their ingress rules included, share one), isolation and addresses;
//! 2. `applied`: the peers and egress port names of the rules that apply to some
//!    local endpoint, interned;
//! 3. `classes`: pod addresses, ipBlock regions, node and Service addresses (both
//!    families) -> peer classes (addresses every applied rule treats alike share
//!    one; the rest is `CLASS_WORLD`);
//! 4. `entries`: (endpoint, direction, class, protocol, port block) -> the first
//!    rule that allows it (`ports` turns numbers, names and endPort ranges into
//!    port blocks);
//! 5. `diagnostics`: bad input in applied rules, naming policy and field.

mod applied;
mod classes;
mod diagnostics;
mod endpoints;
mod entries;
mod ports;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    model::{ClusterState, NetworkPolicy, Pod},
    policy::tables::{DatapathTables, Direction, Isolation},
};

/// Compiles `state` into the tables for the pods `is_local` accepts (the pods of one
/// node), whose own addresses are `node_addresses` (ingress from them always
/// passes). Only rules of policies that apply to a local pod shape the tables and
/// the diagnostics. Deterministic: equal inputs give equal tables, ids included.
pub fn compile(
    state: &ClusterState,
    node_addresses: &[IpAddr],
    is_local: impl Fn(&Pod) -> bool,
) -> DatapathTables {
    let policies: Vec<&NetworkPolicy> = state.policies.values().collect();
    let owners = address_owners(state);
    let endpoints = endpoints::assign(state, &policies, &owners, is_local);
    let applied = applied::Applied::collect(&policies, &endpoints.applied);
    let classes = classes::assign(state, &applied, &owners, node_addresses);
    let policy = entries::allow_entries(&entries::Inputs {
        policies: &policies,
        endpoints: &endpoints,
        applied: &applied,
        classes: &classes,
    });
    let isolation = endpoints
        .by_id
        .iter()
        .map(|(id, group)| {
            let isolation = Isolation {
                ingress: group.deciding.ingress.clone(),
                egress: group.deciding.egress.clone(),
            };
            (*id, isolation)
        })
        .collect();
    DatapathTables {
        isolation,
        diagnostics: diagnostics::diagnostics(state, &policies, &endpoints.applied),
        endpoints: endpoints.entries,
        endpoint_addresses: endpoints.addresses,
        peers: classes.peers,
        policy,
        policy_names: policies.iter().map(|policy| policy.key.clone()).collect(),
    }
}

/// How many pod-network pods claim each address (an address of a pod is the
/// pod's only if the count is 1).
fn address_owners(state: &ClusterState) -> BTreeMap<IpAddr, usize> {
    let mut owners = BTreeMap::new();
    for pod in state.pods.values().filter(|pod| !pod.host_network) {
        let unique: BTreeSet<&IpAddr> = pod.ips.iter().collect();
        for ip in unique {
            *owners.entry(*ip).or_default() += 1;
        }
    }
    owners
}

/// Both directions, ingress first: the order entries and diagnostics are made in.
const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

#[cfg(test)]
mod properties;
#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests parse address literals")]
mod tests;
