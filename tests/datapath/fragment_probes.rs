//! Real fragmented datagrams for `fragments_on_veths.rs`: a UDP echo server in a pod,
//! a client whose stack fragments what it sends (IPv4 with `IP_PMTUDISC_DONT`, IPv6
//! on its own), receivers that say whether anything arrived, crafted frames sent on
//! a pod's eth0 over AF_PACKET (with the checksums a receiver checks), and the node
//! namespace's reassembly switched on and off.

use std::{
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use socket2::{Domain, SockAddr, Socket, Type};

use super::{
    net::Net,
    support::packet::{internet_checksum, transport_checksum},
};

/// How long a probe waits for its datagram or echo.
pub const TIMEOUT: Duration = Duration::from_millis(800);

fn domain(addr: IpAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// A UDP socket made in namespace `netns`, bound to `bind` (it stays in that
/// namespace whichever thread uses it).
fn udp_socket(netns: &str, bind: SocketAddr) -> Socket {
    Net::in_ns(netns, || {
        let socket = Socket::new(domain(bind.ip()), Type::DGRAM, None)
            .unwrap_or_else(|e| panic!("udp socket: {e}"));
        socket
            .bind(&SockAddr::from(bind))
            .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        socket
    })
}

fn recv(socket: &Socket, buf: &mut [u8]) -> Option<(usize, SockAddr)> {
    // SAFETY: MaybeUninit<u8> has the layout of u8, and recv_from only writes.
    let uninit = unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [MaybeUninit<u8>]) };
    socket.recv_from(uninit).ok()
}

/// Echoes every UDP datagram sent to its addresses back to its sender, until dropped.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// Echoes on `port` of each of `addresses`, in namespace `netns`.
    pub fn start(netns: &str, addresses: &[IpAddr], port: u16) -> EchoServer {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = addresses
            .iter()
            .map(|addr| {
                let socket = udp_socket(netns, SocketAddr::new(*addr, port));
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        if let Some((len, from)) = recv(&socket, &mut buf) {
                            let _ = socket.send_to(&buf[..len], &from);
                        }
                    }
                })
            })
            .collect();
        EchoServer { stop, threads }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Linux's `IP_MTU_DISCOVER` option and its value that lets the stack fragment.
const IP_MTU_DISCOVER: i32 = 10;
const IP_PMTUDISC_DONT: i32 = 0;

/// Sends a UDP datagram of `size` bytes from namespace `netns` to `to:port` and
/// reports whether the same bytes came back. IPv4 is sent without DF, so the
/// sender's stack fragments what exceeds the veth's MTU; IPv6 fragments on its own.
pub fn echoed(netns: &str, to: IpAddr, port: u16, size: usize) -> bool {
    let unspecified = SocketAddr::new(
        if to.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    );
    let socket = udp_socket(netns, unspecified);
    if to.is_ipv4() {
        let value = IP_PMTUDISC_DONT;
        // SAFETY: a valid socket, an int option of the right size.
        let ret = unsafe {
            nix::libc::setsockopt(
                socket.as_raw_fd(),
                nix::libc::IPPROTO_IP,
                IP_MTU_DISCOVER,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<i32>() as u32,
            )
        };
        assert_eq!(
            ret,
            0,
            "IP_MTU_DISCOVER: {}",
            std::io::Error::last_os_error()
        );
    }
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    socket
        .send_to(&payload, &SockAddr::from(SocketAddr::new(to, port)))
        .unwrap_or_else(|e| panic!("send {size} bytes to {to}: {e}"));
    arrived(&socket, |bytes| bytes == payload)
}

/// Waits until `socket` receives a datagram `accept` takes, or `TIMEOUT` passes.
fn arrived(socket: &Socket, accept: impl Fn(&[u8]) -> bool) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match recv(socket, &mut buf) {
            Some((len, _)) if accept(&buf[..len]) => return true,
            Some(_) => continue,
            None => return false,
        }
    }
}

/// A receiver on `to:port` in namespace `netns`: `any` reports whether a datagram
/// arrived since it was made.
pub struct Receiver(Socket);

impl Receiver {
    /// A socket bound to `to:port` in namespace `netns`.
    pub fn bind(netns: &str, to: IpAddr, port: u16) -> Receiver {
        Receiver(udp_socket(netns, SocketAddr::new(to, port)))
    }

    /// Whether any datagram arrives within `TIMEOUT`.
    pub fn any(&self) -> bool {
        arrived(&self.0, |_| true)
    }
}

/// `frame` (IPv4, from `frames::ipv4`) with its header checksum filled in.
pub fn ipv4_checksummed(mut frame: Vec<u8>) -> Vec<u8> {
    let header_len = usize::from(frame[14] & 0x0f) * 4;
    frame[14 + 10..14 + 12].fill(0);
    let sum = internet_checksum(&frame[14..14 + header_len]);
    frame[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    frame
}

/// `datagram` (a UDP header and payload from `src` to `dst`) with its UDP checksum
/// filled in, as the receiver checks it once the datagram is reassembled.
pub fn udp_checksummed(src: IpAddr, dst: IpAddr, mut datagram: Vec<u8>) -> Vec<u8> {
    let len = u16::try_from(datagram.len()).unwrap_or(u16::MAX);
    datagram[4..6].copy_from_slice(&len.to_be_bytes());
    datagram[6..8].fill(0);
    let sum = transport_checksum(src, dst, 17, &datagram);
    datagram[6..8].copy_from_slice(&sum.to_be_bytes());
    datagram
}

/// The nftables table that makes the node namespace reassemble: any `ct`
/// expression loads conntrack there, and with it nf_defrag for both families.
const REASSEMBLY_TABLE: &str = "podwall_test_reassembly";

/// Makes the node namespace of `net` reassemble fragments (`on`) or forward them as
/// they come.
pub fn node_reassembles(net: &Net, on: bool) {
    if on {
        net.nft(&format!(
            "table inet {REASSEMBLY_TABLE} {{\n chain pre {{\n \
             type filter hook prerouting priority 0;\n \
             ct state new,established,related accept\n }}\n}}\n"
        ));
    } else {
        net.nft(&format!("delete table inet {REASSEMBLY_TABLE}\n"));
    }
}

/// Fragments the node namespace of `net` has made so far (IPv4 `FragCreates` plus
/// IPv6 `Ip6FragCreates`): a node that reassembles a datagram larger than the veth
/// MTU fragments it again on its way out; one that forwards fragments makes none.
pub fn node_fragments_created(net: &Net) -> u64 {
    let (snmp, snmp6) = Net::in_ns(&net.node, || {
        let read = |file: &str| {
            std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))
                .unwrap_or_else(|e| panic!("{file} of the node namespace: {e}"))
        };
        (read("snmp"), read("snmp6"))
    });
    let ip: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Ip: ")).collect();
    let [names, values] = ip[..] else {
        panic!("no Ip lines in /proc/net/snmp:\n{snmp}");
    };
    let v4 = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "FragCreates")
        .and_then(|(_, value)| value.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no FragCreates in {names}"));
    let v6 = snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Ip6FragCreates"))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no Ip6FragCreates in /proc/net/snmp6"));
    v4 + v6
}
