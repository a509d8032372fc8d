//! A flow that never got an answer is decided afresh by policy, packet by packet:
//! its conntrack entry was made under a state that may have changed since, and
//! passing on it could let through what both states deny (allowed out by the old,
//! in by the new). An answered flow is re-decided by its next packet after the
//! change, and revoked when the new state denies it; with
//! `CONFIG_FLAG_KEEP_ESTABLISHED` it keeps passing.

use policy_agent::{
    dataplane::{
        Hook::{self, PodEgress as Out, PodIngress as In},
        LoadOptions,
    },
    policy::tables::{DatapathTables, Direction},
};
use policy_common::config::{Config, CONFIG_FLAG_KEEP_ESTABLISHED};

use super::{
    frames::UDP,
    net::Net,
    pods::{expect, quiet_net, udp, FAMILIES, PODS},
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

/// Steps in order: (allowing tables?, hook, frame, passes, the counter that moves).
type Step<'a> = (bool, Hook, &'a [u8], bool, &'static str);

/// Runs `steps` on a quiet server and client loaded with `config`, in both families;
/// `last` is the answered flow's verdict once the policy stops allowing it.
fn run(config: Config, last: (bool, &'static str)) {
    let options = LoadOptions {
        config,
        ..LoadOptions::default()
    };
    let mut net = quiet_net(&PODS[..2], &options);
    for (client, server) in FAMILIES {
        let first = udp(client, server, 40000, 53);
        let second = udp(client, server, 40001, 53);
        let answer = udp(server, client, 53, 40001);
        let steps: [Step; 6] = [
            // Two flows out, allowed; only the second gets an answer.
            (true, Out, &first, true, "allow_policy"),
            (true, Out, &second, true, "allow_policy"),
            (true, In, &answer, true, "allow_tracked"),
            // Unanswered, the first is decided by policy again while nothing changed.
            (true, Out, &first, true, "allow_policy"),
            // The policy stops allowing: the unanswered flow is dropped by policy,
            // the answered one as its re-decision says.
            (false, Out, &first, false, "drop_policy"),
            (false, Out, &second, last.0, last.1),
        ];
        for (allowing, hook, frame, passed, counter) in steps {
            net.apply(&client_egress(&net, allowing));
            expect(&mut net, hook, "client", 0, frame, passed, counter);
        }
    }
}

#[test]
fn an_unanswered_flow_is_decided_afresh_after_a_policy_change_and_an_answered_one_is_revoked() {
    run(Config::DEFAULT, (false, "drop_revoked"));
}

#[test]
fn with_keep_established_flows_an_answered_flow_keeps_passing_after_the_change() {
    let keep = Config {
        flags: CONFIG_FLAG_KEEP_ESTABLISHED,
        ..Config::DEFAULT
    };
    run(keep, (true, "allow_tracked"));
}
