//! The e2e bench's arithmetic (pure): every measurement of a run, and ratios to
//! "nothing attached" taken repetition by repetition (configurations take turns
//! within a repetition, so a slow spell of the machine lands on both sides of a
//! ratio), summarised as the median with the lowest and highest repetition.

use std::collections::BTreeMap;

use super::{Config, Pair, Placement, Test};

/// What one measurement is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Case {
    /// Where the server is.
    pub placement: Placement,
    /// Which pods talk.
    pub pair: Pair,
    /// The traffic.
    pub test: Test,
}

/// Every measurement: `(config, case)` -> the rate of each repetition, in
/// repetition order (transactions/s, or bits/s for TCP_STREAM).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    rates: BTreeMap<(Config, Case), Vec<f64>>,
}

/// A median with the lowest and highest value it was taken over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The lowest value.
    pub min: f64,
    /// The highest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none or one is not finite.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

impl Samples {
    /// Records the rate `config` reached on `case` in the next repetition.
    pub fn push(&mut self, config: Config, case: Case, rate: f64) {
        self.rates.entry((config, case)).or_default().push(rate);
    }

    /// The rates of `config` on `case`, in repetition order.
    pub fn rates(&self, config: Config, case: Case) -> &[f64] {
        self.rates.get(&(config, case)).map_or(&[], Vec::as_slice)
    }

    /// Every case measured with nothing attached, sorted.
    pub fn cases(&self) -> Vec<Case> {
        self.rates
            .keys()
            .filter(|(config, _)| *config == Config::Nothing)
            .map(|(_, case)| *case)
            .collect()
    }

    /// Every configuration measured, sorted (the baseline first).
    pub fn configs(&self) -> Vec<Config> {
        let mut configs: Vec<Config> = self.rates.keys().map(|(config, _)| *config).collect();
        configs.dedup();
        configs
    }

    /// `config`'s rate over nothing attached's, repetition by repetition (a
    /// repetition missing on either side, or with a zero baseline, is left out).
    pub fn ratios(&self, config: Config, case: Case) -> Vec<f64> {
        self.rates(config, case)
            .iter()
            .zip(self.rates(Config::Nothing, case))
            .filter(|(_, base)| **base > 0.0)
            .map(|(rate, base)| rate / base)
            .collect()
    }

    /// The spread of `ratios`.
    pub fn ratio(&self, config: Config, case: Case) -> Option<Spread> {
        Spread::of(&self.ratios(config, case))
    }

    /// The spread of `config`'s raw rates on `case`.
    pub fn rate(&self, config: Config, case: Case) -> Option<Spread> {
        Spread::of(self.rates(config, case))
    }

    /// The highest median ratio of any iptables or nftables configuration on
    /// `case`, with that configuration.
    pub fn best_firewall(&self, case: Case) -> Option<(Config, f64)> {
        self.configs()
            .into_iter()
            .filter(|c| c.is_firewall())
            .filter_map(|c| Some((c, self.ratio(c, case)?.median)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// The order configurations take in repetition `repetition`: `configs` rotated
/// by one place per repetition, so no configuration always follows the same
/// one or always comes first.
pub fn round_robin(configs: &[Config], repetition: usize) -> Vec<Config> {
    let mut order = configs.to_vec();
    if !order.is_empty() {
        let by = repetition % order.len();
        order.rotate_left(by);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::e2e::Scale;

    const CASE: Case = Case {
        placement: Placement::SameNode,
        pair: Pair::Isolated,
        test: Test::TcpRr,
    };

    #[test]
    fn a_spread_is_the_median_and_the_extremes() {
        let spread = |median, min, max| Some(Spread { median, min, max });
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), spread(2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]), spread(2.5, 1.0, 4.0));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratios_pair_each_repetition_with_its_own_baseline() {
        let mut samples = Samples::default();
        let podwall = Config::Podwall(Scale::Small);
        for (base, rate) in [(100.0, 90.0), (50.0, 50.0), (200.0, 190.0)] {
            samples.push(Config::Nothing, CASE, base);
            samples.push(podwall, CASE, rate);
        }
        assert_eq!(samples.ratios(podwall, CASE), vec![0.9, 1.0, 0.95]);
        let spread = |median, min, max| Some(Spread { median, min, max });
        assert_eq!(samples.ratio(podwall, CASE), spread(0.95, 0.9, 1.0));
        assert_eq!(samples.ratio(Config::Nothing, CASE), spread(1.0, 1.0, 1.0));
        assert_eq!(samples.cases(), vec![CASE]);
    }

    #[test]
    fn a_zero_baseline_gives_no_ratio() {
        let mut samples = Samples::default();
        samples.push(Config::Nothing, CASE, 0.0);
        samples.push(Config::Iptables(Scale::Small), CASE, 5.0);
        assert_eq!(samples.ratio(Config::Iptables(Scale::Small), CASE), None);
    }

    #[test]
    fn the_best_firewall_is_the_highest_median_of_iptables_and_nftables_only() {
        let mut samples = Samples::default();
        samples.push(Config::Nothing, CASE, 100.0);
        samples.push(Config::Podwall(Scale::Small), CASE, 99.0);
        samples.push(Config::Iptables(Scale::Small), CASE, 80.0);
        samples.push(Config::Nftables(Scale::Large), CASE, 85.0);
        assert_eq!(
            samples.best_firewall(CASE),
            Some((Config::Nftables(Scale::Large), 0.85))
        );
    }

    #[test]
    fn round_robin_rotates_the_start_every_repetition() {
        let configs = Config::all();
        let first = round_robin(&configs, 0);
        let second = round_robin(&configs, 1);
        assert_eq!(first, configs);
        assert_eq!(second[0], configs[1]);
        assert_eq!(second.last(), Some(&configs[0]));
        assert_eq!(round_robin(&configs, configs.len()), configs);
    }
}
