//! podwall's TC classifiers: one program per hook on each local pod's host-side veth.
//!
//! `pod_ingress` runs at TC egress (packets the veth hands to the pod) and decides the
//! pod's ingress policy; `pod_egress` runs at TC ingress (packets the pod sends) and
//! decides its egress policy. Both share `decide`, which returns the counter to bump:
//! an allow counter or a drop reason, and `to_tc_action` is the one place that turns
//! that into a TC verdict. Layouts come from `policy-common`; nothing here panics.
#![no_std]
#![no_main]

mod ct;
mod maps;
mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
};
use policy_common::{
    endpoint::{ISOLATED_EGRESS, ISOLATED_INGRESS},
    peer::CLASS_WORLD,
    policy::{PolicyKey, PREFIX_FULL},
    verdict::*,
};

use crate::parse::{Ipv6Kind, L3};

/// Decides a packet of the pod's ingress.
#[classifier]
pub fn pod_ingress(ctx: TcContext) -> i32 {
    to_tc_action(decide(&ctx, DIRECTION_INGRESS))
}

/// Decides a packet of the pod's egress.
#[classifier]
pub fn pod_egress(ctx: TcContext) -> i32 {
    to_tc_action(decide(&ctx, DIRECTION_EGRESS))
}

/// Counts the verdict and maps it to a TC action. Allowed packets return
/// TC_ACT_UNSPEC (TCX_NEXT) so programs attached after ours still run.
#[inline(always)]
fn to_tc_action(verdict: Result<u32, u32>) -> i32 {
    match verdict {
        Ok(stat) => {
            maps::count(stat);
            TC_ACT_UNSPEC
        }
        Err(stat) => {
            maps::count(stat);
            TC_ACT_SHOT
        }
    }
}

/// Lookup precedence, in order:
/// 1. Frames that are not IP pass (ARP must work for pods to work).
/// 2. The interface must be a known endpoint, else drop (fail closed).
/// 3. IPv6: pass when the pod is not isolated in this direction, pass neighbour
///    discovery always, drop the rest (IPv6 rules are not compiled yet).
/// 4. IPv4 that does not parse: drop.
/// 5. A packet of a tracked flow (same direction, or the reply) passes.
/// 6. A pod not isolated in this direction passes, and the flow is tracked.
/// 7. The peer's class (`PEERS_V4`, else `CLASS_WORLD`) and the packet's protocol and
///    destination port are looked up in `POLICY`: a match passes and is tracked.
/// 8. Anything else is dropped.
#[inline(always)]
fn decide(ctx: &TcContext, direction: u8) -> Result<u32, u32> {
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel handed this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(l3) = parse::l3(ctx)? else {
        return Ok(STAT_ALLOW_NON_IP);
    };
    let endpoint = maps::endpoint(ifindex).ok_or(STAT_DROP_UNKNOWN_ENDPOINT)?;
    let isolation_flag = if direction == DIRECTION_INGRESS {
        ISOLATED_INGRESS
    } else {
        ISOLATED_EGRESS
    };
    let isolated = endpoint.flags & isolation_flag != 0;
    let flow = match l3 {
        L3::Ipv4 => parse::ipv4_flow(ctx)?,
        L3::Ipv6 => {
            return match parse::ipv6_kind(ctx)? {
                Ipv6Kind::NeighbourDiscovery => Ok(STAT_ALLOW_NON_IP),
                Ipv6Kind::Other if !isolated => Ok(STAT_ALLOW_UNISOLATED),
                Ipv6Kind::Other => Err(STAT_DROP_POLICY),
            }
        }
    };
    if ct::is_tracked(ifindex, direction, &flow) {
        return Ok(STAT_ALLOW_TRACKED);
    }
    if !isolated {
        ct::track(ifindex, direction, &flow, u32::MAX);
        return Ok(STAT_ALLOW_UNISOLATED);
    }
    let peer_be = if direction == DIRECTION_INGRESS {
        flow.saddr_be
    } else {
        flow.daddr_be
    };
    let class_id = maps::peer_class_v4(peer_be).unwrap_or(CLASS_WORLD);
    let key = PolicyKey {
        endpoint_id: endpoint.endpoint_id,
        class_id,
        direction,
        protocol: flow.protocol,
        port_be: flow.dport_be,
    };
    let allowed = maps::policy(PREFIX_FULL, key).ok_or(STAT_DROP_POLICY)?;
    ct::track(ifindex, direction, &flow, allowed.policy_id);
    Ok(STAT_ALLOW_POLICY)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
