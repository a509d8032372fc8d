//! Conntrack on the Service path: the client's post-DNAT entry (written at the
//! backend's side) lives as long as the flow is used, and an ICMP error cannot pass
//! as related on the strength of a deferred entry, which no decision stands behind.

use std::time::Duration;

use policy_common::verdict::{MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED};

use super::{
    addr,
    frames::{self, TCP, UDP},
    net::Net,
    pods::{self, CLUSTER_IPS, FAMILIES},
};
use policy_agent::dataplane::Hook;

/// The client isolated for egress, reaching the server (its Service's backend)
/// on TCP 8080 through one ClusterIP per family (`pods::client_egress_through_services`).
fn service_net() -> Net {
    let mut net = pods::server_and_client();
    let tables = pods::client_egress_through_services(&net);
    net.apply(&tables);
    net
}

/// (client, backend, ClusterIP) per family.
fn families() -> impl Iterator<Item = [&'static str; 3]> {
    FAMILIES
        .into_iter()
        .zip(CLUSTER_IPS)
        .map(|((client, server), vip)| [client, server, vip])
}

#[test]
fn replies_keep_a_service_flows_entry_at_the_client_alive_past_the_opening_timeout() {
    let mut net = service_net();
    let client_if = net.ifindex("client");
    for (i, [client, backend, vip]) in families().enumerate() {
        let (client, backend, vip) = (addr(client), addr(backend), addr(vip));
        let sport = 41000 + i as u16;
        let to_vip = frames::ip(client, vip, TCP, &frames::tcp(sport, 80));
        let out = net.run(Hook::PodEgress, "client", 0, &to_vip);
        assert!(
            out.passed && out.mark & MARK_DEFERRED_EGRESS != 0,
            "{out:?}"
        );
        let dnat = frames::ip(client, backend, TCP, &frames::tcp(sport, 8080));
        assert!(
            net.run(Hook::PodIngress, "server", MARK_DEFERRED_EGRESS, &dnat)
                .passed
        );
        // Three spells of 50 s idle (the opening timeout is 60 s), each ended by a
        // reply: 150 s after the SYN the entry still verifies, because every reply
        // refreshed it (and the first moved it on from opening).
        let answer = frames::ip(backend, client, TCP, &frames::tcp_ack(8080, sport));
        for round in 0..3 {
            let aged = net
                .datapath
                .age_conntrack(Duration::from_secs(50), |flow| {
                    flow.ifindex == client_if && flow.destination == (backend, 8080)
                })
                .unwrap_or_else(|e| panic!("age: {e}"));
            assert_eq!(aged, 1, "the client's post-DNAT entry");
            let out = net.run(Hook::PodEgress, "server", 0, &answer);
            assert!(
                out.passed && out.mark & MARK_REPLY_VERIFIED != 0,
                "{backend} round {round}: {out:?}"
            );
        }
    }
}

#[test]
fn an_icmp_error_quoting_a_reply_of_a_deferred_flow_is_not_related() {
    let mut net = service_net();
    let before = net.stats();
    for (i, [client, _, vip]) in families().enumerate() {
        let (client, vip) = (addr(client), addr(vip));
        let sport = 42000 + i as u16;
        // A datagram to the ClusterIP: deferred, tracked at the client as such,
        // decided by nobody (no backend side ever sees it here).
        let to_vip = frames::ip(client, vip, UDP, &frames::udp(sport, 53));
        assert!(net.run(Hook::PodEgress, "client", 0, &to_vip).passed);
        // An "error" from the client to the ClusterIP quoting the ClusterIP's
        // "answer": its quote names the deferred entry, reversed.
        let answer = frames::ip(vip, client, UDP, &frames::udp(53, sport));
        let (kind, code) = if client.is_ipv4() { (3, 3) } else { (1, 4) };
        let protocol = if client.is_ipv4() { 1 } else { 58 };
        let error = frames::ip(
            client,
            vip,
            protocol,
            &frames::icmp_error(kind, code, &answer),
        );
        net.run(Hook::PodEgress, "client", 0, &error);
    }
    let after = net.stats();
    assert_eq!(
        after.get("allow_related"),
        before.get("allow_related"),
        "{:?}",
        after.growth_since(&before)
    );
}

#[test]
fn the_clients_icmp_error_about_its_allowed_service_flow_passes_at_the_backend_as_related() {
    let mut net = service_net();
    let before = net.stats();
    for (i, [client, backend, vip]) in families().enumerate() {
        let (client, backend, vip) = (addr(client), addr(backend), addr(vip));
        let sport = 43000 + i as u16;
        let to_vip = frames::ip(client, vip, TCP, &frames::tcp(sport, 80));
        assert!(net.run(Hook::PodEgress, "client", 0, &to_vip).passed);
        let dnat = frames::ip(client, backend, TCP, &frames::tcp(sport, 8080));
        assert!(
            net.run(Hook::PodIngress, "server", MARK_DEFERRED_EGRESS, &dnat)
                .passed
        );
        // A late answer finds the client's socket gone: the client reports it to
        // the ClusterIP. Its egress defers the error like any packet to a Service
        // (the deferred entry relates nothing as the origin of an answer)...
        let (protocol, kind, code) = if client.is_ipv4() {
            (1, 3, 3)
        } else {
            (58, 1, 4)
        };
        let late = frames::ip(vip, client, TCP, &frames::tcp_ack(80, sport));
        let error = frames::ip(
            client,
            vip,
            protocol,
            &frames::icmp_error(kind, code, &late),
        );
        let out = net.run(Hook::PodEgress, "client", 0, &error);
        assert!(
            out.passed && out.mark & MARK_DEFERRED_EGRESS != 0,
            "{out:?}"
        );
        // ...and after DNAT the backend's side finds it related to the flow the
        // client's egress allowed (only TCP 8080: as ICMP it would be denied).
        let late = frames::ip(backend, client, TCP, &frames::tcp_ack(8080, sport));
        let error = frames::ip(
            client,
            backend,
            protocol,
            &frames::icmp_error(kind, code, &late),
        );
        let out = net.run(Hook::PodIngress, "server", MARK_DEFERRED_EGRESS, &error);
        assert!(
            out.passed,
            "{backend}: {:?}",
            net.stats().growth_since(&before)
        );
    }
    let after = net.stats();
    assert_eq!(
        after.get("drop_deferred_egress"),
        before.get("drop_deferred_egress")
    );
    assert_eq!(after.get("allow_related") - before.get("allow_related"), 2);
}
