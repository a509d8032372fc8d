use std::net::IpAddr;

use super::*;
use crate::telemetry::flows::fixtures::{allow_into_web, drop_into_web, names, CLIENT, WEB};

const BOOT_2023: i128 = 1_700_000_000_000_000_000;

fn name(record: &VerdictRecord) -> FlowLine {
    FlowLine::name(record, &names(), WallClock::with_offset(BOOT_2023))
}

#[test]
fn a_drop_by_policy_names_both_pods_the_port_and_every_isolating_policy() {
    let line = name(&drop_into_web());
    assert_eq!(line.time, "2023-11-14T22:13:25.000000Z");
    assert_eq!(line.pod.as_deref(), Some("shop/web"));
    assert_eq!(line.direction, Direction::Ingress);
    assert_eq!(line.peer().pod.as_deref(), Some("shop/client"));
    assert_eq!(line.peer().address, IpAddr::from(CLIENT));
    assert_eq!(line.destination.pod.as_deref(), Some("shop/web"));
    assert_eq!(line.port(), "80/TCP");
    assert_eq!(line.verdict, EventVerdict::Dropped);
    assert_eq!(line.reason, "drop_policy");
    assert_eq!(line.policies, vec!["shop/deny-in", "shop/web-in"]);
    assert_eq!(line.allowed_by, None);
}

#[test]
fn an_allow_by_a_rule_names_the_policy_and_rule_and_no_isolating_policies() {
    let line = name(&allow_into_web());
    assert_eq!(
        line.allowed_by,
        Some(DecidingRule {
            policy: "shop/web-in".into(),
            rule: "spec.ingress[0]".into()
        })
    );
    assert!(line.policies.is_empty());
}

#[test]
fn a_would_drop_names_the_isolating_policies_like_a_drop() {
    let record = VerdictRecord {
        verdict: EventVerdict::WouldDrop,
        reason: "would_drop_policy",
        ..drop_into_web()
    };
    assert_eq!(name(&record).policies, vec!["shop/deny-in", "shop/web-in"]);
}

#[test]
fn a_drop_or_would_drop_that_carries_a_rule_names_that_rule_and_its_policy_not_the_isolating_ones()
{
    // What the kernel reports for a ClusterNetworkPolicy Deny: the rule's slot.
    for (verdict, reason) in [
        (EventVerdict::Dropped, "drop_policy"),
        (EventVerdict::WouldDrop, "would_drop_policy"),
    ] {
        let record = VerdictRecord {
            verdict,
            reason,
            rule_slot: Some(5),
            ..drop_into_web()
        };
        let line = name(&record);
        assert_eq!(line.policies, vec!["shop/web-in"]);
        assert_eq!(
            line.denied_by,
            Some(DecidingRule {
                policy: "shop/web-in".into(),
                rule: "spec.ingress[0]".into(),
            })
        );
        assert_eq!(line.allowed_by, None);
    }
}

#[test]
fn drops_that_are_not_policy_decisions_name_no_policy() {
    let spoofed = VerdictRecord {
        reason: "drop_spoofed_source",
        direction: Direction::Egress,
        ifindex: 13,
        ..drop_into_web()
    };
    let line = name(&spoofed);
    assert!(line.policies.is_empty());
    assert_eq!(line.pod.as_deref(), Some("shop/client"));
}

#[test]
fn a_deferred_service_egress_drop_names_the_source_pod_and_its_egress_policies() {
    // Decided at the backend (web) on the client's egress policy: the kernel
    // reports the client's interface and endpoint.
    let mut names = names();
    names.isolation.insert(
        4,
        crate::policy::tables::Isolation {
            ingress: vec![],
            egress: vec![1],
        },
    );
    let record = VerdictRecord {
        reason: "drop_deferred_egress",
        direction: Direction::Egress,
        ifindex: 13,
        endpoint_id: 4,
        ..drop_into_web()
    };
    let line = FlowLine::name(&record, &names, WallClock::with_offset(0));
    assert_eq!(line.pod.as_deref(), Some("shop/client"));
    assert_eq!(line.peer().pod.as_deref(), Some("shop/web"));
    assert_eq!(line.policies, vec!["shop/web-in"]);
}

#[test]
fn unknown_interfaces_and_addresses_stay_numbers() {
    let record = VerdictRecord {
        ifindex: 99,
        endpoint_id: 0,
        reason: "drop_unknown_endpoint",
        source: ([192, 0, 2, 1].into(), 1234),
        ..drop_into_web()
    };
    let line = name(&record);
    assert_eq!(line.pod, None);
    assert_eq!(line.interface, 99);
    assert_eq!(line.peer().describe(), "192.0.2.1");
    assert!(line.policies.is_empty());
}

#[test]
fn icmp_has_no_port_and_protocols_are_named() {
    let record = VerdictRecord {
        protocol: 1,
        ..drop_into_web()
    };
    assert_eq!(name(&record).port(), "ICMP");
    assert_eq!(protocol_name(58), "ICMPv6");
    assert_eq!(protocol_name(17), "UDP");
    assert_eq!(protocol_name(132), "SCTP");
    assert_eq!(protocol_name(47), "47");
    assert_eq!(protocol_name(0), "-");
}

#[test]
fn json_is_one_line_with_the_documented_fields() {
    let json = name(&drop_into_web()).to_json();
    assert!(!json.contains('\n'));
    let web = IpAddr::from(WEB);
    assert_eq!(
        json,
        format!(
            concat!(
                r#"{{"time":"2023-11-14T22:13:25.000000Z","pod":"shop/web","interface":12,"#,
                r#""direction":"ingress","#,
                r#""source":{{"address":"10.244.0.3","port":40000,"pod":"shop/client"}},"#,
                r#""destination":{{"address":"{}","port":80,"pod":"shop/web"}},"#,
                r#""protocol":"TCP","verdict":"dropped","reason":"drop_policy","#,
                r#""policies":["shop/deny-in","shop/web-in"],"allowed_by":null,"denied_by":null,"bytes":74}}"#
            ),
            web
        )
    );
}

#[test]
fn a_rule_is_described_as_explain_writes_it() {
    let rule = |policy: &str, rule: &str| DecidingRule {
        policy: policy.into(),
        rule: rule.into(),
    };
    assert_eq!(
        rule("shop/web-in", "spec.ingress[0]").describe(),
        "shop/web-in spec.ingress[0]"
    );
    assert_eq!(
        rule("guardrails", "deny-others").describe(),
        "guardrails/deny-others"
    );
}
