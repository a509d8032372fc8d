//! IP fragments on real veths: datagrams larger than the veth MTU, fragmented by
//! the sender's own stack, sent from inside a pod's namespace, with the node
//! namespace forwarding the fragments as they come and with it reassembling them
//! (conntrack loaded there, as any nftables `ct` rule or NAT does; it fragments the
//! datagram again on its way out, which `node_fragments_created` shows). Allowed
//! flows get every size echoed, in both families and through every hook; a denied
//! datagram's fragments stay dropped; crafted fragments (overlapping the first
//! fragment, a first fragment too short for its header, a lone one whose offset
//! lies in the high byte alone) are dropped with their reason; and a Service (nftables DNAT, so reassembly) carries large datagrams.

use std::net::IpAddr;

use policy_agent::policy::tables::{DatapathTables, Direction};

use super::{
    addr,
    fragment_frames::{fragment, fragments, next_id, ALLOWED_PORT, DENIED_PORT},
    fragment_probes::{
        echoed, ipv4_checksummed, node_fragments_created, node_reassembles, udp_checksummed,
        EchoServer, Receiver,
    },
    frames::UDP,
    net::{moved, Net},
    pods::{CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6},
    support,
    support::packet::send_frames,
    tables::Tables,
};

/// The datagram sizes of the measured case: two that fit the 1,500-byte MTU, two
/// that the sender fragments.
const SIZES: [usize; 4] = [100, 1400, 3000, 8000];

/// The server and the client, with their pods' IPv6 switched on (the echo needs ND).
fn server_and_client() -> Net {
    support::require_root_and_bpf();
    Net::up(&[
        ("server", SERVER_V4, SERVER_V6),
        ("client", CLIENT_V4, CLIENT_V6),
    ])
}

/// Who is isolated, and the one rule each isolated direction gets.
#[derive(Clone, Copy, Debug)]
enum Isolation {
    /// The client's egress allows UDP `ALLOWED_PORT` to the server.
    ClientEgress,
    /// The server's ingress allows UDP `ALLOWED_PORT` from the client.
    ServerIngress,
    /// Both pods isolated both ways with only those two rules: the echo comes back
    /// through the server's egress and the client's ingress as a tracked flow.
    Both,
}

fn tables(net: &Net, isolation: Isolation) -> DatapathTables {
    let (client_egress, server_ingress, both) = match isolation {
        Isolation::ClientEgress => (true, false, false),
        Isolation::ServerIngress => (false, true, false),
        Isolation::Both => (true, true, true),
    };
    Tables::new(net)
        .isolate("client", both, client_egress)
        .isolate("server", server_ingress, both)
        .pod_class("server", 5)
        .pod_class("client", 3)
        .allow_port("client", Direction::Egress, 5, UDP, ALLOWED_PORT)
        .allow_port("server", Direction::Ingress, 3, UDP, ALLOWED_PORT)
        .build()
}

/// The counters whose name starts with `drop_` that moved between two reads.
fn drops(
    before: &policy_agent::dataplane::Stats,
    after: &policy_agent::dataplane::Stats,
) -> Vec<(&'static str, u64)> {
    moved(before, after)
        .into_iter()
        .filter(|(name, _)| name.starts_with("drop_"))
        .collect()
}

#[test]
fn large_udp_datagrams_of_an_allowed_flow_are_echoed_with_and_without_reassembly() {
    let mut net = server_and_client();
    let client = net.pod("client").netns.clone();
    let servers = [addr(SERVER_V4), addr(SERVER_V6)];
    let _echo = EchoServer::start(&net.pod("server").netns, &servers, ALLOWED_PORT);
    let mut failures = Vec::new();
    for isolation in [
        Isolation::ClientEgress,
        Isolation::ServerIngress,
        Isolation::Both,
    ] {
        let tables = tables(&net, isolation);
        net.apply(&tables);
        for reassembly in [false, true] {
            if reassembly {
                node_reassembles(&net, true);
            }
            let (created, before) = (node_fragments_created(&net), net.stats());
            for to in servers {
                for size in SIZES {
                    if !echoed(&client, to, ALLOWED_PORT, size) {
                        failures.push(format!(
                            "{isolation:?}, reassembly {reassembly}: {size} bytes to {to}"
                        ));
                    }
                }
            }
            let dropped = drops(&before, &net.stats());
            if !dropped.is_empty() {
                failures.push(format!(
                    "{isolation:?}, reassembly {reassembly}: {dropped:?}"
                ));
            }
            // The node refragments what it reassembled, and only then.
            if (node_fragments_created(&net) > created) != reassembly {
                failures.push(format!(
                    "{isolation:?}, reassembly {reassembly}: the node fragmented (again) \
                     exactly when it reassembled"
                ));
            }
            if reassembly {
                node_reassembles(&net, false);
            }
        }
    }
    assert!(failures.is_empty(), "not echoed:\n{}", failures.join("\n"));
}

/// Fragments a Linux sender makes of a `size`-byte UDP datagram over a 1,500-byte MTU.
fn fragment_count(size: usize, ipv6: bool) -> u64 {
    let per_fragment = if ipv6 { 1448 } else { 1480 };
    (size + 8).div_ceil(per_fragment) as u64
}

#[test]
fn the_fragments_of_a_denied_datagram_stay_dropped_with_and_without_reassembly() {
    let mut net = server_and_client();
    let (client, server) = (
        net.pod("client").netns.clone(),
        net.pod("server").netns.clone(),
    );
    // Denied at the client's egress, or at the server's ingress.
    for isolation in [Isolation::ClientEgress, Isolation::ServerIngress] {
        let tables = tables(&net, isolation);
        net.apply(&tables);
        for reassembly in [false, true] {
            if reassembly {
                node_reassembles(&net, true);
            }
            for to in [addr(SERVER_V4), addr(SERVER_V6)] {
                let receiver = Receiver::bind(&server, to, DENIED_PORT);
                let before = net.stats();
                assert!(
                    !echoed(&client, to, DENIED_PORT, 3000),
                    "{isolation:?}, reassembly {reassembly}: no echo from {to}"
                );
                let what = format!("{isolation:?}, reassembly {reassembly}, to {to}");
                assert!(!receiver.any(), "{what}: a fragment of it arrived");
                // Where the node reassembled, it fragments the datagram again on
                // its way to the server and stops at the first fragment the
                // server's ingress drops: the rest never reach the hook.
                let non_first = match isolation {
                    Isolation::ServerIngress if reassembly => 0,
                    _ => fragment_count(3000, to.is_ipv6()) - 1,
                };
                let after = net.stats();
                let got = |counter| after.get(counter) - before.get(counter);
                assert_eq!(
                    (got("drop_policy"), got("drop_fragment_unknown")),
                    (1, non_first),
                    "{what}: {:?}",
                    drops(&before, &after)
                );
            }
            if reassembly {
                node_reassembles(&net, false);
            }
        }
    }
}

/// `frame` as the client's eth0 sends it: to the host veth's MAC.
fn from_client(mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&[0xee; 6]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    if frame[12..14] == [0x08, 0x00] {
        ipv4_checksummed(frame)
    } else {
        frame
    }
}

/// A destination options header of 8 bytes (PadN) followed by `next`.
fn destination_options(next: u8) -> [u8; 8] {
    [next, 0, 1, 4, 0, 0, 0, 0]
}

/// Fragments a pod crafts to aim a datagram at the denied port or to hide its
/// header, and the drop counter that must move by one.
struct Attack {
    name: &'static str,
    frames: Vec<Vec<u8>>,
    counter: &'static str,
}

/// The crafted attacks of one family.
fn attacks(client: IpAddr, server: IpAddr) -> Vec<Attack> {
    let ends = (client, server);
    let udp = |dport: u16, payload: usize| {
        let mut datagram = super::fragment_frames::udp_datagram(41000, dport, payload);
        datagram = udp_checksummed(client, server, datagram);
        datagram
    };
    let mut attacks = Vec::new();
    if client.is_ipv6() {
        // The header chain after the fragment header puts the UDP header 8 bytes
        // in, where a fragment at offset 8 overlaps it: the receiver would take
        // the port 7778 header from the second fragment if later data won.
        let id = next_id();
        let allowed = [&destination_options(UDP)[..], &udp(ALLOWED_PORT, 8)].concat();
        let denied = udp(DENIED_PORT, 16);
        attacks.push(Attack {
            name: "a non-first fragment at offset 8 rewriting the ports behind an IPv6 extension header",
            frames: vec![
                fragment(ends, 60, id, (0, true), &allowed),
                fragment(ends, 60, id, (8, false), &denied),
            ],
            counter: "drop_fragment_overlap",
        });
        // The first fragment ends with the extension header; a UDP header to the
        // allowed port follows in the frame but past the payload length, and the
        // real one (to the denied port) comes at offset 8.
        let id = next_id();
        let mut first = fragment(ends, 60, id, (0, true), &destination_options(UDP));
        first.extend(udp(ALLOWED_PORT, 8));
        attacks.push(Attack {
            name: "an IPv6 first fragment whose UDP header lies past its payload length",
            frames: vec![
                first,
                fragment(ends, 60, id, (8, false), &udp(DENIED_PORT, 8)),
            ],
            counter: "drop_fragment_tiny",
        });
    } else {
        let id = next_id();
        let datagram = udp(ALLOWED_PORT, 24);
        attacks.push(Attack {
            name: "an IPv4 non-first fragment at offset 8 overlapping the first fragment",
            frames: vec![
                fragment(ends, UDP, id, (0, true), &datagram[..16]),
                fragment(ends, UDP, id, (8, false), &datagram[8..]),
            ],
            counter: "drop_fragment_overlap",
        });
        // A lone fragment at offset 2048: the offset lies in the high byte of
        // the field alone, and its payload is a UDP header to the allowed port.
        // Read as a whole packet, it would be allowed on those ports.
        attacks.push(Attack {
            name: "a lone IPv4 non-first fragment whose offset lies in the high byte alone, carrying a UDP header to the allowed port",
            frames: vec![fragment(ends, UDP, next_id(), (2048, false), &udp(ALLOWED_PORT, 8))],
            counter: "drop_fragment_unknown",
        });
        let id = next_id();
        let datagram = udp(ALLOWED_PORT, 24);
        attacks.push(Attack {
            name: "an IPv4 first fragment of only a UDP header (RFC 1858's tiny fragment)",
            frames: vec![
                fragment(ends, UDP, id, (0, true), &datagram[..8]),
                fragment(ends, UDP, id, (8, false), &datagram[8..]),
            ],
            counter: "drop_fragment_tiny",
        });
    }
    attacks
}

#[test]
fn crafted_fragments_from_a_pod_reach_neither_port_and_are_counted() {
    let mut net = server_and_client();
    let tables = tables(&net, Isolation::ClientEgress);
    net.apply(&tables);
    let (client_ns, server_ns) = (
        net.pod("client").netns.clone(),
        net.pod("server").netns.clone(),
    );
    for reassembly in [false, true] {
        if reassembly {
            node_reassembles(&net, true);
        }
        for (client, server) in [
            (addr(CLIENT_V4), addr(SERVER_V4)),
            (addr(CLIENT_V6), addr(SERVER_V6)),
        ] {
            let receivers =
                [ALLOWED_PORT, DENIED_PORT].map(|port| Receiver::bind(&server_ns, server, port));
            // The same crafting, well formed, arrives: so "nothing arrives" below
            // is the datapath's (or the receiver's) doing, not a broken frame.
            let datagram = udp_checksummed(
                client,
                server,
                super::fragment_frames::udp_datagram(41000, ALLOWED_PORT, 40),
            );
            let whole: Vec<Vec<u8>> = fragments((client, server), UDP, next_id(), &datagram, 16)
                .into_iter()
                .map(from_client)
                .collect();
            send_frames(&client_ns, "eth0", &whole);
            assert!(
                receivers[0].any(),
                "reassembly {reassembly}: a well-formed crafted datagram to {server}"
            );
            for Attack {
                name,
                frames,
                counter,
            } in attacks(client, server)
            {
                let before = net.stats();
                let frames: Vec<Vec<u8>> = frames.into_iter().map(from_client).collect();
                send_frames(&client_ns, "eth0", &frames);
                let what = format!("{name} (reassembly {reassembly})");
                assert!(
                    receivers.iter().all(|r| !r.any()),
                    "{what}: something arrived"
                );
                let after = net.stats();
                assert_eq!(
                    after.get(counter),
                    before.get(counter) + 1,
                    "{what}: {counter}: {:?}",
                    moved(&before, &after)
                );
            }
        }
        if reassembly {
            node_reassembles(&net, false);
        }
    }
}

#[test]
fn large_datagrams_through_a_service_are_decided_on_the_backend_and_echoed() {
    let mut net = server_and_client();
    // A ClusterIP per family, DNAT to the server on the same port: NAT needs
    // conntrack, so the node reassembles every datagram on its way.
    net.nft(&format!(
        "table ip svc {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n \
           ip daddr 10.96.0.10 udp dport {ALLOWED_PORT} dnat to {SERVER_V4}:{ALLOWED_PORT}\n }}\n}}\n\
         table ip6 svc {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n \
           ip6 daddr fd96::10 udp dport {ALLOWED_PORT} dnat to [{SERVER_V6}]:{ALLOWED_PORT}\n }}\n}}\n"
    ));
    // Both isolated both ways: the client's egress to the Service is decided at the
    // server's side after DNAT, and the echo passes the client's ingress only as
    // a verified reply.
    let tables = Tables::new(&net)
        .isolate("client", true, true)
        .isolate("server", true, true)
        .pod_class("server", 5)
        .pod_class("client", 3)
        .service("10.96.0.10/32")
        .service("fd96::10/128")
        .allow_port("client", Direction::Egress, 5, UDP, ALLOWED_PORT)
        .allow_port("server", Direction::Ingress, 3, UDP, ALLOWED_PORT)
        .build();
    net.apply(&tables);
    let servers = [addr(SERVER_V4), addr(SERVER_V6)];
    let _echo = EchoServer::start(&net.pod("server").netns, &servers, ALLOWED_PORT);
    let client = net.pod("client").netns.clone();
    let before = net.stats();
    for vip in [addr("10.96.0.10"), addr("fd96::10")] {
        for size in SIZES {
            assert!(
                echoed(&client, vip, ALLOWED_PORT, size),
                "{size} bytes via {vip}"
            );
        }
    }
    let after = net.stats();
    assert!(
        after.get("allow_deferred_egress") > before.get("allow_deferred_egress"),
        "{after:?}"
    );
    assert_eq!(drops(&before, &after), [], "nothing dropped");
}
