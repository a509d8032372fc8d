//! Real packets for datapath tests: TCP connects, one-way UDP, SCTP over raw sockets
//! (this kernel has no SCTP stack, but raw IP sockets of protocol 132 send and receive
//! it) and ICMPv6 echo. Each probe reports whether the other side answered (or, for SCTP,
//! whether the packet arrived) within `TIMEOUT`.

use std::{
    io::ErrorKind,
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::net::Net;

/// How long a probe waits for an answer; a dropped SYN is retransmitted after 1 s,
/// so this is one attempt.
pub const TIMEOUT: Duration = Duration::from_millis(800);
const IPPROTO_SCTP: i32 = 132;

fn domain(addr: IpAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// A TCP connection attempt from namespace `netns` (bound to `source` if given):
/// true when the handshake completes or is refused (a RST proves the SYN arrived and
/// the answer came back).
pub fn tcp(netns: &str, source: Option<IpAddr>, to: IpAddr, port: u16) -> bool {
    Net::in_ns(netns, || {
        let socket = Socket::new(domain(to), Type::STREAM, None)
            .unwrap_or_else(|e| panic!("tcp socket: {e}"));
        if let Some(source) = source {
            socket
                .bind(&SockAddr::from(SocketAddr::new(source, 0)))
                .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        }
        match socket.connect_timeout(&SockAddr::from(SocketAddr::new(to, port)), TIMEOUT) {
            Ok(()) => true,
            Err(e) => e.kind() == ErrorKind::ConnectionRefused,
        }
    })
}

fn recv(socket: &Socket, buf: &mut [u8]) -> Option<(usize, Option<IpAddr>)> {
    // SAFETY: MaybeUninit<u8> has the layout of u8, and recv_from only writes.
    let uninit = unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [MaybeUninit<u8>]) };
    let (len, from) = socket.recv_from(uninit).ok()?;
    Some((len, from.as_socket().map(|s| s.ip())))
}

/// Waits until `socket` receives a packet `accept` takes (it gets the bytes and the
/// sender), or `TIMEOUT` passes.
pub fn await_packet(socket: &Socket, accept: impl Fn(&[u8], Option<IpAddr>) -> bool) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    // Room for a whole reassembled datagram, not only one frame's worth.
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if socket.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match recv(socket, &mut buf) {
            Some((len, from)) if accept(&buf[..len], from) => return true,
            Some(_) => continue,
            None => return false,
        }
    }
}

/// An SCTP common header and INIT chunk from `sport` to `dport`, tagged `nonce` (in
/// the INIT's initiate tag) so the receiver can tell it from stray packets. The
/// checksum stays zero: no SCTP stack looks at it.
pub fn sctp_init(sport: u16, dport: u16, nonce: u32) -> Vec<u8> {
    let mut packet = Vec::with_capacity(32);
    packet.extend_from_slice(&sport.to_be_bytes());
    packet.extend_from_slice(&dport.to_be_bytes());
    packet.extend_from_slice(&0u32.to_be_bytes()); // verification tag: 0 in an INIT
    packet.extend_from_slice(&0u32.to_be_bytes()); // checksum
    packet.extend_from_slice(&[1, 0, 0, 20]); // INIT, flags, length 20
    packet.extend_from_slice(&nonce.to_be_bytes()); // initiate tag
    packet.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    packet.extend_from_slice(&[0, 1, 0, 1]); // outbound / inbound streams
    packet.extend_from_slice(&nonce.to_be_bytes()); // initial TSN
    packet
}

/// Source ports of SCTP probes: a new one each time, so no probe rides on the
/// conntrack entry of an earlier one.
static NEXT_SCTP_PORT: AtomicU16 = AtomicU16::new(40000);

/// Sends an SCTP INIT from namespace `from` to `to:dport` over a raw socket and
/// reports whether a raw socket in namespace `at` received it.
pub fn sctp(from: &str, at: &str, to: IpAddr, dport: u16) -> bool {
    let sport = NEXT_SCTP_PORT.fetch_add(1, Ordering::Relaxed);
    let nonce = (u32::from(sport) << 16) | u32::from(dport);
    let open = || {
        Socket::new(domain(to), Type::RAW, Some(Protocol::from(IPPROTO_SCTP)))
            .unwrap_or_else(|e| panic!("raw SCTP socket: {e}"))
    };
    let receiver = Net::in_ns(at, open);
    let sender = Net::in_ns(from, open);
    let packet = sctp_init(sport, dport, nonce);
    sender
        .send_to(&packet, &SockAddr::from(SocketAddr::new(to, 0)))
        .unwrap_or_else(|e| panic!("send SCTP: {e}"));
    await_packet(&receiver, |bytes, _| {
        // A raw IPv4 socket receives the IP header too; a raw IPv6 socket does not.
        let payload = if to.is_ipv4() {
            let header = usize::from(bytes.first().copied().unwrap_or(0) & 0x0F) * 4;
            bytes.get(header..).unwrap_or_default()
        } else {
            bytes
        };
        payload.len() >= 20
            && payload[2..4] == dport.to_be_bytes()
            && payload[16..20] == nonce.to_be_bytes()
    })
}

/// Source ports of UDP probes, fresh each time like `NEXT_SCTP_PORT`.
static NEXT_UDP_PORT: AtomicU16 = AtomicU16::new(41000);

/// Sends a UDP datagram from namespace `from` (bound to `source` if given) to
/// `to:port` and reports whether a socket bound there in namespace `at` received it.
/// One way only: it works from an address whose answers would go elsewhere.
pub fn udp(from: &str, source: Option<IpAddr>, at: &str, to: IpAddr, port: u16) -> bool {
    let sport = NEXT_UDP_PORT.fetch_add(1, Ordering::Relaxed);
    let nonce = format!("podwall-udp-{sport}");
    let open = |bind: SocketAddr| {
        let socket = Socket::new(domain(to), Type::DGRAM, None)
            .unwrap_or_else(|e| panic!("udp socket: {e}"));
        socket
            .bind(&SockAddr::from(bind))
            .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        socket
    };
    let receiver = Net::in_ns(at, || open(SocketAddr::new(to, port)));
    let unspecified = if to.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    let sender = Net::in_ns(from, || {
        open(SocketAddr::new(source.unwrap_or(unspecified), sport))
    });
    sender
        .send_to(nonce.as_bytes(), &SockAddr::from(SocketAddr::new(to, port)))
        .unwrap_or_else(|e| panic!("send UDP: {e}"));
    await_packet(&receiver, |bytes, _| bytes == nonce.as_bytes())
}

/// A UDP socket bound to `at:port` in namespace `netns`, for datagrams a test sends
/// by other means (a packet socket, a tunnel); `receives` waits for one.
pub fn udp_listener(netns: &str, at: IpAddr, port: u16) -> Socket {
    Net::in_ns(netns, || {
        let socket = Socket::new(domain(at), Type::DGRAM, None)
            .unwrap_or_else(|e| panic!("udp socket: {e}"));
        let bind = SocketAddr::new(at, port);
        socket
            .bind(&SockAddr::from(bind))
            .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        socket
    })
}

/// Whether `socket` receives a datagram of exactly `payload` within `TIMEOUT`.
pub fn receives(socket: &Socket, payload: &[u8]) -> bool {
    await_packet(socket, |bytes, _| bytes == payload)
}

/// Sends one UDP datagram of `payload` from namespace `from` to `to:port`.
pub fn send_udp(from: &str, to: IpAddr, port: u16, payload: &[u8]) {
    Net::in_ns(from, || {
        let socket = Socket::new(domain(to), Type::DGRAM, None)
            .unwrap_or_else(|e| panic!("udp socket: {e}"));
        socket
            .send_to(payload, &SockAddr::from(SocketAddr::new(to, port)))
            .unwrap_or_else(|e| panic!("send UDP to {to}:{port}: {e}"));
    });
}

/// Sends an ICMPv6 echo request from namespace `from` to `to` over a raw socket (the
/// kernel fills in the checksum) and reports whether the echo reply came back.
pub fn ping6(from: &str, to: IpAddr, identifier: u16) -> bool {
    let socket = Net::in_ns(from, || {
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
            .unwrap_or_else(|e| panic!("raw ICMPv6 socket: {e}"))
    });
    let mut request = vec![128, 0, 0, 0];
    request.extend_from_slice(&identifier.to_be_bytes());
    request.extend_from_slice(&1u16.to_be_bytes());
    request.extend_from_slice(b"podwall-ping6");
    socket
        .send_to(&request, &SockAddr::from(SocketAddr::new(to, 0)))
        .unwrap_or_else(|e| panic!("send ICMPv6 echo: {e}"));
    await_packet(&socket, |bytes, sender| {
        bytes.len() >= 8
            && bytes[0] == 129
            && bytes[4..6] == identifier.to_be_bytes()
            && sender == Some(to)
    })
}

/// Sends a datagram from `from` in namespace `netns` on a socket connected to
/// `to:port`, and reports whether an ICMP error about it came back within 800 ms
/// (the socket's port unreachable); the socket is returned for more.
pub fn udp_refused(
    netns: &str,
    from: IpAddr,
    to: IpAddr,
    port: u16,
) -> (std::net::UdpSocket, bool) {
    let socket = Net::in_ns(netns, || std::net::UdpSocket::bind((from, 0)))
        .unwrap_or_else(|e| panic!("bind {from} in {netns}: {e}"));
    socket
        .connect((to, port))
        .unwrap_or_else(|e| panic!("connect to {to}:{port}: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .send(b"query")
        .unwrap_or_else(|e| panic!("send to {to}:{port}: {e}"));
    let refused = socket_refused(&socket);
    (socket, refused)
}

/// Whether `socket` (a connected UDP socket with a read timeout) reports an ICMP
/// error (its port unreachable) before the timeout.
pub fn socket_refused(socket: &std::net::UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        socket.recv(&mut buf),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Sends from namespace `netns`, on a raw socket, an ICMP (ICMPv6) port
/// unreachable to `to` quoting `quoted` (an IP packet of `frames::ip`); the
/// kernel fills in an ICMPv6 checksum, this one an ICMP one.
pub fn send_port_unreachable(netns: &str, to: IpAddr, quoted: &[u8]) {
    let (domain, protocol, kind) = if to.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4, (3, 3))
    } else {
        (Domain::IPV6, Protocol::ICMPV6, (1, 4))
    };
    let mut error = super::frames::icmp_error(kind.0, kind.1, quoted);
    if to.is_ipv4() {
        let checksum = super::support::packet::internet_checksum(&error);
        error[2..4].copy_from_slice(&checksum.to_be_bytes());
    }
    let raw = Net::in_ns(netns, || Socket::new(domain, Type::RAW, Some(protocol)))
        .unwrap_or_else(|e| panic!("raw ICMP socket in {netns}: {e}"));
    raw.send_to(&error, &SockAddr::from(SocketAddr::new(to, 0)))
        .unwrap_or_else(|e| panic!("send the error to {to}: {e}"));
}
