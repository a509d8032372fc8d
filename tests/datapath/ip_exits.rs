//! Service egress leaving by an exit without Ethernet frames (an IP-in-IP device
//! such as Calico's `tunl0`, WireGuard, tun), on real packets: the node routes the
//! remote backend through a tun device whose other end this test holds, so what
//! leaves by it is read here, and what comes back by it is written here.
//! `node_exit_ip` decides the client's deferred egress before the packet leaves,
//! and `node_entry_ip` marks the backend's answers so a client whose ingress admits
//! nothing gets them, as on an Ethernet exit.

use std::{
    fs::File,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use policy_agent::dataplane::Frames;

use super::{
    addr,
    exits::{client_egress_to_backend, BACKENDS, BACKEND_PORT, OTHER_PORT, SERVICE_PORT},
    frames::{self, UDP},
    net::{moved, Net},
    pods::{CLIENT_V4, CLIENT_V6, CLUSTER_IPS},
    support::{
        self,
        packet::{internet_checksum, transport_checksum},
    },
};

/// The tun device standing in for the node's IP-in-IP or WireGuard device.
const TUN: &str = "tun0";
/// How long a read waits for a packet.
const WAIT: Duration = Duration::from_millis(800);

/// `TUNSETIFF` and the flags of a tun device without packet information.
const TUNSETIFF: u64 = 0x4004_54ca;
const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;

/// This end of the tun device: what the node sends through it is read here.
struct Tun(File);

impl Tun {
    /// Attaches to the persistent tun device `TUN` of namespace `netns`.
    fn open(netns: &str) -> Tun {
        let file = Net::in_ns(netns, || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap_or_else(|e| panic!("open /dev/net/tun: {e}"));
            // struct ifreq: the name, then the flags, padded to 40 bytes.
            let mut request = [0u8; 40];
            request[..TUN.len()].copy_from_slice(TUN.as_bytes());
            request[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
            // SAFETY: TUNSETIFF reads and writes an ifreq, which `request` holds.
            let done =
                unsafe { nix::libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, request.as_mut_ptr()) };
            assert_eq!(
                done,
                0,
                "TUNSETIFF {TUN}: {}",
                std::io::Error::last_os_error()
            );
            file
        });
        let flags = nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))
            .unwrap_or_else(|e| panic!("non-blocking tun: {e}"));
        Tun(file)
    }

    /// Whether a packet holding `payload` leaves by the device within `WAIT`.
    fn sees(&mut self, payload: &[u8]) -> bool {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            match self.0.read(&mut buf) {
                Ok(len) if buf[..len].windows(payload.len()).any(|w| w == payload) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("read {TUN}: {e}"),
            }
        }
        false
    }

    /// Sends `packet` (an IP packet) into the node as if it came out of the tunnel.
    fn inject(&mut self, packet: &[u8]) {
        self.0
            .write_all(packet)
            .unwrap_or_else(|e| panic!("write {TUN}: {e}"));
    }
}

/// The client alone on this node, the backend routed through `TUN`, a ClusterIP
/// per family translated to it (UDP), and the IP exit classifiers on `TUN` when
/// `exit` says so.
fn client_and_backend_through_a_tunnel(exit: bool) -> (Net, Tun) {
    support::require_root_and_bpf();
    let mut net = Net::up(&[("client", CLIENT_V4, CLIENT_V6)]);
    let [b4, b6] = BACKENDS;
    policy_agent::lab::netns::ip_batch(
        Some(&net.node),
        &[
            format!("tuntap add dev {TUN} mode tun"),
            format!("link set {TUN} up"),
            format!("route add {b4}/32 dev {TUN}"),
            format!("route add {b6}/128 dev {TUN}"),
        ],
    )
    .unwrap_or_else(|e| panic!("{TUN}: {e}"));
    let tun = Tun::open(&net.node);
    net.translate_cluster_ips(BACKENDS, &["udp"], SERVICE_PORT, BACKEND_PORT);
    if exit {
        net.on_node("attach the IP exit classifiers", |datapath| {
            datapath.attach_exit(TUN, Frames::Ip)
        });
    }
    (net, tun)
}

/// For each family: whether the client's datagram through the ClusterIP leaves by
/// the tunnel, and (when it did) whether the backend's answer written back into
/// the tunnel reaches the client.
fn through_the_tunnel(net: &Net, tun: &mut Tun) -> Vec<(IpAddr, bool, bool)> {
    let client = net.pod("client").netns.clone();
    let mut seen = Vec::new();
    for (vip, backend) in CLUSTER_IPS.map(addr).into_iter().zip(BACKENDS.map(addr)) {
        let bind: SocketAddr = if vip.is_ipv4() {
            SocketAddr::new(addr(CLIENT_V4), 0)
        } else {
            SocketAddr::new(addr(CLIENT_V6), 0)
        };
        let socket = Net::in_ns(&client, || UdpSocket::bind(bind))
            .unwrap_or_else(|e| panic!("bind in the client: {e}"));
        socket
            .set_read_timeout(Some(WAIT))
            .unwrap_or_else(|e| panic!("{e}"));
        let payload = format!("out to {vip}");
        socket
            .send_to(payload.as_bytes(), SocketAddr::new(vip, SERVICE_PORT))
            .unwrap_or_else(|e| panic!("send to {vip}: {e}"));
        let left = tun.sees(payload.as_bytes());
        let mut answered = false;
        if left {
            let client_port = socket.local_addr().map_or(0, |a| a.port());
            let answer = format!("back from {backend}");
            tun.inject(&udp_packet(
                backend,
                BACKEND_PORT,
                bind.ip(),
                client_port,
                answer.as_bytes(),
            ));
            let mut buf = [0u8; 256];
            answered = socket
                .recv_from(&mut buf)
                .is_ok_and(|(len, from)| &buf[..len] == answer.as_bytes() && from.ip() == vip);
        }
        seen.push((vip, left, answered));
    }
    seen
}

/// An IP packet (no link header) carrying a UDP datagram with a valid checksum.
fn udp_packet(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut segment = Vec::with_capacity(8 + payload.len());
    segment.extend_from_slice(&sport.to_be_bytes());
    segment.extend_from_slice(&dport.to_be_bytes());
    let length = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    segment.extend_from_slice(&length.to_be_bytes());
    segment.extend_from_slice(&[0, 0]);
    segment.extend_from_slice(payload);
    let checksum = transport_checksum(src, dst, UDP, &segment);
    segment[6..8].copy_from_slice(&checksum.to_be_bytes());
    // `frames::ip` builds an Ethernet frame: the tunnel carries what follows it,
    // with its IPv4 header checksum filled in (the node checks it).
    let mut packet = frames::ip(src, dst, UDP, &segment)[14..].to_vec();
    if src.is_ipv4() {
        let sum = internet_checksum(&packet[..20]);
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

#[test]
fn through_an_exit_without_ethernet_an_allowed_service_egress_leaves_and_its_answers_come_back() {
    let (mut net, mut tun) = client_and_backend_through_a_tunnel(true);
    net.apply(&client_egress_to_backend(&net, BACKEND_PORT));
    let before = net.stats();
    for (vip, left, answered) in through_the_tunnel(&net, &mut tun) {
        assert!(
            left,
            "through {vip}: the allowed datagram leaves by the tunnel"
        );
        assert!(
            answered,
            "through {vip}: the backend's answer reaches the client"
        );
    }
    let after = net.stats();
    let grew = |name: &str| after.get(name) - before.get(name);
    assert!(
        grew("allow_service_egress") >= 2,
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
fn through_an_exit_without_ethernet_a_denied_service_egress_is_dropped_before_it_leaves() {
    let (mut net, mut tun) = client_and_backend_through_a_tunnel(true);
    net.apply(&client_egress_to_backend(&net, OTHER_PORT));
    let before = net.stats();
    for (vip, left, _) in through_the_tunnel(&net, &mut tun) {
        assert!(
            !left,
            "through {vip}: a datagram the client's egress denies left"
        );
    }
    let after = net.stats();
    let grew = |name: &str| after.get(name) - before.get(name);
    assert!(
        grew("drop_deferred_egress") >= 2,
        "{:?}",
        moved(&before, &after)
    );
}

#[test]
fn without_the_ip_exit_classifiers_a_denied_service_egress_leaves_by_the_tunnel() {
    // What `node_exit_ip` closes: the tunnel is no pod's veth and no Ethernet exit.
    let (mut net, mut tun) = client_and_backend_through_a_tunnel(false);
    net.apply(&client_egress_to_backend(&net, OTHER_PORT));
    let left: Vec<bool> = through_the_tunnel(&net, &mut tun)
        .iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        left,
        [true, true],
        "the tunnel carries the translated datagrams"
    );
}
