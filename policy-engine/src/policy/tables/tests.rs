//! The lookup emulation itself: longest peer prefix per family, node ingress,
//! isolation, port blocks before protocol-wide and protocol-less entries.

use super::*;

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn class(class_id: u32) -> PeerEntry {
    PeerEntry {
        class_id,
        ..PeerEntry::default()
    }
}

fn web() -> ObjectRef {
    ObjectRef::new("prod", "web")
}

/// prod/web (id 7) isolated for ingress only; peers: 10/8 -> 1, 10.1/16 -> 2,
/// 10.1.2.3/32 -> 3 (node), ::/0 -> 4, fd00::/16 -> 5.
fn tables() -> DatapathTables {
    let endpoint = EndpointEntry {
        endpoint_id: 7,
        isolated_ingress: true,
        isolated_egress: false,
        ..EndpointEntry::default()
    };
    let node = PeerEntry {
        node: true,
        ..class(3)
    };
    DatapathTables {
        endpoints: BTreeMap::from([(web(), endpoint)]),
        peers: BTreeMap::from([
            (net("10.0.0.0/8"), class(1)),
            (net("10.1.0.0/16"), class(2)),
            (net("10.1.2.3/32"), node),
            (net("::/0"), class(4)),
            (net("fd00::/16"), class(5)),
        ]),
        ..DatapathTables::default()
    }
}

#[test]
fn the_longest_prefix_of_the_address_family_gives_the_class() {
    let tables = tables();
    let class_of = |addr| tables.peer(ip(addr)).class_id;
    assert_eq!(class_of("10.9.9.9"), 1);
    assert_eq!(class_of("10.1.9.9"), 2);
    assert_eq!(class_of("10.1.2.3"), 3);
    assert_eq!(class_of("11.0.0.1"), CLASS_WORLD, "no IPv4 prefix holds it");
    assert_eq!(class_of("fd00::1"), 5);
    assert_eq!(
        class_of("2001:db8::1"),
        4,
        "::/0 holds every IPv6 address, no IPv4 one"
    );
    assert!(tables.peer(ip("10.1.2.3")).node);
}

#[test]
fn lookup_follows_isolation_node_and_the_longest_port_match() {
    let mut tables = tables();
    let key = |class_id, protocol, port| PolicyMatch {
        endpoint_id: 7,
        class_id,
        direction: Direction::Ingress,
        protocol,
        port,
    };
    let rule = |rule_index| RuleRef {
        policy_id: 0,
        rule_index,
    };
    for (m, r) in [
        (key(1, Some(6), Some(PortBlock::single(80))), rule(0)),
        (
            key(
                1,
                Some(6),
                Some(PortBlock {
                    first: 8192,
                    bits: 3,
                }),
            ),
            rule(1),
        ),
        (key(1, Some(17), None), rule(2)),
        (key(2, None, None), rule(3)),
    ] {
        tables.allow(m, r);
    }
    let lookup =
        |peer, protocol, port| tables.lookup(&web(), Direction::Ingress, ip(peer), protocol, port);
    assert_eq!(lookup("10.9.9.9", 6, 80), Some(Some(rule(0))));
    assert_eq!(lookup("10.9.9.9", 6, 8192), Some(Some(rule(1))));
    assert_eq!(lookup("10.9.9.9", 6, 16383), Some(Some(rule(1))));
    assert_eq!(lookup("10.9.9.9", 6, 16384), None);
    assert_eq!(lookup("10.9.9.9", 6, 81), None);
    assert_eq!(lookup("10.9.9.9", 17, 1), Some(Some(rule(2))));
    assert_eq!(lookup("10.1.0.1", 132, 9), Some(Some(rule(3))));
    assert_eq!(
        lookup("10.1.2.3", 6, 1),
        Some(None),
        "ingress from the node passes"
    );
    assert_eq!(lookup("11.0.0.1", 6, 80), None, "CLASS_WORLD has no entry");
    let egress = tables.lookup(&web(), Direction::Egress, ip("11.0.0.1"), 6, 80);
    assert_eq!(egress, Some(None), "not isolated for egress");
    let stranger = ObjectRef::new("prod", "elsewhere");
    assert_eq!(
        tables.lookup(&stranger, Direction::Egress, ip("10.9.9.9"), 6, 80),
        None,
        "not local"
    );
}

#[test]
fn the_node_flag_does_not_open_egress_to_the_node() {
    let mut tables = tables();
    if let Some(entry) = tables.endpoints.get_mut(&web()) {
        entry.isolated_egress = true;
    }
    assert_eq!(
        tables.lookup(&web(), Direction::Egress, ip("10.1.2.3"), 6, 1),
        None
    );
}

#[test]
fn egress_to_a_service_address_passes_unjudged_and_ingress_from_it_is_judged() {
    let mut tables = tables();
    if let Some(entry) = tables.endpoints.get_mut(&web()) {
        entry.isolated_egress = true;
    }
    tables.peers.insert(
        net("10.96.0.10/32"),
        PeerEntry {
            service: true,
            ..PeerEntry::default()
        },
    );
    assert_eq!(
        tables.lookup(&web(), Direction::Egress, ip("10.96.0.10"), 6, 80),
        Some(None),
        "decided after DNAT, on the backend"
    );
    assert_eq!(
        tables.lookup(&web(), Direction::Ingress, ip("10.96.0.10"), 6, 80),
        None,
        "the service flag opens nothing into the pod"
    );
}

#[test]
fn rules_are_labelled_by_name_where_named_else_by_path() {
    let guardrails = ObjectRef::cluster("guardrails");
    let mut tables = DatapathTables::default();
    tables.rule_names.insert(
        (guardrails.clone(), Direction::Egress, 0),
        "other-tenants".into(),
    );
    assert_eq!(
        tables.rule_label(&guardrails, Direction::Egress, 0),
        "other-tenants"
    );
    assert_eq!(
        tables.rule_label(&guardrails, Direction::Egress, 1),
        "spec.egress[1]"
    );
    assert_eq!(
        tables.rule_label(&ObjectRef::new("shop", "web"), Direction::Ingress, 0),
        "spec.ingress[0]"
    );
}
