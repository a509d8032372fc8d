//! The datapath benchmark's pieces on the real kernel (`cargo xtask bench datapath`
//! itself is not a test): one bench run repeats the classifier, changes the maps as
//! that many packets would and returns the kernel's nonzero average; a tiny
//! benchmark measures every path in both families and checks each took its path.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use policy_agent::{
    bench::{
        self,
        frames::{self, SYN},
        tables::{self, TableSpec, ALLOWED_PORT, SERVER_V4},
        Family, Options, Path,
    },
    dataplane::{self, BenchProgram, Datapath, Hook, LoadOptions},
};

use super::support;

/// The loopback device, where test runs put their skb in any namespace.
const LOOPBACK: u32 = 1;

#[test]
fn a_bench_run_repeats_the_classifier_and_returns_the_kernels_average_duration() {
    support::require_root_and_bpf();
    let object = dataplane::object::find().unwrap_or_else(|e| panic!("object: {e}"));
    let options = LoadOptions {
        bench_floor: true,
        ..LoadOptions::default()
    };
    let mut datapath =
        Datapath::load_with(&object, &options).unwrap_or_else(|e| panic!("load: {e}"));
    let built = tables::build(&TableSpec {
        pod_peers: 10,
        cidr_prefixes: 0,
        isolated: true,
    });
    let interfaces = BTreeMap::from([(tables::server(), LOOPBACK)]);
    datapath
        .apply(&built.tables, &interfaces, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let peer = IpAddr::V4(built.pod_peer.0);
    let Some(syn) = frames::tcp(peer, IpAddr::V4(SERVER_V4), 40000, ALLOWED_PORT, SYN) else {
        panic!("frame");
    };
    let mut run = |program| {
        datapath
            .bench_run(program, LOOPBACK, &syn, 1000)
            .unwrap_or_else(|e| panic!("bench run: {e}"))
    };
    let floor = run(BenchProgram::Floor);
    let allowed = run(BenchProgram::Hook(Hook::PodIngress));
    assert!(floor.passed && allowed.passed);
    assert!(floor.per_run > Duration::ZERO, "{floor:?}");
    assert!(allowed.per_run > floor.per_run, "{allowed:?} vs {floor:?}");
    let stats = datapath.stats().unwrap_or_else(|e| panic!("stats: {e}"));
    assert_eq!(
        stats.get("allow_policy"),
        1000,
        "every repeat is a new flow"
    );
    assert_eq!(stats.get("allow_tracked"), 0, "a SYN never hits conntrack");
}

#[test]
fn a_small_benchmark_measures_every_path_in_both_families() {
    support::require_root_and_bpf();
    let options = Options {
        runs: 1,
        repeat: 100,
        flat_series: vec![10, 1000],
        cidr_prefixes: 100,
        cpu: None,
    };
    let report =
        bench::datapath(&options, &mut |_| {}).unwrap_or_else(|e| panic!("benchmark: {e}"));
    for path in Path::ALL {
        for family in [Family::Ipv4, Family::Ipv6] {
            let m = report
                .main(path, family)
                .unwrap_or_else(|| panic!("{path:?} {family} measured"));
            assert!(m.median() > 0.0, "{path:?} {family}: {m:?}");
        }
    }
    for family in [Family::Ipv4, Family::Ipv6] {
        assert!(report.flat(1000, family).is_some(), "1000 peers {family}");
        assert!(report.flatness(family).is_some());
    }
}
