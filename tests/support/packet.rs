//! Raw frames on an `AF_PACKET` socket in a namespace, as a pod with `CAP_NET_RAW`
//! (which container runtimes give pods by default) can send them: whatever bytes a
//! test builds go out on the interface as they are (VLAN tags, ARP, any EtherType),
//! past the pod's own routing and neighbour tables; and every frame that reaches
//! the interface can be read back, which is how a test proves a frame never
//! arrived. Also the Internet checksum, which the receiving kernels check.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use nix::libc;
use policy_agent::lab::netns;

/// A MAC address.
pub type Mac = [u8; 6];
/// The Ethernet broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// Sends each of `frames` (whole Ethernet frames) out of interface `interface` of
/// namespace `netns`. Panics, naming the step, if the socket cannot be made or a
/// frame cannot be sent.
pub fn send_frames(netns: &str, interface: &str, frames: &[Vec<u8>]) {
    let sent = netns::in_netns(netns, || -> io::Result<()> {
        let link = RawLink::open(interface)?;
        frames.iter().try_for_each(|frame| link.send(frame))
    });
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            panic!("sending raw frames on {interface} in {netns} (needs CAP_NET_RAW): {error}")
        }
        Err(error) => panic!("entering {netns}: {error}"),
    }
}

/// An `AF_PACKET` socket bound to one interface of the namespace it was opened in.
pub struct RawLink {
    fd: OwnedFd,
}

impl RawLink {
    /// Opens a raw socket on interface `name` of the calling thread's network
    /// namespace, receiving every protocol.
    pub fn open(name: &str) -> io::Result<Self> {
        let index = nix::net::if_::if_nametoindex(name).map_err(io::Error::from)?;
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor this process owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = protocol;
        address.sll_ifindex = i32::try_from(index).map_err(io::Error::other)?;
        // SAFETY: `address` is a valid sockaddr_ll and its size is passed with it.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Sends one whole Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for its length.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Every frame that reached the interface (not the ones sent from it) until
    /// now and for `wait` more.
    pub fn received(&self, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        let mut buffer = vec![0u8; 65536];
        loop {
            // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut length = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: the buffer and address are valid for the lengths passed.
            let got = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                    std::ptr::from_mut(&mut from).cast(),
                    &mut length,
                )
            };
            match usize::try_from(got) {
                Ok(size) if from.sll_pkttype != libc::PACKET_OUTGOING => {
                    frames.push(buffer[..size].to_vec());
                }
                Ok(_) => {}
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(_) => return frames,
            }
        }
    }
}

/// The MAC of interface `name` of the calling thread's network namespace.
pub fn mac_of(name: &str) -> Mac {
    let addresses = nix::ifaddrs::getifaddrs().unwrap_or_else(|e| panic!("getifaddrs: {e}"));
    for entry in addresses {
        if entry.interface_name != name {
            continue;
        }
        if let Some(link) = entry.address.as_ref().and_then(|a| a.as_link_addr()) {
            if let Some(mac) = link.addr() {
                return mac;
            }
        }
    }
    panic!("no MAC for {name}")
}

/// The Internet checksum (RFC 1071) of `bytes`: of an IPv4 header, to write at its
/// bytes 10-11, or of a pseudo-header and UDP datagram.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of a TCP, UDP or ICMPv6 `segment` (its checksum field zero) from
/// `source` to `destination`, over the pseudo-header of their family (RFC 768,
/// RFC 8200 section 8.1). A sum of zero is given as all ones: in UDP over IPv4 zero
/// means "no checksum".
pub fn transport_checksum(
    source: IpAddr,
    destination: IpAddr,
    protocol: u8,
    segment: &[u8],
) -> u16 {
    let length = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    let mut pseudo = Vec::with_capacity(40 + segment.len());
    match (source, destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend(s.octets());
            pseudo.extend(d.octets());
            pseudo.extend([0, protocol]);
            pseudo.extend(u16::try_from(length).unwrap_or(u16::MAX).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend(s.octets());
            pseudo.extend(d.octets());
            pseudo.extend(length.to_be_bytes());
            pseudo.extend([0, 0, 0, protocol]);
        }
        _ => panic!("mixed families: {source} -> {destination}"),
    }
    pseudo.extend(segment);
    match internet_checksum(&pseudo) {
        0 => 0xffff,
        sum => sum,
    }
}
