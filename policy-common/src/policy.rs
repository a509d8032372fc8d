//! `POLICY`: LPM trie of allow rules, (endpoint, peer class, direction, protocol,
//! port) -> the policy and rule that allow it.
//!
//! NetworkPolicy v1 only allows, so any match allows. Fields are ordered from the
//! always-exact to the wildcardable, because an LPM trie can only leave a suffix
//! unspecified:
//! - `PREFIX_ALL_PROTOCOLS` (104 bits): bank, endpoint, class, direction; a rule
//!   without ports.
//! - `PREFIX_ALL_PORTS` (112 bits): + protocol; a port entry that names only a protocol.
//! - `PREFIX_FULL` (128 bits): + port; a single port. The port is big-endian so
//!   that an endPort range splits into aligned blocks, each `PREFIX_ALL_PORTS + n`
//!   bits long (n = the block's fixed high port bits).

/// Map name in the object file.
pub const POLICY_MAP: &str = "POLICY";
/// Capacity of one bank: allow entries for all local endpoints (the map holds
/// `bank::BANKS` times as many).
pub const POLICY_MAX: u32 = 65536;

/// Prefix length (bits) matching any protocol and port.
pub const PREFIX_ALL_PROTOCOLS: u32 = 104;
/// Prefix length (bits) matching any port of one protocol.
pub const PREFIX_ALL_PORTS: u32 = 112;
/// Prefix length (bits) matching one protocol and port.
pub const PREFIX_FULL: u32 = 128;

/// The data part of a `POLICY` key (the prefix length precedes it in the map key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The bank this entry belongs to (`bank.rs`), host byte order; always
    /// matched whole.
    pub bank: u32,
    /// `EndpointInfo::endpoint_id` of the local pod, host byte order.
    pub endpoint_id: u32,
    /// `PeerClass::class_id` of the remote address, host byte order.
    pub class_id: u32,
    /// `verdict::DIRECTION_INGRESS` or `verdict::DIRECTION_EGRESS`.
    pub direction: u8,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP).
    pub protocol: u8,
    /// Destination port, network byte order; 0 for protocols without ports.
    pub port_be: u16,
}

const _: () = assert!(core::mem::size_of::<PolicyKey>() == 16);

/// Which policy and rule allowed a packet, for counters, events and explanations.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// Index of the NetworkPolicy in the agent's policy table.
    pub policy_id: u32,
    /// Index of the rule within that policy's ingress or egress list.
    pub rule_index: u32,
    /// `counters::RULE_COUNTERS` slot of (policy, direction, rule).
    pub rule_slot: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
}

const _: () = assert!(core::mem::size_of::<PolicyValue>() == 16);
