//! Step 3: allow entries.
//!
//! For each endpoint id, each direction it is isolated in, each policy deciding for
//! it and each rule: (admitted classes) x (port keys). Named ports resolve on the
//! pod receiving the traffic: the endpoint's own pods for ingress, the members of
//! each admitted class for egress (so a rule without peers and a named port admits
//! only the classes that resolve the name).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    applied::{Applied, PeerId},
    classes::Classes,
    endpoints::{Endpoints, Group},
    ports::{number_keys, port_items, PortItem, PortKey},
    DIRECTIONS,
};
use crate::{
    model::{NetworkPolicy, Peers, Rule},
    policy::{
        rules,
        tables::{Direction, PolicyMatch, RuleRef},
    },
};

/// What entries are made from.
pub(super) struct Inputs<'a, 'p> {
    /// Policies, sorted; indices are policy ids.
    pub policies: &'a [&'p NetworkPolicy],
    /// Endpoint ids and what their pods share.
    pub endpoints: &'a Endpoints,
    /// Interned peers and port names of the applied rules.
    pub applied: &'a Applied<'p>,
    /// Peer classes.
    pub classes: &'a Classes,
}

/// Every allow entry.
///
/// Lookup precedence (`DatapathTables::lookup`, the BPF program's `decide`) makes
/// any entry an allow, so the order only picks the explanation: on a duplicate key
/// the first one made, i.e. the lowest policy id then rule index, is kept.
pub(super) fn allow_entries(inputs: &Inputs<'_, '_>) -> BTreeMap<PolicyMatch, RuleRef> {
    let mut entries = BTreeMap::new();
    for (&endpoint_id, group) in &inputs.endpoints.by_id {
        for direction in DIRECTIONS {
            for &policy_id in group.deciding.get(direction) {
                let Some(policy) = inputs.policies.get(policy_id as usize).copied() else {
                    continue;
                };
                for (rule_index, rule) in (0..).zip(rules(policy, direction)) {
                    let rule_ref = RuleRef {
                        policy_id,
                        rule_index,
                    };
                    let mut add = |class_id, (protocol, port): PortKey| {
                        let key = PolicyMatch {
                            endpoint_id,
                            class_id,
                            direction,
                            protocol,
                            port,
                        };
                        entries.entry(key).or_insert(rule_ref);
                    };
                    rule_entries(inputs, policy, rule, direction, group, &mut add);
                }
            }
        }
    }
    entries
}

/// Calls `add` with every (class, port key) one rule allows for `group`.
fn rule_entries(
    inputs: &Inputs<'_, '_>,
    policy: &NetworkPolicy,
    rule: &Rule,
    direction: Direction,
    group: &Group,
    add: &mut impl FnMut(u32, PortKey),
) {
    let admitted = admitted_classes(inputs, policy, rule);
    for item in port_items(&rule.ports) {
        match item {
            PortItem::Keys(keys) => {
                for &class_id in &admitted {
                    for key in &keys {
                        add(class_id, *key);
                    }
                }
            }
            PortItem::Named(name, protocol) => match direction {
                Direction::Ingress => {
                    let numbers = group.ingress_ports.get(&(name.to_string(), protocol));
                    for &class_id in &admitted {
                        for key in number_keys(protocol, numbers.into_iter().flatten()) {
                            add(class_id, key);
                        }
                    }
                }
                Direction::Egress => {
                    let Some(name_id) = inputs.applied.egress_name_id(name, protocol) else {
                        continue;
                    };
                    for &class_id in &admitted {
                        let numbers: Vec<u16> =
                            inputs.classes.egress_numbers(class_id, name_id).collect();
                        for key in number_keys(protocol, &numbers) {
                            add(class_id, key);
                        }
                    }
                }
            },
        }
    }
}

/// The classes a rule admits: every class (and `CLASS_WORLD`) for `Peers::All`,
/// else those one of its peers admits (none for `Peer::Invalid`).
fn admitted_classes(inputs: &Inputs<'_, '_>, policy: &NetworkPolicy, rule: &Rule) -> BTreeSet<u32> {
    match &rule.peers {
        Peers::All => inputs.classes.all().collect(),
        Peers::Only(peers) => peers
            .iter()
            .filter_map(|peer| inputs.applied.peer_id(policy, peer))
            .flat_map(|id: PeerId| inputs.classes.admitted_by(id).iter().copied())
            .collect(),
    }
}
