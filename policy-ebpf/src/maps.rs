//! The maps this object defines (layouts and names from `policy-common`) and the
//! typed lookups the classifiers use.
//!
//! The banked maps hold `BANKS` times their per-bank capacity; every lookup of
//! them takes the bank the packet read from `ACTIVE` once (`active_bank`), and
//! builds its key in place with that bank.
//!
//! Stack budget (512 bytes for a classifier and the subprogram it calls): the
//! packet's `Facts` live in the per-CPU `FACTS` map; `pod_ingress` uses 336 bytes,
//! `pod_egress` 288, `ct::related` 144 on top (`llvm-objdump -d`, deepest
//! `r10 - N`).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use policy_common::{
    bank::{bank_of, BANKS},
    config::Config,
    counters::{TrafficCounter, DENY_COUNTERS_MAX, RULE_COUNTERS_MAX},
    ct::{CtKey, CtValue, CONNTRACK_MAX},
    endpoint::{AddressKey, EndpointInfo, EndpointKey, ENDPOINTS_MAX, ENDPOINT_ADDRS_MAX},
    events::EVENTS_BYTES,
    peer::{
        PeerClass, PeerKeyV4, PeerKeyV6, CLASS_WORLD, PEERS_MAX, PEERS_V4_PREFIX_MAX,
        PEERS_V6_PREFIX_MAX,
    },
    policy::{
        PolicyKey, PolicyValue, RuleSetKey, POLICY_MAX, PREFIX_FULL, RULE_SETS_MAX,
        RULE_SET_ANY_CLASS,
    },
    verdict::STATS_LEN,
};

use crate::{events::TokenBucket, facts::Facts, parse::Flow};

/// Which bank the classifiers read (`policy_common::bank`).
#[map]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> =
    HashMap::with_max_entries(BANKS * ENDPOINTS_MAX, 0);

#[map]
static ENDPOINT_ADDRS: HashMap<AddressKey, u32> =
    HashMap::with_max_entries(BANKS * ENDPOINT_ADDRS_MAX, 0);

#[map]
static PEERS_V4: LpmTrie<PeerKeyV4, PeerClass> = LpmTrie::with_max_entries(BANKS * PEERS_MAX, 0);

#[map]
static PEERS_V6: LpmTrie<PeerKeyV6, PeerClass> = LpmTrie::with_max_entries(BANKS * PEERS_MAX, 0);

/// Allocated entry by entry (`BPF_F_NO_PREALLOC`): a preallocated hash of this
/// size would charge the agent's memory for every possible rule set up front.
#[map]
static RULE_SETS: HashMap<RuleSetKey, u32> =
    HashMap::with_max_entries(BANKS * RULE_SETS_MAX, BPF_F_NO_PREALLOC);

#[map]
static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::with_max_entries(BANKS * POLICY_MAX, 0);

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

/// Kernel-only: each CPU's `Facts` of the packet it is deciding, kept here rather
/// than on the 512-byte BPF stack.
#[map]
static FACTS: PerCpuArray<Facts> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's `Facts` slot. TC classifiers run with bottom halves disabled, so one
/// packet at a time uses it; `classify` overwrites it whole for every packet.
#[inline(always)]
pub(crate) fn facts() -> Option<*mut Facts> {
    FACTS.get_ptr_mut(0)
}

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

/// The bank this packet is decided with: `ACTIVE[0]` read once, at the start of
/// `classify` (bank 0 if the entry cannot be read, which an array never fails).
#[inline(always)]
pub(crate) fn active_bank() -> u32 {
    bank_of(ACTIVE.get(0).copied().unwrap_or(0))
}

/// The local pod behind this interface in `bank`, if the agent registered it.
#[inline(always)]
pub(crate) fn endpoint(bank: u32, ifindex: u32) -> Option<EndpointInfo> {
    // SAFETY: the value is copied out before any other map operation.
    unsafe { ENDPOINTS.get(&EndpointKey { ifindex, bank }).copied() }
}

/// The host-side interface of the local pod that owns `addr` (IPv6 or IPv4-mapped)
/// in `bank`.
#[inline(always)]
pub(crate) fn endpoint_ifindex(bank: u32, addr: &[u8; 16]) -> Option<u32> {
    // The address is read through `black_box`: copied by value, its 16 bytes let
    // LLVM split the packet's `Flow` into registers and spill them, which cost each
    // classifier over 100 of its 512 stack bytes. (A key built in a per-CPU
    // scratch map instead saves 16 more stack bytes but makes the verifier walk
    // half again as many instructions.)
    let key = AddressKey {
        addr: *core::hint::black_box(addr),
        bank,
    };
    // SAFETY: the value is copied out before any other map operation.
    unsafe { ENDPOINT_ADDRS.get(&key).copied() }
}

/// The class and flags of the longest peer prefix of `bank` holding `addr` (from
/// `PEERS_V6` for IPv6, else `PEERS_V4` with the mapped address's last four
/// bytes); `CLASS_WORLD` without flags when no prefix does.
#[inline(always)]
pub(crate) fn peer(bank: u32, ipv6: bool, addr: &[u8; 16]) -> PeerClass {
    let found = if ipv6 {
        let key = PeerKeyV6 { bank, addr: *addr };
        PEERS_V6.get(Key::new(PEERS_V6_PREFIX_MAX, key)).copied()
    } else {
        let addr = [addr[12], addr[13], addr[14], addr[15]];
        let key = PeerKeyV4 { bank, addr };
        PEERS_V4.get(Key::new(PEERS_V4_PREFIX_MAX, key)).copied()
    };
    found.unwrap_or(PeerClass {
        class_id: CLASS_WORLD,
        flags: 0,
    })
}

/// The rule allowing `flow` for `endpoint_id` towards a peer of `class_id` in
/// `direction`, in `bank`: the rule set of (endpoint, class, direction) from
/// `RULE_SETS`, else the endpoint's any-class set (neither: nothing is allowed),
/// then that set's longest match in `POLICY` among exact port, port blocks, all
/// ports of the protocol and all protocols.
#[inline(always)]
pub(crate) fn policy(
    bank: u32,
    endpoint_id: u32,
    class_id: u32,
    direction: u8,
    flow: &Flow,
) -> Option<PolicyValue> {
    let mut set = RuleSetKey {
        bank,
        endpoint_id,
        class_id,
        direction,
        pad: [0; 3],
    };
    // SAFETY (both): the value is copied out before any other map operation.
    let rule_set = match unsafe { RULE_SETS.get(&set).copied() } {
        Some(rule_set) => rule_set,
        None => {
            set.class_id = RULE_SET_ANY_CLASS;
            unsafe { RULE_SETS.get(&set).copied() }?
        }
    };
    let key = PolicyKey {
        bank,
        rule_set,
        pad: 0,
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
