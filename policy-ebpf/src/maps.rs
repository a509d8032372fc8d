//! The maps this object defines (layouts and names from `policy-common`) and the
//! typed lookups the classifiers use.
//!
//! The banked maps hold `BANKS` times their per-bank capacity; every lookup of
//! them takes the bank the packet read from `ACTIVE` once (`active_bank`), and
//! builds its key in place with that bank.
//!
//! Stack budget (512 bytes for a classifier and the chain of subprograms it calls,
//! each frame rounded up to 16 bytes): the packet's `Facts`, its parsed `Flow`,
//! conntrack lookup keys and the allow lookup's keys live in per-CPU maps
//! (`FACTS`, `FLOW`, `CT_KEY`, `POLICY_KEYS`, and `ADDRESS_KEY` for
//! `source_ifindex`); `pod_ingress` and `pod_egress` use 272 bytes each; on top of
//! them `service::source_tracked` 168 (plus `judge::judge` 64) is the deepest
//! chain, 504 bytes, so **8 bytes are left**: new per-packet work goes into a
//! subprogram called outside that chain (as `events::emit`, `check_destination`,
//! `stays_on_node`, `ct::related` 128, `arp::check` 104, `frag::remember_first` 64
//! and `frag::resolve_non_first` 44 are) or pays for itself. Measured with
//! `llvm-objdump -d` (deepest `r10 - N` per function); the verifier's "combined
//! stack size" agrees. Those figures predate the direct-access parse
//! (`parse::plain`), the inlined event check and the padded stores
//! (`write_padded`), after which the deepest `r10 - N` grew from 256 to 272
//! (`pod_ingress`), 256 to 288 (`pod_egress`) and 64 to 72 (`judge::judge`);
//! by the verifier's count (frames rounded up), `pod_ingress`'s chain through
//! `service::source_tracked` and `judge::judge` is now exactly 512 bytes,
//! **none left**: 8 bytes more in `judge` still fit its rounding, 16 make it
//! "combined stack size of 3 calls is 528. Too large". Nothing more goes on that
//! chain's frames: the own-address checks (`endpoint_and_own`, `check_source`,
//! `check_destination`) are subprograms called outside it, and the single-port
//! lookup (`policy`) borrows its key in place in `POLICY_KEYS`.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    macros::map,
    maps::{
        lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf,
    },
};
use policy_common::{
    bank::{bank_of, BANKS},
    config::{Config, CONFIG_FLAG_TABLES_WRITING},
    counters::{TrafficCounter, DROP_COUNTERS_MAX, RULE_COUNTERS_MAX},
    ct::{CtKey, CtValue, CONNTRACK_MAX, CT_COUNTERS_MAX},
    endpoint::{
        AddressKey, EndpointInfo, EndpointKey, EndpointValue, OwnAddresses, ENDPOINTS_MAX,
        ENDPOINT_ADDRS_MAX,
    },
    events::EVENTS_BYTES,
    frag::{FragKey, FragValue, FRAGMENTS_MAX},
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

use crate::{clock::Reading, events::TokenBucket, facts::Facts, parse::Flow};

/// Which bank the classifiers read (`policy_common::bank`).
#[map]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static ENDPOINTS: HashMap<EndpointKey, EndpointValue> =
    HashMap::with_max_entries(BANKS * ENDPOINTS_MAX, 0);

#[map]
static ENDPOINT_ADDRS: HashMap<AddressKey, u32> =
    HashMap::with_max_entries(BANKS * ENDPOINT_ADDRS_MAX, 0);

#[map]
static PEERS_V4: LpmTrie<PeerKeyV4, PeerClass> = LpmTrie::with_max_entries(BANKS * PEERS_MAX, 0);

#[map]
static PEERS_V6: LpmTrie<PeerKeyV6, PeerClass> = LpmTrie::with_max_entries(BANKS * PEERS_MAX, 0);

/// The host prefixes of `PEERS_V4`'s family, which the trie does not hold
/// (`policy_common::peer`). Allocated entry by entry (`BPF_F_NO_PREALLOC`), as
/// the trie is: preallocated, its capacity would cost memory up front.
#[map]
static PEER_HOSTS_V4: HashMap<PeerKeyV4, PeerClass> =
    HashMap::with_max_entries(BANKS * PEERS_MAX, BPF_F_NO_PREALLOC);

/// The host prefixes of `PEERS_V6`'s family, as `PEER_HOSTS_V4`.
#[map]
static PEER_HOSTS_V6: HashMap<PeerKeyV6, PeerClass> =
    HashMap::with_max_entries(BANKS * PEERS_MAX, BPF_F_NO_PREALLOC);

/// Allocated entry by entry (`BPF_F_NO_PREALLOC`): a preallocated hash of this
/// size would charge the agent's memory for every possible rule set up front.
#[map]
static RULE_SETS: HashMap<RuleSetKey, u32> =
    HashMap::with_max_entries(BANKS * RULE_SETS_MAX, BPF_F_NO_PREALLOC);

/// Every allow entry shorter than a single port (`policy_common::policy`).
#[map]
static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::with_max_entries(BANKS * POLICY_MAX, 0);

/// The single-port allow entries, which `POLICY` does not hold, looked up first.
/// Allocated entry by entry (`BPF_F_NO_PREALLOC`), as the trie is.
#[map]
static POLICY_PORTS: HashMap<PolicyKey, PolicyValue> =
    HashMap::with_max_entries(BANKS * POLICY_MAX, BPF_F_NO_PREALLOC);

#[map]
pub(crate) static CONNTRACK: HashMap<CtKey, CtValue> = HashMap::with_max_entries(CONNTRACK_MAX, 0);

/// Entries the classifiers added to `CONNTRACK` per interface (`policy_common::ct`).
#[map]
static CT_TRACKED: HashMap<u32, u64> = HashMap::with_max_entries(CT_COUNTERS_MAX, 0);

/// Entries the agent removed from `CONNTRACK` per interface; read-only here.
#[map]
static CT_RECLAIMED: HashMap<u32, u64> = HashMap::with_max_entries(CT_COUNTERS_MAX, 0);

/// Kernel-only: datagrams whose first fragment passed (`frag.rs`).
#[map]
pub(crate) static FRAGMENTS: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(FRAGMENTS_MAX, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
pub(crate) static RULE_COUNTERS: PerCpuArray<TrafficCounter> =
    PerCpuArray::with_max_entries(RULE_COUNTERS_MAX, 0);

#[map]
pub(crate) static DROP_COUNTERS: PerCpuArray<TrafficCounter> =
    PerCpuArray::with_max_entries(DROP_COUNTERS_MAX, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Kernel-only: each CPU's token bucket limiting `EVENTS` (`events.rs`).
#[map]
static EVENT_TOKENS: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);

/// Kernel-only: each interface's token bucket on each CPU, checked before
/// `EVENT_TOKENS` (`events.rs`). Key: the ifindex of the pod's host-side veth.
/// LRU: an evicted interface starts again with a full bucket.
#[map]
static ENDPOINT_EVENT_TOKENS: LruPerCpuHashMap<u32, TokenBucket> =
    LruPerCpuHashMap::with_max_entries(2 * ENDPOINTS_MAX, 0);

/// Kernel-only: each CPU's `Facts` of the packet it is deciding, kept here rather
/// than on the 512-byte BPF stack.
#[map]
static FACTS: PerCpuArray<Facts> = PerCpuArray::with_max_entries(1, 0);

/// Kernel-only: each CPU's copy of the `Flow` of the packet it is deciding, which
/// `decide` reads from here once the packet is parsed (`maps::flow`).
#[map]
static FLOW: PerCpuArray<Flow> = PerCpuArray::with_max_entries(1, 0);

/// Copies `flow` into this CPU's `FLOW` slot and returns the copy. Read from a map,
/// its fields are values the verifier does not know, so the states of the many
/// parse paths (families, protocols, extension headers) become one, and every
/// decision after parsing is walked once instead of once per path; the stack copy
/// is dead from here on. `None` cannot happen (entry 0 of a one-entry array).
#[inline(always)]
pub(crate) fn flow(flow: &Flow) -> Option<&'static Flow> {
    let slot = FLOW.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, used by this program run only (TC classifiers run
    // with bottom halves disabled); `Flow` is plain data, copied whole.
    unsafe {
        core::ptr::copy_nonoverlapping(flow, slot, 1);
        Some(&*slot)
    }
}

/// This CPU's `FLOW` slot, to build a flow in place (`sockets.rs`).
#[inline(always)]
pub(crate) fn flow_slot() -> Option<*mut Flow> {
    FLOW.get_ptr_mut(0)
}

/// Kernel-only: each CPU's scratch `CtKey` for conntrack lookups (`ct::lookup`,
/// `ct::find`), built here rather than on the 512-byte BPF stack.
#[map]
static CT_KEY: PerCpuArray<CtKey> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch conntrack key; one lookup at a time uses it.
#[inline(always)]
pub(crate) fn ct_key() -> Option<*mut CtKey> {
    CT_KEY.get_ptr_mut(0)
}

/// Kernel-only: each CPU's last reading of the coarse clock (`clock.rs`).
#[map]
static CLOCK: PerCpuArray<Reading> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's clock reading (`clock::now`); one program run at a time uses it.
#[inline(always)]
pub(crate) fn clock() -> Option<*mut Reading> {
    CLOCK.get_ptr_mut(0)
}

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

/// `CONFIG[0]` in place, or `Config::DEFAULT` when the entry cannot be read: for a
/// path that reads several settings with one lookup (`fast.rs`).
#[inline(always)]
pub(crate) fn config_ref() -> &'static Config {
    CONFIG.get(0).unwrap_or(&Config::DEFAULT)
}

/// This CPU's event token bucket.
#[inline(always)]
pub(crate) fn event_tokens() -> Option<*mut TokenBucket> {
    EVENT_TOKENS.get_ptr_mut(0)
}

/// This CPU's event token bucket of interface `ifindex`, made (full) on first use.
#[inline(always)]
pub(crate) fn endpoint_event_tokens(ifindex: u32) -> Option<*mut TokenBucket> {
    if let Some(bucket) = ENDPOINT_EVENT_TOKENS.get_ptr_mut(ifindex) {
        return Some(bucket);
    }
    // `last_ns == 0`: the first take fills it (`events::take_token`). Another CPU
    // racing to make it is fine: BPF_NOEXIST keeps the first.
    let fresh = TokenBucket {
        nano_tokens: 0,
        last_ns: 0,
    };
    let _ = ENDPOINT_EVENT_TOKENS.insert(ifindex, fresh, u64::from(BPF_NOEXIST));
    ENDPOINT_EVENT_TOKENS.get_ptr_mut(ifindex)
}

/// The generation this packet is decided with: `ACTIVE[0]` read once, at the start
/// of `classify` (0 if the entry cannot be read, which an array never fails). Its
/// bank is `bank_of` it.
#[inline(always)]
pub(crate) fn active_generation() -> u32 {
    ACTIVE.get(0).copied().unwrap_or(0)
}

/// Whether `ACTIVE` has moved on from `generation`, the value this packet read
/// at its start: read again after a decision's last table lookup, so that a
/// decision whose lookups may span an in-place write and the move that ends it
/// is not trusted (`judge`). Without the move every lookup fell within one
/// write, which the agent orders hole-free; the agent writes whole tables in
/// place only where loads are not reordered with older loads (x86), so no
/// barrier is needed before this read.
#[inline(always)]
pub(crate) fn generation_moved(generation: u32) -> bool {
    active_generation() != generation
}

/// Whether this packet's decision may have read entries of two states: `ACTIVE`
/// moved since its start (`generation_moved`), or the agent is writing whole
/// tables into the active bank (`CONFIG_FLAG_TABLES_WRITING`). Read after the
/// decision's last lookup.
#[inline(always)]
pub(crate) fn decided_mid_write(generation: u32) -> bool {
    config(|config| config.flags & CONFIG_FLAG_TABLES_WRITING != 0) || generation_moved(generation)
}

/// The bank of a generation.
#[inline(always)]
pub(crate) fn bank(generation: u32) -> u32 {
    bank_of(generation)
}

/// `CT_TRACKED[ifindex]`, created at 0 when the interface has none yet; `None`
/// when the map is full.
#[inline(always)]
pub(crate) fn ct_tracked(ifindex: u32) -> Option<*mut u64> {
    if let Some(count) = CT_TRACKED.get_ptr_mut(&ifindex) {
        return Some(count);
    }
    // Another CPU may create it first: either way it exists afterwards.
    let _ = CT_TRACKED.insert(&ifindex, &0, u64::from(BPF_NOEXIST));
    CT_TRACKED.get_ptr_mut(&ifindex)
}

/// `CT_RECLAIMED[ifindex]`, 0 when the agent reclaimed nothing of it yet.
#[inline(always)]
pub(crate) fn ct_reclaimed(ifindex: u32) -> u64 {
    // SAFETY: the value is copied out before any other map operation.
    unsafe { CT_RECLAIMED.get(&ifindex).copied().unwrap_or(0) }
}

/// The local pod behind this interface in `bank`, if the agent registered it.
/// Only its 8-byte `EndpointInfo` is copied: every caller's frame is tight.
#[inline(always)]
pub(crate) fn endpoint(bank: u32, ifindex: u32) -> Option<EndpointInfo> {
    // SAFETY: the value is copied out before any other map operation.
    unsafe {
        ENDPOINTS
            .get(&EndpointKey { ifindex, bank })
            .map(|value| value.info)
    }
}

/// `endpoint`, with the pod's own addresses of the same entry copied into
/// `own` (this CPU's `Facts`, not the stack), for `decide`'s address checks.
/// Left as it was when there is no entry. A BPF subprogram: inlined into
/// `decide`, LLVM spilled an undefined register on one of its paths, which the
/// verifier refuses ("R3 !read_ok").
#[inline(never)]
pub(crate) fn endpoint_and_own(
    bank: u32,
    ifindex: u32,
    own: &mut OwnAddresses,
) -> Option<EndpointInfo> {
    // SAFETY: the value is copied out before any other map operation; `own`
    // and the map value are 4-byte aligned `OwnAddresses`, copied a word at a
    // time with volatile loads and stores (a plain struct copy here let LLVM
    // spill an undefined register elsewhere in `decide`, which the verifier
    // refuses to read).
    unsafe {
        let value = ENDPOINTS.get(&EndpointKey { ifindex, bank })?;
        let from = core::ptr::addr_of!(value.own) as *const u32;
        let to = own as *mut OwnAddresses as *mut u32;
        for i in 0..core::mem::size_of::<OwnAddresses>() / 4 {
            to.add(i).write_volatile(from.add(i).read_volatile());
        }
        Some(value.info)
    }
}

/// Kernel-only: each CPU's scratch `ENDPOINT_ADDRS` key for `source_ifindex`.
#[map]
static ADDRESS_KEY: PerCpuArray<AddressKey> = PerCpuArray::with_max_entries(1, 0);

/// `endpoint_ifindex` with its key built in a per-CPU scratch map rather than on
/// the stack: for `service::source_tracked`, whose frame is on the deepest call
/// chain (module comment). It costs the verifier more instructions to walk, so
/// the other callers keep the key on the stack.
#[inline(always)]
pub(crate) fn source_ifindex(bank: u32, addr: &[u8; 16]) -> Option<u32> {
    let key = ADDRESS_KEY.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, written whole before the lookup; the value
    // found is copied out before any other map operation.
    unsafe {
        (*key).addr = *addr;
        (*key).bank = bank;
        ENDPOINT_ADDRS.get(&*key).copied()
    }
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

/// A peer trie's lookup key, 4-byte aligned so that its key data (bank and
/// address), which is also the key of the family's host hash, can be borrowed
/// in place: one key on the stack serves both lookups (`peer`).
#[repr(C, align(4))]
struct PeerLookup<K>(Key<K>);

// What `PeerLookup::data` relies on: the data, 4 bytes into the key (after the
// u32 prefix length of the packed `Key`), needs no more than 4-byte alignment.
const _: () = assert!(
    core::mem::align_of::<PeerKeyV4>() <= 4
        && core::mem::align_of::<PeerKeyV6>() <= 4
        && core::mem::offset_of!(Key<PeerKeyV6>, data) == 4
        && core::mem::offset_of!(Key<PeerKeyV4>, data) == 4
);

impl<K> PeerLookup<K> {
    /// The key data, in place.
    #[inline(always)]
    fn data(&self) -> &K {
        // SAFETY: `Key` is `repr(C, packed)`, its data 4 bytes in; `self` is
        // 4-byte aligned, so the data is too, which is all `K` needs (asserted
        // above), and it is initialised as part of `self`.
        unsafe { &*core::ptr::addr_of!(self.0.data) }
    }
}

/// The class and flags of the longest peer prefix of `bank` holding `addr` (for
/// IPv6 from `PEER_HOSTS_V6`, else `PEERS_V6`; for IPv4 the same in the `_V4`
/// maps with the mapped address's last four bytes); `CLASS_WORLD` without flags
/// when no prefix does. A host prefix is the longest there is and the agent
/// writes each only to the hash (`policy_common::peer`), so an address the hash
/// holds is matched there and the trie, which holds the shorter prefixes, is
/// looked up only for an address it does not: a pod peer costs one exact lookup,
/// however many peers the bank holds.
#[inline(always)]
pub(crate) fn peer(bank: u32, ipv6: bool, addr: &[u8; 16]) -> PeerClass {
    // SAFETY (both `get`s of a hash): the value is copied out before any other
    // map operation.
    let found = if ipv6 {
        let key = PeerLookup(Key::new(
            PEERS_V6_PREFIX_MAX,
            PeerKeyV6 { bank, addr: *addr },
        ));
        match unsafe { PEER_HOSTS_V6.get(key.data()) } {
            Some(host) => Some(*host),
            None => PEERS_V6.get(&key.0).copied(),
        }
    } else {
        let addr = [addr[12], addr[13], addr[14], addr[15]];
        let key = PeerLookup(Key::new(PEERS_V4_PREFIX_MAX, PeerKeyV4 { bank, addr }));
        match unsafe { PEER_HOSTS_V4.get(key.data()) } {
            Some(host) => Some(*host),
            None => PEERS_V4.get(&key.0).copied(),
        }
    };
    found.unwrap_or(PeerClass {
        class_id: CLASS_WORLD,
        flags: 0,
    })
}

/// The keys of one two-step allow lookup (`policy`), kernel-only. 4-byte
/// aligned, so that the rule key's data (4 bytes into the packed `Key`, itself
/// 16 bytes in), which is also `POLICY_PORTS`' key, can be borrowed in place.
#[repr(C, align(4))]
pub(crate) struct PolicyKeys {
    set: RuleSetKey,
    rule: Key<PolicyKey>,
}

/// Kernel-only: each CPU's scratch keys for `policy`, built here rather than on
/// the 512-byte BPF stack: `judge`, which looks policy up, is on the deepest call
/// chain (module comment). One lookup at a time uses them (TC classifiers run with
/// bottom halves disabled), and each value found is copied out at once.
#[map]
static POLICY_KEYS: PerCpuArray<PolicyKeys> = PerCpuArray::with_max_entries(1, 0);

/// The rule allowing `protocol` to destination port `port_be` for `endpoint_id`
/// towards a peer of `class_id` in `direction`, in `bank`: the rule set of
/// (endpoint, class, direction) from `RULE_SETS`, else the endpoint's any-class set
/// (neither: nothing is allowed), then that set's longest match in `POLICY` among
/// exact port, port blocks, all ports of the protocol and all protocols: the
/// exact port in `POLICY_PORTS`, which holds the full-length entries, and only
/// when it has none the trie, which holds the rest (`policy_common::policy`).
#[inline(always)]
pub(crate) fn policy(
    bank: u32,
    endpoint_id: u32,
    class_id: u32,
    direction: u8,
    protocol: u8,
    port_be: u16,
) -> Option<PolicyValue> {
    let keys = POLICY_KEYS.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot (`POLICY_KEYS`); both keys are written whole
    // before each lookup, and each value found is copied out at once.
    unsafe {
        (*keys).set.bank = bank;
        (*keys).set.endpoint_id = endpoint_id;
        (*keys).set.class_id = class_id;
        write_padded(core::ptr::addr_of_mut!((*keys).set.direction), direction);
        let rule_set = match RULE_SETS.get(&(*keys).set).copied() {
            Some(rule_set) => rule_set,
            None => {
                (*keys).set.class_id = RULE_SET_ANY_CLASS;
                RULE_SETS.get(&(*keys).set).copied()?
            }
        };
        (*keys).rule = Key::new(
            PREFIX_FULL,
            PolicyKey {
                bank,
                rule_set,
                pad: 0,
                protocol,
                port_be,
            },
        );
        // The key data in place: `PolicyKeys` is 4-byte aligned and the data
        // sits at a multiple of 4 in it (asserted below), all `PolicyKey` needs.
        let exact = &*core::ptr::addr_of!((*keys).rule.data);
        if let Some(allowed) = POLICY_PORTS.get(exact) {
            return Some(*allowed);
        }
        POLICY.get(&(*keys).rule).copied()
    }
}

// What borrowing the rule key's data in place (`policy`) relies on.
const _: () = assert!(
    core::mem::align_of::<PolicyKey>() <= 4
        && core::mem::offset_of!(Key<PolicyKey>, data) == 4
        && core::mem::offset_of!(PolicyKeys, rule) % 4 == 0
        && core::mem::align_of::<PolicyKeys>() >= 4
);

/// Writes `value` into a byte field followed by three bytes of explicit padding,
/// zeroing them, with one 4-byte store: a struct literal's `pad: [0; 3]` becomes a
/// call to a byte-by-byte `memset` in BPF.
///
/// # Safety
/// `field` must be valid for writes of 4 bytes, 4-byte aligned, and followed by
/// the 3 padding bytes of its struct (the layouts below are asserted).
#[inline(always)]
pub(crate) unsafe fn write_padded(field: *mut u8, value: u8) {
    // SAFETY: the caller's promise. `from_ne_bytes` puts `value` first in memory
    // whatever the byte order.
    unsafe { (field as *mut u32).write(u32::from_ne_bytes([value, 0, 0, 0])) }
}

// What `write_padded` relies on at its callers: each field is 4-byte aligned in a
// 4-byte aligned struct and its `[u8; 3]` padding follows it.
const _: () = assert!(
    core::mem::offset_of!(RuleSetKey, direction) % 4 == 0
        && core::mem::offset_of!(RuleSetKey, pad)
            == core::mem::offset_of!(RuleSetKey, direction) + 1
        && core::mem::align_of::<RuleSetKey>() >= 4
        && core::mem::offset_of!(CtValue, state) % 4 == 0
        && core::mem::offset_of!(CtValue, pad) == core::mem::offset_of!(CtValue, state) + 1
        && core::mem::align_of::<CtValue>() >= 4
);

/// Adds one to a verdict counter.
#[inline(always)]
pub(crate) fn count(stat: u32) {
    if let Some(counter) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}
