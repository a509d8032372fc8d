//! What a pod can forge, to send on its interface (`packet::RawLink`): ARP replies
//! and gratuitous ARP, unsolicited IPv6 neighbour advertisements, and datagrams
//! from any address or MAC. Checksums are real: the receiving kernels check them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::packet::{internet_checksum, transport_checksum, Mac};

fn ethernet(source: Mac, destination: Mac, ether_type: u16) -> Vec<u8> {
    let mut frame = destination.to_vec();
    frame.extend_from_slice(&source);
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame
}

/// An ARP frame from `eth_source` to `eth_destination`: a request (`reply` false)
/// or reply claiming that `sender_ip` is at `sender_mac`, about `target_ip`.
pub fn arp(
    (eth_source, eth_destination): (Mac, Mac),
    reply: bool,
    (sender_mac, sender_ip): (Mac, Ipv4Addr),
    (target_mac, target_ip): (Mac, Ipv4Addr),
) -> Vec<u8> {
    let mut frame = ethernet(eth_source, eth_destination, 0x0806);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, if reply { 2 } else { 1 }]);
    frame.extend_from_slice(&sender_mac);
    frame.extend_from_slice(&sender_ip.octets());
    frame.extend_from_slice(&target_mac);
    frame.extend_from_slice(&target_ip.octets());
    frame
}

/// An unsolicited neighbour advertisement (override flag set) from `source` to
/// all nodes, saying `target` is at `mac`.
pub fn neighbour_advert(eth_source: Mac, source: Ipv6Addr, target: Ipv6Addr, mac: Mac) -> Vec<u8> {
    let all_nodes: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    // Target link-layer address option (type 2, one 8-byte unit).
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    let mut frame = ethernet(eth_source, [0x33, 0x33, 0, 0, 0, 1], 0x86DD);
    frame.extend(ipv6_packet(source, all_nodes, 58, 255, icmp));
    frame
}

/// A UDP datagram from `source` to `destination`, inside an Ethernet frame from
/// `eth_source` to `eth_destination`.
pub fn udp(
    (eth_source, eth_destination): (Mac, Mac),
    source: (IpAddr, u16),
    destination: (IpAddr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&source.1.to_be_bytes());
    datagram.extend_from_slice(&destination.1.to_be_bytes());
    let length = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    datagram.extend_from_slice(&length.to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    match (source.0, destination.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // A zero UDP checksum means "none" in IPv4.
            let mut frame = ethernet(eth_source, eth_destination, 0x0800);
            frame.extend(ipv4_packet(s, d, 17, datagram));
            frame
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut frame = ethernet(eth_source, eth_destination, 0x86DD);
            frame.extend(ipv6_packet(s, d, 17, 64, datagram));
            frame
        }
        _ => panic!("mixed families"),
    }
}

fn ipv4_packet(source: Ipv4Addr, destination: Ipv4Addr, protocol: u8, l4: Vec<u8>) -> Vec<u8> {
    let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
    let mut header = vec![0x45, 0];
    header.extend_from_slice(&total.to_be_bytes());
    header.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    header.extend_from_slice(&source.octets());
    header.extend_from_slice(&destination.octets());
    let checksum = internet_checksum(&header);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    header.extend(l4);
    header
}

/// An IPv6 packet; the upper-layer checksum (ICMPv6 at offset 2, UDP at 6) is
/// computed over the pseudo-header.
fn ipv6_packet(
    source: Ipv6Addr,
    destination: Ipv6Addr,
    protocol: u8,
    hop_limit: u8,
    mut l4: Vec<u8>,
) -> Vec<u8> {
    let at = if protocol == 17 { 6 } else { 2 };
    let checksum = transport_checksum(source.into(), destination.into(), protocol, &l4);
    l4[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&u16::try_from(l4.len()).unwrap_or(u16::MAX).to_be_bytes());
    packet.extend_from_slice(&[protocol, hop_limit]);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend(l4);
    packet
}

/// The IPv4 or IPv6 destination of an Ethernet frame and its UDP payload, if it
/// is a UDP datagram.
pub fn udp_destination(frame: &[u8]) -> Option<(IpAddr, Vec<u8>)> {
    let ether_type = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let (destination, l4) = match ether_type {
        0x0800 if *frame.get(23)? == 17 => {
            let d: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
            let header = usize::from(frame.get(14)? & 0x0f) * 4;
            (IpAddr::from(d), frame.get(14 + header..)?)
        }
        0x86DD if *frame.get(20)? == 17 => {
            let d: [u8; 16] = frame.get(38..54)?.try_into().ok()?;
            (IpAddr::from(d), frame.get(54..)?)
        }
        _ => return None,
    };
    Some((destination, l4.get(8..)?.to_vec()))
}
