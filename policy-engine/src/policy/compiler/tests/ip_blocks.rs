//! ipBlock peers: cidr and except prefixes in `peers`, pods inside blocks, both
//! families.

use super::*;

/// prod/web (app=web, on n1) is isolated for ingress; `rules` are its only
/// ingress rules. Pods in prod: web 10.0.0.1 / fd00::1, in-block 10.1.0.5 /
/// fd00:1::5, in-except 10.1.2.5 / fd00:1:0:2::5.
fn web_with(rules: Vec<crate::model::Rule>) -> DatapathTables {
    let policy = rules
        .into_iter()
        .fold(netpol("prod", "web").select(sel("app", "web")), |p, r| {
            p.ingress(r)
        });
    let state = cluster()
        .pod(prod_pod("web", Some("web"), &["10.0.0.1", "fd00::1"], "n1"))
        .pod(prod_pod("in-block", None, &["10.1.0.5", "fd00:1::5"], "n2"))
        .pod(prod_pod(
            "in-except",
            None,
            &["10.1.2.5", "fd00:1:0:2::5"],
            "n2",
        ))
        .policy(policy.build())
        .build();
    on_n1(&state)
}

fn from_web(tables: &DatapathTables, peer: &str) -> bool {
    allows(tables, "prod/web", Direction::Ingress, peer, 80)
}

#[test]
fn ipv4_block_admits_its_cidr_minus_the_except_pods_included() {
    let tables = web_with(vec![rule()
        .from_ip_block("10.1.0.0/16", ["10.1.2.0/24"])
        .build()]);
    for (peer, allowed) in [
        ("10.1.0.0", true),
        ("10.1.255.255", true),
        ("10.1.0.5", true),
        ("10.1.2.0", false),
        ("10.1.2.5", false),
        ("10.1.2.255", false),
        ("10.1.3.0", true),
        ("10.0.255.255", false),
        ("10.2.0.0", false),
        ("fd00:1::5", false),
    ] {
        assert_eq!(from_web(&tables, peer), allowed, "{peer}");
    }
    let block = tables.peers[&net("10.1.0.0/16")].class_id;
    assert_ne!(block, CLASS_WORLD);
    assert_eq!(
        tables.peers[&net("10.1.2.0/24")].class_id,
        CLASS_WORLD,
        "the except shadows its cidr"
    );
    assert_eq!(
        class(&tables, "10.1.0.5"),
        block,
        "a pod in the block is only in the block"
    );
}

#[test]
fn ipv6_block_admits_its_cidr_minus_the_except_pods_included() {
    let tables = web_with(vec![rule()
        .from_ip_block("fd00:1::/48", ["fd00:1:0:2::/64"])
        .build()]);
    for (peer, allowed) in [
        ("fd00:1::", true),
        ("fd00:1::5", true),
        ("fd00:1:0:ffff:ffff:ffff:ffff:ffff", true),
        ("fd00:1:0:2::", false),
        ("fd00:1:0:2::5", false),
        ("fd00:1:0:2:ffff:ffff:ffff:ffff", false),
        ("fd00:1:0:3::", true),
        ("fd00:1:1::", false),
        ("fd00:2::", false),
        ("10.1.0.5", false),
    ] {
        assert_eq!(from_web(&tables, peer), allowed, "{peer}");
    }
    assert_eq!(tables.peers[&net("fd00:1:0:2::/64")].class_id, CLASS_WORLD);
}

#[test]
fn a_pod_in_a_block_combines_its_pod_peers_and_its_block() {
    // Rule 0 admits app=client pods on 80, rule 1 the block on 443: a client
    // pod in the block gets both; an address of the block outside pods only 443.
    let tables = {
        let state = cluster()
            .pod(prod_pod("web", Some("web"), &["10.0.0.1"], "n1"))
            .pod(prod_pod("client", Some("client"), &["10.1.0.7"], "n2"))
            .pod(prod_pod("far", Some("client"), &["10.9.0.7"], "n2"))
            .policy(
                netpol("prod", "web")
                    .select(sel("app", "web"))
                    .ingress(rule().from_pods(sel("app", "client")).port(80, Tcp).build())
                    .ingress(
                        rule()
                            .from_ip_block("10.1.0.0/16", [])
                            .port(443, Tcp)
                            .build(),
                    )
                    .build(),
            )
            .build();
        on_n1(&state)
    };
    let verdicts =
        |peer| [80, 443].map(|port| allows(&tables, "prod/web", Direction::Ingress, peer, port));
    assert_eq!(
        verdicts("10.1.0.7"),
        [true, true],
        "client pod in the block"
    );
    assert_eq!(
        verdicts("10.9.0.7"),
        [true, false],
        "client pod outside the block"
    );
    assert_eq!(verdicts("10.1.0.8"), [false, true], "address in the block");
    assert_eq!(verdicts("10.9.0.8"), [false, false], "address outside");
    let classes = ["10.1.0.7", "10.9.0.7", "10.1.0.8"].map(|a| class(&tables, a));
    assert!(classes[0] != classes[1] && classes[1] != classes[2] && classes[0] != classes[2]);
}

#[test]
fn overlapping_blocks_of_several_rules_resolve_by_the_longest_prefix() {
    // 0.0.0.0/0 except 10/8 on 80; 10/8 except 10.1/16 on 81; 10.1.2/24 on 82.
    let tables = web_with(vec![
        rule()
            .from_ip_block("0.0.0.0/0", ["10.0.0.0/8"])
            .port(80, Tcp)
            .build(),
        rule()
            .from_ip_block("10.0.0.0/8", ["10.1.0.0/16"])
            .port(81, Tcp)
            .build(),
        rule()
            .from_ip_block("10.1.2.0/24", [])
            .port(82, Tcp)
            .build(),
    ]);
    let verdicts =
        |peer| [80, 81, 82].map(|port| allows(&tables, "prod/web", Direction::Ingress, peer, port));
    assert_eq!(verdicts("8.8.8.8"), [true, false, false]);
    assert_eq!(verdicts("10.0.0.9"), [false, true, false]);
    assert_eq!(
        verdicts("10.1.0.5"),
        [false, false, false],
        "a pod in an except"
    );
    assert_eq!(
        verdicts("10.1.2.5"),
        [false, false, true],
        "a pod in a block inside an except"
    );
    assert_eq!(verdicts("10.1.3.1"), [false, false, false]);
}

#[test]
fn redundant_region_prefixes_are_left_out_but_every_except_shadows_its_cidr() {
    // 10.1.2.0/24 lies inside the other block's except 10.1.0.0/16 and inside its
    // own block's: it is outside both blocks, as its parent 10.1.0.0/16 is.
    let tables = web_with(vec![
        rule().from_ip_block("10.0.0.0/8", ["10.1.0.0/16"]).build(),
        rule()
            .from_ip_block("10.0.0.0/8", ["10.1.0.0/16", "10.1.2.0/24"])
            .build(),
    ]);
    let regions: Vec<(IpNet, u32)> = tables
        .peers
        .iter()
        .filter(|(net, _)| net.prefix_len() < 32)
        .map(|(net, entry)| (*net, entry.class_id))
        .collect();
    let block = class(&tables, "10.0.0.9");
    assert_ne!(block, CLASS_WORLD);
    assert_eq!(
        regions,
        vec![
            (net("10.0.0.0/8"), block),
            (net("10.1.0.0/16"), CLASS_WORLD)
        ]
    );
    assert!(!from_web(&tables, "10.1.2.9"));
}

#[test]
fn egress_ip_blocks_apply_to_the_destination_address() {
    let state = cluster()
        .pod(prod_pod("web", Some("web"), &["10.0.0.1", "fd00::1"], "n1"))
        .pod(prod_pod("db", None, &["10.0.0.2", "fd00::2"], "n1"))
        .policy(
            netpol("prod", "out")
                .select(sel("app", "web"))
                .types(false, true)
                .egress(rule().to_ip_block("0.0.0.0/0", ["10.0.0.0/8"]).build())
                .egress(rule().to_ip_block("::/0", ["fd00::/16"]).build())
                .build(),
        )
        .build();
    let tables = on_n1(&state);
    let out = |peer| allows(&tables, "prod/web", Direction::Egress, peer, 443);
    assert!(out("8.8.8.8") && out("2001:db8::1"));
    assert!(!out("10.0.0.2") && !out("fd00::2") && !out("10.200.0.1") && !out("fd00:9::1"));
    assert!(
        allows(&tables, "prod/web", Direction::Ingress, "10.0.0.2", 443),
        "ingress open"
    );
}
