//! The e2e bench's run: one lab (two nodes when across nodes is measured),
//! servers in the server pods, podwall loaded at each scale; then, repetition by
//! repetition, every configuration in round-robin order is switched on, checked
//! (the intruder is dropped by an enforcer, reaches the servers with nothing
//! attached, and nothing else is active), measured on every case, and switched
//! off. On error or Ctrl-C everything goes with the lab's namespaces: the rules
//! live in them, and the datapaths are unpinned (their links close with them).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use super::{
    firewall::{self, RuleInput},
    iptables,
    load::{self, Servers},
    nftables,
    podwall::{self, Podwall},
    scenario,
    stats::{round_robin, Case, Samples},
    Config, E2eOptions, E2eReport, Placement, Scale,
};
use crate::{
    bench::{
        runner::{cpu_times, kernel_release, steal_since},
        BenchError,
    },
    lab::{
        netns,
        probe::{self, Connect, Family},
        topology::{Layout, Overlay, TopologyKind},
        LabNetwork,
    },
    model::Protocol,
    policy::probes,
};

/// How long the intruder's probe waits for an answer.
const PROBE_WAIT: Duration = Duration::from_millis(300);

/// Runs the bench; `progress` gets a line per step and per measurement.
pub fn run(options: &E2eOptions, progress: &mut dyn FnMut(&str)) -> Result<E2eReport, BenchError> {
    options.check()?;
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot {
            bench: "e2e",
            what: "builds a lab of network namespaces and loads BPF programs and netfilter rules in it",
        });
    }
    let nodes = if options.placements.contains(&Placement::AcrossNodes) {
        2
    } else {
        1
    };
    let layout = Layout {
        kind: TopologyKind::Routed,
        nodes,
        overlay: if options.vxlan {
            Overlay::Vxlan
        } else {
            Overlay::None
        },
    };
    let lab_state = scenario::lab_state(nodes);
    progress(&format!("building a lab of {nodes} node(s)"));
    let network = LabNetwork::up_layout(&lab_state, &[], &[], layout)?;
    let namespaces = network.namespaces();
    let bench = probes::with_addresses(lab_state, &network.pod_ips());
    for client in scenario::clients() {
        let ns = network.pod_netns(&client)?;
        // TCP_CRR closes tens of thousands of connections: reuse ports in
        // TIME_WAIT and use a wide range, inside the client pods only.
        netns::sysctl(ns, "net/ipv4/tcp_tw_reuse", "1")?;
        netns::sysctl(ns, "net/ipv4/ip_local_port_range", "10000 65000")?;
    }
    let server_pods = scenario::servers(nodes)
        .iter()
        .map(|pod| Ok((network.pod_netns(pod)?.to_string(), pod.to_string())))
        .collect::<Result<Vec<_>, BenchError>>()?;
    let _servers =
        Servers::start(&server_pods, options.server_cpu).map_err(|source| BenchError::Load {
            config: "starting the servers".to_string(),
            source,
        })?;
    let object = crate::dataplane::object::find()?;
    let mut walls = BTreeMap::new();
    let mut rules = BTreeMap::new();
    for &config in &options.configs {
        match config {
            Config::Nothing => {}
            Config::Podwall(scale) => {
                progress(&format!("loading {} on every node", config.label()));
                walls.insert(scale, Podwall::load(&object, &network, &bench, scale)?);
            }
            Config::Iptables(scale) => {
                rules.insert(
                    config,
                    iptables::ruleset(&RuleInput::of(scale, &bench, nodes)),
                );
            }
            Config::Nftables(scale) => {
                rules.insert(
                    config,
                    nftables::ruleset(&RuleInput::of(scale, &bench, nodes)),
                );
            }
        }
    }
    let cases = cases(options);
    let mut lab = Bench {
        network: &network,
        nodes,
        walls,
        rules,
    };
    let cpu_before = cpu_times();
    let mut samples = Samples::default();
    for repetition in 0..options.repetitions {
        for config in round_robin(&options.configs, repetition) {
            progress(&format!(
                "repetition {}/{}: {}",
                repetition + 1,
                options.repetitions,
                config.label()
            ));
            lab.switch(config, true)?;
            let before = lab.podwall_stats(config)?;
            let dropped = lab.check(config)?;
            for &case in &cases {
                let rate = lab.measure(config, case, options)?;
                progress(&format!(
                    "  {} {}, {}: {rate:.0}/s",
                    case.test,
                    case.placement.label(),
                    case.pair.label()
                ));
                samples.push(config, case, rate);
            }
            if let (Some(before), Some(after)) = (before, lab.podwall_stats(config)?) {
                podwall::check_counters(&before, &after, dropped).map_err(|message| {
                    BenchError::Enforcement {
                        config: config.label(),
                        message,
                    }
                })?;
            }
            lab.switch(config, false)?;
        }
    }
    Ok(E2eReport {
        kernel: kernel_release(),
        release: !cfg!(debug_assertions),
        duration_ms: options.duration.as_millis(),
        repetitions: options.repetitions,
        nodes,
        vxlan: options.vxlan,
        cpus: (options.client_cpu, options.server_cpu),
        steal_percent: steal_since(cpu_before),
        samples,
        namespaces,
    })
}

/// Every case the options ask for, in report order.
fn cases(options: &E2eOptions) -> Vec<Case> {
    let mut cases = Vec::new();
    for &placement in &options.placements {
        for &pair in &options.pairs {
            for &test in &options.tests {
                cases.push(Case {
                    placement,
                    pair,
                    test,
                });
            }
        }
    }
    cases
}

/// The lab and the enforcers ready to switch on.
struct Bench<'a> {
    network: &'a LabNetwork,
    nodes: usize,
    walls: BTreeMap<Scale, Podwall>,
    rules: BTreeMap<Config, String>,
}

impl Bench<'_> {
    /// Switches `config` on (`on`) or off in every node.
    fn switch(&mut self, config: Config, on: bool) -> Result<(), BenchError> {
        let node_namespaces: Vec<&str> = self
            .network
            .nodes()
            .iter()
            .map(|n| n.netns.as_str())
            .collect();
        match config {
            Config::Nothing => {}
            Config::Podwall(scale) => {
                if let Some(wall) = self.walls.get_mut(&scale) {
                    if on {
                        wall.sweep()?;
                        wall.attach(&self.network.exits())?;
                    } else {
                        wall.detach()?;
                    }
                }
            }
            Config::Iptables(_) | Config::Nftables(_) => {
                let text = self.rules.get(&config).map_or("", String::as_str);
                for ns in node_namespaces {
                    match (config, on) {
                        (Config::Iptables(_), true) => {
                            firewall::run_in(ns, "iptables-nft-restore", &[], text)?
                        }
                        (Config::Iptables(_), false) => {
                            firewall::run_in(ns, "nft", &["delete", "table", "ip", "filter"], "")?
                        }
                        (_, true) => firewall::run_in(ns, "nft", &["-f", "-"], text)?,
                        (_, false) => firewall::run_in(
                            ns,
                            "nft",
                            &["delete", "table", "inet", nftables::TABLE],
                            "",
                        )?,
                    }
                }
            }
        }
        Ok(())
    }

    /// podwall's counters on every node when `config` is podwall.
    fn podwall_stats(
        &self,
        config: Config,
    ) -> Result<Option<Vec<crate::dataplane::Stats>>, BenchError> {
        match config {
            Config::Podwall(scale) => self.walls.get(&scale).map(Podwall::stats).transpose(),
            _ => Ok(None),
        }
    }

    /// Checks that `config` alone is in place and does what it is for: with
    /// nothing attached no rule and no classifier is anywhere and the intruder
    /// reaches every isolated server; under an enforcer it reaches none. Returns
    /// how many probes should have been dropped.
    fn check(&self, config: Config) -> Result<u64, BenchError> {
        let fail = |message: String| BenchError::Enforcement {
            config: config.label(),
            message,
        };
        for node in self.network.nodes() {
            let tables = firewall::tables(&node.netns)?;
            let expected = match config {
                Config::Iptables(_) => vec!["table ip filter".to_string()],
                Config::Nftables(_) => vec![format!("table inet {}", nftables::TABLE)],
                _ => Vec::new(),
            };
            if tables != expected {
                return Err(fail(format!(
                    "{} has netfilter tables {tables:?}, expected {expected:?}",
                    node.name
                )));
            }
        }
        let attached: Vec<Scale> = self
            .walls
            .iter()
            .filter(|(_, wall)| wall.attached())
            .map(|(scale, _)| *scale)
            .collect();
        let expected: Vec<Scale> = match config {
            Config::Podwall(scale) => vec![scale],
            _ => Vec::new(),
        };
        if attached != expected {
            return Err(fail(format!(
                "podwall is attached at {attached:?}, expected {expected:?}"
            )));
        }
        let intruder = scenario::intruder();
        let from = self.network.pod_netns(&intruder)?;
        let servers = scenario::isolated_servers(self.nodes);
        let connects = servers
            .iter()
            .map(|server| {
                let address = self.network.pod_address(server, Family::Ipv4)?;
                Ok(Connect {
                    netns: from,
                    who: intruder.to_string(),
                    source: None,
                    target: SocketAddr::new(address, scenario::ECHO_PORT),
                    protocol: Protocol::Tcp,
                })
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        let reached = probe::connect_all(&connects, PROBE_WAIT)?;
        for (server, reached) in servers.iter().zip(reached) {
            match (config, reached) {
                (Config::Nothing, false) => return Err(fail(format!(
                    "the intruder cannot reach {server} with nothing attached: the lab carries no traffic, so no enforcer's drop would prove anything"
                ))),
                (Config::Nothing, true) | (_, false) => {}
                (_, true) => return Err(fail(format!(
                    "the intruder reached {server}, which policy isolates: this configuration does not enforce"
                ))),
            }
        }
        Ok(if config == Config::Nothing {
            0
        } else {
            servers.len() as u64
        })
    }

    /// One test of `case` under `config`: the rate.
    fn measure(&self, config: Config, case: Case, options: &E2eOptions) -> Result<f64, BenchError> {
        let (client, server) = scenario::pair(case.placement, case.pair);
        let netns = self.network.pod_netns(&client)?;
        let address = self.network.pod_address(&server, Family::Ipv4)?;
        load::measure(
            netns,
            &client.to_string(),
            case.test,
            address,
            options.duration,
            options.client_cpu,
        )
        .map_err(|source| BenchError::Load {
            config: config.label(),
            source,
        })
    }
}
