//! Raw frames sent from inside a namespace on an `AF_PACKET` socket, as a pod with
//! `CAP_NET_RAW` can send them: whatever bytes the test builds go out on the
//! interface as they are (VLAN tags, ARP, any EtherType), past the pod's own
//! routing and neighbour tables.

use std::os::fd::AsRawFd;

use nix::{
    libc,
    sys::socket::{
        bind, send, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike,
    },
};
use policy_agent::lab::netns;

/// Sends each of `frames` (whole Ethernet frames) out of interface `interface` of
/// namespace `netns`. Panics, naming the step, if the socket cannot be made or a
/// frame cannot be sent.
pub fn send_frames(netns: &str, interface: &str, frames: &[Vec<u8>]) {
    let sent = netns::in_netns(netns, || -> Result<(), String> {
        let index = nix::net::if_::if_nametoindex(interface)
            .map_err(|e| format!("{interface}: no such interface: {e}"))?;
        // Protocol 0: this socket only sends, it receives nothing.
        let socket = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::empty(),
            None,
        )
        .map_err(|e| format!("packet socket (needs CAP_NET_RAW): {e}"))?;
        let address = link_address(index)?;
        bind(socket.as_raw_fd(), &address).map_err(|e| format!("bind to {interface}: {e}"))?;
        for frame in frames {
            let n = send(socket.as_raw_fd(), frame, MsgFlags::empty())
                .map_err(|e| format!("send a {}-byte frame: {e}", frame.len()))?;
            if n != frame.len() {
                return Err(format!("sent {n} of {} bytes", frame.len()));
            }
        }
        Ok(())
    });
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(why)) => panic!("sending raw frames in {netns}: {why}"),
        Err(error) => panic!("entering {netns}: {error}"),
    }
}

/// The `sockaddr_ll` of interface `index` (any protocol).
fn link_address(index: u32) -> Result<LinkAddr, String> {
    // SAFETY: sockaddr_ll is plain old data; all zero is a valid value.
    let mut raw: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    raw.sll_family = libc::AF_PACKET as u16;
    raw.sll_ifindex = i32::try_from(index).map_err(|e| format!("ifindex {index}: {e}"))?;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `raw` is a whole, initialized sockaddr_ll of `len` bytes.
    unsafe { LinkAddr::from_raw((&raw as *const libc::sockaddr_ll).cast(), Some(len)) }
        .ok_or_else(|| "not a link address".to_string())
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
