//! A whole new state written into the active bank itself, when that can be done
//! hole-free (`plan`), so that a policy or label change does not flip the banks
//! and wait out the last flip's grace period (`Banks::install_in_place`).
//!
//! A packet reads its interface's `ENDPOINTS` entry (t1), its peer's class (t2),
//! the `RULE_SETS` entry of (endpoint, class, direction) and maybe the endpoint's
//! any-class one (t3), then `POLICY` (t4), t1 <= t2 <= t3 <= t4, while the entries
//! change one by one. Each read may see the state before (O) or after (N) of its
//! own key; a packet spanning the writes can so combine an O entry with an N one.
//! The order below bounds which combinations can be read, and `plan` checks each
//! of those against what O and N give the packet; when one could allow what both
//! deny, the change is not written in place (the caller flips instead):
//! 1. `POLICY` entries of rule sets O lacks, under ids O does not use (a rule
//!    set's id is chosen by its content: an id never changes meaning in place),
//!    unread until a `RULE_SETS` entry names them;
//! 2. every peer entry that changes is set to `STAGING_CLASS`, a class no
//!    `RULE_SETS` entry names: its peer gets only the endpoint's any-class rules;
//! 3. `RULE_SETS` entries of every endpoint id N keeps;
//! 4. `ENDPOINTS` entries that change (an interface's endpoint id);
//! 5. `RULE_SETS` entries of endpoint ids N drops (any-class first);
//! 6. the changed peer entries get their N values (or go);
//! 7. `POLICY` entries of rule sets N no longer names go.
//!
//! So a packet that read an interface's O id (before 4) and its peer's N class
//! (after 6) finds that id's rows N's (after 3) or gone (after 5); one that read
//! the N id reads N's rows and a staging or N class; one that read a peer's O
//! class may meet the O or N rows of the id it read. `plan` checks, for every
//! pair of ids an interface moves between and every pair of classes an address
//! moves between (unchanged ones included), that each rule set such a packet can
//! meet allows nothing both O's and N's rule set for it deny (compared entry by
//! entry, so a difference in how ports split into prefixes refuses, never passes).
//!
//! A same-node packet is judged twice under one generation stamp, at the
//! client's egress and at the server's ingress (or both at one hook, when its
//! stamp is stale), so its egress reads may fall before the writes and its
//! ingress reads after them: old egress with new ingress can pass what both
//! states deny when one direction narrows while the other widens. So `plan`
//! also follows which way each direction moves over the pairs it checks
//! (`Moves`, every changed row among them) and writes in place only when one
//! direction does not change, or both only widen, or both only narrow (then
//! every verdict read is within the state after, or within the state before);
//! an interface's isolation or audit flags do not change in place.
//!
//! Nor may a decision trust lookups that span two writes in place: every write
//! in place ends with a move of `ACTIVE`, and the classifiers read `ACTIVE` again
//! after a rule allowed a flow, dropping it (`STAT_DROP_STATE_CHANGED`) when it
//! moved meanwhile; a denial reached while the agent writes (its
//! `CONFIG_FLAG_TABLES_WRITING`) is not trusted either, so no tracked flow is
//! revoked on a mix of states. That second read must not be done before the lookups, which
//! holds where loads are not reordered with older loads (x86): elsewhere whole
//! tables are not written in place. After adoption, the first write waits until
//! the programs of the agent before, which lack that read, have run out.
//!
//! Only host peer prefixes (pod addresses) may change this way: a changed
//! shorter prefix would change the class of every address under it, so it
//! flips. So do peer entries with node or Service flags, a changed
//! `ENDPOINT_ADDRS`, an interface that comes, goes or is pending on either side.

use std::collections::{BTreeMap, BTreeSet};

use policy_common::{
    endpoint::{EndpointInfo, PENDING_ENDPOINT_ID},
    peer::{PeerClass, CLASS_WORLD},
    policy::{PolicyKey, PolicyValue, RuleSetKey, POLICY_ALLOW, RULE_SET_ANY_CLASS},
    verdict::{DIRECTION_EGRESS, DIRECTION_INGRESS},
};

use super::{in_place::count, BankContent};
use crate::dataplane::{
    keys::{PeerPrefix, PolicyPrefix},
    InterfaceIndex,
};

/// The class a changing peer entry holds while the rules change: no `RULE_SETS`
/// entry names it (class ids are dense from 1, `RULE_SET_ANY_CLASS` is the
/// largest), so its peer gets the endpoint's any-class rules alone.
pub(in crate::dataplane) const STAGING_CLASS: u32 = RULE_SET_ANY_CLASS - 1;

/// One entry of the active bank set (`None`: removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::dataplane) enum Write {
    /// A `POLICY` entry (key with bank 0).
    Policy(PolicyPrefix, Option<PolicyValue>),
    /// A `RULE_SETS` entry (key with bank 0).
    RuleSet(RuleSetKey, Option<u32>),
    /// An `ENDPOINTS` entry (only overwritten here).
    Endpoint(InterfaceIndex, EndpointInfo),
    /// An IPv4 peer entry.
    PeerV4(PeerPrefix<[u8; 4]>, Option<PeerClass>),
    /// An IPv6 peer entry.
    PeerV6(PeerPrefix<[u8; 16]>, Option<PeerClass>),
}

/// How a new state reaches the classifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::dataplane) enum Plan {
    /// The active bank already decides as the new state does (its rule set ids
    /// may differ): nothing to write.
    Same,
    /// These writes into the active bank, in this order, then `ACTIVE` moves on.
    InPlace(Vec<Write>),
    /// Through the idle bank and a flip; why not in place.
    Flip(&'static str),
}

/// A rule set's entries: (prefix length, protocol, port) -> the rule's slot.
type Content = Vec<((u32, u8, u16), u32)>;
/// What a rule set allows, as `POLICY` keys (prefix length, protocol, port).
type Allows = BTreeSet<(u32, u8, u16)>;

fn contents(policy: &BTreeMap<PolicyPrefix, PolicyValue>) -> BTreeMap<u32, Content> {
    let mut sets: BTreeMap<u32, Content> = BTreeMap::new();
    for ((len, key), value) in policy {
        sets.entry(key.rule_set)
            .or_default()
            .push(((*len, key.protocol, key.port_be), value.rule_slot));
    }
    sets
}

fn allows(sets: &BTreeMap<u32, Content>) -> BTreeMap<u32, Allows> {
    sets.iter()
        .map(|(id, content)| (*id, content.iter().map(|(key, _)| *key).collect()))
        .collect()
}

/// One state's rules as the classifiers look them up.
struct Rules<'a> {
    rows: &'a BTreeMap<RuleSetKey, u32>,
    sets: BTreeMap<u32, Allows>,
}

fn row_key(endpoint_id: u32, class_id: u32, direction: u8) -> RuleSetKey {
    RuleSetKey {
        bank: 0,
        endpoint_id,
        class_id,
        direction,
        pad: [0; 3],
    }
}

impl Rules<'_> {
    /// What (endpoint, class, direction) allows: its own entry, else the
    /// endpoint's any-class one (`policy-ebpf`'s `maps::policy`).
    fn effective(&self, endpoint: u32, class: u32, direction: u8) -> Option<&Allows> {
        let id = self
            .rows
            .get(&row_key(endpoint, class, direction))
            .or_else(|| self.any_id(endpoint, direction))?;
        self.sets.get(id)
    }

    fn any_id(&self, endpoint: u32, direction: u8) -> Option<&u32> {
        self.rows
            .get(&row_key(endpoint, RULE_SET_ANY_CLASS, direction))
    }

    /// The endpoint's any-class rules.
    fn any(&self, endpoint: u32, direction: u8) -> Option<&Allows> {
        self.sets.get(self.any_id(endpoint, direction)?)
    }
}

/// Whether everything `read` allows, `before` or `after` allows (key by key).
fn covered(read: Option<&Allows>, before: Option<&Allows>, after: Option<&Allows>) -> bool {
    let Some(read) = read else { return true };
    read.iter().all(|key| {
        before.is_some_and(|set| set.contains(key)) || after.is_some_and(|set| set.contains(key))
    })
}

/// Whether everything `read` allows, `set` allows (key by key; `None` allows
/// nothing).
fn within(read: Option<&Allows>, set: Option<&Allows>) -> bool {
    let Some(read) = read else { return true };
    read.iter()
        .all(|key| set.is_some_and(|set| set.contains(key)))
}

/// Which way a change moves what one direction's packets may get, over every
/// (endpoint, class) pair `plan` checks: each flag holds while every pair's state
/// before, state after and mid-write reads fit it. A same-node packet is judged
/// at two hooks (the client's egress, the server's ingress) under one stamp, so
/// its egress reads may come from one state and its ingress reads from the
/// other: that can pass only what one state passes when one direction does not
/// change, or both only widen, or both only narrow (module comment).
#[derive(Clone, Copy)]
struct Moves {
    /// Every read is the state before's and the state after's verdict.
    unchanged: bool,
    /// Every read and the state before fit within the state after.
    widens: bool,
    /// Every read and the state after fit within the state before.
    narrows: bool,
}

impl Moves {
    const NONE: Self = Self {
        unchanged: true,
        widens: true,
        narrows: true,
    };

    /// Takes in one pair: its verdicts before and after, and what a packet
    /// spanning the writes may read for it.
    fn see(&mut self, before: Option<&Allows>, after: Option<&Allows>, reads: &[Option<&Allows>]) {
        let widens = within(before, after) && reads.iter().all(|read| within(*read, after));
        let narrows = within(after, before) && reads.iter().all(|read| within(*read, before));
        self.unchanged &= widens && narrows;
        self.widens &= widens;
        self.narrows &= narrows;
    }

    /// Whether no packet judged at both hooks can combine an egress verdict of
    /// one state with an ingress verdict of the other into a pass neither gives.
    fn combine(egress: Self, ingress: Self) -> bool {
        egress.unchanged
            || ingress.unchanged
            || (egress.widens && ingress.widens)
            || (egress.narrows && ingress.narrows)
    }
}

/// Whether `addr` lies in the prefix (`len` bits of `prefix`).
fn contains(len: u32, prefix: &[u8], addr: &[u8]) -> bool {
    let full = (len / 8) as usize;
    let rest = len % 8;
    if prefix.len() != addr.len() || full > addr.len() {
        return false;
    }
    if prefix[..full] != addr[..full] {
        return false;
    }
    if rest == 0 || full == addr.len() {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    prefix[full] & mask == addr[full] & mask
}

/// The keys whose entries differ between two sorted maps, with both values, in
/// one walk over both.
fn differences<'a, K: Ord, V: PartialEq>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> Vec<(&'a K, Option<&'a V>, Option<&'a V>)> {
    let (mut old, mut new) = (old.iter().peekable(), new.iter().peekable());
    let mut found = Vec::new();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => return found,
            (Some((k, v)), None) => {
                found.push((*k, Some(*v), None));
                old.next();
            }
            (None, Some((k, v))) => {
                found.push((*k, None, Some(*v)));
                new.next();
            }
            (Some((ko, vo)), Some((kn, vn))) => match ko.cmp(kn) {
                std::cmp::Ordering::Less => {
                    found.push((*ko, Some(*vo), None));
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    found.push((*kn, None, Some(*vn)));
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if vo != vn {
                        found.push((*ko, Some(*vo), Some(*vn)));
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
}

/// One family's changed peer entries: the writes of steps 2 and 6, and the
/// (before, after) class of each changed address. Shorter prefixes must not
/// change; `Err` says why the change cannot be made in place.
#[allow(clippy::type_complexity)]
fn peer_changes<A: Ord + Copy + AsRef<[u8]>>(
    old: &BTreeMap<PeerPrefix<A>, PeerClass>,
    new: &BTreeMap<PeerPrefix<A>, PeerClass>,
    host_len: u32,
) -> Result<Vec<(PeerPrefix<A>, Option<PeerClass>, (u32, u32))>, &'static str> {
    let mut changed = Vec::new();
    for (prefix, before, after) in differences(old, new) {
        if prefix.0 != host_len {
            return Err("a peer prefix shorter than a host changes");
        }
        let flagged = |class: Option<&PeerClass>| class.is_some_and(|c| c.flags != 0);
        if flagged(before) || flagged(after) {
            return Err("a node or Service peer entry changes");
        }
        if after.is_some_and(|c| c.class_id == STAGING_CLASS) {
            return Err("the new state uses the staging class");
        }
        // An address without a host entry takes its longest shorter prefix's
        // class, the same in both states (those do not change here).
        let trie_class = || {
            old.iter()
                .take_while(|((len, _), _)| *len < host_len)
                .filter(|((len, addr), _)| contains(*len, addr.as_ref(), prefix.1.as_ref()))
                .max_by_key(|((len, _), _)| *len)
                .map_or(CLASS_WORLD, |(_, class)| class.class_id)
        };
        let class_before = before.map_or_else(trie_class, |c| c.class_id);
        let class_after = after.map_or_else(trie_class, |c| c.class_id);
        changed.push((*prefix, after.copied(), (class_before, class_after)));
    }
    Ok(changed)
}

/// How to bring the active bank from `active` to what `want` decides, in place
/// (module comment), or why it must flip. `want`'s rule set ids are the
/// compiler's; the writes use ids chosen by content.
pub(in crate::dataplane) fn plan(active: &BankContent, want: &BankContent) -> Plan {
    match plan_writes(active, want) {
        Ok(writes) if writes.is_empty() => Plan::Same,
        Ok(writes) => Plan::InPlace(writes),
        Err(why) => Plan::Flip(why),
    }
}

fn plan_writes(active: &BankContent, want: &BankContent) -> Result<Vec<Write>, &'static str> {
    if !cfg!(target_arch = "x86_64") {
        return Err("whole tables are written in place only on x86 (module comment)");
    }
    // The order below is safe for entries that only allow (a miss drops); the
    // tiers' denials and defaults are not ordered by it.
    let tiered = active
        .policy
        .values()
        .chain(want.policy.values())
        .any(|value| value.verdict != POLICY_ALLOW);
    if tiered {
        return Err("ClusterNetworkPolicy decisions are written by a flip");
    }
    if active.addresses != want.addresses {
        return Err("ENDPOINT_ADDRS changes");
    }
    if !active.endpoints.keys().eq(want.endpoints.keys()) {
        return Err("an interface comes or goes");
    }
    // Interfaces whose entry changes, and the ids they move between.
    let mut endpoint_writes = Vec::new();
    let mut moves: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut kept: BTreeSet<u32> = BTreeSet::new();
    for ((ifindex, before), after) in active.endpoints.iter().zip(want.endpoints.values()) {
        let pending = |info: &EndpointInfo| info.endpoint_id >= PENDING_ENDPOINT_ID;
        if before != after {
            if pending(before) || pending(after) {
                return Err("a pending interface changes");
            }
            // Isolation and audit are not among the pairs `Moves` compares.
            if before.flags != after.flags {
                return Err("an interface's isolation or audit changes");
            }
            endpoint_writes.push(Write::Endpoint(*ifindex, *after));
        }
        if pending(before) {
            continue;
        }
        if before.endpoint_id == after.endpoint_id {
            kept.insert(before.endpoint_id);
        } else {
            moves.insert((before.endpoint_id, after.endpoint_id));
        }
    }

    // Rule sets: the id O gives the same content; else one whose entries have
    // the same keys (it allows the same, and only the values, which name the rule
    // for counters and events, are overwritten); else an id O does not use.
    let old_sets = contents(&active.policy);
    let new_sets = contents(&want.policy);
    let old_allows = allows(&old_sets);
    let new_allows = allows(&new_sets);
    let mut same: BTreeMap<&Content, u32> = BTreeMap::new();
    let mut alike: BTreeMap<&Allows, Vec<u32>> = BTreeMap::new();
    for (id, content) in &old_sets {
        same.insert(content, *id);
        alike.entry(&old_allows[id]).or_default().push(*id);
    }
    let mut claimed: BTreeSet<u32> = BTreeSet::new();
    let mut kernel_id: BTreeMap<u32, u32> = BTreeMap::new();
    for (id, content) in &new_sets {
        // Most ids keep their content: no lookup by content needed.
        if old_sets.get(id) == Some(content) && claimed.insert(*id) {
            kernel_id.insert(*id, *id);
            continue;
        }
        if let Some(old) = same.get(content) {
            if claimed.insert(*old) {
                kernel_id.insert(*id, *old);
            }
        }
    }
    let mut used: BTreeSet<u32> = old_sets.keys().copied().collect();
    used.extend(active.rule_sets.values().copied());
    let mut next = 0u32;
    let mut policy_adds = Vec::new();
    for id in new_sets.keys() {
        if kernel_id.contains_key(id) {
            continue;
        }
        let reuse = alike
            .get(&new_allows[id])
            .and_then(|ids| ids.iter().find(|old| !claimed.contains(old)).copied());
        let kernel = match reuse {
            Some(old) => old,
            None => {
                while used.contains(&next) {
                    next = next.checked_add(1).ok_or("no rule set id left")?;
                }
                used.insert(next);
                next
            }
        };
        claimed.insert(kernel);
        kernel_id.insert(*id, kernel);
    }
    for ((len, key), value) in &want.policy {
        let rule_set = kernel_id[&key.rule_set];
        let prefix = (*len, PolicyKey { rule_set, ..*key });
        if active.policy.get(&prefix) != Some(value) {
            policy_adds.push(Write::Policy(prefix, Some(*value)));
        }
    }
    let mut rows: BTreeMap<RuleSetKey, u32> = BTreeMap::new();
    for (key, id) in &want.rule_sets {
        let id = kernel_id
            .get(id)
            .ok_or("a RULE_SETS entry names a rule set without entries")?;
        rows.insert(*key, *id);
    }
    let named: BTreeSet<u32> = rows.values().copied().collect();
    let policy_removals: Vec<Write> = active
        .policy
        .keys()
        .filter(|(_, key)| !named.contains(&key.rule_set))
        .map(|prefix| Write::Policy(*prefix, None))
        .collect();

    // Peer entries.
    let v4 = peer_changes(&active.peers_v4, &want.peers_v4, 32)?;
    let v6 = peer_changes(&active.peers_v6, &want.peers_v6, 128)?;
    let class_moves: BTreeSet<(u32, u32)> = v4
        .iter()
        .map(|(_, _, pair)| *pair)
        .chain(v6.iter().map(|(_, _, pair)| *pair))
        .collect();

    // RULE_SETS: ids N keeps, ids N drops.
    let alive: BTreeSet<u32> = want
        .endpoints
        .values()
        .map(|info| info.endpoint_id)
        .chain(rows.keys().map(|key| key.endpoint_id))
        .collect();
    let mut row_writes = Vec::new();
    let mut row_removals = Vec::new();
    let mut changed_rows = Vec::new();
    let mut retargeted: BTreeSet<(u32, u32)> = BTreeSet::new();
    for (key, before, after) in differences(&active.rule_sets, &rows) {
        if !alive.contains(&key.endpoint_id) {
            row_removals.push(*key);
            continue;
        }
        row_writes.push(Write::RuleSet(*key, after.copied()));
        if key.class_id != RULE_SET_ANY_CLASS && before.is_some() != after.is_some() {
            changed_rows.push((key.endpoint_id, key.class_id));
        } else {
            retargeted.insert((key.endpoint_id, key.class_id));
        }
    }
    // Any-class entries of dropped ids first: a packet that still reads such an
    // id then finds its own O entry, or nothing.
    row_removals.sort_by_key(|key| (key.class_id != RULE_SET_ANY_CLASS, *key));

    // The checks (module comment).
    let old = Rules {
        rows: &active.rule_sets,
        sets: old_allows,
    };
    let new = Rules {
        rows: &rows,
        sets: new_allows
            .into_iter()
            .map(|(id, set)| (kernel_id[&id], set))
            .collect(),
    };
    // Ids with rules in either state: one without any allows nothing, either way.
    let ruled: BTreeSet<u32> = active
        .rule_sets
        .keys()
        .chain(rows.keys())
        .map(|key| key.endpoint_id)
        .collect();
    // How each direction moves (index: `DIRECTION_*`), over every pair checked.
    let mut moved = [Moves::NONE; 2];
    let mut safe = |e1: u32, e2: u32, c1: u32, c2: u32| {
        if !ruled.contains(&e1) && !ruled.contains(&e2) {
            return true;
        }
        [DIRECTION_INGRESS, DIRECTION_EGRESS].into_iter().all(|d| {
            let (before, after) = (old.effective(e1, c1, d), new.effective(e2, c2, d));
            let mut reads = vec![old.any(e1, d), new.any(e2, d)];
            if alive.contains(&e1) {
                reads.extend([
                    new.effective(e1, c1, d),
                    new.effective(e1, c2, d),
                    new.any(e1, d),
                ]);
            }
            moved[usize::from(d)].see(before, after, &reads);
            reads.iter().all(|read| covered(*read, before, after))
        })
    };
    if !moves.is_empty() {
        let mut classes: BTreeSet<u32> = active
            .peers_v4
            .values()
            .chain(active.peers_v6.values())
            .map(|class| class.class_id)
            .collect();
        classes.insert(CLASS_WORLD);
        for (e1, e2) in &moves {
            for class in &classes {
                if !safe(*e1, *e2, *class, *class) {
                    return Err("an interface changes endpoint id, and a packet spanning the writes could read its old id's new rules");
                }
            }
            for (c1, c2) in &class_moves {
                if !safe(*e1, *e2, *c1, *c2) {
                    return Err("an interface changes endpoint id and a peer its class, and a packet spanning both could combine them");
                }
            }
        }
    }
    for endpoint in &kept {
        for (c1, c2) in &class_moves {
            if !safe(*endpoint, *endpoint, *c1, *c2) {
                return Err("a peer changes class, and a packet spanning the writes could read its old class with new rules");
            }
        }
    }
    for (endpoint, class) in &changed_rows {
        if !safe(*endpoint, *endpoint, *class, *class) {
            return Err("a class entry comes or goes, and the any-class rules it falls back to are not the state before's or after's");
        }
    }
    // Rows that change their rule set (each read is one state's), for `Moves`.
    for (endpoint, class) in &retargeted {
        if !safe(*endpoint, *endpoint, *class, *class) {
            return Err("a rule set changes under a kept class, and a packet spanning the writes could read it with other rules");
        }
    }
    let direction = |d: u8| moved[usize::from(d)];
    if !Moves::combine(direction(DIRECTION_EGRESS), direction(DIRECTION_INGRESS)) {
        return Err("one direction's rules widen while the other's narrow, and a packet judged at both hooks could combine them");
    }

    let mut writes = policy_adds;
    let stage = PeerClass {
        class_id: STAGING_CLASS,
        flags: 0,
    };
    writes.extend(
        v4.iter()
            .map(|(prefix, _, _)| Write::PeerV4(*prefix, Some(stage))),
    );
    writes.extend(
        v6.iter()
            .map(|(prefix, _, _)| Write::PeerV6(*prefix, Some(stage))),
    );
    writes.extend(row_writes);
    writes.extend(endpoint_writes);
    writes.extend(
        row_removals
            .into_iter()
            .map(|key| Write::RuleSet(key, None)),
    );
    writes.extend(
        v4.iter()
            .map(|(prefix, class, _)| Write::PeerV4(*prefix, *class)),
    );
    writes.extend(
        v6.iter()
            .map(|(prefix, class, _)| Write::PeerV6(*prefix, *class)),
    );
    writes.extend(policy_removals);
    Ok(writes)
}

/// Whether addresses may move between classes as `moves` says ((class before,
/// class after) pairs) by writing their peer entries one by one, every rule as
/// `active` holds it (`Banks::update_classes`). A packet reads one class per
/// address, each a whole state's, with the same rules either way; but a packet
/// judged at two hooks (the client's egress with the server's class, the
/// server's ingress with the client's) can combine a class before with one
/// after, so, as `plan` checks, one direction must not change, or both only
/// widen, or both only narrow, over every endpoint id and every move. And
/// since the kernel may hand a replaced hash element to the next update (the
/// security model's known limits), a reader stalled on one address may copy
/// another's new class: every class after of the batch counts as a read of
/// each move, which must allow nothing both its classes deny and fit the way
/// its direction moves. A batch of one namespace's pods (one move) reads
/// nothing more.
pub(in crate::dataplane) fn classes_move_safely(
    active: &BankContent,
    moves: &BTreeSet<(u32, u32)>,
) -> bool {
    let rules = Rules {
        rows: &active.rule_sets,
        sets: allows(&contents(&active.policy)),
    };
    let afters: BTreeSet<u32> = moves.iter().map(|(_, after)| *after).collect();
    // An id without rows allows nothing in an isolated direction and everything
    // in another, whatever the class.
    let ruled: BTreeSet<u32> = active.rule_sets.keys().map(|key| key.endpoint_id).collect();
    let mut moved = [Moves::NONE; 2];
    for endpoint in &ruled {
        for (before, after) in moves {
            for d in [DIRECTION_INGRESS, DIRECTION_EGRESS] {
                let (was, will) = (
                    rules.effective(*endpoint, *before, d),
                    rules.effective(*endpoint, *after, d),
                );
                let reads: Vec<Option<&Allows>> = afters
                    .iter()
                    .map(|class| rules.effective(*endpoint, *class, d))
                    .collect();
                if !reads.iter().all(|read| covered(*read, was, will)) {
                    return false;
                }
                moved[usize::from(d)].see(was, will, &reads);
            }
        }
    }
    let direction = |d: u8| moved[usize::from(d)];
    Moves::combine(direction(DIRECTION_EGRESS), direction(DIRECTION_INGRESS))
}

/// Adds to `moves` the (class before, class after) of each change of
/// `changes` (a family's peer entries) that `active` (its peer entries) does
/// not already hold; false unless each is a host prefix (`host_len`) with an
/// entry before and after, neither flagged (a node's or a Service's), and not
/// the staging class.
pub(in crate::dataplane) fn class_moves<A: Ord>(
    active: &BTreeMap<PeerPrefix<A>, PeerClass>,
    changes: &[(PeerPrefix<A>, Option<PeerClass>)],
    host_len: u32,
    moves: &mut BTreeSet<(u32, u32)>,
) -> bool {
    changes.iter().all(|(prefix, after)| {
        let (Some(before), Some(after)) = (active.get(prefix), after) else {
            return false;
        };
        if before == after {
            return true;
        }
        let plain = before.flags == 0 && after.flags == 0 && after.class_id != STAGING_CLASS;
        moves.insert((before.class_id, after.class_id));
        prefix.0 == host_len && plain
    })
}

impl super::Banks {
    /// Makes `want` what the classifiers read by writing the active bank itself
    /// when `plan` finds that hole-free, else as `install` does (through the idle
    /// bank and a flip). Writes in place are followed by a move of `ACTIVE` by two
    /// generations (the same bank; tracked flows are re-decided at their next
    /// packet), also when a later write failed; nothing waits for a grace period,
    /// but the one after adoption. `mark_writing` runs right before the first
    /// write in place (the classifiers stop trusting denials:
    /// `CONFIG_FLAG_TABLES_WRITING`); the caller clears that once this returns
    /// `Ok`.
    /// Returns the report and whether the state changed (flipped or written).
    /// `between` runs after each write in place (tests).
    pub(in crate::dataplane) fn install_in_place(
        &mut self,
        want: &BankContent,
        before_write: impl FnOnce() -> Result<(), crate::dataplane::DataplaneError>,
        mark_writing: impl FnOnce() -> Result<(), crate::dataplane::DataplaneError>,
        between: &mut dyn FnMut(),
    ) -> Result<(super::ApplyReport, bool), crate::dataplane::DataplaneError> {
        // An owed move first, whatever happens next (a refusal, a failed write).
        self.renew(false)?;
        self.check_fits(want)?;
        let bank = self.active;
        let writes = match plan(self.active_content(), want) {
            Plan::Same => {
                return Ok((
                    super::ApplyReport {
                        bank,
                        ..super::ApplyReport::default()
                    },
                    false,
                ))
            }
            Plan::InPlace(writes) if self.fits_meanwhile(&writes) => writes,
            Plan::InPlace(_) => return self.install(want, before_write),
            Plan::Flip(why) => {
                tracing::debug!(why, "tables written through a flip");
                return self.install(want, before_write);
            }
        };
        if self.adoption_wait_owed {
            self.quiesce.finish()?;
            self.adoption_wait_owed = false;
        }
        before_write()?;
        mark_writing()?;
        let mut done = super::Written::default();
        let mut shadow = std::mem::take(&mut self.shadows[bank as usize]);
        let result = writes.iter().try_for_each(|write| {
            self.write_one(bank, &mut shadow, write, &mut done)?;
            between();
            Ok(())
        });
        self.shadows[bank as usize] = shadow;
        // Whatever landed is followed by the move; the write's own error first.
        let renewed = self.renew(done.written + done.removed > 0);
        result?;
        renewed?;
        Ok((
            super::ApplyReport {
                written: done.written,
                removed: done.removed,
                bank,
            },
            true,
        ))
    }

    /// Whether the active bank can hold the old and the new entries at once,
    /// as it does between the first write and the last.
    fn fits_meanwhile(&self, writes: &[Write]) -> bool {
        let active = self.active_content();
        let mut added = [0usize; 4];
        for write in writes {
            match write {
                Write::Policy(_, Some(_)) => added[0] += 1,
                Write::RuleSet(key, Some(_)) if !active.rule_sets.contains_key(key) => {
                    added[1] += 1
                }
                Write::PeerV4(prefix, Some(_)) if !active.peers_v4.contains_key(prefix) => {
                    added[2] += 1
                }
                Write::PeerV6(prefix, Some(_)) if !active.peers_v6.contains_key(prefix) => {
                    added[3] += 1
                }
                _ => {}
            }
        }
        self.check_counts([
            (
                policy_common::maps::POLICY.name,
                active.policy.len() + added[0],
            ),
            (
                policy_common::maps::RULE_SETS.name,
                active.rule_sets.len() + added[1],
            ),
            (
                policy_common::maps::PEERS_V4.name,
                active.peers_v4.len() + added[2],
            ),
            (
                policy_common::maps::PEERS_V6.name,
                active.peers_v6.len() + added[3],
            ),
        ])
        .is_ok()
    }

    /// Makes one write into bank `bank`, keeping `shadow` (that bank's, taken
    /// out) equal to the kernel.
    fn write_one(
        &mut self,
        bank: u32,
        shadow: &mut BankContent,
        write: &Write,
        done: &mut super::Written,
    ) -> Result<(), crate::dataplane::DataplaneError> {
        use crate::dataplane::maps::map_error;
        use policy_common::{
            endpoint::{EndpointKey, EndpointValue},
            maps,
            peer::{PeerKeyV4, PeerKeyV6},
        };
        match write {
            Write::Policy(prefix, value) => self.policy.set(
                &mut shadow.policy,
                &[(*prefix, *value)],
                |key| PolicyKey { bank, ..key },
                done,
            )?,
            Write::RuleSet(key, id) => {
                let kernel = RuleSetKey { bank, ..*key };
                match id {
                    Some(id) => self
                        .rule_sets
                        .insert(kernel, *id, 0)
                        .map_err(map_error(maps::RULE_SETS.name, "insert"))?,
                    None => super::removed_or_absent(self.rule_sets.remove(&kernel))
                        .map_err(map_error(maps::RULE_SETS.name, "remove"))?,
                }
                count(&mut shadow.rule_sets, *key, *id, done);
            }
            Write::Endpoint(ifindex, info) => {
                let key = EndpointKey {
                    ifindex: *ifindex,
                    bank,
                };
                // The interface's addresses stay (`plan`), and so do its own
                // addresses in the value.
                let own = self.owns[bank as usize]
                    .get(ifindex)
                    .copied()
                    .unwrap_or_default();
                self.endpoints
                    .insert(key, EndpointValue { info: *info, own }, 0)
                    .map_err(map_error(maps::ENDPOINTS.name, "insert"))?;
                self.owns[bank as usize].insert(*ifindex, own);
                count(&mut shadow.endpoints, *ifindex, Some(*info), done);
            }
            Write::PeerV4(prefix, class) => self.peers_v4.set(
                &mut shadow.peers_v4,
                &[(*prefix, *class)],
                |addr| PeerKeyV4 { bank, addr },
                done,
            )?,
            Write::PeerV6(prefix, class) => self.peers_v6.set(
                &mut shadow.peers_v6,
                &[(*prefix, *class)],
                |addr| PeerKeyV6 { bank, addr },
                done,
            )?,
        }
        Ok(())
    }
}

// `plan` writes nothing in place elsewhere (module comment).
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
