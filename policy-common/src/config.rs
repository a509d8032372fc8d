//! `CONFIG`: one-entry array of settings the agent writes at load time and the
//! classifiers read per packet: conntrack timeouts, event settings and the UDP
//! ports of tunnels a pod may not send to.

/// Map name in the object file.
pub const CONFIG_MAP: &str = "CONFIG";

/// Flag: emit `EVENT_ALLOW` events too (drops and would-drops always are).
pub const CONFIG_FLAG_ALLOW_EVENTS: u32 = 1 << 0;

const SECOND_NS: u64 = 1_000_000_000;

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
    /// UDP destination ports of tunnels (VXLAN, Geneve) a pod's egress may not
    /// reach (`verdict::STAT_DROP_TUNNEL`), network byte order; 0 = an unused slot.
    /// `DEFAULT_TUNNEL_PORTS` and the ports of the node's own tunnel devices.
    pub tunnel_ports_be: [u16; TUNNEL_PORTS_MAX],
}

const _: () = assert!(core::mem::size_of::<Config>() == 80);

impl Config {
    /// Cilium's conntrack lifetimes (SYN 60 s, established 6 h, close 10 s,
    /// non-TCP 60 s), ICMP 30 s, 1,000 events per second per CPU, and the
    /// `DEFAULT_TUNNEL_PORTS`.
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
        tunnel_ports_be: Config::tunnel_ports(&DEFAULT_TUNNEL_PORTS),
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
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}
