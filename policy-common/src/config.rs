//! `CONFIG`: one-entry array of settings the agent writes at load time and the
//! classifiers read per packet: conntrack timeouts and limits, event settings, the
//! `skb->mark` bits podwall owns and the UDP ports of tunnels a pod may not send to.

use crate::ct::CT_ENDPOINT_FLOWS_DEFAULT;

/// Flag: emit `EVENT_ALLOWED` events too (drops and would-drops always are).
pub const CONFIG_FLAG_ALLOW_EVENTS: u32 = 1 << 0;
/// Flag: tracked flows keep passing after a policy change (no re-decision of a
/// flow whose entry another state decided); only a new connection meets the new
/// policy. Off by default: a change cuts what it denies.
pub const CONFIG_FLAG_KEEP_ESTABLISHED: u32 = 1 << 1;
/// Flag, set by the agent right before it writes whole tables into the active
/// bank and cleared once an apply leaves one whole state there (after the move of
/// `ACTIVE` that ends the write; a write that fails part way leaves it set): a
/// denial the classifiers reach meanwhile may come from entries of both states, so
/// it is not trusted. The packet is dropped as `STAT_DROP_STATE_CHANGED`, and a
/// tracked flow is not revoked for it; its next packet is decided again.
pub const CONFIG_FLAG_TABLES_WRITING: u32 = 1 << 2;

/// The `skb->mark` bits podwall owns unless told otherwise: the low byte, clear of
/// Calico's `IptablesMarkMask` (0xffff0000), kube-proxy's masquerade and drop bits
/// (0x4000, 0x8000) and Cilium's mark nibbles (0x0f00, 0xf000).
pub const DEFAULT_MARK_MASK: u32 = 0x0000_00ff;

const SECOND_NS: u64 = 1_000_000_000;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;

/// What podwall uses each bit of its mark mask for (`mark_bits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkBits {
    /// Set on a packet whose egress is deferred past Service DNAT.
    pub deferred_egress: u32,
    /// Set on a reply the backend's side verified.
    pub reply_verified: u32,
    /// Contiguous bits holding the stamp of the bank a pod's egress was decided
    /// with (`Config::mark_stamp`).
    pub stamp_mask: u32,
    /// Position of the lowest bit of `stamp_mask`.
    pub stamp_shift: u32,
}

/// How podwall uses the bits of `mask`: its lowest set bit marks a deferred egress,
/// the next one a verified reply, and the bits above them, one contiguous run of at
/// least two, hold the bank stamp. `None` when `mask` has another shape.
pub const fn mark_bits(mask: u32) -> Option<MarkBits> {
    if mask.count_ones() < 4 {
        return None;
    }
    let deferred_egress = mask & mask.wrapping_neg();
    let rest = mask & !deferred_egress;
    let reply_verified = rest & rest.wrapping_neg();
    let stamp_mask = rest & !reply_verified;
    let stamp_shift = stamp_mask.trailing_zeros();
    // Contiguous: shifted down, the run is 2^k - 1.
    let run = stamp_mask >> stamp_shift;
    if run & (run + 1) != 0 {
        return None;
    }
    Some(MarkBits {
        deferred_egress,
        reply_verified,
        stamp_mask,
        stamp_shift,
    })
}

const DEFAULT_MARKS: MarkBits = match mark_bits(DEFAULT_MARK_MASK) {
    Some(bits) => bits,
    None => panic!("DEFAULT_MARK_MASK has no valid shape"),
};

/// Slots of `Config::tunnel_ports_be`.
pub const TUNNEL_PORTS_MAX: usize = 8;

/// UDP ports every node is assumed to decapsulate, whatever its devices say: VXLAN
/// (4789, IANA), Linux's and flannel's VXLAN default (8472) and Geneve (6081).
pub const DEFAULT_TUNNEL_PORTS: [u16; 3] = [4789, 8472, 6081];

/// Settings; every field is used as is (the agent always writes the entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Idle timeout of a TCP flow in `CT_STATE_OPENING`.
    pub ct_tcp_opening_ns: u64,
    /// Idle timeout of an established TCP flow.
    pub ct_tcp_established_ns: u64,
    /// Idle timeout of a TCP flow after FIN or RST.
    pub ct_tcp_closing_ns: u64,
    /// Idle timeout of a UDP (and SCTP) flow.
    pub ct_udp_ns: u64,
    /// Idle timeout of an ICMP or ICMPv6 flow (echo, or any other type).
    pub ct_icmp_ns: u64,
    /// Idle timeout of any other protocol.
    pub ct_other_ns: u64,
    /// Events each CPU may emit per second on average.
    pub events_per_second: u32,
    /// Events each CPU may emit in one burst.
    pub events_burst: u32,
    /// `CONFIG_FLAG_*`.
    pub flags: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
    /// `skb->mark` bit of a deferred egress (`MarkBits::deferred_egress`).
    pub mark_deferred_egress: u32,
    /// `skb->mark` bit of a verified reply (`MarkBits::reply_verified`).
    pub mark_reply_verified: u32,
    /// `skb->mark` bits of the bank stamp (`MarkBits::stamp_mask`); 0: no stamp.
    pub mark_stamp_mask: u32,
    /// `MarkBits::stamp_shift`.
    pub mark_stamp_shift: u32,
    /// `CONNTRACK` entries one pod interface may hold; a new flow past it is
    /// dropped (`STAT_DROP_CT_ENDPOINT_LIMIT`).
    pub ct_endpoint_flows: u32,
    /// Explicit padding; always zero.
    pub pad2: u32,
    /// UDP destination ports of tunnels (VXLAN, Geneve) a pod's egress may not
    /// reach (`verdict::STAT_DROP_TUNNEL`), network byte order; 0 = an unused slot.
    /// `DEFAULT_TUNNEL_PORTS` and the ports of the node's own tunnel devices.
    pub tunnel_ports_be: [u16; TUNNEL_PORTS_MAX],
    /// Events one pod interface may emit per second on average, on each CPU
    /// (checked before the per-CPU limit, so one pod cannot use up the others').
    pub events_per_endpoint_per_second: u32,
    /// Events one pod interface may emit in one burst, on each CPU.
    pub events_per_endpoint_burst: u32,
}

const _: () = assert!(core::mem::size_of::<Config>() == 112);

impl Config {
    /// Cilium's conntrack lifetimes (SYN 60 s, established 6 h, close 10 s,
    /// non-TCP 60 s), ICMP 30 s, 1,000 events per second per CPU and 100 per second
    /// per pod interface and CPU (a tenth: ten flooding pods together reach the
    /// per-CPU limit), the marks of `DEFAULT_MARK_MASK`, an eighth of the conntrack
    /// table per interface and the `DEFAULT_TUNNEL_PORTS`.
    pub const DEFAULT: Config = Config {
        ct_tcp_opening_ns: 60 * SECOND_NS,
        ct_tcp_established_ns: 6 * 3600 * SECOND_NS,
        ct_tcp_closing_ns: 10 * SECOND_NS,
        ct_udp_ns: 60 * SECOND_NS,
        ct_icmp_ns: 30 * SECOND_NS,
        ct_other_ns: 60 * SECOND_NS,
        events_per_second: 1000,
        events_burst: 200,
        flags: 0,
        pad: 0,
        mark_deferred_egress: DEFAULT_MARKS.deferred_egress,
        mark_reply_verified: DEFAULT_MARKS.reply_verified,
        mark_stamp_mask: DEFAULT_MARKS.stamp_mask,
        mark_stamp_shift: DEFAULT_MARKS.stamp_shift,
        ct_endpoint_flows: CT_ENDPOINT_FLOWS_DEFAULT,
        pad2: 0,
        tunnel_ports_be: Config::tunnel_ports(&DEFAULT_TUNNEL_PORTS),
        events_per_endpoint_per_second: 100,
        events_per_endpoint_burst: 20,
    };

    /// `tunnel_ports_be` holding `ports` (host byte order) in order, 0 after them;
    /// ports past `TUNNEL_PORTS_MAX` are left out (the agent warns first).
    pub const fn tunnel_ports(ports: &[u16]) -> [u16; TUNNEL_PORTS_MAX] {
        let mut slots = [0u16; TUNNEL_PORTS_MAX];
        let mut i = 0;
        while i < ports.len() && i < TUNNEL_PORTS_MAX {
            slots[i] = ports[i].to_be();
            i += 1;
        }
        slots
    }

    /// This config with its mark fields set from `bits`.
    pub const fn with_marks(self, bits: MarkBits) -> Config {
        Config {
            mark_deferred_egress: bits.deferred_egress,
            mark_reply_verified: bits.reply_verified,
            mark_stamp_mask: bits.stamp_mask,
            mark_stamp_shift: bits.stamp_shift,
            ..self
        }
    }

    /// Every mark bit podwall owns: the only ones a classifier ever clears.
    #[inline(always)]
    pub const fn own_marks(&self) -> u32 {
        self.mark_deferred_egress | self.mark_reply_verified | self.mark_stamp_mask
    }

    /// How many generations apart two stamps can be told apart: `2^k - 1` for k
    /// stamp bits (0 without stamp bits).
    pub const fn mark_stamps(&self) -> u32 {
        self.mark_stamp_mask.wrapping_shr(self.mark_stamp_shift)
    }

    /// The bank stamp of `generation` (an `ACTIVE` value), already in place in the
    /// mark: `1 + generation mod (2^k - 1)` in the k stamp bits, so a stamped
    /// packet's field is never 0, and two generations fewer than 2^k - 1 apart
    /// (a flip is one step, a write in place two) never share a stamp. 0 when no
    /// stamp bits are configured.
    #[inline(always)]
    pub const fn mark_stamp(&self, generation: u32) -> u32 {
        let modulus = self.mark_stamps();
        if modulus == 0 {
            return 0;
        }
        ((generation % modulus + 1).wrapping_shl(self.mark_stamp_shift)) & self.mark_stamp_mask
    }

    /// How long a conntrack entry of `protocol` in `state` (`ct::CT_STATE_*`) may
    /// stay idle: TCP opening (and answered) `ct_tcp_opening_ns`, established
    /// `ct_tcp_established_ns`, closing and closed `ct_tcp_closing_ns`; UDP and
    /// SCTP `ct_udp_ns`; ICMP and ICMPv6 `ct_icmp_ns`; the rest `ct_other_ns`.
    #[inline(always)]
    pub const fn ct_timeout_ns(&self, protocol: u8, state: u8) -> u64 {
        use crate::ct::{CT_STATE_ANSWERED, CT_STATE_ESTABLISHED, CT_STATE_OPENING};
        match protocol {
            IPPROTO_TCP => match state {
                CT_STATE_OPENING | CT_STATE_ANSWERED => self.ct_tcp_opening_ns,
                CT_STATE_ESTABLISHED => self.ct_tcp_established_ns,
                _ => self.ct_tcp_closing_ns,
            },
            IPPROTO_UDP | IPPROTO_SCTP => self.ct_udp_ns,
            IPPROTO_ICMP | IPPROTO_ICMPV6 => self.ct_icmp_ns,
            _ => self.ct_other_ns,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}
