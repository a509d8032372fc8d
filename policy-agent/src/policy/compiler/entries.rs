//! Step 3: allow entries, and diagnostics for what is not enforced yet.
//!
//! Not enforced yet, and so failing closed: `ipBlock` peers, named ports and endPort
//! ranges contribute no entry (they can only narrow access, never widen it) and one
//! diagnostic each.

use std::collections::{BTreeMap, BTreeSet};

use policy_common::peer::CLASS_WORLD;

use super::{
    classes::{Classes, PeerRef},
    endpoints::Endpoints,
    DIRECTIONS,
};
use crate::{
    model::{NetworkPolicy, Peer, Peers, PolicyPort, PortRef, Rule},
    policy::{
        rules,
        tables::{Diagnostic, Direction, PolicyMatch, PortBlock, RuleRef},
    },
};

/// Every allow entry: for each endpoint id and each direction it is isolated in, for
/// each policy applying to it, for each rule: (admitted classes) x (port keys).
///
/// Lookup precedence (`DatapathTables::lookup`, the BPF program's `decide`) makes
/// any entry an allow, so the order only picks the explanation: on a duplicate key
/// the first one made, i.e. the lowest policy id then rule index, is kept.
pub(super) fn allow_entries(
    policies: &[&NetworkPolicy],
    endpoints: &Endpoints,
    classes: &Classes,
) -> BTreeMap<PolicyMatch, RuleRef> {
    let mut entries = BTreeMap::new();
    for (&endpoint_id, applying) in &endpoints.by_id {
        for direction in DIRECTIONS {
            for &policy_id in applying.get(direction) {
                let Some(policy) = policies.get(policy_id as usize) else {
                    continue;
                };
                for (rule_index, rule) in (0..).zip(rules(policy, direction)) {
                    let rule_ref = RuleRef {
                        policy_id,
                        rule_index,
                    };
                    let admitted = admitted_classes(rule, rule_ref, direction, classes);
                    let ports = port_keys(&rule.ports);
                    for class_id in admitted {
                        for &(protocol, port) in &ports {
                            let key = PolicyMatch {
                                endpoint_id,
                                class_id,
                                direction,
                                protocol,
                                port: port.map(PortBlock::single),
                            };
                            entries.entry(key).or_insert(rule_ref);
                        }
                    }
                }
            }
        }
    }
    entries
}

/// The classes a rule admits: all of them (and `CLASS_WORLD`) for `Peers::All`,
/// else those whose members one of its pod peers matches. `ipBlock` admits none yet.
fn admitted_classes(
    rule: &Rule,
    rule_ref: RuleRef,
    direction: Direction,
    classes: &Classes,
) -> BTreeSet<u32> {
    match &rule.peers {
        Peers::All => std::iter::once(CLASS_WORLD)
            .chain(classes.signatures.keys().copied())
            .collect(),
        Peers::Only(peers) => (0..)
            .zip(peers)
            .filter(|(_, peer)| matches!(peer, Peer::Pods { .. }))
            .flat_map(|(peer_index, _)| {
                classes.admitted_by(PeerRef {
                    policy_id: rule_ref.policy_id,
                    direction,
                    rule_index: rule_ref.rule_index,
                    peer_index,
                })
            })
            .collect(),
    }
}

/// The (protocol, port) key parts of a rule's ports: empty = every protocol; a
/// protocol alone = every port of it; a number = that port. Named ports and endPort
/// ranges give none yet.
fn port_keys(ports: &[PolicyPort]) -> Vec<(Option<u8>, Option<u16>)> {
    if ports.is_empty() {
        return vec![(None, None)];
    }
    ports
        .iter()
        .filter_map(|port| {
            let protocol = Some(port.protocol.number());
            match (&port.port, port.end_port) {
                (None, _) => Some((protocol, None)),
                (Some(PortRef::Number(first)), None) => Some((protocol, Some(*first))),
                (Some(PortRef::Number(first)), Some(last)) if last == *first => {
                    Some((protocol, Some(*first)))
                }
                (Some(PortRef::Number(_)), Some(_)) | (Some(PortRef::Name(_)), _) => None,
            }
        })
        .collect()
}

/// One diagnostic per peer or port of an applied rule that is not enforced yet.
pub(super) fn diagnostics(
    policies: &[&NetworkPolicy],
    applied: &BTreeSet<(u32, Direction)>,
) -> Vec<Diagnostic> {
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
                for message in rule_gaps(rule, &path, direction) {
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

/// What one rule (at `path`) asks for that the tables do not enforce yet.
fn rule_gaps(rule: &Rule, path: &str, direction: Direction) -> Vec<String> {
    const DROPPED: &str = "is not enforced yet; traffic it would allow is dropped";
    let field = match direction {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    };
    let mut gaps = Vec::new();
    if let Peers::Only(peers) = &rule.peers {
        for (index, peer) in peers.iter().enumerate() {
            if let Peer::IpBlock { cidr, .. } = peer {
                gaps.push(format!("{path}.{field}[{index}]: ipBlock {cidr} {DROPPED}"));
            }
        }
    }
    for (index, port) in rule.ports.iter().enumerate() {
        match (&port.port, port.end_port) {
            (Some(PortRef::Name(name)), _) => gaps.push(format!(
                "{path}.ports[{index}]: named port {name:?} {DROPPED}"
            )),
            (Some(PortRef::Number(first)), Some(last)) if last != *first => gaps.push(format!(
                "{path}.ports[{index}]: endPort range {first}-{last} {DROPPED}"
            )),
            _ => {}
        }
    }
    gaps
}
