//! `Incremental` equals a full compile after every change of random change
//! sequences on the compiler property test's clusters, and takes the short way
//! where it should.

use std::net::IpAddr;

use proptest::{collection::vec, prelude::*};

use super::{Incremental, Recompiled};
use crate::{
    model::{builders::pod, ClusterState, NetworkPolicy, ObjectRef, Pod},
    policy::{
        capacity::Budgets,
        compiler::{
            compile_with,
            properties::{
                cases, cluster_strategy, node_tables, parse, pod_strategy, pod_with_addresses,
                policy_strategy, PodParams, NODES,
            },
        },
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
    /// A policy appears.
    AddPolicy(NetworkPolicy),
    /// The policy at this position goes.
    RemovePolicy(usize),
}

fn change_strategy() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0..12usize, 0..12usize, pod_strategy()).prop_map(|(n, a, p)| Change::UpsertPod(n, a, p)),
        3 => any::<usize>().prop_map(Change::RemovePod),
        3 => (any::<usize>(), pod_strategy()).prop_map(|(i, p)| Change::Relabel(i, p)),
        1 => (4..6usize).prop_flat_map(policy_strategy).prop_map(Change::AddPolicy),
        1 => any::<usize>().prop_map(Change::RemovePolicy),
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

/// Applies `change` to `state` and to both nodes' `Incremental`s as the agent would.
fn apply(state: &mut ClusterState, nodes: &mut [Incremental; 2], change: Change) {
    let nth =
        |keys: Vec<ObjectRef>, i: usize| (!keys.is_empty()).then(|| keys[i % keys.len()].clone());
    let pod_change = match change {
        Change::UpsertPod(name, address, params) => {
            let new = pod_with_addresses(name, address, params);
            let key = new.key.clone();
            let before = state.pods.insert(key.clone(), new);
            Some((key, before))
        }
        Change::RemovePod(i) => nth(state.pods.keys().cloned().collect(), i)
            .map(|key| (key.clone(), state.pods.remove(&key))),
        Change::Relabel(i, (_, pairs, ..)) => {
            nth(state.pods.keys().cloned().collect(), i).map(|key| {
                let before = state.pods.get(&key).cloned();
                if let Some(found) = state.pods.get_mut(&key) {
                    found.labels = pod("x", "x").labels(pairs).build().labels;
                }
                (key, before)
            })
        }
        Change::AddPolicy(policy) => {
            state.policies.insert(policy.key.clone(), policy);
            None
        }
        Change::RemovePolicy(i) => {
            if let Some(key) = nth(state.policies.keys().cloned().collect(), i) {
                state.policies.remove(&key);
            }
            None
        }
    };
    for (index, incremental) in nodes.iter_mut().enumerate() {
        let (_, is_local) = node(index);
        match &pod_change {
            Some((key, before)) => {
                incremental.pod_changed(state, key, before.as_ref(), &is_local, &is_local);
            }
            None => incremental.recompile(state, is_local),
        }
    }
}

fn incrementals(state: &ClusterState) -> [Incremental; 2] {
    [0, 1].map(|index| {
        let (addresses, is_local) = node(index);
        Incremental::new(state, &addresses, is_local, &Budgets::kernel())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// After every change, each node's incremental tables equal its full compile
    /// of the state, ids included.
    #[test]
    fn incremental_tables_equal_a_full_compile_after_every_change(
        start in cluster_strategy(),
        changes in vec(change_strategy(), 1..=12),
    ) {
        let mut state = start;
        let mut nodes = incrementals(&state);
        for (step, change) in changes.into_iter().enumerate() {
            let shown = format!("{change:?}");
            apply(&mut state, &mut nodes, change);
            let full = node_tables(&state, &Budgets::kernel());
            for (index, incremental) in nodes.iter().enumerate() {
                prop_assert_eq!(
                    incremental.tables(), &full[index],
                    "node n{} after change {} ({})", index, step, shown
                );
            }
        }
    }
}

/// Applies `change` to `state` alone.
fn change_state(state: &mut ClusterState, change: Change) {
    let mut ignored = incrementals(&ClusterState::default());
    apply(state, &mut ignored, change);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Batches of changes between two states, as the agent sees them between two
    /// snapshots (`ClusterState::pod_changes`, else a full compile): each node's
    /// incremental tables equal its full compile after every batch.
    #[test]
    fn batched_pod_changes_equal_a_full_compile(
        start in cluster_strategy(),
        batches in vec(vec(change_strategy(), 1..=4), 1..=4),
    ) {
        let mut state = start;
        let mut nodes = incrementals(&state);
        for (step, batch) in batches.into_iter().enumerate() {
            let shown = format!("{batch:?}");
            let previous = state.clone();
            for change in batch {
                change_state(&mut state, change);
            }
            for (index, incremental) in nodes.iter_mut().enumerate() {
                let (_, is_local) = node(index);
                match previous.pod_changes(&state) {
                    Some(changes) => {
                        incremental.pods_changed(&state, &changes, &is_local, &is_local);
                    }
                    None => incremental.recompile(&state, &is_local),
                }
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
    assert_eq!(
        n0.pod_changed(&state, &db.key, None, &is_local, &is_local),
        Recompiled::Entries
    );
    assert_eq!(n0.tables(), &full(&state));
    assert_eq!(
        n0.tables().endpoints[&db.key],
        n0.tables().endpoints[&ObjectRef::new("a", "db")]
    );
    let before = state.pods.remove(&db.key);
    assert_eq!(
        n0.pod_changed(&state, &db.key, before.as_ref(), &is_local, &is_local),
        Recompiled::Entries
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
}
