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
//! 4. `entries`: (endpoint, direction, class) -> rule set, (rule set, protocol,
//!    port block) -> the first rule that allows it (`ports` turns numbers, names
//!    and endPort ranges into port blocks), and what each policy costs alone;
//! 5. `budget`: the policies to refuse so the tables fit (`policy::capacity`);
//!    steps 2-4 run again without their rules until nothing more is refused;
//! 6. `diagnostics`: bad input in applied rules, naming policy and field.
//!
//! `Incremental` keeps one node's tables across changes: a pod's change is made
//! on its own (`one_pod`) when only its own entries change, and a Service's,
//! namespace's or policy's (`one_object`) when it changes a Service address's
//! entry, nothing, or only the policy ids. Where the applied rules intern as
//! before, a namespace's labels (`relabel_namespaces`) class only their pods'
//! addresses again. Where they differ at most in pod peers and ipBlocks, a
//! pod's labels (`relabel_pod`) and policy changes (`repolicy`) take the last
//! compile's classes into the new ids, class again only the pod's addresses
//! and those a new peer or block takes in, and make the ipBlock regions again
//! (`classes::reclass`), or keep every class when the applied rules are the
//! same. The steps after the classes run as in a full compile. Anything else
//! compiles in full.

mod applied;
mod budget;
mod classes;
mod cluster;
mod diagnostics;
mod endpoints;
mod entries;
mod incremental;
mod one_object;
mod one_pod;
mod ports;

pub use incremental::{EndpointChange, Incremental, Recompiled};

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::{
    model::{ClusterState, NetworkPolicy, ObjectRef, Pod},
    policy::{
        capacity::{Budgets, Refusal, RefusalReason, Resource},
        isolation::applies_to,
        tables::{DatapathTables, Diagnostic, Direction, Isolation, PeerEntry},
    },
};

/// Compiles `state` into the tables for the pods `is_local` accepts (the pods of one
/// node), whose own addresses are `node_addresses` (ingress from them always
/// passes), within the kernel's capacities (`Budgets::kernel`). Only rules of
/// policies that apply to a local pod shape the tables and the diagnostics.
/// Deterministic: equal inputs give equal tables, ids included.
pub fn compile(
    state: &ClusterState,
    node_addresses: &[IpAddr],
    is_local: impl Fn(&Pod) -> bool,
) -> DatapathTables {
    compile_with(state, node_addresses, is_local, &Budgets::kernel())
}

/// `compile` within `budgets`: policies that do not fit are refused
/// (`DatapathTables::refusals`, `policy::capacity`): their pods stay isolated by
/// them and get none of their allows.
pub fn compile_with(
    state: &ClusterState,
    node_addresses: &[IpAddr],
    is_local: impl Fn(&Pod) -> bool,
    budgets: &Budgets,
) -> DatapathTables {
    compile_indexed(state, node_addresses, is_local, budgets, false).0
}

/// `compile_with`, and with `indexed` what making one object's change on its own
/// needs (`one_pod::Index`; `None` when the tables hold refusals or not
/// `indexed`).
fn compile_indexed(
    state: &ClusterState,
    node_addresses: &[IpAddr],
    is_local: impl Fn(&Pod) -> bool,
    budgets: &Budgets,
    indexed: bool,
) -> (DatapathTables, Option<one_pod::Index>) {
    // ClusterNetworkPolicies' stand-ins follow the NetworkPolicies, so the
    // latter keep their ids whether or not there are any.
    let lowered = cluster::Lowered::of(state);
    let first_tiered = state.policies.len() as u32;
    let policies: Vec<&NetworkPolicy> = state.policies.values().chain(&lowered.policies).collect();
    let subjects = cluster::Subjects::of(state, &lowered, first_tiered);
    let owners = address_owners(state);
    let shared: BTreeSet<IpAddr> = owners
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(ip, _)| *ip)
        .collect();
    let endpoints = endpoints::assign(state, (&policies, &subjects), &shared, is_local);
    // Making one change on its own knows no ClusterNetworkPolicy: with any, every
    // change compiles in full.
    let indexed = indexed && lowered.policies.is_empty();
    let mut refused: Vec<(u32, RefusalReason)> = Vec::new();
    loop {
        let stand_ins = without_rules(&policies[..first_tiered as usize], &refused);
        let refused_tiered: Vec<usize> = refused
            .iter()
            .filter_map(|(id, _)| id.checked_sub(first_tiered))
            .map(|index| index as usize)
            .collect();
        let tiered = lowered.refused(&refused_tiered);
        let effective: Vec<&NetworkPolicy> = (0..)
            .zip(&policies[..first_tiered as usize])
            .map(|(id, policy)| stand_ins.get(&id).unwrap_or(policy))
            .chain(&tiered.policies)
            .collect();
        let applied = applied::Applied::collect(&effective, &endpoints.applied);
        let classes = classes::assign(state, &applied, &shared, node_addresses);
        let sets = entries::rule_sets(
            &entries::Inputs {
                policies: &effective,
                endpoints: &endpoints,
                applied: &applied,
                classes: &classes,
                tiered: &tiered.meta,
                first_tiered,
            },
            budgets.node_ceiling(),
            budgets.per_policy_ceiling(),
        );
        let costs = budget::standalone(&effective, &endpoints.applied, &sets);
        // A refused ClusterNetworkPolicy still denies (and costs a little):
        // refusing it again would never end.
        let new = |next: &mut Vec<(u32, RefusalReason)>| {
            next.retain(|(id, _)| !refused.iter().any(|(done, _)| done == id));
        };
        let mut next = budget::over_policy_budgets(&costs, budgets);
        new(&mut next);
        if next.is_empty() {
            let usage = node_usage(&sets, &classes);
            let over = budget::over_bank(&usage, &sets, &costs, budgets);
            next = over.clone();
            new(&mut next);
            // The bank's largest users were refused already: the next largest
            // not refused yet goes, so the loop still makes room.
            if next.is_empty() {
                if let Some((_, reason)) = over.first() {
                    let largest = costs
                        .iter()
                        .filter(|(id, _)| !refused.iter().any(|(done, _)| done == *id))
                        .max_by_key(|(id, cost)| {
                            (cost.values().sum::<usize>(), std::cmp::Reverse(**id))
                        })
                        .map(|(id, _)| *id);
                    next.extend(largest.map(|id| (id, reason.clone())));
                }
            }
        }
        if next.is_empty() {
            let index = (indexed && refused.is_empty()).then(|| {
                one_pod::Index::new(
                    state,
                    &endpoints,
                    applied,
                    &classes,
                    owners,
                    node_addresses,
                    budgets,
                )
            });
            let refusals = refused
                .into_iter()
                .map(|(id, reason)| refusal(state, &policies, &endpoints, id, reason))
                .collect();
            // Of NetworkPolicies: the sources report bad ClusterNetworkPolicies.
            let network = &policies[..first_tiered as usize];
            let diagnostics = diagnostics::diagnostics(state, network, &endpoints.applied);
            let mut tables = assemble(&policies, endpoints, classes, sets, diagnostics, refusals);
            tables.rule_names = tiered.rule_names();
            return (tables, index);
        }
        refused.extend(next);
    }
}

/// The tables made of the steps' results.
fn assemble(
    policies: &[&NetworkPolicy],
    endpoints: endpoints::Endpoints,
    classes: classes::Classes,
    sets: entries::RuleSets,
    diagnostics: Vec<Diagnostic>,
    refusals: Vec<Refusal>,
) -> DatapathTables {
    DatapathTables {
        isolation: endpoints
            .by_id
            .iter()
            .map(|(id, group)| {
                let isolation = Isolation {
                    ingress: group.deciding.ingress.clone(),
                    egress: group.deciding.egress.clone(),
                };
                (*id, isolation)
            })
            .collect(),
        diagnostics,
        endpoints: endpoints.entries,
        endpoint_addresses: endpoints.addresses,
        peers: classes.peers,
        rule_sets: sets.rule_sets,
        policy: sets.policy,
        policy_names: policies.iter().map(|policy| policy.key.clone()).collect(),
        rule_names: BTreeMap::new(),
        refusals,
    }
}

/// The tables of `state` when it differs from the state `tables` (with `index`,
/// both of a compile without refusals) were compiled from only in the labels of
/// `namespaces`, made without a full compile: endpoints and applied rules must
/// come out as they were (namespace labels shape neither, but a namespace's
/// tunnel permission shapes its endpoints' entries), then only the classes of
/// those namespaces' pod addresses are made again (`classes::reclass`)
/// and the rule sets after them, or, when the classes come out as the last ones
/// and only addresses moved between them, the last rule sets kept
/// (`Relabelled::Classes`). Equal to `compile_indexed`'s tables, ids
/// included; `None`, with `index` unchanged, when anything else would differ or a
/// budget would refuse a policy (a full compile decides those).
fn relabel_namespaces(
    state: &ClusterState,
    is_local: impl Fn(&Pod) -> bool,
    budgets: &Budgets,
    index: &mut one_pod::Index,
    tables: &DatapathTables,
    namespaces: &[&str],
) -> Option<Relabelled> {
    let policies: Vec<&NetworkPolicy> = state.policies.values().collect();
    let shared = index.shared();
    let local = last_endpoints(state, tables, is_local)?;
    let endpoints = endpoints::assign_among(state, &policies, &shared, local.into_iter());
    if endpoints.ids != index.endpoint_ids
        || endpoints.entries != tables.endpoints
        || endpoints.addresses != tables.endpoint_addresses
    {
        return None;
    }
    // Namespace labels shape no applied rule: equal rules, so `index.applied`
    // stays as it is (no `applied_changed`).
    let applied = applied::Applied::collect(&policies, &endpoints.applied);
    if applied != index.applied {
        return None;
    }
    let pods = classes::pods_of(state, namespaces);
    let Reclassed {
        classes,
        sets,
        moved,
    } = reclassed(
        state,
        &policies,
        &shared,
        (index, tables),
        (&endpoints, &applied),
        &pods,
        (budgets, true),
    )?;
    // Everything checked: from here on the change is made.
    index.reclassed(&classes);
    // Diagnostics read the applied rules and the pods' port names: unchanged.
    let diagnostics = tables.diagnostics.clone();
    let made = assemble(&policies, endpoints, classes, sets, diagnostics, Vec::new());
    Some(match moved {
        Some(prefixes) => Relabelled::Classes(made, prefixes),
        None => Relabelled::Tables(made),
    })
}

/// What `relabel_namespaces` made.
enum Relabelled {
    /// Tables whose classes and rule sets are the last ones: only the peer
    /// entries of these addresses changed class (`Recompiled::Reclassed`).
    Classes(DatapathTables, Vec<IpNet>),
    /// Tables made again (classes renumbered, rule sets made after them).
    Tables(DatapathTables),
}

/// The tables of `state` when it differs from the state `tables` (with `index`,
/// both of a compile without refusals) were compiled from only in the labels of
/// one pod, which was `before` and is `after` (its addresses, ports, node and
/// locality as they were; `was_local` and `is_local` agree on it), made without
/// a full compile: the endpoints are made again (its endpoint group may be new or
/// emptied, which renumbers ids), the applied rules may differ in their pod
/// peers and ipBlocks (rules its labels make apply or stop applying), then the
/// pod's own addresses and those a new peer or block takes in are classed again
/// (`classes::reclass`) and the rule sets made after them. Equal to
/// `compile_indexed`'s tables, ids included; `None`, with `index` unchanged, when
/// anything else would differ or a budget would refuse a policy.
fn relabel_pod(
    state: &ClusterState,
    (before, after): (&Pod, &Pod),
    was_local: impl Fn(&Pod) -> bool,
    is_local: impl Fn(&Pod) -> bool,
    budgets: &Budgets,
    index: &mut one_pod::Index,
    tables: &DatapathTables,
) -> Option<DatapathTables> {
    let same_place = before.key == after.key
        && before.ips == after.ips
        && before.ports == after.ports
        && before.node_name == after.node_name
        && before.host_network == after.host_network
        && before.finished == after.finished
        && was_local(before) == is_local(after);
    if !same_place {
        return None;
    }
    remade(state, is_local, budgets, index, tables, Some(&[after]))
}

/// The tables of `state` when it differs from the state `tables` (with `index`,
/// both of a compile without refusals) were compiled from only in policies whose
/// rules, applied to the endpoints they select now, differ at most in the pod
/// peers and ipBlocks they name (a port edited, a policy added or removed): the
/// endpoints are made again, the classes the last compile's or, where peers or
/// blocks came or went, those taken into the new ids (`classes::reclass`), then
/// the rule sets and the diagnostics. Equal to `compile_indexed`'s tables, ids
/// included; `None`, with `index` unchanged, when the egress port names of the
/// applied rules differ or a budget would refuse a policy.
fn repolicy(
    state: &ClusterState,
    is_local: impl Fn(&Pod) -> bool,
    budgets: &Budgets,
    index: &mut one_pod::Index,
    tables: &DatapathTables,
) -> Option<DatapathTables> {
    remade(state, is_local, budgets, index, tables, None)
}

/// `relabel_pod` and `repolicy` past their own checks: the endpoints made again,
/// the classes the last compile's when the applied rules come out as before,
/// else (or with `reclass`, those pods' addresses to class again) made again
/// from the last compile's (`reclassed`), then the rule sets and the
/// diagnostics.
fn remade(
    state: &ClusterState,
    is_local: impl Fn(&Pod) -> bool,
    budgets: &Budgets,
    index: &mut one_pod::Index,
    tables: &DatapathTables,
    reclass: Option<&[&Pod]>,
) -> Option<DatapathTables> {
    let policies: Vec<&NetworkPolicy> = state.policies.values().collect();
    let shared = index.shared();
    let pods = last_endpoints(state, tables, &is_local)?;
    let endpoints = endpoints::assign_among(state, &policies, &shared, pods.into_iter());
    let applied = applied::Applied::collect(&policies, &endpoints.applied);
    let same_peers = applied == index.applied;
    let (classes, sets) = match reclass {
        None if same_peers => {
            let classes = index.classes(tables.peers.clone());
            let sets = checked_rule_sets(&policies, &endpoints, &applied, &classes, budgets)?;
            (classes, sets)
        }
        _ => {
            let done = reclassed(
                state,
                &policies,
                &shared,
                (index, tables),
                (&endpoints, &applied),
                reclass.unwrap_or_default(),
                (budgets, false),
            )?;
            (done.classes, done.sets)
        }
    };
    // Everything checked: from here on the change is made.
    if reclass.is_some() || !same_peers {
        index.reclassed(&classes);
    }
    if !same_peers {
        index.applied_changed(applied);
    }
    index.endpoints_made(&endpoints);
    // Which (policy, direction) pairs apply may have changed with equal interned
    // peers (a rule without peers): diagnostics are made again.
    let diagnostics = diagnostics::diagnostics(state, &policies, &endpoints.applied);
    Some(assemble(
        &policies,
        endpoints,
        classes,
        sets,
        diagnostics,
        Vec::new(),
    ))
}

/// The pods of the last compile's endpoints (`tables`) as `state` has them, in
/// key order: the pods a compile of `state` makes endpoints of when no pod came,
/// went or changed its locality since (the callers' contract: a pod that did is
/// among the changes, and those compile otherwise). Saves a scan of every pod of
/// the cluster. `None` when one of them is gone or no longer an endpoint.
fn last_endpoints<'s>(
    state: &'s ClusterState,
    tables: &DatapathTables,
    is_local: impl Fn(&Pod) -> bool,
) -> Option<Vec<&'s Pod>> {
    let pods: Vec<&Pod> = tables
        .endpoints
        .keys()
        .map(|key| {
            state
                .pods
                .get(key)
                .filter(|pod| endpoints::is_endpoint(pod, &is_local))
        })
        .collect::<Option<_>>()?;
    // A caller that broke the contract would leave a pod that became local
    // without an entry (unisolated) until a full compile: the tests' builds
    // check it with the scan this saves.
    debug_assert_eq!(
        pods.len(),
        state
            .pods
            .values()
            .filter(|pod| endpoints::is_endpoint(pod, &is_local))
            .count(),
        "a pod became a local endpoint without being among the changes"
    );
    Some(pods)
}

/// The prefixes whose peer entry moved from `before` to `after`, in order, when
/// the two hold the same prefixes and every entry that differs is a host
/// prefix (an address) that moved only its class, neither a node's nor a
/// Service's address before or after; `None` otherwise. One walk over both.
fn moved_classes(
    before: &BTreeMap<IpNet, PeerEntry>,
    after: &BTreeMap<IpNet, PeerEntry>,
) -> Option<Vec<IpNet>> {
    if before.len() != after.len() {
        return None;
    }
    let mut moved = Vec::new();
    for ((net, old), (net_after, new)) in before.iter().zip(after) {
        if net != net_after {
            return None;
        }
        if old == new {
            continue;
        }
        let flagged = old.node || old.service || new.node || new.service;
        if flagged || net.prefix_len() != net.max_prefix_len() {
            return None;
        }
        moved.push(*net);
    }
    Some(moved)
}

/// What a change made without a full compile makes once its endpoints and
/// applied rules are known (`relabel_namespaces`, `remade`): the last compile's
/// classes taken to `applied`, `pods`' addresses classed again
/// (`classes::reclass`), then the rule sets after them; `None` when either would
/// not be the full compile's or a budget would refuse a policy. With
/// `rules_as_before` (endpoints, applied rules and policies as the last
/// compile's), classes that come out as the last ones keep the last rule sets:
/// the rule sets read the classes only through their signatures (which peers
/// admit each class, which ports its members name); and when only addresses'
/// classes moved (`moved_classes`), the budget use is the last one too.
fn reclassed(
    state: &ClusterState,
    policies: &[&NetworkPolicy],
    shared: &BTreeSet<IpAddr>,
    (index, tables): (&one_pod::Index, &DatapathTables),
    (endpoints, applied): (&endpoints::Endpoints, &applied::Applied),
    pods: &[&Pod],
    (budgets, rules_as_before): (&Budgets, bool),
) -> Option<Reclassed> {
    let signatures = index.signatures();
    let last = classes::LastClasses {
        applied: &index.applied,
        signatures: &signatures,
        peers: &tables.peers,
        owners: &index.owners,
    };
    let classes = classes::reclass(state, applied, shared, &last, pods)?;
    let moved = (rules_as_before && classes.signatures == signatures)
        .then(|| moved_classes(&tables.peers, &classes.peers))
        .flatten();
    let sets = match moved {
        Some(_) => entries::RuleSets {
            rule_sets: tables.rule_sets.clone(),
            policy: tables.policy.clone(),
            ..entries::RuleSets::default()
        },
        None => checked_rule_sets(policies, endpoints, applied, &classes, budgets)?,
    };
    Some(Reclassed {
        classes,
        sets,
        moved,
    })
}

/// `reclassed`'s result.
struct Reclassed {
    classes: classes::Classes,
    sets: entries::RuleSets,
    /// With the last classes and rule sets kept: the addresses whose peer entry
    /// moved class, the only entries that changed (`moved_classes`).
    moved: Option<Vec<IpNet>>,
}

/// The rule sets of a compile without refusals (`None` when the budgets would
/// refuse a policy).
fn checked_rule_sets(
    policies: &[&NetworkPolicy],
    endpoints: &endpoints::Endpoints,
    applied: &applied::Applied,
    classes: &classes::Classes,
    budgets: &Budgets,
) -> Option<entries::RuleSets> {
    let sets = entries::rule_sets(
        &entries::Inputs {
            policies,
            endpoints,
            applied,
            classes,
            tiered: &[],
            first_tiered: policies.len() as u32,
        },
        budgets.node_ceiling(),
        budgets.per_policy_ceiling(),
    );
    let costs = budget::standalone(policies, &endpoints.applied, &sets);
    if !budget::over_policy_budgets(&costs, budgets).is_empty() {
        return None;
    }
    let usage = node_usage(&sets, classes);
    if !budget::over_bank(&usage, &sets, &costs, budgets).is_empty() {
        return None;
    }
    Some(sets)
}

/// The refused policies (by id) without their rules.
fn without_rules(
    policies: &[&NetworkPolicy],
    refused: &[(u32, RefusalReason)],
) -> BTreeMap<u32, NetworkPolicy> {
    refused
        .iter()
        .filter_map(|(id, _)| {
            let policy = policies.get(*id as usize)?;
            let stand_in = NetworkPolicy {
                ingress: Vec::new(),
                egress: Vec::new(),
                ..(*policy).clone()
            };
            Some((*id, stand_in))
        })
        .collect()
}

/// What the node's tables use of each resource.
fn node_usage(sets: &entries::RuleSets, classes: &classes::Classes) -> budget::Usage {
    let rules: BTreeSet<_> = sets
        .policy
        .values()
        .flat_map(|set| {
            set.entries
                .values()
                .filter_map(|decision| Some((set.direction, decision.rule()?)))
        })
        .collect();
    let v4 = classes
        .peers
        .keys()
        .filter(|net| matches!(net, IpNet::V4(_)))
        .count();
    budget::Usage::from([
        (Resource::Rules, rules.len()),
        (Resource::RuleSets, sets.rule_sets.len()),
        (
            Resource::PolicyEntries,
            sets.policy.values().map(|set| set.entries.len()).sum(),
        ),
        (Resource::PeersV4, v4),
        (Resource::PeersV6, classes.peers.len() - v4),
    ])
}

/// The refusal of policy `id`, naming the local pods it selects.
fn refusal(
    state: &ClusterState,
    policies: &[&NetworkPolicy],
    endpoints: &endpoints::Endpoints,
    id: u32,
    reason: RefusalReason,
) -> Refusal {
    let policy = policies.get(id as usize).copied();
    let pods = endpoints
        .entries
        .iter()
        .filter(|(key, entry)| {
            let (Some(policy), Some(pod)) = (policy, state.pods.get(*key)) else {
                return false;
            };
            // A ClusterNetworkPolicy's stand-in selects nothing itself: its
            // pods are those of the endpoint groups it applies to.
            let tiered = endpoints
                .by_id
                .get(&entry.endpoint_id)
                .is_some_and(|group| {
                    DIRECTIONS
                        .iter()
                        .any(|direction| group.tiered.get(*direction).contains(&id))
                });
            tiered
                || DIRECTIONS
                    .iter()
                    .any(|direction| applies_to(policy, pod, *direction))
        })
        .map(|(key, _)| key.clone())
        .collect();
    Refusal {
        policy: policy.map_or_else(|| ObjectRef::new("", ""), |p| p.key.clone()),
        reason,
        pods,
    }
}

/// How many pod-network pods claim each address (an address of a pod is the
/// pod's only if the count is 1).
fn address_owners(state: &ClusterState) -> BTreeMap<IpAddr, usize> {
    // Sorted and counted in a list, then built in bulk: cheaper than a map
    // insert per address.
    let mut all: Vec<IpAddr> = Vec::with_capacity(state.pods.len());
    for pod in state.pods.values().filter(|pod| !pod.host_network) {
        for (index, ip) in pod.ips.iter().enumerate() {
            if !pod.ips[..index].contains(ip) {
                all.push(*ip);
            }
        }
    }
    all.sort_unstable();
    let mut counted: Vec<(IpAddr, usize)> = Vec::with_capacity(all.len());
    for ip in all {
        match counted.last_mut() {
            Some((last, count)) if *last == ip => *count += 1,
            _ => counted.push((ip, 1)),
        }
    }
    counted.into_iter().collect()
}

/// Both directions, ingress first: the order entries and diagnostics are made in.
const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

#[cfg(test)]
pub(super) mod properties;
#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests parse address literals")]
mod tests;
