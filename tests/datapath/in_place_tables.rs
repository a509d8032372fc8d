//! Whole tables written into the active bank (`Datapath::apply_in_place`): on
//! real veths, a datagram that both the state before and the state after drop
//! is sent after every single write of the change, and none may arrive.
//!
//! A same-node datagram is judged at the client's egress and the server's
//! ingress: a change that narrows one while it widens the other must not be
//! written in place (the last test).
//!
//! The change is the one the write order is made for: the client's addresses
//! move from class 3 to class 4 while class 4's rules change (port `BOTH_DENY`
//! to `AFTER`). Were the client's entry to get class 4 before the server's rules
//! for class 4 changed, a datagram to `BOTH_DENY` would pass in between.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use policy_agent::policy::tables::{DatapathTables, Direction};

use super::{
    frames::UDP,
    net::Net,
    pods::{one_side_open, PODS, SERVER_V4},
    state_changed::tables_writing,
    support,
    tables::Tables,
};

/// Admitted from class 3 before.
const BEFORE: u16 = 7201;
/// Admitted from class 4 before: never from the client.
const BOTH_DENY: u16 = 7202;
/// Admitted from class 4 after.
const AFTER: u16 = 7203;

/// The server isolated for ingress; the client in class 3 (`moved`: 4), the
/// other pod in class 4; class 3 admitted on `BEFORE`, class 4 on `BOTH_DENY`
/// (`moved`: on `AFTER`).
fn tables(net: &Net, moved: bool) -> DatapathTables {
    let (client_class, class_4_port) = if moved { (4, AFTER) } else { (3, BOTH_DENY) };
    Tables::new(net)
        .isolate("server", true, false)
        .pod_class("client", client_class)
        .pod_class("other", 4)
        .allow_port("server", Direction::Ingress, 3, UDP, BEFORE)
        .allow_port("server", Direction::Ingress, 4, UDP, class_4_port)
        .build()
}

/// A server socket on `port` and a client socket sending to it.
fn pair(net: &Net, port: u16) -> (UdpSocket, UdpSocket) {
    let at = SocketAddr::new(super::addr(SERVER_V4), port);
    let server = Net::in_ns(&net.pod("server").netns, || UdpSocket::bind(at))
        .unwrap_or_else(|e| panic!("bind {at}: {e}"));
    let client = Net::in_ns(&net.pod("client").netns, || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect(at)?;
        Ok::<_, std::io::Error>(socket)
    })
    .unwrap_or_else(|e| panic!("udp socket to {at}: {e}"));
    server
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap_or_else(|e| panic!("read timeout: {e}"));
    (server, client)
}

/// Sends one datagram: whether it arrived.
fn arrives(server: &UdpSocket, client: &UdpSocket) -> bool {
    client
        .send(b"probe")
        .unwrap_or_else(|e| panic!("udp send: {e}"));
    let mut buffer = [0u8; 64];
    server.recv(&mut buffer).is_ok()
}

/// Applies `tables` through `apply_in_place`, sending a datagram from `client`
/// to `server` after each write into the active bank: how many writes there
/// were and after how many it arrived.
fn send_between_writes(
    net: &mut Net,
    tables: &DatapathTables,
    (server, client): (&UdpSocket, &UdpSocket),
) -> (u32, u32) {
    let (mut writes, mut passed) = (0, 0);
    let interfaces = net.interfaces.clone();
    let mut config = net
        .datapath
        .config_reader()
        .unwrap_or_else(|e| panic!("a reader of CONFIG: {e}"));
    net.datapath
        .apply_in_place_observed(tables, &interfaces, &Default::default(), &mut || {
            writes += 1;
            // The classifiers do not trust a denial meanwhile.
            assert!(
                tables_writing(config()),
                "CONFIG says no tables are being written"
            );
            if arrives(server, client) {
                passed += 1;
            }
        })
        .unwrap_or_else(|e| panic!("apply_in_place: {e}"));
    assert!(
        !tables_writing(config()),
        "CONFIG still says tables are being written"
    );
    (writes, passed)
}

#[test]
fn no_datagram_both_states_drop_passes_between_the_writes_of_an_in_place_change() {
    support::require_root_and_bpf();
    let mut net = Net::up(&PODS);
    let (before, after) = (tables(&net, false), tables(&net, true));
    net.apply(&before);
    let (both_deny, both_deny_client) = pair(&net, BOTH_DENY);
    let (admitted_after, admitted_after_client) = pair(&net, AFTER);
    assert!(!arrives(&both_deny, &both_deny_client));
    assert!(!arrives(&admitted_after, &admitted_after_client));
    let bank = net.active_in_kernel();
    let generation = net.datapath.generation();

    // Forward, in place, a datagram to `BOTH_DENY` after every write.
    let observe = |net: &mut Net, bank: u32| {
        let (writes, passed) = send_between_writes(net, &after, (&both_deny, &both_deny_client));
        assert!(
            writes > 3,
            "written in place, step by step: {writes} writes"
        );
        assert_eq!(
            passed, 0,
            "datagrams both states drop passed in {writes} states"
        );
        assert_eq!(net.active_in_kernel(), bank, "no flip");
        assert!(arrives(&admitted_after, &admitted_after_client));
        assert!(!arrives(&both_deny, &both_deny_client));
        let banks = net.read_banks();
        assert_eq!(&banks[bank as usize], net.datapath.bank_shadow(bank));
    };
    observe(&mut net, bank);
    assert_eq!(net.datapath.generation(), generation + 2, "moved on two");

    // Back: class 4 would admit `BOTH_DENY` again while a packet that read the
    // client's old class 4 could meet it, so this one flips.
    let interfaces = net.interfaces.clone();
    let report = net
        .datapath
        .apply_in_place(&before, &interfaces, &Default::default())
        .unwrap_or_else(|e| panic!("apply_in_place: {e}"));
    assert_eq!(report.bank, bank ^ 1, "flipped");
    assert!(!arrives(&admitted_after, &admitted_after_client));
    assert!(!arrives(&both_deny, &both_deny_client));

    // Forward again, in place in the other bank.
    observe(&mut net, bank ^ 1);
}

/// Admitted by the client's egress before and by the server's ingress after.
const TRADED: u16 = 7204;
/// Admitted both ways in both states.
const SHARED: u16 = 7205;

/// `one_side_open` on UDP `TRADED` (the client's egress admits it, or with
/// `traded` the server's ingress), with `SHARED` allowed both ways.
fn traded_tables(net: &Net, traded: bool) -> DatapathTables {
    one_side_open(net, !traded, UDP, TRADED)
        .allow_port("client", Direction::Egress, 5, UDP, SHARED)
        .allow_port("server", Direction::Ingress, 3, UDP, SHARED)
        .build()
}

#[test]
fn a_change_that_trades_an_egress_allow_for_an_ingress_allow_is_not_written_in_place() {
    support::require_root_and_bpf();
    let mut net = Net::up(&PODS);
    let (before, after) = (traded_tables(&net, false), traded_tables(&net, true));
    net.apply(&before);
    let (traded, traded_client) = pair(&net, TRADED);
    let (shared, shared_client) = pair(&net, SHARED);
    assert!(
        !arrives(&traded, &traded_client),
        "the server's ingress drops it before"
    );
    assert!(arrives(&shared, &shared_client));
    let bank = net.active_in_kernel();

    // Written in place, the server's row would change before the client's (its
    // endpoint id sorts first): in between, both hooks would admit `TRADED`.
    let (writes, passed) = send_between_writes(&mut net, &after, (&traded, &traded_client));
    assert_eq!(
        passed, 0,
        "a datagram both states drop passed after {passed} of {writes} writes in place"
    );
    assert_eq!(
        net.active_in_kernel(),
        bank ^ 1,
        "flipped, not written in place"
    );
    assert!(
        !arrives(&traded, &traded_client),
        "the client's egress drops it after"
    );
    assert!(arrives(&shared, &shared_client));
}
