//! The maps this object defines (layouts and names from `policy-common`) and the
//! typed lookups the classifiers use.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use policy_common::{
    config::Config,
    counters::{TrafficCounter, DENY_COUNTERS_MAX, RULE_COUNTERS_MAX},
    ct::{CtKey, CtValue, CONNTRACK_MAX},
    endpoint::{EndpointInfo, ENDPOINTS_MAX, ENDPOINT_ADDRS_MAX},
    events::EVENTS_BYTES,
    peer::{PeerClass, CLASS_WORLD, PEERS_MAX, PEERS_V4_PREFIX_MAX, PEERS_V6_PREFIX_MAX},
    policy::{PolicyKey, PolicyValue, POLICY_MAX, PREFIX_FULL},
    verdict::STATS_LEN,
};

use crate::{events::TokenBucket, parse::Flow};

#[map]
static ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(ENDPOINTS_MAX, 0);

#[map]
static ENDPOINT_ADDRS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(ENDPOINT_ADDRS_MAX, 0);

#[map]
static PEERS_V4: LpmTrie<[u8; 4], PeerClass> = LpmTrie::with_max_entries(PEERS_MAX, 0);

#[map]
static PEERS_V6: LpmTrie<[u8; 16], PeerClass> = LpmTrie::with_max_entries(PEERS_MAX, 0);

#[map]
static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::with_max_entries(POLICY_MAX, 0);

#[map]
pub(crate) static CONNTRACK: LruHashMap<CtKey, CtValue> =
    LruHashMap::with_max_entries(CONNTRACK_MAX, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
pub(crate) static RULE_COUNTERS: PerCpuArray<TrafficCounter> =
    PerCpuArray::with_max_entries(RULE_COUNTERS_MAX, 0);

#[map]
pub(crate) static DENY_COUNTERS: PerCpuArray<TrafficCounter> =
    PerCpuArray::with_max_entries(DENY_COUNTERS_MAX, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Kernel-only: each CPU's token bucket limiting `EVENTS` (`events.rs`).
#[map]
static EVENT_TOKENS: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);

/// One setting from `CONFIG[0]`, read in place (no copy of the whole entry on the
/// tight BPF stack); `Config::DEFAULT`'s when the entry cannot be read.
#[inline(always)]
pub(crate) fn config<T>(field: impl Fn(&Config) -> T) -> T {
    match CONFIG.get(0) {
        Some(config) => field(config),
        None => field(&Config::DEFAULT),
    }
}

/// This CPU's event token bucket.
#[inline(always)]
pub(crate) fn event_tokens() -> Option<*mut TokenBucket> {
    EVENT_TOKENS.get_ptr_mut(0)
}

/// The local pod behind this interface, if the agent registered it.
#[inline(always)]
pub(crate) fn endpoint(ifindex: u32) -> Option<EndpointInfo> {
    // SAFETY: the value is copied out before any other map operation.
    unsafe { ENDPOINTS.get(&ifindex).copied() }
}

/// The host-side interface of the local pod that owns `addr` (IPv6 or IPv4-mapped).
#[inline(always)]
pub(crate) fn endpoint_ifindex(addr: &[u8; 16]) -> Option<u32> {
    // SAFETY: the value is copied out before any other map operation.
    unsafe { ENDPOINT_ADDRS.get(addr).copied() }
}

/// The class and flags of the longest peer prefix holding `addr` (from `PEERS_V6`
/// for IPv6, else `PEERS_V4` with the mapped address's last four bytes);
/// `CLASS_WORLD` without flags when no prefix does.
#[inline(always)]
pub(crate) fn peer(ipv6: bool, addr: &[u8; 16]) -> PeerClass {
    let found = if ipv6 {
        PEERS_V6.get(Key::new(PEERS_V6_PREFIX_MAX, *addr)).copied()
    } else {
        let v4 = [addr[12], addr[13], addr[14], addr[15]];
        PEERS_V4.get(Key::new(PEERS_V4_PREFIX_MAX, v4)).copied()
    };
    found.unwrap_or(PeerClass {
        class_id: CLASS_WORLD,
        flags: 0,
    })
}

/// The `POLICY` entry allowing `flow` for `endpoint_id` towards a peer of `class_id`
/// in `direction`: the longest match among exact port, port blocks, all ports of the
/// protocol and all protocols.
#[inline(always)]
pub(crate) fn policy(
    endpoint_id: u32,
    class_id: u32,
    direction: u8,
    flow: &Flow,
) -> Option<PolicyValue> {
    let key = PolicyKey {
        endpoint_id,
        class_id,
        direction,
        protocol: flow.protocol,
        port_be: flow.dport_be,
    };
    POLICY.get(Key::new(PREFIX_FULL, key)).copied()
}

/// Adds one to a verdict counter.
#[inline(always)]
pub(crate) fn count(stat: u32) {
    if let Some(counter) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}
