//! podwall's kernel programs: a TC classifier per hook on each local pod's host-side veth, and those of the node's exits and sockets.
//!
//! `pod_ingress` runs at TC egress (packets the veth hands to the pod) and decides the
//! pod's ingress policy; `pod_egress` runs at TC ingress (packets the pod sends) and
//! decides its egress policy. Both share `decide`, which returns the counter to bump:
//! an allow counter or a drop reason, and fills a `Facts` with what it learned;
//! `to_tc_action` is the one place that turns both into a TC verdict, per-policy
//! counts (`counters.rs`) and verdict events (`events.rs`). Layouts come from
//! `policy-common`; nothing here panics.
//!
//! `node_exit` and `node_entry` sit on the node's exits (`exit.rs`), and
//! `node_sockets` (an `sk_lookup` program) on the node's network namespace
//! (`sockets.rs`): where a Service egress deferred past DNAT leaves the node or
//! meets the node itself.
//!
//! `debug.rs` is the kernel debug channel: aya-log records of a few drops, off
//! (and removed by the verifier) unless the agent loads the programs with `-vv`.
//!
//! `bench_floor` exists only for `cargo xtask bench datapath`: an empty classifier
//! that touches neither the packet nor a map, so the benchmark can measure what
//! running any TC program costs and report podwall's paths against it. The agent
//! never loads or attaches it.
#![no_std]
#![no_main]
// `ct::track` counts an interface's flows with an atomic add, which BPF has
// (BPF_ATOMIC) but core exposes on this target (no compare-and-swap) only as an
// intrinsic. The eBPF build runs rustc with RUSTC_BOOTSTRAP (`cargo xtask build-ebpf`).
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "core::intrinsics::atomic_xadd, see above")]
// `sockets.rs` reads the `sk_lookup` context with inline assembly: one load per
// field straight from the context pointer, which the verifier requires.
#![feature(asm_experimental_arch)]
// Map lookups take their keys by reference on purpose: a key passed by value
// is copied to the stack first, and the hooks' frames are near the verifier's
// 512-byte limit.
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "keys by reference: no stack copies in frames near the 512-byte limit"
)]

mod arp;
mod audit;
mod clock;
mod counters;
mod ct;
mod debug;
mod events;
mod exit;
mod facts;
mod fast;
mod frag;
mod judge;
mod maps;
mod parse;
mod service;
mod sockets;
mod tunnel;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::{classifier, sk_lookup},
    programs::{SkLookupContext, TcContext},
};
use policy_common::{
    ct::{CT_FLAG_DEFERRED, CT_FLAG_DIRECT, CT_FLAG_LOCAL_OWNED},
    endpoint::{EndpointInfo, OwnAddresses, ALLOW_TUNNELS, ISOLATED_EGRESS, OWN_V4, OWN_V6},
    events::{EVENT_ALLOWED, EVENT_DROPPED, EVENT_WOULD_DROP},
    peer::PEER_FLAG_NODE,
    verdict::*,
};

use crate::{
    facts::{Counter, Facts},
    parse::{Flow, Packet},
    service::{Why, ARRIVED_DEFERRED, ARRIVED_STALE, ARRIVED_VERIFIED},
};

/// Decides a packet of the pod's ingress.
#[classifier]
pub fn pod_ingress(ctx: TcContext) -> i32 {
    classify(&ctx, DIRECTION_INGRESS)
}

/// Decides a packet of the pod's egress.
#[classifier]
pub fn pod_egress(ctx: TcContext) -> i32 {
    classify(&ctx, DIRECTION_EGRESS)
}

/// Decides a Service egress deferred at a local client when it leaves the node
/// through an exit (uplink or tunnel device) instead of meeting a local backend
/// (`exit.rs`).
#[classifier]
pub fn node_exit(ctx: TcContext) -> i32 {
    exit::leave::<{ parse::ETH_HLEN }>(&ctx)
}

/// Marks the verified replies of deferred flows coming back through an exit
/// (`exit.rs`); passes every packet.
#[classifier]
pub fn node_entry(ctx: TcContext) -> i32 {
    exit::enter::<{ parse::ETH_HLEN }>(&ctx)
}

/// `node_exit` for an exit without Ethernet frames (an IP-in-IP, WireGuard or tun
/// device), whose packets start with their IP header.
#[classifier]
pub fn node_exit_ip(ctx: TcContext) -> i32 {
    exit::leave::<0>(&ctx)
}

/// `node_entry` for an exit without Ethernet frames.
#[classifier]
pub fn node_entry_ip(ctx: TcContext) -> i32 {
    exit::enter::<0>(&ctx)
}

/// Decides a local pod's connection to a socket of the node itself, after DNAT:
/// a Service egress whose backend is the node (`sockets.rs`). Attached to the
/// node's network namespace, not to an interface.
#[sk_lookup]
pub fn node_sockets(ctx: SkLookupContext) -> u32 {
    sockets::lookup(&ctx)
}

/// The benchmark's floor (`cargo xtask bench datapath`): returns TC_ACT_UNSPEC
/// without reading the packet or any map. Never attached to an interface.
#[classifier]
pub fn bench_floor(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[inline(always)]
fn classify(ctx: &TcContext, direction: u8) -> i32 {
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel handed this program. The
    // VLAN state is read with the interface: read later, it cost 16 stack bytes.
    let (ifindex, tagged) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).vlan_present) };
    // Once per packet: every lookup below uses this generation's bank, so the
    // packet is decided wholly by the state before or wholly by the state after a
    // flip.
    let generation = maps::active_generation();
    // A packet its conntrack entry alone decides passes here (`fast.rs`); the rest,
    // and every tagged frame (rule 1 of `decide`), go the long way.
    if tagged == 0 && fast::tracked(ctx, ifindex, direction, generation) {
        return TC_ACT_UNSPEC;
    }
    let Some(facts) = maps::facts() else {
        // Cannot happen (entry 0 of a one-entry array); fail closed if it did.
        maps::count(STAT_DROP_MALFORMED);
        return TC_ACT_SHOT;
    };
    // SAFETY: this CPU's slot, used by this program run only (`maps::facts`), a
    // map value (8-byte aligned), written whole by `reset` before it is read.
    let facts = unsafe {
        Facts::reset(facts, ifindex, direction, generation);
        &mut *facts
    };
    // Decisions branch on `at`, not on what `facts` holds: the verifier knows
    // `direction` is this program's constant only in a register, so it never
    // walks the other direction's paths (a value read back from the map is any).
    let at = ct::Site {
        ifindex,
        direction,
        bank: maps::bank(generation) as u8,
    };
    // Rule 1 of `decide`, for a tag the kernel took out of the frame into the skb.
    let verdict = if tagged != 0 {
        Err(STAT_DROP_VLAN)
    } else {
        decide(ctx, facts, at)
    };
    to_tc_action(ctx, facts, verdict)
}

/// The one place a verdict becomes a TC action: bumps its `STATS` counter, adds the
/// packet to the per-policy counter `facts` names (`counters.rs`), reports it
/// (`events.rs`: every drop; a would-drop or, if asked for, an allow only for the
/// packet that decided its flow), records a drop on the kernel debug channel when
/// the agent turned it on (`debug.rs`), and maps it to a TC action. Allowed packets return
/// TC_ACT_UNSPEC (TCX_NEXT) so programs attached after ours still run.
#[inline(always)]
pub(crate) fn to_tc_action(ctx: &TcContext, facts: &Facts, verdict: Result<u32, u32>) -> i32 {
    let (stat, action, event) = match verdict {
        Ok(stat) => {
            // A deferred Service egress is not decided yet: the backend's side
            // reports the decision (`service::deferred_egress`).
            let event = if !facts.decided || stat == STAT_ALLOW_DEFERRED_EGRESS {
                None
            } else if stat == STAT_WOULD_DROP_POLICY {
                Some(EVENT_WOULD_DROP)
            } else {
                Some(EVENT_ALLOWED)
            };
            (stat, TC_ACT_UNSPEC, event)
        }
        Err(stat) => {
            debug::dropped(ctx, facts, stat);
            (stat, TC_ACT_SHOT, Some(EVENT_DROPPED))
        }
    };
    maps::count(stat);
    let len = ctx.len();
    counters::add(facts.counter, len);
    if let Some(event) = event {
        events::report(facts, event, stat, len);
    }
    action
}

/// Before `decide`, `classify` lets `fast::tracked` pass a packet of a tracked
/// flow that its entry alone decides (rule 7's plain hit, when the entry is of
/// this generation and `CT_FLAG_LOCAL_OWNED` vouches for rules 2, 4 and 6; the
/// rules of `fast.rs`); it changes nothing unless it passes the packet, and
/// everything else comes here.
///
/// Lookup precedence, in order (both families alike; every lookup of `ENDPOINTS`,
/// `ENDPOINT_ADDRS`, `PEER_HOSTS_*`, `PEERS_*` and `POLICY` is in `at.bank`, the bank of the
/// generation read once per packet, `facts.generation`):
/// 1. Only untagged IPv4, IPv6 and ARP frames go on: a VLAN tag in the skb
///    (`vlan_present`, checked by `classify`) or in the frame (EtherType 0x8100,
///    0x88a8, 0x9100; `parse::l3`) is dropped (`STAT_DROP_VLAN`), any other
///    EtherType too (`STAT_DROP_ETHER_TYPE`).
/// 2. The interface must be a known endpoint, else drop (fail closed). ARP then
///    passes (`STAT_ALLOW_NON_IP`) only as an Ethernet/IPv4 request or reply whose
///    sender hardware address is the frame's source and, from the pod, whose sender
///    address is one of the pod's (0.0.0.0 in a probe); any other ARP is dropped
///    (`STAT_DROP_ARP_SPOOFED`, `STAT_DROP_ARP_UNSUPPORTED`; `arp.rs` has the rules).
/// 3. A packet that does not parse is dropped (`STAT_DROP_MALFORMED`), and so is an
///    IPv6 packet with an IPv4-mapped (`::ffff:0:0/96`) source or destination, one
///    whose extension headers go on past the walk's limit
///    (`STAT_DROP_IPV6_EXTENSION_CHAIN`) and one with a routing header that has
///    segments left (`STAT_DROP_IPV6_ROUTING_HEADER`).
///    A first fragment too short to hold its upper-layer header is dropped
///    (`STAT_DROP_FRAGMENT_TINY`; fragments: `frag.rs`).
/// 4. Egress only (anti-spoofing): a source address that is not one of this
///    interface's pod addresses (`ENDPOINT_ADDRS[saddr] != ifindex`) is dropped
///    (`STAT_DROP_SPOOFED_SOURCE`), except IPv6 link-local and unspecified sources.
/// 5. On-link IPv6 link control passes (`STAT_ALLOW_NON_IP`): neighbour discovery
///    (ICMPv6 133-137, hop limit 255, link-local or multicast destination or
///    link-local source; a neighbour solicitation or advertisement between global
///    addresses only with a local pod or a node address at the other end: pods of
///    one bridge resolve each other so) and multicast listener discovery (ICMPv6
///    130-132 and 143, hop limit 1, link-local or unspecified source, multicast
///    destination); other ICMPv6 of those types goes on as ICMPv6 with ports 0. Then a non-first
///    fragment takes the upper-layer protocol and ports of its datagram's first
///    fragment, which must have passed here (same interface and direction) less
///    than `FRAGMENT_LIFETIME_NS` ago (else `STAT_DROP_FRAGMENT_UNKNOWN`) and must
///    end at or before where it starts (else `STAT_DROP_FRAGMENT_OVERLAP`); it goes
///    on through the steps below as a packet of its first fragment's flow
///    (`frag::resolve`).
///    Egress only: encapsulated traffic (`tunnel.rs`: IP-in-IP, GRE and the other
///    tunnel protocols, UDP to a tunnel port in `CONFIG`) is dropped
///    (`STAT_DROP_TUNNEL`) to any destination, whatever conntrack and policy say (a non-first
///    fragment by its first fragment's protocol and port),
///    unless the endpoint has `ALLOW_TUNNELS`.
/// 6. Ingress only: a packet whose destination is another local pod's address
///    (`ENDPOINT_ADDRS[daddr]` names another interface) is dropped
///    (`STAT_DROP_MISDELIVERED`): on a bridge, a forged ARP/NDP reply or a spoofed
///    source MAC can steer a pod's traffic to another port, and the pod there
///    must not receive it. Then podwall's mark bits (`Config::mark_*`) are cleared,
///    and the source pod's egress is decided here, with this packet's bank, before
///    its ingress (`service::source_egress`) when the packet carries the
///    deferred-egress bit (decided on the translated destination) or the bank stamp
///    of another generation (its egress was decided with another state at the
///    source); a deny drops it (an audit-mode egress reports a would-drop and lets
///    it go on).
/// 7. Conntrack (`decide_flow`; states and timeouts in `ct.rs`, where an entry idle
///    past its timeout counts as absent). An ICMP error (v4 types 3, 11, 12) or
///    ICMPv6 error (types 1-4) sent to the source of the packet it quotes, which
///    belongs to a flow tracked at this interface and decided by this generation,
///    passes (`STAT_ALLOW_RELATED`, the flow untouched; `ct::related` has the
///    rules); any other error goes on as ICMP with ports 0. A packet of a tracked
///    flow whose entry another generation decided, or that is revoked, first
///    re-decides the flow's original direction by rules 8-12 (`judge::recheck`,
///    unless the agent keeps established flows): denied, it is dropped
///    (`STAT_DROP_REVOKED`) and the flow revoked. A packet of a tracked flow then
///    passes and refreshes it, except that a forward packet of a deferred egress
///    flow is marked and passes as deferred, and a reply to a deferred flow passes
///    only with the reply-verified bit, or when a socket of the node sent it to
///    the client from an address and port the client's egress allowed
///    (`sockets::node_answered`: the backend is the node), else goes on as new. A flow tracked only
///    because its direction was in audit mode passes as `STAT_WOULD_DROP_POLICY` while the
///    endpoint still audits that direction, and goes on as new once it does not
///    (`audit::tracked`).
///    Egress only: a reply to a tracked flow addressed to a local pod gets the
///    reply-verified bit when that pod tracks its reverse as an egress flow
///    (`service::verify_reply`), so a reply through Service un-DNAT can prove it.
///
/// Steps 8-12 are `judge::judge`; a flow they let through is tracked (`ct::track`:
/// a new flow past its interface's limit or a full table is dropped instead,
/// `STAT_DROP_CT_ENDPOINT_LIMIT`, `STAT_DROP_CT_FULL`):
/// 8. A pod not isolated in this direction passes.
/// 9. Ingress from an address with `PEER_FLAG_NODE` passes.
/// 10. Egress to an address with `PEER_FLAG_SERVICE` is deferred: tracked as
///     `CT_FLAG_DEFERRED`, marked with the deferred-egress bit, passed.
/// 11. The peer's class (its host entry in `PEER_HOSTS_V4`/`PEER_HOSTS_V6`, else the
///     longest prefix in `PEERS_V4`/`PEERS_V6`, else `CLASS_WORLD`: `maps::peer`)
///     picks the endpoint's rule set for this direction in `RULE_SETS` (else its
///     any-class set; neither: no match), and the packet's protocol and destination
///     port are looked up in that set in `POLICY`: a match passes and is tracked
///     with the rule's counter slot, unless `ACTIVE` moved since the packet read it
///     (the lookups may span two writes in place): then it is dropped as
///     `STAT_DROP_STATE_CHANGED`, nothing tracked.
///     A denial reached while the agent writes tables in place
///     (`CONFIG_FLAG_TABLES_WRITING`) or across a move is dropped so too.
/// 12. Anything else is dropped (`STAT_DROP_POLICY`), unless the endpoint audits
///     this direction (`AUDIT_*`): then it passes as a would-drop
///     (`STAT_WOULD_DROP_POLICY`), tracked with `CT_FLAG_AUDIT` and its audit deny slot.
/// 13. A first fragment that passed (steps 6 to 12) is remembered, with its
///     protocol, ports and end, for its datagram's non-first fragments
///     (`frag::remember`).
///
/// Egress only, last: a packet that passes, unless deferred or a verified reply,
/// leaves with the stamp of its generation in the mark (`service::stamp`), for
/// step 6 at a same-node destination.
///
/// Along the way `facts` collects what the last step counts and reports; `at` is
/// where the packet is, which way it goes and its bank.
#[inline(always)]
fn decide(ctx: &TcContext, facts: &mut Facts, at: ct::Site) -> Result<u32, u32> {
    let (ifindex, bank) = (at.ifindex, u32::from(at.bank));
    let l3 = parse::l3(ctx)?;
    facts.ipv6 = matches!(l3, parse::L3::Ipv6);
    let endpoint =
        maps::endpoint_and_own(bank, ifindex, &mut facts.own).ok_or(STAT_DROP_UNKNOWN_ENDPOINT)?;
    facts.endpoint_id = endpoint.endpoint_id;
    if matches!(l3, parse::L3::Arp) {
        let stat = arp::check(ctx, facts, at);
        return if stat == STAT_ALLOW_NON_IP {
            Ok(stat)
        } else {
            Err(stat)
        };
    }
    // The family is read back from `facts`: kept in a register across the lookups
    // above, it cost 16 stack bytes.
    let mut packet = parse::packet(ctx, facts.ipv6, &mut facts.fragment)?;
    facts.parsed(&packet);
    if at.direction == DIRECTION_EGRESS {
        let (_, ipv6) = packet.source();
        facts.owned = check_source(bank, ifindex, facts, ipv6)?;
    }
    // Borrowed, not moved out: a moved copy's padding let LLVM store part of a
    // spilled pointer, which the verifier rejects.
    let flow = match &mut packet {
        Packet::OnLinkControl(control) => {
            if stays_on_node(bank, at.direction, control) {
                return Ok(STAT_ALLOW_NON_IP);
            }
            // A neighbour message to or from somewhere else: ICMPv6 like any other
            // (its ports are 0, as `parse` reads them for these types; `facts`
            // holds its 5-tuple already).
            control
        }
        Packet::Flow(flow) => flow,
    };
    if facts.fragment.kind == frag::NON_FIRST {
        frag::resolve(at, facts)?;
        (flow.protocol, flow.sport_be, flow.dport_be) =
            (facts.protocol, facts.sport_be, facts.dport_be);
    }
    if at.direction == DIRECTION_EGRESS
        && endpoint.flags & ALLOW_TUNNELS == 0
        && tunnel::encapsulates(flow)
    {
        return Err(STAT_DROP_TUNNEL);
    }
    let flow = maps::flow(flow).ok_or(STAT_DROP_MALFORMED)?;
    let stat = if at.direction == DIRECTION_INGRESS {
        facts.owned = check_destination(bank, ifindex, facts)?;
        let arrived = service::take_marks(ctx, facts.generation);
        // Only this bit is read past the source's egress: through `black_box`, so
        // both ways into `decide_flow` hold the same unknown value and the verifier
        // walks it once, not once per way.
        let verified = core::hint::black_box(arrived & ARRIVED_VERIFIED);
        if arrived & (ARRIVED_DEFERRED | ARRIVED_STALE) != 0 {
            let why = if arrived & ARRIVED_DEFERRED != 0 {
                Why::Deferred
            } else {
                Why::Stale
            };
            service::source_egress(ctx, facts, flow, why)?;
        }
        decide_flow(ctx, facts, at, &endpoint, flow, verified)?.0
    } else {
        let (stat, reply) = decide_flow(ctx, facts, at, &endpoint, flow, 0)?;
        let verified = if reply {
            service::verify_reply(ctx, facts, flow)
        } else {
            stat == STAT_ALLOW_RELATED && service::verify_error(ctx, facts.generation, flow)
        };
        if stat != STAT_ALLOW_DEFERRED_EGRESS && !verified {
            service::stamp(ctx, facts.generation);
        }
        stat
    };
    frag::remember(at, facts);
    Ok(stat)
}

/// Step 4 of `decide`: a packet from the pod must carry one of the pod's own
/// addresses as its source, as Calico and Cilium require by default. Without this a
/// pod could borrow another pod's identity: its ingress rules at the destination,
/// and at a Service backend its egress policy (deferral trusts `ENDPOINT_ADDRS`).
/// IPv6 link-local and unspecified sources (ND, DAD, MLD) are exempt: the node
/// never forwards a link-local source, and they name no pod. Returns
/// `CT_FLAG_LOCAL_OWNED` when the source is the pod's own (`Facts::owned`), 0 for
/// an exempt one. An address the interface's `ENDPOINTS` entry claims
/// (`Facts::own`) is the pod's own without a lookup (`OwnAddresses`: the agent
/// keeps every claim true of `ENDPOINT_ADDRS`); any other is looked up there.
/// The source is `facts.saddr` (`Facts::parsed`). A BPF subprogram: inlined, its
/// work cost the classifiers' frames 8 bytes they do not have (`maps.rs`, stack
/// budget).
#[inline(never)]
fn check_source(bank: u32, ifindex: u32, facts: &Facts, ipv6: bool) -> Result<u32, u32> {
    let (saddr, own) = (&facts.saddr, &facts.own);
    if ipv6 && (parse::is_link_local(saddr) || parse::is_unspecified(saddr)) {
        return Ok(0);
    }
    if claims(own, saddr, ipv6) || maps::endpoint_ifindex(bank, saddr) == Some(ifindex) {
        Ok(CT_FLAG_LOCAL_OWNED)
    } else {
        Err(STAT_DROP_SPOOFED_SOURCE)
    }
}

/// Whether `own` (the interface's `ENDPOINTS` entry) claims `addr` (IPv6, or
/// IPv4-mapped when not `ipv6`) as the pod's own: the family's flag is set and the
/// address is equal, compared a 4-byte word at a time.
#[inline(always)]
fn claims(own: &OwnAddresses, addr: &[u8; 16], ipv6: bool) -> bool {
    let words = |bytes: *const u8, i: usize| -> u32 {
        // SAFETY: `bytes` is a 4-byte aligned address field (of `Facts` or
        // `OwnAddresses`, both 4-byte aligned with their addresses at multiples
        // of 4: asserted below), and `i` stays within it.
        unsafe { (bytes as *const u32).add(i).read() }
    };
    let addr = addr.as_ptr();
    if ipv6 {
        own.flags & OWN_V6 != 0
            && words(addr, 0) == words(own.v6.as_ptr(), 0)
            && words(addr, 1) == words(own.v6.as_ptr(), 1)
            && words(addr, 2) == words(own.v6.as_ptr(), 2)
            && words(addr, 3) == words(own.v6.as_ptr(), 3)
    } else {
        // An IPv4 packet's addresses are always mapped (`parse`): the last word is
        // the address.
        own.flags & OWN_V4 != 0 && words(addr, 3) == words(own.v4.as_ptr(), 0)
    }
}

// What `claims` relies on.
const _: () = assert!(
    core::mem::align_of::<OwnAddresses>() >= 4
        && core::mem::offset_of!(OwnAddresses, v4) % 4 == 0
        && core::mem::offset_of!(OwnAddresses, v6) % 4 == 0
        && core::mem::align_of::<Facts>() >= 4
        && core::mem::offset_of!(Facts, saddr) % 4 == 0
        && core::mem::offset_of!(Facts, daddr) % 4 == 0
        && core::mem::offset_of!(Facts, own) % 4 == 0
);

/// Step 5 of `decide`: whether on-link control stays on this node's link. Link-local
/// and multicast messages cannot leave it; a neighbour solicitation or
/// advertisement between global addresses (`parse::on_link_control`) stays only
/// when the other end is a local pod or the node (else it goes on as ICMPv6, so an
/// ND-typed packet never carries data past egress policy). A BPF subprogram, as
/// `check_destination` is: inlined, both cost the classifiers' frames 8 bytes they
/// do not have (`maps.rs`, stack budget).
#[inline(never)]
fn stays_on_node(bank: u32, direction: u8, control: &Flow) -> bool {
    if control.daddr[0] == 0xff
        || parse::is_link_local(&control.daddr)
        || parse::is_link_local(&control.saddr)
    {
        return true;
    }
    let other = if direction == DIRECTION_EGRESS {
        &control.daddr
    } else {
        &control.saddr
    };
    maps::endpoint_ifindex(bank, other).is_some()
        || maps::peer(bank, true, other).flags & PEER_FLAG_NODE != 0
}

/// Step 6 of `decide`, first half: a packet handed to a pod must not be addressed
/// to another local pod. Whatever steered it here (a neighbour entry or a bridge
/// forwarding entry a pod forged), the pod that owns the address is elsewhere.
/// Addresses of no local pod (broadcast, multicast, a pending pod) go on. Returns
/// `CT_FLAG_LOCAL_OWNED` when the destination is the pod's own (`Facts::owned`),
/// 0 for an address of no local pod. An address `own` claims is the pod's own
/// without a lookup, as in `check_source`. The destination is `facts.daddr`
/// (`Facts::parsed`).
#[inline(never)]
fn check_destination(bank: u32, ifindex: u32, facts: &Facts) -> Result<u32, u32> {
    let daddr = &facts.daddr;
    if claims(&facts.own, daddr, facts.ipv6) {
        return Ok(CT_FLAG_LOCAL_OWNED);
    }
    match maps::endpoint_ifindex(bank, daddr) {
        Some(owner) if owner != ifindex => Err(STAT_DROP_MISDELIVERED),
        Some(_) => Ok(CT_FLAG_LOCAL_OWNED),
        None => Ok(0),
    }
}

/// Steps 7 to 12 of `decide` for a parsed packet; `arrived` is what its mark said
/// (`service::ARRIVED_*`; only `ARRIVED_VERIFIED` is read here). Returns the
/// counter and whether the packet passed as a reply to a tracked flow.
#[inline(always)]
fn decide_flow(
    ctx: &TcContext,
    facts: &mut Facts,
    at: ct::Site,
    endpoint: &EndpointInfo,
    flow: &Flow,
    arrived: u32,
) -> Result<(u32, bool), u32> {
    let (ifindex, direction, generation) = (at.ifindex, at.direction, facts.generation);
    let flags = endpoint.flags
        | if arrived & ARRIVED_VERIFIED != 0 {
            ct::ERROR_VERIFIED
        } else {
            0
        };
    if flow.quote_at != 0 && ct::related(ctx, at, flow, flags, generation) {
        return Ok((STAT_ALLOW_RELATED, false));
    }
    if let Some(hit) = ct::lookup(ifindex, direction, flow) {
        if !hit.current(generation)
            || (direction == DIRECTION_EGRESS && hit.now_to_a_service(generation, flow))
        {
            // At its own hook: the entry keeps `CT_FLAG_DIRECT`.
            let owned = facts.owned | CT_FLAG_DIRECT;
            judge::recheck(&hit, at, endpoint, flow, facts, generation, owned)?;
        }
        if hit.flags() & CT_FLAG_DEFERRED == 0 {
            if let Some((stat, counter)) = audit::tracked(&hit, endpoint, direction, generation) {
                // A forward egress entry this hook did not decide (the
                // destination's side wrote it, for a Service flow's translated
                // tuple) proves nothing about where this packet goes now (the
                // node may translate the same tuple anew, to another pod): the
                // packet goes on as a deferral, decided where it arrives (on
                // this very entry if the tuple stays untranslated).
                // Likewise a reply to a Service address, where the pod's egress is
                // isolated: once the node has forgotten the flow, the "reply" is a
                // new connection to that address, which the node may translate.
                let deferred = if hit.reply {
                    direction == DIRECTION_EGRESS
                        && endpoint.flags & ISOLATED_EGRESS != 0
                        && hit.reply_to_a_service(generation, flow)
                } else {
                    hit.flags() & CT_FLAG_DIRECT == 0 && direction == DIRECTION_EGRESS
                };
                if deferred {
                    hit.seen(flow);
                    return Ok((
                        service::defer(ctx, ifindex, flow, false, generation)?,
                        false,
                    ));
                }
                hit.seen(flow);
                // A verified reply was counted where it was verified, at the
                // backend's side (`service::verify_reply`), in this same slot.
                if !(hit.reply && arrived & ARRIVED_VERIFIED != 0) {
                    facts.counter = counter;
                }
                return Ok((stat, hit.reply));
            }
        } else if !hit.reply {
            hit.seen(flow);
            return Ok((
                service::defer(ctx, ifindex, flow, false, generation)?,
                false,
            ));
        } else if arrived & ARRIVED_VERIFIED != 0 || sockets::node_answered(ctx, ifindex, flow) {
            hit.seen(flow);
            return Ok((STAT_ALLOW_TRACKED, true));
        }
    }
    facts.decided = true;
    let judged = judge::judge(at, endpoint, flow, false, facts);
    let slot = judged.slot();
    let stat = match judged.kind() {
        judge::UNISOLATED => STAT_ALLOW_UNISOLATED,
        judge::NODE => STAT_ALLOW_NODE,
        judge::SERVICE => {
            return Ok((service::defer(ctx, ifindex, flow, true, generation)?, false))
        }
        judge::RULE => {
            facts.counter = judged.counter();
            STAT_ALLOW_POLICY
        }
        judge::AUDIT => {
            facts.counter = judged.counter();
            STAT_WOULD_DROP_POLICY
        }
        judge::CHANGED => return Err(STAT_DROP_STATE_CHANGED),
        _ => {
            facts.counter = judged.counter();
            return Err(STAT_DROP_POLICY);
        }
    };
    let flags = judged.ct_flags() | facts.owned | CT_FLAG_DIRECT;
    if let Err(full) = ct::track(at, flow, slot, flags, generation) {
        facts.counter = Counter::None;
        facts.rule = None;
        return Err(full);
    }
    Ok((stat, false))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
