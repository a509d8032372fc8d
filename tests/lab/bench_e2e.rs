//! The end-to-end benchmark's machinery on the real kernel (`cargo xtask bench
//! e2e` itself is not a test): a very short run of every kind of enforcer at the
//! small scale, same node and across nodes, makes traffic under each (a zero
//! rate fails the run), passes each configuration's enforcement check (the
//! intruder dropped under every enforcer, reaching the server with nothing
//! attached), and leaves no namespace and no rule behind. No figure is judged.

use std::time::Duration;

use policy_agent::{
    bench::e2e::{self, stats::Case, Config, E2eOptions, Pair, Placement, Scale, Test},
    lab::netns,
};

use super::support;

#[test]
fn a_short_e2e_run_measures_traffic_under_every_enforcer_and_cleans_up() {
    support::require_root_and_bpf();
    let options = E2eOptions {
        duration: Duration::from_millis(100),
        repetitions: 1,
        configs: vec![
            Config::Nothing,
            Config::Podwall(Scale::Small),
            Config::Iptables(Scale::Small),
            Config::Nftables(Scale::Small),
        ],
        tests: vec![Test::TcpRr, Test::TcpCrr, Test::UdpRr],
        placements: Placement::ALL.to_vec(),
        pairs: vec![Pair::Isolated],
        ..E2eOptions::default()
    };
    let report = e2e::run(&options, &mut |line| eprintln!("{line}"))
        .unwrap_or_else(|e| panic!("e2e run: {}", policy_agent::causes::causes(&e)));
    for &config in &options.configs {
        for placement in Placement::ALL {
            for &test in &options.tests {
                let case = Case {
                    placement,
                    pair: Pair::Isolated,
                    test,
                };
                let rates = report.samples.rates(config, case);
                assert!(
                    rates.len() == 1 && rates[0] > 0.0,
                    "{config:?} {case:?}: {rates:?}"
                );
            }
        }
    }
    let figures = report.figures();
    let rr = figures
        .figures
        .iter()
        .find(|f| {
            f.name == "TCP_RR, across nodes, isolated pods, podwall 1k x 100 / nothing attached"
        })
        .unwrap_or_else(|| panic!("no podwall TCP_RR figure in {figures:#?}"));
    assert_eq!(rr.target.as_deref(), Some(">= 0.97"));
    // Its own namespaces only: other tests of this process run labs meanwhile.
    assert!(!report.namespaces.is_empty());
    let left: Vec<String> = netns::lab_namespaces()
        .into_iter()
        .filter(|n| report.namespaces.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
