//! `CONNTRACK`: LRU hash of flows a pod's policy allowed, so replies pass.
//!
//! Entries are per pod interface and per direction of the first packet: the same
//! flow crossing two local pods is tracked once at each, so an allowed egress at the
//! client never stands in for the server's ingress decision. Addresses of both
//! families are stored as IPv6 (IPv4 as `::ffff:a.b.c.d`; IPv6 packets carrying such
//! an address are dropped as malformed, so the families never share a key).

/// Map name in the object file.
pub const CONNTRACK_MAP: &str = "CONNTRACK";
/// Capacity: tracked flows per node; the least recently used entry is evicted.
pub const CONNTRACK_MAX: u32 = 262144;

/// Flag: a flow to a Service ClusterIP whose egress verdict is made after DNAT at
/// the backend; its replies pass only when the backend side verified them.
pub const CT_FLAG_DEFERRED: u32 = 1 << 0;

/// A flow as its first packet saw it at one pod interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtKey {
    /// ifindex of the pod's host-side veth.
    pub ifindex: u32,
    /// Source address of the first packet, packet byte order (IPv4 mapped).
    pub saddr: [u8; 16],
    /// Destination address of the first packet, packet byte order (IPv4 mapped).
    pub daddr: [u8; 16],
    /// Source port (ICMP echo: identifier), network byte order.
    pub sport_be: u16,
    /// Destination port (ICMP echo: identifier), network byte order.
    pub dport_be: u16,
    /// IP protocol number (ICMPv6 is 58).
    pub protocol: u8,
    /// Direction of the first packet relative to the pod (`verdict::DIRECTION_*`).
    pub direction: u8,
    /// Explicit padding; always zero.
    pub pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<CtKey>() == 44);

/// State of a tracked flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// `bpf_ktime_get_ns()` when the flow was first allowed.
    pub created_ns: u64,
    /// `POLICY` value that allowed it, or `u32::MAX` when no rule decided (an
    /// unisolated direction, ingress from the node, a deferred Service flow).
    pub policy_id: u32,
    /// `CT_FLAG_*`.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<CtValue>() == 16);
