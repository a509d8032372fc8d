//! Service egress to a backend that is the node itself (a hostNetwork pod), on
//! real veths: kube-proxy translates the ClusterIP to one of the node's addresses,
//! so the translated packet is delivered to a socket of the node and meets no
//! pod's classifier and no exit. `node_sockets`, on the node's network namespace,
//! decides the client's egress there, on the node's address, class and port. A
//! Service is an nftables DNAT rule in the node namespace, as kube-proxy makes it;
//! the backend is a TCP and a UDP socket of the node.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use policy_agent::{
    dataplane::{Datapath, LoadOptions},
    policy::tables::{DatapathTables, Direction, PeerEntry},
};
use policy_common::config::{Config, CONFIG_FLAG_KEEP_ESTABLISHED};

use super::{
    addr,
    frames::{TCP, UDP},
    net::{moved, Net},
    pods::{CLIENT_V4, CLIENT_V6, CLUSTER_IPS},
    probe, support,
    tables::Tables,
};

/// The node's own addresses, per family (class `NODE_CLASS`).
const NODE_ADDRESSES: [&str; 2] = ["10.10.0.1", "fd00:10:10::1"];
const NODE_CLASS: u32 = 9;
/// The Service's port, and the node's port it is translated to.
const SERVICE_PORT: u16 = 80;
pub(super) const BACKEND_PORT: u16 = 8080;
/// A port the client's egress allows instead, in the denying tables.
pub(super) const OTHER_PORT: u16 = 9090;
/// How long a connection attempt waits.
const WAIT: Duration = Duration::from_millis(800);

/// The client alone on this node, the node's addresses on its loopback, and a
/// ClusterIP per family translated to the node's address of that family (TCP and
/// UDP); `node_sockets` attached when `sockets` says so.
fn client_and_node_backend(sockets: bool) -> Net {
    client_and_node_backend_with(sockets, &LoadOptions::default())
}

/// `client_and_node_backend` with the datapath loaded with `options`.
fn client_and_node_backend_with(sockets: bool, options: &LoadOptions) -> Net {
    support::require_root_and_bpf();
    let mut net = Net::up_with(&[("client", CLIENT_V4, CLIENT_V6)], options);
    serve_from_the_node(&mut net, sockets);
    net
}

/// Gives `net`'s node its addresses and a ClusterIP per family translated to
/// them; attaches `node_sockets` when `sockets` says so.
pub(super) fn serve_from_the_node(net: &mut Net, sockets: bool) {
    net.add_node_addresses(&NODE_ADDRESSES.map(addr));
    net.translate_cluster_ips(NODE_ADDRESSES, &["tcp", "udp"], SERVICE_PORT, BACKEND_PORT);
    if sockets {
        net.on_node("attach node_sockets", Datapath::attach_node_sockets);
    }
}

/// The client isolated for egress only, allowed to the node's class on `port`
/// (TCP and UDP); the ClusterIPs are Service addresses.
pub(super) fn client_egress_to_node(net: &Net, port: u16) -> DatapathTables {
    let [vip4, vip6] = CLUSTER_IPS;
    let [n4, n6] = NODE_ADDRESSES;
    Tables::new(net)
        .isolate("client", false, true)
        .isolated_by("client", &[], &[0])
        .prefix(&format!("{n4}/32"), NODE_CLASS)
        .prefix(&format!("{n6}/128"), NODE_CLASS)
        .service(&format!("{vip4}/32"))
        .service(&format!("{vip6}/128"))
        .allow_port("client", Direction::Egress, NODE_CLASS, TCP, port)
        .allow_port("client", Direction::Egress, NODE_CLASS, UDP, port)
        .build()
}

/// Each family's ClusterIP and the node address it is translated to.
fn services_and_node() -> impl Iterator<Item = (IpAddr, IpAddr)> {
    CLUSTER_IPS
        .map(addr)
        .into_iter()
        .zip(NODE_ADDRESSES.map(addr))
}

/// Whether the client's TCP handshake to `to` completes (a refusal does not count:
/// a dropped lookup is answered with a reset).
fn connects(net: &Net, to: IpAddr, port: u16) -> bool {
    let client = net.pod("client").netns.clone();
    Net::in_ns(&client, || {
        TcpStream::connect_timeout(&SocketAddr::new(to, port), WAIT).is_ok()
    })
}

/// Whether the client reaches the node's sockets through each ClusterIP (or,
/// with `direct`, at the node's addresses themselves): a TCP handshake with a
/// listener and a UDP datagram to a receiver.
pub(super) fn to_node_sockets(net: &Net, direct: bool) -> Vec<(IpAddr, &'static str, bool)> {
    let client = net.pod("client").netns.clone();
    let mut seen = Vec::new();
    for (vip, node) in CLUSTER_IPS
        .map(addr)
        .into_iter()
        .zip(NODE_ADDRESSES.map(addr))
    {
        let (to, port) = if direct {
            (node, BACKEND_PORT)
        } else {
            (vip, SERVICE_PORT)
        };
        let listener = Net::in_ns(&net.node, || TcpListener::bind((node, BACKEND_PORT)))
            .unwrap_or_else(|e| panic!("listen on {node}: {e}"));
        seen.push((to, "tcp", connects(net, to, port)));
        drop(listener);
        let receiver = probe::udp_listener(&net.node, node, BACKEND_PORT);
        let payload = format!("to {to}");
        probe::send_udp(&client, to, port, payload.as_bytes());
        seen.push((to, "udp", probe::receives(&receiver, payload.as_bytes())));
    }
    seen
}

#[test]
fn a_service_egress_to_the_node_itself_is_dropped_at_its_socket_when_the_clients_egress_denies_it()
{
    let mut net = client_and_node_backend(true);
    net.apply(&client_egress_to_node(&net, OTHER_PORT));
    let before = net.stats();
    for (vip, protocol, reached) in to_node_sockets(&net, false) {
        assert!(
            !reached,
            "{protocol} through {vip} reached the node, which the client's egress denies"
        );
    }
    let after = net.stats();
    let grew = |name: &str| after.get(name) - before.get(name);
    // Two families, TCP and UDP (a refused handshake may retry its SYN).
    assert!(
        grew("drop_deferred_egress") >= 4,
        "{:?}",
        moved(&before, &after)
    );
    assert_eq!(
        grew("allow_service_egress"),
        0,
        "{:?}",
        moved(&before, &after)
    );
}

#[test]
fn a_service_egress_to_the_node_itself_passes_when_the_clients_egress_allows_the_node() {
    let mut net = client_and_node_backend(true);
    net.apply(&client_egress_to_node(&net, BACKEND_PORT));
    let before = net.stats();
    for (vip, protocol, reached) in to_node_sockets(&net, false) {
        assert!(reached, "{protocol} through {vip} to the node");
    }
    let after = net.stats();
    let grew = |name: &str| after.get(name) - before.get(name);
    assert!(
        grew("allow_service_egress") >= 4,
        "{:?}",
        moved(&before, &after)
    );
    assert!(
        grew("allow_deferred_egress") >= 4,
        "{:?}",
        moved(&before, &after)
    );
    assert_eq!(
        grew("drop_deferred_egress"),
        0,
        "{:?}",
        moved(&before, &after)
    );
}

#[test]
fn a_client_isolated_both_ways_gets_the_nodes_answers_when_its_egress_allows_the_node() {
    // Its ingress admits nothing: the node's SYN-ACK, un-DNATed to the ClusterIP,
    // gets in only as the verified reply of the flow `node_sockets` allowed.
    let mut net = client_and_node_backend(true);
    let allowed = |net: &Net, port| {
        let mut tables = client_egress_to_node(net, port);
        for endpoint in tables.endpoints.values_mut() {
            endpoint.isolated_ingress = true;
        }
        tables
    };
    net.apply(&allowed(&net, BACKEND_PORT));
    for (vip, node) in services_and_node() {
        let _listener = Net::in_ns(&net.node, || TcpListener::bind((node, BACKEND_PORT)))
            .unwrap_or_else(|e| panic!("listen on {node}: {e}"));
        assert!(
            connects(&net, vip, SERVICE_PORT),
            "TCP through {vip}: the node's answers reach the isolated client"
        );
    }
    net.apply(&allowed(&net, OTHER_PORT));
    for (vip, node) in services_and_node() {
        let _listener = Net::in_ns(&net.node, || TcpListener::bind((node, BACKEND_PORT)))
            .unwrap_or_else(|e| panic!("listen on {node}: {e}"));
        assert!(
            !connects(&net, vip, SERVICE_PORT),
            "TCP through {vip}, denied"
        );
    }
}

#[test]
fn traffic_sent_to_the_node_address_itself_is_decided_once_at_the_pod() {
    let mut net = client_and_node_backend(true);
    net.apply(&client_egress_to_node(&net, BACKEND_PORT));
    let before = net.stats();
    for (node, protocol, reached) in to_node_sockets(&net, true) {
        assert!(
            reached,
            "{protocol} to the node at {node}, which the client's egress allows"
        );
    }
    let after = net.stats();
    let grew = |name: &str| after.get(name) - before.get(name);
    // Tracked at the pod's veth: the node's socket finds the flow and neither
    // decides nor counts it again.
    assert_eq!(
        grew("allow_service_egress"),
        0,
        "{:?}",
        moved(&before, &after)
    );
    assert!(grew("allow_policy") >= 4, "{:?}", moved(&before, &after));
    net.apply(&client_egress_to_node(&net, OTHER_PORT));
    for (node, protocol, reached) in to_node_sockets(&net, true) {
        assert!(
            !reached,
            "{protocol} to the node at {node}, which the client's egress denies"
        );
    }
}

#[test]
fn without_node_sockets_a_denied_service_egress_reaches_the_node() {
    // What `node_sockets` closes: the translated packet crosses no classifier.
    let mut net = client_and_node_backend(false);
    net.apply(&client_egress_to_node(&net, OTHER_PORT));
    let reached: Vec<bool> = to_node_sockets(&net, false).iter().map(|r| r.2).collect();
    assert_eq!(
        reached, [true; 4],
        "the DNAT to the node's address is in place"
    );
}

#[test]
fn a_service_address_the_node_holds_itself_is_refused_at_its_socket() {
    // No DNAT: the node has the ClusterIP on its loopback and a socket on it (as
    // NodeLocal DNSCache binds the DNS ClusterIP). The client's deferred egress
    // is the flow itself, untranslated: nothing decided it, and a Service address
    // has nothing to be judged on.
    let mut net = Net::up(&[("client", CLIENT_V4, CLIENT_V6)]);
    let vip = addr(CLUSTER_IPS[0]);
    net.add_node_addresses(&[vip]);
    net.on_node("attach node_sockets", Datapath::attach_node_sockets);
    net.apply(&client_egress_to_node(&net, SERVICE_PORT));
    let _listener = Net::in_ns(&net.node, || TcpListener::bind((vip, SERVICE_PORT)))
        .unwrap_or_else(|e| panic!("listen on {vip}: {e}"));
    let before = net.stats();
    assert!(
        !connects(&net, vip, SERVICE_PORT),
        "reached {vip} held by the node"
    );
    let after = net.stats();
    assert!(
        after.get("drop_deferred_egress") > before.get("drop_deferred_egress"),
        "{:?}",
        moved(&before, &after)
    );
}

#[test]
fn a_pod_speaking_from_its_link_local_address_is_refused_at_the_nodes_socket() {
    // Its own classifier lets a link-local source out (neighbour discovery); after
    // DNAT to the node the flow names no pod, so its egress cannot be judged.
    let mut net = client_and_node_backend(true);
    net.apply(&client_egress_to_node(&net, OTHER_PORT));
    let [_, vip6] = CLUSTER_IPS.map(addr);
    let node6 = addr(NODE_ADDRESSES[1]);
    let _listener = Net::in_ns(&net.node, || TcpListener::bind((node6, BACKEND_PORT)))
        .unwrap_or_else(|e| panic!("listen on {node6}: {e}"));
    let client = net.pod("client").netns.clone();
    let reached = Net::in_ns(&client, || {
        let link_local = std::fs::read_to_string("/proc/thread-self/net/if_inet6")
            .unwrap_or_default()
            .lines()
            .find(|line| line.starts_with("fe80") && line.ends_with("eth0"))
            .and_then(|line| {
                let hex = line.split_whitespace().next()?;
                let bytes: Vec<u8> = (0..16)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect::<Option<_>>()?;
                let index: u32 = u32::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()?;
                let octets: [u8; 16] = bytes.try_into().ok()?;
                Some(std::net::SocketAddrV6::new(octets.into(), 0, 0, index))
            })
            .unwrap_or_else(|| panic!("the client has no link-local address on eth0"));
        let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
            .unwrap_or_else(|e| panic!("{e}"));
        socket
            .bind(&std::net::SocketAddr::V6(link_local).into())
            .unwrap_or_else(|e| panic!("bind {link_local}: {e}"));
        socket
            .connect_timeout(&SocketAddr::new(vip6, SERVICE_PORT).into(), WAIT)
            .is_ok()
    });
    assert!(
        !reached,
        "a link-local source reached the node through {vip6}"
    );
}

/// The node's addresses are Service addresses too (a LoadBalancer whose ingress
/// IPs are the nodes', as k3s's ServiceLB makes them): a flow that kube-proxy
/// translated from a ClusterIP to the node is judged at the node's socket by the
/// node's class, as without that Service; only a flow nothing translated, to a
/// Service address the node holds, has no backend to judge.
#[test]
fn a_service_egress_to_the_node_passes_when_the_nodes_address_is_also_a_service_address() {
    let mut net = client_and_node_backend(true);
    let mut tables = client_egress_to_node(&net, BACKEND_PORT);
    for node in NODE_ADDRESSES.map(addr) {
        tables.peers.insert(
            ipnet::IpNet::from(node),
            PeerEntry {
                class_id: NODE_CLASS,
                node: false,
                service: true,
            },
        );
    }
    net.apply(&tables);
    for (vip, protocol, reached) in to_node_sockets(&net, false) {
        assert!(reached, "{protocol} through {vip} to the node");
    }
}

/// Where the agent keeps established flows, a decision the node's socket made
/// stands only for the state that made it. The client's datagrams through the
/// ClusterIP keep one tuple (one socket) and get no answer, so after a change
/// that no longer allows the node's port, the next one finds the entry the
/// earlier state wrote for it there: it is judged again and refused, not passed
/// as kept; so is a new TCP connection from the port of one the earlier state
/// allowed. A flow the client's own hook decided and the node answered (sent to
/// the node's address itself) is kept across the same change, as its hook keeps
/// it.
#[test]
fn with_kept_flows_a_decision_at_the_nodes_socket_lasts_only_for_its_state() {
    let options = LoadOptions {
        config: Config {
            flags: CONFIG_FLAG_KEEP_ESTABLISHED,
            ..Config::DEFAULT
        },
        ..LoadOptions::default()
    };
    let mut net = client_and_node_backend_with(true, &options);
    let client = net.pod("client").netns.clone();
    for (vip, node) in services_and_node() {
        let own = addr(if vip.is_ipv4() { CLIENT_V4 } else { CLIENT_V6 });
        let receiver = probe::udp_listener(&net.node, node, BACKEND_PORT);
        let through_service = Net::in_ns(&client, || UdpSocket::bind((own, 0)))
            .unwrap_or_else(|e| panic!("bind in the client: {e}"));
        let direct = Net::in_ns(&client, || UdpSocket::bind((own, 0)))
            .unwrap_or_else(|e| panic!("bind in the client: {e}"));
        direct
            .set_read_timeout(Some(WAIT))
            .unwrap_or_else(|e| panic!("{e}"));
        let send = |socket: &UdpSocket, to: (IpAddr, u16), payload: &[u8]| {
            socket
                .send_to(payload, to)
                .unwrap_or_else(|e| panic!("send to {to:?}: {e}"));
        };
        net.apply(&client_egress_to_node(&net, BACKEND_PORT));
        let listener = Net::in_ns(&net.node, || TcpListener::bind((node, BACKEND_PORT)))
            .unwrap_or_else(|e| panic!("listen on {node}: {e}"));
        let port = connect_from(&client, (own, 0), vip)
            .unwrap_or_else(|| panic!("TCP through {vip} while the client's egress allows it"));
        send(&through_service, (vip, SERVICE_PORT), b"service, allowed");
        assert!(
            probe::receives(&receiver, b"service, allowed"),
            "through {vip} while the client's egress allows the node"
        );
        send(&direct, (node, BACKEND_PORT), b"direct, allowed");
        assert!(
            probe::receives(&receiver, b"direct, allowed"),
            "to {node} while the client's egress allows it"
        );
        let direct_from = direct
            .local_addr()
            .unwrap_or_else(|e| panic!("the client's address: {e}"));
        receiver
            .send_to(b"answer", &socket2::SockAddr::from(direct_from))
            .unwrap_or_else(|e| panic!("answer {direct_from}: {e}"));
        let mut buf = [0u8; 64];
        assert!(
            matches!(direct.recv_from(&mut buf), Ok((6, _))) && &buf[..6] == b"answer",
            "the node's answer to {direct_from}"
        );

        net.apply(&client_egress_to_node(&net, OTHER_PORT));
        let before = net.stats();
        send(&through_service, (vip, SERVICE_PORT), b"service, denied");
        assert!(
            !probe::receives(&receiver, b"service, denied"),
            "through {vip} on the tuple an earlier state allowed at the node's socket"
        );
        let after = net.stats();
        assert_eq!(
            after.get("drop_deferred_egress") - before.get("drop_deferred_egress"),
            1,
            "{:?}",
            moved(&before, &after)
        );
        assert!(
            connect_from(&client, (own, port), vip).is_none(),
            "a new TCP connection through {vip} from port {port}, which an earlier state allowed"
        );
        drop(listener);
        send(&direct, (node, BACKEND_PORT), b"direct, kept");
        assert!(
            probe::receives(&receiver, b"direct, kept"),
            "the answered flow to {node}, kept across the change"
        );
    }
}

/// Connects from `from` (port 0: any) in namespace `netns` to `to`'s Service port
/// and resets the connection at once (no TIME_WAIT keeps the port), returning
/// the local port when the handshake completed.
fn connect_from(netns: &str, from: (IpAddr, u16), to: IpAddr) -> Option<u16> {
    let from = SocketAddr::from(from);
    Net::in_ns(netns, || {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(from),
            socket2::Type::STREAM,
            None,
        )
        .unwrap_or_else(|e| panic!("TCP socket: {e}"));
        socket
            .set_reuse_address(true)
            .unwrap_or_else(|e| panic!("SO_REUSEADDR: {e}"));
        socket
            .bind(&from.into())
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        let port = socket.local_addr().ok()?.as_socket()?.port();
        socket
            .connect_timeout(&SocketAddr::new(to, SERVICE_PORT).into(), WAIT)
            .ok()?;
        socket
            .set_linger(Some(Duration::ZERO))
            .unwrap_or_else(|e| panic!("SO_LINGER: {e}"));
        Some(port)
    })
}
