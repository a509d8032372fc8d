//! Service egress to a backend on another node, on real veths: the client's egress
//! to a ClusterIP is deferred past DNAT, and when the backend runs elsewhere the
//! translated packet meets no pod's classifier on this node. `node_exit` on the
//! node's uplink decides it there, and `node_entry` marks its replies so the
//! client's ingress lets them in. The other node is a namespace behind the uplink,
//! holding the backend's addresses; a Service is an nftables DNAT rule in the node
//! namespace, as kube-proxy makes it. Large datagrams, which the node reassembles
//! for DNAT and fragments again on the uplink, pass whole or not at all.

use std::net::IpAddr;

use ipnet::IpNet;
use policy_agent::{
    dataplane::{Frames, Stats},
    policy::tables::{DatapathTables, Direction, PeerEntry},
};

use super::{
    addr,
    frames::{TCP, UDP},
    net::{moved, Net},
    pods::{CLIENT_V4, CLIENT_V6, CLUSTER_IPS},
    probe,
    support::{
        self,
        remote::{RemoteNode, UPLINK},
    },
    tables::Tables,
};

/// The backend on the other node, per family (its class is `BACKEND_CLASS`).
pub(super) const BACKENDS: [&str; 2] = ["10.9.0.20", "fd00:9::20"];
const BACKEND_CLASS: u32 = 7;
/// The Service's port, and the backend's port it is translated to.
pub(super) const SERVICE_PORT: u16 = 80;
pub(super) const BACKEND_PORT: u16 = 8080;
/// A port the client's egress allows instead, in the denying tables.
pub(super) const OTHER_PORT: u16 = 9090;

/// The client alone on this node, the backend on another node behind `uplink0`,
/// and a ClusterIP per family translated to it (TCP and UDP).
fn client_and_remote_backend(exits: bool) -> (Net, RemoteNode) {
    support::require_root_and_bpf();
    // Not quieted: IPv6 stays on (the uplink resolves its neighbour with ND).
    let mut net = Net::up(&[("client", CLIENT_V4, CLIENT_V6)]);
    let backends = BACKENDS.map(addr);
    let remote = net.add_remote_node(&backends);
    let uplink = UPLINK;
    net.translate_cluster_ips(BACKENDS, &["tcp", "udp"], SERVICE_PORT, BACKEND_PORT);
    if exits {
        net.on_node("attach the exit classifiers", |datapath| {
            datapath.attach_exit(uplink, Frames::Ethernet)
        });
    }
    (net, remote)
}

/// The client isolated both ways, its egress allowed to the backend's class on
/// `port` (TCP and UDP), its ingress allowing nothing: the backend's answers get
/// in only as verified replies. The ClusterIPs are Service addresses.
pub(super) fn client_egress_to_backend(net: &Net, port: u16) -> DatapathTables {
    let [vip4, vip6] = CLUSTER_IPS;
    let [b4, b6] = BACKENDS;
    Tables::new(net)
        .isolate("client", true, true)
        .isolated_by("client", &[0], &[0])
        .prefix(&format!("{b4}/32"), BACKEND_CLASS)
        .prefix(&format!("{b6}/128"), BACKEND_CLASS)
        .service(&format!("{vip4}/32"))
        .service(&format!("{vip6}/128"))
        .allow_port("client", Direction::Egress, BACKEND_CLASS, TCP, port)
        .allow_port("client", Direction::Egress, BACKEND_CLASS, UDP, port)
        .build()
}

/// Whether the client reaches the backend through each ClusterIP: a TCP connect
/// (nothing listens: the backend's refusal proves the SYN arrived and the answer
/// came back) and a UDP datagram to a listener there.
fn through_services(net: &Net, remote: &RemoteNode) -> Vec<(IpAddr, &'static str, bool)> {
    let client = net.pod("client").netns.clone();
    let mut seen = Vec::new();
    for (vip, backend) in CLUSTER_IPS.map(addr).into_iter().zip(BACKENDS.map(addr)) {
        seen.push((vip, "tcp", probe::tcp(&client, None, vip, SERVICE_PORT)));
        let receiver = probe::udp_listener(&remote.netns, backend, BACKEND_PORT);
        let payload = format!("to {vip}");
        probe::send_udp(&client, vip, SERVICE_PORT, payload.as_bytes());
        seen.push((vip, "udp", probe::receives(&receiver, payload.as_bytes())));
    }
    seen
}

/// How much each counter grew from `before` to `after`, and every counter that
/// moved (for messages).
fn growth<'a>(
    before: &'a Stats,
    after: &'a Stats,
) -> (impl Fn(&str) -> u64 + 'a, Vec<(&'static str, u64)>) {
    (
        move |name: &str| after.get(name) - before.get(name),
        moved(before, after),
    )
}

#[test]
fn a_service_egress_to_a_backend_on_another_node_passes_when_the_clients_egress_allows_the_backend()
{
    let (mut net, remote) = client_and_remote_backend(true);
    let tables = client_egress_to_backend(&net, BACKEND_PORT);
    net.apply(&tables);
    let before = net.stats();
    for (vip, protocol, reached) in through_services(&net, &remote) {
        assert!(reached, "{protocol} through {vip} to the remote backend");
    }
    let after = net.stats();
    let (grew, moved) = growth(&before, &after);
    // Two families, TCP and UDP: each flow's first packet decided at the exit.
    assert!(grew("allow_service_egress") >= 4, "{moved:?}");
    assert!(grew("allow_deferred_egress") >= 4, "{moved:?}");
    assert_eq!(
        moved.iter().filter(|(n, _)| n.starts_with("drop_")).count(),
        0,
        "{moved:?}"
    );
}

#[test]
fn a_service_egress_to_a_backend_on_another_node_is_dropped_where_it_leaves_when_denied() {
    let (mut net, remote) = client_and_remote_backend(true);
    let tables = client_egress_to_backend(&net, OTHER_PORT);
    net.apply(&tables);
    let before = net.stats();
    for (vip, protocol, reached) in through_services(&net, &remote) {
        assert!(
            !reached,
            "{protocol} through {vip} reached a backend the client's egress denies"
        );
    }
    let after = net.stats();
    let (grew, moved) = growth(&before, &after);
    assert!(grew("drop_deferred_egress") >= 4, "{moved:?}");
    assert_eq!(grew("allow_service_egress"), 0, "{moved:?}");
}

/// Whether a UDP datagram of `size` bytes from the client through each ClusterIP
/// reaches the backend whole.
fn large_datagrams_through_services(net: &Net, remote: &RemoteNode, size: usize) -> Vec<bool> {
    let client = net.pod("client").netns.clone();
    CLUSTER_IPS
        .map(addr)
        .into_iter()
        .zip(BACKENDS.map(addr))
        .map(|(vip, backend)| {
            let receiver = probe::udp_listener(&remote.netns, backend, BACKEND_PORT);
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            probe::send_udp(&client, vip, SERVICE_PORT, &payload);
            probe::receives(&receiver, &payload)
        })
        .collect()
}

#[test]
fn large_datagrams_to_a_backend_on_another_node_pass_whole_when_allowed_and_not_at_all_when_denied()
{
    let (mut net, remote) = client_and_remote_backend(true);
    // Allowed: the node refragments each reassembled datagram on the uplink, and
    // `node_exit` gives the later fragments their first fragment's ports.
    net.apply(&client_egress_to_backend(&net, BACKEND_PORT));
    for size in [3000, 8000] {
        assert_eq!(
            large_datagrams_through_services(&net, &remote, size),
            [true, true],
            "{size} bytes through each ClusterIP to the remote backend"
        );
    }
    net.apply(&client_egress_to_backend(&net, OTHER_PORT));
    for size in [3000, 8000] {
        assert_eq!(
            large_datagrams_through_services(&net, &remote, size),
            [false, false],
            "{size} bytes reached a backend the client's egress denies"
        );
    }
}

/// A Service that names the remote backend's own address (an external IP),
/// reached on a port nothing translates: the client's packet leaves deferred,
/// `node_exit` judges the client's egress by the backend's class, and `node_entry`
/// verifies no answer on the strength of the client's deferred entry: a denied
/// datagram's tuple does not let the other node's answers in past the client's
/// ingress. Allowed by class, both ways pass.
#[test]
fn a_service_naming_a_remote_pods_address_opens_nothing_past_the_clients_policy() {
    let (mut net, remote) = client_and_remote_backend(true);
    let client = net.pod("client").netns.clone();
    let named = |port| {
        let mut tables = client_egress_to_backend(&net, port);
        for backend in BACKENDS.map(addr) {
            tables.peers.insert(
                IpNet::from(backend),
                PeerEntry {
                    class_id: BACKEND_CLASS,
                    node: false,
                    service: true,
                },
            );
        }
        tables
    };
    let (denied, allowed) = (named(OTHER_PORT), named(BACKEND_PORT));
    for (tables, allows) in [(&denied, false), (&allowed, true)] {
        net.apply(tables);
        for (i, (client_address, backend)) in [CLIENT_V4, CLIENT_V6]
            .map(addr)
            .into_iter()
            .zip(BACKENDS.map(addr))
            .enumerate()
        {
            let port = 47000 + 10 * u16::from(allows) + i as u16;
            let at_client = probe::udp_listener(&client, client_address, port);
            let at_backend = probe::udp_listener(&remote.netns, backend, BACKEND_PORT);
            let send = |from: &socket2::Socket, to: (IpAddr, u16), payload: &[u8]| {
                from.send_to(
                    payload,
                    &socket2::SockAddr::from(std::net::SocketAddr::from(to)),
                )
                .unwrap_or_else(|e| panic!("send to {to:?}: {e}"));
            };
            send(&at_client, (backend, BACKEND_PORT), b"out");
            assert_eq!(
                probe::receives(&at_backend, b"out"),
                allows,
                "{backend}: the client's datagram (allowed: {allows})"
            );
            send(&at_backend, (client_address, port), b"answer");
            assert_eq!(
                probe::receives(&at_client, b"answer"),
                allows,
                "{client_address}: the backend's answer (allowed: {allows})"
            );
        }
    }
}

/// ICMP errors about a client's Service flow to a backend on another node: the
/// backend's own port unreachable, verified at `node_entry` (the client tracks
/// the translated flow `node_exit` allowed) and un-translated by the node, gets
/// into the client past its ingress, which allows nothing; once the egress
/// denies the backend, an error the other node makes up about the dropped
/// datagram does not.
#[test]
fn a_remote_backends_error_gets_in_only_for_a_flow_its_exit_allowed() {
    let (mut net, remote) = client_and_remote_backend(true);
    let client_ns = net.pod("client").netns.clone();
    let clients = [CLIENT_V4, CLIENT_V6].map(addr);
    let allowing = client_egress_to_backend(&net, BACKEND_PORT);
    net.apply(&allowing);
    for ((client, vip), _) in clients.into_iter().zip(CLUSTER_IPS.map(addr)).zip(BACKENDS) {
        assert!(
            probe::udp_refused(&client_ns, client, vip, SERVICE_PORT).1,
            "the remote backend's port unreachable through {vip}"
        );
    }
    let denying = client_egress_to_backend(&net, OTHER_PORT);
    net.apply(&denying);
    for ((client, vip), backend) in clients
        .into_iter()
        .zip(CLUSTER_IPS.map(addr))
        .zip(BACKENDS.map(addr))
    {
        let (socket, _) = probe::udp_refused(&client_ns, client, vip, SERVICE_PORT);
        let port = socket.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        let quoted = super::frames::ip(
            client,
            backend,
            UDP,
            &super::frames::udp(port, BACKEND_PORT),
        );
        probe::send_port_unreachable(&remote.netns, client, &quoted);
        assert!(
            !probe::socket_refused(&socket),
            "the other node's made-up error through {vip} reached {client} past its ingress"
        );
    }
}
