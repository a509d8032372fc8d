//! `CONNTRACK`: hash of flows a pod's policy allowed, so replies pass; and the
//! per-interface counts that keep one pod from taking the whole table.
//!
//! Entries are per pod interface and per direction of the first packet: the same
//! flow crossing two local pods is tracked once at each, so an allowed egress at the
//! client never stands in for the server's ingress decision. Addresses of both
//! families are stored as IPv6 (IPv4 as `::ffff:a.b.c.d`; IPv6 packets carrying such
//! an address are dropped as malformed, so the families never share a key).
//!
//! The table is a plain hash, not an LRU: nothing ever evicts a live flow. The
//! classifiers add entries and overwrite their own keys; only the agent removes
//! entries, once they are idle past their timeout. So the number of entries an
//! interface holds is exact: `CT_TRACKED[ifindex]` (entries the classifiers added)
//! minus `CT_RECLAIMED[ifindex]` (entries the agent removed). Each map has one
//! writer, so neither needs a lock.

/// Capacity: tracked flows per node. When full, a new flow is dropped
/// (`STAT_DROP_CT_FULL`) and every tracked one keeps its entry.
pub const CONNTRACK_MAX: u32 = 262144;
/// Default of `Config::ct_endpoint_flows`: entries one pod interface may hold, an
/// eighth of the table, so a pod flooding new flows stops at its own limit.
pub const CT_ENDPOINT_FLOWS_DEFAULT: u32 = CONNTRACK_MAX / 8;

/// Capacity of `CT_TRACKED` and `CT_RECLAIMED`: the interfaces of the local pods,
/// twice over for interfaces gone whose entries the agent has yet to reclaim.
pub const CT_COUNTERS_MAX: u32 = 2 * crate::endpoint::ENDPOINTS_MAX;

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

/// Flag: a flow that passed only because its endpoint's direction is in audit mode
/// (`endpoint::AUDIT_*`); `CtValue::counter_slot` is then a `DROP_COUNTERS` slot
/// (a `RULE_COUNTERS` slot with `CT_FLAG_RULE_SLOT`) and its packets count as
/// would-drop. Once the direction enforces, the flow is decided
/// afresh: audit never keeps a connection open past the switch to enforce.
pub const CT_FLAG_AUDIT: u32 = 1 << 1;

/// Flag: a flow the current policy no longer allows: the first packet after a
/// policy change re-decided its original direction and the new state denies it.
/// Its packets are dropped (`STAT_DROP_REVOKED`) until it is idle past its
/// timeout, or a later change allows it again, or a TCP SYN opens the tuple anew.
pub const CT_FLAG_REVOKED: u32 = 1 << 2;

/// Flag: when the entry's generation (`CtValue::generation`) decided it, the
/// flow's local address (the first packet's source at egress, its destination at
/// ingress) was one of the interface's own pod addresses (`ENDPOINT_ADDRS[addr] ==
/// ifindex`), so every packet of the flow, either way, passes the address checks
/// of that generation (anti-spoofing at egress, misdelivery at ingress). Set only
/// by a decision that looked the address up; an entry without it is decided the
/// long way, never the worse for it. The classifiers' conntrack fast path
/// (`policy-ebpf` `fast.rs`) passes only entries with it.
pub const CT_FLAG_LOCAL_OWNED: u32 = 1 << 3;

/// Flag: the flow was decided at this interface's own hook, on its first packet as
/// the pod sent or received it (`decide`), not at a Service backend's side for
/// the translated tuple of a deferred flow (`service::decide_source`). A reply to
/// such an egress flow needs no verification for the client (its own ingress
/// passes it on this entry, and no deferred entry waits for it there), so the
/// backend's side does not mark it and the conntrack fast path may pass it. An
/// entry without it (a deferred flow's translated tuple, a stale source's
/// re-decision, or one written by an older build) has its replies verified.
pub const CT_FLAG_DIRECT: u32 = 1 << 4;

/// Flag, with `CT_FLAG_DEFERRED`: the destination's side decided this deferred
/// flow on this very tuple (nothing translated it: a Service address that is
/// also a pod's, on a port nothing translates), by the destination's class, and
/// allowed it with the entry's generation. The source's own hook still defers
/// every packet of the flow (so a later translation of the tuple is decided at
/// its backend); the destination's side and reply verification take the entry
/// as a decision while its generation is current. A re-decision at the source's
/// hook drops it.
pub const CT_FLAG_DECIDED_THERE: u32 = 1 << 5;

/// Flag, on an ingress entry: when the entry's generation decided it, its remote
/// address (the first packet's source) was no Service address, or the pod's
/// egress was not isolated, or the address is the node's. The pod's replies to it
/// then need no deferral and may pass the conntrack fast path; without it, a
/// reply at the pod's egress to a Service address is deferred like any packet to
/// one, since the node may translate it to a pod the pod's egress denies (once
/// the node has forgotten the flow, its "reply" is a new connection to it).
pub const CT_FLAG_REMOTE_PLAIN: u32 = 1 << 6;

/// Flag, with `CT_FLAG_AUDIT`: a ClusterNetworkPolicy `Deny` rule of an
/// audit-mode policy would drop the flow; with `CT_FLAG_REVOKED`: such a rule
/// revoked it. `CtValue::counter_slot` is then that rule's `RULE_COUNTERS` slot
/// (not a `DROP_COUNTERS` slot): every packet of the flow counts in the rule.
pub const CT_FLAG_RULE_SLOT: u32 = 1 << 7;

/// `CtValue::state`: first packet seen, no reply yet (TCP: a SYN sent, or a flow
/// picked up mid-stream that the other side has not answered yet).
pub const CT_STATE_OPENING: u8 = 0;
/// `CtValue::state`: a reply was seen (TCP: the handshake completed, or the other
/// side answered a flow picked up mid-stream).
pub const CT_STATE_ESTABLISHED: u8 = 1;
/// `CtValue::state`: TCP FIN seen in either direction.
pub const CT_STATE_CLOSING: u8 = 2;
/// `CtValue::state`: TCP RST seen.
pub const CT_STATE_CLOSED: u8 = 3;
/// `CtValue::state`, TCP only: the SYN was answered (SYN/ACK seen) but no packet
/// with ACK and without SYN yet; the next such packet, either way, establishes it.
/// Timed like `CT_STATE_OPENING`.
pub const CT_STATE_ANSWERED: u8 = 4;

/// State of a tracked flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC, tick resolution) when the flow
    /// was first allowed.
    pub created_ns: u64,
    /// `bpf_ktime_get_coarse_ns()` of the flow's latest packet (read once per tick
    /// per CPU, so up to two ticks behind CLOCK_MONOTONIC); with `state` and the
    /// protocol it decides when the entry expires (`config::Config` timeouts).
    pub last_seen_ns: u64,
    /// `RULE_COUNTERS` slot of the rule that allowed the flow, or (with
    /// `CT_FLAG_AUDIT`) the `DROP_COUNTERS` slot its packets count in as
    /// would-drop; `counters::NO_COUNTER` when no rule decided (an unisolated
    /// direction, ingress from the node, a deferred Service flow).
    pub counter_slot: u32,
    /// `CT_FLAG_*`.
    pub flags: u32,
    /// `CT_STATE_*`.
    pub state: u8,
    /// Explicit padding; always zero.
    pub pad: [u8; 3],
    /// The `ACTIVE` value (`bank` generation) of the state that last decided the
    /// flow: a packet that finds another one re-decides it (`CT_FLAG_REVOKED`).
    pub generation: u32,
}

const _: () = assert!(core::mem::size_of::<CtValue>() == 32);
