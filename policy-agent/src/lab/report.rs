//! Probe results as a reachability matrix for people and as JSON for machines.
//! The JSON shape is a contract: `{"probes":[{"from","to","port","protocol","allowed"}]}`,
//! plus `"would_drop":true` on a probe that passed only because the policies that
//! would drop it are in audit mode (absent otherwise).

use std::collections::BTreeMap;

use serde::Serialize;

use super::probe::ProbeSpec;
use crate::model::{ObjectRef, Protocol};

/// The outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ProbeResult {
    /// `namespace/pod` the probe came from.
    pub from: String,
    /// `namespace/pod` it went to.
    pub to: String,
    /// Destination port.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: Protocol,
    /// Whether it reached the destination.
    pub allowed: bool,
    /// It reached the destination only because the policies that would drop it
    /// are in audit mode (a would-drop); implies `allowed`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub would_drop: bool,
}

impl ProbeResult {
    /// The result of `spec`.
    pub fn new(spec: &ProbeSpec, allowed: bool) -> Self {
        Self {
            from: spec.from.to_string(),
            to: spec.to.to_string(),
            port: spec.port,
            protocol: spec.protocol,
            allowed,
            would_drop: false,
        }
    }

    /// A TCP probe's result between two pods named `namespace/name`, for tests.
    #[cfg(test)]
    pub(crate) fn tcp(from: &str, to: &str, port: u16, allowed: bool) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            port,
            protocol: Protocol::Tcp,
            allowed,
            would_drop: false,
        }
    }
}

/// `{"probes":[...]}`, compact, one line.
pub fn to_json(results: &[ProbeResult]) -> String {
    #[derive(Serialize)]
    struct Probes<'a> {
        probes: &'a [ProbeResult],
    }
    serde_json::to_string(&Probes { probes: results })
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Rows padded into columns two spaces apart, each column as wide as its widest
/// cell (counted in characters, so `✓` is one), trailing spaces trimmed. Serves
/// the matrix and `lab run --show-drops`' table.
pub fn aligned<R: AsRef<[String]>>(rows: &[R]) -> String {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.as_ref().get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The cell mark of a would-drop: it passed, but enforcing would drop it.
const WOULD_DROP_MARK: &str = "⚠";

fn cell(results: &[&ProbeResult]) -> String {
    if results.is_empty() {
        return "-".to_string();
    }
    results
        .iter()
        .map(|r| {
            let port = match r.protocol {
                Protocol::Tcp => r.port.to_string(),
                other => format!("{}/{other}", r.port),
            };
            let mark = match (r.allowed, r.would_drop) {
                (true, false) => "✓",
                (true, true) => WOULD_DROP_MARK,
                (false, _) => "✗",
            };
            format!("{port} {mark}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table with one row per source pod and one column per destination pod; each
/// cell lists the probed ports with ✓ (reached), ⚠ (reached as a would-drop: audit
/// mode) or ✗ (dropped). `·` marks a pod and itself (not probed: that traffic never
/// leaves the pod).
pub fn to_matrix(pods: &[ObjectRef], results: &[ProbeResult]) -> String {
    let mut by_pair: BTreeMap<(&str, &str), Vec<&ProbeResult>> = BTreeMap::new();
    for r in results {
        by_pair.entry((&r.from, &r.to)).or_default().push(r);
    }
    let names: Vec<String> = pods.iter().map(ToString::to_string).collect();
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("from \\ to".to_string())
        .chain(names.iter().cloned())
        .collect()];
    for from in &names {
        let mut row = vec![from.clone()];
        for to in &names {
            row.push(if from == to {
                "·".to_string()
            } else {
                cell(
                    by_pair
                        .get(&(from.as_str(), to.as_str()))
                        .map_or(&[][..], Vec::as_slice),
                )
            });
        }
        rows.push(row);
    }
    let mut out = aligned(&rows);
    let allowed = results.iter().filter(|r| r.allowed).count();
    let would_drop = results.iter().filter(|r| r.allowed && r.would_drop).count();
    let audit = if would_drop == 0 {
        String::new()
    } else {
        format!(" ({would_drop} of them {WOULD_DROP_MARK} would-drop: audit mode)")
    };
    out.push_str(&format!(
        "{} probes: {allowed} allowed{audit}, {} dropped\n",
        results.len(),
        results.len() - allowed
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(from: &str, to: &str, port: u16, protocol: Protocol, allowed: bool) -> ProbeResult {
        ProbeResult {
            from: from.into(),
            to: to.into(),
            port,
            protocol,
            allowed,
            would_drop: false,
        }
    }

    #[test]
    fn json_has_exactly_the_documented_shape() {
        let json = to_json(&[result("x/a", "x/b", 80, Protocol::Tcp, true)]);
        assert_eq!(
            json,
            r#"{"probes":[{"from":"x/a","to":"x/b","port":80,"protocol":"TCP","allowed":true}]}"#
        );
    }

    #[test]
    fn matrix_rows_are_sources_and_cells_list_ports_with_their_verdict() {
        let pods = [ObjectRef::new("x", "a"), ObjectRef::new("x", "b")];
        let text = to_matrix(
            &pods,
            &[
                result("x/a", "x/b", 80, Protocol::Tcp, true),
                result("x/a", "x/b", 53, Protocol::Udp, false),
                result("x/b", "x/a", 80, Protocol::Tcp, false),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("from \\ to"));
        assert!(lines[1].starts_with("x/a") && lines[1].contains("80 ✓, 53/UDP ✗"));
        assert!(lines[2].starts_with("x/b") && lines[2].contains("80 ✗"));
        assert_eq!(lines[3], "3 probes: 1 allowed, 2 dropped");
    }

    #[test]
    fn would_drops_are_marked_in_the_matrix_and_flagged_in_json() {
        let would_drop = ProbeResult {
            would_drop: true,
            ..result("x/a", "x/b", 80, Protocol::Tcp, true)
        };
        assert_eq!(
            to_json(std::slice::from_ref(&would_drop)),
            r#"{"probes":[{"from":"x/a","to":"x/b","port":80,"protocol":"TCP","allowed":true,"would_drop":true}]}"#
        );
        let pods = [ObjectRef::new("x", "a"), ObjectRef::new("x", "b")];
        let text = to_matrix(
            &pods,
            &[would_drop, result("x/b", "x/a", 80, Protocol::Tcp, true)],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("x/a") && lines[1].contains("80 ⚠"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("x/b") && lines[2].contains("80 ✓"),
            "{text}"
        );
        assert_eq!(
            lines[3],
            "2 probes: 2 allowed (1 of them ⚠ would-drop: audit mode), 0 dropped"
        );
    }

    #[test]
    fn aligned_pads_each_column_to_its_widest_cell_in_characters() {
        let rows = [
            ["a", "✓✓✓", "x"].map(String::from),
            ["long", "b", ""].map(String::from),
        ];
        assert_eq!(aligned(&rows), "a     ✓✓✓  x\nlong  b\n");
        let ragged = vec![vec!["ab".to_string()], vec!["c".into(), "d".into()]];
        assert_eq!(aligned(&ragged), "ab\nc   d\n");
    }
}
