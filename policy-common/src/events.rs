//! `EVENTS`: a ring buffer of verdict events for flow logs (`policy-agent flows`).
//!
//! Drops and would-drops (audit mode) are always emitted; allows only when
//! `config::CONFIG_FLAG_ALLOW_EVENTS` is set, and then only for a flow's deciding
//! packet (not for packets conntrack passes). Emission is rate-limited per CPU by a
//! token bucket (`Config::events_per_second`, `Config::events_burst`): an event the
//! limit holds back bumps `STAT_EVENTS_RATE_LIMITED`, one the full ring cannot take
//! bumps `STAT_EVENTS_RING_FULL`. The packet's verdict never depends on either.

/// Ring buffer size in bytes (a power of two, page aligned): about 13,000 events.
pub const EVENTS_BYTES: u32 = 1 << 20;

/// `VerdictEvent::verdict`: the packet passed.
pub const EVENT_ALLOWED: u8 = 0;
/// `VerdictEvent::verdict`: the packet was dropped.
pub const EVENT_DROPPED: u8 = 1;
/// `VerdictEvent::verdict`: the packet passed because every isolating policy is in
/// audit mode; enforcing them would have dropped it.
pub const EVENT_WOULD_DROP: u8 = 2;

/// One verdict as the classifier made it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the verdict.
    pub timestamp_ns: u64,
    /// ifindex of the pod's host-side veth.
    pub ifindex: u32,
    /// `EndpointInfo::endpoint_id` of the pod; 0 when the interface is unknown.
    pub endpoint_id: u32,
    /// Source address, packet byte order (IPv4 mapped); zero if not parsed.
    pub saddr: [u8; 16],
    /// Destination address, packet byte order (IPv4 mapped); zero if not parsed.
    pub daddr: [u8; 16],
    /// Source port (ICMP echo: identifier), network byte order.
    pub sport_be: u16,
    /// Destination port (ICMP echo: identifier), network byte order.
    pub dport_be: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// `verdict::DIRECTION_*`.
    pub direction: u8,
    /// `EVENT_ALLOWED`, `EVENT_DROPPED` or `EVENT_WOULD_DROP`.
    pub verdict: u8,
    /// 1 for IPv6, 0 for IPv4.
    pub ipv6: u8,
    /// The `verdict::STAT_*` counter the packet landed in (the reason).
    pub stat: u32,
    /// Allow by a rule: its `PolicyValue::rule_slot`, which the agent's names
    /// file maps to the policy and rule; otherwise `counters::NO_COUNTER` (for a
    /// drop, the agent names the policies isolating `endpoint_id` in `direction`).
    pub rule_slot: u32,
    /// `skb->len`.
    pub packet_len: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
}

const _: () = assert!(core::mem::size_of::<VerdictEvent>() == 72);
