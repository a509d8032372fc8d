//! `policy-agent bench e2e` (run by `cargo xtask bench e2e`): real traffic between
//! lab pods, same node and across nodes, under each enforcer in turn, as ratios
//! to the same traffic with nothing attached. Not a pass/fail test.
//!
//! - `load`: the load generator, our own TCP_RR, TCP_CRR, TCP_STREAM and UDP_RR
//!   client and server, each on a thread inside its pod's network namespace,
//!   pinned to a CPU of its own.
//! - `scenario`: the bench pods (an isolated pair, an unisolated pair, an
//!   intruder) and their policies, alone for the lab and merged into the
//!   synthetic cluster (`bench::cluster`) for podwall's tables.
//! - `podwall`: a loaded datapath per node and scale, attached and detached.
//! - `iptables`, `nftables`: the rule sets iptables-style and nftables-style
//!   enforcers generate (pure), loaded into and removed from the lab's nodes.
//! - `run`: configurations interleaved in every repetition, the traffic and
//!   enforcement checks; `stats` and `report`: ratios, the table and the figures.
//!
//! Everything runs inside the lab's own namespaces: nothing touches the
//! machine's interfaces, routes or firewall.

pub mod firewall;
pub mod iptables;
pub mod load;
pub mod nftables;
mod podwall;
pub mod report;
mod run;
pub mod scenario;
pub mod stats;

use std::{fmt, time::Duration};

pub use report::E2eReport;
pub use run::run;

use super::cluster::ClusterSpec;

/// One kind of traffic, as netperf names its tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Test {
    /// 1-byte request/response transactions on one TCP connection.
    TcpRr,
    /// Connect, 1-byte request/response, close: connections per second.
    TcpCrr,
    /// One TCP connection sending as fast as it can: throughput.
    TcpStream,
    /// 1-byte request/response datagrams on one UDP flow.
    UdpRr,
}

impl Test {
    /// Every test, in report order.
    pub const ALL: [Test; 4] = [Test::TcpRr, Test::TcpCrr, Test::TcpStream, Test::UdpRr];

    /// Its netperf name (`TCP_RR`).
    pub fn name(self) -> &'static str {
        match self {
            Test::TcpRr => "TCP_RR",
            Test::TcpCrr => "TCP_CRR",
            Test::TcpStream => "TCP_STREAM",
            Test::UdpRr => "UDP_RR",
        }
    }

    /// The unit its raw figure is in.
    pub fn unit(self) -> &'static str {
        match self {
            Test::TcpStream => "Gbit/s",
            _ => "transactions/s",
        }
    }

    /// The project's target for podwall's ratio to nothing attached, if any.
    pub fn podwall_target(self) -> Option<f64> {
        match self {
            Test::TcpRr => Some(0.97),
            Test::TcpCrr => Some(0.95),
            _ => None,
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the server runs relative to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placement {
    /// Both pods on node 1.
    SameNode,
    /// Client on node 1, server on node 2.
    AcrossNodes,
}

impl Placement {
    /// Both placements, in report order.
    pub const ALL: [Placement; 2] = [Placement::SameNode, Placement::AcrossNodes];

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Placement::SameNode => "same node",
            Placement::AcrossNodes => "across nodes",
        }
    }
}

/// Which pair of pods carries the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pair {
    /// Client and server both isolated (egress and ingress) by policies that
    /// allow them to each other.
    Isolated,
    /// Client and server no policy selects.
    Unisolated,
}

impl Pair {
    /// Both pairs, in report order.
    pub const ALL: [Pair; 2] = [Pair::Isolated, Pair::Unisolated];

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Pair::Isolated => "isolated pods",
            Pair::Unisolated => "unselected pods",
        }
    }
}

/// The two sizes every enforcer is measured at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scale {
    /// 1,000 pods x 100 policies; 1,000 iptables rules.
    Small,
    /// 10,000 pods x 1,000 policies; 10,000 iptables rules.
    Large,
}

impl Scale {
    /// Both scales.
    pub const ALL: [Scale; 2] = [Scale::Small, Scale::Large];

    /// The synthetic cluster podwall compiles at this scale.
    pub fn cluster(self) -> ClusterSpec {
        match self {
            Scale::Small => ClusterSpec::new(1_000, 100),
            Scale::Large => ClusterSpec::new(10_000, 1_000),
        }
    }

    /// The policies the iptables and nftables rule sets model at this scale.
    pub fn policies(self) -> usize {
        self.cluster().policies
    }

    /// Rules of the iptables rule set (about 10 per policy).
    pub fn rules(self) -> usize {
        self.policies() * iptables::RULES_PER_POLICY
    }

    /// `1k`, `10k`: the pods, as options name a scale.
    pub fn short(self) -> &'static str {
        match self {
            Scale::Small => "1k",
            Scale::Large => "10k",
        }
    }
}

/// What enforces policy during a measurement (one at a time, never two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Config {
    /// No classifier, no netfilter rule anywhere in the lab: the baseline.
    Nothing,
    /// podwall's classifiers on every pod veth and node exit, tables compiled
    /// from the synthetic cluster of this scale plus the bench pods.
    Podwall(Scale),
    /// iptables-nft rules in each node's FORWARD chain: conntrack accept first,
    /// a chain per policy.
    Iptables(Scale),
    /// One nftables table per node: sets of pod addresses and ports per policy,
    /// verdict maps keyed by pod address.
    Nftables(Scale),
}

impl Config {
    /// Every configuration, the baseline first.
    pub fn all() -> Vec<Config> {
        let mut all = vec![Config::Nothing];
        for make in [Config::Podwall, Config::Iptables, Config::Nftables] {
            all.extend(Scale::ALL.map(make));
        }
        all
    }

    /// How the report names it (`podwall 10k x 1k`).
    pub fn label(self) -> String {
        match self {
            Config::Nothing => "nothing attached".to_string(),
            Config::Podwall(scale) => {
                let spec = scale.cluster();
                format!(
                    "podwall {} x {}",
                    thousands(spec.pods),
                    thousands(spec.policies)
                )
            }
            Config::Iptables(scale) => format!("iptables-nft {} rules", thousands(scale.rules())),
            Config::Nftables(scale) => {
                format!("nftables {} policies", thousands(scale.policies()))
            }
        }
    }

    /// The option's name (`podwall-10k`, `nothing`).
    pub fn key(self) -> String {
        match self {
            Config::Nothing => "nothing".to_string(),
            Config::Podwall(s) => format!("podwall-{}", s.short()),
            Config::Iptables(s) => format!("iptables-{}", s.short()),
            Config::Nftables(s) => format!("nftables-{}", s.short()),
        }
    }

    /// Parses `key`'s output.
    pub fn parse(text: &str) -> Option<Config> {
        Config::all().into_iter().find(|c| c.key() == text)
    }

    /// Whether it is iptables or nftables.
    pub fn is_firewall(self) -> bool {
        matches!(self, Config::Iptables(_) | Config::Nftables(_))
    }
}

/// `1000` -> `1k`, `10000` -> `10k`, `100` -> `100`.
fn thousands(n: usize) -> String {
    if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// How much to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct E2eOptions {
    /// How long each test runs.
    pub duration: Duration,
    /// Repetitions; every configuration is measured once in each.
    pub repetitions: usize,
    /// The configurations; `Nothing` (the baseline) must be one.
    pub configs: Vec<Config>,
    /// The tests.
    pub tests: Vec<Test>,
    /// The placements (across nodes makes a lab of two nodes).
    pub placements: Vec<Placement>,
    /// The pairs.
    pub pairs: Vec<Pair>,
    /// Pod traffic between nodes in VXLAN instead of routed.
    pub vxlan: bool,
    /// The CPU the client threads are pinned to.
    pub client_cpu: usize,
    /// The CPU the server threads are pinned to.
    pub server_cpu: usize,
}

impl Default for E2eOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(1),
            repetitions: 3,
            configs: Config::all(),
            tests: Test::ALL.to_vec(),
            placements: Placement::ALL.to_vec(),
            pairs: Pair::ALL.to_vec(),
            vxlan: false,
            client_cpu: 0,
            server_cpu: 1,
        }
    }
}

impl E2eOptions {
    /// Fails, naming the option, when these options cannot give a figure.
    pub fn check(&self) -> Result<(), super::BenchError> {
        let bad = |option, message: &str| {
            Err(super::BenchError::Option {
                option,
                message: message.to_string(),
            })
        };
        if self.repetitions == 0 {
            return bad("repetitions", "must be at least 1");
        }
        if self.duration < Duration::from_millis(50) {
            return bad("duration-ms", "must be at least 50 ms");
        }
        if !self.configs.contains(&Config::Nothing) {
            return bad(
                "configs",
                "must include `nothing`: every figure is a ratio to it",
            );
        }
        if self.tests.is_empty() || self.placements.is_empty() || self.pairs.is_empty() {
            return bad("tests/placements/pairs", "give at least one of each");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configuration_parses_back_from_its_key() {
        for config in Config::all() {
            assert_eq!(Config::parse(&config.key()), Some(config), "{config:?}");
        }
        assert_eq!(Config::parse("podwall-5k"), None);
        assert_eq!(Config::all().len(), 7);
    }

    #[test]
    fn labels_name_the_scales_as_the_issue_does() {
        assert_eq!(Config::Podwall(Scale::Large).label(), "podwall 10k x 1k");
        assert_eq!(Config::Podwall(Scale::Small).label(), "podwall 1k x 100");
        assert_eq!(
            Config::Iptables(Scale::Large).label(),
            "iptables-nft 10k rules"
        );
        assert_eq!(
            Config::Nftables(Scale::Small).label(),
            "nftables 100 policies"
        );
    }

    #[test]
    fn options_without_the_baseline_are_refused() {
        let options = E2eOptions {
            configs: vec![Config::Podwall(Scale::Small)],
            ..E2eOptions::default()
        };
        assert!(options.check().is_err());
        assert!(E2eOptions::default().check().is_ok());
    }
}
