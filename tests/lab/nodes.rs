//! A lab of several nodes (`--nodes N`, with or without `--overlay vxlan`): each
//! node its own datapath, pod range and Service rules, joined by a fabric.
//! Cross-node connections meet the source node's egress and the destination
//! node's ingress, with peers known by their labels; a connection to a Service
//! whose backend runs on another node is decided against the client's egress on
//! the client's node, before it leaves (the exit classifiers on the uplink or
//! the VXLAN device), and never by the backend's node alone.

use policy_agent::{
    lab::{
        drops,
        probe::{Family, ProbeRoute, ProbeSpec},
        topology::{Layout, Overlay, TopologyKind},
        Lab, LabOptions,
    },
    model::{
        builders::{cluster, netpol, pod, rule, selector},
        ClusterState, ObjectRef, PolicyMode, Protocol,
    },
};

use super::{clients_of_a_service_backend, result_of, support, TIMEOUT};

/// Both ways nodes carry pod traffic.
const OVERLAYS: [Overlay; 2] = [Overlay::None, Overlay::Vxlan];

/// A lab of `nodes` nodes joined as `overlay` says.
fn lab_on_nodes(state: ClusterState, nodes: usize, overlay: Overlay) -> Lab {
    let options = LabOptions::of_layout(Layout {
        kind: TopologyKind::Routed,
        nodes,
        overlay,
    });
    Lab::up_with(state, &[], &options).unwrap_or_else(|e| panic!("lab ({overlay:?}): {e}"))
}

/// `state` with `pod`'s `spec.nodeName` set to `node`.
fn place(mut state: ClusterState, pod: &str, node: &str) -> ClusterState {
    let (namespace, name) = pod.split_once('/').unwrap_or(("", pod));
    let key = ObjectRef::new(namespace, name);
    match state.pods.get_mut(&key) {
        Some(p) => p.node_name = Some(node.to_string()),
        None => panic!("no pod {pod}"),
    }
    state
}

/// The name of the node `pod` runs on.
fn node_of(lab: &Lab, pod: &str) -> String {
    let (namespace, name) = pod.split_once('/').unwrap_or(("", pod));
    lab.node_of(&ObjectRef::new(namespace, name))
        .map(|node| node.name.clone())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// How much counter `name` of node `node` (0-based) grew while `f` ran.
fn growth<T>(lab: &mut Lab, node: usize, name: &str, f: impl FnOnce(&Lab) -> T) -> (T, u64) {
    let before = lab
        .node_stats(node)
        .unwrap_or_else(|e| panic!("stats: {e}"));
    let out = f(lab);
    let after = lab
        .node_stats(node)
        .unwrap_or_else(|e| panic!("stats: {e}"));
    (out, after.get(name).saturating_sub(before.get(name)))
}

#[test]
fn pods_on_other_nodes_are_peers_by_their_labels_and_meet_the_destinations_ingress() {
    support::require_root_and_bpf();
    // `shop/db` (node-2) admits `role=api` only; `shop/api` runs on node-1 and
    // `shop/web` on node-3: every connection to the db crosses nodes.
    let state = cluster()
        .pod(pod("shop", "api").labels([("role", "api")]).build())
        .pod(pod("shop", "web").labels([("role", "web")]).build())
        .pod(
            pod("shop", "db")
                .labels([("role", "db")])
                .port(5432, Protocol::Tcp)
                .port(53, Protocol::Udp)
                .build(),
        )
        .policy(
            netpol("shop", "db-from-api")
                .select(selector().label("role", "db").build())
                .ingress(
                    rule()
                        .from_pods(selector().label("role", "api").build())
                        .build(),
                )
                .build(),
        )
        .build();
    let state = place(state, "shop/api", "node-1");
    let state = place(state, "shop/db", "node-2");
    let state = place(state, "shop/web", "node-3");
    for overlay in OVERLAYS {
        let mut lab = lab_on_nodes(state.clone(), 3, overlay);
        assert_eq!(
            [
                node_of(&lab, "shop/api"),
                node_of(&lab, "shop/db"),
                node_of(&lab, "shop/web")
            ],
            ["node-1", "node-2", "node-3"],
            "spec.nodeName places the pods"
        );
        for family in [Family::Ipv4, Family::Ipv6] {
            let specs: Vec<ProbeSpec> = lab
                .probe_specs(&[])
                .into_iter()
                .filter(|s| s.to == ObjectRef::new("shop", "db"))
                .collect();
            let (results, dropped) = growth(&mut lab, 1, "drop_policy", |lab| {
                lab.probe_via(&specs, ProbeRoute::Pod(family), TIMEOUT)
                    .unwrap_or_else(|e| panic!("probe: {e}"))
            });
            for port in [5432, 53] {
                assert!(
                    result_of(&results, "shop/api", "shop/db", port),
                    "{overlay:?} {family:?}: api (node-1) is admitted by its labels on node-2, port {port}"
                );
                assert!(
                    !result_of(&results, "shop/web", "shop/db", port),
                    "{overlay:?} {family:?}: web (node-3) is not admitted, port {port}"
                );
            }
            assert!(
                dropped > 0,
                "{overlay:?} {family:?}: the destination's node (node-2) drops web's connections"
            );
        }
    }
}

#[test]
fn service_egress_to_a_backend_on_another_node_is_decided_on_the_clients_node() {
    support::require_root_and_bpf();
    // Clients on node-1, the backend on node-2. `x/allowed` may reach the backend
    // (by its labels), `x/denied` nothing (default-deny egress in effect), and
    // `x/by-ip` only the Service's ClusterIP in an ipBlock, which admits nothing:
    // egress is judged on the backend, after DNAT.
    let cluster_ip = "10.96.0.50";
    let mut state = clients_of_a_service_backend(false);
    state.pods.insert(
        ObjectRef::new("x", "by-ip"),
        pod("x", "by-ip").labels([("role", "by-ip")]).build(),
    );
    let by_ip = netpol("x", "by-ip-to-cluster-ip")
        .select(selector().label("role", "by-ip").build())
        .egress(rule().to_ip_block(&format!("{cluster_ip}/32"), []).build())
        .build();
    state.policies.insert(by_ip.key.clone(), by_ip);
    if let Some(service) = state.services.get_mut(&ObjectRef::new("x", "backend")) {
        service.cluster_ip = cluster_ip.parse().ok();
    }
    let mut state = place(state, "x/backend", "node-2");
    for client in ["x/allowed", "x/denied", "x/by-ip"] {
        state = place(state, client, "node-1");
    }
    for overlay in OVERLAYS {
        let mut lab = lab_on_nodes(state.clone(), 2, overlay);
        let specs: Vec<ProbeSpec> = lab
            .probe_specs(&[])
            .into_iter()
            .filter(|s| s.to == ObjectRef::new("x", "backend"))
            .collect();
        let target = lab.service_target(&specs[0]);
        assert!(target.is_some(), "{overlay:?}: the backend has a Service");
        let before = lab.node_stats(0).unwrap_or_else(|e| panic!("stats: {e}"));
        let results = lab
            .probe_via(&specs, ProbeRoute::Service, TIMEOUT)
            .unwrap_or_else(|e| panic!("probe: {e}"));
        let after = lab.node_stats(0).unwrap_or_else(|e| panic!("stats: {e}"));
        let grew = |name: &str| after.get(name).saturating_sub(before.get(name));
        for port in [80, 53] {
            assert!(
                result_of(&results, "x/allowed", "x/backend", port),
                "{overlay:?}: an egress rule to the backend's labels admits the Service (port {port})"
            );
            assert!(
                !result_of(&results, "x/denied", "x/backend", port),
                "{overlay:?}: default-deny egress blocks a Service whose backend is on another node (port {port})"
            );
        }
        assert!(
            !result_of(&results, "x/by-ip", "x/backend", 80),
            "{overlay:?}: an ipBlock naming only the ClusterIP admits nothing"
        );
        assert!(
            grew("drop_deferred_egress") > 0,
            "{overlay:?}: the client's node drops the deferred connections at its exit: {:?}",
            after.growth_since(&before)
        );
        assert!(
            grew("allow_service_egress") > 0,
            "{overlay:?}: the client's node lets the allowed one out at its exit: {:?}",
            after.growth_since(&before)
        );
    }
}

#[test]
fn audit_mode_and_drop_reports_hold_per_node_and_name_the_node() {
    support::require_root_and_bpf();
    // `shop/db` on node-2 admits nobody; in audit mode nothing is dropped and
    // node-2 reports each would-drop, naming the policy.
    let state = cluster()
        .pod(pod("shop", "client").build())
        .pod(pod("shop", "db").port(5432, Protocol::Tcp).build())
        .policy(
            netpol("shop", "db-deny-ingress")
                .select(selector().build())
                .types(true, false)
                .mode(PolicyMode::Audit)
                .build(),
        )
        .build();
    let state = place(state, "shop/client", "node-1");
    let state = place(state, "shop/db", "node-2");
    let mut lab = lab_on_nodes(state, 2, Overlay::None);
    let specs: Vec<ProbeSpec> = lab
        .probe_specs(&[])
        .into_iter()
        .filter(|s| s.to == ObjectRef::new("shop", "db"))
        .collect();
    let reported = drops::probe_reporting(&mut lab, &specs, ProbeRoute::default(), TIMEOUT)
        .unwrap_or_else(|e| panic!("probe: {e}"));
    assert!(
        reported.results.iter().all(|r| r.allowed && r.would_drop),
        "audit drops nothing and marks the would-drop: {:?}",
        reported.results
    );
    let seen = drops::summarize(&reported.lines);
    assert!(
        seen.iter().any(|d| d.node.as_deref() == Some("node-2")
            && d.to == "shop/db"
            && d.policies == ["shop/db-deny-ingress"]),
        "node-2 reports the would-drop naming the policy: {seen:?}"
    );
    assert!(
        seen.iter().all(|d| d.node.as_deref() == Some("node-2")),
        "only the destination's node decides its ingress: {seen:?}"
    );
}

#[test]
fn on_a_bridge_a_pod_whose_address_lies_in_another_nodes_range_is_reached_from_that_nodes_pods() {
    support::require_root_and_bpf();
    // `x/far` runs on node-2 with manifest addresses inside node-1's pod range;
    // node-1's bridged pods take that range for their link, so node-1 must answer
    // their ARP and neighbour queries for it. No policy: every probe is allowed.
    let state = cluster()
        .pod(
            pod("x", "near")
                .port(80, Protocol::Tcp)
                .node("node-1")
                .build(),
        )
        .pod(
            pod("x", "far")
                .ip("10.244.0.77")
                .ip("fd00:10:244::77")
                .port(80, Protocol::Tcp)
                .node("node-2")
                .build(),
        )
        .build();
    for overlay in OVERLAYS {
        let options = LabOptions::of_layout(Layout {
            kind: TopologyKind::Bridge,
            nodes: 2,
            overlay,
        });
        let lab = Lab::up_with(state.clone(), &[], &options)
            .unwrap_or_else(|e| panic!("lab ({overlay:?}): {e}"));
        assert_eq!(node_of(&lab, "x/far"), "node-2");
        let specs = lab.probe_specs(&[]);
        for family in [Family::Ipv4, Family::Ipv6] {
            let results = lab
                .probe_via(&specs, ProbeRoute::Pod(family), TIMEOUT)
                .unwrap_or_else(|e| panic!("probe: {e}"));
            for (from, to) in [("x/near", "x/far"), ("x/far", "x/near")] {
                assert!(
                    result_of(&results, from, to, 80),
                    "{overlay:?} {family:?}: {from} -> {to} across nodes on a bridge"
                );
            }
        }
    }
}
