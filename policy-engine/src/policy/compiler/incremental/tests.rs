//! `Incremental` equals a full compile after every change of random change
//! sequences on the compiler property test's clusters, and takes the short way
//! where it should.

use std::net::IpAddr;

use proptest::{collection::vec, prelude::*, sample::select};

use super::{EndpointChange, Incremental, Recompiled};
use crate::{
    model::{
        builders::{namespace, pod, service},
        ClusterState, Labels, NetworkPolicy, ObjectRef, Pod, PortRef, Protocol,
    },
    policy::{
        capacity::Budgets,
        compiler::{
            compile_with,
            properties::{
                cases, cluster_strategy, network_cluster_strategy, node_tables, parse,
                pod_strategy, pod_with_addresses, policy_strategy, PodParams, NAMESPACES, NODES,
                TINY,
            },
        },
        tables::DatapathTables,
    },
};

/// One change, as one watch event makes it.
#[derive(Clone, Debug)]
enum Change {
    /// A pod appears, or replaces the pod of its name: `pod{name}` with the
    /// addresses of index `address` (often another pod's: addresses get shared).
    UpsertPod(usize, usize, PodParams),
    /// The pod at this position (modulo the count) goes.
    RemovePod(usize),
    /// The pod at this position gets the labels of these parameters.
    Relabel(usize, PodParams),
    /// A policy appears (or replaces the one of its name).
    AddPolicy(NetworkPolicy),
    /// The policy at this position gets the content of this one (an edit).
    EditPolicy(usize, NetworkPolicy),
    /// The policy at this position goes.
    RemovePolicy(usize),
    /// Namespace `NAMESPACES[i]` gets these labels and tunnel permission, or with
    /// `None` is no longer declared.
    SetNamespace(usize, Option<(Vec<(&'static str, &'static str)>, bool)>),
    /// Service `svc{n}` appears or changes, with the addresses of these indices
    /// into `SERVICE_ADDRESSES` (ClusterIP first), and a port or none.
    UpsertService(usize, Vec<usize>, bool),
    /// The Service at this position goes.
    RemoveService(usize),
}

/// Addresses Services get: ClusterIPs of the generated clusters, fresh ones, pod
/// addresses, node addresses and ipBlock boundaries (which must compile in full).
const SERVICE_ADDRESSES: &[&str] = &[
    "10.96.0.10",
    "fd00:96::a",
    "10.96.0.20",
    "10.96.0.21",
    "fd00:96::b",
    "192.168.1.1",
    "10.0.0.1",
    "10.0.0.2",
    "fd00::3",
    "172.16.0.1",
    "10.0.0.250",
    "10.0.0.5",
    "10.0.0.4",
];

fn change_strategy() -> impl Strategy<Value = Change> {
    let namespace = prop_oneof![
        3 => (vec(select(&[("team", "x"), ("team", "y"), ("tier", "x")][..]), 0..=2), any::<bool>()).prop_map(Some),
        1 => Just(None),
    ];
    prop_oneof![
        4 => (0..12usize, 0..12usize, pod_strategy()).prop_map(|(n, a, p)| Change::UpsertPod(n, a, p)),
        3 => any::<usize>().prop_map(Change::RemovePod),
        3 => (any::<usize>(), pod_strategy()).prop_map(|(i, p)| Change::Relabel(i, p)),
        1 => (4..6usize).prop_flat_map(policy_strategy).prop_map(Change::AddPolicy),
        1 => (any::<usize>(), policy_strategy(9)).prop_map(|(i, p)| Change::EditPolicy(i, p)),
        1 => any::<usize>().prop_map(Change::RemovePolicy),
        2 => (0..3usize, namespace).prop_map(|(i, n)| Change::SetNamespace(i, n)),
        2 => (0..4usize, vec(0..SERVICE_ADDRESSES.len(), 0..=2), any::<bool>())
            .prop_map(|(n, a, p)| Change::UpsertService(n, a, p)),
        1 => any::<usize>().prop_map(Change::RemoveService),
    ]
}

/// Node `node`'s name, addresses and locality test.
fn node(node: usize) -> (Vec<IpAddr>, impl Fn(&Pod) -> bool) {
    let addresses = NODES[node].iter().map(|text| parse(text)).collect();
    let name = format!("n{node}");
    (addresses, move |pod: &Pod| {
        pod.node_name.as_deref() == Some(name.as_str())
    })
}

/// Applies `change` to `state`, as the watch event would.
fn change_state(state: &mut ClusterState, change: Change) {
    let nth =
        |keys: Vec<ObjectRef>, i: usize| (!keys.is_empty()).then(|| keys[i % keys.len()].clone());
    match change {
        Change::UpsertPod(name, address, params) => {
            let new = pod_with_addresses(name, address, params);
            state.pods.insert(new.key.clone(), new);
        }
        Change::RemovePod(i) => {
            if let Some(key) = nth(state.pods.keys().cloned().collect(), i) {
                state.pods.remove(&key);
            }
        }
        Change::Relabel(i, (_, pairs, ..)) => {
            if let Some(key) = nth(state.pods.keys().cloned().collect(), i) {
                if let Some(found) = state.pods.get_mut(&key) {
                    found.labels = pod("x", "x").labels(pairs).build().labels;
                }
            }
        }
        Change::AddPolicy(policy) => {
            state.policies.insert(policy.key.clone(), policy);
        }
        Change::EditPolicy(i, mut policy) => {
            if let Some(key) = nth(state.policies.keys().cloned().collect(), i) {
                policy.key = key.clone();
                state.policies.insert(key, policy);
            }
        }
        Change::RemovePolicy(i) => {
            if let Some(key) = nth(state.policies.keys().cloned().collect(), i) {
                state.policies.remove(&key);
            }
        }
        Change::SetNamespace(i, labels) => {
            let name = NAMESPACES[i];
            match labels {
                Some((pairs, tunnels)) => {
                    let mut built = namespace(name).labels(pairs);
                    if tunnels {
                        built = built.allow_tunnels();
                    }
                    state.namespaces.insert(name.to_string(), built.build());
                }
                None => {
                    state.namespaces.remove(name);
                }
            }
        }
        Change::UpsertService(n, addresses, port) => {
            let mut built = service("a", &format!("svc{n}"));
            for (i, index) in addresses.into_iter().enumerate() {
                let ip = SERVICE_ADDRESSES[index];
                built = if i == 0 {
                    built.cluster_ip(ip)
                } else {
                    built.extra_ip(ip)
                };
            }
            if port {
                built = built.port(80, PortRef::Number(8080), Protocol::Tcp);
            }
            let new = built.build();
            state.services.insert(new.key.clone(), new);
        }
        Change::RemoveService(i) => {
            if let Some(key) = nth(state.services.keys().cloned().collect(), i) {
                state.services.remove(&key);
            }
        }
    }
}

/// Applies `change` to `state` and brings both nodes' `Incremental`s to it as the
/// agent would (`ClusterState::changes`).
fn apply(state: &mut ClusterState, nodes: &mut [Incremental; 2], change: Change) {
    let before = state.clone();
    change_state(state, change);
    let changes = before.changes(state);
    for (index, incremental) in nodes.iter_mut().enumerate() {
        let (_, is_local) = node(index);
        let old = incremental.tables().clone();
        let recompiled = incremental.changed(state, &changes, &is_local, &is_local);
        only_what_it_names_moved(&old, incremental.tables(), &recompiled, index);
    }
}

/// `only_peers_moved` for `Peers`, `only_classes_moved` for `Reclassed`,
/// `only_endpoint_moved` for `Endpoint`; other results name nothing.
fn only_what_it_names_moved(
    old: &DatapathTables,
    new: &DatapathTables,
    recompiled: &Recompiled,
    index: usize,
) {
    match recompiled {
        Recompiled::Peers(prefixes) => only_peers_moved(old, new, prefixes, index),
        Recompiled::Reclassed(prefixes) => only_classes_moved(old, new, prefixes, index),
        Recompiled::Endpoint(change) => only_endpoint_moved(old, new, change, index),
        Recompiled::Entries | Recompiled::Full => {}
    }
}

/// What the agent relies on when it writes a `Recompiled::Endpoint` in place:
/// `new` is `old` with the pod's endpoint entry, the address entries of its
/// listed addresses and the listed peer entries changed, added or removed, and
/// nothing else; its entry and addresses come or go together, and the id its
/// entry names has another pod before and after (no rule set, class or id moved).
fn only_endpoint_moved(
    old: &DatapathTables,
    new: &DatapathTables,
    change: &EndpointChange,
    index: usize,
) {
    let mut expected = old.clone();
    match new.endpoints.get(&change.pod) {
        Some(entry) => expected.endpoints.insert(change.pod.clone(), *entry),
        None => expected.endpoints.remove(&change.pod),
    };
    for address in &change.addresses {
        match new.endpoint_addresses.get(address) {
            Some(owner) => expected.endpoint_addresses.insert(*address, owner.clone()),
            None => expected.endpoint_addresses.remove(address),
        };
    }
    for prefix in &change.peers {
        match new.peers.get(prefix) {
            Some(entry) => expected.peers.insert(*prefix, *entry),
            None => expected.peers.remove(prefix),
        };
    }
    assert_eq!(
        &expected, new,
        "node n{index}: Endpoint({change:?}) but more than its entries changed"
    );
    let (gone, came) = (
        old.endpoints.get(&change.pod),
        new.endpoints.get(&change.pod),
    );
    let entry = match (gone, came) {
        (Some(entry), None) | (None, Some(entry)) => entry,
        _ => panic!("node n{index}: Endpoint({change:?}) but the pod neither came nor went"),
    };
    let present = came.is_some();
    for address in &change.addresses {
        assert_eq!(
            new.endpoint_addresses.get(address) == Some(&change.pod),
            present,
            "node n{index}: {address} must come and go with {}",
            change.pod
        );
    }
    let others = new
        .endpoints
        .iter()
        .filter(|(pod, other)| **pod != change.pod && other.endpoint_id == entry.endpoint_id)
        .count();
    assert!(
        others > 0,
        "node n{index}: Endpoint({change:?}) but its id has no other pod"
    );
}

/// What the agent relies on when it writes a `Recompiled::Peers` in place (the
/// listed peer entries only): `new` is `old` with the entries at `prefixes`
/// changed, added or removed, and nothing else.
fn only_peers_moved(
    old: &DatapathTables,
    new: &DatapathTables,
    prefixes: &[ipnet::IpNet],
    index: usize,
) {
    let mut expected = old.clone();
    for prefix in prefixes {
        match new.peers.get(prefix) {
            Some(entry) => expected.peers.insert(*prefix, *entry),
            None => expected.peers.remove(prefix),
        };
    }
    assert_eq!(
        &expected, new,
        "node n{index}: Peers({prefixes:?}) but more than those peer entries changed"
    );
}

/// What the agent relies on when it writes a `Recompiled::Reclassed` in place:
/// `new` is `old` with the entries at `prefixes` changed and nothing else, each
/// a host prefix present in both, neither a node's nor a Service's, whose class
/// moved to one `old` has.
fn only_classes_moved(
    old: &DatapathTables,
    new: &DatapathTables,
    prefixes: &[ipnet::IpNet],
    index: usize,
) {
    only_peers_moved(old, new, prefixes, index);
    assert!(!prefixes.is_empty(), "node n{index}: Reclassed of nothing");
    let old_classes: std::collections::BTreeSet<u32> =
        old.peers.values().map(|entry| entry.class_id).collect();
    for prefix in prefixes {
        let (Some(before), Some(after)) = (old.peers.get(prefix), new.peers.get(prefix)) else {
            panic!("node n{index}: Reclassed names {prefix}, which is not in both");
        };
        assert_eq!(
            prefix.prefix_len(),
            prefix.max_prefix_len(),
            "node n{index}"
        );
        assert!(
            !(before.node || before.service || after.node || after.service),
            "node n{index}: Reclassed names {prefix}, a node or Service address"
        );
        assert_ne!(before.class_id, after.class_id, "node n{index}: {prefix}");
        assert!(
            old_classes.contains(&after.class_id),
            "node n{index}: {prefix} moved to a class the tables did not have"
        );
    }
}

fn incrementals(state: &ClusterState, budgets: &Budgets) -> [Incremental; 2] {
    [0, 1].map(|index| {
        let (addresses, is_local) = node(index);
        Incremental::new(state, &addresses, is_local, budgets)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// After every change, each node's incremental tables equal its full compile
    /// of the state, ids included; with the kernel's budgets, and with budgets so
    /// small that changes overflow them (a short way must then decline: a full
    /// compile decides which rules are refused).
    #[test]
    fn incremental_tables_equal_a_full_compile_after_every_change(
        start in cluster_strategy(),
        changes in vec(change_strategy(), 1..=12),
        tight in any::<bool>(),
    ) {
        let budgets = if tight { TINY } else { Budgets::kernel() };
        let mut state = start;
        let mut nodes = incrementals(&state, &budgets);
        for (step, change) in changes.into_iter().enumerate() {
            let shown = format!("{change:?}");
            apply(&mut state, &mut nodes, change);
            let full = node_tables(&state, &budgets);
            for (index, incremental) in nodes.iter().enumerate() {
                prop_assert_eq!(
                    incremental.tables(), &full[index],
                    "node n{} after change {} ({})", index, step, shown
                );
            }
        }
    }
}

/// The property test's random changes reach every short way, so its checks of
/// what each result names are exercised: over 256 cases drawn with a fixed seed,
/// each kind of result comes up.
#[test]
fn the_random_changes_reach_every_short_way() {
    use proptest::{strategy::ValueTree, test_runner::TestRunner};
    let strategy = (network_cluster_strategy(), vec(change_strategy(), 1..=12));
    let mut runner = TestRunner::deterministic();
    let mut seen = [0usize; 5];
    for _ in 0..1024 {
        let (start, changes) = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{e}"))
            .current();
        let mut state = start;
        let mut nodes = incrementals(&state, &Budgets::kernel());
        for change in changes {
            let before = state.clone();
            change_state(&mut state, change);
            let changes = before.changes(&state);
            for (index, incremental) in nodes.iter_mut().enumerate() {
                let (_, is_local) = node(index);
                let kind = match incremental.changed(&state, &changes, &is_local, &is_local) {
                    Recompiled::Peers(prefixes) if prefixes.is_empty() => continue,
                    Recompiled::Peers(_) => 0,
                    Recompiled::Reclassed(_) => 1,
                    Recompiled::Endpoint(_) => 2,
                    Recompiled::Entries => 3,
                    Recompiled::Full => 4,
                };
                seen[kind] += 1;
            }
        }
    }
    assert!(
        seen.iter().all(|count| *count > 0),
        "Peers, Reclassed, Endpoint, Entries, Full: {seen:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Batches of changes between two states, as the agent sees them between two
    /// snapshots (`ClusterState::changes`): each node's incremental tables equal
    /// its full compile after every batch.
    #[test]
    fn batched_pod_changes_equal_a_full_compile(
        start in cluster_strategy(),
        batches in vec(vec(change_strategy(), 1..=4), 1..=4),
    ) {
        let mut state = start;
        let mut nodes = incrementals(&state, &Budgets::kernel());
        for (step, batch) in batches.into_iter().enumerate() {
            let shown = format!("{batch:?}");
            let previous = state.clone();
            for change in batch {
                change_state(&mut state, change);
            }
            let changes = previous.changes(&state);
            for (index, incremental) in nodes.iter_mut().enumerate() {
                let (_, is_local) = node(index);
                let old = incremental.tables().clone();
                let recompiled = incremental.changed(&state, &changes, &is_local, &is_local);
                only_what_it_names_moved(&old, incremental.tables(), &recompiled, index);
            }
            let full = node_tables(&state, &Budgets::kernel());
            for (index, incremental) in nodes.iter().enumerate() {
                prop_assert_eq!(
                    incremental.tables(), &full[index],
                    "node n{} after batch {} ({})", index, step, shown
                );
            }
        }
    }
}

/// A pod on node n1 joining a class n0's tables already have changes n0's tables
/// by its peer entry alone, and its leaving does too; a pod of n0 joining or
/// leaving an endpoint id that stays changes its own entries; the last member of a
/// class, an address that is also an ipBlock boundary, and a pod of n0 in a new
/// group compile in full.
#[test]
fn a_pod_whose_class_and_group_exist_changes_only_its_own_entries() {
    use crate::model::builders::{cluster, netpol, rule, selector};
    let policy = netpol("a", "db")
        .select(selector().label("app", "db").build())
        .ingress(
            rule()
                .from_pods(selector().label("app", "web").build())
                .build(),
        )
        .ingress(rule().from_ip_block("10.0.0.8/29", ["10.0.0.9/32"]).build())
        .build();
    let web = |name: &str, ip: &str, node: &str| {
        pod("a", name)
            .labels([("app", "web")])
            .ip(ip)
            .node(node)
            .build()
    };
    let mut state = cluster()
        .pod(
            pod("a", "db")
                .labels([("app", "db")])
                .ip("10.0.0.1")
                .node("n0")
                .build(),
        )
        .pod(web("web0", "10.0.0.2", "n1"))
        .policy(policy)
        .build();
    let (addresses, is_local) = node(0);
    let mut n0 = Incremental::new(&state, &addresses, &is_local, &Budgets::kernel());
    let full =
        |state: &ClusterState| compile_with(state, &addresses, &is_local, &Budgets::kernel());

    let added = web("web1", "10.0.0.3", "n1");
    state.pods.insert(added.key.clone(), added.clone());
    let done = n0.pod_changed(&state, &added.key, None, &is_local, &is_local);
    assert_eq!(
        done,
        Recompiled::Peers(vec!["10.0.0.3/32".parse().unwrap()])
    );
    assert_eq!(n0.tables(), &full(&state));
    let class = n0.tables().peers[&"10.0.0.3/32".parse().unwrap()].class_id;
    assert_eq!(
        class,
        n0.tables().peers[&"10.0.0.2/32".parse().unwrap()].class_id
    );

    let before = state.pods.remove(&added.key);
    let done = n0.pod_changed(&state, &added.key, before.as_ref(), &is_local, &is_local);
    assert_eq!(
        done,
        Recompiled::Peers(vec!["10.0.0.3/32".parse().unwrap()])
    );
    assert_eq!(n0.tables(), &full(&state));

    // An address that is also an ipBlock boundary: its entry is more than the
    // pod's (gone, the except's entry stays), in full both ways.
    let boundary = web("web3", "10.0.0.9", "n1");
    state.pods.insert(boundary.key.clone(), boundary.clone());
    assert_eq!(
        n0.pod_changed(&state, &boundary.key, None, &is_local, &is_local),
        Recompiled::Full
    );
    assert_eq!(n0.tables(), &full(&state));
    let before = state.pods.remove(&boundary.key);
    let done = n0.pod_changed(&state, &boundary.key, before.as_ref(), &is_local, &is_local);
    assert_eq!(done, Recompiled::Full);
    assert_eq!(n0.tables(), &full(&state));
    assert!(n0
        .tables()
        .peers
        .contains_key(&"10.0.0.9/32".parse().unwrap()));

    // The last pod of its class leaving renumbers classes: in full.
    let key = ObjectRef::new("a", "web0");
    let before = state.pods.remove(&key);
    assert_eq!(
        n0.pod_changed(&state, &key, before.as_ref(), &is_local, &is_local),
        Recompiled::Full
    );
    assert_eq!(n0.tables(), &full(&state));

    // A pod of this node in a group that has an endpoint id: its own entries.
    let db = pod("a", "db1")
        .labels([("app", "db")])
        .ip("10.0.0.5")
        .node("n0")
        .build();
    state.pods.insert(db.key.clone(), db.clone());
    let own = |addresses: Vec<IpAddr>, peers: Vec<&str>| {
        Recompiled::Endpoint(EndpointChange {
            pod: db.key.clone(),
            addresses,
            peers: peers.into_iter().map(|p| p.parse().unwrap()).collect(),
        })
    };
    assert_eq!(
        n0.pod_changed(&state, &db.key, None, &is_local, &is_local),
        own(vec![parse("10.0.0.5")], vec!["10.0.0.5/32"])
    );
    assert_eq!(n0.tables(), &full(&state));
    assert_eq!(
        n0.tables().endpoints[&db.key],
        n0.tables().endpoints[&ObjectRef::new("a", "db")]
    );
    let before = state.pods.remove(&db.key);
    assert_eq!(
        n0.pod_changed(&state, &db.key, before.as_ref(), &is_local, &is_local),
        own(vec![parse("10.0.0.5")], vec!["10.0.0.5/32"])
    );
    assert_eq!(n0.tables(), &full(&state));

    // A pod of this node in a group no endpoint id has: in full.
    let local = web("web2", "10.0.0.4", "n0");
    state.pods.insert(local.key.clone(), local.clone());
    assert_eq!(
        n0.pod_changed(&state, &local.key, None, &is_local, &is_local),
        Recompiled::Full
    );
    assert_eq!(n0.tables(), &full(&state));

    // Its labels changed, so that it joins db's group and its own empties (ids
    // and classes renumber), and back: the applied rules stay, so its endpoints
    // and its classes are made again without a full compile.
    let mut relabelled = local.clone();
    relabelled.labels = Labels::from([("app".to_string(), "db".to_string())]);
    for (before, after) in [(&local, &relabelled), (&relabelled, &local)] {
        let ids_before = n0.tables().endpoints.clone();
        state.pods.insert(after.key.clone(), after.clone());
        assert_eq!(
            n0.pod_changed(&state, &after.key, Some(before), &is_local, &is_local),
            Recompiled::Entries
        );
        assert_eq!(n0.tables(), &full(&state));
        assert_ne!(n0.tables().endpoints, ids_before, "the pod's group moves");
    }
}

/// A Service address no pod, node or ipBlock boundary has changes its peer entry
/// alone, added and removed; one that is a pod's compiles in full. A namespace
/// label no applied peer looks at changes nothing, one it looks at compiles in
/// full. A policy that selects no pod of this node moves the ids after it when
/// added or removed and changes nothing when edited; one that selects a local pod
/// compiles in full. Each result equals a full compile.
#[test]
fn services_namespaces_and_policies_take_the_short_way_where_they_can() {
    use crate::model::builders::{cluster, netpol, rule, selector};
    let web = |name: &str, ip: &str, node: &str| {
        pod("a", name)
            .labels([("app", "web")])
            .ip(ip)
            .node(node)
            .build()
    };
    let db = netpol("a", "m-db")
        .select(selector().label("app", "db").build())
        .ingress(
            rule()
                .from_pods_in_namespaces(selector().build(), selector().label("team", "x").build())
                .build(),
        )
        .ingress(
            rule()
                .from_pods_in_namespaces(selector().build(), selector().label("team", "z").build())
                .build(),
        )
        .egress(rule().to_ip_block("10.0.0.0/8", ["10.0.0.0/24"]).build())
        .egress(rule().to_ip_block("10.0.0.0/16", ["10.0.0.4/32"]).build())
        .build();
    let mut state = cluster()
        .namespace(namespace("a").labels([("team", "x")]).build())
        .namespace(
            namespace("b")
                .labels([("team", "x"), ("tier", "y")])
                .build(),
        )
        .pod(
            pod("a", "db")
                .labels([("app", "db")])
                .ip("10.0.0.1")
                .node("n0")
                .build(),
        )
        .namespace(namespace("c").labels([("team", "z")]).build())
        // Its class sorts after those of a's pods: it is renumbered when they
        // leave theirs.
        .pod(
            pod("c", "api")
                .labels([("app", "api")])
                .ip("10.0.0.6")
                .node("n1")
                .build(),
        )
        .pod(web("web0", "10.0.0.2", "n1"))
        .pod(web("web1", "10.0.0.3", "n0"))
        .service(service("a", "s0").cluster_ip("10.96.0.10").build())
        .policy(db)
        .build();
    let (addresses, is_local) = node(0);
    let mut n0 = Incremental::new(&state, &addresses, &is_local, &Budgets::kernel());
    let full =
        |state: &ClusterState| compile_with(state, &addresses, &is_local, &Budgets::kernel());
    let mut step = |state: &mut ClusterState, change: Change| {
        let before = state.clone();
        change_state(state, change);
        let done = n0.changed(state, &before.changes(state), &is_local, &is_local);
        assert_eq!(n0.tables(), &full(state));
        // The index counts the peer prefixes a short way made, for the budgets.
        let peers = &n0.tables().peers;
        let v4 = peers
            .keys()
            .filter(|net| matches!(net, ipnet::IpNet::V4(_)))
            .count();
        if let Some(index) = &n0.index {
            assert_eq!(index.peers, [v4, peers.len() - v4]);
        }
        done
    };
    let net = |text: &str| text.parse::<ipnet::IpNet>().unwrap();

    // 10.96.0.20 (index 2) in the ipBlock's class: its entry alone.
    let added = step(&mut state, Change::UpsertService(1, vec![2], false));
    assert_eq!(added, Recompiled::Peers(vec![net("10.96.0.20/32")]));
    // A port added: the same addresses, nothing changes.
    let ported = step(&mut state, Change::UpsertService(1, vec![2], true));
    assert_eq!(ported, Recompiled::Peers(Vec::new()));
    let removed = step(&mut state, Change::RemoveService(1));
    assert_eq!(removed, Recompiled::Peers(vec![net("10.96.0.20/32")]));
    // A pod's address (10.0.0.2, index 7): in full.
    let shared = step(&mut state, Change::UpsertService(1, vec![7], false));
    assert_eq!(shared, Recompiled::Full);
    // An ipBlock's except (10.0.0.4, index 12): its entry stays when the Service
    // goes, in full both ways.
    let boundary = step(&mut state, Change::UpsertService(2, vec![12], false));
    assert_eq!(boundary, Recompiled::Full);
    assert_eq!(step(&mut state, Change::RemoveService(2)), Recompiled::Full);

    // Namespace b's `tier` label: no peer looks at it.
    let relabel = |pairs| Change::SetNamespace(1, Some((pairs, false)));
    assert_eq!(
        step(&mut state, relabel(vec![("team", "x")])),
        Recompiled::Peers(Vec::new())
    );
    // Its `team` label: the peer's namespaceSelector does; b has no pods, so
    // the classes are made again and come out as they were: nothing to write.
    assert_eq!(
        step(&mut state, relabel(vec![("team", "y")])),
        Recompiled::Peers(Vec::new())
    );
    // Namespace a's `team` label: its pods leave the peer, their classes move
    // (renumbered), the rule sets follow; endpoints and applied rules stay, so
    // no full compile, either way.
    let relabel_a = |pairs, tunnels| Change::SetNamespace(0, Some((pairs, tunnels)));
    let before = full(&state).peers;
    assert_eq!(
        step(&mut state, relabel_a(vec![("team", "y")], false)),
        Recompiled::Entries
    );
    assert_ne!(full(&state).peers, before, "the pods of a change class");
    assert_eq!(
        step(&mut state, relabel_a(vec![("team", "x")], false)),
        Recompiled::Entries
    );
    assert_eq!(full(&state).peers, before);
    // Tunnels allowed in a, where n0 has endpoints: their entries change, in full.
    assert_eq!(
        step(&mut state, relabel_a(vec![("team", "x")], true)),
        Recompiled::Full
    );
    assert_eq!(
        step(&mut state, relabel_a(vec![("team", "x")], false)),
        Recompiled::Full
    );

    // A policy selecting no pod of n0: ids move (it sorts first).
    let elsewhere = netpol("a", "a-elsewhere")
        .select(selector().label("app", "cache").build())
        .ingress(rule().from_pods(selector().build()).build())
        .build();
    assert_eq!(
        step(&mut state, Change::AddPolicy(elsewhere.clone())),
        Recompiled::Entries
    );
    let mut edited = elsewhere.clone();
    edited.ingress.clear();
    assert_eq!(
        step(&mut state, Change::EditPolicy(0, edited)),
        Recompiled::Peers(Vec::new())
    );
    assert_eq!(
        step(&mut state, Change::RemovePolicy(0)),
        Recompiled::Entries
    );
    // One selecting web1 on n0 without rules: no applied peer comes or goes, so
    // the classes stay and the endpoints and rule sets are made again.
    let here = netpol("a", "a-web")
        .select(selector().label("app", "web").build())
        .build();
    assert_eq!(
        step(&mut state, Change::AddPolicy(here.clone())),
        Recompiled::Entries
    );
    // Its rule naming a peer no applied rule names, which no pod matches: the
    // classes are made again with it and come out as they were, and back.
    let mut peered = here.clone();
    peered.ingress = vec![rule()
        .from_pods(selector().label("app", "cache").build())
        .build()];
    assert_eq!(
        step(&mut state, Change::AddPolicy(peered)),
        Recompiled::Peers(Vec::new())
    );
    assert_eq!(
        step(&mut state, Change::AddPolicy(here.clone())),
        Recompiled::Peers(Vec::new())
    );
    // A new peer matching a's web pods: their addresses take it in and move to
    // a class of their own, without a full compile, and back.
    let before = full(&state).peers;
    let mut matching = here.clone();
    matching.ingress = vec![rule()
        .from_pods(selector().label("app", "web").build())
        .build()];
    assert_eq!(
        step(&mut state, Change::AddPolicy(matching)),
        Recompiled::Entries
    );
    assert_ne!(full(&state).peers, before, "web0 and web1 change class");
    assert_eq!(
        step(&mut state, Change::AddPolicy(here.clone())),
        Recompiled::Entries
    );
    assert_eq!(full(&state).peers, before);
    // A new ipBlock: its cidr and excepts come in as regions (but one inside
    // another except, which changes nothing), the addresses it holds take it
    // in, without a full compile; and they go again.
    let before = full(&state).peers;
    let mut blocked = here.clone();
    blocked.ingress = vec![rule()
        .from_ip_block(
            "10.0.0.0/28",
            ["10.0.0.2/31", "10.0.0.8/29", "10.0.0.12/30"],
        )
        .build()];
    assert_eq!(
        step(&mut state, Change::AddPolicy(blocked)),
        Recompiled::Entries
    );
    let after = full(&state).peers;
    assert!(after.contains_key(&net("10.0.0.8/29")), "{after:?}");
    assert!(!after.contains_key(&net("10.0.0.12/30")), "{after:?}");
    assert_ne!(
        after.get(&net("10.0.0.1/32")),
        before.get(&net("10.0.0.1/32"))
    );
    assert_eq!(
        step(&mut state, Change::AddPolicy(here)),
        Recompiled::Entries
    );
    assert_eq!(full(&state).peers, before);
}

/// A namespace label change that moves its pods between classes other pods
/// keep leaves the classes and rule sets as they were: only those pods' peer
/// entries change (`Reclassed`), either way. One that moves the last pod out of
/// a class (the classes renumber) makes them again (`Entries`). Each result
/// equals a full compile.
#[test]
fn a_namespace_relabel_between_kept_classes_moves_only_its_pods_entries() {
    use crate::model::builders::{cluster, netpol, rule, selector};
    let from_team = |team: &'static str| {
        rule()
            .from_pods_in_namespaces(selector().build(), selector().label("team", team).build())
            .build()
    };
    let pod_at = |ns: &str, name: &str, ip: &str, node: &str| {
        pod(ns, name)
            .labels([("app", "api")])
            .ip(ip)
            .node(node)
            .build()
    };
    let mut state = cluster()
        .namespace(namespace("a").labels([("team", "x")]).build())
        .namespace(namespace("b").labels([("team", "z")]).build())
        .namespace(namespace("c").labels([("team", "z")]).build())
        .pod(pod_at("a", "db", "10.0.0.1", "n0"))
        .pod(pod_at("a", "web", "10.0.0.2", "n1"))
        .pod(pod_at("b", "api", "10.0.0.6", "n1"))
        .pod(pod_at("c", "api", "10.0.0.7", "n1"))
        .policy(
            netpol("a", "db")
                .select(selector().build())
                .ingress(from_team("x"))
                .ingress(from_team("z"))
                .build(),
        )
        .build();
    let (addresses, is_local) = node(0);
    let mut n0 = Incremental::new(&state, &addresses, &is_local, &Budgets::kernel());
    let mut step = |state: &mut ClusterState, change: Change| {
        let before = state.clone();
        let old = n0.tables().clone();
        change_state(state, change);
        let done = n0.changed(state, &before.changes(state), &is_local, &is_local);
        assert_eq!(
            n0.tables(),
            &compile_with(state, &addresses, &is_local, &Budgets::kernel())
        );
        only_what_it_names_moved(&old, n0.tables(), &done, 0);
        done
    };
    let c_pod = vec!["10.0.0.7/32".parse::<ipnet::IpNet>().unwrap()];
    // c's pod joins a's pods' class; b's pod keeps team z's.
    let team = |team| Change::SetNamespace(2, Some((vec![("team", team)], false)));
    assert_eq!(
        step(&mut state, team("x")),
        Recompiled::Reclassed(c_pod.clone())
    );
    assert_eq!(step(&mut state, team("z")), Recompiled::Reclassed(c_pod));
    // b's pod alone leaves team z's class: c's still holds it, so it stays.
    let b_team = |team| Change::SetNamespace(1, Some((vec![("team", team)], false)));
    assert!(matches!(
        step(&mut state, b_team("x")),
        Recompiled::Reclassed(_)
    ));
    // And c's pod leaves it too: the class is gone, the classes are made again.
    assert_eq!(step(&mut state, team("x")), Recompiled::Entries);
    assert_eq!(step(&mut state, team("z")), Recompiled::Entries);
}

#[test]
fn the_tables_the_agent_holds_are_copied_only_by_a_change_made_in_them() {
    use std::sync::Arc;

    use crate::policy::compiler::one_pod::Done;

    use crate::model::builders::{cluster, netpol, rule, selector};
    let web = pod("a", "web")
        .labels([("app", "web")])
        .ip("10.0.0.2")
        .node("n0")
        .build();
    let allow = |port| {
        netpol("a", "web-in")
            .select(selector().label("app", "web").build())
            .ingress(rule().port(port, Protocol::Tcp).build())
            .build()
    };
    let elsewhere = |port| {
        netpol("b", "other")
            .select(selector().build())
            .ingress(rule().port(port, Protocol::Tcp).build())
            .build()
    };
    let s0 = |port| {
        service("a", "s0")
            .cluster_ip("10.96.0.10")
            .port(port, PortRef::Number(port), Protocol::Tcp)
            .build()
    };
    let mut state = cluster()
        .namespace(namespace("a").build())
        .pod(web.clone())
        .pod(pod("a", "db").ip("10.0.0.3").node("n1").build())
        .policy(allow(80))
        .policy(elsewhere(80))
        .service(s0(80))
        .build();
    let (addresses, is_local) = node(0);
    let mut n0 = Incremental::new(&state, &addresses, &is_local, &Budgets::kernel());
    // As the agent: the sync loop holds the tables it last wrote.
    let held = n0.shared_tables();
    let still_held = |tables: &Arc<DatapathTables>| Arc::ptr_eq(tables, &held);

    // A policy of a local pod edited: its renumbering way refuses it, and the
    // tables are made anew, so the held ones are never copied.
    let before = state.clone();
    state.policies.insert(allow(81).key.clone(), allow(81));
    let changes = before.changes(&state);
    let Some(index) = n0.index.as_mut() else {
        panic!("no index");
    };
    assert_eq!(
        index.policies_changed(&state, &changes.policies, &mut n0.tables),
        None
    );
    assert!(
        still_held(&n0.tables),
        "a refused policy change copied the tables"
    );
    // A Service at a pod's address: refused, nothing copied either.
    let mut with_service = state.clone();
    let at_pod = service("a", "s").cluster_ip("10.0.0.3").build();
    with_service.services.insert(at_pod.key.clone(), at_pod);
    let services = state.changes(&with_service).services;
    assert_eq!(
        index.services_changed(&with_service, &services, &mut n0.tables),
        None
    );
    assert!(
        still_held(&n0.tables),
        "a refused Service change copied the tables"
    );
    // Made, but with nothing to change: a policy of no local pod edited (no id
    // moves) and a Service's port edited (its address stays).
    let mut edited = state.clone();
    edited
        .policies
        .insert(elsewhere(81).key.clone(), elsewhere(81));
    let policies = state.changes(&edited).policies;
    assert_eq!(
        index.policies_changed(&edited, &policies, &mut n0.tables),
        Some(Done::Peers(Vec::new()))
    );
    let mut ported = state.clone();
    ported.services.insert(s0(81).key.clone(), s0(81));
    let services = state.changes(&ported).services;
    assert_eq!(
        index.services_changed(&ported, &services, &mut n0.tables),
        Some(Done::Peers(Vec::new()))
    );
    assert!(
        still_held(&n0.tables),
        "a change with nothing to write copied the tables"
    );
    // The pod of another node goes: made in place, on a copy.
    let mut without_db = state.clone();
    let db = ObjectRef::new("a", "db");
    let gone = without_db.pods.remove(&db);
    let done = index.pod_changed(
        &without_db,
        gone.as_ref(),
        None,
        &is_local,
        &is_local,
        &mut n0.tables,
    );
    assert!(done.is_some());
    assert!(
        !still_held(&n0.tables),
        "a change in place is made on a copy"
    );
    assert!(held
        .peers
        .contains_key(&"10.0.0.3/32".parse().unwrap_or_else(|e| panic!("{e}"))));
}
