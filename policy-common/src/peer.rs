//! `PEERS_V4`: remote IPv4 address -> peer class.
//!
//! Key: the address as a u32 in network byte order (the bytes as they sit in the
//! packet). An address that is not in the map belongs to `CLASS_WORLD`.

/// Map name in the object file.
pub const PEERS_V4_MAP: &str = "PEERS_V4";
/// Capacity: pod addresses in the cluster that some local rule names.
pub const PEERS_V4_MAX: u32 = 65536;

/// Class of every address no selector of any local rule matches.
pub const CLASS_WORLD: u32 = 0;

/// The class a peer address belongs to: all addresses that every rule of every
/// local endpoint treats alike share one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerClass {
    /// Class id, host byte order.
    pub class_id: u32,
}

const _: () = assert!(core::mem::size_of::<PeerClass>() == 4);
