//! Audit mode in the classifiers (`AUDIT_INGRESS`/`AUDIT_EGRESS`), on
//! `BPF_PROG_TEST_RUN` frames: a packet the isolating policies would drop passes as
//! `would_drop_policy`, is reported as a would-drop and counted in the audit deny slot;
//! its flow is tracked as an audit flow whose later packets and replies pass and
//! count as would-drops, until the direction enforces: then the flow's next packet
//! re-decides it, and a flow the enforcing policy denies is revoked, both ways. The
//! same holds for a Service egress decided at the backend.

use policy_agent::{
    dataplane::{
        EventVerdict,
        Hook::{PodEgress as Out, PodIngress as In},
        TrackedFlow, Traffic,
    },
    policy::tables::{DatapathTables, Direction},
};
use policy_common::{
    counters::drop_slot,
    verdict::{DIRECTION_EGRESS, DIRECTION_INGRESS, MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED},
};

use super::{
    addr,
    net::Net,
    pods::{
        ack, client_egress_through_services, decision, expect, server_admits_port_80,
        server_and_client, syn, traffic, CLIENT_ID, CLUSTER_IPS, FAMILIES, SERVER_ID,
    },
};

/// `tables` with pod `pod`'s isolation in `direction` audit only (or enforcing).
fn audit(
    net: &Net,
    mut tables: DatapathTables,
    pod: &str,
    direction: Direction,
    on: bool,
) -> DatapathTables {
    let entry = tables
        .endpoints
        .get_mut(&net.pod(pod).key)
        .unwrap_or_else(|| panic!("no endpoint {pod}"));
    match direction {
        Direction::Ingress => entry.audit_ingress = on,
        Direction::Egress => entry.audit_egress = on,
    }
    tables
}

/// The tracked flow at `ifindex` from `source` port `sport`.
fn flow_from(net: &mut Net, ifindex: u32, source: &str, sport: u16) -> TrackedFlow {
    find_flow(net, ifindex, |f| f.source == (addr(source), sport))
}

/// The tracked flow at `ifindex` to `destination` port `dport`.
fn flow_to(net: &mut Net, ifindex: u32, destination: &str, dport: u16) -> TrackedFlow {
    find_flow(net, ifindex, |f| {
        f.destination == (addr(destination), dport)
    })
}

fn find_flow(net: &mut Net, ifindex: u32, wanted: impl Fn(&TrackedFlow) -> bool) -> TrackedFlow {
    let flows = net.conntrack();
    flows
        .iter()
        .find(|f| f.ifindex == ifindex && wanted(f))
        .cloned()
        .unwrap_or_else(|| panic!("no such flow at {ifindex}: {flows:#?}"))
}

#[test]
fn a_would_drop_passes_reported_and_its_flow_counts_as_would_drop_until_the_direction_enforces() {
    let mut net = server_and_client();
    // The server is isolated for ingress by policy 0, which admits nobody on 81.
    let base = server_admits_port_80(&net).build();
    let auditing = audit(&net, base.clone(), "server", Direction::Ingress, true);
    net.apply(&auditing);
    let mut reader = net.event_reader();
    let server_if = net.ifindex("server");
    let mut would_drop = Vec::new();
    for (client, server) in FAMILIES {
        let first = syn(client, server, 50000, 81);
        let later = ack(client, server, 50000, 81);
        let answer = ack(server, client, 81, 50000);
        expect(&mut net, In, "server", 0, &first, true, "would_drop_policy");
        expect(&mut net, In, "server", 0, &later, true, "would_drop_policy");
        expect(
            &mut net,
            Out,
            "server",
            0,
            &answer,
            true,
            "would_drop_policy",
        );
        would_drop.extend([first.clone(), later, answer]);
        // Reported once, for the packet that decided the flow.
        let events = reader.drain();
        match events.as_slice() {
            [event] => {
                assert_eq!(
                    decision(event),
                    (
                        server_if,
                        SERVER_ID,
                        Direction::Ingress,
                        EventVerdict::WouldDrop,
                        "would_drop_policy"
                    )
                );
                assert_eq!(
                    (event.source, event.destination),
                    ((addr(client), 50000), (addr(server), 81))
                );
                assert_eq!(
                    (event.rule_slot, event.packet_len as usize),
                    (None, first.len())
                );
            }
            other => panic!("one would-drop event for {client}: {other:#?}"),
        }
        let tracked = flow_from(&mut net, server_if, client, 50000);
        assert!(tracked.audit, "{tracked:?}");
        assert_eq!(
            tracked.counter_slot,
            Some(drop_slot(SERVER_ID, DIRECTION_INGRESS, true))
        );
    }
    let counted = net.policy_counters(&auditing);
    assert_eq!(counted.denied.len(), 1, "{counted:#?}");
    assert_eq!(
        (counted.denied[0].denied, counted.denied[0].would_drop),
        (Traffic::default(), traffic(&would_drop))
    );

    // Enforcing: the audit flows' next packets re-decide them and the enforcing
    // policy denies them: revoked, their packets are dropped either way, counted
    // where the ingress policy denies.
    let enforcing = audit(&net, base, "server", Direction::Ingress, false);
    net.apply(&enforcing);
    let mut dropped = Vec::new();
    for (client, server) in FAMILIES {
        let later = ack(client, server, 50000, 81);
        expect(&mut net, In, "server", 0, &later, false, "drop_revoked");
        let answer = ack(server, client, 81, 50000);
        expect(&mut net, Out, "server", 0, &answer, false, "drop_revoked");
        expect(&mut net, In, "server", 0, &later, false, "drop_revoked");
        dropped.extend([later.clone(), answer, later]);
    }
    let counted = net.policy_counters(&enforcing);
    assert_eq!(
        (counted.denied[0].denied, counted.denied[0].would_drop),
        (traffic(&dropped), traffic(&would_drop))
    );
    let events = reader.drain();
    assert_eq!(events.len(), 6, "{events:#?}");
    assert!(
        events.iter().all(|e| e.verdict == EventVerdict::Dropped),
        "{events:#?}"
    );
}

#[test]
fn a_service_egress_in_audit_mode_passes_at_the_backend_as_the_clients_would_drop() {
    let mut net = server_and_client();
    // The client's egress is isolated (audit only) with a rule for 8080 alone; the
    // server is the backend behind a ClusterIP per family.
    let base = client_egress_through_services(&net);
    let auditing = audit(&net, base.clone(), "client", Direction::Egress, true);
    net.apply(&auditing);
    let mut reader = net.event_reader();
    let client_if = net.ifindex("client");
    let mut would_drop = Vec::new();
    for ((client, backend), vip) in FAMILIES.into_iter().zip(CLUSTER_IPS) {
        let to_vip = syn(client, vip, 51000, 80);
        expect(
            &mut net,
            Out,
            "client",
            0,
            &to_vip,
            true,
            "allow_deferred_egress",
        );
        // At the backend, after DNAT to a port the client's rules do not allow: the
        // packets go on to the backend's own (unisolated, then tracked) ingress.
        let dnat = syn(client, backend, 51000, 9090);
        let later = ack(client, backend, 51000, 9090);
        for (frame, backend_verdict) in [(&dnat, "allow_unisolated"), (&later, "allow_tracked")] {
            let mark = MARK_DEFERRED_EGRESS;
            expect(&mut net, In, "server", mark, frame, true, backend_verdict);
            would_drop.push(frame.clone());
        }
        let answer = ack(backend, client, 9090, 51000);
        let mark = expect(&mut net, Out, "server", 0, &answer, true, "allow_tracked");
        assert_ne!(
            mark & MARK_REPLY_VERIFIED,
            0,
            "an audit flow's reply is verified"
        );
        // Verified, it counts as the client's would-drop like the forward packets.
        would_drop.push(answer.clone());
        let events = reader.drain();
        match events.as_slice() {
            [event] => {
                assert_eq!(
                    decision(event),
                    (
                        client_if,
                        CLIENT_ID,
                        Direction::Egress,
                        EventVerdict::WouldDrop,
                        "would_drop_policy"
                    )
                );
                assert_eq!(event.destination, (addr(backend), 9090));
            }
            other => panic!("one would-drop event for {client}: {other:#?}"),
        }
        // The translated flow, tracked at the client's interface.
        let tracked = flow_to(&mut net, client_if, backend, 9090);
        assert!(tracked.audit, "{tracked:?}");
        assert_eq!(
            tracked.counter_slot,
            Some(drop_slot(CLIENT_ID, DIRECTION_EGRESS, true))
        );
    }
    let counted = net.policy_counters(&auditing);
    assert_eq!(
        counted.denied[0].would_drop,
        traffic(&would_drop),
        "{counted:#?}"
    );

    // Enforcing: the flow's next packet re-decides it at the backend, where the
    // client's enforcing egress revokes it, and the backend's answer is no longer
    // verified for the client.
    let enforcing = audit(&net, base, "client", Direction::Egress, false);
    net.apply(&enforcing);
    for (client, backend) in FAMILIES {
        let later = ack(client, backend, 51000, 9090);
        expect(
            &mut net,
            In,
            "server",
            MARK_DEFERRED_EGRESS,
            &later,
            false,
            "drop_revoked",
        );
        let answer = ack(backend, client, 9090, 51000);
        let mark = expect(&mut net, Out, "server", 0, &answer, true, "allow_tracked");
        assert_eq!(mark & MARK_REPLY_VERIFIED, 0, "no longer verified");
    }
}
