//! `PEERS_V4` / `PEERS_V6`: LPM tries, remote address prefix -> peer class.
//!
//! Pod addresses are host prefixes (/32, /128); ipBlock `cidr` and `except` ranges
//! are shorter prefixes, so the longest match gives each address the class of the
//! most specific range that contains it. An address no prefix covers belongs to
//! `CLASS_WORLD`. Key data: the address bytes in packet (network) order.

/// Map name of the IPv4 trie (key data `[u8; 4]`).
pub const PEERS_V4_MAP: &str = "PEERS_V4";
/// Map name of the IPv6 trie (key data `[u8; 16]`).
pub const PEERS_V6_MAP: &str = "PEERS_V6";
/// Longest prefix of `PEERS_V4` (bits of its key data): a host address.
pub const PEERS_V4_PREFIX_MAX: u32 = 32;
/// Longest prefix of `PEERS_V6` (bits of its key data): a host address.
pub const PEERS_V6_PREFIX_MAX: u32 = 128;
/// Capacity of each trie: pod addresses plus ipBlock boundaries in the cluster.
pub const PEERS_MAX: u32 = 65536;

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
