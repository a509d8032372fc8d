//! `CONFIG`: one-entry array of settings the agent writes at load time and the
//! classifiers read per packet: conntrack timeouts and event settings.

/// Map name in the object file.
pub const CONFIG_MAP: &str = "CONFIG";

/// Flag: emit `EVENT_ALLOW` events too (drops and would-drops always are).
pub const CONFIG_FLAG_ALLOW_EVENTS: u32 = 1 << 0;

const SECOND_NS: u64 = 1_000_000_000;

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
    /// Events one pod interface may emit per second on average, on each CPU
    /// (checked before the per-CPU limit, so one pod cannot use up the others').
    pub events_per_endpoint_per_second: u32,
    /// Events one pod interface may emit in one burst, on each CPU.
    pub events_per_endpoint_burst: u32,
}

const _: () = assert!(core::mem::size_of::<Config>() == 72);

impl Config {
    /// Cilium's conntrack lifetimes (SYN 60 s, established 6 h, close 10 s,
    /// non-TCP 60 s), ICMP 30 s, 1,000 events per second per CPU, and 100 per
    /// second per pod interface and CPU (a tenth: ten flooding pods together
    /// reach the per-CPU limit).
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
        events_per_endpoint_per_second: 100,
        events_per_endpoint_burst: 20,
    };
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}
