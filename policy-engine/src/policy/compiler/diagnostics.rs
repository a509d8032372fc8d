//! Bad input in applied rules, reported naming the policy and the field.
//!
//! Each case already fails closed in the tables (and in the evaluator): the peer or
//! port entry matches nothing, so the rule admits only what its other entries do.
//! - an invalid peer (`Peer::Invalid`: an ipBlock that is not a CIDR, an except
//!   outside its cidr);
//! - endPort below port, or with a named or absent port;
//! - a port name no pod of the cluster declares for that protocol.

use std::collections::BTreeSet;

use super::DIRECTIONS;
use crate::{
    model::{ClusterState, NetworkPolicy, Peer, Peers, PolicyPort, PortRef, Protocol, Rule},
    policy::{
        rules,
        tables::{Diagnostic, Direction},
    },
};

/// What is said of an entry that matches nothing.
const FAIL_CLOSED: &str = "matches nothing (fail closed)";

/// One diagnostic per bad peer or port of the rules of the `applied` (policy
/// index, direction) pairs, in policy, direction, rule and field order.
pub(super) fn diagnostics(
    state: &ClusterState,
    policies: &[&NetworkPolicy],
    applied: &BTreeSet<(u32, Direction)>,
) -> Vec<Diagnostic> {
    let declared = declared(state, policies, applied);
    let mut out = Vec::new();
    for (policy_id, policy) in (0..).zip(policies) {
        for direction in DIRECTIONS {
            if !applied.contains(&(policy_id, direction)) {
                continue;
            }
            for (rule_index, rule) in rules(policy, direction).iter().enumerate() {
                let path = match direction {
                    Direction::Ingress => format!("spec.ingress[{rule_index}]"),
                    Direction::Egress => format!("spec.egress[{rule_index}]"),
                };
                for message in rule_problems(rule, &path, &declared) {
                    out.push(Diagnostic {
                        policy: policy.key.clone(),
                        message,
                    });
                }
            }
        }
    }
    out
}

/// The port names (with protocol) the rules of the `applied` pairs use that some
/// pod of the cluster declares. Pods are read until every name is found.
fn declared<'s>(
    state: &'s ClusterState,
    policies: &[&'s NetworkPolicy],
    applied: &BTreeSet<(u32, Direction)>,
) -> BTreeSet<(&'s str, Protocol)> {
    let mut wanted: BTreeSet<(&str, Protocol)> = BTreeSet::new();
    for &(policy_id, direction) in applied {
        let Some(policy) = policies.get(policy_id as usize) else {
            continue;
        };
        for rule in rules(policy, direction) {
            for port in &rule.ports {
                if let Some(PortRef::Name(name)) = &port.port {
                    wanted.insert((name.as_str(), port.protocol));
                }
            }
        }
    }
    let mut found = BTreeSet::new();
    for port in state.pods.values().flat_map(|pod| &pod.ports) {
        if found.len() == wanted.len() {
            break;
        }
        if let Some(name) = &port.name {
            if let Some(name) = wanted.get(&(name.as_str(), port.protocol)) {
                found.insert(*name);
            }
        }
    }
    found
}

/// What is wrong with one rule at `path`.
fn rule_problems(rule: &Rule, path: &str, declared: &BTreeSet<(&str, Protocol)>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Peers::Only(peers) = &rule.peers {
        for peer in peers {
            if let Peer::Invalid { field, reason } = peer {
                problems.push(format!("{field}: {reason}; the peer {FAIL_CLOSED}"));
            }
        }
    }
    for (index, port) in rule.ports.iter().enumerate() {
        if let Some(problem) = port_problem(port, declared) {
            problems.push(format!(
                "{path}.ports[{index}]: {problem}; the entry {FAIL_CLOSED}"
            ));
        }
    }
    problems
}

/// What is wrong with one `ports` entry, if anything.
fn port_problem(port: &PolicyPort, declared: &BTreeSet<(&str, Protocol)>) -> Option<String> {
    if let Some(problem) = port.rejected_end_port() {
        return Some(problem);
    }
    match &port.port {
        Some(PortRef::Name(name)) if !declared.contains(&(name.as_str(), port.protocol)) => {
            Some(format!(
                "no pod in the cluster declares a {} port named {name:?}",
                port.protocol
            ))
        }
        _ => None,
    }
}
