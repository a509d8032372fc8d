//! Connection tracking: flows a pod's policy allowed, so their replies pass.
//!
//! A flow is keyed by the pod interface, the direction of its first packet and its
//! 5-tuple as that packet carried it (16-byte addresses for both families). A later
//! packet is part of the flow when it matches that key as is (same direction), or
//! reversed with the opposite direction (the reply).
//!
//! State transitions:
//! 1. no entry -> entry: the first packet was allowed (unisolated, node, policy) or,
//!    for egress to a Service, deferred (`CT_FLAG_DEFERRED`); written by `track`
//!    with `created_ns = last_seen_ns = now` and the state its packet implies
//!    (`initial_state`). TCP: with RST CLOSED, else with FIN CLOSING, else with ACK
//!    and without SYN ESTABLISHED (a flow picked up mid-stream: its start was never
//!    seen or was forgotten), else OPENING (a SYN, a SYN/ACK whose SYN was not seen,
//!    a non-first fragment, which has no flags). Other protocols start OPENING.
//! 2. a deferred egress entry is also written for the post-DNAT tuple, by the
//!    destination's classifier at the source's interface, once the source's egress
//!    allowed the backend (a rule, no egress isolation, or an audit would-drop;
//!    `service::deferred_egress`); the packets that later pass by it, forward there
//!    and replies at the backend (`service::verify_reply`), refresh it as in 4.
//! 3. a TCP SYN without ACK ignores existing entries and, when allowed, overwrites
//!    its own: a reused source port never inherits an older connection's verdict.
//!    Likewise a forward packet of a non-TCP flow still OPENING (never answered,
//!    not deferred) ignores its entry and is decided by policy (`lookup`).
//! 4. every packet that passes as part of a flow (`Hit::seen`) sets `last_seen_ns`
//!    and moves the state (`next_state`). TCP: RST, either way, -> CLOSED; FIN,
//!    either way, -> CLOSING (a CLOSED flow stays CLOSED); the SYN/ACK (a reply with
//!    SYN and ACK) moves OPENING -> ANSWERED; then a packet with ACK and without SYN,
//!    either way (the handshake's last ACK), moves it to ESTABLISHED, as does a reply
//!    with ACK and without SYN from OPENING. So a half-open connection (SYN and
//!    SYN/ACK only) keeps the opening timeout, and a client's ACK before any answer
//!    establishes nothing. Other protocols: the first reply moves OPENING ->
//!    ESTABLISHED, which only tells a reader the flow was answered. A hit costs
//!    one store (`last_seen_ns`) through the value's pointer; the state is written
//!    only when it changes. Nothing else writes the entry.
//! 5. expiry is lazy: an entry idle longer than its timeout (`now - last_seen_ns >
//!    timeout_ns(protocol, state)`, from `CONFIG`) is treated as absent by `lookup`,
//!    `find` and `related`, so the packet is decided afresh and, if allowed,
//!    `track` overwrites the entry (or, for a packet the other way, writes its own
//!    key; the LRU reclaims the stale one). TCP: OPENING `ct_tcp_opening_ns`,
//!    ESTABLISHED `ct_tcp_established_ns`, CLOSING and CLOSED `ct_tcp_closing_ns`;
//!    UDP and SCTP `ct_udp_ns`; ICMP and ICMPv6 `ct_icmp_ns`; the rest `ct_other_ns`.
//! 6. a full table evicts the least recently used entries on insert (the map is an
//!    LRU hash; every lookup hit marks its entry used), so tracking never fails the
//!    packet being decided, and a forgotten flow's next packet is decided afresh.
//! 7. an ICMP or ICMPv6 error that quotes a packet of a live flow at this interface
//!    is related to it (`related`: sent to the quoted packet's source, not sent by
//!    a local pod on another's behalf, a deferred entry only as the origin of the
//!    quote, an audit entry only while its direction audits); it neither refreshes
//!    nor moves the flow.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::TcContext};
use policy_common::{
    ct::{
        CtKey, CtValue, CT_FLAG_AUDIT, CT_FLAG_DEFERRED, CT_STATE_ANSWERED, CT_STATE_CLOSED,
        CT_STATE_CLOSING, CT_STATE_ESTABLISHED, CT_STATE_OPENING,
    },
    verdict::{DIRECTION_EGRESS, DIRECTION_INGRESS},
};

use crate::{
    audit,
    maps::{self, CONNTRACK},
    parse::{self, Flow, IPPROTO_TCP, TCP_FLAG_ACK, TCP_FLAG_FIN, TCP_FLAG_RST, TCP_FLAG_SYN},
};

/// Where a packet is decided: a pod interface, the direction it crosses it, and the
/// bank it is decided with (`ACTIVE` as the packet found it). Eight bytes, so it travels in one
/// register: a BPF call (`related`) takes at most five arguments.
#[derive(Clone, Copy)]
pub(crate) struct Site {
    /// The pod's host-side interface.
    pub ifindex: u32,
    /// `verdict::DIRECTION_*` of the error relative to that pod.
    pub direction: u8,
    /// The bank, 0 or 1.
    pub bank: u8,
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;

/// A live conntrack entry a packet belongs to.
pub(crate) struct Hit {
    /// The packet is a reply (the entry was made for the opposite direction).
    pub reply: bool,
    /// `CtValue::flags` of the entry.
    pub flags: u32,
    /// `CtValue::counter_slot` of the entry.
    pub counter_slot: u32,
    /// The entry in `CONNTRACK`, for `seen`.
    entry: *mut CtValue,
    /// `now()` when the entry was found.
    now: u64,
}

impl Hit {
    /// Records that the packet passed as part of this flow: `last_seen_ns` becomes
    /// now and the state moves as `next_state` says (written only when it changes).
    /// Call it only for a packet that passes because of the entry.
    #[inline(always)]
    pub(crate) fn seen(&self, flow: &Flow) {
        // SAFETY: `entry` came from `get_ptr_mut` during this run, so it points at a
        // CtValue the kernel keeps valid until the program returns (even if another
        // CPU evicts it meanwhile). Both fields are plain integers: a racing writer
        // can at worst make one update lost, never invalid.
        unsafe {
            let state = (*self.entry).state;
            let next = next_state(state, flow, self.reply);
            if next != state {
                (*self.entry).state = next;
            }
            (*self.entry).last_seen_ns = self.now;
        }
    }
}

/// The key of `flow` at `ifindex`, or of its reverse (`reversed`: the reply seen
/// from the other end, addresses and ports swapped).
#[inline(always)]
fn key(ifindex: u32, direction: u8, flow: &Flow, reversed: bool) -> CtKey {
    let (saddr, daddr, sport_be, dport_be) = if reversed {
        (&flow.daddr, &flow.saddr, flow.dport_be, flow.sport_be)
    } else {
        (&flow.saddr, &flow.daddr, flow.sport_be, flow.dport_be)
    };
    CtKey {
        ifindex,
        saddr: *saddr,
        daddr: *daddr,
        sport_be,
        dport_be,
        protocol: flow.protocol,
        direction,
        pad: [0; 2],
    }
}

/// The other direction.
#[inline(always)]
pub(crate) fn opposite(direction: u8) -> u8 {
    if direction == DIRECTION_INGRESS {
        DIRECTION_EGRESS
    } else {
        DIRECTION_INGRESS
    }
}

/// CLOCK_MONOTONIC in ns at the resolution of the scheduler tick (a few ms): ample
/// for timeouts of seconds, and far cheaper than `bpf_ktime_get_ns`, which reads the
/// clocksource (on the benchmark VM it cost a conntrack hit about 40 ns more).
#[inline(always)]
fn now() -> u64 {
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// How long an entry of `protocol` in `state` may stay idle (transition 5).
#[inline(always)]
fn timeout_ns(protocol: u8, state: u8) -> u64 {
    maps::config(|config| match protocol {
        IPPROTO_TCP => match state {
            CT_STATE_OPENING | CT_STATE_ANSWERED => config.ct_tcp_opening_ns,
            CT_STATE_ESTABLISHED => config.ct_tcp_established_ns,
            _ => config.ct_tcp_closing_ns,
        },
        IPPROTO_UDP | IPPROTO_SCTP => config.ct_udp_ns,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => config.ct_icmp_ns,
        _ => config.ct_other_ns,
    })
}

/// The entry under `key` unless it is absent or expired at `now`. A `last_seen_ns`
/// after `now` (another CPU refreshed it meanwhile) counts as idle 0.
#[inline(always)]
fn live(key: &CtKey, now: u64) -> Option<*mut CtValue> {
    let entry = CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: a value pointer from this run, read field by field (see `Hit::seen`).
    let (last_seen_ns, state) = unsafe { ((*entry).last_seen_ns, (*entry).state) };
    if now.saturating_sub(last_seen_ns) > timeout_ns(key.protocol, state) {
        None
    } else {
        Some(entry)
    }
}

/// The state of a new entry for `flow`'s packet (transition 1).
#[inline(always)]
fn initial_state(flow: &Flow) -> u8 {
    if flow.protocol != IPPROTO_TCP {
        return CT_STATE_OPENING;
    }
    let flags = flow.tcp_flags;
    if flags & TCP_FLAG_RST != 0 {
        CT_STATE_CLOSED
    } else if flags & TCP_FLAG_FIN != 0 {
        CT_STATE_CLOSING
    } else if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_ACK {
        CT_STATE_ESTABLISHED
    } else {
        CT_STATE_OPENING
    }
}

/// The state after `flow`'s packet passed as part of an entry in `state`
/// (transition 4); `reply` when it went the entry's opposite way.
#[inline(always)]
fn next_state(state: u8, flow: &Flow, reply: bool) -> u8 {
    if flow.protocol != IPPROTO_TCP {
        return if reply && state == CT_STATE_OPENING {
            CT_STATE_ESTABLISHED
        } else {
            state
        };
    }
    let flags = flow.tcp_flags;
    if flags & TCP_FLAG_RST != 0 || state == CT_STATE_CLOSED {
        CT_STATE_CLOSED
    } else if flags & TCP_FLAG_FIN != 0 || state == CT_STATE_CLOSING {
        CT_STATE_CLOSING
    } else if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_ACK
        && (reply || state == CT_STATE_ANSWERED)
    {
        CT_STATE_ESTABLISHED
    } else if reply
        && state == CT_STATE_OPENING
        && flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN | TCP_FLAG_ACK
    {
        CT_STATE_ANSWERED
    } else {
        state
    }
}

/// The live entry the packet belongs to at this interface: the forward entry first,
/// then the one whose reply it is. A packet that opens a TCP connection belongs to
/// none: it is decided afresh and, if allowed, replaces the old entry.
#[inline(always)]
pub(crate) fn lookup(ifindex: u32, direction: u8, flow: &Flow) -> Option<Hit> {
    if flow.opens() {
        return None;
    }
    let now = now();
    if let Some(entry) = live(&key(ifindex, direction, flow, false), now) {
        // SAFETY: as in `live`.
        let (state, flags) = unsafe { ((*entry).state, (*entry).flags) };
        // A flow that never got an answer is decided afresh by policy, packet by
        // packet: its entry was made under a state that may have changed since,
        // and passing on it could let through what both states deny (allowed out
        // by the old, in by the new). TCP gets this from `opens` (a SYN is always
        // decided); deferred Service flows are decided again at the backend.
        if flow.protocol != IPPROTO_TCP
            && state == CT_STATE_OPENING
            && flags & CT_FLAG_DEFERRED == 0
        {
            return None;
        }
        return Some(Hit {
            reply: false,
            // SAFETY: as in `live`.
            flags: unsafe { (*entry).flags },
            // SAFETY: as in `live`.
            counter_slot: unsafe { (*entry).counter_slot },
            entry,
            now,
        });
    }
    let reply = key(ifindex, opposite(direction), flow, true);
    live(&reply, now).map(|entry| Hit {
        reply: true,
        // SAFETY: as in `live`.
        flags: unsafe { (*entry).flags },
        // SAFETY: as in `live`.
        counter_slot: unsafe { (*entry).counter_slot },
        entry,
        now,
    })
}

/// The live entry of exactly this key: `flow` (or, with `reversed`, its reverse,
/// and the hit is then a reply) as the first packet in `direction` at `ifindex`.
/// Replies do not match, nor does a packet that opens a TCP connection (decided
/// afresh, as in `lookup`).
#[inline(always)]
pub(crate) fn find(ifindex: u32, direction: u8, flow: &Flow, reversed: bool) -> Option<Hit> {
    if flow.opens() {
        return None;
    }
    let now = now();
    live(&key(ifindex, direction, flow, reversed), now).map(|entry| Hit {
        reply: reversed,
        // SAFETY: as in `live`.
        flags: unsafe { (*entry).flags },
        // SAFETY: as in `live`.
        counter_slot: unsafe { (*entry).counter_slot },
        entry,
        now,
    })
}

/// Whether `flow`, an ICMP or ICMPv6 error (`Flow::quote_at` set) crossing
/// `site.ifindex` in `site.direction` at an endpoint with `endpoint_flags`, quotes a
/// packet of a live flow there
/// (transition 7). The quoted packet was sent by the error's receiver, the way the
/// error now travels back, so it crossed this interface in the opposite direction:
/// at a pod's ingress the error quotes a packet of the pod's egress, at its egress
/// one of its ingress. So:
/// - the quoted packet's source must be the error's destination (as Linux's
///   `nf_conntrack_inet_error` requires): otherwise a pod could wrap any payload in
///   an "error" about one of its flows and send it anywhere;
/// - it is looked up as that packet would have been: the forward key as quoted in
///   `opposite(direction)`, or the reversed key in `direction` (the quoted packet
///   was a reply). A deferred Service entry counts only forward: it is written
///   before the backend decides, so as the origin of a reply it proves nothing;
/// - an audit-only entry counts only while its direction still audits;
/// - an error from a local pod must quote a packet sent to that pod (its source is
///   the quoted destination): a pod cannot speak for a router or another peer.
///
/// A quote that does not parse (`parse::quoted`) is unrelated.
///
/// A BPF subprogram of its own (not inlined): only ICMP errors come here, and
/// inlined into `decide` its two keys and the quote share stack slots with the rest
/// so tightly that LLVM emitted a spill the verifier rejects.
#[inline(never)]
pub(crate) fn related(ctx: &TcContext, site: Site, flow: &Flow, endpoint_flags: u32) -> bool {
    let Site {
        ifindex,
        direction,
        bank,
    } = site;
    let sent = opposite(direction);
    // One key, read straight from the quote and reversed in place for the second
    // lookup: this subprogram's stack adds to `decide`'s, and both must fit in 512
    // bytes.
    let mut key = CtKey {
        ifindex,
        direction: sent,
        ..CtKey::default()
    };
    if !parse::quoted(ctx, flow, &mut key) || !parse::same_address(&key.saddr, &flow.daddr) {
        return false;
    }
    // A local pod may report errors only about packets sent to it: otherwise it
    // could push a payload past another pod's ingress policy by quoting one of that
    // pod's flows. Routers, the node (kube-proxy REJECT) and un-DNATed backends (the
    // ClusterIP, which is the quoted destination) are not held to this.
    if !parse::same_address(&key.daddr, &flow.saddr)
        && maps::endpoint_ifindex(u32::from(bank), &flow.saddr).is_some()
    {
        return false;
    }
    let now = now();
    if relates(live_flags(&key, now), endpoint_flags, sent, true) {
        return true;
    }
    let saddr = key.saddr;
    key.saddr = key.daddr;
    key.daddr = saddr;
    (key.sport_be, key.dport_be) = (key.dport_be, key.sport_be);
    key.direction = direction;
    relates(live_flags(&key, now), endpoint_flags, direction, false)
}

/// The flags of the live entry under `key`, or `NO_ENTRY`.
#[inline(always)]
fn live_flags(key: &CtKey, now: u64) -> u32 {
    match live(key, now) {
        // SAFETY: as in `live`.
        Some(entry) => unsafe { (*entry).flags },
        None => NO_ENTRY,
    }
}

/// `live_flags` of a key with no live entry: no flag combination means this.
const NO_ENTRY: u32 = u32::MAX;

/// Whether an entry with `flags` (`NO_ENTRY`: none), made for packets going
/// `original`, can make an error related: a deferred entry only when
/// `deferred_ok`, an audit-only entry only while that direction still audits.
#[inline(always)]
fn relates(flags: u32, endpoint_flags: u32, original: u8, deferred_ok: bool) -> bool {
    flags != NO_ENTRY
        && (deferred_ok || flags & CT_FLAG_DEFERRED == 0)
        && (flags & CT_FLAG_AUDIT == 0 || endpoint_flags & audit::flag(original) != 0)
}

/// Records an allowed (or deferred) first packet in the state it implies
/// (`initial_state`). A full table evicts its least recently used entries, so
/// tracking never fails open or closed for the packet being decided.
/// `counter_slot` is `NO_COUNTER` when no policy rule decided.
#[inline(always)]
pub(crate) fn track(ifindex: u32, direction: u8, flow: &Flow, counter_slot: u32, flags: u32) {
    let now = now();
    let value = CtValue {
        created_ns: now,
        last_seen_ns: now,
        counter_slot,
        flags,
        state: initial_state(flow),
        pad: [0; 7],
    };
    let _ = CONNTRACK.insert(&key(ifindex, direction, flow, false), &value, 0);
}
