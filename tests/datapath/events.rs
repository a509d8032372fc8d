//! Verdict events (`EVENTS`) on `BPF_PROG_TEST_RUN` frames, read back through
//! `EventReader` as `policy-agent flows` reads them: what a drop, a would-drop and
//! (when asked for) an allow carry, which packets report nothing, the per-CPU rate
//! limit and the ring-full counter, and a reader on a pinned ring buffer.
//!
//! Every test silences the namespaces first (`Net::quiet`): only its own frames
//! move counters and emit events.

use std::net::IpAddr;

use policy_agent::{
    dataplane::{EventReader, EventVerdict, Hook, VerdictRecord},
    policy::tables::{Direction, RuleRef},
};

use super::{
    addr,
    frames::{self, TCP},
    net::Net,
    support,
    tables::Tables,
};

const SERVER_V4: &str = "10.1.0.10";
const SERVER_V6: &str = "fd00:1::10";
const CLIENT_V4: &str = "10.2.0.5";
const CLIENT_V6: &str = "fd00:2::5";

/// Endpoint ids `Tables::new` gives: position in `Net::up` + 1.
const SERVER_ID: u32 = 1;
const CLIENT_ID: u32 = 2;

/// A quiet server and client.
fn server_and_client() -> Net {
    support::require_root_and_bpf();
    let mut net = Net::up(&[
        ("server", SERVER_V4, SERVER_V6),
        ("client", CLIENT_V4, CLIENT_V6),
    ]);
    net.quiet();
    net
}

/// The server isolated for ingress; the client (class 3) may reach TCP 80.
fn server_admits_port_80(net: &Net) -> Tables<'_> {
    Tables::new(net)
        .isolate("server", true, false)
        .pod_class("client", 3)
        .allow_port("server", Direction::Ingress, 3, TCP, 80)
}

/// A reader of `net`'s events, with nothing waiting.
fn reader(net: &mut Net) -> EventReader {
    let mut reader = net
        .datapath
        .event_reader()
        .unwrap_or_else(|e| panic!("event reader: {e}"));
    let stale = reader.drain();
    assert!(stale.is_empty(), "events before the test: {stale:#?}");
    reader
}

/// A TCP SYN between two addresses of one family.
fn syn(from: &str, to: &str, sport: u16, dport: u16) -> Vec<u8> {
    frames::ip(addr(from), addr(to), TCP, &frames::tcp(sport, dport))
}

/// What an event must say about a frame, the fields a test cannot predict
/// (timestamp) taken from `got`.
#[allow(clippy::too_many_arguments, reason = "one argument per event field")]
fn expected(
    got: &VerdictRecord,
    ifindex: u32,
    endpoint_id: u32,
    direction: Direction,
    verdict: EventVerdict,
    reason: &'static str,
    source: (IpAddr, u16),
    destination: (IpAddr, u16),
    rule: Option<RuleRef>,
    frame: &[u8],
) -> VerdictRecord {
    VerdictRecord {
        timestamp_ns: got.timestamp_ns,
        ifindex,
        endpoint_id,
        direction,
        verdict,
        reason,
        source,
        destination,
        protocol: TCP,
        rule,
        packet_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
    }
}

#[test]
fn a_drop_is_reported_with_its_tuple_direction_endpoint_and_reason() {
    let mut net = server_and_client();
    net.apply(&server_admits_port_80(&net).build());
    let mut reader = reader(&mut net);
    let (server_if, client_if) = (net.ifindex("server"), net.ifindex("client"));
    let mut sent = Vec::new();
    for (client, server) in [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)] {
        // Denied by policy at the server's ingress; allowed (no allow events asked
        // for) on port 80; spoofed at the client's egress.
        let denied = syn(client, server, 40000, 81);
        assert!(!net.run(Hook::PodIngress, "server", 0, &denied).passed);
        let allowed = syn(client, server, 40001, 80);
        assert!(net.run(Hook::PodIngress, "server", 0, &allowed).passed);
        let spoofed = syn(server, client, 40002, 22);
        assert!(!net.run(Hook::PodEgress, "client", 0, &spoofed).passed);
        sent.push((client, server, denied, spoofed));
    }
    let got = reader.drain();
    assert_eq!(got.len(), 4, "two drops per family: {got:#?}");
    for (i, (client, server, denied, spoofed)) in sent.iter().enumerate() {
        let (drop, spoof) = (&got[2 * i], &got[2 * i + 1]);
        assert!(drop.timestamp_ns > 0, "{drop:?}");
        assert_eq!(
            *drop,
            expected(
                drop,
                server_if,
                SERVER_ID,
                Direction::Ingress,
                EventVerdict::Drop,
                "drop_policy",
                (addr(client), 40000),
                (addr(server), 81),
                None,
                denied,
            )
        );
        assert_eq!(
            *spoof,
            expected(
                spoof,
                client_if,
                CLIENT_ID,
                Direction::Egress,
                EventVerdict::Drop,
                "drop_spoofed_source",
                (addr(server), 40002),
                (addr(client), 22),
                None,
                spoofed,
            )
        );
    }
    assert!(
        got.windows(2)
            .all(|w| w[0].timestamp_ns <= w[1].timestamp_ns),
        "oldest first: {got:#?}"
    );
}
