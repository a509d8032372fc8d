//! `PEERS_V4` / `PEERS_V6`: LPM tries, remote address prefix -> peer class; and
//! `PEER_HOSTS_V4` / `PEER_HOSTS_V6`: hashes of the host prefixes (/32, /128).
//!
//! Pod addresses are host prefixes (/32, /128); ipBlock `cidr` and `except` ranges
//! are shorter prefixes, so the longest match gives each address the class of the
//! most specific range that contains it. An address no prefix covers belongs to
//! `CLASS_WORLD`.
//!
//! A bank's peer prefixes are split by length: its host prefixes are in the
//! family's `PEER_HOSTS_*` hash (key: the same key data as the trie's), every
//! shorter one in the family's trie; no prefix is in both. A host prefix is the
//! longest there can be, so the longest match of an address is its hash entry if
//! it has one, else the trie's longest match: the classifiers look the hash up
//! first (one exact lookup for a pod peer, however many peers there are) and the
//! trie only when it has no entry. Each bank of a family holds at most
//! `PEERS_MAX` prefixes in the hash and trie together.
//!
//! Key data: the bank (`bank.rs`, host byte order) first, then the address bytes
//! in packet (network) order. Every key's prefix covers the whole bank field
//! (`PEER_PREFIX_BANK` bits) plus the address prefix, so a lookup only ever
//! matches entries of its own bank, and the address part is an ordinary CIDR.

/// Bits of the bank field, which every prefix spans before the address.
pub const PEER_PREFIX_BANK: u32 = 32;
/// Longest prefix of `PEERS_V4` (bits of its key data): bank and a host address.
pub const PEERS_V4_PREFIX_MAX: u32 = PEER_PREFIX_BANK + 32;
/// Longest prefix of `PEERS_V6` (bits of its key data): bank and a host address.
pub const PEERS_V6_PREFIX_MAX: u32 = PEER_PREFIX_BANK + 128;
/// Capacity of each family's peer prefixes per bank, the hash's host prefixes and
/// the trie's shorter ones together: pod addresses plus ipBlock boundaries in the
/// cluster. The hash and the trie each hold `bank::BANKS` times as many, so
/// either can take them all.
pub const PEERS_MAX: u32 = 65536;

/// `PEERS_V4` key data. Bank first: an LPM trie can only wildcard a suffix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerKeyV4 {
    /// The bank this entry belongs to.
    pub bank: u32,
    /// IPv4 address, packet byte order; bits past the prefix are zero.
    pub addr: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<PeerKeyV4>() == 8);

/// `PEERS_V6` key data, laid out as `PeerKeyV4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerKeyV6 {
    /// The bank this entry belongs to.
    pub bank: u32,
    /// IPv6 address, packet byte order; bits past the prefix are zero.
    pub addr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<PeerKeyV6>() == 20);

/// Class of every address no selector or ipBlock of any local rule matches.
pub const CLASS_WORLD: u32 = 0;

/// Flag: an address of the local node; ingress from it always passes (kubelet
/// probes), as in Calico and Cilium.
pub const PEER_FLAG_NODE: u32 = 1 << 0;
/// Flag: a Service ClusterIP; egress to it is decided after DNAT, on the backend
/// (see `verdict::MARK_DEFERRED_EGRESS`).
pub const PEER_FLAG_SERVICE: u32 = 1 << 1;

/// The class a peer address belongs to: all addresses that every rule of every
/// local endpoint treats alike share one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerClass {
    /// Class id, host byte order.
    pub class_id: u32,
    /// `PEER_FLAG_*`.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<PeerClass>() == 8);
