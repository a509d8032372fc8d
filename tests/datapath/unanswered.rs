//! A flow that never got an answer is decided afresh by policy, packet by packet:
//! its conntrack entry was made under a state that may have changed since, and
//! passing on it could let through what both states deny (allowed out by the old,
//! in by the new). An answered flow keeps passing across the change.

use policy_agent::{
    dataplane::Hook::{self, PodEgress as Out, PodIngress as In},
    policy::tables::{DatapathTables, Direction},
};

use super::{
    frames::UDP,
    net::Net,
    pods::{expect, server_and_client, udp, FAMILIES},
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

#[test]
fn an_unanswered_flow_is_decided_afresh_after_a_policy_change_and_an_answered_one_keeps_passing() {
    let mut net = server_and_client();
    for (client, server) in FAMILIES {
        let first = udp(client, server, 40000, 53);
        let second = udp(client, server, 40001, 53);
        let answer = udp(server, client, 53, 40001);
        // (allowing tables?, hook, frame, passes, the counter that moves)
        let steps: [(bool, Hook, &[u8], bool, &str); 6] = [
            // Two flows out, allowed; only the second gets an answer.
            (true, Out, &first, true, "allow_policy"),
            (true, Out, &second, true, "allow_policy"),
            (true, In, &answer, true, "allow_tracked"),
            // Unanswered, the first is decided by policy again while nothing changed.
            (true, Out, &first, true, "allow_policy"),
            // The policy stops allowing: the unanswered flow is dropped, the
            // answered one keeps passing.
            (false, Out, &first, false, "drop_policy"),
            (false, Out, &second, true, "allow_tracked"),
        ];
        for (allowing, hook, frame, passed, counter) in steps {
            net.apply(&client_egress(&net, allowing));
            expect(&mut net, hook, "client", 0, frame, passed, counter);
        }
    }
}
