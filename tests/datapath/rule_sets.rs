//! Rule sets on real lookups: `RULE_SETS` picks the set of (endpoint, class,
//! direction), else the endpoint's any-class set, and `POLICY` the longest
//! (protocol, port) match in it; compiled tables (peers x ports as one shared set,
//! rules without peers as the any-class set, a policy refused for its size) give
//! the kernel the verdicts the reference lookup (`DatapathTables::verdict`) gives.

use std::net::Ipv4Addr;

use policy_agent::{
    dataplane::Hook,
    model::{
        builders::{netpol, rule, selector},
        ClusterState, ObjectRef, Protocol,
    },
    policy::{
        capacity::{RefusalReason, Resource},
        compiler::compile,
        tables::{Direction, PolicyMatch, RuleRef},
    },
};
use policy_common::policy::RULE_SET_ANY_CLASS;

use super::{
    addr,
    frames::{TCP, UDP},
    pods::{
        self, expect, syn, udp, CLIENT_V4, CLIENT_V6, OTHER_V4, OTHER_V6, SERVER_V4, SERVER_V6,
    },
    tables::Tables,
};

#[test]
fn a_class_without_a_set_of_its_own_takes_the_any_class_set_and_one_with_its_own_does_not() {
    let mut net = pods::three_pods();
    let mut tables = Tables::new(&net)
        .isolate("server", true, false)
        .pod_class("client", 3)
        .pod_class("other", 4)
        .allow_port("server", Direction::Ingress, 3, TCP, 80)
        .build();
    tables.allow(
        PolicyMatch {
            endpoint_id: pods::SERVER_ID,
            class_id: RULE_SET_ANY_CLASS,
            direction: Direction::Ingress,
            protocol: Some(UDP),
            port: None,
        },
        RuleRef {
            policy_id: 0,
            rule_index: 9,
        },
    );
    net.apply(&tables);
    for (client, other, server) in [
        (CLIENT_V4, OTHER_V4, SERVER_V4),
        (CLIENT_V6, OTHER_V6, SERVER_V6),
    ] {
        let mut run = |frame: Vec<u8>, passed, counter| {
            expect(
                &mut net,
                Hook::PodIngress,
                "server",
                0,
                &frame,
                passed,
                counter,
            );
        };
        // Class 3 has its own set: TCP 80, and nothing it lacks.
        run(
            syn(client, server, pods::fresh_sport(), 80),
            true,
            "allow_policy",
        );
        run(
            udp(client, server, pods::fresh_sport(), 53),
            false,
            "drop_policy",
        );
        // Class 4 has none: the any-class set (UDP, every port), and only that.
        run(
            udp(other, server, pods::fresh_sport(), 53),
            true,
            "allow_policy",
        );
        run(
            syn(other, server, pods::fresh_sport(), 80),
            false,
            "drop_policy",
        );
        // So does every address no prefix classifies (CLASS_WORLD).
        let world = if server.contains(':') {
            "2001:db8::9"
        } else {
            "192.0.2.9"
        };
        run(
            udp(world, server, pods::fresh_sport(), 9),
            true,
            "allow_policy",
        );
        run(
            syn(world, server, pods::fresh_sport(), 9),
            false,
            "drop_policy",
        );
    }
}

/// The three pods' cluster: `x/wide` admits 257 /32 ipBlocks on 256 TCP ports
/// (one rule), UDP 53 from anywhere and TCP 80 from `role=client` to the server;
/// `x/huge` selects the server too, with 16,385 one-port rules (over the budget).
fn wide_and_huge() -> ClusterState {
    let web = selector().label("app", "web").build();
    let mut wide = rule();
    for i in 0..257u32 {
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + i);
        wide = wide.from_ip_block(&format!("{addr}/32"), []);
    }
    for port in 0..256u16 {
        wide = wide.port(2000 + 2 * port, Protocol::Tcp);
    }
    let mut huge = netpol("x", "huge").select(web.clone());
    for port in 1..=16_385u32 {
        let port = u16::try_from(port).unwrap_or(u16::MAX);
        huge = huge.ingress(
            rule()
                .from_pods(selector().label("role", "other").build())
                .port(port, Protocol::Tcp)
                .build(),
        );
    }
    pods::labelled("other")
        .policy(
            netpol("x", "wide")
                .select(web)
                .ingress(wide.build())
                .ingress(rule().port(53, Protocol::Udp).build())
                .ingress(
                    rule()
                        .from_pods(selector().label("role", "client").build())
                        .port(80, Protocol::Tcp)
                        .build(),
                )
                .build(),
        )
        .policy(huge.build())
        .build()
}

#[test]
fn compiled_rule_sets_give_the_kernel_the_reference_lookup_s_verdicts() {
    let mut net = pods::three_pods();
    let local = |p: &policy_agent::model::Pod| net.pods.iter().any(|n| n.key == p.key);
    let tables = compile(&wide_and_huge(), &[], local);
    let refused: Vec<(String, Resource)> = tables
        .refusals
        .iter()
        .map(|r| (r.policy.to_string(), r.reason.resource()))
        .collect();
    assert_eq!(refused, vec![("x/huge".to_string(), Resource::Rules)]);
    assert!(matches!(
        tables.refusals[0].reason,
        RefusalReason::PolicyBudget { cost: 16_385, .. }
    ));
    // 257 classes point at one set of 256 ports; the client's class also at a set
    // with TCP 80; UDP 53 from anywhere is the any-class set.
    assert!(
        tables.rule_sets.len() <= 260,
        "{} rule sets",
        tables.rule_sets.len()
    );
    assert!(
        tables.policy_entries() <= 260,
        "{} entries",
        tables.policy_entries()
    );
    assert!(
        tables.allow_entries().len() > 65_536,
        "one (endpoint, class, direction, protocol, port) map would overflow"
    );
    net.apply(&tables);

    let server = ObjectRef::new("x", "server");
    let sources = [
        "192.168.0.0",
        "192.168.0.200",
        "192.168.1.0",
        "192.168.1.1",
        CLIENT_V4,
        OTHER_V4,
        "8.8.8.8",
        CLIENT_V6,
        OTHER_V6,
        "2001:db8::1",
    ];
    let ports = [1, 53, 80, 1999, 2000, 2001, 2200, 2510, 2512, 16_385];
    let (mut passes, mut drops) = (0, 0);
    for source in sources {
        let dst = if source.contains(':') {
            SERVER_V6
        } else {
            SERVER_V4
        };
        for (protocol, frame_of) in [
            (TCP, syn as fn(&str, &str, u16, u16) -> Vec<u8>),
            (UDP, udp as fn(&str, &str, u16, u16) -> Vec<u8>),
        ] {
            for port in ports {
                let want = tables
                    .verdict(&server, Direction::Ingress, addr(source), protocol, port)
                    .passes();
                let got = net.run(
                    Hook::PodIngress,
                    "server",
                    0,
                    &frame_of(source, dst, pods::fresh_sport(), port),
                );
                assert_eq!(
                    got.passed, want,
                    "{source} -> server protocol {protocol} port {port}"
                );
                if want {
                    passes += 1;
                } else {
                    drops += 1;
                }
            }
        }
    }
    // The reference itself says what the policies mean.
    let lookup = |source: &str, protocol, port| {
        tables
            .verdict(&server, Direction::Ingress, addr(source), protocol, port)
            .passes()
    };
    assert!(
        lookup("192.168.1.0", TCP, 2510),
        "the 257th block, a listed port"
    );
    assert!(!lookup("192.168.1.1", TCP, 2510), "outside the blocks");
    assert!(!lookup("192.168.0.7", TCP, 2001), "an unlisted port");
    assert!(
        lookup("8.8.8.8", UDP, 53) && lookup(CLIENT_V6, UDP, 53),
        "UDP 53 from anywhere"
    );
    assert!(lookup(CLIENT_V4, TCP, 80) && !lookup(OTHER_V4, TCP, 80));
    assert!(
        !lookup(OTHER_V4, TCP, 1) && !lookup(OTHER_V4, TCP, 16_385),
        "x/huge is refused"
    );
    assert!(
        passes > 20 && drops > 20,
        "{passes} passed, {drops} dropped"
    );
}
