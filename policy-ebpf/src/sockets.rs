//! The node's own sockets: where a Service egress deferred at a local client is
//! decided when its backend is the node itself (a hostNetwork pod).
//!
//! kube-proxy translates such a ClusterIP to one of the node's addresses, and the
//! translated packet is delivered locally: it meets no pod's classifier and no
//! exit. `node_sockets`, an `sk_lookup` program attached to the node's network
//! namespace, runs where the kernel looks for the local socket of a TCP SYN or of
//! a UDP datagram to an unconnected socket, after DNAT (established TCP and
//! connected UDP sockets are found before it runs, so a flow meets it once, or
//! once per datagram):
//! 1. anything but TCP and UDP goes on, and so does a flow whose source is not a
//!    local pod (`ENDPOINT_ADDRS`: the node's own traffic, other nodes' pods,
//!    the world);
//! 2. a flow tracked at the pod for exactly this destination and decided by this
//!    state passes, uncounted: what the pod sent to the node's address itself,
//!    which its own classifier decided and counted a moment ago;
//! 3. anything else is the pod's egress decided on the translated destination
//!    (the node's address, its class and the port) with the active bank, as at a
//!    backend's veth (`service::source_decided`, `Why::NodeSocket`): an allow
//!    passes (`STAT_ALLOW_SERVICE_EGRESS`, reported and counted in the rule's slot
//!    as a deferred packet would be, with 0 bytes: there is no packet here) and is
//!    tracked at the pod; a deny ends the lookup with `SK_DROP`
//!    (`STAT_DROP_DEFERRED_EGRESS`, counted in the pod's egress deny slot and
//!    reported with the pod's interface). The kernel answers a dropped lookup as
//!    it answers a port nothing listens on: a TCP reset, an ICMP port unreachable.
//!
//! The program selects no socket: a flow that passes goes on to the kernel's own
//! lookup. The answers of an allowed flow reach the client un-DNATed, as replies
//! of its deferred entry that no backend's classifier verified: they pass as new
//! ingress from the Service address, so a client whose ingress is isolated needs
//! its ingress to admit that (see the README's known limits).

use core::{arch::asm, mem::offset_of};

use aya_ebpf::{
    bindings::{bpf_sk_lookup, sk_action},
    programs::SkLookupContext,
};
use policy_common::{
    events::EVENT_DROP,
    verdict::{DIRECTION_EGRESS, STAT_ALLOW_SERVICE_EGRESS, STAT_DROP_MALFORMED},
};

use crate::{
    counters, ct, events,
    facts::Facts,
    maps,
    parse::Flow,
    service::{self, Why},
};

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// `AF_INET6` (`bpf_sk_lookup::family`).
const AF_INET6: u32 = 10;

/// `lookup`'s outcome for a flow that passes without being judged here.
const PASSED: u32 = u32::MAX;
/// `lookup`'s outcome for a flow judged here and allowed.
const ALLOWED: u32 = u32::MAX - 1;

/// `node_sockets`: rules 1 to 3 of the module comment. The decision and its
/// report are BPF subprograms called one after the other, so that their stack
/// frames do not stack up.
#[inline(always)]
pub(crate) fn lookup(ctx: &SkLookupContext) -> u32 {
    finish(decide(ctx.lookup))
}

/// Rules 1 to 3: `PASSED`, `ALLOWED` or the drop reason. The flow is built in
/// this CPU's `FLOW` slot, off the stack.
#[inline(never)]
fn decide(lookup: *mut bpf_sk_lookup) -> u32 {
    let Some(flow) = maps::flow_slot() else {
        return STAT_DROP_MALFORMED;
    };
    // SAFETY: this CPU's slot, used by this program run only (`maps::flow`).
    let flow = unsafe { &mut *flow };
    if !read_flow(lookup, flow) {
        return PASSED;
    }
    let generation = maps::active_generation();
    let Some(source_if) = maps::source_ifindex(maps::bank(generation), &flow.saddr) else {
        return PASSED;
    };
    // What the pod sent to the node's address itself, its own classifier decided
    // a moment ago: an entry of exactly this flow that this state decided passes
    // it, as the packet already did.
    if ct::find(source_if, DIRECTION_EGRESS, flow, false).is_some_and(|hit| hit.current(generation))
    {
        return PASSED;
    }
    let Some(facts) = maps::facts() else {
        return STAT_DROP_MALFORMED;
    };
    // SAFETY: this CPU's slot, used by this program run only (`maps::facts`).
    let facts = unsafe { &mut *facts };
    *facts = Facts::new(source_if, DIRECTION_EGRESS, generation);
    facts.flow(flow);
    match service::source_decided(None, 0, facts, flow, Why::NodeSocket) {
        Ok(false) => PASSED,
        Ok(true) => ALLOWED,
        Err(stat) => stat,
    }
}

/// Counts and reports `decide`'s outcome and turns it into the lookup's verdict.
#[inline(never)]
fn finish(outcome: u32) -> u32 {
    match outcome {
        PASSED => sk_action::SK_PASS,
        ALLOWED => {
            maps::count(STAT_ALLOW_SERVICE_EGRESS);
            sk_action::SK_PASS
        }
        stat => {
            maps::count(stat);
            if let Some(facts) = maps::facts() {
                // SAFETY: this CPU's slot, which `decide` filled for this lookup.
                let facts = unsafe { &*facts };
                counters::add(facts.counter, 0);
                events::report(facts, EVENT_DROP, stat, 0);
            }
            sk_action::SK_DROP
        }
    }
}

/// Writes into `flow` the flow the lookup is for, as the pod's classifier would
/// parse its packet (addresses IPv4-mapped, ports in network byte order); false
/// for anything but TCP and UDP.
#[inline(always)]
fn read_flow(lookup: *mut bpf_sk_lookup, flow: &mut Flow) -> bool {
    let protocol = context_word::<{ offset_of!(bpf_sk_lookup, protocol) }>(lookup);
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return false;
    }
    let ipv6 = context_word::<{ offset_of!(bpf_sk_lookup, family) }>(lookup) == AF_INET6;
    *flow = Flow::new(protocol as u8, ipv6);
    if ipv6 {
        const REMOTE: usize = offset_of!(bpf_sk_lookup, remote_ip6);
        const LOCAL: usize = offset_of!(bpf_sk_lookup, local_ip6);
        flow.saddr = words([
            context_word::<REMOTE>(lookup),
            context_word::<{ REMOTE + 4 }>(lookup),
            context_word::<{ REMOTE + 8 }>(lookup),
            context_word::<{ REMOTE + 12 }>(lookup),
        ]);
        flow.daddr = words([
            context_word::<LOCAL>(lookup),
            context_word::<{ LOCAL + 4 }>(lookup),
            context_word::<{ LOCAL + 8 }>(lookup),
            context_word::<{ LOCAL + 12 }>(lookup),
        ]);
    } else {
        flow.saddr = mapped(context_word::<{ offset_of!(bpf_sk_lookup, remote_ip4) }>(
            lookup,
        ));
        flow.daddr = mapped(context_word::<{ offset_of!(bpf_sk_lookup, local_ip4) }>(
            lookup,
        ));
    }
    // `remote_port` is a __be16 in the first half of its word, `local_port` a
    // host-order port in a whole word.
    let remote_port = context_word::<{ offset_of!(bpf_sk_lookup, remote_port) }>(lookup);
    flow.sport_be = u16::from_ne_bytes([remote_port as u8, (remote_port >> 8) as u8]);
    flow.dport_be =
        (context_word::<{ offset_of!(bpf_sk_lookup, local_port) }>(lookup) as u16).to_be();
    true
}

/// The 4-byte word at `OFFSET` of the lookup context, read with one load from the
/// context pointer itself: the verifier refuses a load through a context pointer
/// moved first, which is what the compiler makes of several loads near each other.
#[inline(always)]
fn context_word<const OFFSET: usize>(lookup: *mut bpf_sk_lookup) -> u32 {
    let value: u64;
    // SAFETY: `lookup` is the context the kernel handed this program, and every
    // `OFFSET` used is a field of `bpf_sk_lookup` the verifier lets this program
    // type read as a 4-byte word.
    unsafe {
        asm!(
            "{value} = *(u32 *)({lookup} + {offset})",
            value = out(reg) value,
            lookup = in(reg) lookup,
            offset = const OFFSET,
            options(readonly, nostack, preserves_flags),
        );
    }
    value as u32
}

/// An IPv6 address held as four words in network byte order, as bytes.
#[inline(always)]
fn words(address: [u32; 4]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[0..4].copy_from_slice(&address[0].to_ne_bytes());
    bytes[4..8].copy_from_slice(&address[1].to_ne_bytes());
    bytes[8..12].copy_from_slice(&address[2].to_ne_bytes());
    bytes[12..16].copy_from_slice(&address[3].to_ne_bytes());
    bytes
}

/// An IPv4 address held in network byte order, as `::ffff:a.b.c.d`.
#[inline(always)]
fn mapped(address: u32) -> [u8; 16] {
    let mut bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
    bytes[12..].copy_from_slice(&address.to_ne_bytes());
    bytes
}
