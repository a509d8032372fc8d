//! Hand-made Ethernet frames for `Datapath::test_run`: IPv4, IPv6 with any chain of
//! extension headers, and the upper-layer headers the classifiers read. Checksums
//! stay zero: the classifiers never look at them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers used by the tests.
pub const ICMP: u8 = 1;
/// TCP.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// ICMPv6.
pub const ICMPV6: u8 = 58;
/// SCTP.
pub const SCTP: u8 = 132;

/// An IPv6 extension header placed before the upper-layer header.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    /// Hop-by-hop options (0), 8 bytes.
    HopByHop,
    /// Routing (43), 8 bytes.
    Routing,
    /// Destination options (60), `8 * (1 + units)` bytes.
    DestOptions { units: u8 },
    /// Fragment (44) at `offset` 8-byte units, more fragments following.
    Fragment { offset: u16 },
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing => 43,
            Ext::DestOptions { .. } => 60,
            Ext::Fragment { .. } => 44,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop | Ext::Routing => vec![next, 0, 0, 0, 0, 0, 0, 0],
            Ext::DestOptions { units } => {
                let mut b = vec![0u8; 8 * (1 + usize::from(units))];
                b[0] = next;
                b[1] = units;
                b
            }
            Ext::Fragment { offset } => {
                let field = (offset << 3) | 1;
                let [hi, lo] = field.to_be_bytes();
                vec![next, 0, hi, lo, 0, 0, 0x50, 0x57]
            }
        }
    }
}

/// An Ethernet header of `ether_type` (to the pod's MAC, from the host veth's).
pub fn ethernet(ether_type: u16) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee];
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame
}

/// An IPv4 frame carrying `l4` as `protocol`, at fragment offset `fragment` (8-byte
/// units; 0 for a whole packet or first fragment).
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, fragment: u16, l4: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(0x0800);
    let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&[0, 1]);
    frame.extend_from_slice(&fragment.to_be_bytes());
    frame.extend_from_slice(&[64, protocol, 0, 0]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(l4);
    frame
}

/// An IPv6 frame: fixed header, `exts` in order, then `l4` as `protocol`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, exts: &[Ext], protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, ext) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(protocol, |e| e.number());
        chain.extend(ext.bytes(next));
    }
    chain.extend_from_slice(l4);
    let first = exts.first().map_or(protocol, |e| e.number());
    let mut frame = ethernet(0x86DD);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&u16::try_from(chain.len()).unwrap_or(u16::MAX).to_be_bytes());
    frame.extend_from_slice(&[first, 64]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend(chain);
    frame
}

/// `frame` (IPv6) with its hop limit set to `hop_limit`; `ipv6` sends 64.
pub fn hop_limit(mut frame: Vec<u8>, hop_limit: u8) -> Vec<u8> {
    frame[14 + 7] = hop_limit;
    frame
}

/// `frame` (IPv4 without options) with `words` 4-byte words of options (NOPs)
/// inserted after the fixed header: IHL `5 + words`, total length adjusted.
pub fn ipv4_options(mut frame: Vec<u8>, words: u8) -> Vec<u8> {
    let extra = 4 * usize::from(words);
    frame.splice(14 + 20..14 + 20, std::iter::repeat_n(1u8, extra));
    frame[14] = 0x45 + words;
    let total = u16::from_be_bytes([frame[16], frame[17]]) + u16::from(4 * words);
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame
}

/// `frame` with a VLAN tag of each of `tpids` (outermost first; 0x8100, 0x88a8,
/// 0x9100) and VLAN id 0 inserted after its MAC addresses, as a pod can send it on
/// a packet socket. The frame's own EtherType follows the last tag.
pub fn tagged(mut frame: Vec<u8>, tpids: &[u16]) -> Vec<u8> {
    let tags: Vec<u8> = tpids
        .iter()
        .flat_map(|tpid| [tpid.to_be_bytes(), [0, 0]].concat())
        .collect();
    frame.splice(12..12, tags);
    frame
}

/// An ARP request (`who-has target tell sender`) or, with `reply`, an ARP reply.
pub fn arp(sender: Ipv4Addr, target: Ipv4Addr, reply: bool) -> Vec<u8> {
    let mut frame = ethernet(0x0806);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, if reply { 2 } else { 1 }]);
    frame.extend_from_slice(&[0xee; 6]);
    frame.extend_from_slice(&sender.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// An ARP frame from MAC `source` (also its sender hardware address) to `dest`:
/// a request (`operation` 1) or reply (2) from `sender` about `target`, the target
/// hardware address `dest` (zero in a request to broadcast).
pub fn arp_from(
    dest: [u8; 6],
    source: [u8; 6],
    operation: u8,
    sender: Ipv4Addr,
    target: Ipv4Addr,
) -> Vec<u8> {
    let mut frame = [dest, source].concat();
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, operation]);
    frame.extend_from_slice(&source);
    frame.extend_from_slice(&sender.octets());
    frame.extend_from_slice(if dest == [0xff; 6] { &[0; 6] } else { &dest });
    frame.extend_from_slice(&target.octets());
    frame
}

/// A frame of either family without extension headers.
pub fn ip(src: IpAddr, dst: IpAddr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(s, d, protocol, 0, l4),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(s, d, &[], protocol, l4),
        _ => panic!("mixed families: {src} -> {dst}"),
    }
}

/// A TCP SYN header.
pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

/// A TCP segment with ACK set (a reply's or a later packet's header).
pub fn tcp_ack(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = tcp(sport, dport);
    h[13] = 0x10;
    h
}

/// A UDP header with 4 bytes of payload.
pub fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 12, 0, 0, 0, 0, 0, 0]);
    h
}

/// An ICMP (IPv4) echo request with identifier `id`.
pub fn icmp_echo(id: u16) -> Vec<u8> {
    let mut h = vec![8, 0, 0, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&[0; 16]);
    h
}

/// An ICMPv6 message of `icmp_type` with identifier `id` (meaningful for echo).
pub fn icmpv6(icmp_type: u8, id: u16) -> Vec<u8> {
    let mut h = vec![icmp_type, 0, 0, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&[0; 16]);
    h
}

/// TCP flag bits (the 14th byte of the header).
pub const FIN: u8 = 0x01;
/// SYN.
pub const SYN: u8 = 0x02;
/// RST.
pub const RST: u8 = 0x04;
/// ACK.
pub const ACK: u8 = 0x10;

/// A TCP header with exactly `flags` set (`FIN`, `SYN`, `RST`, `ACK`).
pub fn tcp_flags(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = tcp(sport, dport);
    h[13] = flags;
    h
}

/// An ICMP or ICMPv6 error of `icmp_type` and `code` quoting `original`, a frame
/// from these builders: its IP packet (without the Ethernet header) follows the
/// 8-byte ICMP header, as routers quote it. Send it as `ICMP` or `ICMPV6`.
pub fn icmp_error(icmp_type: u8, code: u8, original: &[u8]) -> Vec<u8> {
    let mut h = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
    h.extend_from_slice(original.get(14..).unwrap_or_default());
    h
}
