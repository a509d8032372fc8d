//! Live connections between two pods of a `Net`, on real sockets: a TCP connection
//! and a UDP flow that either side can send on, and that report whether what one
//! side sent reached the other within `WAIT`.

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use super::net::Net;

/// How long a message may take to arrive.
pub const WAIT: Duration = Duration::from_millis(600);

/// The unspecified address of `addr`'s family.
fn any(addr: IpAddr) -> IpAddr {
    if addr.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    }
}

/// Whether `reader` reads exactly `message` within `WAIT`.
fn receives(reader: &mut TcpStream, message: &[u8]) -> bool {
    if let Err(e) = reader.set_read_timeout(Some(WAIT)) {
        panic!("read timeout: {e}");
    }
    let mut got = vec![0u8; message.len()];
    match reader.read_exact(&mut got) {
        Ok(()) => got == message,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("tcp read: {e}"),
    }
}

/// A TCP connection from one pod to another's `addr:port`.
pub struct Tcp {
    client: TcpStream,
    server: TcpStream,
}

impl Tcp {
    /// Connects pod `client` to pod `server` at `addr:port` (a listener made for it).
    pub fn open(net: &Net, client: &str, server: &str, addr: IpAddr, port: u16) -> Tcp {
        let at = SocketAddr::new(addr, port);
        let listener = Net::in_ns(&net.pod(server).netns, || TcpListener::bind(at))
            .unwrap_or_else(|e| panic!("listen on {at}: {e}"));
        let client = Net::in_ns(&net.pod(client).netns, || {
            TcpStream::connect_timeout(&at, WAIT)
        })
        .unwrap_or_else(|e| panic!("connect to {at}: {e}"));
        let (server, _) = listener
            .accept()
            .unwrap_or_else(|e| panic!("accept on {at}: {e}"));
        Tcp { client, server }
    }

    /// Sends `message` from the client: whether the server got it.
    pub fn server_gets(&mut self, message: &[u8]) -> bool {
        self.client
            .write_all(message)
            .unwrap_or_else(|e| panic!("tcp write: {e}"));
        receives(&mut self.server, message)
    }

    /// Sends `message` from the server (on the client's connection): whether the
    /// client got it.
    pub fn client_gets(&mut self, message: &[u8]) -> bool {
        self.server
            .write_all(message)
            .unwrap_or_else(|e| panic!("tcp write: {e}"));
        receives(&mut self.client, message)
    }
}

/// A UDP flow from a socket in one pod to a socket bound in another.
pub struct Udp {
    client: UdpSocket,
    server: UdpSocket,
    /// The client's address as the server sees it.
    client_at: SocketAddr,
}

/// Whether `socket` receives exactly `message` within `WAIT`, and from where.
fn datagram(socket: &UdpSocket, message: &[u8]) -> Option<SocketAddr> {
    if let Err(e) = socket.set_read_timeout(Some(WAIT)) {
        panic!("read timeout: {e}");
    }
    let mut buffer = [0u8; 1500];
    match socket.recv_from(&mut buffer) {
        Ok((n, from)) => (buffer[..n] == *message).then_some(from),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("udp recv: {e}"),
    }
}

impl Udp {
    /// A flow from pod `client` to pod `server` at `addr:port`, opened by one
    /// datagram from the client (which must arrive).
    pub fn open(net: &Net, client: &str, server: &str, addr: IpAddr, port: u16) -> Udp {
        let at = SocketAddr::new(addr, port);
        let server = Net::in_ns(&net.pod(server).netns, || UdpSocket::bind(at))
            .unwrap_or_else(|e| panic!("bind {at}: {e}"));
        let client = Net::in_ns(&net.pod(client).netns, || {
            let socket = UdpSocket::bind(SocketAddr::new(any(addr), 0))?;
            socket.connect(at)?;
            Ok::<_, std::io::Error>(socket)
        })
        .unwrap_or_else(|e| panic!("udp socket to {at}: {e}"));
        client
            .send(b"open")
            .unwrap_or_else(|e| panic!("udp send: {e}"));
        let client_at = datagram(&server, b"open")
            .unwrap_or_else(|| panic!("the first datagram to {at} did not arrive"));
        Udp {
            client,
            server,
            client_at,
        }
    }

    /// Sends `message` from the client: whether the server got it.
    pub fn server_gets(&self, message: &[u8]) -> bool {
        self.client
            .send(message)
            .unwrap_or_else(|e| panic!("udp send: {e}"));
        datagram(&self.server, message).is_some()
    }

    /// Sends `message` from a new socket in pod `pod` (a new flow) to the server's
    /// socket: whether it arrived.
    pub fn server_gets_anew(&self, net: &Net, pod: &str, message: &[u8]) -> bool {
        let at = self
            .server
            .local_addr()
            .unwrap_or_else(|e| panic!("udp address: {e}"));
        let socket = Net::in_ns(&net.pod(pod).netns, || {
            UdpSocket::bind(SocketAddr::new(any(at.ip()), 0))
        })
        .unwrap_or_else(|e| panic!("udp socket: {e}"));
        socket
            .send_to(message, at)
            .unwrap_or_else(|e| panic!("udp send: {e}"));
        datagram(&self.server, message).is_some()
    }

    /// Sends `message` from the server back to the client: whether it arrived.
    pub fn client_gets(&self, message: &[u8]) -> bool {
        self.server
            .send_to(message, self.client_at)
            .unwrap_or_else(|e| panic!("udp send: {e}"));
        datagram(&self.client, message).is_some()
    }
}
