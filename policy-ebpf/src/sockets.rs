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
//!    the world), unless it arrived from a local pod's interface: a pod speaking
//!    from an address that names no pod (IPv6 link-local) is refused
//!    (`STAT_DROP_DEFERRED_UNKNOWN_SOURCE`), as at an exit;
//! 2. a flow tracked at the pod for exactly this destination, decided by this
//!    state and not deferred, passes, uncounted: what the pod sent to the node's
//!    address itself, which its own classifier decided and counted a moment ago.
//!    Where established flows are kept, so does an answered non-TCP flow its own
//!    classifier decided under an earlier state (`CT_FLAG_DIRECT`), which that
//!    classifier passes as kept; not one this program decided (an entry of rule
//!    3 stands only for the state that made it: a later state judges the next
//!    datagram, or a SYN on a reused port, afresh), and an audit-only entry only
//!    while the pod's egress still audits (`Hit::passed_at_the_pod`).
//!    A deferred entry is the flow untranslated (a Service address the node holds
//!    itself: NodeLocal DNSCache binding the DNS ClusterIP, IPVS's `kube-ipvs0`,
//!    an externalIP that is the node's): decided by rule 3, where a Service
//!    address, never translated, has nothing to be judged on and is refused;
//! 3. anything else is the pod's egress decided on the translated destination
//!    (the node's address, its class and the port) with the active bank, as at a
//!    backend's veth (`service::source_decided`, `Why::NodeSocket`; a TCP lookup
//!    as a SYN, a connection opening, which no entry an earlier connection on the
//!    tuple left lets through, and a datagram passing on a tracked flow as there,
//!    kept flows included): an allow
//!    passes (`STAT_ALLOW_SERVICE_EGRESS`, reported and counted in the rule's slot
//!    as a deferred packet would be, with 0 bytes: there is no packet here) and is
//!    tracked at the pod; a deny ends the lookup with `SK_DROP`
//!    (`STAT_DROP_DEFERRED_EGRESS`, counted in the pod's egress deny slot and
//!    reported with the pod's interface). The kernel answers a dropped lookup as
//!    it answers a port nothing listens on: a TCP reset, an ICMP port unreachable.
//!
//! The program selects no socket: a flow that passes goes on to the kernel's own
//! lookup. The answers of an allowed flow reach the client un-DNATed, as replies
//! of its deferred entry that no backend's classifier marked: at the client's
//! ingress, `node_answered` verifies such a reply by the node's socket that sent
//! it (its address and port, tracked as the client's egress when allowed here),
//! for a packet the node made (none arrived on an interface: a packet the node
//! routes loses its sender's socket in `ip_rcv`, but a bridged one may keep it).
//! An established connection to the node meets no hook of the node's again, so
//! a change of state does not re-decide it.

use core::{arch::asm, mem::offset_of};

use aya_ebpf::{
    bindings::{bpf_sk_lookup, bpf_sock, sk_action},
    programs::{SkLookupContext, TcContext},
};
use network_types::ip::IpProto;
use policy_common::{
    ct::{CT_FLAG_DEFERRED, CT_FLAG_REVOKED},
    events::EVENT_DROPPED,
    verdict::{
        DIRECTION_EGRESS, STAT_ALLOW_SERVICE_EGRESS, STAT_DROP_DEFERRED_UNKNOWN_SOURCE,
        STAT_DROP_MALFORMED,
    },
};

use crate::{
    audit, counters, ct, events,
    facts::Facts,
    maps,
    parse::{Flow, TCP_FLAG_SYN},
    service::{self, Why},
};

const IPPROTO_TCP: u32 = IpProto::Tcp as u32;
const IPPROTO_UDP: u32 = IpProto::Udp as u32;
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
    let bank = maps::bank(generation);
    let Some(source_if) = maps::source_ifindex(bank, &flow.saddr) else {
        // Not a local pod's address. Arriving from a local pod's interface, it is
        // a pod speaking from an address that names no pod (an IPv6 link-local
        // one, which its own classifier lets out for neighbour discovery): its
        // egress policy cannot be found, so it is refused, as at an exit.
        let arrived = word_at::<{ offset_of!(bpf_sk_lookup, ingress_ifindex) }, _>(lookup);
        if maps::endpoint(bank, arrived).is_some() {
            return STAT_DROP_DEFERRED_UNKNOWN_SOURCE;
        }
        return PASSED;
    };
    // What the pod sent to the node's address itself, its own classifier decided
    // a moment ago: an entry of exactly this flow that passed it there passes it
    // here, as long as an audit-only one still audits.
    if let Some(hit) = ct::find(source_if, DIRECTION_EGRESS, flow, false) {
        if hit.passed_at_the_pod(generation, flow.protocol)
            && maps::endpoint(bank, source_if).is_some_and(|endpoint| {
                audit::tracked(&hit, &endpoint, DIRECTION_EGRESS, generation).is_some()
            })
        {
            return PASSED;
        }
    }
    // Past rule 2, a TCP lookup opens a connection (the kernel looks for a
    // listener): like a SYN at a pod's hook (`ct.rs` transition 3), it never
    // passes on an entry an earlier connection on the tuple left.
    if flow.protocol == IPPROTO_TCP as u8 {
        flow.tcp_flags = TCP_FLAG_SYN;
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
                events::report(facts, EVENT_DROPPED, stat, 0);
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
    let protocol = word_at::<{ offset_of!(bpf_sk_lookup, protocol) }, _>(lookup);
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return false;
    }
    let ipv6 = word_at::<{ offset_of!(bpf_sk_lookup, family) }, _>(lookup) == AF_INET6;
    *flow = Flow::new(protocol as u8, ipv6);
    if ipv6 {
        const REMOTE: usize = offset_of!(bpf_sk_lookup, remote_ip6);
        const LOCAL: usize = offset_of!(bpf_sk_lookup, local_ip6);
        flow.saddr = words([
            word_at::<REMOTE, _>(lookup),
            word_at::<{ REMOTE + 4 }, _>(lookup),
            word_at::<{ REMOTE + 8 }, _>(lookup),
            word_at::<{ REMOTE + 12 }, _>(lookup),
        ]);
        flow.daddr = words([
            word_at::<LOCAL, _>(lookup),
            word_at::<{ LOCAL + 4 }, _>(lookup),
            word_at::<{ LOCAL + 8 }, _>(lookup),
            word_at::<{ LOCAL + 12 }, _>(lookup),
        ]);
    } else {
        flow.saddr = mapped(word_at::<{ offset_of!(bpf_sk_lookup, remote_ip4) }, _>(
            lookup,
        ));
        flow.daddr = mapped(word_at::<{ offset_of!(bpf_sk_lookup, local_ip4) }, _>(
            lookup,
        ));
    }
    // `remote_port` is a __be16 in the first half of its word, `local_port` a
    // host-order port in a whole word.
    // The kernel turns this word load into a 2-byte load of the field.
    flow.sport_be = word_at::<{ offset_of!(bpf_sk_lookup, remote_port) }, _>(lookup) as u16;
    flow.dport_be =
        (word_at::<{ offset_of!(bpf_sk_lookup, local_port) }, _>(lookup) as u16).to_be();
    true
}

/// The 4-byte word at `OFFSET` of the kernel object `object` points at (the
/// lookup context, a socket), read with one load from that pointer itself: the
/// verifier refuses a load through a context or socket pointer moved first, which
/// is what the compiler makes of several loads near each other.
#[inline(always)]
fn word_at<const OFFSET: usize, T>(object: *const T) -> u32 {
    let value: u64;
    // SAFETY: `object` is a pointer the kernel handed this program (checked not
    // null where it may be), and every `OFFSET` used is a field of its type the
    // verifier lets this program read as a 4-byte word.
    unsafe {
        asm!(
            "{value} = *(u32 *)({object} + {offset})",
            value = out(reg) value,
            object = in(reg) object,
            offset = const OFFSET,
            options(readonly, nostack, preserves_flags),
        );
    }
    value as u32
}

/// Whether `flow`, a reply of a deferred Service flow arriving at the client's
/// interface `ifindex` without the reply-verified bit, was sent by a socket of
/// the node whose address and port the client's egress allowed: `node_sockets`
/// tracked that flow as the client's egress (a deferred or revoked entry proves
/// nothing). The packet must have been made by the node (no interface it arrived
/// on: a bridged packet may still carry its sender's socket), and the socket
/// bound to an address (a UDP server's bound to every address names none: its
/// replies stay unverified). The reply refreshes the entry.
#[inline(never)]
pub(crate) fn node_answered(ctx: &TcContext, ifindex: u32, flow: &Flow) -> bool {
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel handed this program.
    let (sk, arrived) = unsafe {
        (
            (*ctx.skb.skb).__bindgen_anon_2.sk,
            (*ctx.skb.skb).ingress_ifindex,
        )
    };
    // Only a packet the node made has no interface it arrived on: a bridged one
    // may still carry the sending pod's socket.
    if sk.is_null() || arrived != 0 {
        return false;
    }
    let Some(key) = maps::ct_key() else {
        return false;
    };
    // SAFETY: this CPU's scratch key (`maps::ct_key`), used by this lookup alone;
    // it is written whole here (the flow as the client sent it, to the socket's
    // address and port) and read by `ct::find_filled`.
    unsafe {
        let key = &mut *key;
        key.ifindex = ifindex;
        key.saddr = flow.daddr;
        key.sport_be = flow.dport_be;
        key.protocol = flow.protocol;
        key.direction = DIRECTION_EGRESS;
        key.pad = [0; 2];
        let daddr = key.daddr.as_mut_ptr().cast::<u32>();
        if flow.ipv6 {
            const SRC: usize = offset_of!(bpf_sock, src_ip6);
            daddr.write_unaligned(word_at::<SRC, _>(sk));
            daddr.add(1).write_unaligned(word_at::<{ SRC + 4 }, _>(sk));
            daddr.add(2).write_unaligned(word_at::<{ SRC + 8 }, _>(sk));
            daddr.add(3).write_unaligned(word_at::<{ SRC + 12 }, _>(sk));
        } else {
            daddr.write_unaligned(0);
            daddr.add(1).write_unaligned(0);
            daddr
                .add(2)
                .write_unaligned(u32::from_ne_bytes([0, 0, 0xff, 0xff]));
            daddr
                .add(3)
                .write_unaligned(word_at::<{ offset_of!(bpf_sock, src_ip4) }, _>(sk));
        }
        // `src_port` is in host byte order.
        key.dport_be = (word_at::<{ offset_of!(bpf_sock, src_port) }, _>(sk) as u16).to_be();
    }
    // The allowed flow's entry, as `node_sockets` tracked it (not a deferred one:
    // that is the flow untranslated, never decided). Its answers keep it alive.
    // An established connection to the node meets no hook of the node's again,
    // so it is not re-decided when the state changes (a revoked entry verifies
    // nothing).
    let Some(hit) = ct::find_filled() else {
        return false;
    };
    if hit.flags() & (CT_FLAG_DEFERRED | CT_FLAG_REVOKED) != 0 {
        return false;
    }
    hit.seen(flow);
    true
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
