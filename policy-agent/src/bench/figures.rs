//! The benchmarks' machine-readable results: one JSON document per run,
//! `{"bench":"datapath","figures":[{"name","value","unit","target","met"}, ...]}`,
//! every figure with the project's target where it has one and whether it is met.

use serde::Serialize;

/// One measured figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figure {
    /// What was measured (`conntrack hit (ACK), IPv4 / floor`).
    pub name: String,
    /// The figure.
    pub value: f64,
    /// Its unit: `ns`, `ms`, `MiB` or `ratio`.
    pub unit: &'static str,
    /// The target (`<= 3`), if the project sets one.
    pub target: Option<String>,
    /// Whether `value` meets the target (`None` without one).
    pub met: Option<bool>,
}

impl Figure {
    /// A figure without a target.
    pub fn plain(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
            target: None,
            met: None,
        }
    }

    /// A figure that must be at most `limit`.
    pub fn at_most(name: impl Into<String>, value: f64, unit: &'static str, limit: f64) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
            target: Some(format!("<= {limit}")),
            met: Some(value <= limit),
        }
    }

    /// A figure that must be at least `limit`.
    pub fn at_least(name: impl Into<String>, value: f64, unit: &'static str, limit: f64) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
            target: Some(format!(">= {limit}")),
            met: Some(value >= limit),
        }
    }
}

/// One run's document.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    /// Which benchmark: `datapath`, `agent` or `e2e`.
    pub bench: &'static str,
    /// Every figure of the run.
    pub figures: Vec<Figure>,
}

#[cfg(test)]
impl Figures {
    /// The figure called `name`; panics naming every figure when there is none.
    pub fn named(&self, name: &str) -> &Figure {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no figure {name:?} in {self:#?}"))
    }
}
