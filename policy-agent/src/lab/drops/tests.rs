use super::*;
use crate::{
    dataplane::Stats,
    telemetry::flows::{
        fixtures::{allow_into_web, drop_into_web, names},
        WallClock,
    },
};

fn line(record: &VerdictRecord) -> ReportedLine {
    ReportedLine {
        node: None,
        line: FlowLine::name(record, &names(), WallClock::with_offset(0)),
    }
}

#[test]
fn one_entry_per_flow_counts_its_packets_and_leaves_allows_out() {
    let retransmit = VerdictRecord {
        source: (drop_into_web().source.0, 40001),
        timestamp_ns: 6_000_000_000,
        ..drop_into_web()
    };
    let lines = [
        line(&drop_into_web()),
        line(&retransmit),
        line(&allow_into_web()),
    ];
    let drops = summarize(&lines);
    assert_eq!(
        drops,
        vec![SeenDrop {
            from: "shop/client".into(),
            to: "shop/web".into(),
            port: 80,
            protocol: "TCP".into(),
            verdict: EventVerdict::Dropped,
            pod: Some("shop/web".into()),
            direction: "ingress",
            reason: "drop_policy".into(),
            policies: vec!["shop/deny-in".into(), "shop/web-in".into()],
            denied_by: None,
            packets: 2,
            node: None,
        }]
    );
    let table = to_table(&drops, EventsLost::default());
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows[0], "drops reported while probing: 1 flows, 2 packets");
    assert!(rows[1].starts_with("from"), "{table}");
    assert!(
        rows[2].starts_with("shop/client  shop/web  80/TCP  dropped  shop/web ingress  drop_policy  shop/deny-in, shop/web-in  2"),
        "{table}"
    );
    assert_eq!(rows.len(), 3, "{table}");
}

#[test]
fn a_drop_by_a_rule_names_the_rule() {
    let record = VerdictRecord {
        rule_slot: Some(5),
        ..drop_into_web()
    };
    let drops = summarize(&[line(&record)]);
    assert_eq!(drops[0].policies, vec!["shop/web-in".to_string()]);
    let table = to_table(&drops, EventsLost::default());
    assert!(
        table
            .lines()
            .nth(2)
            .is_some_and(|row| row.contains("  shop/web-in spec.ingress[0]  1")),
        "{table}"
    );
}

#[test]
fn lost_events_are_reported() {
    let before = Stats {
        counters: vec![
            ("events_rate_limited", 1),
            ("events_endpoint_limited", 0),
            ("events_ring_full", 0),
        ],
    };
    let after = Stats {
        counters: vec![
            ("events_rate_limited", 4),
            ("events_endpoint_limited", 1),
            ("events_ring_full", 2),
        ],
    };
    let lost = EventsLost::between(&before, &after);
    assert_eq!(
        lost,
        EventsLost {
            rate_limited: 3,
            endpoint_limited: 1,
            ring_full: 2
        }
    );
    let table = to_table(&[], lost);
    assert!(
        table.starts_with("drops reported while probing: none\n"),
        "{table}"
    );
    assert!(
        table.contains(
            "could not report 6 events (3 held back by the rate limit, 1 by per-pod limits, 2 for a full ring buffer)"
        ),
        "{table}"
    );
    assert!(!EventsLost::between(&before, &before).any());
}

#[test]
fn json_adds_drops_and_lost_events_to_the_probes() {
    let drops = summarize(&[line(&drop_into_web())]);
    let json = to_json(
        &[ProbeResult::tcp("shop/client", "shop/web", 80, false)],
        &drops,
        EventsLost::default(),
    );
    assert_eq!(
        json,
        concat!(
            r#"{"probes":[{"from":"shop/client","to":"shop/web","port":80,"protocol":"TCP","allowed":false}],"#,
            r#""drops":[{"from":"shop/client","to":"shop/web","port":80,"protocol":"TCP","verdict":"dropped","#,
            r#""pod":"shop/web","direction":"ingress","reason":"drop_policy","policies":["shop/deny-in","shop/web-in"],"denied_by":null,"packets":1}],"#,
            r#""events_lost":{"rate_limited":0,"endpoint_limited":0,"ring_full":0}}"#
        )
    );
}

#[test]
fn would_drop_events_mark_only_the_probes_they_belong_to() {
    let audit = VerdictRecord {
        verdict: EventVerdict::WouldDrop,
        reason: "would_drop_policy",
        ..drop_into_web()
    };
    let mut results = [
        ProbeResult::tcp("shop/client", "shop/web", 80, true),
        ProbeResult::tcp("shop/client", "shop/web", 81, true),
        ProbeResult::tcp("shop/web", "shop/client", 80, true),
    ];
    mark_would_drops(&mut results, &[line(&audit), line(&drop_into_web())]);
    assert_eq!(results.map(|r| r.would_drop), [true, false, false]);
    // A would-drop is also listed among the drops, as such.
    assert_eq!(
        summarize(&[line(&audit)]).first().map(|d| d.verdict),
        Some(EventVerdict::WouldDrop)
    );
}

#[test]
fn in_a_lab_of_several_nodes_each_drop_names_its_node_in_the_table_and_the_json() {
    let on = |node: &str| ReportedLine {
        node: Some(node.to_string()),
        ..line(&drop_into_web())
    };
    let drops = summarize(&[on("node-2"), on("node-2"), on("node-1")]);
    assert_eq!(
        drops
            .iter()
            .map(|d| (d.node.as_deref(), d.packets))
            .collect::<Vec<_>>(),
        [(Some("node-1"), 1), (Some("node-2"), 2)],
        "one entry per flow and node"
    );
    let table = to_table(&drops, EventsLost::default());
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[1].contains("verdict  node    at"), "{table}");
    assert!(
        rows[3].contains("dropped  node-2  shop/web ingress"),
        "{table}"
    );
    let json = to_json(&[], &drops, EventsLost::default());
    assert!(json.contains(r#""packets":2,"node":"node-2""#), "{json}");
}
