//! `FRAGMENTS`: LRU hash of IP datagrams whose first fragment a classifier allowed,
//! so their non-first fragments (which carry no upper-layer header) are decided on the
//! first fragment's ports, as Cilium does with its IPv4 fragment map.
//!
//! Only a first fragment (offset 0, more fragments following) that passed writes an
//! entry; a non-first fragment (offset above 0) with no live entry is dropped
//! (`STAT_DROP_FRAGMENT_UNKNOWN`). An entry lives `FRAGMENT_LIFETIME_NS` from its
//! first fragment: the fragments of one datagram leave their sender back to back.
//! Kernel-only state (the agent never reads or pins it): a fresh load starts empty,
//! which costs at most the trailing fragments of datagrams in flight at that moment.

/// Capacity: datagrams in flight per node (Cilium's IPv4 fragment map holds as
/// many). When full, a new first fragment evicts the least recently used entry.
pub const FRAGMENTS_MAX: u32 = 8192;
/// How long after its first fragment a datagram's non-first fragments are known: far
/// longer than a datagram's fragments take to cross a hook (microseconds), far
/// shorter than a receiver waits to reassemble (Linux: 30 s for IPv4, 60 s for IPv6).
pub const FRAGMENT_LIFETIME_NS: u64 = 1_000_000_000;
/// The upper-layer bytes a first fragment must hold within its IP length: every
/// field the classifiers read (ports, TCP flags, ICMP type and echo identifier) lies
/// in the first 16 bytes, so no non-first fragment can rewrite one (RFC 1858's "tiny
/// fragment" rule for TCP, and RFC 7112's whole header chain for IPv6). A real first
/// fragment holds far more: the smallest IPv4 MTU, 68 bytes, leaves 48.
pub const FRAGMENT_FIRST_MIN: u16 = 16;

// Whole 8-byte fragment units holding the TCP flags (byte 13), and within what the
// smallest IPv4 MTU leaves; a lifetime below Linux's reassembly timeout (30 s).
const _: () = assert!(FRAGMENT_FIRST_MIN.is_multiple_of(8) && FRAGMENT_FIRST_MIN >= 14);
const _: () = assert!(FRAGMENT_FIRST_MIN <= 68 - 20);
const _: () = assert!(FRAGMENT_LIFETIME_NS < 30_000_000_000);

/// `FRAGMENTS` key: one datagram as it crosses one pod interface one way. The
/// fields are those a receiver reassembles a datagram by (IPv4, RFC 791: source,
/// destination, protocol, identification; IPv6, RFC 8200: source, destination,
/// identification), plus the interface and direction so one pod's datagrams never
/// stand in for another's. All fields are always matched exactly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragKey {
    /// ifindex of the pod's host-side veth.
    pub ifindex: u32,
    /// The identification as the packet carries it, read as raw bytes: IPv6 the
    /// fragment header's 32 bits, IPv4 its 16 bits followed by two zero bytes.
    /// Compared, never interpreted.
    pub id: [u8; 4],
    /// Source address, packet byte order (IPv4 mapped).
    pub saddr: [u8; 16],
    /// Destination address, packet byte order (IPv4 mapped).
    pub daddr: [u8; 16],
    /// IPv4: the protocol field. IPv6: 0, since the Next Header of a non-first
    /// fragment may differ from the first's and reassembly ignores it (RFC 8200
    /// section 4.5).
    pub protocol: u8,
    /// `verdict::DIRECTION_*` of the datagram relative to the pod.
    pub direction: u8,
    /// Explicit padding; always zero.
    pub pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<FragKey>() == 44);

/// What a non-first fragment needs from its datagram's first fragment: the upper-
/// layer protocol and ports it was decided on, and where it ends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    /// `bpf_ktime_get_coarse_ns()` when the first fragment passed.
    pub created_ns: u64,
    /// The first fragment's source port (ICMP echo: identifier), network byte order.
    pub sport_be: u16,
    /// The first fragment's destination port (ICMP echo: identifier), network byte
    /// order.
    pub dport_be: u16,
    /// Where the first fragment's data ends, in bytes from the start of the
    /// fragmentable part (IPv4: after the IP header; IPv6: after the fragment
    /// header). A non-first fragment starting before it overlaps the first fragment
    /// (`STAT_DROP_FRAGMENT_OVERLAP`).
    pub first_end: u16,
    /// The first fragment's upper-layer protocol (after IPv6 extension headers),
    /// which a non-first fragment is decided with.
    pub protocol: u8,
    /// Explicit padding; always zero.
    pub pad: u8,
}

const _: () = assert!(core::mem::size_of::<FragValue>() == 16);
