//! Per-policy traffic counters (`RULE_COUNTERS`, `DROP_COUNTERS`) as
//! `Datapath::policy_counters` names them: every packet of a flow a rule allowed
//! counts in that rule, replies included; drops count per endpoint and direction
//! and are named with the policies isolating it; a Service egress decided at the
//! backend counts as the client pod's egress; a rule keeps its counts across
//! updates, a new rule and a deny slot whose meaning an `apply` changes start from
//! zero; policy ids that shift change no kernel entry. Frames go through `BPF_PROG_TEST_RUN`, except
//! one test that reads the counters while real datagrams flow.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use policy_agent::{
    dataplane::{DropTraffic, EventVerdict, Hook, PolicyCounters, RuleTraffic, Traffic},
    model::ObjectRef,
    policy::tables::{DatapathTables, Direction, PolicyMatch, RuleRef, RuleVerdict},
};
use policy_common::verdict::{MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED};
use socket2::{Domain, SockAddr, Socket, Type};

use super::{
    addr,
    frames::{TCP, UDP},
    net::Net,
    pods::{
        ack, client_egress_through_services, decision, server_admits_port_80, syn, three_pods,
        traffic, udp, CLIENT_ID, CLIENT_V4, CLUSTER_IPS, FAMILIES, OTHER_V4, OTHER_V6, SERVER_ID,
        SERVER_V4,
    },
    tables::Tables,
};

/// The policy `Tables::new` names (id 0) and a second one (id 1).
fn first_policy() -> ObjectRef {
    ObjectRef::new("x", "hand-written")
}

fn second_policy() -> ObjectRef {
    ObjectRef::new("x", "second")
}

/// The server isolated for ingress by policy 0, whose rule 0 admits the client
/// (class 3) on TCP 80 and rule 1 on UDP 53.
fn server_rules(net: &Net) -> DatapathTables {
    server_admits_port_80(net)
        .allow_port("server", Direction::Ingress, 3, UDP, 53)
        .build()
}

/// `tables` with policy `x/a-first` named first, so every policy id moves up by
/// one (in the names, the isolation and the allow entries, which are returned
/// for the caller to add to and set).
fn with_a_first_policy(
    tables: &DatapathTables,
) -> (DatapathTables, BTreeMap<PolicyMatch, RuleRef>) {
    let mut moved = tables.clone();
    moved.policy_names.insert(0, ObjectRef::new("x", "a-first"));
    for isolation in moved.isolation.values_mut() {
        for id in isolation.ingress.iter_mut().chain(&mut isolation.egress) {
            *id += 1;
        }
    }
    let mut entries = moved.allow_entries();
    for rule in entries.values_mut() {
        rule.policy_id += 1;
    }
    (moved, entries)
}

/// What policy 0's ingress rule `rule_index` let through.
fn ingress_rule(counters: &PolicyCounters, rule_index: u32) -> Traffic {
    rule(counters, Direction::Ingress, rule_index)
}

fn rule(counters: &PolicyCounters, direction: Direction, rule_index: u32) -> Traffic {
    counters
        .rules
        .iter()
        .find(|r| r.direction == direction && r.rule_index == rule_index)
        .unwrap_or_else(|| panic!("no {direction:?} rule {rule_index}: {counters:#?}"))
        .traffic
}

#[test]
fn every_packet_of_an_allowed_flow_counts_in_its_rule_replies_included_and_rules_apart() {
    let mut net = three_pods();
    let tables = server_rules(&net);
    net.apply(&tables);
    let (mut web, mut dns) = (Vec::new(), Vec::new());
    for (client, server) in FAMILIES {
        let opening = syn(client, server, 45000, 80);
        let later = ack(client, server, 45000, 80);
        let answer = ack(server, client, 80, 45000);
        // Each packet crosses the client's (unisolated: no rule counts) and the
        // server's hook; only the server's rule counts it.
        for (frame, from_client) in [
            (&opening, true),
            (&later, true),
            (&answer, false),
            (&later, true),
        ] {
            let (first, second) = if from_client {
                ((Hook::PodEgress, "client"), (Hook::PodIngress, "server"))
            } else {
                ((Hook::PodEgress, "server"), (Hook::PodIngress, "client"))
            };
            for (hook, pod) in [first, second] {
                assert!(net.run(hook, pod, 0, frame).passed, "{hook:?} {pod}");
            }
            web.push(frame.clone());
        }
        let query = udp(client, server, 45001, 53);
        let response = udp(server, client, 53, 45001);
        assert!(net.run(Hook::PodIngress, "server", 0, &query).passed);
        assert!(net.run(Hook::PodIngress, "server", 0, &query).passed);
        assert!(net.run(Hook::PodEgress, "server", 0, &response).passed);
        dns.extend([query.clone(), query, response]);
    }
    let got = net.policy_counters(&tables);
    assert_eq!(
        got.rules,
        vec![
            RuleTraffic {
                policy: first_policy(),
                direction: Direction::Ingress,
                rule_index: 0,
                rule: "spec.ingress[0]".into(),
                verdict: RuleVerdict::Allowed,
                traffic: traffic(&web),
            },
            RuleTraffic {
                policy: first_policy(),
                direction: Direction::Ingress,
                rule_index: 1,
                rule: "spec.ingress[1]".into(),
                verdict: RuleVerdict::Allowed,
                traffic: traffic(&dns),
            },
        ]
    );
    assert_eq!(
        got.denied,
        vec![DropTraffic {
            policies: vec![first_policy()],
            direction: Direction::Ingress,
            denied: Traffic::default(),
            would_drop: Traffic::default(),
        }],
        "nothing denied"
    );
}

#[test]
fn drops_count_per_endpoint_and_direction_named_with_the_policies_isolating_it() {
    let mut net = three_pods();
    // The server and the other pod are isolated for ingress by both policies (their
    // drops add up under one name); the client for egress by the second only.
    let mut tables = Tables::new(&net)
        .isolate("server", true, false)
        .isolate("other", true, false)
        .isolate("client", false, true)
        .isolated_by("server", &[0, 1], &[])
        .isolated_by("other", &[0, 1], &[])
        .isolated_by("client", &[], &[1])
        .pod_class("client", 3)
        .allow_port("server", Direction::Ingress, 3, TCP, 80)
        .build();
    tables.policy_names.push(second_policy());
    net.apply(&tables);
    let (mut into_pods, mut out_of_client) = (Vec::new(), Vec::new());
    for (client, server) in FAMILIES {
        let other = if client == CLIENT_V4 {
            OTHER_V4
        } else {
            OTHER_V6
        };
        for (pod, to) in [("server", server), ("other", other), ("server", server)] {
            let denied = syn(client, to, 46000, 81);
            assert!(!net.run(Hook::PodIngress, pod, 0, &denied).passed, "{pod}");
            into_pods.push(denied);
        }
        let denied = syn(client, server, 46001, 80);
        assert!(!net.run(Hook::PodEgress, "client", 0, &denied).passed);
        out_of_client.push(denied);
        // A drop that is no policy's (a spoofed source) counts nowhere here.
        let spoofed = syn(other, server, 46002, 80);
        assert!(!net.run(Hook::PodEgress, "client", 0, &spoofed).passed);
    }
    assert_eq!(
        net.policy_counters(&tables).denied,
        vec![
            DropTraffic {
                policies: vec![first_policy(), second_policy()],
                direction: Direction::Ingress,
                denied: traffic(&into_pods),
                would_drop: Traffic::default(),
            },
            DropTraffic {
                policies: vec![second_policy()],
                direction: Direction::Egress,
                denied: traffic(&out_of_client),
                would_drop: Traffic::default(),
            },
        ]
    );
}

#[test]
fn counters_read_while_datagrams_flow_only_grow_and_end_at_every_datagram() {
    let mut net = three_pods();
    let tables = server_rules(&net);
    net.apply(&tables);
    const DATAGRAMS: u64 = 3000;
    const PAYLOAD: &[u8] = b"podwall-counted";
    let server = addr(SERVER_V4);
    let (client_ns, server_ns) = (
        net.pod("client").netns.clone(),
        net.pod("server").netns.clone(),
    );
    let open = |ns: &str, bind: SocketAddr| {
        Net::in_ns(ns, || {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)
                .unwrap_or_else(|e| panic!("udp socket: {e}"));
            socket
                .bind(&SockAddr::from(bind))
                .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
            socket
        })
    };
    let _receiver = open(&server_ns, SocketAddr::new(server, 53));
    let sender = open(&client_ns, SocketAddr::new(addr(CLIENT_V4), 47000));
    let to = SockAddr::from(SocketAddr::new(server, 53));
    let mut readings = Vec::new();
    std::thread::scope(|scope| {
        let sending = scope.spawn(|| {
            for i in 0..DATAGRAMS {
                sender
                    .send_to(PAYLOAD, &to)
                    .unwrap_or_else(|e| panic!("send: {e}"));
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        while !sending.is_finished() {
            readings.push(ingress_rule(&net.policy_counters(&tables), 1));
        }
    });
    // The last datagrams may still be on their way through the node.
    let per_datagram = (14 + 20 + 8 + PAYLOAD.len()) as u64;
    let want = Traffic {
        packets: DATAGRAMS,
        bytes: DATAGRAMS * per_datagram,
    };
    for _ in 0..50 {
        if *readings.last().unwrap_or(&Traffic::default()) == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        readings.push(ingress_rule(&net.policy_counters(&tables), 1));
    }
    assert!(readings.len() > 2, "read while sending: {readings:?}");
    assert!(
        readings
            .windows(2)
            .all(|w| w[0].packets <= w[1].packets && w[0].bytes <= w[1].bytes),
        "counters only grow: {readings:?}"
    );
    // A CPU may be between bumping packets and bytes as it is read: a reading is
    // whole datagrams give or take one per CPU.
    let cpus = std::thread::available_parallelism().map_or(64, |n| n.get() as u64);
    assert!(
        readings
            .iter()
            .all(|r| r.bytes.abs_diff(r.packets * per_datagram) <= cpus * per_datagram),
        "every reading is about whole datagrams: {readings:?}"
    );
    assert_eq!(
        readings.last().copied(),
        Some(want),
        "{} readings",
        readings.len()
    );
}

#[test]
fn a_rule_keeps_its_counts_across_updates_and_a_new_rule_starts_from_zero() {
    let mut net = three_pods();
    let first = server_rules(&net);
    net.apply(&first);
    let (client, server) = (CLIENT_V4, SERVER_V4);
    let web = syn(client, server, 48000, 80);
    let dns = udp(client, server, 48001, 53);
    let denied = syn(client, server, 48002, 81);
    for frame in [&web, &dns, &denied] {
        net.run(Hook::PodIngress, "server", 0, frame);
    }

    // A policy whose name sorts first comes with a rule: every policy id of the
    // tables moves, but rules are counted by policy name, so the old rules keep
    // their counts and the new one starts from zero.
    let (mut second, mut entries) = with_a_first_policy(&first);
    if let Some(isolation) = second.isolation.get_mut(&SERVER_ID) {
        isolation.ingress = vec![0, 1];
    }
    let rule_8080 = Tables::new(&net)
        .pod_class("client", 3)
        .allow_port("server", Direction::Ingress, 3, TCP, 8080)
        .build();
    for m in rule_8080.allow_entries().into_keys() {
        entries.insert(
            m,
            RuleRef {
                policy_id: 0,
                rule_index: 0,
            },
        );
    }
    second.set_allow_entries(entries);
    net.apply(&second);
    let got = net.policy_counters(&second);
    let named = |got: &PolicyCounters, policy: &ObjectRef, rule_index: u32| {
        got.rules
            .iter()
            .find(|r| &r.policy == policy && r.rule_index == rule_index)
            .unwrap_or_else(|| panic!("no rule {policy} {rule_index}: {got:#?}"))
            .traffic
    };
    let a_first = ObjectRef::new("x", "a-first");
    assert_eq!(
        named(&got, &first_policy(), 0),
        traffic(&[&web]),
        "{got:#?}"
    );
    assert_eq!(
        named(&got, &first_policy(), 1),
        traffic(&[&dns]),
        "{got:#?}"
    );
    assert_eq!(named(&got, &a_first, 0), Traffic::default(), "{got:#?}");
    let alt = syn(client, server, 48004, 8080);
    assert!(net.run(Hook::PodIngress, "server", 0, &alt).passed);
    assert_eq!(
        named(&net.policy_counters(&second), &a_first, 0),
        traffic(&[&alt])
    );

    // The web rule goes: the dns rule keeps its slot and its counts.
    let mut third = second.clone();
    let mut entries = third.allow_entries();
    entries.retain(|_, rule| !(rule.policy_id == 1 && rule.rule_index == 0));
    third.set_allow_entries(entries);
    net.apply(&third);
    let got = net.policy_counters(&third);
    assert_eq!(
        named(&got, &first_policy(), 1),
        traffic(&[&dns]),
        "{got:#?}"
    );
    let new_dns = udp(client, server, 48003, 53);
    assert!(net.run(Hook::PodIngress, "server", 0, &new_dns).passed);
    assert_eq!(
        named(&net.policy_counters(&third), &first_policy(), 1),
        traffic(&[&dns, &new_dns])
    );

    // Back to the server isolated by one policy: its deny slot starts from zero
    // (its isolating policies changed), then counts again.
    let mut fourth = third.clone();
    fourth.policy_names.remove(0);
    let mut entries = fourth.allow_entries();
    entries.retain(|_, rule| rule.policy_id == 1);
    for rule in entries.values_mut() {
        rule.policy_id = 0;
    }
    fourth.set_allow_entries(entries);
    if let Some(isolation) = fourth.isolation.get_mut(&SERVER_ID) {
        isolation.ingress = vec![0];
    }
    net.apply(&fourth);
    let got = net.policy_counters(&fourth);
    assert_eq!(got.denied.len(), 1, "{got:#?}");
    assert_eq!(got.denied[0].policies, vec![first_policy()]);
    assert_eq!(got.denied[0].denied, Traffic::default());
    assert_eq!(named(&got, &first_policy(), 1), traffic(&[&dns, &new_dns]));
}

#[test]
fn a_policy_that_renumbers_the_others_changes_no_kernel_entry() {
    let mut net = three_pods();
    let first = server_rules(&net);
    net.apply(&first);
    let slots = net.datapath.rule_slots();
    assert_eq!(slots.len(), 2, "{slots:?}");

    // A policy whose name sorts first, with no rules of its own: every policy id
    // of the tables moves by one, and nothing the kernel holds names a policy id.
    let (mut second, entries) = with_a_first_policy(&first);
    second.set_allow_entries(entries);
    let report = net.apply(&second);
    assert_eq!(
        (report.written, report.removed),
        (0, 0),
        "renumbered policy ids are written nowhere"
    );
    assert_eq!(net.datapath.rule_slots(), slots, "each rule keeps its slot");
    let web = syn(CLIENT_V4, SERVER_V4, 48100, 80);
    assert!(net.run(Hook::PodIngress, "server", 0, &web).passed);
    assert_eq!(
        rule(&net.policy_counters(&second), Direction::Ingress, 0),
        traffic(&[&web])
    );
}

#[test]
fn a_service_egress_decided_at_the_backend_counts_as_the_client_pods_egress() {
    let mut net = three_pods();
    // The client may reach the server (the backend, class 5) on TCP 8080 only; a
    // ClusterIP per family defers its egress to the server's side.
    let tables = client_egress_through_services(&net);
    net.apply(&tables);
    let mut reader = net.event_reader();
    let (client_if, mut allowed, mut denied) = (net.ifindex("client"), Vec::new(), Vec::new());
    for ((client, backend), vip) in FAMILIES.into_iter().zip(CLUSTER_IPS) {
        // The client's side defers (no rule counts there)...
        let to_vip = syn(client, vip, 49000, 80);
        let out = net.run(Hook::PodEgress, "client", 0, &to_vip);
        assert!(out.passed && out.mark & MARK_DEFERRED_EGRESS != 0);
        // ...and the backend's side decides it after DNAT: allowed by the client's
        // rule, every forward packet counted there, and every reply the backend's
        // side verifies.
        let dnat = syn(client, backend, 49000, 8080);
        let later = ack(client, backend, 49000, 8080);
        for frame in [&dnat, &later] {
            let out = net.run(Hook::PodIngress, "server", MARK_DEFERRED_EGRESS, frame);
            assert!(out.passed);
            allowed.push(frame.clone());
        }
        let answer = ack(backend, client, 8080, 49000);
        assert!(net.run(Hook::PodEgress, "server", 0, &answer).mark & MARK_REPLY_VERIFIED != 0);
        allowed.push(answer);
        // A denied backend port: dropped, counted in the client's egress deny slot.
        let other_port = syn(client, backend, 49001, 9090);
        assert!(
            !net.run(
                Hook::PodIngress,
                "server",
                MARK_DEFERRED_EGRESS,
                &other_port
            )
            .passed
        );
        denied.push(other_port);
    }
    let got = net.policy_counters(&tables);
    assert_eq!(rule(&got, Direction::Egress, 0), traffic(&allowed));
    assert_eq!(
        got.denied,
        vec![DropTraffic {
            policies: vec![first_policy()],
            direction: Direction::Egress,
            denied: traffic(&denied),
            would_drop: Traffic::default(),
        }]
    );
    // The drop is reported as the client's egress, where its policy is.
    let events = reader.drain();
    assert_eq!(events.len(), 2, "{events:#?}");
    for (event, frame) in events.iter().zip(&denied) {
        assert_eq!(
            decision(event),
            (
                client_if,
                CLIENT_ID,
                Direction::Egress,
                EventVerdict::Dropped,
                "drop_deferred_egress"
            )
        );
        assert_eq!(event.destination.1, 9090);
        assert_eq!(event.packet_len as usize, frame.len());
    }
}

#[test]
fn a_direct_reply_counts_once_in_the_clients_rule() {
    let mut net = three_pods();
    // The client's egress rule admits the server on TCP 8080, directly (no
    // Service): the client decided the flow itself, so the server's side does not
    // verify the replies (a Service flow's, verified and counted there, are in
    // `a_service_egress_decided_at_the_backend_counts_as_the_client_pods_egress`).
    let tables = client_egress_through_services(&net);
    net.apply(&tables);
    let mut counted = Vec::new();
    for (i, (client, server)) in FAMILIES.into_iter().enumerate() {
        let sport = 49500 + i as u16;
        let open = syn(client, server, sport, 8080);
        assert!(net.run(Hook::PodEgress, "client", 0, &open).passed);
        assert!(net.run(Hook::PodIngress, "server", 0, &open).passed);
        let answer = ack(server, client, 8080, sport);
        let stamped = net.run(Hook::PodEgress, "server", 0, &answer);
        assert!(stamped.passed && stamped.mark & MARK_REPLY_VERIFIED == 0);
        // The reply reaches the client with the stamp alone: it passes as the
        // client's tracked reply and is counted there, once.
        let out = net.run(Hook::PodIngress, "client", stamped.mark, &answer);
        assert!(out.passed);
        counted.extend([open, answer]);
    }
    let got = net.policy_counters(&tables);
    assert_eq!(rule(&got, Direction::Egress, 0), traffic(&counted));
}
