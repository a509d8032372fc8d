//! Tests of the parent module.

#![expect(clippy::unwrap_used, reason = "tests parse address literals")]

use super::*;
use crate::model::{
    builders::{cluster, pod},
    Protocol::{Sctp, Tcp, Udp},
};

/// x/a declares 80/TCP twice and 53/UDP; x/b declares 9/SCTP only; x/c nothing.
fn state() -> ClusterState {
    cluster()
        .pod(
            pod("x", "a")
                .port(80, Tcp)
                .named_port("http", 80, Tcp)
                .port(53, Udp)
                .build(),
        )
        .pod(pod("x", "b").port(9, Sctp).build())
        .pod(pod("x", "c").build())
        .build()
}

fn pods() -> Vec<ObjectRef> {
    ["a", "b", "c"]
        .iter()
        .map(|name| ObjectRef::new("x", *name))
        .collect()
}

/// `from -> to port/PROTO` for each probe, in order.
fn lines(probes: &[Probe]) -> Vec<String> {
    probes
        .iter()
        .map(|p| format!("{} -> {} {}/{}", p.from, p.to, p.port, p.protocol))
        .collect()
}

#[test]
fn every_pod_probes_every_other_pod_on_its_declared_tcp_and_udp_ports() {
    let probes = plan(&state(), &pods(), &[], &[]);
    assert_eq!(
        lines(&probes),
        vec![
            "x/b -> x/a 53/UDP",
            "x/b -> x/a 80/TCP",
            "x/c -> x/a 53/UDP",
            "x/c -> x/a 80/TCP",
        ],
        "SCTP is left out as the lab leaves it out; a pod without ports gets no probe"
    );
}

#[test]
fn given_ports_replace_the_declared_ones_on_every_pair() {
    let probes = plan(&state(), &pods(), &[(443, Tcp), (443, Tcp), (53, Udp)], &[]);
    assert_eq!(probes.len(), 3 * 2 * 2, "6 ordered pairs, 2 distinct ports");
    assert!(lines(&probes).contains(&"x/a -> x/c 443/TCP".to_string()));
}

#[test]
fn peers_are_probed_both_ways_on_every_declared_port_but_never_peer_to_peer() {
    let peers = ["203.0.113.7".parse().unwrap(), "fd00::7".parse().unwrap()];
    let probes = plan(&state(), &pods()[..2], &[], &peers);
    let lines = lines(&probes);
    for expected in [
        "x/a -> 203.0.113.7 53/UDP",
        "x/a -> 203.0.113.7 80/TCP",
        "x/b -> fd00::7 80/TCP",
        "203.0.113.7 -> x/a 80/TCP",
        "fd00::7 -> x/a 53/UDP",
    ] {
        assert!(
            lines.contains(&expected.to_string()),
            "{expected}: {lines:?}"
        );
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("203.0.113.7 -> fd00::7")),
        "{lines:?}"
    );
    // a<->b: 2; each pod to each peer: 2 ports x 2 pods x 2 peers = 8; peers to a: 2 x 2.
    assert_eq!(probes.len(), 2 + 8 + 4, "{lines:?}");
}

#[test]
fn with_addresses_replaces_only_the_pods_it_names() {
    let mut state = state();
    if let Some(c) = state.pods.get_mut(&ObjectRef::new("x", "c")) {
        c.ips = vec!["10.9.9.9".parse().unwrap()];
    }
    let lab_ip: IpAddr = "10.244.0.2".parse().unwrap();
    let addresses = BTreeMap::from([(ObjectRef::new("x", "a"), vec![lab_ip])]);
    let state = with_addresses(state, &addresses);
    assert_eq!(state.pods[&ObjectRef::new("x", "a")].ips, vec![lab_ip]);
    assert_eq!(
        state.pods[&ObjectRef::new("x", "c")].ips,
        vec!["10.9.9.9".parse::<IpAddr>().unwrap()]
    );
}
