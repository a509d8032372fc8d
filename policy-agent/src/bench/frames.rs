//! The benchmark's packets: Ethernet frames carrying one TCP segment (IPv4 or IPv6,
//! no options or extension headers). Checksums stay zero: the classifiers never
//! read them.

use std::net::IpAddr;

/// TCP SYN (opens a connection: always decided afresh, never a conntrack hit).
pub const SYN: u8 = 0x02;
/// TCP ACK (a later packet of a connection).
pub const ACK: u8 = 0x10;

/// A frame from `src:sport` to `dst:dport` carrying a TCP header with `flags`.
/// `None` when the two addresses are of different families.
pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Option<Vec<u8>> {
    let mut segment = Vec::with_capacity(20);
    segment.extend_from_slice(&sport.to_be_bytes());
    segment.extend_from_slice(&dport.to_be_bytes());
    // Sequence 1, acknowledgment 0, data offset 5 words, flags, window 65535.
    segment.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let length = u16::try_from(segment.len()).unwrap_or(u16::MAX);
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            frame.extend_from_slice(&[0x45, 0]);
            frame.extend_from_slice(&(20 + length).to_be_bytes());
            // Identification 1, no fragment, TTL 64, TCP, checksum 0.
            frame.extend_from_slice(&[0, 1, 0, 0, 64, 6, 0, 0]);
            frame.extend_from_slice(&s.octets());
            frame.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame.extend_from_slice(&0x86DDu16.to_be_bytes());
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&length.to_be_bytes());
            // Next header TCP, hop limit 64.
            frame.extend_from_slice(&[6, 64]);
            frame.extend_from_slice(&s.octets());
            frame.extend_from_slice(&d.octets());
        }
        _ => return None,
    }
    frame.extend(segment);
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_length_their_headers_say_and_carry_the_flags() {
        let v4 = |s: &str| IpAddr::V4(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")));
        let v6 = |s: &str| IpAddr::V6(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")));
        let Some(frame) = tcp(v4("10.0.0.1"), v4("10.0.0.2"), 1, 80, SYN) else {
            panic!("IPv4 frame");
        };
        assert_eq!(frame.len(), 14 + 20 + 20);
        assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 40);
        assert_eq!(frame[14 + 20 + 13], SYN);
        let Some(frame) = tcp(v6("fd00::1"), v6("fd00::2"), 1, 80, ACK) else {
            panic!("IPv6 frame");
        };
        assert_eq!(frame.len(), 14 + 40 + 20);
        assert_eq!(u16::from_be_bytes([frame[18], frame[19]]), 20);
        assert_eq!(frame[14 + 40 + 13], ACK);
        assert!(tcp(v4("10.0.0.1"), v6("fd00::2"), 1, 80, SYN).is_none());
    }
}
