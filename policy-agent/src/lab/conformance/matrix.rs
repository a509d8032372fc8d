//! An expected reachability matrix: a header line of destination pods, then one
//! row per source pod of `.` (must connect) or `X` (must not), e.g.
//!
//! ```text
//! -   x/a x/b x/c y/a y/b y/c z/a z/b z/c
//! x/a  X   .   .   .   .   .   .   .   .
//! ```
//!
//! Every fixture pod must have a row and a column. The diagonal is kept as
//! written, but the runner never probes it (upstream ignores loopback).

use std::collections::{BTreeMap, BTreeSet};

use super::fixture;

/// `(from, to) -> allowed` for every pair of fixture pods, keyed by `ns/pod`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    cells: BTreeMap<(String, String), bool>,
}

impl Matrix {
    /// Parses a matrix; the error says which line or pod is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fixture: BTreeSet<String> = fixture::pods().iter().map(ToString::to_string).collect();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines
            .next()
            .ok_or("the matrix is empty")?
            .split_whitespace()
            .skip(1)
            .collect();
        let columns: BTreeSet<String> = header.iter().map(ToString::to_string).collect();
        if columns != fixture || header.len() != fixture.len() {
            return Err(format!(
                "header names {}; expected each fixture pod once ({})",
                header.join(" "),
                fixture.iter().cloned().collect::<Vec<_>>().join(" ")
            ));
        }
        let mut cells = BTreeMap::new();
        let mut rows = BTreeSet::new();
        for line in lines {
            let mut words = line.split_whitespace();
            let from = words.next().unwrap_or_default();
            if !fixture.contains(from) {
                return Err(format!("row {from:?} is no fixture pod"));
            }
            if !rows.insert(from.to_string()) {
                return Err(format!("row {from} appears twice"));
            }
            let marks: Vec<&str> = words.collect();
            if marks.len() != header.len() {
                return Err(format!(
                    "row {from} has {} marks; expected {}",
                    marks.len(),
                    header.len()
                ));
            }
            for (to, mark) in header.iter().zip(marks) {
                let allowed = match mark {
                    "." => true,
                    "X" => false,
                    other => {
                        return Err(format!(
                            "row {from}, column {to}: {other:?} is neither '.' nor 'X'"
                        ))
                    }
                };
                cells.insert((from.to_string(), to.to_string()), allowed);
            }
        }
        if let Some(missing) = fixture.difference(&rows).next() {
            return Err(format!("no row for {missing}"));
        }
        Ok(Self { cells })
    }

    /// Whether `from` must reach `to`; `None` for a pod outside the fixture.
    pub fn allowed(&self, from: &str, to: &str) -> Option<bool> {
        self.cells.get(&(from.to_string(), to.to_string())).copied()
    }
}
