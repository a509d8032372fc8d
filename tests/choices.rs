//! The choices NetworkPolicy leaves open, pinned on real packets (docs/semantics.md, "Choices
//! the spec leaves open"): established flows across a policy change (cut by
//! default, kept with `--keep-established-flows`), a reused source port after one,
//! and a Service ClusterIP named in an ipBlock.

mod support;

use std::{
    io::{ErrorKind, Read},
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use policy_agent::{
    lab::{
        flowlog,
        probe::{Family, ProbeRoute},
        Lab, LabOptions,
    },
    model::{
        builders::{cluster, netpol, pod, rule, selector, service},
        ClusterState, ObjectRef, PortRef, Protocol,
    },
};
use policy_common::config::{Config, CONFIG_FLAG_KEEP_ESTABLISHED};
use socket2::{Domain, SockAddr, Socket, Type};

const TIMEOUT: Duration = Duration::from_millis(1000);

/// A client and a server pod (TCP 80, UDP 53), no policy.
fn client_and_server() -> ClusterState {
    cluster()
        .pod(pod("x", "client").labels([("app", "client")]).build())
        .pod(
            pod("x", "server")
                .labels([("app", "server")])
                .port(80, Protocol::Tcp)
                .port(53, Protocol::Udp)
                .build(),
        )
        .build()
}

/// `state` plus a policy isolating the server for ingress with no rules.
fn with_server_deny_all(mut state: ClusterState) -> ClusterState {
    let policy = netpol("x", "server-deny-all")
        .select(selector().label("app", "server").build())
        .types(true, false)
        .build();
    state.policies.insert(policy.key.clone(), policy);
    state
}

fn server_v4(lab: &Lab) -> IpAddr {
    lab.pod_address(&ObjectRef::new("x", "server"), Family::Ipv4)
        .unwrap_or_else(|e| panic!("address: {e}"))
}

/// A UDP socket in `pod`, connected to `server`, waiting at most `TIMEOUT` to read.
fn udp_socket_in(lab: &Lab, pod: &ObjectRef, server: SocketAddr) -> UdpSocket {
    lab.in_pod(pod, || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        socket.connect(server)?;
        Ok::<_, std::io::Error>(socket)
    })
    .unwrap_or_else(|e| panic!("netns: {e}"))
    .unwrap_or_else(|e| panic!("socket: {e}"))
}

/// Sends `payload` on a connected UDP socket and reports whether the echo came back.
fn echoes(socket: &UdpSocket, payload: &[u8]) -> bool {
    if let Err(error) = socket.send(payload) {
        panic!("udp send: {error}");
    }
    let mut buffer = [0u8; 64];
    match socket.recv(&mut buffer) {
        Ok(n) => &buffer[..n] == payload,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("udp recv: {e}"),
    }
}

/// A lab of `client_and_server` with the classifiers' settings `config`, a UDP
/// flow from the client to the server's port 53 that echoes, then the server's
/// ingress denied to all: whether the flow echoes after the change, and whether a
/// new flow does.
fn flow_across_a_denying_change(config: &Config) -> (bool, bool) {
    support::require_root_and_bpf();
    let options = LabOptions {
        config: *config,
        ..LabOptions::default()
    };
    let mut lab =
        Lab::up_with(client_and_server(), &[], &options).unwrap_or_else(|e| panic!("lab: {e}"));
    let server = SocketAddr::new(server_v4(&lab), 53);
    let client = ObjectRef::new("x", "client");
    let established = udp_socket_in(&lab, &client, server);
    assert!(
        echoes(&established, b"before"),
        "no policy: the flow passes"
    );
    lab.update(with_server_deny_all(lab.state().clone()))
        .unwrap_or_else(|e| panic!("update: {e}"));
    let kept = echoes(&established, b"after");
    let fresh = udp_socket_in(&lab, &client, server);
    (kept, echoes(&fresh, b"new"))
}

#[test]
fn an_established_flow_is_cut_by_a_policy_change_that_denies_it_and_new_ones_meet_it_too() {
    let (kept, fresh) = flow_across_a_denying_change(&flowlog::lab_config());
    assert!(
        !kept,
        "the first packet after the change re-decides the flow, and the new policy denies it"
    );
    assert!(!fresh, "a new flow meets the new policy");
}

#[test]
fn with_keep_established_flows_an_established_flow_keeps_passing_and_new_ones_do_not() {
    let keep = Config {
        flags: flowlog::lab_config().flags | CONFIG_FLAG_KEEP_ESTABLISHED,
        ..flowlog::lab_config()
    };
    let (kept, fresh) = flow_across_a_denying_change(&keep);
    assert!(
        kept,
        "the flow was allowed when it began, so it keeps passing (as in Cilium and Calico)"
    );
    assert!(!fresh, "a new flow meets the new policy");
}

/// Connects from `client` to `server` with the local port `port` and reports whether
/// the handshake completed; the socket is closed with a reset so the port is free
/// again at once (no TIME_WAIT).
fn tcp_connects_from_port(lab: &Lab, client: &ObjectRef, port: u16, server: SocketAddr) -> bool {
    lab.in_pod(client, || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_linger(Some(Duration::ZERO))?;
        socket.bind(&SockAddr::from(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port,
        )))?;
        let connected = socket.connect_timeout(&SockAddr::from(server), TIMEOUT);
        // The server accepts and closes: read its FIN so the handshake is proven.
        if connected.is_ok() {
            let mut stream = std::net::TcpStream::from(socket);
            stream.set_read_timeout(Some(TIMEOUT))?;
            let _ = stream.read(&mut [0u8; 1]);
        }
        Ok::<_, std::io::Error>(connected.is_ok())
    })
    .unwrap_or_else(|e| panic!("netns: {e}"))
    .unwrap_or_else(|e| panic!("socket: {e}"))
}

#[test]
fn a_new_connection_on_a_reused_source_port_meets_the_current_policy() {
    support::require_root_and_bpf();
    let mut lab = Lab::up(client_and_server(), &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let server = SocketAddr::new(server_v4(&lab), 80);
    let client = ObjectRef::new("x", "client");
    let port = 40_123;
    assert!(
        tcp_connects_from_port(&lab, &client, port, server),
        "no policy: the first connection from port {port} is allowed"
    );
    lab.update(with_server_deny_all(lab.state().clone()))
        .unwrap_or_else(|e| panic!("update: {e}"));
    assert!(
        !tcp_connects_from_port(&lab, &client, port, server),
        "the same 4-tuple opening a new connection (SYN) is decided by today's policy, \
         not by the tracked verdict of the old connection"
    );
}

#[test]
fn an_ipblock_naming_a_service_clusterip_does_not_admit_its_backends() {
    support::require_root_and_bpf();
    // The client may send only to the Service's ClusterIP (by ipBlock). Egress is
    // decided on the backend after DNAT, as in Cilium and Calico, so that admits
    // nothing; an ipBlock holding the backend's pod address does.
    let cluster_ip = "10.96.7.7";
    let base = cluster()
        .pod(pod("x", "client").labels([("app", "client")]).build())
        .pod(
            pod("x", "backend")
                .labels([("app", "backend")])
                .port(80, Protocol::Tcp)
                .build(),
        )
        .service(
            service("x", "backend")
                .selector([("app", "backend")])
                .cluster_ip(cluster_ip)
                .port(80, PortRef::Number(80), Protocol::Tcp)
                .build(),
        )
        .build();
    let egress_to = |cidr: &str| {
        let mut state = base.clone();
        let policy = netpol("x", "client-egress")
            .select(selector().label("app", "client").build())
            .egress(rule().to_ip_block(cidr, []).build())
            .build();
        state.policies.insert(policy.key.clone(), policy);
        state
    };
    let mut lab =
        Lab::up(egress_to(&format!("{cluster_ip}/32")), &[]).unwrap_or_else(|e| panic!("lab: {e}"));
    let specs: Vec<_> = lab
        .probe_specs(&[])
        .into_iter()
        .filter(|s| s.from == ObjectRef::new("x", "client"))
        .collect();
    assert_eq!(specs.len(), 1, "one probe: client -> backend 80/TCP");
    let reached = |lab: &Lab| {
        lab.probe_via(&specs, ProbeRoute::Service, TIMEOUT)
            .unwrap_or_else(|e| panic!("probe: {e}"))[0]
            .allowed
    };
    assert!(
        !reached(&lab),
        "an ipBlock of the ClusterIP alone admits nothing"
    );

    let backend = lab
        .pod_address(&ObjectRef::new("x", "backend"), Family::Ipv4)
        .unwrap_or_else(|e| panic!("address: {e}"));
    lab.update(egress_to(&format!("{backend}/32")))
        .unwrap_or_else(|e| panic!("update: {e}"));
    assert!(
        reached(&lab),
        "an ipBlock of the backend pod admits the Service path"
    );
}
