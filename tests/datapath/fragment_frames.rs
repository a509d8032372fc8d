//! Hand-made IP fragments, for `BPF_PROG_TEST_RUN` (`fragments.rs`, the verdict
//! table) and for a pod's AF_PACKET socket (`fragments_on_veths.rs`): one fragment
//! of either family, a datagram cut into fragments, and fresh identifications and
//! ports so no two datagrams of a run share a record.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU16, AtomicU32, Ordering},
};

use super::frames;

/// The port the fixture's rules allow, and one they do not.
pub const ALLOWED_PORT: u16 = 7777;
pub const DENIED_PORT: u16 = 7778;

/// A fresh identification for every datagram (IPv4 uses its low 16 bits).
pub fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0x0f00);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A fresh source port for every flow.
pub fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(46000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One fragment of datagram `id` from `src` to `dst` (one family) carrying `data`,
/// the datagram's bytes from `offset` (a multiple of 8) on, with `more` fragments
/// following. IPv4: the identification's low 16 bits; IPv6: a fragment header
/// right after the fixed header.
pub fn fragment(
    (src, dst): (IpAddr, IpAddr),
    protocol: u8,
    id: u32,
    (offset, more): (u16, bool),
    data: &[u8],
) -> Vec<u8> {
    assert_eq!(offset % 8, 0, "fragment offsets are in 8-byte units");
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let field = (offset / 8) | if more { 0x2000 } else { 0 };
            let mut frame = frames::ipv4(s, d, protocol, field, data);
            frame[14 + 4..14 + 6].copy_from_slice(&(id as u16).to_be_bytes());
            frame
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => frames::ipv6(
            s,
            d,
            &[],
            44,
            &[&fragment_header(protocol, id, offset, more)[..], data].concat(),
        ),
        _ => panic!("mixed families: {src} -> {dst}"),
    }
}

/// An IPv6 fragment header: next header `protocol`, `offset` bytes, M flag `more`.
pub fn fragment_header(protocol: u8, id: u32, offset: u16, more: bool) -> [u8; 8] {
    let [hi, lo] = (offset | u16::from(more)).to_be_bytes();
    let [a, b, c, d] = id.to_be_bytes();
    [protocol, 0, hi, lo, a, b, c, d]
}

/// `datagram` (an upper-layer header and payload) cut into fragments of `size`
/// bytes (a multiple of 8; the last takes the rest), first fragment first.
pub fn fragments(
    ends: (IpAddr, IpAddr),
    protocol: u8,
    id: u32,
    datagram: &[u8],
    size: usize,
) -> Vec<Vec<u8>> {
    let pieces: Vec<&[u8]> = datagram.chunks(size).collect();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let offset = u16::try_from(i * size).unwrap_or(u16::MAX);
            fragment(ends, protocol, id, (offset, i + 1 < pieces.len()), piece)
        })
        .collect()
}

/// A UDP datagram from `sport` to `dport` with `len` bytes of payload.
pub fn udp_datagram(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut datagram = frames::udp(sport, dport);
    datagram.truncate(8);
    datagram[4..6].copy_from_slice(&u16::try_from(8 + len).unwrap_or(0).to_be_bytes());
    datagram.resize(8 + len, 0x5a);
    datagram
}
