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
//!    with `created_ns = last_seen_ns = now`, the packet's generation (`ACTIVE`) and
//!    the state its packet implies (`initial_state`). TCP: with RST CLOSED, else
//!    with FIN CLOSING, else OPENING (a SYN, a SYN/ACK whose SYN was not seen, an ACK
//!    of a flow picked up mid-stream, whose start was never seen or was forgotten, a
//!    non-first fragment, which has no flags): nothing is established until the
//!    other side answers. Other protocols start OPENING. A key already in the table
//!    (expired, revoked, or a SYN's older connection) is overwritten in place; a new
//!    key needs room: its interface below `Config::ct_endpoint_flows` entries
//!    (`CT_TRACKED - CT_RECLAIMED`), else `STAT_DROP_CT_ENDPOINT_LIMIT`, and the
//!    table below its capacity, else `STAT_DROP_CT_FULL`. The packet is dropped,
//!    never passed untracked, and no other entry is touched.
//! 2. a deferred egress entry is also written for the post-DNAT tuple, by the
//!    destination's classifier at the source's interface, once the source's egress
//!    allowed the backend (a rule, no egress isolation, or an audit would-drop;
//!    `service::source_egress`); the packets that later pass by it, forward there
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
//!    with ACK and without SYN from OPENING (the other side answering a pickup). So
//!    a half-open connection (SYN and SYN/ACK only) and a pickup nobody answers keep
//!    the opening timeout, and a client's ACK before any answer establishes nothing.
//!    Other protocols: the first reply moves OPENING -> ESTABLISHED, which only tells
//!    a reader the flow was answered. A hit costs one store (`last_seen_ns`) through
//!    the value's pointer; the state is written only when it changes.
//! 5. a packet whose entry carries another generation than its own (a policy
//!    change since the flow was last decided) re-decides the flow's original
//!    direction with its own bank before it passes (`judge::recheck`, unless
//!    `CONFIG_FLAG_KEEP_ESTABLISHED`): still allowed, the entry takes the new
//!    generation, flags and counter slot (keeping `CT_FLAG_DIRECT`, which says
//!    where the flow was first decided), and the packet goes on; denied, the entry
//!    is marked `CT_FLAG_REVOKED` and CLOSED, and this and every later packet of the
//!    flow, either way, is dropped (`STAT_DROP_REVOKED`, refreshing the entry) until
//!    the entry expires, a later change allows the flow again, or a SYN reopens the
//!    tuple (3).
//! 6. expiry is lazy in the classifiers: an entry idle longer than its timeout
//!    (`now - last_seen_ns > Config::ct_timeout_ns(protocol, state)`) is treated as
//!    absent by `lookup`, `find` and `related`, so the packet is decided afresh and,
//!    if allowed, `track` overwrites the entry (or, for a packet the other way,
//!    writes its own key). The agent removes expired entries (`CT_RECLAIMED`); it is
//!    the only one that removes any, so nothing evicts a live flow.
//! 7. an ICMP or ICMPv6 error that quotes a packet of a live flow at this interface
//!    is related to it (`related`: sent to the quoted packet's source, not sent by
//!    a local pod on another's behalf, a deferred entry only as the origin of the
//!    quote and only once the destination's side decided it there, or for an
//!    error that side vouched for or the node made, an audit entry only while its direction audits, a revoked entry never,
//!    and an entry of another generation only with `CONFIG_FLAG_KEEP_ESTABLISHED`);
//!    it neither refreshes nor moves the flow.

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::MaybeUninit,
    ptr::{addr_of, addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{bindings::BPF_NOEXIST, programs::TcContext};
use policy_common::{
    config::{Config, CONFIG_FLAG_KEEP_ESTABLISHED},
    ct::{
        CtKey, CtValue, CT_FLAG_AUDIT, CT_FLAG_DECIDED_THERE, CT_FLAG_DEFERRED, CT_FLAG_DIRECT,
        CT_FLAG_REMOTE_PLAIN, CT_FLAG_REVOKED, CT_FLAG_RULE_SLOT, CT_STATE_ANSWERED,
        CT_STATE_CLOSED, CT_STATE_CLOSING, CT_STATE_ESTABLISHED, CT_STATE_OPENING,
    },
    peer::{PEER_FLAG_NODE, PEER_FLAG_SERVICE},
    verdict::{
        DIRECTION_EGRESS, DIRECTION_INGRESS, STAT_DROP_CT_ENDPOINT_LIMIT, STAT_DROP_CT_FULL,
    },
};

use crate::{
    audit, clock,
    maps::{self, CONNTRACK},
    parse::{self, Flow, IPPROTO_TCP, TCP_FLAG_ACK, TCP_FLAG_FIN, TCP_FLAG_RST, TCP_FLAG_SYN},
};

/// Where a packet is decided: a pod interface, the direction it crosses it, and the
/// bank it is decided with (of the generation `ACTIVE` held when the packet came).
/// Eight bytes, so it travels in one register: a BPF call (`related`) takes at most
/// five arguments.
#[derive(Clone, Copy)]
pub(crate) struct Site {
    /// The pod's host-side interface.
    pub ifindex: u32,
    /// `verdict::DIRECTION_*` relative to that pod.
    pub direction: u8,
    /// The bank, 0 or 1.
    pub bank: u8,
}

/// A live conntrack entry a packet belongs to. Its fields are read through the
/// entry's pointer when asked for, not copied: every byte of a `Hit` sits on the
/// stack of the frame that holds it.
pub(crate) struct Hit {
    /// The packet is a reply (the entry was made for the opposite direction).
    pub reply: bool,
    /// The entry in `CONNTRACK`.
    entry: *mut CtValue,
    /// `now()` when the entry was found.
    now: u64,
}

impl Hit {
    /// The hit on `entry`, found at `now`, the packet a reply if `reply`.
    #[inline(always)]
    fn of(entry: *mut CtValue, now: u64, reply: bool) -> Self {
        Hit { reply, entry, now }
    }

    /// `CtValue::flags` of the entry.
    #[inline(always)]
    pub(crate) fn flags(&self) -> u32 {
        // SAFETY: as in `refresh`.
        unsafe { (*self.entry).flags }
    }

    /// `CtValue::generation` and `CtValue::flags` of the entry, read in
    /// `verdict`'s order.
    #[inline(always)]
    pub(crate) fn verdict(&self) -> (u32, u32) {
        verdict(self.entry)
    }

    /// `CtValue::counter_slot` of the entry.
    #[inline(always)]
    pub(crate) fn counter_slot(&self) -> u32 {
        // SAFETY: as in `refresh`.
        unsafe { (*self.entry).counter_slot }
    }

    /// `CtValue::generation` of the entry.
    #[inline(always)]
    pub(crate) fn generation(&self) -> u32 {
        // SAFETY: as in `refresh`.
        unsafe { (*self.entry).generation }
    }

    /// Records that the packet passed as part of this flow (or, for a revoked
    /// flow, was dropped by it): `refresh`.
    #[inline(always)]
    pub(crate) fn seen(&self, flow: &Flow) {
        refresh(
            self.entry,
            self.now,
            flow.protocol,
            flow.tcp_flags,
            self.reply,
        );
    }

    /// Whether the packet, decided with `generation`, may pass by this entry
    /// without re-deciding it (transition 5): not revoked, and decided by the same
    /// state (or the agent keeps established flows, unless the entry passed by
    /// audit: audit never keeps a flow past a change, which may have made the
    /// policy enforce). Generation and flags are read in `verdict`'s order.
    #[inline(always)]
    pub(crate) fn current(&self, generation: u32) -> bool {
        let (stamp, flags) = verdict(self.entry);
        flags & CT_FLAG_REVOKED == 0
            && (stamp == generation || flags & CT_FLAG_AUDIT == 0 && keep_established())
    }

    /// Whether this forward entry was decided by another generation than
    /// `generation` and its destination is now a Service address (in `bank`):
    /// kept flows (`CONFIG_FLAG_KEEP_ESTABLISHED`) are decided again all the same,
    /// since the node may now translate the tuple to a pod the egress never
    /// judged (`decide_flow`).
    #[inline(never)]
    pub(crate) fn now_to_a_service(&self, generation: u32, flow: &Flow) -> bool {
        let (stamp, _) = verdict(self.entry);
        !self.reply
            && stamp != generation
            && maps::peer(maps::bank(generation), flow.ipv6, &flow.daddr).flags & PEER_FLAG_SERVICE
                != 0
    }

    /// A deferral that a destination's side decided on this very tuple
    /// (`CT_FLAG_DECIDED_THERE`) with exactly `generation`: the decision stands
    /// only for the state that made it, whether or not established flows are kept.
    #[inline(always)]
    pub(crate) fn decided_there(&self, generation: u32) -> bool {
        let (stamp, flags) = verdict(self.entry);
        flags & (CT_FLAG_DEFERRED | CT_FLAG_DECIDED_THERE | CT_FLAG_REVOKED)
            == CT_FLAG_DEFERRED | CT_FLAG_DECIDED_THERE
            && stamp == generation
    }

    /// Whether this entry of a local pod's forward egress is what that pod's own
    /// hook passed a packet of the flow on, for `node_sockets` (`sockets.rs` rule
    /// 2) to let it through undecided: not deferred, not revoked, and decided with
    /// `generation`; or, where established flows are kept, decided by the pod's
    /// own hook (`CT_FLAG_DIRECT`) for a non-TCP flow already answered, which that
    /// hook passes as kept. A TCP packet that meets the socket lookup opens its
    /// connection (the hook decided it afresh with its own generation), and an
    /// entry the socket lookup itself wrote, a decision there, stands only for the
    /// state that made it, as `decided_there` does for a backend's.
    #[inline(always)]
    pub(crate) fn passed_at_the_pod(&self, generation: u32, protocol: u8) -> bool {
        let (stamp, flags) = verdict(self.entry);
        if flags & (CT_FLAG_DEFERRED | CT_FLAG_REVOKED) != 0 {
            return false;
        }
        if stamp == generation {
            return true;
        }
        // SAFETY: as in `refresh`.
        let state = unsafe { (*self.entry).state };
        keep_established()
            && flags & CT_FLAG_DIRECT != 0
            && protocol != IPPROTO_TCP
            && state != CT_STATE_OPENING
    }

    /// The entry was re-decided with `generation` and allowed: it takes the
    /// decision's `flags` and `counter_slot` (a revoked flow passes again), and
    /// keeps of its own flags those in `kept` (`CT_FLAG_DIRECT`, which says the
    /// flow was decided at the interface's own hook, when re-decided there too).
    #[inline(always)]
    pub(crate) fn renew(&self, generation: u32, flags: u32, counter_slot: u32, kept: u32) {
        // SAFETY: as in `refresh`.
        unsafe { (*self.entry).counter_slot = counter_slot };
        let kept = self.flags() & kept;
        set_verdict(self.entry, flags | kept, generation);
    }

    /// Whether this packet, a reply at the pod's egress to the remote of an
    /// ingress entry, decided with `generation`, goes to an address the node may
    /// translate: the entry does not vouch for the remote with this generation
    /// (`CT_FLAG_REMOTE_PLAIN`), and the active bank flags its destination a
    /// Service address, not the node's. The caller defers it then, for a pod
    /// whose egress is isolated.
    #[inline(never)]
    pub(crate) fn reply_to_a_service(&self, generation: u32, flow: &Flow) -> bool {
        let (stamp, flags) = verdict(self.entry);
        if flags & CT_FLAG_REMOTE_PLAIN != 0 && stamp == generation {
            return false;
        }
        let peer = maps::peer(maps::bank(generation), flow.ipv6, &flow.daddr).flags;
        peer & PEER_FLAG_SERVICE != 0 && peer & PEER_FLAG_NODE == 0
    }

    /// The entry was re-decided with `generation` and denied: revoked and CLOSED,
    /// so it expires after the closing timeout once the flow stops trying. Denied
    /// by a ClusterNetworkPolicy rule (`rule_slot`), the entry keeps that rule's
    /// slot with `CT_FLAG_RULE_SLOT`, so the flow's later packets count in it. The
    /// slot is written before the flags: a packet of the old decision racing this
    /// one may count once in the wrong counter (as `renew` may), never pass.
    #[inline(always)]
    pub(crate) fn revoke(&self, generation: u32, rule_slot: Option<u32>) {
        // SAFETY: as in `refresh`.
        unsafe { (*self.entry).state = CT_STATE_CLOSED };
        let (_, flags) = verdict(self.entry);
        let by_rule = match rule_slot {
            Some(slot) => {
                // SAFETY: as in `refresh`.
                unsafe { (*self.entry).counter_slot = slot };
                CT_FLAG_RULE_SLOT
            }
            None => 0,
        };
        set_verdict(
            self.entry,
            flags & !CT_FLAG_RULE_SLOT | CT_FLAG_REVOKED | by_rule,
            generation,
        );
    }
}

/// `CtValue::generation`, then `CtValue::flags`, of `entry`, in that order, as
/// volatile reads the compiler may neither merge nor reorder. Another CPU may
/// re-decide the entry meanwhile (`set_verdict`), which writes flags first and
/// generation last: a reader that sees the new generation then sees the flags
/// written with it (or later ones), never flags of an older decision under a
/// newer generation, so an entry's flags (`CT_FLAG_LOCAL_OWNED` above all) never
/// vouch for a generation that did not set them. The reverse mix (new flags, old
/// generation) is still possible: the flags of a decision that raced this packet
/// under the generation just before or after its own.
///
/// The compiler keeps the order; the CPU does too on x86-64 (TSO: loads are not
/// reordered with loads, stores not with stores). A weakly ordered CPU (arm64)
/// would need the two in one 64-bit word to be exact.
#[inline(always)]
pub(crate) fn verdict(entry: *const CtValue) -> (u32, u32) {
    // SAFETY: as in `refresh`; both fields are aligned u32s of the value.
    unsafe {
        let generation = read_volatile(addr_of!((*entry).generation));
        let flags = read_volatile(addr_of!((*entry).flags));
        (generation, flags)
    }
}

/// Writes a decision into `entry`: `flags`, then `generation`, in that order, as
/// volatile writes (`verdict` says why).
#[inline(always)]
fn set_verdict(entry: *mut CtValue, flags: u32, generation: u32) {
    // SAFETY: as in `refresh`.
    unsafe {
        write_volatile(addr_of_mut!((*entry).flags), flags);
        write_volatile(addr_of_mut!((*entry).generation), generation);
    }
}

/// Overwrites the live `entry` with `value`, its decision (`set_verdict`) last.
#[inline(always)]
fn overwrite(entry: *mut CtValue, value: &CtValue) {
    // SAFETY: as in `refresh`.
    unsafe {
        (*entry).created_ns = value.created_ns;
        (*entry).last_seen_ns = value.last_seen_ns;
        (*entry).counter_slot = value.counter_slot;
        maps::write_padded(addr_of_mut!((*entry).state), value.state);
    }
    set_verdict(entry, value.flags, value.generation);
}

/// Records that a packet of `protocol` with `tcp_flags` passed at `now` as part
/// of the flow of `entry` (or, for a revoked flow, was dropped by it), a reply if
/// `reply`: `last_seen_ns` becomes `now` and the state moves as `next_state` says
/// (written only when it changes).
#[inline(always)]
pub(crate) fn refresh(entry: *mut CtValue, now: u64, protocol: u8, tcp_flags: u8, reply: bool) {
    // SAFETY: `entry` came from `get_ptr_mut` during this run, so it points at a
    // CtValue the kernel keeps valid until the program returns (even if the agent
    // removes it meanwhile). Every field is a plain integer: a racing writer can
    // at worst make one update lost, never invalid.
    unsafe {
        let state = (*entry).state;
        let next = next_state(state, protocol, tcp_flags, reply);
        if next != state {
            (*entry).state = next;
        }
        (*entry).last_seen_ns = now;
    }
}

/// Whether the agent keeps tracked flows passing across policy changes.
#[inline(always)]
pub(crate) fn keep_established() -> bool {
    maps::config(|config| config.flags & CONFIG_FLAG_KEEP_ESTABLISHED != 0)
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

/// Writes into `key`, field by field, what `key()` returns for the same arguments:
/// a key built by value would first take 48 bytes of the stack.
#[inline(always)]
fn fill_key(key: &mut CtKey, ifindex: u32, direction: u8, flow: &Flow, reversed: bool) {
    key.ifindex = ifindex;
    if reversed {
        key.saddr = flow.daddr;
        key.daddr = flow.saddr;
        key.sport_be = flow.dport_be;
        key.dport_be = flow.sport_be;
    } else {
        key.saddr = flow.saddr;
        key.daddr = flow.daddr;
        key.sport_be = flow.sport_be;
        key.dport_be = flow.dport_be;
    }
    key.protocol = flow.protocol;
    key.direction = direction;
    key.pad = [0; 2];
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
/// clocksource (on the benchmark VM it cost a conntrack hit about 40 ns more); read
/// once per tick per CPU (`clock.rs`).
#[inline(always)]
fn now() -> u64 {
    clock::now()
}

/// The entry under `key` unless it is absent or expired at `now`. A `last_seen_ns`
/// after `now` (another CPU refreshed it meanwhile) counts as idle 0.
#[inline(always)]
fn live(key: &CtKey, now: u64) -> Option<*mut CtValue> {
    live_in(maps::config_ref(), key, now)
}

/// `live` with the timeouts of `config` (`CONFIG[0]`, read by the caller).
#[inline(always)]
pub(crate) fn live_in(config: &Config, key: &CtKey, now: u64) -> Option<*mut CtValue> {
    let entry = CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: a value pointer from this run, read field by field (see `refresh`).
    let (last_seen_ns, state) = unsafe { ((*entry).last_seen_ns, (*entry).state) };
    let timeout = config.ct_timeout_ns(key.protocol, state);
    if now.saturating_sub(last_seen_ns) > timeout {
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
    } else {
        CT_STATE_OPENING
    }
}

/// The state after a packet of `protocol` with `flags` (its TCP flags) passed as
/// part of an entry in `state` (transition 4); `reply` when it went the entry's
/// opposite way.
#[inline(always)]
fn next_state(state: u8, protocol: u8, flags: u8, reply: bool) -> u8 {
    if protocol != IPPROTO_TCP {
        return if reply && state == CT_STATE_OPENING {
            CT_STATE_ESTABLISHED
        } else {
            state
        };
    }
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
///
#[inline(always)]
pub(crate) fn lookup(ifindex: u32, direction: u8, flow: &Flow) -> Option<Hit> {
    if flow.opens() {
        return None;
    }
    let now = now();
    let key = maps::ct_key()?;
    // SAFETY: this CPU's scratch key (`maps::ct_key`), used by this run alone.
    let key = unsafe { &mut *key };
    fill_key(key, ifindex, direction, flow, false);
    if let Some(entry) = live(key, now) {
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
        return Some(Hit::of(entry, now, false));
    }
    fill_key(key, ifindex, opposite(direction), flow, true);
    live(key, now).map(|entry| Hit::of(entry, now, true))
}

/// `key` of the other end: addresses and ports swapped, the opposite direction.
#[inline(always)]
fn reverse(key: &mut CtKey) {
    core::mem::swap(&mut key.saddr, &mut key.daddr);
    (key.sport_be, key.dport_be) = (key.dport_be, key.sport_be);
    key.direction = opposite(key.direction);
}

/// Whether the live forward entry of `flow` at `ifindex` for egress is a
/// deferral (`CT_FLAG_DEFERRED`), whatever the packet is (a SYN included: the
/// deferral its source's hook just wrote for it).
#[inline(always)]
pub(crate) fn deferred_egress(ifindex: u32, flow: &Flow) -> bool {
    let now = now();
    let Some(key) = maps::ct_key() else {
        return false;
    };
    // SAFETY: as in `lookup`.
    let key = unsafe { &mut *key };
    fill_key(key, ifindex, DIRECTION_EGRESS, flow, false);
    // SAFETY: as in `live`.
    live(key, now).is_some_and(|entry| unsafe { (*entry).flags } & CT_FLAG_DEFERRED != 0)
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
    let key = maps::ct_key()?;
    // SAFETY: as in `lookup`.
    let key = unsafe { &mut *key };
    fill_key(key, ifindex, direction, flow, reversed);
    live(key, now).map(|entry| Hit::of(entry, now, reversed))
}

/// The live entry under this CPU's scratch key as the caller wrote it
/// (`maps::ct_key`: a flow's first packet), for a packet that is its reply.
#[inline(always)]
pub(crate) fn find_filled() -> Option<Hit> {
    let now = now();
    let key = maps::ct_key()?;
    // SAFETY: as in `lookup`; the caller wrote the key whole.
    let key = unsafe { &*key };
    live(key, now).map(|entry| Hit::of(entry, now, true))
}

/// With an endpoint's flags, in `related`'s `endpoint_flags`: the error arrived
/// with the reply-verified bit (`service::verify_error`). No endpoint flag uses
/// this bit.
pub(crate) const ERROR_VERIFIED: u32 = 1 << 31;

/// Whether `flow`, an ICMP or ICMPv6 error (`Flow::quote_at` set) crossing
/// `site.ifindex` in `site.direction` at an endpoint with `endpoint_flags`, decided
/// with `generation`, quotes a packet of a live flow there
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
/// - an audit-only entry counts only while its direction still audits; a revoked
///   entry never, nor one another state decided (unless the agent keeps
///   established flows): the error is then decided by policy;
/// - an error from a local pod must quote a packet sent to that pod (its source is
///   the quoted destination): a pod cannot speak for a router or another peer;
/// - a deferred entry relates an error only once the destination's side decided
///   the flow on this tuple (`CT_FLAG_DECIDED_THERE`, this generation), or, for
///   an error from no local pod, when it carries the reply-verified bit
///   (`ERROR_VERIFIED` in `endpoint_flags`: a backend's side that allowed the
///   flow vouched for it) or the node made it.
///
/// A quote that does not parse (`parse::quoted`) is unrelated.
///
/// A BPF subprogram of its own (not inlined): only ICMP errors come here, and
/// inlined into `decide` its two keys and the quote share stack slots with the rest
/// so tightly that LLVM emitted a spill the verifier rejects.
#[inline(never)]
pub(crate) fn related(
    ctx: &TcContext,
    site: Site,
    flow: &Flow,
    endpoint_flags: u32,
    generation: u32,
) -> bool {
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
    let from_pod = maps::endpoint_ifindex(u32::from(bank), &flow.saddr).is_some();
    if from_pod && !parse::same_address(&key.daddr, &flow.saddr) {
        return false;
    }
    let now = now();
    // A deferral is no decision: an error relates to one only when the side
    // that decided the flow vouched for it (the reply-verified bit, from a
    // backend that allowed the flow or `node_entry`), when the node made it (a
    // REJECT, an error about forwarding: it arrived on no interface), or once
    // the destination's side decided the flow on this very tuple
    // (`CT_FLAG_DECIDED_THERE`, in `relates`). Else a backend the client's egress
    // denies could push errors past the client's ingress, the node
    // un-translating them to come from the Service address.
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel handed this program.
    let arrived_on = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let vouched = endpoint_flags & ERROR_VERIFIED != 0 || arrived_on == 0;
    if relates(
        &key,
        now,
        generation,
        endpoint_flags,
        sent,
        !from_pod && vouched,
    ) {
        return true;
    }
    reverse(&mut key);
    relates(&key, now, generation, endpoint_flags, direction, false)
}

/// Whether the entry under `key`, made for packets going `original`, is live at
/// `now` and can make an error related (`related`): a deferred entry only when
/// `deferred_ok`, an audit-only entry only while that direction still audits
/// (`endpoint_flags`), a revoked one never, and one decided by another generation
/// than `generation` only when the agent keeps established flows.
#[inline(always)]
fn relates(
    key: &CtKey,
    now: u64,
    generation: u32,
    endpoint_flags: u32,
    original: u8,
    deferred_ok: bool,
) -> bool {
    let Some(entry) = live(key, now) else {
        return false;
    };
    let (stamp, flags) = verdict(entry);
    let decided_there = flags & (CT_FLAG_DEFERRED | CT_FLAG_DECIDED_THERE)
        == CT_FLAG_DEFERRED | CT_FLAG_DECIDED_THERE
        && stamp == generation;
    (deferred_ok || flags & CT_FLAG_DEFERRED == 0 || decided_there)
        && (flags & CT_FLAG_AUDIT == 0
            || audit::stands(flags, stamp, generation, endpoint_flags, original))
        && flags & CT_FLAG_REVOKED == 0
        && (stamp == generation || keep_established())
}

/// Records an allowed (or deferred) first packet, decided with `generation`, at
/// `site` (its interface and direction) in the state it implies (transition 1).
/// `counter_slot` is `NO_COUNTER` when no policy rule decided. `Err` with the drop
/// reason when a new key has no room: the interface holds its limit of flows, or
/// the table is full.
#[inline(always)]
pub(crate) fn track(
    site: Site,
    flow: &Flow,
    counter_slot: u32,
    flags: u32,
    generation: u32,
) -> Result<(), u32> {
    match track_entry(site, flow, counter_slot, flags, generation) {
        TRACKED => Ok(()),
        stat => Err(stat),
    }
}

/// `track_entry`: the flow is tracked (no `STAT_DROP_*` is 0).
const TRACKED: u32 = 0;

/// `track` as a BPF subprogram of its own, so its key and value stay out of the
/// classifier's stack frame, which `decide` fills; returns `TRACKED` or the drop
/// reason (a `Result` would be returned through memory, one argument too many).
#[inline(never)]
fn track_entry(site: Site, flow: &Flow, counter_slot: u32, flags: u32, generation: u32) -> u32 {
    let ifindex = site.ifindex;
    let now = now();
    let key = key(ifindex, site.direction, flow, false);
    // Field by field, the state and its padding in one store (`maps::write_padded`).
    let mut value = MaybeUninit::<CtValue>::uninit();
    let at = value.as_mut_ptr();
    // SAFETY: writes to the fields of this frame's `CtValue` slot, every one of
    // its 32 bytes (`pad` with `state`), before it is read.
    let value = unsafe {
        addr_of_mut!((*at).created_ns).write(now);
        addr_of_mut!((*at).last_seen_ns).write(now);
        addr_of_mut!((*at).counter_slot).write(counter_slot);
        addr_of_mut!((*at).flags).write(flags);
        maps::write_padded(addr_of_mut!((*at).state), initial_state(flow));
        addr_of_mut!((*at).generation).write(generation);
        value.assume_init()
    };
    // A key in the table is counted already: overwritten in place.
    if let Some(entry) = CONNTRACK.get_ptr_mut(&key) {
        overwrite(entry, &value);
        return TRACKED;
    }
    let Some(tracked) = maps::ct_tracked(ifindex) else {
        return STAT_DROP_CT_ENDPOINT_LIMIT;
    };
    // SAFETY: a value pointer from this run; the count is only ever raised
    // atomically, so a plain read sees some value it had.
    let added = unsafe { *tracked };
    let held = added.wrapping_sub(maps::ct_reclaimed(ifindex)) as i64;
    if held >= i64::from(maps::config(|config| config.ct_endpoint_flows)) {
        return STAT_DROP_CT_ENDPOINT_LIMIT;
    }
    if CONNTRACK
        .insert(&key, &value, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Another CPU may have added the same key meanwhile: that one counts.
        return match CONNTRACK.get_ptr_mut(&key) {
            Some(entry) => {
                overwrite(entry, &value);
                TRACKED
            }
            None => STAT_DROP_CT_FULL,
        };
    }
    // SAFETY: `tracked` points at a u64 in a map value, valid and aligned for the
    // run; every writer adds through this atomic instruction (BPF_ATOMIC add: its
    // result is unused, so no BPF_FETCH, which older kernels lack).
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(tracked, 1) };
    TRACKED
}
