//! ClusterNetworkPolicy `Deny` rules count in their own `RULE_COUNTERS` slot,
//! not in the endpoint's deny slot: a denied packet, every packet of a flow an
//! audit-mode rule would deny (replies included), and every packet of a flow such
//! a rule revoked after it had been allowed. `Datapath::policy_counters` names
//! each by policy, rule name and verdict. Frames go through `BPF_PROG_TEST_RUN`;
//! the tables come from the compiler.

use policy_agent::{
    dataplane::{Hook, LoadOptions, PolicyCounters, Traffic},
    model::{
        builders::{cluster_rule, cnp, netpol, pod, rule, selector},
        ClusterState, ObjectRef, Protocol, RuleAction, SelectorOperator, Tier,
    },
    policy::{
        compiler::compile,
        tables::{DatapathTables, Direction, RuleVerdict},
    },
};

use policy_common::config::{Config, CONFIG_FLAG_KEEP_ESTABLISHED};

use super::{
    net::Net,
    pods::{self, ack, syn, traffic, CLIENT_V4, OTHER_V4, PODS, SERVER_V4},
};

/// The three pods and NetworkPolicy `x/web`, which admits `role=client` and
/// `role=other` pods to the server on TCP 80; with `guardrails`, an enforced
/// Admin policy whose ingress rule `client-denied` denies `role=client` pods TCP
/// 80 on the server, and an audit-mode one whose rule `other-watched` would deny
/// `role=other` pods.
fn state(guardrails: bool) -> ClusterState {
    state_with(guardrails, false)
}

/// `state`, with the server's egress isolated too (no egress rule) when
/// `egress_isolated`.
fn state_with(guardrails: bool, egress_isolated: bool) -> ClusterState {
    let web = netpol("x", "web").select(selector().label("app", "web").build());
    let web = if egress_isolated {
        web.types(true, true)
    } else {
        web
    };
    let mut state = pods::labelled("other").policy(
        web.ingress(
            rule()
                .from_pods(
                    selector()
                        .expr("role", SelectorOperator::In, ["client", "other"])
                        .build(),
                )
                .port(80, Protocol::Tcp)
                .build(),
        )
        .build(),
    );
    if guardrails {
        let server = selector().label("app", "web").build();
        let from = |role: &str| selector().label("role", role).build();
        state = state
            .cluster_policy(
                cnp("guardrails", Tier::Admin, 10)
                    .subject_pods(selector().build(), server.clone())
                    .ingress(
                        cluster_rule(RuleAction::Deny)
                            .name("client-denied")
                            .pods(selector().build(), from("client"))
                            .port(80, Protocol::Tcp)
                            .build(),
                    )
                    .build(),
            )
            .cluster_policy(
                cnp("watch", Tier::Admin, 20)
                    .subject_pods(selector().build(), server)
                    .ingress(
                        cluster_rule(RuleAction::Deny)
                            .name("other-watched")
                            .pods(selector().build(), from("other"))
                            .build(),
                    )
                    .audit()
                    .build(),
            );
    }
    state.build()
}

fn tables(net: &Net, guardrails: bool) -> DatapathTables {
    compile_state(net, &state(guardrails))
}

fn compile_state(net: &Net, state: &ClusterState) -> DatapathTables {
    let local = |p: &policy_agent::model::Pod| net.pods.iter().any(|n| n.key == p.key);
    compile(state, &[], local)
}

/// What the ingress rule 0 of cluster policy `policy` counted, and as what.
fn counted(counters: &PolicyCounters, policy: &str) -> (String, RuleVerdict, Traffic) {
    let policy = ObjectRef::cluster(policy);
    let found = counters
        .rules
        .iter()
        .find(|r| r.policy == policy && r.direction == Direction::Ingress && r.rule_index == 0)
        .unwrap_or_else(|| panic!("no counter for {policy}: {counters:#?}"));
    (found.rule.clone(), found.verdict, found.traffic)
}

#[test]
fn a_deny_rule_counts_its_drops_and_revocations_and_an_audited_one_its_whole_flows() {
    let mut net = pods::three_pods();
    let open = tables(&net, false);
    net.apply(&open);
    // A flow the guardrails will revoke, opened while nothing isolates the server.
    let revoked = ack(CLIENT_V4, SERVER_V4, 45100, 80);
    let opening = syn(CLIENT_V4, SERVER_V4, 45100, 80);
    assert!(net.run(Hook::PodIngress, "server", 0, &opening).passed);
    assert!(net.run(Hook::PodIngress, "server", 0, &revoked).passed);

    let guarded = tables(&net, true);
    net.apply(&guarded);
    let denied = syn(CLIENT_V4, SERVER_V4, 45101, 80);
    let mut dropped = Vec::new();
    // The revoked flow's next packet is re-decided and revoked; the one after
    // finds it revoked; a new flow is denied outright.
    for frame in [&revoked, &revoked, &denied] {
        assert!(!net.run(Hook::PodIngress, "server", 0, frame).passed);
        dropped.push(frame.clone());
    }
    // The audited rule's flow passes, every packet of it a would-drop.
    let watched = [
        (Hook::PodIngress, syn(OTHER_V4, SERVER_V4, 45102, 80)),
        (Hook::PodIngress, ack(OTHER_V4, SERVER_V4, 45102, 80)),
        (Hook::PodEgress, ack(SERVER_V4, OTHER_V4, 80, 45102)),
    ];
    for (hook, frame) in &watched {
        assert!(net.run(*hook, "server", 0, frame).passed, "{hook:?}");
    }

    let counters = net.policy_counters(&guarded);
    assert_eq!(
        counted(&counters, "guardrails"),
        (
            "client-denied".to_string(),
            RuleVerdict::Dropped,
            traffic(&dropped)
        )
    );
    let frames: Vec<&Vec<u8>> = watched.iter().map(|(_, frame)| frame).collect();
    assert_eq!(
        counted(&counters, "watch"),
        (
            "other-watched".to_string(),
            RuleVerdict::WouldDrop,
            traffic(&frames)
        )
    );
    // Nothing counted in the server's deny slots, which `x/web` names: the
    // cluster policies' rules decided all of it.
    let web = ObjectRef::new("x", "web");
    let under_web: Vec<_> = counters
        .denied
        .iter()
        .filter(|d| d.policies.contains(&web))
        .collect();
    assert!(!under_web.is_empty(), "{counters:#?}");
    for drops in under_web {
        assert_eq!(drops.denied, Traffic::default(), "{counters:#?}");
        assert_eq!(drops.would_drop, Traffic::default(), "{counters:#?}");
    }
}

/// With established flows kept across changes, a flow an audit-mode rule would
/// deny is still re-decided after any change (here a pod elsewhere appearing):
/// its reply, the first packet after the change, finds the flow a would-drop
/// again, not a new flow the server's isolated egress drops. (An audit entry
/// kept as it was would no longer stand once the state moved.)
#[test]
fn with_kept_flows_an_audited_rule_flow_is_re_decided_after_a_change_and_its_replies_pass() {
    let options = LoadOptions {
        config: Config {
            flags: CONFIG_FLAG_KEEP_ESTABLISHED,
            ..Config::DEFAULT
        },
        ..LoadOptions::default()
    };
    let mut net = pods::quiet_net(&PODS, &options);
    let before = compile_state(&net, &state_with(true, true));
    net.apply(&before);
    let opening = syn(OTHER_V4, SERVER_V4, 45200, 80);
    let reply = ack(SERVER_V4, OTHER_V4, 80, 45200);
    assert!(net.run(Hook::PodIngress, "server", 0, &opening).passed);
    assert!(net.run(Hook::PodEgress, "server", 0, &reply).passed);

    let elsewhere = pod("x", "elsewhere")
        .labels([("role", "nobody")])
        .ip("10.9.0.9")
        .node("other-node")
        .build();
    let mut moved = state_with(true, true);
    moved.pods.insert(elsewhere.key.clone(), elsewhere);
    let after = compile_state(&net, &moved);
    assert_ne!(after, before, "the change must write something");
    net.apply(&after);
    assert!(
        net.run(Hook::PodEgress, "server", 0, &reply).passed,
        "the reply of a would-drop flow after a change"
    );
    let counters = net.policy_counters(&after);
    let (_, verdict, traffic) = counted(&counters, "watch");
    assert_eq!(verdict, RuleVerdict::WouldDrop);
    assert_eq!(traffic.packets, 3, "{counters:#?}");
}
