//! The node's exits: where a Service egress deferred at a local client leaves the
//! node without meeting a pod's classifier.
//!
//! A client's egress to a Service address is deferred past DNAT (`service.rs`)
//! and decided where the translated packet meets its backend. When the backend runs
//! on another node, the packet leaves through an exit instead (the uplink, or the
//! overlay's tunnel device), so `node_exit` runs at TC egress of every exit and
//! decides it there, after routing and DNAT and before encapsulation (on an exit
//! without Ethernet frames, an IP-in-IP, WireGuard or tun device, its twin
//! `node_exit_ip` does, and `node_entry_ip` stands for `node_entry`: the same rules
//! for packets that start with their IP header):
//! 1. a packet without podwall's mark bits goes on untouched (nothing podwall left
//!    undecided; the node's own traffic, forwarded traffic of other nodes);
//! 2. podwall's bits are cleared (they end their trip here);
//! 3. a packet without the deferred-egress bit goes on (a pod's egress decided at
//!    its veth, leaving with its stamp);
//! 4. a deferred packet is decided as its client's egress on the translated
//!    destination, with this packet's bank (`service::source_egress`): its source
//!    must be a local pod (else `STAT_DROP_DEFERRED_UNKNOWN_SOURCE`, e.g. the node
//!    masqueraded it), a flow tracked at the client for that destination passes
//!    (not the client's deferred entry: on this tuple it is the flow untranslated),
//!    and anything else is decided by the client's egress policy, by the
//!    destination's class even where it is a Service address (an external IP
//!    naming a pod of another node, a ClusterIP on a port nothing translated:
//!    classed like any outside address); a deny is dropped
//!    (`STAT_DROP_DEFERRED_EGRESS`, counted in the client's egress deny slot and
//!    reported with the client's interface). A deferred packet that does not parse
//!    is dropped like any other (`STAT_DROP_MALFORMED` and the parser's reasons):
//!    no deferred packet leaves undecided. A pass is `STAT_ALLOW_SERVICE_EGRESS`.
//!    Non-first fragments (the node refragments what its conntrack reassembled)
//!    take their first fragment's ports as at a pod's hook (`frag.rs`).
//!
//! Its replies come back through an exit too, before the node un-DNATs them:
//! `node_entry` at TC ingress of every exit gives a reply addressed to a local pod
//! the reply-verified bit when the pod tracks the reversed flow as an egress flow
//! (`service::verify_reply`), so the client's ingress lets the un-DNATed reply of an
//! allowed deferred flow pass, as a same-node backend's veth does; an ICMP error
//! about such a flow's translated packet (from the backend, or a router on the
//! way) gets the same bit (`service::verify_error`). `node_entry`
//! passes every packet: it decides nothing, and a packet it does not parse simply
//! gets no bit.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    programs::TcContext,
};
use policy_common::verdict::{
    DIRECTION_EGRESS, STAT_ALLOW_SERVICE_EGRESS, STAT_DROP_MALFORMED, STAT_DROP_VLAN,
};

use crate::{
    ct,
    facts::Facts,
    frag, maps,
    parse::{self, Packet, L3},
    service::{self, Why},
};

/// `node_exit`: rules 1-4 of the module comment. Its start repeats `classify`'s
/// rather than sharing it: a shared closure-taking runner made `decide` a
/// subprogram of its own and the pod classifiers' call chain 32 bytes deeper than
/// the 512 the verifier allows.
#[inline(always)]
pub(crate) fn leave<const L2: usize>(ctx: &TcContext) -> i32 {
    if !service::take_deferred(ctx) {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel handed this program.
    let (ifindex, tagged) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).vlan_present) };
    let generation = maps::active_generation();
    let Some(facts) = maps::facts() else {
        maps::count(STAT_DROP_MALFORMED);
        return TC_ACT_SHOT;
    };
    // SAFETY: this CPU's slot, used by this program run only (`maps::facts`).
    let facts = unsafe { &mut *facts };
    *facts = Facts::new(ifindex, DIRECTION_EGRESS, generation);
    let at = ct::Site {
        ifindex,
        direction: DIRECTION_EGRESS,
        bank: maps::bank(generation) as u8,
    };
    let verdict = if tagged != 0 {
        // The node does not tag pod traffic it forwards: fail closed.
        Err(STAT_DROP_VLAN)
    } else {
        decide_deferred::<L2>(ctx, facts, at)
    };
    crate::to_tc_action(ctx, facts, verdict)
}

/// Rule 4 of the module comment, for a packet that carried the deferred bit.
#[inline(always)]
fn decide_deferred<const L2: usize>(
    ctx: &TcContext,
    facts: &mut Facts,
    at: ct::Site,
) -> Result<u32, u32> {
    let l3 = link_layer::<L2>(ctx)?;
    if matches!(l3, L3::Arp) {
        return Err(STAT_DROP_MALFORMED);
    }
    facts.ipv6 = matches!(l3, L3::Ipv6);
    let mut packet = parse::packet_at::<L2>(ctx, facts.ipv6, &mut facts.fragment)?;
    facts.parsed(&packet);
    let flow = match &mut packet {
        Packet::Flow(flow) | Packet::OnLinkControl(flow) => flow,
    };
    if facts.fragment.kind == frag::NON_FIRST {
        frag::resolve(at, facts)?;
        (flow.protocol, flow.sport_be, flow.dport_be) =
            (facts.protocol, facts.sport_be, facts.dport_be);
    }
    let flow = maps::flow(flow).ok_or(STAT_DROP_MALFORMED)?;
    service::source_egress(ctx, facts, flow, Why::Deferred)?;
    frag::remember(at, facts);
    Ok(STAT_ALLOW_SERVICE_EGRESS)
}

/// `node_entry`: marks a verified reply (module comment); every packet passes.
#[inline(always)]
pub(crate) fn enter<const L2: usize>(ctx: &TcContext) -> i32 {
    // SAFETY: as in `leave`.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(facts) = maps::facts() else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: as in `leave`.
    let facts = unsafe { &mut *facts };
    *facts = Facts::new(ifindex, DIRECTION_EGRESS, maps::active_generation());
    let Ok(l3) = link_layer::<L2>(ctx) else {
        return TC_ACT_UNSPEC;
    };
    if matches!(l3, L3::Arp) {
        return TC_ACT_UNSPEC;
    }
    facts.ipv6 = matches!(l3, L3::Ipv6);
    let Ok(packet) = parse::packet_at::<L2>(ctx, facts.ipv6, &mut facts.fragment) else {
        return TC_ACT_UNSPEC;
    };
    // Borrowed, not moved out (as in `decide`).
    let Packet::Flow(flow) = &packet else {
        return TC_ACT_UNSPEC;
    };
    if facts.fragment.kind != frag::NON_FIRST {
        if let Some(flow) = maps::flow(flow) {
            if flow.quote_at != 0 {
                service::verify_error(ctx, facts.generation, flow);
            } else {
                service::verify_reply(ctx, facts, flow);
            }
        }
    }
    TC_ACT_UNSPEC
}

/// What a packet of an exit carries: by the Ethernet header's EtherType behind
/// one (`L2` = `parse::ETH_HLEN`), by the protocol the kernel recorded on a link
/// without Ethernet frames (`L2` = 0).
#[inline(always)]
fn link_layer<const L2: usize>(ctx: &TcContext) -> Result<L3, u32> {
    if L2 == 0 {
        parse::l3_bare(ctx)
    } else {
        parse::l3(ctx)
    }
}
