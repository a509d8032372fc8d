//! The `flows` table: a header, then one line per event. Events arrive one at a
//! time, so column widths are fixed in advance; a longer value pushes the rest of
//! its own line only.

use super::{
    clock::time_of_day,
    line::{direction_name, FlowLine},
};
use crate::dataplane::EventVerdict;

/// Column titles and widths (the last column is not padded).
const COLUMNS: [(&str, usize); 8] = [
    ("TIME (UTC)", 12),
    ("VERDICT", 10),
    ("POD", 28),
    ("DIRECTION", 9),
    ("PEER", 34),
    ("PORT", 10),
    ("REASON", 16),
    ("POLICIES", 0),
];

fn join(cells: &[String]) -> String {
    let mut out = String::new();
    for ((text, (_, width)), last) in cells
        .iter()
        .zip(COLUMNS)
        .zip((0..cells.len()).map(|i| i + 1 == cells.len()))
    {
        out.push_str(text);
        if !last {
            let pad = width.saturating_sub(text.chars().count());
            out.push_str(&" ".repeat(pad + 2));
        }
    }
    out.trim_end().to_string()
}

/// The header line.
pub fn header() -> String {
    let titles: Vec<String> = COLUMNS.iter().map(|(t, _)| (*t).to_string()).collect();
    join(&titles)
}

/// The text of a verdict.
pub fn verdict_name(verdict: EventVerdict) -> &'static str {
    match verdict {
        EventVerdict::Allowed => "allowed",
        EventVerdict::Dropped => "dropped",
        EventVerdict::WouldDrop => "would-drop",
    }
}

/// `ns/a, ns/b` for a drop, the rule for a verdict by a rule
/// (`DecidingRule::describe`), `-` when no policy is behind the verdict.
pub fn policies_cell(line: &FlowLine) -> String {
    if let Some(rule) = line.allowed_by.as_ref().or(line.denied_by.as_ref()) {
        return rule.describe();
    }
    if line.policies.is_empty() {
        return "-".to_string();
    }
    line.policies.join(", ")
}

/// One event's line.
pub fn row(line: &FlowLine) -> String {
    let pod = line
        .pod
        .clone()
        .unwrap_or_else(|| format!("interface {}", line.interface));
    join(&[
        time_of_day(line.unix_ns),
        verdict_name(line.verdict).to_string(),
        pod,
        direction_name(line.direction).to_string(),
        line.peer().describe(),
        line.port(),
        line.reason.clone(),
        policies_cell(line),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::flows::{
        fixtures::{allow_into_web, drop_into_web, names},
        WallClock,
    };

    const BOOT_2023: i128 = 1_700_000_000_000_000_000;

    fn line(record: &crate::dataplane::VerdictRecord) -> FlowLine {
        FlowLine::name(record, &names(), WallClock::with_offset(BOOT_2023))
    }

    /// Where each column starts in `text`, found by its value.
    fn starts(text: &str, values: &[&str]) -> Vec<usize> {
        values
            .iter()
            .map(|v| text.find(v).unwrap_or_else(|| panic!("{v} not in {text}")))
            .collect()
    }

    #[test]
    fn a_drop_by_a_rule_shows_that_rule() {
        let record = crate::dataplane::VerdictRecord {
            rule_slot: Some(5),
            ..drop_into_web()
        };
        assert_eq!(policies_cell(&line(&record)), "shop/web-in spec.ingress[0]");
        assert_eq!(
            policies_cell(&line(&drop_into_web())),
            "shop/deny-in, shop/web-in"
        );
    }

    #[test]
    fn rows_line_up_under_the_header() {
        let header = header();
        assert!(header.starts_with("TIME (UTC)"));
        let titles = starts(
            &header,
            &[
                "VERDICT",
                "POD",
                "DIRECTION",
                "PEER",
                "PORT",
                "REASON",
                "POLICIES",
            ],
        );
        let drop = row(&line(&drop_into_web()));
        assert_eq!(
            starts(
                &drop,
                &[
                    "dropped",
                    "shop/web",
                    "ingress",
                    "shop/client (10.244.0.3)",
                    "80/TCP",
                    "drop_policy",
                    "shop/deny-in, shop/web-in"
                ]
            ),
            titles,
            "\n{header}\n{drop}"
        );
        assert!(drop.starts_with("22:13:25.000  drop"), "{drop}");
        let allow = row(&line(&allow_into_web()));
        assert!(
            allow.ends_with("allow_policy      shop/web-in spec.ingress[0]"),
            "{allow}"
        );
    }

    #[test]
    fn verdicts_and_missing_pods_have_readable_text() {
        let unknown = crate::dataplane::VerdictRecord {
            ifindex: 99,
            reason: "drop_malformed",
            ..drop_into_web()
        };
        let text = row(&line(&unknown));
        assert!(text.contains("interface 99"), "{text}");
        assert!(text.ends_with("drop_malformed    -"), "{text}");
    }
}
