//! `plan` against a model of the classifiers' lookups: every packet, with its
//! reads at any times t1 <= t2 <= t3 <= t3' <= t4 over the writes of a plan (one
//! state after each write), must get a verdict the state before or the state
//! after gives it, or be dropped.

use std::collections::{BTreeMap, BTreeSet};

use policy_common::{
    endpoint::{EndpointInfo, ISOLATED_EGRESS, ISOLATED_INGRESS},
    peer::{PeerClass, CLASS_WORLD},
    policy::{PolicyKey, PolicyValue, POLICY_ALLOW, PREFIX_FULL, RULE_SET_ANY_CLASS},
    verdict::{DIRECTION_EGRESS, DIRECTION_INGRESS},
};

use super::{class_moves, classes_move_safely, plan, Plan, Write, STAGING_CLASS};
use crate::dataplane::banks::BankContent;

const TCP: u8 = 6;
const PORTS: [u16; 5] = [22, 80, 443, 8080, 9000];
const ISOLATED: u32 = ISOLATED_INGRESS | ISOLATED_EGRESS;

/// A state built by hand: interfaces -> endpoint ids, pod addresses -> classes,
/// (endpoint, class) -> the TCP ports allowed both ways, and (endpoint, class,
/// direction) -> those allowed one way (rule set ids by order). Interface `i`'s
/// pod has address `i - 9` (`pod_of`).
struct State {
    endpoints: Vec<(u32, u32)>,
    peers: Vec<(u8, u32)>,
    rows: Vec<((u32, u32), Vec<u16>)>,
    one_way: Vec<((u32, u32, u8), Vec<u16>)>,
}

/// `state` with every row (both ways or one way) an ingress row alone: its
/// egress never changes, so only one hook at a time can see a change.
fn ingress_only(state: State) -> State {
    let both = state
        .rows
        .into_iter()
        .map(|((e, c), ports)| ((e, c, DIRECTION_INGRESS), ports));
    let mut one_way: Vec<_> = state
        .one_way
        .into_iter()
        .map(|((e, c, _), ports)| ((e, c, DIRECTION_INGRESS), ports))
        .collect();
    one_way.extend(both);
    State {
        endpoints: state.endpoints,
        peers: state.peers,
        rows: Vec::new(),
        one_way,
    }
}

/// The address of interface `ifindex`'s pod.
fn pod_of(ifindex: u32) -> u8 {
    (ifindex - 9) as u8
}

fn addr(last: u8) -> [u8; 4] {
    [10, 0, 0, last]
}

fn content(state: &State) -> BankContent {
    let mut bank = BankContent::default();
    for (ifindex, endpoint_id) in &state.endpoints {
        bank.endpoints.insert(
            *ifindex,
            EndpointInfo {
                endpoint_id: *endpoint_id,
                flags: ISOLATED,
            },
        );
    }
    for (last, class_id) in &state.peers {
        bank.peers_v4.insert(
            (32, addr(*last)),
            PeerClass {
                class_id: *class_id,
                flags: 0,
            },
        );
    }
    // Equal port lists share a rule set, numbered in order of appearance.
    let mut sets: Vec<&Vec<u16>> = Vec::new();
    let both = state.rows.iter().flat_map(|((endpoint, class), ports)| {
        [DIRECTION_INGRESS, DIRECTION_EGRESS]
            .map(|direction| ((*endpoint, *class, direction), ports))
    });
    let one_way = state.one_way.iter().map(|(row, ports)| (*row, ports));
    for ((endpoint_id, class_id, direction), ports) in both.chain(one_way) {
        let id = match sets.iter().position(|set| *set == ports) {
            Some(id) => id,
            None => {
                sets.push(ports);
                sets.len() - 1
            }
        } as u32;
        bank.rule_sets
            .insert(super::row_key(endpoint_id, class_id, direction), id);
    }
    for (id, ports) in sets.iter().enumerate() {
        for port in *ports {
            let key = PolicyKey {
                bank: 0,
                rule_set: id as u32,
                pad: 0,
                protocol: TCP,
                port_be: port.to_be(),
            };
            let value = PolicyValue {
                rule_slot: u32::from(*port),
                verdict: POLICY_ALLOW,
            };
            bank.policy.insert((PREFIX_FULL, key), value);
        }
    }
    bank
}

fn apply(bank: &mut BankContent, write: &Write) {
    fn set<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) {
        match value {
            Some(value) => map.insert(key, value),
            None => map.remove(&key),
        };
    }
    match write.clone() {
        Write::Policy(key, value) => set(&mut bank.policy, key, value),
        Write::RuleSet(key, value) => set(&mut bank.rule_sets, key, value),
        Write::Endpoint(ifindex, info) => set(&mut bank.endpoints, ifindex, Some(info)),
        Write::PeerV4(prefix, class) => set(&mut bank.peers_v4, prefix, class),
        Write::PeerV6(prefix, class) => set(&mut bank.peers_v6, prefix, class),
    }
}

/// One packet: interface, peer, direction, port.
type Packet = (u32, u8, u8, u16);

/// The verdict of `packet` with each lookup in its own state (the classifiers'
/// order: endpoint, peer, rule set, any-class rule set, policy).
fn passes(states: [&BankContent; 5], packet: Packet) -> bool {
    let (ifindex, peer, direction, port) = packet;
    let Some(info) = states[0].endpoints.get(&ifindex) else {
        return false;
    };
    let class = states[1]
        .peers_v4
        .get(&(32, addr(peer)))
        .map_or(CLASS_WORLD, |class| class.class_id);
    let key = super::row_key(info.endpoint_id, class, direction);
    let any = super::row_key(info.endpoint_id, RULE_SET_ANY_CLASS, direction);
    let Some(rule_set) = states[2]
        .rule_sets
        .get(&key)
        .or_else(|| states[3].rule_sets.get(&any))
    else {
        return false;
    };
    let key = PolicyKey {
        bank: 0,
        rule_set: *rule_set,
        pad: 0,
        protocol: TCP,
        port_be: port.to_be(),
    };
    states[4].policy.contains_key(&(PREFIX_FULL, key))
}

/// Every packet a spanning read lets through that both `before` and `after`
/// drop, when `plan` writes in place; empty when it flips.
fn holes(before: &State, after: &State) -> (Plan, Vec<(Packet, [usize; 5])>) {
    let (old, new) = (content(before), content(after));
    let planned = plan(&old, &new);
    let Plan::InPlace(writes) = &planned else {
        return (planned, Vec::new());
    };
    let mut states = vec![old.clone()];
    for write in writes {
        let mut next = states[states.len() - 1].clone();
        apply(&mut next, write);
        states.push(next);
    }
    let last = states.len() - 1;
    let mut packets = Vec::new();
    for ifindex in old.endpoints.keys() {
        for (peer, _) in before.peers.iter().chain(&after.peers) {
            for direction in [DIRECTION_INGRESS, DIRECTION_EGRESS] {
                for port in PORTS {
                    packets.push((*ifindex, *peer, direction, port));
                }
            }
        }
    }
    let mut found = Vec::new();
    for packet in packets {
        let was = passes([&old; 5], packet);
        let will = passes([&new; 5], packet);
        assert_eq!(
            passes([&states[last]; 5], packet),
            will,
            "the written bank decides {packet:?} as the new state"
        );
        let (_, _, _, port) = packet;
        let named = states.iter().any(|state| {
            state
                .policy
                .keys()
                .any(|(_, key)| key.port_be == port.to_be())
        });
        if was || will || !named {
            continue;
        }
        for t1 in 0..=last {
            for t2 in t1..=last {
                for t3 in t2..=last {
                    for t3a in t3..=last {
                        for t4 in t3a..=last {
                            let at = [t1, t2, t3, t3a, t4];
                            if passes(at.map(|t| &states[t]), packet) {
                                found.push((packet, at));
                                return (planned, found);
                            }
                        }
                    }
                }
            }
        }
    }
    (planned, found)
}

/// Every same-node packet (client interface, server interface, port) that,
/// when `plan` writes in place, could pass the client's egress with one state's
/// verdict and the server's ingress with the other's while neither state passes
/// it at both; empty when it flips. Each hook alone passes only what the state
/// before or the state after passes (`holes`), so its verdicts mid-write are
/// among those two, read at any time.
fn crossed(before: &State, after: &State) -> (Plan, Vec<(u32, u32, u16)>) {
    let (old, new) = (content(before), content(after));
    let planned = plan(&old, &new);
    if !matches!(planned, Plan::InPlace(_)) {
        return (planned, Vec::new());
    }
    (planned, crossed_between(&old, &new))
}

/// `crossed`'s packets for any writes between `old` and `new`.
fn crossed_between(old: &BankContent, new: &BankContent) -> Vec<(u32, u32, u16)> {
    let mut found = Vec::new();
    let interfaces: Vec<u32> = old.endpoints.keys().copied().collect();
    for client in &interfaces {
        for server in &interfaces {
            if client == server {
                continue;
            }
            for port in PORTS {
                let egress = (*client, pod_of(*server), DIRECTION_EGRESS, port);
                let ingress = (*server, pod_of(*client), DIRECTION_INGRESS, port);
                let verdicts =
                    |state: &BankContent| (passes([state; 5], egress), passes([state; 5], ingress));
                let (was, will) = (verdicts(old), verdicts(new));
                let egress_may = was.0 || will.0;
                let ingress_may = was.1 || will.1;
                if egress_may && ingress_may && !(was.0 && was.1) && !(will.0 && will.1) {
                    found.push((*client, *server, port));
                }
            }
        }
    }
    found
}

/// What `classes_move_safely` finds of `before` and `after`, which differ in
/// their peers' classes alone (the same peers).
fn classes_may_move(before: &State, after: &State) -> bool {
    let (old, new) = (content(before), content(after));
    assert_eq!(old.rule_sets, new.rule_sets);
    let mut moves = BTreeSet::new();
    let changes: Vec<_> = new
        .peers_v4
        .iter()
        .map(|(prefix, class)| (*prefix, Some(*class)))
        .collect();
    assert!(class_moves(&old.peers_v4, &changes, 32, &mut moves));
    classes_move_safely(&old, &moves)
}

#[test]
fn addresses_trading_an_egress_allow_for_an_ingress_allow_do_not_move_in_place() {
    // Client interface 10 (id 1, address 1) to server interface 11 (id 2,
    // address 2) on port 80, the rules kept: the client's egress allows class 3
    // and not 4, the server's ingress class 2 and not 1. The server's address
    // moves from 3 to 4 and the client's from 1 to 2: before, the egress passes
    // it and the ingress does not; after, the other way round. Written one by
    // one, a packet judged at the egress before and the ingress after passes.
    let rules = || {
        vec![
            ((1, 3, DIRECTION_EGRESS), vec![80]),
            ((1, 4, DIRECTION_EGRESS), vec![22]),
            ((2, 2, DIRECTION_INGRESS), vec![80]),
            ((2, 1, DIRECTION_INGRESS), vec![22]),
        ]
    };
    let state = |client: u32, server: u32| State {
        endpoints: vec![(10, 1), (11, 2)],
        peers: vec![(1, client), (2, server)],
        rows: vec![],
        one_way: rules(),
    };
    let (before, after) = (state(1, 3), state(2, 4));
    assert!(!crossed_between(&content(&before), &content(&after)).is_empty());
    assert!(!classes_may_move(&before, &after));
    // Either address alone moves in place: one direction does not change.
    assert!(classes_may_move(&before, &state(2, 3)));
    assert!(classes_may_move(&before, &state(1, 4)));
    // Both narrowing (each allow lost) moves in place too.
    let narrowed = State {
        one_way: vec![
            ((1, 3, DIRECTION_EGRESS), vec![80]),
            ((2, 1, DIRECTION_INGRESS), vec![80]),
        ],
        ..state(1, 3)
    };
    let moved = State {
        peers: vec![(1, 2), (2, 4)],
        ..State {
            one_way: narrowed.one_way.clone(),
            ..state(1, 3)
        }
    };
    assert!(classes_may_move(&narrowed, &moved));
    // Back, both widen; but the check does not know which addresses each
    // endpoint's packets go to, and a reader stalled on address 1 whose hash
    // element the kernel hands to address 2's update could copy class 3,
    // which endpoint 1's egress admits and address 1's classes (2, then 1) do
    // not: refused.
    assert!(!classes_may_move(&moved, &narrowed));
}

#[test]
fn a_batch_of_moves_is_refused_where_a_reused_element_could_give_another_address_class() {
    // Endpoint 1 admits port 22 from classes 1 and 2, port 80 from 3 and 4.
    // Address 1 moves from 1 to 2 and address 2 from 3 to 4: neither move
    // changes a verdict, but a reader stalled on address 1 whose hash element
    // the kernel hands to address 2's update could copy class 4 and pass port
    // 80, which address 1 gets in neither state.
    let state = |first: u32, second: u32| State {
        endpoints: vec![(10, 1)],
        peers: vec![(1, first), (2, second)],
        rows: vec![],
        one_way: vec![
            ((1, 1, DIRECTION_INGRESS), vec![22]),
            ((1, 2, DIRECTION_INGRESS), vec![22]),
            ((1, 3, DIRECTION_INGRESS), vec![80]),
            ((1, 4, DIRECTION_INGRESS), vec![80]),
        ],
    };
    let before = state(1, 3);
    assert!(!classes_may_move(&before, &state(2, 4)));
    assert!(classes_may_move(&before, &state(2, 3)));
    assert!(classes_may_move(&before, &state(1, 4)));
}

#[test]
fn only_flagless_host_entries_that_exist_move_class() {
    let class = |class_id, flags| PeerClass { class_id, flags };
    let active: BTreeMap<(u32, [u8; 4]), PeerClass> = [
        ((32, addr(1)), class(1, 0)),
        ((32, addr(2)), class(1, 1)),
        ((24, addr(0)), class(3, 0)),
    ]
    .into();
    type Change = ((u32, [u8; 4]), Option<PeerClass>);
    let moves = |changes: &[Change]| {
        let mut moves = BTreeSet::new();
        class_moves(&active, changes, 32, &mut moves).then_some(moves)
    };
    assert_eq!(
        moves(&[((32, addr(1)), Some(class(2, 0)))]),
        Some([(1, 2)].into())
    );
    assert_eq!(
        moves(&[((32, addr(1)), Some(class(1, 0)))]),
        Some(BTreeSet::new())
    );
    for refused in [
        ((32, addr(1)), None),                          // removed
        ((32, addr(5)), Some(class(2, 0))),             // not in the bank
        ((32, addr(2)), Some(class(2, 1))),             // flagged before and after
        ((32, addr(1)), Some(class(2, 1))),             // flagged after
        ((24, addr(0)), Some(class(2, 0))),             // shorter than a host
        ((32, addr(1)), Some(class(STAGING_CLASS, 0))), // the staging class
    ] {
        assert_eq!(moves(&[refused]), None, "{refused:?}");
    }
}

#[test]
fn random_class_moves_found_safe_cross_no_hooks() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut safe, mut refused) = (0, 0);
    for case in 0..200 {
        let before = random_state(&mut rng);
        let after = State {
            endpoints: before.endpoints.clone(),
            peers: before
                .peers
                .iter()
                .map(|(peer, class)| match rng.below(2) {
                    0 => (*peer, *class),
                    _ => (*peer, 1 + rng.below(3)),
                })
                .collect(),
            rows: before.rows.clone(),
            one_way: before.one_way.clone(),
        };
        if classes_may_move(&before, &after) {
            safe += 1;
            let crossed = crossed_between(&content(&before), &content(&after));
            assert!(crossed.is_empty(), "case {case}: {crossed:?}");
        } else {
            refused += 1;
        }
    }
    assert!(
        safe >= 40 && refused >= 10,
        "{safe} of 200 cases moved in place, {refused} refused"
    );
}

#[test]
fn trading_an_egress_allow_for_an_ingress_allow_flips() {
    // Client interface 10 (id 1, address 1 in class 1) to server interface 11
    // (id 2, address 2 in class 2) on port 80: before, the client's egress allows
    // it and the server's ingress does not; after, the other way round. A packet
    // judged at the egress before the writes and at the ingress after them would
    // pass it, which neither state does.
    let before = State {
        endpoints: vec![(10, 1), (11, 2)],
        peers: vec![(1, 1), (2, 2)],
        rows: vec![],
        one_way: vec![
            ((1, 2, DIRECTION_EGRESS), vec![80, 22]),
            ((2, 1, DIRECTION_INGRESS), vec![22]),
        ],
    };
    let after = State {
        endpoints: vec![(10, 1), (11, 2)],
        peers: vec![(1, 1), (2, 2)],
        rows: vec![],
        one_way: vec![
            ((1, 2, DIRECTION_EGRESS), vec![22]),
            ((2, 1, DIRECTION_INGRESS), vec![80, 22]),
        ],
    };
    let (planned, holes) = holes(&before, &after);
    assert!(holes.is_empty(), "{holes:?}");
    let (planned_again, crossed) = crossed(&before, &after);
    assert_eq!(planned, planned_again);
    assert!(crossed.is_empty(), "{planned:?}: {crossed:?}");
    assert!(matches!(planned, Plan::Flip(_)), "{planned:?}");

    // Widening both ways at once is written in place.
    let wider = State {
        one_way: vec![
            ((1, 2, DIRECTION_EGRESS), vec![80, 22]),
            ((2, 1, DIRECTION_INGRESS), vec![80, 22]),
        ],
        ..after
    };
    assert!(matches!(
        plan(&content(&before), &content(&wider)),
        Plan::InPlace(_)
    ));
    assert!(matches!(
        plan(&content(&wider), &content(&before)),
        Plan::InPlace(_)
    ));
}

#[test]
fn a_peer_moving_class_while_its_new_class_changes_rules_is_staged() {
    // Peer 1 moves from class 1 to class 2, and class 2's rules change from 22
    // to 443: read as class 2 before the rules change, it would pass 22, which
    // neither state lets it.
    let before = ingress_only(State {
        endpoints: vec![(10, 1)],
        peers: vec![(1, 1), (2, 2)],
        rows: vec![((1, 1), vec![80]), ((1, 2), vec![22])],
        one_way: Vec::new(),
    });
    let after = ingress_only(State {
        endpoints: vec![(10, 1)],
        peers: vec![(1, 2), (2, 2)],
        rows: vec![((1, 1), vec![80]), ((1, 2), vec![443])],
        one_way: Vec::new(),
    });
    let (planned, holes) = holes(&before, &after);
    assert!(matches!(planned, Plan::InPlace(_)), "{planned:?}");
    assert!(holes.is_empty(), "{holes:?}");
}

#[test]
fn an_interface_moving_to_a_new_id_while_peers_move_is_written_in_place() {
    // Interface 10 moves from id 1 (gone after) to id 3, interface 11 stays
    // on 2, peer 1 moves from class 1 to class 2, and the rules change.
    let before = ingress_only(State {
        endpoints: vec![(10, 1), (11, 2)],
        peers: vec![(1, 1), (2, 2)],
        rows: vec![
            ((1, 1), vec![80]),
            ((1, 2), vec![22]),
            ((2, 1), vec![9000]),
            ((2, 2), vec![443]),
        ],
        one_way: Vec::new(),
    });
    let after = ingress_only(State {
        endpoints: vec![(10, 3), (11, 2)],
        peers: vec![(1, 2), (2, 2)],
        rows: vec![
            ((3, 2), vec![8080]),
            ((2, 2), vec![443]),
            ((3, 1), vec![22]),
        ],
        one_way: Vec::new(),
    });
    let (planned, holes) = holes(&before, &after);
    assert!(matches!(planned, Plan::InPlace(_)), "{planned:?}");
    assert!(holes.is_empty(), "{holes:?}");
}

#[test]
fn an_interface_leaving_an_id_that_stays_while_a_peer_moves_flips() {
    // Interface 10 moves from id 1 to id 2 while 11 stays on 1, and peer 1
    // moves from class 1 to class 2: a packet of 10 that read id 1 before its
    // move and class 2 after the peer's could pass 22 (id 1 with class 2),
    // which neither state gives it.
    let before = ingress_only(State {
        endpoints: vec![(10, 1), (11, 1)],
        peers: vec![(1, 1), (2, 2)],
        rows: vec![((1, 1), vec![80]), ((1, 2), vec![22]), ((2, 2), vec![443])],
        one_way: Vec::new(),
    });
    let after = ingress_only(State {
        endpoints: vec![(10, 2), (11, 1)],
        peers: vec![(1, 2), (2, 2)],
        rows: vec![((1, 1), vec![80]), ((1, 2), vec![22]), ((2, 2), vec![443])],
        one_way: Vec::new(),
    });
    let (planned, holes) = holes(&before, &after);
    assert!(holes.is_empty(), "{holes:?}");
    assert!(matches!(planned, Plan::Flip(_)), "{planned:?}");
}

#[test]
fn the_writes_come_in_the_documented_order() {
    let before = ingress_only(State {
        endpoints: vec![(10, 1), (11, 2)],
        peers: vec![(1, 1), (2, 2)],
        rows: vec![((1, 1), vec![80]), ((1, 2), vec![22]), ((2, 2), vec![443])],
        one_way: Vec::new(),
    });
    let after = ingress_only(State {
        endpoints: vec![(10, 3), (11, 2)],
        peers: vec![(1, 2), (2, 2)],
        rows: vec![((3, 2), vec![8080]), ((2, 2), vec![443])],
        one_way: Vec::new(),
    });
    let Plan::InPlace(writes) = plan(&content(&before), &content(&after)) else {
        panic!("expected writes in place");
    };
    let step = |write: &Write| match write {
        Write::Policy(_, Some(_)) => 1,
        Write::PeerV4(_, Some(class)) if class.class_id == STAGING_CLASS => 2,
        Write::RuleSet(key, _) if key.endpoint_id != 1 => 3,
        Write::Endpoint(..) => 4,
        Write::RuleSet(..) => 5,
        Write::PeerV4(..) | Write::PeerV6(..) => 6,
        Write::Policy(_, None) => 7,
    };
    let steps: Vec<u8> = writes.iter().map(step).collect();
    let mut sorted = steps.clone();
    sorted.sort();
    assert_eq!(steps, sorted, "{writes:#?}");
    for expected in 1..=7 {
        assert!(
            steps.contains(&expected),
            "step {expected} missing: {writes:#?}"
        );
    }
    // The any-class entries of a dropped id go before its class entries.
    assert_eq!(plan(&content(&after), &content(&after)), Plan::Same);
}

#[test]
fn rule_set_ids_follow_content_so_renumbered_tables_write_nothing() {
    let before = State {
        endpoints: vec![(10, 1)],
        peers: vec![(1, 1)],
        rows: vec![((1, 1), vec![80]), ((1, 2), vec![22])],
        one_way: Vec::new(),
    };
    let after = State {
        endpoints: vec![(10, 1)],
        peers: vec![(1, 1)],
        rows: vec![((1, 2), vec![22]), ((1, 1), vec![80])],
        one_way: Vec::new(),
    };
    assert_eq!(plan(&content(&before), &content(&after)), Plan::Same);
}

/// A small deterministic generator (xorshift), so a failure names its case.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n)) as u32
    }
}

/// A random state of interfaces 10-12 on ids 1-4, peers 1-3 in classes 1-3 (or
/// none), and random rows (any-class ones included) over three ports.
fn random_state(rng: &mut Rng) -> State {
    let endpoints = (10..13)
        .map(|ifindex| (ifindex, 1 + rng.below(4)))
        .collect();
    let peers = (1..4u8)
        .filter_map(|peer| match rng.below(4) {
            0 => None,
            class => Some((peer, class)),
        })
        .collect();
    let mut rows = Vec::new();
    let mut one_way = Vec::new();
    for endpoint in 1..5 {
        for class in [1, 2, 3, RULE_SET_ANY_CLASS] {
            if rng.below(3) == 0 {
                let ports = random_ports(rng);
                if !ports.is_empty() {
                    match rng.below(3) {
                        0 => rows.push(((endpoint, class), ports)),
                        way => one_way.push(((endpoint, class, (way - 1) as u8), ports)),
                    }
                }
            }
        }
    }
    State {
        endpoints,
        peers,
        rows,
        one_way,
    }
}

fn random_ports(rng: &mut Rng) -> Vec<u16> {
    [22, 80, 443]
        .into_iter()
        .filter(|_| rng.below(2) == 0)
        .collect()
}

/// `state` with ports added to (`widen`) or taken from its one-way rows, and
/// maybe a row added or removed, the classes and ids kept.
fn moved_one_way(rng: &mut Rng, state: &State, widen: bool) -> State {
    let mut one_way = state.one_way.clone();
    for (_, ports) in &mut one_way {
        let change = random_ports(rng);
        if widen {
            ports.extend(
                change
                    .iter()
                    .filter(|port| !ports.contains(port))
                    .collect::<Vec<_>>(),
            );
            ports.sort_unstable();
        } else {
            ports.retain(|port| !change.contains(port));
        }
    }
    one_way.retain(|(_, ports)| !ports.is_empty());
    State {
        endpoints: state.endpoints.clone(),
        peers: state.peers.clone(),
        rows: state.rows.clone(),
        one_way,
    }
}

#[test]
fn random_changes_written_in_place_open_no_hole() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut in_place = 0;
    for case in 0..50 {
        // One hook at a time (two hooks: the test below).
        let before = ingress_only(random_state(&mut rng));
        let mut after = ingress_only(random_state(&mut rng));
        // Often keep the interfaces' ids, as most policy changes do.
        if rng.below(2) == 0 {
            after.endpoints.clone_from(&before.endpoints);
        }
        let (planned, holes) = holes(&before, &after);
        assert!(holes.is_empty(), "case {case}: {planned:?} {holes:?}");
        let (_, crossed) = crossed(&before, &after);
        assert!(crossed.is_empty(), "case {case}: {planned:?} {crossed:?}");
        if matches!(planned, Plan::InPlace(_)) {
            in_place += 1;
        }
    }
    assert!(
        in_place >= 5,
        "only {in_place} of 50 cases were written in place"
    );
}

#[test]
fn random_one_way_changes_judged_at_two_hooks_open_no_hole() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut in_place, mut flipped) = (0, 0);
    for case in 0..60 {
        let before = random_state(&mut rng);
        // Egress and ingress moved the same way, or each its own way.
        let after = match case % 3 {
            0 => moved_one_way(&mut rng, &before, true),
            1 => moved_one_way(&mut rng, &before, false),
            _ => {
                let mut after = random_state(&mut rng);
                after.endpoints.clone_from(&before.endpoints);
                after.peers.clone_from(&before.peers);
                after
            }
        };
        let (planned, holes) = holes(&before, &after);
        assert!(holes.is_empty(), "case {case}: {planned:?} {holes:?}");
        let (_, crossed) = crossed(&before, &after);
        assert!(crossed.is_empty(), "case {case}: {planned:?} {crossed:?}");
        match planned {
            Plan::InPlace(_) => in_place += 1,
            Plan::Flip(_) => flipped += 1,
            Plan::Same => {}
        }
    }
    assert!(
        in_place >= 10 && flipped >= 5,
        "{in_place} of 60 cases written in place, {flipped} flipped"
    );
}

#[test]
fn an_interface_whose_isolation_changes_flips() {
    // The same rules, but interface 10 stops being isolated for egress: what its
    // packets get then is not among the pairs compared (`Moves`).
    let state = State {
        endpoints: vec![(10, 1), (11, 2)],
        peers: vec![(1, 1), (2, 2)],
        rows: vec![((1, 2), vec![80]), ((2, 1), vec![80])],
        one_way: Vec::new(),
    };
    let before = content(&state);
    let mut after = before.clone();
    if let Some(info) = after.endpoints.get_mut(&10) {
        info.flags = ISOLATED_INGRESS;
    }
    assert!(matches!(plan(&before, &after), Plan::Flip(_)));
    assert!(matches!(plan(&after, &before), Plan::Flip(_)));
}
