//! What `decide` learned about a packet on its way to a verdict, so the last step
//! (`to_tc_action`) can count and report every packet alike: the interface and
//! endpoint, the direction, the parsed tuple, the rule that allowed it and the
//! per-policy counter it counts in. Fields stay zero (or `None`) while unknown: a
//! packet dropped before parsing is reported with a zero tuple. A packet's `Facts`
//! live in this CPU's entry of the `FACTS` map (`maps::facts`), not on the stack.

use core::ptr::addr_of_mut;

use policy_common::{counters::NO_COUNTER, endpoint::OwnAddresses};

use crate::{
    frag::Fragment,
    parse::{Flow, Packet},
};

/// The per-policy traffic counter a packet counts in.
#[derive(Clone, Copy)]
pub(crate) enum Counter {
    /// None (no rule decided the flow, or a drop that is not a policy's).
    None,
    /// `RULE_COUNTERS[slot]`: a rule allowed the packet's flow, or a
    /// ClusterNetworkPolicy `Deny` rule denied it (or would).
    Rule(u32),
    /// `DROP_COUNTERS[slot]`: dropped by policy, or a would-drop in audit mode.
    Deny(u32),
}

impl Counter {
    /// The counter of a conntrack entry's `counter_slot` (`NO_COUNTER`: none).
    #[inline(always)]
    pub(crate) fn rule(slot: u32) -> Self {
        if slot == NO_COUNTER {
            Counter::None
        } else {
            Counter::Rule(slot)
        }
    }
}

/// Everything the final step needs about one packet. In declaration order
/// (`repr(C)`), so that the addresses' 8-byte alignment, which `reset` relies
/// on, does not hang on how the compiler orders the fields: the widest first,
/// the bytes last, as the compiler ordered them before.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Facts {
    /// The `RULE_COUNTERS` slot of the rule that allowed the packet, or of the
    /// ClusterNetworkPolicy rule that denied it (its `POLICY` entry's
    /// `rule_slot`), if a rule did.
    pub rule: Option<u32>,
    /// Where the packet's bytes count.
    pub counter: Counter,
    /// The interface the verdict is about (the pod's host-side veth).
    pub ifindex: u32,
    /// The `ACTIVE` value the packet is decided with (its bank is `bank_of` it).
    pub generation: u32,
    /// `EndpointInfo::endpoint_id`; 0 until the interface is known as an endpoint.
    pub endpoint_id: u32,
    /// `CT_FLAG_LOCAL_OWNED` when the packet's local address (its source at
    /// egress, its destination at ingress) is one of the interface's own in the
    /// packet's bank, as the address checks of `decide` found; else 0. A flow this
    /// packet tracks or re-decides carries it.
    pub owned: u32,
    /// Source address, packet byte order (IPv4 mapped); zero until parsed.
    pub saddr: [u8; 16],
    /// Destination address, packet byte order (IPv4 mapped); zero until parsed.
    pub daddr: [u8; 16],
    /// How the packet is fragmented (written by `parse`, read by `frag`).
    pub fragment: Fragment,
    /// The interface's own addresses, from its `ENDPOINTS` entry in the packet's
    /// bank (`maps::endpoint_and_own`): written by `decide` when it looks the
    /// endpoint up, before anything reads it; not reset per packet.
    pub own: OwnAddresses,
    /// Source port (ICMP echo: identifier), network byte order.
    pub sport_be: u16,
    /// Destination port (ICMP echo: identifier), network byte order.
    pub dport_be: u16,
    /// The frame is IPv6.
    pub ipv6: bool,
    /// The packet decided a flow afresh (not a conntrack hit): only such packets
    /// report allows and would-drops.
    pub decided: bool,
    /// Set while `service::decide_source` judges a source's egress at a pod's
    /// hook: the packet is past any Service translation, so its destination is
    /// final and an address a Service also names (a pod's, listed as an external
    /// IP, say) is judged by its class, not deferred again (`judge`).
    pub translated: bool,
    /// `verdict::DIRECTION_*` relative to that pod.
    pub direction: u8,
    /// IP protocol number; 0 until parsed.
    pub protocol: u8,
}

// What `reset` relies on: both addresses start at an 8-byte boundary.
const _: () = assert!(
    core::mem::offset_of!(Facts, saddr) % 8 == 0 && core::mem::offset_of!(Facts, daddr) % 8 == 0
);

impl Facts {
    /// Nothing known yet but where and which way the packet goes, and with which
    /// generation it is decided.
    #[inline(always)]
    pub(crate) fn new(ifindex: u32, direction: u8, generation: u32) -> Self {
        Self {
            ifindex,
            direction,
            generation,
            endpoint_id: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            sport_be: 0,
            dport_be: 0,
            protocol: 0,
            ipv6: false,
            decided: false,
            translated: false,
            rule: None,
            counter: Counter::None,
            fragment: Fragment::WHOLE,
            owned: 0,
            own: OwnAddresses {
                flags: 0,
                v4: [0; 4],
                v6: [0; 16],
            },
        }
    }

    /// Makes `*slot` equal to `Facts::new(ifindex, direction, generation)` but for
    /// `own` (which `decide` writes before it reads it), one
    /// volatile store per field (the addresses as two u64 each). Assigned whole,
    /// or zeroed by plain stores that LLVM merges, the zeroed part became a call to
    /// the byte-by-byte `memset` loop BPF gets for want of a real one: about 56
    /// bytes, one loop pass each, on every packet that goes the long way.
    ///
    /// # Safety
    /// `slot` must be valid for writes of a `Facts` and 8-byte aligned (a map
    /// value: `maps::facts`).
    #[inline(always)]
    pub(crate) unsafe fn reset(slot: *mut Self, ifindex: u32, direction: u8, generation: u32) {
        // SAFETY: every pointer is to a field of `*slot` (the caller's promise);
        // the addresses are 8-byte aligned within it (asserted above) and the
        // slot is a map value (8-byte aligned), so each
        // is two aligned u64 stores; a zero is a valid value of every field
        // written as one, and the enums are written as themselves.
        unsafe {
            addr_of_mut!((*slot).ifindex).write_volatile(ifindex);
            addr_of_mut!((*slot).direction).write_volatile(direction);
            addr_of_mut!((*slot).generation).write_volatile(generation);
            addr_of_mut!((*slot).endpoint_id).write_volatile(0);
            for address in [addr_of_mut!((*slot).saddr), addr_of_mut!((*slot).daddr)] {
                let words = address as *mut u64;
                words.write_volatile(0);
                words.add(1).write_volatile(0);
            }
            addr_of_mut!((*slot).sport_be).write_volatile(0);
            addr_of_mut!((*slot).dport_be).write_volatile(0);
            addr_of_mut!((*slot).protocol).write_volatile(0);
            addr_of_mut!((*slot).ipv6).write_volatile(false);
            addr_of_mut!((*slot).decided).write_volatile(false);
            addr_of_mut!((*slot).translated).write_volatile(false);
            addr_of_mut!((*slot).rule).write_volatile(None);
            addr_of_mut!((*slot).counter).write_volatile(Counter::None);
            addr_of_mut!((*slot).fragment.kind).write_volatile(Fragment::WHOLE.kind);
            let id = addr_of_mut!((*slot).fragment.id) as *mut u8;
            for i in 0..4 {
                id.add(i).write_volatile(0);
            }
            addr_of_mut!((*slot).fragment.edge).write_volatile(Fragment::WHOLE.edge);
            addr_of_mut!((*slot).owned).write_volatile(0);
        }
    }

    /// Records what parsing found: the 5-tuple of a flow, or of a neighbour or
    /// multicast listener discovery message (ICMPv6, ports 0), which `decide` may
    /// go on to treat as a flow (`stays_on_node`).
    #[inline(always)]
    pub(crate) fn parsed(&mut self, packet: &Packet) {
        match packet {
            Packet::Flow(flow) | Packet::OnLinkControl(flow) => self.flow(flow),
        }
    }

    /// Records a flow's 5-tuple.
    #[inline(always)]
    pub(crate) fn flow(&mut self, flow: &Flow) {
        self.saddr = flow.saddr;
        self.daddr = flow.daddr;
        self.sport_be = flow.sport_be;
        self.dport_be = flow.dport_be;
        self.protocol = flow.protocol;
        self.ipv6 = flow.ipv6;
    }
}
