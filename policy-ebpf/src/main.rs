//! podwall's TC classifiers: one program per hook on each local pod's host-side veth.
//!
//! `pod_ingress` runs at TC egress (packets the veth hands to the pod) and decides the
//! pod's ingress policy; `pod_egress` runs at TC ingress (packets the pod sends) and
//! decides its egress policy. Both share `decide`, which returns the counter to bump:
//! an allow counter or a drop reason, and fills a `Facts` with what it learned;
//! `to_tc_action` is the one place that turns both into a TC verdict, per-policy
//! counts (`counters.rs`) and verdict events (`events.rs`). Layouts come from
//! `policy-common`; nothing here panics.
//!
//! `bench_floor` exists only for `cargo xtask bench datapath`: an empty classifier
//! that touches neither the packet nor a map, so the benchmark can measure what
//! running any TC program costs and report podwall's paths against it. The agent
//! never loads or attaches it.
#![no_std]
#![no_main]

mod audit;
mod counters;
mod ct;
mod events;
mod facts;
mod maps;
mod parse;
mod service;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
};
use policy_common::{
    counters::{deny_slot, NO_COUNTER},
    ct::{CT_FLAG_AUDIT, CT_FLAG_DEFERRED},
    endpoint::{EndpointInfo, ISOLATED_EGRESS, ISOLATED_INGRESS},
    events::{EVENT_ALLOW, EVENT_DROP, EVENT_WOULD_DROP},
    peer::{PEER_FLAG_NODE, PEER_FLAG_SERVICE},
    verdict::*,
};

use crate::{
    facts::{Counter, Facts},
    parse::{Flow, Packet},
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

/// The benchmark's floor (`cargo xtask bench datapath`): returns TC_ACT_UNSPEC
/// without reading the packet or any map. Never attached to an interface.
#[classifier]
pub fn bench_floor(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[inline(always)]
fn classify(ctx: &TcContext, direction: u8) -> i32 {
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel handed this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Once per packet: every lookup below uses this bank, so the packet is decided
    // wholly by the state before or wholly by the state after a flip.
    let bank = maps::active_bank();
    let Some(facts) = maps::facts() else {
        // Cannot happen (entry 0 of a one-entry array); fail closed if it did.
        maps::count(STAT_DROP_MALFORMED);
        return TC_ACT_SHOT;
    };
    // SAFETY: this CPU's slot, used by this program run only (`maps::facts`).
    let facts = unsafe { &mut *facts };
    *facts = Facts::new(ifindex, direction);
    // Decisions branch on `at`, not on what `facts` holds: the verifier knows
    // `direction` is this program's constant only in a register, so it never
    // walks the other direction's paths (a value read back from the map is any).
    let at = ct::Site {
        ifindex,
        direction,
        bank: bank as u8,
    };
    let verdict = decide(ctx, facts, at);
    to_tc_action(ctx, facts, verdict)
}

/// The one place a verdict becomes a TC action: bumps its `STATS` counter, adds the
/// packet to the per-policy counter `facts` names (`counters.rs`), reports it
/// (`events.rs`: every drop; a would-drop or, if asked for, an allow only for the
/// packet that decided its flow), and maps it to a TC action. Allowed packets return
/// TC_ACT_UNSPEC (TCX_NEXT) so programs attached after ours still run.
#[inline(always)]
fn to_tc_action(ctx: &TcContext, facts: &Facts, verdict: Result<u32, u32>) -> i32 {
    let (stat, action, event) = match verdict {
        Ok(stat) => {
            // A deferred Service egress is not decided yet: the backend's side
            // reports the decision (`service::deferred_egress`).
            let event = if !facts.decided || stat == STAT_EGRESS_DEFERRED {
                None
            } else if stat == STAT_ALLOW_AUDIT {
                Some(EVENT_WOULD_DROP)
            } else {
                Some(EVENT_ALLOW)
            };
            (stat, TC_ACT_UNSPEC, event)
        }
        Err(stat) => (stat, TC_ACT_SHOT, Some(EVENT_DROP)),
    };
    maps::count(stat);
    let len = ctx.len();
    counters::add(facts.counter, len);
    if let Some(event) = event {
        events::report(facts, event, stat, len);
    }
    action
}

/// Lookup precedence, in order (both families alike; every lookup of `ENDPOINTS`,
/// `ENDPOINT_ADDRS`, `PEERS_*` and `POLICY` is in `at.bank`, read once per packet):
/// 1. Frames that are not IP pass (ARP must work for pods to work).
/// 2. The interface must be a known endpoint, else drop (fail closed).
/// 3. A packet that does not parse is dropped (`STAT_DROP_MALFORMED`), and so is an
///    IPv6 packet with an IPv4-mapped (`::ffff:0:0/96`) source or destination.
/// 4. Egress only (anti-spoofing): a source address that is not one of this
///    interface's pod addresses (`ENDPOINT_ADDRS[saddr] != ifindex`) is dropped
///    (`STAT_DROP_SPOOFED_SOURCE`), except IPv6 link-local and unspecified sources.
/// 5. On-link IPv6 link control passes (`STAT_ALLOW_NON_IP`): neighbour discovery
///    (ICMPv6 133-137, hop limit 255, link-local or multicast destination or
///    link-local source) and multicast listener discovery (ICMPv6 130-132 and 143,
///    hop limit 1, link-local or unspecified source, multicast destination); other
///    ICMPv6 of those types goes on as ICMPv6 with ports 0.
/// 6. Ingress only: this program's mark bits are cleared, and a packet carrying
///    `MARK_DEFERRED_EGRESS` first has its source pod's egress decided on the
///    translated destination (`service::deferred_egress`); a deny drops it (an
///    audit-mode egress reports a would-drop and lets it go on).
/// 7. Conntrack (`decide_flow`; states and timeouts in `ct.rs`, where an entry idle
///    past its timeout counts as absent). An ICMP error (v4 types 3, 11, 12) or
///    ICMPv6 error (types 1-4) sent to the source of the packet it quotes, which
///    belongs to a flow tracked at this interface, passes (`STAT_ALLOW_RELATED`, the
///    flow untouched; `ct::related` has the rules); any other error goes on as ICMP
///    with ports 0. A packet of a tracked flow passes and refreshes
///    it, except that a forward packet of a deferred egress flow is marked and
///    passes as deferred, and a reply to a deferred flow passes only with
///    `MARK_REPLY_VERIFIED`, else goes on as new. A flow tracked only because its
///    direction was in audit mode passes as `STAT_ALLOW_AUDIT` while the endpoint
///    still audits that direction, and goes on as new once it does not
///    (`audit::tracked`).
///    Egress only: a reply to a tracked flow addressed to a local pod gets
///    `MARK_REPLY_VERIFIED` when that pod tracks its reverse as an egress flow
///    (`service::verify_reply`), so a reply through Service un-DNAT can prove it.
/// 8. A pod not isolated in this direction passes, and the flow is tracked.
/// 9. Ingress from an address with `PEER_FLAG_NODE` passes and is tracked.
/// 10. Egress to an address with `PEER_FLAG_SERVICE` is deferred: tracked as
///     `CT_FLAG_DEFERRED`, marked `MARK_DEFERRED_EGRESS`, passed.
/// 11. The peer's class (longest prefix in `PEERS_V4`/`PEERS_V6`, else `CLASS_WORLD`)
///     picks the endpoint's rule set for this direction in `RULE_SETS` (else its
///     any-class set; neither: no match), and the packet's protocol and destination
///     port are looked up in that set in `POLICY`: a match passes and is tracked
///     with the rule's counter slot.
/// 12. Anything else is dropped (`STAT_DROP_POLICY`), unless the endpoint audits
///     this direction (`AUDIT_*`): then it passes as a would-drop
///     (`STAT_ALLOW_AUDIT`), tracked with `CT_FLAG_AUDIT` and its audit deny slot.
///
/// Along the way `facts` collects what the last step counts and reports; `at` is
/// where the packet is, which way it goes and its bank.
#[inline(always)]
fn decide(ctx: &TcContext, facts: &mut Facts, at: ct::Site) -> Result<u32, u32> {
    let (ifindex, bank) = (at.ifindex, u32::from(at.bank));
    let Some(l3) = parse::l3(ctx)? else {
        return Ok(STAT_ALLOW_NON_IP);
    };
    facts.ipv6 = matches!(l3, parse::L3::Ipv6);
    let endpoint = maps::endpoint(bank, ifindex).ok_or(STAT_DROP_UNKNOWN_ENDPOINT)?;
    facts.endpoint_id = endpoint.endpoint_id;
    let packet = parse::packet(ctx, l3)?;
    facts.parsed(&packet);
    if at.direction == DIRECTION_EGRESS {
        let (saddr, ipv6) = packet.source();
        check_source(bank, ifindex, saddr, ipv6)?;
    }
    // Borrowed, not moved out: a moved copy's padding let LLVM store part of a
    // spilled pointer, which the verifier rejects.
    let flow = match &packet {
        Packet::OnLinkControl(_) => return Ok(STAT_ALLOW_NON_IP),
        Packet::Flow(flow) => flow,
    };
    if at.direction == DIRECTION_INGRESS {
        let mark = service::take_marks(ctx);
        if mark & MARK_DEFERRED_EGRESS != 0 {
            service::deferred_egress(ctx, facts, bank, flow)?;
        }
        decide_flow(ctx, facts, at, &endpoint, flow, mark).map(|(stat, _)| stat)
    } else {
        let (stat, reply) = decide_flow(ctx, facts, at, &endpoint, flow, 0)?;
        if reply {
            service::verify_reply(ctx, bank, flow);
        }
        Ok(stat)
    }
}

/// Step 4 of `decide`: a packet from the pod must carry one of the pod's own
/// addresses as its source, as Calico and Cilium require by default. Without this a
/// pod could borrow another pod's identity: its ingress rules at the destination,
/// and at a Service backend its egress policy (deferral trusts `ENDPOINT_ADDRS`).
/// IPv6 link-local and unspecified sources (ND, DAD, MLD) are exempt: the node
/// never forwards a link-local source, and they name no pod.
#[inline(always)]
fn check_source(bank: u32, ifindex: u32, saddr: &[u8; 16], ipv6: bool) -> Result<(), u32> {
    if ipv6 && (parse::is_link_local(saddr) || parse::is_unspecified(saddr)) {
        return Ok(());
    }
    if maps::endpoint_ifindex(bank, saddr) == Some(ifindex) {
        Ok(())
    } else {
        Err(STAT_DROP_SPOOFED_SOURCE)
    }
}

/// Steps 7 to 12 of `decide` for a parsed packet; `mark` is the mark it arrived with.
/// Returns the counter and whether the packet passed as a reply to a tracked flow.
#[inline(always)]
fn decide_flow(
    ctx: &TcContext,
    facts: &mut Facts,
    at: ct::Site,
    endpoint: &EndpointInfo,
    flow: &Flow,
    mark: u32,
) -> Result<(u32, bool), u32> {
    let (ifindex, direction, bank) = (at.ifindex, at.direction, u32::from(at.bank));
    if flow.quote_at != 0 && ct::related(ctx, at, flow, endpoint.flags) {
        return Ok((STAT_ALLOW_RELATED, false));
    }
    if let Some(hit) = ct::lookup(ifindex, direction, flow) {
        if hit.flags & CT_FLAG_DEFERRED == 0 {
            if let Some((stat, counter)) = audit::tracked(&hit, endpoint, direction) {
                hit.seen(flow);
                // A verified reply was counted where it was verified, at the
                // backend's side (`service::verify_reply`), in this same slot.
                if !(hit.reply && mark & MARK_REPLY_VERIFIED != 0) {
                    facts.counter = counter;
                }
                return Ok((stat, hit.reply));
            }
        } else if !hit.reply {
            hit.seen(flow);
            return Ok((service::defer(ctx, ifindex, flow, false), false));
        } else if mark & MARK_REPLY_VERIFIED != 0 {
            hit.seen(flow);
            return Ok((STAT_ALLOW_TRACKED, true));
        }
    }
    facts.decided = true;
    let isolation_flag = if direction == DIRECTION_INGRESS {
        ISOLATED_INGRESS
    } else {
        ISOLATED_EGRESS
    };
    if endpoint.flags & isolation_flag == 0 {
        ct::track(ifindex, direction, flow, NO_COUNTER, 0);
        return Ok((STAT_ALLOW_UNISOLATED, false));
    }
    let remote = if direction == DIRECTION_INGRESS {
        &flow.saddr
    } else {
        &flow.daddr
    };
    let peer = maps::peer(bank, flow.ipv6, remote);
    if direction == DIRECTION_INGRESS && peer.flags & PEER_FLAG_NODE != 0 {
        ct::track(ifindex, direction, flow, NO_COUNTER, 0);
        return Ok((STAT_ALLOW_NODE, false));
    }
    if direction == DIRECTION_EGRESS && peer.flags & PEER_FLAG_SERVICE != 0 {
        return Ok((service::defer(ctx, ifindex, flow, true), false));
    }
    if let Some(allowed) = maps::policy(bank, endpoint.endpoint_id, peer.class_id, direction, flow)
    {
        ct::track(ifindex, direction, flow, allowed.rule_slot, 0);
        facts.rule = Some(allowed);
        facts.counter = Counter::rule(allowed.rule_slot);
        return Ok((STAT_ALLOW_POLICY, false));
    }
    if audit::audits(endpoint, direction) {
        let slot = deny_slot(endpoint.endpoint_id, direction, true);
        ct::track(ifindex, direction, flow, slot, CT_FLAG_AUDIT);
        facts.counter = Counter::Deny(slot);
        return Ok((STAT_ALLOW_AUDIT, false));
    }
    facts.counter = Counter::Deny(deny_slot(endpoint.endpoint_id, direction, false));
    Err(STAT_DROP_POLICY)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
