//! The maps this object defines (layouts and names from `policy-common`) and the
//! typed lookups the classifiers use.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use policy_common::{
    ct::{CtKey, CtValue, CONNTRACK_MAX},
    endpoint::{EndpointInfo, ENDPOINTS_MAX},
    peer::{PeerClass, PEERS_MAX},
    policy::{PolicyKey, PolicyValue, POLICY_MAX},
    verdict::STATS_LEN,
};

#[map]
static ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(ENDPOINTS_MAX, 0);

#[map]
static PEERS_V4: HashMap<u32, PeerClass> = HashMap::with_max_entries(PEERS_MAX, 0);

#[map]
static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::with_max_entries(POLICY_MAX, 0);

#[map]
pub(crate) static CONNTRACK: LruHashMap<CtKey, CtValue> =
    LruHashMap::with_max_entries(CONNTRACK_MAX, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

/// The local pod behind this interface, if the agent registered it.
#[inline(always)]
pub(crate) fn endpoint(ifindex: u32) -> Option<EndpointInfo> {
    // SAFETY: the value is copied out before any other map operation.
    unsafe { ENDPOINTS.get(&ifindex).copied() }
}

/// The class of a remote IPv4 address, if some local rule names it.
#[inline(always)]
pub(crate) fn peer_class_v4(addr_be: u32) -> Option<u32> {
    // SAFETY: the value is copied out before any other map operation.
    unsafe { PEERS_V4.get(&addr_be).map(|c| c.class_id) }
}

/// The longest `POLICY` entry matching `key` within `prefix_len` bits.
#[inline(always)]
pub(crate) fn policy(prefix_len: u32, key: PolicyKey) -> Option<PolicyValue> {
    POLICY.get(Key::new(prefix_len, key)).copied()
}

/// Adds one to a verdict counter.
#[inline(always)]
pub(crate) fn count(stat: u32) {
    if let Some(counter) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}
