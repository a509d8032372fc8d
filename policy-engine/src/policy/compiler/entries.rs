//! Step 4: rule sets, and what each policy would cost alone.
//!
//! For each endpoint id and each direction it is isolated in, the rules of the
//! policies deciding for it are grouped by the peer classes they admit. What the
//! endpoint allows with one class is one rule set: (protocol, port block) -> the
//! first rule (lowest policy id, then rule index) that allows it. Equal sets are
//! stored once (`Interner`), so 257 classes one rule admits on 256 ports are 257
//! `RULE_SETS` entries and 256 `POLICY` entries, not 65,792.
//!
//! Rules without peers (`Peers::All`) admit every class: rather than one entry
//! per class, they make the endpoint's *any-class* set (`RULE_SET_ANY_CLASS`),
//! which the lookup falls back to when the peer's class has no set of its own. A
//! class some rule names (a pod peer or an ipBlock admits it, or an egress named
//! port of a rule without peers resolves on its members) gets its own set, holding
//! the rules without peers too; one equal to the any-class set is left out.
//!
//! Named ports resolve on the pod receiving the traffic: the endpoint's own pods
//! for ingress, the members of each admitted class for egress (so a rule without
//! peers and an egress named port admits only the classes that resolve the name).
//!
//! Alongside the node's tables, each policy's *standalone cost* (the entries its
//! rules would make if no other policy existed) is counted, for the budgets
//! (`capacity`). Both stop growing past a ceiling: what is over it is refused and
//! recompiled, never materialised in full.

use std::collections::{hash_map::Entry, BTreeMap, BTreeSet};

use policy_common::policy::RULE_SET_ANY_CLASS;

use super::{
    applied::{Applied, PeerId},
    classes::{Classes, FastMap},
    cluster::ClusterMeta,
    endpoints::{Endpoints, Group},
    ports::{number_keys, port_items, PortItem, PortKey},
    DIRECTIONS,
};
use crate::{
    model::{NetworkPolicy, Peers, PolicyMode, PortRef, Rule, RuleAction, Tier},
    policy::{
        rules,
        tables::{Decision, Direction, PortMatch, RuleRef, RuleSet, RuleSetMatch},
    },
};

/// What rule sets are made from.
pub(super) struct Inputs<'a, 'p> {
    /// Policies, sorted; indices are policy ids (refused ones without rules).
    pub policies: &'a [&'p NetworkPolicy],
    /// Endpoint ids and what their pods share.
    pub endpoints: &'a Endpoints,
    /// Interned peers and port names of the applied rules.
    pub applied: &'a Applied,
    /// Peer classes.
    pub classes: &'a Classes,
    /// The ClusterNetworkPolicies' stand-ins: policy id `first_tiered + i` is
    /// `tiered[i]`'s.
    pub tiered: &'a [ClusterMeta],
    /// The policy id of the first stand-in (the number of NetworkPolicies).
    pub first_tiered: u32,
}

impl Inputs<'_, '_> {
    /// What the stand-in `policy_id` keeps beside its rules; `None` for a
    /// NetworkPolicy.
    fn meta(&self, policy_id: u32) -> Option<&ClusterMeta> {
        let index = policy_id.checked_sub(self.first_tiered)?;
        self.tiered.get(index as usize)
    }
}

/// The entries one policy (or the node) makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cost {
    /// Rules with entries (`RULE_COUNTERS` slots).
    pub rules: usize,
    /// `RULE_SETS` entries.
    pub rule_sets: usize,
    /// `POLICY` entries.
    pub entries: usize,
}

/// The rule set step's result.
#[derive(Debug, Default)]
pub(super) struct RuleSets {
    /// `DatapathTables::rule_sets`.
    pub rule_sets: BTreeMap<RuleSetMatch, u32>,
    /// `DatapathTables::policy`.
    pub policy: BTreeMap<u32, RuleSet>,
    /// Policy id -> what it would cost alone (only policies with entries).
    pub costs: BTreeMap<u32, Cost>,
    /// The node's sets passed `ceiling` entries and were not finished: the tables
    /// are incomplete and must not be used.
    pub truncated: bool,
}

/// One rule that admits a class: its reference and the rule.
type Admitting<'r> = (RuleRef, &'r Rule);

/// What a set's content depends on, beside its rules: the endpoint (ingress named
/// ports resolve on its pods) or the class (egress named ports resolve on its
/// members), when some rule uses a named port.
type Resolution = Option<(u32, Option<u32>)>;

/// What a set's content is made of: its direction, its rules, what their named
/// ports resolve on, and how the tiers are walked.
type SetKey = (Direction, Vec<RuleRef>, Resolution, Option<Walk>);

/// Equal contents share one id.
#[derive(Default)]
struct Interner {
    ids: FastMap<(Direction, Vec<(PortMatch, Decision)>), u32>,
    sets: BTreeMap<u32, RuleSet>,
    entries: usize,
    rules: BTreeSet<(Direction, RuleRef)>,
}

impl Interner {
    /// The id of a set with `entries` (ids dense from 1, in first-seen order).
    fn intern(&mut self, direction: Direction, entries: BTreeMap<PortMatch, Decision>) -> u32 {
        let content: Vec<(PortMatch, Decision)> = entries.iter().map(|(k, v)| (*k, *v)).collect();
        let next = self.sets.len() as u32 + 1;
        match self.ids.entry((direction, content)) {
            Entry::Occupied(found) => *found.get(),
            Entry::Vacant(slot) => {
                slot.insert(next);
                self.entries += entries.len();
                self.rules.extend(
                    entries
                        .values()
                        .filter_map(|decision| Some((direction, decision.rule()?))),
                );
                self.sets.insert(next, RuleSet { direction, entries });
                next
            }
        }
    }
}

/// One set of tables being built (the node's, or one policy's alone): interned
/// sets, the triples pointing at them, and a cache of materialised contents.
struct Builder {
    interner: Interner,
    rule_sets: BTreeMap<RuleSetMatch, u32>,
    /// What a set is made of -> interned id (`None`: empty content).
    cache: FastMap<SetKey, Option<u32>>,
    /// Stop once `POLICY` or `RULE_SETS` entries pass it.
    ceiling: usize,
    truncated: bool,
}

impl Builder {
    fn new(ceiling: usize) -> Self {
        Self {
            interner: Interner::default(),
            rule_sets: BTreeMap::new(),
            cache: FastMap::default(),
            ceiling,
            truncated: false,
        }
    }

    fn cost(&self) -> Cost {
        Cost {
            rules: self.interner.rules.len(),
            rule_sets: self.rule_sets.len(),
            entries: self.interner.entries,
        }
    }

    /// Whether the ceiling was passed (and then sets no longer grow).
    fn full(&mut self) -> bool {
        if self.interner.entries > self.ceiling || self.rule_sets.len() > self.ceiling {
            self.truncated = true;
        }
        self.truncated
    }

    /// The set of `admitting` (in order) for `target`, interned; `None` if empty.
    fn set_of(
        &mut self,
        inputs: &Inputs<'_, '_>,
        target: &Target<'_>,
        admitting: &[Admitting<'_>],
    ) -> Option<u32> {
        let resolution = resolution(target, admitting);
        let key = (
            target.direction,
            admitting.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            resolution,
            target.walk,
        );
        if let Some(found) = self.cache.get(&key) {
            return *found;
        }
        let entries = match target.walk {
            Some(walk) => walked(inputs, target, admitting, walk),
            None => materialise(inputs, target, admitting)
                .into_iter()
                .map(|(key, rule)| (key, Decision::Allow(rule)))
                .collect(),
        };
        let id = (!entries.is_empty()).then(|| self.interner.intern(target.direction, entries));
        self.cache.insert(key, id);
        id
    }

    /// Adds the sets of one (endpoint, direction): `by_class` (class -> rules
    /// admitting it, rules without peers included) and `any` (the rules without
    /// peers alone). A class set equal to the any-class set is left out.
    fn add(
        &mut self,
        inputs: &Inputs<'_, '_>,
        target: &Target<'_>,
        by_class: &BTreeMap<u32, Vec<Admitting<'_>>>,
        any: &[Admitting<'_>],
    ) {
        let any_target = Target {
            class_id: None,
            ..*target
        };
        let any_id = self.set_of(inputs, &any_target, any);
        let triple = |class_id| RuleSetMatch {
            endpoint_id: target.endpoint_id,
            class_id,
            direction: target.direction,
        };
        if let Some(id) = any_id {
            self.rule_sets.insert(triple(RULE_SET_ANY_CLASS), id);
        }
        for (&class_id, admitting) in by_class {
            if self.full() {
                return;
            }
            let class_target = Target {
                class_id: Some(class_id),
                ..*target
            };
            // A class's rules include those without peers, so its set holds the
            // any-class set's entries: it is empty only when that one is too, and
            // a class without a set of its own never falls back to more.
            let id = self.set_of(inputs, &class_target, admitting);
            if let Some(id) = id.filter(|id| Some(*id) != any_id) {
                self.rule_sets.insert(triple(class_id), id);
            }
        }
    }
}

/// Where a set applies.
#[derive(Clone, Copy)]
struct Target<'g> {
    endpoint_id: u32,
    direction: Direction,
    group: &'g Group,
    /// The peer class, `None` for the any-class set.
    class_id: Option<u32>,
    /// How the tiers are walked, when a ClusterNetworkPolicy applies; `None`:
    /// NetworkPolicies alone decide (every entry an allow).
    walk: Option<Walk>,
}

/// How the tiers are walked for one (endpoint, direction) a
/// ClusterNetworkPolicy applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Walk {
    /// Some NetworkPolicy selects the endpoint's pods for the direction: `Some`,
    /// with whether only audit-mode ones do (`Deciding`'s audit flag).
    network: Option<bool>,
}

/// What the content of `admitting`'s set at `target` depends on beside its rules.
fn resolution(target: &Target<'_>, admitting: &[Admitting<'_>]) -> Resolution {
    let named = admitting.iter().any(|(_, rule)| {
        rule.ports
            .iter()
            .any(|port| matches!(port.port, Some(PortRef::Name(_))))
    });
    named.then_some(match target.direction {
        Direction::Ingress => (target.endpoint_id, None),
        Direction::Egress => (0, target.class_id),
    })
}

/// Every (port match -> rule) of `admitting` at `target`, the first rule kept on
/// a duplicate key.
fn materialise(
    inputs: &Inputs<'_, '_>,
    target: &Target<'_>,
    admitting: &[Admitting<'_>],
) -> BTreeMap<PortMatch, RuleRef> {
    let mut allows = BTreeMap::new();
    for (rule_ref, rule) in admitting {
        for key in rule_keys(inputs, target, rule) {
            allows.entry(key).or_insert(*rule_ref);
        }
    }
    allows
}

/// The port matches `rule` makes at `target` (named ports resolved there).
fn rule_keys(inputs: &Inputs<'_, '_>, target: &Target<'_>, rule: &Rule) -> Vec<PortMatch> {
    let mut keys = Vec::new();
    {
        let mut add = |(protocol, port): PortKey| keys.push(PortMatch { protocol, port });
        for item in port_items(&rule.ports) {
            match item {
                PortItem::Keys(keys) => keys.into_iter().for_each(&mut add),
                PortItem::Named(name, protocol) => match target.direction {
                    Direction::Ingress => {
                        let numbers = target
                            .group
                            .ingress_ports
                            .get(&(name.to_string(), protocol));
                        number_keys(protocol, numbers.into_iter().flatten())
                            .into_iter()
                            .for_each(&mut add);
                    }
                    Direction::Egress => {
                        let (Some(class_id), Some(name_id)) = (
                            target.class_id,
                            inputs.applied.egress_name_id(name, protocol),
                        ) else {
                            continue;
                        };
                        let numbers: Vec<u16> =
                            inputs.classes.egress_numbers(class_id, name_id).collect();
                        number_keys(protocol, &numbers)
                            .into_iter()
                            .for_each(&mut add);
                    }
                },
            }
        }
    }
    keys
}

/// The all-protocols key: every packet's shortest match.
const EVERY_PORT: PortMatch = PortMatch {
    protocol: None,
    port: None,
};

/// Whether every packet `inner` matches, `outer` matches too (`outer` is a
/// prefix of `inner`, or equal).
fn covers(outer: &PortMatch, inner: &PortMatch) -> bool {
    match (outer.protocol, inner.protocol) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) if a != b => false,
        _ => match (outer.port, inner.port) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(o), Some(i)) => o.bits <= i.bits && o.contains(i.first),
        },
    }
}

/// How many bits a key fixes below the rule set (its place in the trie).
fn specificity(key: &PortMatch) -> u8 {
    match (key.protocol, key.port) {
        (None, _) => 0,
        (Some(_), None) => 1,
        (Some(_), Some(block)) => 2 + block.bits,
    }
}

/// The entries of a set the tiers decide: every key some rule of `admitting`
/// makes, plus the all-protocols key, each with the walk's decision for the
/// packets whose longest match it is (the rules matching them are exactly those
/// with a key covering it), then those equal to the entry their lookup would
/// fall back to left out.
fn walked(
    inputs: &Inputs<'_, '_>,
    target: &Target<'_>,
    admitting: &[Admitting<'_>],
    walk: Walk,
) -> BTreeMap<PortMatch, Decision> {
    let mut rules: Vec<(RuleRef, Option<&ClusterMeta>, Vec<PortMatch>)> = admitting
        .iter()
        .map(|(rule_ref, rule)| {
            let keys = rule_keys(inputs, target, rule);
            (*rule_ref, inputs.meta(rule_ref.policy_id), keys)
        })
        .collect();
    rules.sort_by_key(|(rule_ref, _, _)| *rule_ref);
    let mut keys: Vec<PortMatch> = rules
        .iter()
        .flat_map(|(_, _, keys)| keys.iter().copied())
        .chain([EVERY_PORT])
        .collect();
    keys.sort_by_key(|key| (specificity(key), *key));
    keys.dedup();
    let mut out: BTreeMap<PortMatch, Decision> = BTreeMap::new();
    for key in keys {
        let matching = |keys: &[PortMatch]| keys.iter().any(|own| covers(own, &key));
        let decision = decide(target.direction, &rules, matching, walk);
        let fallback = out
            .iter()
            .filter(|(kept, _)| covers(kept, &key))
            .max_by_key(|(kept, _)| specificity(kept))
            .map(|(_, decision)| *decision);
        if fallback != Some(decision) {
            out.insert(key, decision);
        }
    }
    out
}

/// The walk's decision for packets the rules `matching` accepts the keys of:
/// by the enforce-mode policies; a would-drop where those let it through and
/// every policy enforced would drop it (as `evaluator::Side::verdict`).
fn decide(
    direction: Direction,
    rules: &[(RuleRef, Option<&ClusterMeta>, Vec<PortMatch>)],
    matching: impl Fn(&[PortMatch]) -> bool,
    walk: Walk,
) -> Decision {
    let enforced = walk_tiers(direction, rules, &matching, walk, false);
    if matches!(enforced, Decision::Deny(_) | Decision::NetworkDrop) {
        return enforced;
    }
    match walk_tiers(direction, rules, &matching, walk, true) {
        Decision::Deny(rule) => Decision::WouldDeny(rule),
        Decision::NetworkDrop => Decision::NetworkWouldDrop,
        audited if enforced == Decision::Default => audited,
        _ => enforced,
    }
}

/// One walk: Admin rules, then NetworkPolicy if it selects, then Baseline
/// rules, then the default; audit-mode policies read only when `audit_counts`.
fn walk_tiers(
    direction: Direction,
    rules: &[(RuleRef, Option<&ClusterMeta>, Vec<PortMatch>)],
    matching: &impl Fn(&[PortMatch]) -> bool,
    walk: Walk,
    audit_counts: bool,
) -> Decision {
    let tier = |tier: Tier| {
        rules
            .iter()
            .filter_map(move |(rule_ref, meta, keys)| {
                let meta = (*meta)?;
                let read = meta.tier == tier && (audit_counts || meta.mode == PolicyMode::Enforce);
                read.then_some((rule_ref, meta, keys))
            })
            .find(|(_, _, keys)| matching(keys))
            .map(|(rule_ref, meta, _)| {
                let action = meta.action(direction, rule_ref.rule_index);
                (*rule_ref, action.unwrap_or(RuleAction::Deny))
            })
    };
    match tier(Tier::Admin) {
        Some((rule, RuleAction::Accept)) => return Decision::Allow(rule),
        Some((rule, RuleAction::Deny)) => return Decision::Deny(rule),
        Some((_, RuleAction::Pass)) | None => {}
    }
    if let Some(audit) = walk.network {
        if audit_counts || !audit {
            return rules
                .iter()
                .find(|(_, meta, keys)| meta.is_none() && matching(keys))
                .map_or(Decision::NetworkDrop, |(rule, _, _)| Decision::Allow(*rule));
        }
    }
    match tier(Tier::Baseline) {
        Some((rule, RuleAction::Accept)) => Decision::Allow(rule),
        Some((rule, RuleAction::Deny)) => Decision::Deny(rule),
        Some((_, RuleAction::Pass)) | None => Decision::Default,
    }
}

/// The node's rule sets (stopping past `ceiling` entries) and each policy's
/// standalone cost (stopping past `policy_ceiling`: such a policy is over its
/// budget whatever the rest costs).
pub(super) fn rule_sets(
    inputs: &Inputs<'_, '_>,
    ceiling: usize,
    policy_ceiling: usize,
) -> RuleSets {
    let mut node = Builder::new(ceiling);
    let mut alone: BTreeMap<u32, Builder> = BTreeMap::new();
    for (&endpoint_id, group) in &inputs.endpoints.by_id {
        for direction in DIRECTIONS {
            // A ClusterNetworkPolicy applies: the tiers are walked, over the
            // rules of every policy deciding there.
            let tiered = group.tiered.get(direction);
            let deciding = group.deciding.get(direction);
            let walk = (!tiered.is_empty()).then(|| Walk {
                network: (!deciding.is_empty()).then_some(match direction {
                    Direction::Ingress => group.deciding.audit_ingress,
                    Direction::Egress => group.deciding.audit_egress,
                }),
            });
            let target = Target {
                endpoint_id,
                direction,
                group,
                class_id: None,
                walk,
            };
            let ids: Vec<u32> = deciding.iter().chain(tiered).copied().collect();
            let admitting = admitting(inputs, &ids, direction);
            if !node.full() {
                node.add(inputs, &target, &admitting.by_class, &admitting.any);
            }
            // What a policy costs alone is what its rules would make as allows.
            let alone_target = Target {
                walk: None,
                ..target
            };
            for (&policy_id, (by_class, any)) in &admitting.by_policy {
                let builder = alone
                    .entry(policy_id)
                    .or_insert_with(|| Builder::new(policy_ceiling));
                if !builder.full() {
                    builder.add(inputs, &alone_target, by_class, any);
                }
            }
        }
    }
    RuleSets {
        truncated: node.truncated,
        costs: alone
            .into_iter()
            .map(|(id, builder)| (id, builder.cost()))
            .filter(|(_, cost)| *cost != Cost::default())
            .collect(),
        rule_sets: node.rule_sets,
        policy: node.interner.sets,
    }
}

/// Class -> the rules admitting it, in (policy, rule) order.
type Named<'r> = BTreeMap<u32, Vec<Admitting<'r>>>;

/// The rules deciding one (endpoint, direction), by the classes they admit.
#[derive(Default)]
struct ByClass<'r> {
    /// Class -> every rule admitting it, rules without peers included.
    by_class: Named<'r>,
    /// The rules without peers, in order.
    any: Vec<Admitting<'r>>,
    /// Policy id -> the same for that policy's rules alone.
    by_policy: BTreeMap<u32, (Named<'r>, Vec<Admitting<'r>>)>,
}

/// Groups the rules of the policies `ids` (deciding for one endpoint) for
/// `direction` by class.
fn admitting<'r>(inputs: &Inputs<'_, 'r>, ids: &[u32], direction: Direction) -> ByClass<'r> {
    let mut named_all: Named<'r> = BTreeMap::new();
    let mut out = ByClass::default();
    for &policy_id in ids {
        let Some(policy) = inputs.policies.get(policy_id as usize).copied() else {
            continue;
        };
        let mut named: Named<'r> = BTreeMap::new();
        let mut any = Vec::new();
        for (rule_index, rule) in (0..).zip(rules(policy, direction)) {
            let admitted = (
                RuleRef {
                    policy_id,
                    rule_index,
                },
                rule,
            );
            for class_id in named_classes(inputs, policy, rule, direction) {
                named.entry(class_id).or_default().push(admitted);
            }
            if matches!(rule.peers, Peers::All) {
                any.push(admitted);
            }
        }
        for (class_id, admitting) in &named {
            named_all
                .entry(*class_id)
                .or_default()
                .extend(admitting.iter().copied());
        }
        out.any.extend(any.iter().copied());
        out.by_policy
            .insert(policy_id, (with_any(named, &any), any));
    }
    out.by_class = with_any(named_all, &out.any);
    out
}

/// `named` with the rules without peers added to every class (they admit every
/// class), each list sorted by rule and without repeats.
fn with_any<'r>(mut named: Named<'r>, any: &[Admitting<'r>]) -> Named<'r> {
    for admitting in named.values_mut() {
        admitting.extend(any.iter().copied());
        admitting.sort_by_key(|(rule_ref, _)| *rule_ref);
        admitting.dedup_by_key(|(rule_ref, _)| *rule_ref);
    }
    named
}

/// The classes `rule` names: those one of its peers admits (none for
/// `Peer::Invalid`), and for a rule without peers on egress, the classes whose
/// members resolve one of its named ports (the only classes where it allows more
/// than the any-class set says).
fn named_classes(
    inputs: &Inputs<'_, '_>,
    policy: &NetworkPolicy,
    rule: &Rule,
    direction: Direction,
) -> BTreeSet<u32> {
    match &rule.peers {
        Peers::Only(peers) => peers
            .iter()
            .filter_map(|peer| inputs.applied.peer_id(policy, peer))
            .flat_map(|id: PeerId| inputs.classes.admitted_by(id).iter().copied())
            .collect(),
        Peers::All if direction == Direction::Egress => port_items(&rule.ports)
            .into_iter()
            .filter_map(|item| match item {
                PortItem::Named(name, protocol) => inputs.applied.egress_name_id(name, protocol),
                PortItem::Keys(_) => None,
            })
            .flat_map(|name_id| inputs.classes.resolving(name_id))
            .collect(),
        Peers::All => BTreeSet::new(),
    }
}
