//! Ports: named ports on the receiving pod, endPort ranges as port blocks, SCTP.

use super::*;
use crate::{model::Protocol::Sctp, policy::tables::PortBlock};

/// Whether the blocks are exactly `first..=last`, each aligned and as large as it
/// can be (its parent block is not inside the range), at most 30 of them.
fn check_split(first: u16, last: u16) {
    let blocks = PortBlock::split_range(first, last);
    assert!(
        blocks.len() <= 30,
        "{first}..={last}: {} blocks",
        blocks.len()
    );
    for block in &blocks {
        let size = 1u32 << (16 - u32::from(block.bits));
        assert_eq!(u32::from(block.first) % size, 0, "{block:?} is not aligned");
        if block.bits > 0 {
            let parent_size = size * 2;
            let parent_first = u32::from(block.first) / parent_size * parent_size;
            let parent_inside = parent_first >= u32::from(first)
                && parent_first + parent_size - 1 <= u32::from(last);
            assert!(
                !parent_inside,
                "{first}..={last}: {block:?} could be merged"
            );
        }
    }
    for port in 0..=u16::MAX {
        let holding = blocks.iter().filter(|b| b.contains(port)).count();
        let expected = usize::from((first..=last).contains(&port));
        assert_eq!(
            holding, expected,
            "{first}..={last}: port {port} in {holding} blocks"
        );
    }
}

#[test]
fn split_range_covers_exactly_the_range_with_the_fewest_blocks() {
    let edges: Vec<u16> = (0..=17)
        .chain([
            31, 32, 33, 63, 64, 255, 256, 1023, 1024, 32767, 32768, 32769,
        ])
        .chain(65518..=65535)
        .collect();
    let mut pairs: Vec<(u16, u16)> = Vec::new();
    for (i, &first) in edges.iter().enumerate().step_by(3) {
        for &last in edges.iter().skip(i).step_by(4) {
            pairs.push((first, last));
        }
    }
    pairs.extend([
        (0, 65535),
        (1, 65534),
        (0, 0),
        (65535, 65535),
        (80, 80),
        (1000, 2000),
    ]);
    for (first, last) in pairs {
        check_split(first, last);
    }
}

#[test]
fn split_range_of_an_empty_range_is_empty_and_edges_are_exact() {
    assert_eq!(PortBlock::split_range(90, 80), vec![]);
    assert_eq!(PortBlock::split_range(65535, 0), vec![]);
    assert_eq!(
        PortBlock::split_range(0, 65535),
        vec![PortBlock { first: 0, bits: 0 }]
    );
    assert_eq!(
        PortBlock::split_range(65535, 65535),
        vec![PortBlock::single(65535)]
    );
    assert_eq!(PortBlock::split_range(1, 65535).len(), 16);
    assert_eq!(PortBlock::split_range(1, 65534).len(), 30, "the worst case");
}

/// web (app=web) on n1 with ingress `rule` only.
fn web_ingress(rule: crate::model::Rule) -> DatapathTables {
    on_n1(
        &base()
            .policy(
                netpol("prod", "web")
                    .select(sel("app", "web"))
                    .ingress(rule)
                    .build(),
            )
            .build(),
    )
}

#[test]
fn end_port_ranges_admit_exactly_their_ports_up_to_both_edges() {
    let cases: [(u16, u16, &[u16], &[u16]); 5] = [
        (
            8000,
            8100,
            &[8000, 8001, 8063, 8064, 8100],
            &[7999, 8101, 0, 65535],
        ),
        (0, 65535, &[0, 1, 80, 65534, 65535], &[]),
        (0, 0, &[0], &[1, 65535]),
        (65535, 65535, &[65535], &[65534, 0]),
        (1, 65534, &[1, 2, 32767, 32768, 65534], &[0, 65535]),
    ];
    for (first, last, inside, outside) in cases {
        let tables = web_ingress(rule().port_range(first, last, Tcp).build());
        for &port in inside {
            assert!(
                allows(&tables, "prod/web-1", Direction::Ingress, "8.8.8.8", port),
                "{first}-{last}: {port}"
            );
        }
        for &port in outside {
            assert!(
                !allows(&tables, "prod/web-1", Direction::Ingress, "8.8.8.8", port),
                "{first}-{last}: {port}"
            );
        }
        let udp = tables.lookup(
            &key("prod/web-1"),
            Direction::Ingress,
            ip("8.8.8.8"),
            17,
            first,
        );
        assert_eq!(udp, None, "{first}-{last}: TCP only");
    }
}

#[test]
fn the_full_range_is_the_one_every_port_key_of_its_protocol() {
    let tables = web_ingress(rule().port_range(0, 65535, Sctp).build());
    let ports: Vec<(Option<u8>, Option<PortBlock>)> = tables
        .allow_entries()
        .keys()
        .map(|k| (k.protocol, k.port))
        .collect();
    assert_eq!(
        ports,
        vec![(Some(132), None)],
        "never also a 0-bit port block"
    );
}

#[test]
fn sctp_ports_and_ranges_are_enforced_like_tcp_and_udp() {
    let tables = web_ingress(
        rule()
            .port(9, Sctp)
            .port_range(100, 103, Sctp)
            .protocol(Udp)
            .build(),
    );
    let sctp = |port| {
        tables
            .lookup(
                &key("prod/web-1"),
                Direction::Ingress,
                ip("8.8.8.8"),
                132,
                port,
            )
            .is_some()
    };
    assert!(sctp(9) && sctp(100) && sctp(103));
    assert!(!sctp(8) && !sctp(99) && !sctp(104));
    assert!(
        !allows(&tables, "prod/web-1", Direction::Ingress, "8.8.8.8", 9),
        "not TCP"
    );
    assert!(tables
        .lookup(&key("prod/web-1"), Direction::Ingress, ip("8.8.8.8"), 17, 7)
        .is_some());
}

#[test]
fn ingress_named_ports_resolve_on_each_selected_pod() {
    // Two web pods map "http" to different numbers: different endpoint ids.
    let state = cluster()
        .pod(
            pod("prod", "web-a")
                .labels([("app", "web")])
                .ip("10.0.0.1")
                .named_port("http", 8080, Tcp)
                .node("n1")
                .build(),
        )
        .pod(
            pod("prod", "web-b")
                .labels([("app", "web")])
                .ip("10.0.0.2")
                .named_port("http", 9090, Tcp)
                .node("n1")
                .build(),
        )
        .pod(
            pod("prod", "web-c")
                .labels([("app", "web")])
                .ip("10.0.0.3")
                .named_port("http", 8080, Tcp)
                .port(9090, Tcp)
                .node("n1")
                .build(),
        )
        .policy(
            netpol("prod", "web")
                .select(sel("app", "web"))
                .ingress(rule().named_port("http", Tcp).build())
                .build(),
        )
        .build();
    let tables = on_n1(&state);
    let id = |pod: &str| tables.endpoints[&key(pod)].endpoint_id;
    assert_ne!(id("prod/web-a"), id("prod/web-b"));
    assert_eq!(
        id("prod/web-a"),
        id("prod/web-c"),
        "unnamed ports do not matter"
    );
    let to = |pod, port| allows(&tables, pod, Direction::Ingress, "8.8.8.8", port);
    assert!(to("prod/web-a", 8080) && !to("prod/web-a", 9090));
    assert!(to("prod/web-b", 9090) && !to("prod/web-b", 8080));
}

#[test]
fn egress_named_ports_resolve_on_each_destination() {
    // db-a and db-b map "sql" to different numbers; the client's egress rule
    // names "sql" for both, and a rule without peers names "metrics" (UDP).
    let state = cluster()
        .pod(
            pod("prod", "client")
                .labels([("app", "client")])
                .ip("10.0.0.1")
                .ip("fd00::1")
                .node("n1")
                .build(),
        )
        .pod(
            pod("prod", "db-a")
                .labels([("app", "db")])
                .ip("10.0.0.2")
                .ip("fd00::2")
                .named_port("sql", 5432, Tcp)
                .node("n2")
                .build(),
        )
        .pod(
            pod("prod", "db-b")
                .labels([("app", "db")])
                .ip("10.0.0.3")
                .named_port("sql", 3306, Tcp)
                .named_port("sql", 3307, Tcp)
                .node("n2")
                .build(),
        )
        .pod(
            pod("prod", "stats")
                .ip("10.0.0.4")
                .named_port("metrics", 9100, Udp)
                .named_port("sql", 1, Tcp)
                .node("n2")
                .build(),
        )
        .policy(
            netpol("prod", "client")
                .select(sel("app", "client"))
                .egress(
                    rule()
                        .to_pods(sel("app", "db"))
                        .named_port("sql", Tcp)
                        .build(),
                )
                .egress(rule().named_port("metrics", Udp).build())
                .build(),
        )
        .build();
    let tables = on_n1(&state);
    let out = |peer, proto, port| {
        tables
            .lookup(
                &key("prod/client"),
                Direction::Egress,
                ip(peer),
                proto,
                port,
            )
            .is_some()
    };
    assert!(out("10.0.0.2", 6, 5432) && out("fd00::2", 6, 5432));
    assert!(!out("10.0.0.2", 6, 3306) && !out("10.0.0.2", 6, 3307));
    assert!(
        out("10.0.0.3", 6, 3306) && out("10.0.0.3", 6, 3307),
        "both containers' numbers"
    );
    assert!(!out("10.0.0.3", 6, 5432));
    assert!(!out("10.0.0.4", 6, 1), "stats is not a db");
    assert!(
        out("10.0.0.4", 17, 9100),
        "a rule without peers admits pods that resolve the name"
    );
    assert!(!out("10.0.0.2", 17, 9100), "and only those");
    assert!(
        !out("8.8.8.8", 17, 9100),
        "no address outside pods resolves a name"
    );
    assert_ne!(class(&tables, "10.0.0.2"), class(&tables, "10.0.0.3"));
}
