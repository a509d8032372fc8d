//! A flow that never got an answer is decided afresh by policy, packet by packet:
//! its conntrack entry was made under a state that may have changed since, and
//! passing on it could let through what both states deny (allowed out by the old,
//! in by the new). An answered flow keeps passing across the change.

use policy_agent::{
    dataplane::Hook::{PodEgress as Out, PodIngress as In},
    policy::tables::{DatapathTables, Direction},
};

use super::{
    frames::UDP,
    net::{moved, Net},
    pods::{server_and_client, udp, FAMILIES},
    tables::Tables,
};

/// The client isolated for egress by policy 0; with `allow`, its rule 0 admits the
/// server (class 5) on UDP 53.
fn client_egress(net: &Net, allow: bool) -> DatapathTables {
    let tables = Tables::new(net)
        .isolate("client", false, true)
        .isolated_by("client", &[], &[0])
        .pod_class("server", 5);
    if allow {
        tables
            .allow_port("client", Direction::Egress, 5, UDP, 53)
            .build()
    } else {
        tables.build()
    }
}

/// Runs `frame` through the client's `hook`; checks the verdict and the one
/// counter that moved.
fn expect(
    net: &mut Net,
    hook: policy_agent::dataplane::Hook,
    frame: &[u8],
    passed: bool,
    counter: &str,
) {
    let before = net.stats();
    let out = net.run(hook, "client", 0, frame);
    let after = net.stats();
    assert_eq!(out.passed, passed, "{hook:?}: {counter}");
    assert_eq!(moved(&before, &after), vec![(counter, 1)], "{hook:?}");
}

#[test]
fn an_unanswered_flow_is_decided_afresh_after_a_policy_change_and_an_answered_one_keeps_passing() {
    let mut net = server_and_client();
    net.apply(&client_egress(&net, true));
    for (client, server) in FAMILIES {
        // Two flows out, allowed; only the second gets an answer.
        expect(
            &mut net,
            Out,
            &udp(client, server, 40000, 53),
            true,
            "allow_policy",
        );
        expect(
            &mut net,
            Out,
            &udp(client, server, 40001, 53),
            true,
            "allow_policy",
        );
        expect(
            &mut net,
            In,
            &udp(server, client, 53, 40001),
            true,
            "allow_tracked",
        );
        // Unanswered, the first is decided by policy again while nothing changed.
        expect(
            &mut net,
            Out,
            &udp(client, server, 40000, 53),
            true,
            "allow_policy",
        );
    }
    net.apply(&client_egress(&net, false));
    for (client, server) in FAMILIES {
        expect(
            &mut net,
            Out,
            &udp(client, server, 40000, 53),
            false,
            "drop_policy",
        );
        expect(
            &mut net,
            Out,
            &udp(client, server, 40001, 53),
            true,
            "allow_tracked",
        );
    }
}
