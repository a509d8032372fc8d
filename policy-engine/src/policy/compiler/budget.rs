//! Step 5: which policies to refuse so that one node's tables fit (the rules are
//! in `policy::capacity`): what each policy costs alone, what the node's tables
//! use, and the next policies to leave out.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::{
    applied::Block,
    entries::{Cost, RuleSets},
};
use crate::{
    model::{NetworkPolicy, Peer, Peers},
    policy::{
        capacity::{Budgets, RefusalReason, Resource},
        rules,
        tables::Direction,
    },
};

/// How much of each resource something takes.
pub(super) type Usage = BTreeMap<Resource, usize>;

/// The usage of a rule set cost.
fn usage_of(cost: &Cost) -> Usage {
    Usage::from([
        (Resource::Rules, cost.rules),
        (Resource::RuleSets, cost.rule_sets),
        (Resource::PolicyEntries, cost.entries),
    ])
}

/// Each policy's standalone usage: its rule set cost (`sets.costs`) and the ipBlock
/// prefixes of its rules that decide for a local endpoint (`applied`).
pub(super) fn standalone(
    policies: &[&NetworkPolicy],
    applied: &BTreeSet<(u32, Direction)>,
    sets: &RuleSets,
) -> BTreeMap<u32, Usage> {
    let mut out: BTreeMap<u32, Usage> = sets
        .costs
        .iter()
        .map(|(id, cost)| (*id, usage_of(cost)))
        .collect();
    let mut prefixes: BTreeMap<u32, BTreeSet<IpNet>> = BTreeMap::new();
    for &(policy_id, direction) in applied {
        let Some(policy) = policies.get(policy_id as usize) else {
            continue;
        };
        for rule in rules(policy, direction) {
            let Peers::Only(peers) = &rule.peers else {
                continue;
            };
            for peer in peers {
                if let Peer::IpBlock { cidr, except } = peer {
                    let own = prefixes.entry(policy_id).or_default();
                    own.extend(Block::new(cidr, except).prefixes());
                }
            }
        }
    }
    for (policy_id, own) in prefixes {
        let v4 = own.iter().filter(|net| matches!(net, IpNet::V4(_))).count();
        let usage = out.entry(policy_id).or_default();
        usage.insert(Resource::PeersV4, v4);
        usage.insert(Resource::PeersV6, own.len() - v4);
    }
    out
}

/// What the node's tables hold of each policy's: its `POLICY` entries (an entry
/// counts for the rule that made it), the `RULE_SETS` entries whose set holds its
/// entries only (those go with it), its rules with entries, and its ipBlock
/// prefixes (from `standalone`, as they are shared only with equal blocks).
fn attributed(sets: &RuleSets, standalone: &BTreeMap<u32, Usage>) -> BTreeMap<u32, Usage> {
    let mut out: BTreeMap<u32, Usage> = BTreeMap::new();
    let mut owners: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut rules: BTreeSet<(u32, Direction, u32)> = BTreeSet::new();
    for (set_id, set) in &sets.policy {
        for rule in set.entries.values().filter_map(|decision| decision.rule()) {
            *out.entry(rule.policy_id)
                .or_default()
                .entry(Resource::PolicyEntries)
                .or_default() += 1;
            owners.entry(*set_id).or_default().insert(rule.policy_id);
            rules.insert((rule.policy_id, set.direction, rule.rule_index));
        }
    }
    for (policy_id, _, _) in rules {
        *out.entry(policy_id)
            .or_default()
            .entry(Resource::Rules)
            .or_default() += 1;
    }
    for set_id in sets.rule_sets.values() {
        if let Some([only]) = owners
            .get(set_id)
            .map(|o| o.iter().copied().collect::<Vec<_>>())
            .as_deref()
        {
            *out.entry(*only)
                .or_default()
                .entry(Resource::RuleSets)
                .or_default() += 1;
        }
    }
    for (policy_id, usage) in standalone {
        for resource in [Resource::PeersV4, Resource::PeersV6] {
            if let Some(prefixes) = usage.get(&resource) {
                out.entry(*policy_id)
                    .or_default()
                    .insert(resource, *prefixes);
            }
        }
    }
    out
}

/// Policies over a per-policy budget, by id, with the first budget they break.
pub(super) fn over_policy_budgets(
    costs: &BTreeMap<u32, Usage>,
    budgets: &Budgets,
) -> Vec<(u32, RefusalReason)> {
    costs
        .iter()
        .filter_map(|(id, usage)| {
            Resource::ALL.iter().find_map(|&resource| {
                let cost = usage.get(&resource).copied().unwrap_or(0);
                let budget = budgets.per_policy(resource);
                (cost > budget).then_some((
                    *id,
                    RefusalReason::PolicyBudget {
                        resource,
                        cost,
                        budget,
                    },
                ))
            })
        })
        .collect()
}

/// For the first resource whose node usage passes its bank's budget: the largest
/// users of it in the node's tables (`attributed` of `sets`, made only then;
/// ties by the later `namespace/name`, i.e. the higher id), as many as cover the
/// overflow, or else the largest standalone user alone (a resource no single
/// policy holds alone, as `RULE_SETS` entries shared by several policies'
/// rules). Empty when the node fits, or when no policy's refusal would free that
/// resource (pod addresses alone overflowing the peers; the write then fails
/// node-wide).
pub(super) fn over_bank(
    node: &Usage,
    sets: &RuleSets,
    standalone: &BTreeMap<u32, Usage>,
    budgets: &Budgets,
) -> Vec<(u32, RefusalReason)> {
    let truncated = sets.truncated;
    // Made once, and only for a node over some budget (rare, and not cheap).
    let mut attributed_once: Option<BTreeMap<u32, Usage>> = None;
    for resource in Resource::ALL {
        let capacity = budgets.node(resource);
        let mut wanted = node.get(&resource).copied().unwrap_or(0);
        if truncated && matches!(resource, Resource::RuleSets | Resource::PolicyEntries) {
            // Counting stopped past the largest budget: at least over it.
            wanted = wanted.max(budgets.node_ceiling() + 1);
        }
        if wanted <= capacity {
            continue;
        }
        let overflow = wanted - capacity;
        let largest = |usages: &BTreeMap<u32, Usage>| {
            let mut users: Vec<(u32, usize)> = usages
                .iter()
                .map(|(id, usage)| (*id, usage.get(&resource).copied().unwrap_or(0)))
                .filter(|(_, cost)| *cost > 0)
                .collect();
            users.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
            users
        };
        let mut chosen = Vec::new();
        let mut freed = 0;
        let attributed = attributed_once.get_or_insert_with(|| attributed(sets, standalone));
        for (id, cost) in largest(attributed) {
            if freed >= overflow {
                break;
            }
            freed += cost;
            chosen.push((id, cost));
        }
        if freed < overflow {
            chosen = largest(standalone).into_iter().take(1).collect();
        }
        if !chosen.is_empty() {
            return chosen
                .into_iter()
                .map(|(id, cost)| {
                    let reason = RefusalReason::Bank {
                        resource,
                        wanted,
                        capacity,
                        cost,
                    };
                    (id, reason)
                })
                .collect();
        }
    }
    Vec::new()
}
