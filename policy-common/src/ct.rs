//! `CONNTRACK`: LRU hash of flows a pod's policy allowed, so replies pass.
//!
//! Entries are per pod interface and per direction of the first packet: the same
//! flow crossing two local pods is tracked once at each, so an allowed egress at the
//! client never stands in for the server's ingress decision.

/// Map name in the object file.
pub const CONNTRACK_MAP: &str = "CONNTRACK";
/// Capacity: tracked flows per node; the least recently used entry is evicted.
pub const CONNTRACK_MAX: u32 = 262144;

/// A flow as its first packet saw it at one pod interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtKey {
    /// ifindex of the pod's host-side veth.
    pub ifindex: u32,
    /// Source address of the first packet, network byte order.
    pub saddr_be: u32,
    /// Destination address of the first packet, network byte order.
    pub daddr_be: u32,
    /// Source port (ICMP echo: identifier), network byte order.
    pub sport_be: u16,
    /// Destination port (ICMP echo: identifier), network byte order.
    pub dport_be: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// Direction of the first packet relative to the pod (`verdict::DIRECTION_*`).
    pub direction: u8,
    /// Explicit padding; always zero.
    pub pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<CtKey>() == 20);

/// State of a tracked flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// `bpf_ktime_get_ns()` when the flow was first allowed.
    pub created_ns: u64,
    /// `POLICY` value that allowed it, or `u32::MAX` for an unisolated direction.
    pub policy_id: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
}

const _: () = assert!(core::mem::size_of::<CtValue>() == 16);
