//! The e2e bench's report: Markdown tables for people (ratios to nothing
//! attached, median and lowest-highest repetition, per placement, pair, test and
//! configuration) and the JSON figures with the project's targets.

use std::fmt;

use super::{
    stats::{Case, Samples, Spread},
    Config, Pair, Placement, Test,
};
use crate::bench::figures::{Figure, Figures};

/// How far ahead of every iptables and nftables configuration podwall must be
/// (its median ratio over the best of theirs).
pub const AHEAD_TARGET: f64 = 1.0;

/// One run's measurements and how they were taken.
#[derive(Clone, Debug, PartialEq)]
pub struct E2eReport {
    /// `uname -r`.
    pub kernel: String,
    /// Whether the agent was built optimized.
    pub release: bool,
    /// Milliseconds per test.
    pub duration_ms: u128,
    /// Repetitions.
    pub repetitions: usize,
    /// Lab nodes.
    pub nodes: usize,
    /// Whether pod traffic between nodes went in VXLAN.
    pub vxlan: bool,
    /// The client's CPU and the server's.
    pub cpus: (usize, usize),
    /// Hypervisor steal during the run, percent of CPU time, if known.
    pub steal_percent: Option<f64>,
    /// Every measurement.
    pub samples: Samples,
    /// The network namespaces the run made; all are gone when it returns.
    pub namespaces: Vec<String>,
}

/// `0.98 (0.95-1.00)`.
fn ratio_cell(spread: Option<Spread>) -> String {
    spread.map_or_else(
        || "-".to_string(),
        |s| format!("{:.2} ({:.2}-{:.2})", s.median, s.min, s.max),
    )
}

/// A raw rate for people: `31.2k/s`, `9.81 Gbit/s`.
fn rate_cell(test: Test, spread: Option<Spread>) -> String {
    let Some(s) = spread else {
        return "-".to_string();
    };
    match test {
        Test::TcpStream => format!("{:.2} Gbit/s", s.median / 1e9),
        _ => format!("{:.1}k/s", s.median / 1e3),
    }
}

/// The value a figure of `test` carries: Gbit/s for TCP_STREAM, else per second.
fn figure_value(test: Test, rate: f64) -> f64 {
    match test {
        Test::TcpStream => rate / 1e9,
        _ => rate,
    }
}

impl E2eReport {
    /// Every case, in report order.
    fn cases(&self) -> Vec<Case> {
        self.samples.cases()
    }

    /// The tests measured, in report order.
    fn tests(&self) -> Vec<Test> {
        let mut tests: Vec<Test> = self.cases().iter().map(|c| c.test).collect();
        tests.sort();
        tests.dedup();
        tests
    }

    /// Every figure, with its target where the project sets one.
    pub fn figures(&self) -> Figures {
        let mut figures = Vec::new();
        for case in self.cases() {
            let Case {
                placement,
                pair,
                test,
            } = case;
            let prefix = format!("{test}, {}, {}", placement.label(), pair.label());
            if let Some(base) = self.samples.rate(Config::Nothing, case) {
                figures.push(Figure::plain(
                    format!("{prefix}, nothing attached"),
                    figure_value(test, base.median),
                    test.unit(),
                ));
            }
            let best = self.samples.best_firewall(case);
            for config in self.samples.configs() {
                if config == Config::Nothing {
                    continue;
                }
                let Some(spread) = self.samples.ratio(config, case) else {
                    continue;
                };
                let name = format!("{prefix}, {} / nothing attached", config.label());
                let podwall = matches!(config, Config::Podwall(_));
                figures.push(match test.podwall_target().filter(|_| podwall) {
                    Some(target) => Figure::at_least(name.clone(), spread.median, "ratio", target),
                    None => Figure::plain(name.clone(), spread.median, "ratio"),
                });
                figures.push(Figure::plain(
                    format!("{name}, lowest repetition"),
                    spread.min,
                    "ratio",
                ));
                figures.push(Figure::plain(
                    format!("{name}, highest repetition"),
                    spread.max,
                    "ratio",
                ));
                if let (true, Some((_, firewall))) = (podwall, best) {
                    figures.push(Figure::at_least(
                        format!(
                            "{prefix}, {} / best of iptables and nftables",
                            config.label()
                        ),
                        spread.median / firewall,
                        "ratio",
                        AHEAD_TARGET,
                    ));
                }
            }
        }
        Figures {
            bench: "e2e",
            figures,
        }
    }

    fn write_table(&self, f: &mut fmt::Formatter<'_>, placement: Placement) -> fmt::Result {
        let tests = self.tests();
        let names: Vec<&str> = tests.iter().map(|t| t.name()).collect();
        writeln!(
            f,
            "\n{}, ratio to nothing attached, median (lowest-highest repetition):\n",
            placement.label()
        )?;
        writeln!(f, "| configuration | pods | {} |", names.join(" | "))?;
        writeln!(f, "| --- | --- |{}", " --- |".repeat(tests.len()))?;
        for config in self.samples.configs() {
            for pair in Pair::ALL {
                let cells: Vec<String> = tests
                    .iter()
                    .map(|&test| {
                        let case = Case {
                            placement,
                            pair,
                            test,
                        };
                        if config == Config::Nothing {
                            rate_cell(test, self.samples.rate(config, case))
                        } else {
                            ratio_cell(self.samples.ratio(config, case))
                        }
                    })
                    .collect();
                if cells.iter().all(|c| c == "-") {
                    continue;
                }
                writeln!(
                    f,
                    "| {} | {} | {} |",
                    config.label(),
                    pair.label(),
                    cells.join(" | ")
                )?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for E2eReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "podwall end-to-end benchmark: kernel {}, {} build, {} node(s){}, {} ms per test, {} repetitions, client on CPU {}, server on CPU {}",
            self.kernel,
            if self.release { "release" } else { "debug" },
            self.nodes,
            if self.vxlan { " (VXLAN between nodes)" } else { "" },
            self.duration_ms,
            self.repetitions,
            self.cpus.0,
            self.cpus.1,
        )?;
        if let Some(steal) = self.steal_percent {
            writeln!(
                f,
                "CPU time taken by the hypervisor (steal) during the run: {steal:.1}%"
            )?;
        }
        let placements: Vec<Placement> = Placement::ALL
            .into_iter()
            .filter(|p| self.cases().iter().any(|c| c.placement == *p))
            .collect();
        for placement in placements {
            self.write_table(f, placement)?;
        }
        writeln!(f, "\nNothing attached rows give the rate itself (median); TCP_STREAM is one connection's throughput.")?;
        writeln!(
            f,
            "\nTargets:\n\n| figure | value | target | met |\n| --- | --- | --- | --- |"
        )?;
        for figure in self.figures().figures {
            let (Some(target), Some(met)) = (&figure.target, figure.met) else {
                continue;
            };
            let met = if met { "yes" } else { "**no**" };
            writeln!(
                f,
                "| {} | {:.3} | {target} | {met} |",
                figure.name, figure.value
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::e2e::Scale;

    fn report() -> E2eReport {
        let mut samples = Samples::default();
        let case = |test| Case {
            placement: Placement::SameNode,
            pair: Pair::Isolated,
            test,
        };
        for (base, podwall, iptables) in
            [(100.0, 98.0, 90.0), (110.0, 99.0, 95.0), (90.0, 90.0, 80.0)]
        {
            for test in [Test::TcpRr, Test::TcpCrr] {
                samples.push(Config::Nothing, case(test), base);
                samples.push(Config::Podwall(Scale::Small), case(test), podwall);
                samples.push(Config::Iptables(Scale::Small), case(test), iptables);
            }
        }
        E2eReport {
            kernel: "test".into(),
            release: true,
            duration_ms: 100,
            repetitions: 3,
            nodes: 1,
            vxlan: false,
            cpus: (0, 1),
            steal_percent: None,
            samples,
            namespaces: Vec::new(),
        }
    }

    #[test]
    fn figures_carry_the_targets_of_tcp_rr_and_tcp_crr_for_podwall_only() {
        let figures = report().figures();
        assert_eq!(figures.bench, "e2e");
        let rr =
            figures.named("TCP_RR, same node, isolated pods, podwall 1k x 100 / nothing attached");
        assert!(
            (rr.value - 0.98).abs() < 1e-9,
            "median of 0.98, 0.9, 1.0: {rr:?}"
        );
        assert_eq!(
            (rr.target.as_deref(), rr.met),
            (Some(">= 0.97"), Some(true))
        );
        let crr =
            figures.named("TCP_CRR, same node, isolated pods, podwall 1k x 100 / nothing attached");
        assert_eq!(
            (crr.target.as_deref(), crr.met),
            (Some(">= 0.95"), Some(true))
        );
        let low = figures.named("TCP_RR, same node, isolated pods, podwall 1k x 100 / nothing attached, lowest repetition");
        assert!((low.value - 0.9).abs() < 1e-9 && low.target.is_none());
        let iptables = figures
            .named("TCP_RR, same node, isolated pods, iptables-nft 1k rules / nothing attached");
        assert_eq!(iptables.target, None);
        let ahead = figures.named(
            "TCP_RR, same node, isolated pods, podwall 1k x 100 / best of iptables and nftables",
        );
        assert!(ahead.value > 1.0 && ahead.met == Some(true), "{ahead:?}");
        let base = figures.named("TCP_RR, same node, isolated pods, nothing attached");
        assert_eq!((base.value, base.unit), (100.0, "transactions/s"));
    }

    #[test]
    fn the_json_document_has_the_shared_shape() {
        let json = serde_json::to_value(report().figures()).unwrap_or_default();
        assert_eq!(json["bench"], "e2e");
        let first = &json["figures"][0];
        for key in ["name", "value", "unit", "target", "met"] {
            assert!(first.get(key).is_some(), "{key} in {first}");
        }
    }

    #[test]
    fn the_table_prints_ratios_with_their_spread_and_the_targets() {
        let text = report().to_string();
        assert!(
            text.contains(
                "| podwall 1k x 100 | isolated pods | 0.98 (0.90-1.00) | 0.98 (0.90-1.00) |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| nothing attached | isolated pods | 0.1k/s | 0.1k/s |"),
            "{text}"
        );
        assert!(text.contains("| >= 0.97 | yes |"), "{text}");
    }
}
