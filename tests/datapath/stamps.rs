//! podwall's `skb->mark` bits on `BPF_PROG_TEST_RUN` frames: a packet leaving a
//! pod carries the stamp of the generation its egress was decided with, and a
//! same-node destination that decides with another generation decides the
//! source's egress again with its own bank (closing the window in which one packet
//! meets two banks); the bits are the ones `CONFIG` names, and a classifier clears
//! only those.

use policy_agent::{
    dataplane::{
        Hook::{PodEgress as Out, PodIngress as In},
        LoadOptions,
    },
    policy::tables::{DatapathTables, Direction},
};
use policy_common::{
    config::{mark_bits, Config},
    verdict::{MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED},
};

use super::{
    frames::TCP,
    net::Net,
    pods::{
        client_egress_through_services, expect, one_side_open, quiet_net, server_and_client, syn,
        CLUSTER_IPS, FAMILIES, PODS,
    },
    tables::Tables,
};

/// Both sides open on TCP 80 (`one_side_open` with both rules), plus an unrelated
/// rule on port `extra`: a change of `extra` alone flips banks.
fn both_open(net: &Net, extra: u16) -> DatapathTables {
    Tables::new(net)
        .isolate("client", false, true)
        .isolate("server", true, false)
        .pod_class("server", 5)
        .pod_class("client", 3)
        .allow_port("client", Direction::Egress, 5, TCP, 80)
        .allow_port("server", Direction::Ingress, 3, TCP, 80)
        .allow_port("server", Direction::Ingress, 3, TCP, extra)
        .build()
}

#[test]
fn a_packet_whose_egress_an_older_bank_decided_has_it_decided_again_at_a_same_node_destination() {
    let mut net = server_and_client();
    for (i, (client, server)) in FAMILIES.into_iter().enumerate() {
        let sport = 42_000 + i as u16;
        let first = syn(client, server, sport, 80);
        // The client's egress hook decides with the state that opens egress, and
        // stamps the packet with that generation.
        net.apply(&one_side_open(&net, true, TCP, 80).build());
        let out = net.run(Out, "client", 0, &first);
        assert_eq!((out.passed, out.mark), (true, net.stamp()), "{client}");
        // The policy changes before the packet reaches the server's hook, whose
        // state opens ingress (and closes the client's egress): the server's hook
        // decides the client's egress again with that state and drops the packet.
        net.apply(&one_side_open(&net, false, TCP, 80).build());
        assert_ne!(out.mark, net.stamp());
        expect(
            &mut net,
            In,
            "server",
            out.mark,
            &first,
            false,
            "drop_source_egress",
        );
        // A packet stamped with the server's own generation is decided by its
        // ingress alone (the stamp, not the tuple, sends it back to the source).
        let second = syn(client, server, sport + 10, 80);
        let current = net.stamp();
        expect(
            &mut net,
            In,
            "server",
            current,
            &second,
            true,
            "allow_policy",
        );
    }
}

#[test]
fn a_stale_stamp_costs_nothing_to_a_packet_the_new_state_still_allows() {
    let mut net = server_and_client();
    net.apply(&both_open(&net, 81));
    for (i, (client, server)) in FAMILIES.into_iter().enumerate() {
        let sport = 43_000 + i as u16;
        let first = syn(client, server, sport, 80);
        let out = net.run(Out, "client", 0, &first);
        assert!(out.passed);
        // An unrelated change flips banks while the packet is on its way.
        net.apply(&both_open(&net, 82 + i as u16));
        assert_ne!(out.mark, net.stamp());
        let mark = expect(
            &mut net,
            In,
            "server",
            out.mark,
            &first,
            true,
            "allow_policy",
        );
        assert_eq!(mark, 0, "the stamp is cleared at the destination");
    }
}

#[test]
fn the_mark_bits_are_the_ones_config_names_and_a_classifier_clears_only_those() {
    let Some(bits) = mark_bits(0x0f00_0000) else {
        panic!("0x0f000000 is a valid mark mask");
    };
    let config = Config::DEFAULT.with_marks(bits);
    let options = LoadOptions {
        config,
        ..LoadOptions::default()
    };
    let mut net = quiet_net(&PODS[..2], &options);
    let tables = client_egress_through_services(&net);
    net.apply(&tables);
    // Another program's bits, including the defaults this datapath does not own.
    let foreign = 0x0000_4000 | MARK_DEFERRED_EGRESS | MARK_REPLY_VERIFIED;
    for (i, ((client, server), vip)) in FAMILIES.into_iter().zip(CLUSTER_IPS).enumerate() {
        let sport = 44_000 + i as u16;
        let to_vip = syn(client, vip, sport, 80);
        let out = net.run(Out, "client", foreign, &to_vip);
        assert_eq!(
            (out.passed, out.mark),
            (true, foreign | bits.deferred_egress),
            "deferred with the configured bit"
        );
        // At the backend the configured bit sends the packet to the client's
        // egress (here allowed on 8080), and only podwall's bits are cleared.
        let dnat = syn(client, server, sport, 8080);
        let marked = out.mark | config.mark_stamp(net.datapath.generation() + 1);
        let mark = expect(
            &mut net,
            In,
            "server",
            marked,
            &dnat,
            true,
            "allow_unisolated",
        );
        assert_eq!(mark, foreign, "{client}");
        // The old default bit means nothing here: no deferral check, no drop.
        let denied = syn(client, server, sport, 9090);
        expect(
            &mut net,
            In,
            "server",
            foreign,
            &denied,
            true,
            "allow_unisolated",
        );
        let mark = expect(
            &mut net,
            In,
            "server",
            bits.deferred_egress,
            &denied,
            false,
            "drop_deferred_egress",
        );
        assert_eq!(mark, 0);
    }
}
