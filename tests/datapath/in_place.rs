//! Peer entries changed in place (`Datapath::update_peers`): for tables that
//! differ from the active bank in the entries of one peer's addresses alone, the
//! active bank itself takes them and `ACTIVE` moves on by two generations (the same
//! bank). On real sockets: new flows see the new entry at once, tracked flows are
//! re-decided at their next packet as after a flip, the bank not read is untouched
//! (the next flip into it writes what it lacks), and the shadows stay equal to the
//! kernel.

use ipnet::IpNet;
use policy_agent::{
    dataplane::{BankContent, Hook, LoadOptions},
    policy::tables::{DatapathTables, Direction},
};
use policy_common::config::{mark_bits, Config};

use super::{
    frames::TCP,
    net::Net,
    pods::{self, syn, CLIENT_V4, PODS, SERVER_V4},
    sockets::Tcp,
    support,
    tables::Tables,
};

/// Ports the client is admitted to.
const PORT: u16 = 7100;

/// The server isolated for ingress, admitting class 3 on `PORT`; the client's
/// addresses are in class 3 when `admitted`, else in no class.
fn tables(net: &Net, admitted: bool) -> DatapathTables {
    let mut tables = Tables::new(net).isolate("server", true, false);
    if admitted {
        tables = tables.pod_class("client", 3);
    }
    tables
        .allow_port("server", Direction::Ingress, 3, TCP, PORT)
        .build()
}

/// The client's host prefixes.
fn client_prefixes(net: &Net) -> Vec<IpNet> {
    let client = net.pod("client");
    vec![
        IpNet::from(std::net::IpAddr::from(client.v4)),
        IpNet::from(std::net::IpAddr::from(client.v6)),
    ]
}

/// Whether a SYN from the client to the server's `PORT` passes the server's ingress.
fn admitted(net: &mut Net) -> bool {
    let frame = syn(CLIENT_V4, SERVER_V4, pods::fresh_sport(), PORT);
    net.run(Hook::PodIngress, "server", 0, &frame).passed
}

/// `tables` applied and a connection from the client to the server's `PORT`
/// open: the active bank, its generation, both banks, the connection.
fn connected(net: &mut Net, tables: &DatapathTables) -> (u32, u32, [BankContent; 2], Tcp) {
    net.apply(tables);
    let bank = net.active_in_kernel();
    let generation = net.datapath.generation();
    let banks_before = net.read_banks();
    let server = super::addr(SERVER_V4);
    let mut tcp = Tcp::open(net, "client", "server", server, PORT);
    assert!(tcp.server_gets(b"hello") && tcp.client_gets(b"hello"));
    (bank, generation, banks_before, tcp)
}

/// What a write in place leaves: no flip, `ACTIVE` two generations on from
/// `generation`, the written bank equal to its shadow, the other as it was
/// (`banks_before`).
fn written_in_place(net: &mut Net, bank: u32, generation: u32, banks_before: &[BankContent; 2]) {
    assert_eq!(net.active_in_kernel(), bank, "no flip");
    assert_eq!(net.datapath.generation(), generation + 2);
    let banks = net.read_banks();
    assert_eq!(&banks[bank as usize], net.datapath.bank_shadow(bank));
    let idle = (bank ^ 1) as usize;
    assert_eq!(
        banks[idle], banks_before[idle],
        "the bank not read is untouched"
    );
}

#[test]
fn peer_entries_change_in_place_and_tracked_flows_are_re_decided() {
    support::require_root_and_bpf();
    let mut net = Net::up(&PODS[..2]);
    let (allowed, dropped) = (tables(&net, true), tables(&net, false));
    let (bank, generation, banks_before, mut tcp) = connected(&mut net, &allowed);

    // The client's entries go, in place.
    let report = net
        .datapath
        .update_peers(&dropped, &client_prefixes(&net))
        .unwrap_or_else(|e| panic!("update_peers: {e}"));
    assert_eq!((report.written, report.removed, report.bank), (0, 2, bank));
    written_in_place(&mut net, bank, generation, &banks_before);
    assert!(!admitted(&mut net), "a new flow sees the new entry");
    // The same entries again: nothing written, no generation moved.
    let again = net
        .datapath
        .update_peers(&dropped, &client_prefixes(&net))
        .unwrap_or_else(|e| panic!("update_peers: {e}"));
    assert_eq!((again.written, again.removed), (0, 0));
    assert_eq!(
        net.datapath.generation(),
        generation + 2,
        "nothing to re-decide"
    );
    // The tracked connection is re-decided at its next packet, and cut.
    assert!(!tcp.server_gets(b"after"), "the tracked flow must be cut");

    // The active bank already holds these tables: nothing to write, no flip.
    let report = net.apply(&dropped);
    assert_eq!((report.written, report.removed, report.bank), (0, 0, bank));
    // A change flips to the bank not read (written from its own shadow); flipping
    // back finds the in-place entries there: nothing to write.
    let report = net.apply(&allowed);
    assert_eq!(report.bank, bank ^ 1);
    assert_eq!(net.active_in_kernel(), bank ^ 1);
    assert!(admitted(&mut net));
    let report = net.apply(&dropped);
    assert_eq!((report.written, report.removed), (0, 0), "{report:?}");
    assert_eq!(net.active_in_kernel(), bank);
    assert!(!admitted(&mut net));

    // And back, in place: the entries return, a new flow passes.
    let report = net
        .datapath
        .update_peers(&allowed, &client_prefixes(&net))
        .unwrap_or_else(|e| panic!("update_peers: {e}"));
    assert_eq!((report.written, report.removed), (2, 0));
    assert!(admitted(&mut net));
    let banks = net.read_banks();
    assert_eq!(&banks[bank as usize], net.datapath.bank_shadow(bank));
}

/// The server isolated for ingress, admitting classes 3 and 5 on `PORT` (and
/// class 4 on another port); the client's addresses in `class`.
fn classed(net: &Net, class: u32) -> DatapathTables {
    Tables::new(net)
        .isolate("server", true, false)
        .pod_class("client", class)
        .allow_port("server", Direction::Ingress, 3, TCP, PORT)
        .allow_port("server", Direction::Ingress, 4, TCP, PORT + 1)
        .allow_port("server", Direction::Ingress, 5, TCP, PORT)
        .build()
}

/// Addresses that only move class (`Datapath::update_classes`, for a
/// namespace's labels): written in place like `update_peers` (no flip, `ACTIVE`
/// two generations on, tracked flows re-decided) when no packet judged at two
/// hooks can combine a class before with one after; refused, with nothing
/// written, when one could.
#[test]
fn addresses_move_class_in_place_unless_two_hooks_could_combine_them() {
    support::require_root_and_bpf();
    let mut net = Net::up(&PODS[..2]);
    let (inside, outside) = (classed(&net, 3), classed(&net, 4));
    let (bank, generation, banks_before, mut tcp) = connected(&mut net, &inside);

    // The client's addresses move to class 4, in place.
    let moved = |net: &mut Net, tables: &DatapathTables| {
        net.datapath
            .update_classes(tables, &client_prefixes(net))
            .unwrap_or_else(|e| panic!("update_classes: {e}"))
    };
    let report = moved(&mut net, &outside).unwrap_or_else(|| panic!("refused"));
    assert_eq!((report.written, report.removed, report.bank), (2, 0, bank));
    written_in_place(&mut net, bank, generation, &banks_before);
    assert!(!admitted(&mut net), "a new flow sees the new class");
    assert!(!tcp.server_gets(b"after"), "the tracked flow must be cut");
    // The active bank holds these tables: a whole write writes nothing.
    let report = net.apply(&outside);
    assert_eq!((report.written, report.removed, report.bank), (0, 0, bank));
    // And back.
    let report = moved(&mut net, &inside).unwrap_or_else(|| panic!("refused"));
    assert_eq!((report.written, report.removed), (2, 0));
    assert!(admitted(&mut net));
    // A move between two classes the server admits keeps a tracked flow: it is
    // re-decided at its next packet and passes.
    let server = super::addr(SERVER_V4);
    let mut kept = Tcp::open(&net, "client", "server", server, PORT);
    assert!(kept.server_gets(b"hello") && kept.client_gets(b"hello"));
    let also_admitted = classed(&net, 5);
    moved(&mut net, &also_admitted).unwrap_or_else(|| panic!("refused"));
    assert!(kept.server_gets(b"after") && kept.client_gets(b"after"));
    assert!(admitted(&mut net));
    // Addresses the tables have no entry for: nothing moves.
    let none = net
        .datapath
        .update_classes(
            &classed(&net, 5),
            &["10.99.0.1/32".parse().unwrap_or_else(|e| panic!("{e}"))],
        )
        .unwrap_or_else(|e| panic!("update_classes: {e}"));
    assert!(none.is_none(), "{none:?}");

    // Now the client is isolated for egress too, admitting the server's class
    // 5 on `PORT` and its class 6 on another port. Moving the server from 5 to 6
    // narrows the client's egress while moving the client from 4 to 3 widens
    // the server's ingress: a packet judged at the egress before and the
    // ingress after would pass what neither state passes, so nothing moves.
    let traded = |net: &Net, client: u32, server: u32| {
        Tables::new(net)
            .isolate("server", true, false)
            .isolate("client", false, true)
            .pod_class("client", client)
            .pod_class("server", server)
            .allow_port("server", Direction::Ingress, 3, TCP, PORT)
            .allow_port("server", Direction::Ingress, 4, TCP, PORT + 1)
            .allow_port("client", Direction::Egress, 5, TCP, PORT)
            .allow_port("client", Direction::Egress, 6, TCP, PORT + 1)
            .build()
    };
    let (before, after) = (traded(&net, 4, 5), traded(&net, 3, 6));
    let server_alone = traded(&net, 4, 6);
    net.apply(&before);
    let bank = net.active_in_kernel();
    let generation = net.datapath.generation();
    let banks_before = net.read_banks();
    let mut both = client_prefixes(&net);
    let server_net = net.pod("server");
    both.extend([
        IpNet::from(std::net::IpAddr::from(server_net.v4)),
        IpNet::from(std::net::IpAddr::from(server_net.v6)),
    ]);
    let refused = net
        .datapath
        .update_classes(&after, &both)
        .unwrap_or_else(|e| panic!("update_classes: {e}"));
    assert!(refused.is_none(), "{refused:?}");
    assert_eq!(net.datapath.generation(), generation, "nothing moved");
    assert_eq!(net.read_banks(), banks_before, "nothing written");
    assert_eq!(net.active_in_kernel(), bank);
    // The server's move alone is one direction only: it moves in place.
    let report = net
        .datapath
        .update_classes(&server_alone, &both)
        .unwrap_or_else(|e| panic!("update_classes: {e}"))
        .unwrap_or_else(|| panic!("refused"));
    assert_eq!((report.written, report.removed), (2, 0));
}

/// With fewer stamps than whole tables need to be written in place, classes do
/// not move in place either (a packet held between two hooks across a few such
/// writes could be taken for current): nothing is written, and `apply` decides.
#[test]
fn with_few_stamps_addresses_do_not_move_class_in_place() {
    support::require_root_and_bpf();
    let Some(bits) = mark_bits(0x0f00_0000) else {
        panic!("0x0f000000 is a valid mark mask");
    };
    let options = LoadOptions {
        config: Config::DEFAULT.with_marks(bits),
        ..LoadOptions::default()
    };
    let mut net = Net::up_with(&PODS[..2], &options);
    net.apply(&classed(&net, 3));
    let generation = net.datapath.generation();
    let banks_before = net.read_banks();
    let outside = classed(&net, 4);
    let refused = net
        .datapath
        .update_classes(&outside, &client_prefixes(&net))
        .unwrap_or_else(|e| panic!("update_classes: {e}"));
    assert!(refused.is_none(), "{refused:?}");
    assert_eq!(net.datapath.generation(), generation);
    assert_eq!(net.read_banks(), banks_before);
    assert!(admitted(&mut net));
}
