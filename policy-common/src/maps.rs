//! Every map the kernel and the agent share, defined once: its name in the object,
//! its kind, and its key and value types, tied together in one `MapDef` constant.
//!
//! The agent opens a map only through its definition (so it cannot read a map
//! with another map's types) and checks, when it loads the object or adopts a
//! pinned datapath, that each map the kernel made has the kind and the key and
//! value sizes its definition gives (`MapLayout`). The classifiers declare their
//! statics with the same types (`policy-ebpf/src/maps.rs`); a static's name is its
//! map's name, which that check ties to `MapDef::name`.
//!
//! The key of an LPM trie here is its data, without the 4-byte prefix length the
//! kernel puts in front of it.

use core::marker::PhantomData;

use crate::{
    config::Config,
    counters::TrafficCounter,
    ct::{CtKey, CtValue},
    endpoint::{AddressKey, EndpointKey, EndpointValue},
    frag::{FragKey, FragValue},
    peer::{PeerClass, PeerKeyV4, PeerKeyV6},
    policy::{PolicyKey, PolicyValue, RuleSetKey},
};

/// What kind of map the kernel makes for a definition (`BPF_MAP_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_ARRAY`.
    Array,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    PerCpuArray,
    /// `BPF_MAP_TYPE_HASH`.
    Hash,
    /// `BPF_MAP_TYPE_LRU_HASH`.
    LruHash,
    /// `BPF_MAP_TYPE_LPM_TRIE`.
    LpmTrie,
    /// `BPF_MAP_TYPE_RINGBUF`: no key, no value.
    RingBuf,
}

impl MapKind {
    /// The kernel's `BPF_MAP_TYPE_*` number.
    pub const fn map_type(self) -> u32 {
        match self {
            MapKind::Hash => 1,
            MapKind::Array => 2,
            MapKind::PerCpuArray => 6,
            MapKind::LruHash => 9,
            MapKind::LpmTrie => 11,
            MapKind::RingBuf => 27,
        }
    }
}

/// One shared map: its name, kind, key type `K` and value type `V`.
pub struct MapDef<K, V> {
    /// The map's name in the object (the classifiers' static of that name).
    pub name: &'static str,
    /// What the kernel makes.
    pub kind: MapKind,
    types: PhantomData<fn() -> (K, V)>,
}

// By hand: a derive would ask K and V to be Clone and Copy too.
impl<K, V> Clone for MapDef<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for MapDef<K, V> {}

impl<K, V> MapDef<K, V> {
    const fn new(name: &'static str, kind: MapKind) -> Self {
        Self {
            name,
            kind,
            types: PhantomData,
        }
    }

    /// The layout the kernel's map must have.
    pub const fn layout(&self) -> MapLayout {
        let (key_size, value_size) = match self.kind {
            MapKind::RingBuf => (0, 0),
            MapKind::LpmTrie => (size_of::<K>() as u32 + 4, size_of::<V>() as u32),
            _ => (size_of::<K>() as u32, size_of::<V>() as u32),
        };
        MapLayout {
            name: self.name,
            map_type: self.kind.map_type(),
            key_size,
            value_size,
        }
    }
}

/// What a map definition says the kernel's map looks like: compared with what
/// the kernel reports for the map of that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    /// The map's name.
    pub name: &'static str,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key size in bytes (an LPM trie's includes its 4-byte prefix length).
    pub key_size: u32,
    /// Value size in bytes (per CPU for a per-CPU map).
    pub value_size: u32,
}

/// The bank selector (`bank`): one entry, the generation.
pub const ACTIVE: MapDef<u32, u32> = MapDef::new("ACTIVE", MapKind::Array);
/// Banked: host-side interface index -> the endpoint behind it and its own
/// addresses.
pub const ENDPOINTS: MapDef<EndpointKey, EndpointValue> = MapDef::new("ENDPOINTS", MapKind::Hash);
/// Banked: a local endpoint's address -> its interface index.
pub const ENDPOINT_ADDRS: MapDef<AddressKey, u32> = MapDef::new("ENDPOINT_ADDRS", MapKind::Hash);
/// Banked: IPv4 peer prefixes -> their class.
pub const PEERS_V4: MapDef<PeerKeyV4, PeerClass> = MapDef::new("PEERS_V4", MapKind::LpmTrie);
/// Banked: IPv6 peer prefixes -> their class.
pub const PEERS_V6: MapDef<PeerKeyV6, PeerClass> = MapDef::new("PEERS_V6", MapKind::LpmTrie);
/// Banked: IPv4 host prefixes (/32) -> their class, looked up before `PEERS_V4`,
/// which holds only the shorter prefixes (`peer`).
pub const PEER_HOSTS_V4: MapDef<PeerKeyV4, PeerClass> = MapDef::new("PEER_HOSTS_V4", MapKind::Hash);
/// Banked: IPv6 host prefixes (/128) -> their class, looked up before `PEERS_V6`.
pub const PEER_HOSTS_V6: MapDef<PeerKeyV6, PeerClass> = MapDef::new("PEER_HOSTS_V6", MapKind::Hash);
/// Banked: (endpoint, direction, peer class) -> rule set id.
pub const RULE_SETS: MapDef<RuleSetKey, u32> = MapDef::new("RULE_SETS", MapKind::Hash);
/// Banked: (rule set, protocol, port prefix) -> the allowing rule, for every
/// prefix shorter than `policy::PREFIX_FULL`.
pub const POLICY: MapDef<PolicyKey, PolicyValue> = MapDef::new("POLICY", MapKind::LpmTrie);
/// Banked: (rule set, protocol, single port) -> the allowing rule: `POLICY`'s
/// full-length entries, looked up before the trie (`policy`).
pub const POLICY_PORTS: MapDef<PolicyKey, PolicyValue> = MapDef::new("POLICY_PORTS", MapKind::Hash);
/// Tracked flows.
pub const CONNTRACK: MapDef<CtKey, CtValue> = MapDef::new("CONNTRACK", MapKind::Hash);
/// Tracked flows the classifiers added, per interface (a count only raised).
pub const CT_TRACKED: MapDef<u32, u64> = MapDef::new("CT_TRACKED", MapKind::Hash);
/// Tracked flows the agent removed, per interface.
pub const CT_RECLAIMED: MapDef<u32, u64> = MapDef::new("CT_RECLAIMED", MapKind::Hash);
/// First fragments remembered for their trailing fragments (kernel only).
pub const FRAGMENTS: MapDef<FragKey, FragValue> = MapDef::new("FRAGMENTS", MapKind::LruHash);
/// Per-CPU verdict counters, indexed by `verdict::STAT_*`.
pub const STATS: MapDef<u32, u64> = MapDef::new("STATS", MapKind::PerCpuArray);
/// The datapath's settings: one entry.
pub const CONFIG: MapDef<u32, Config> = MapDef::new("CONFIG", MapKind::Array);
/// Per-CPU traffic of each counted rule, by slot.
pub const RULE_COUNTERS: MapDef<u32, TrafficCounter> =
    MapDef::new("RULE_COUNTERS", MapKind::PerCpuArray);
/// Per-CPU traffic denied, by (endpoint, direction, audit) slot.
pub const DROP_COUNTERS: MapDef<u32, TrafficCounter> =
    MapDef::new("DROP_COUNTERS", MapKind::PerCpuArray);
/// Verdict events for flow logs.
pub const EVENTS: MapDef<(), ()> = MapDef::new("EVENTS", MapKind::RingBuf);

/// The layouts of every map the agent opens or pins, for the load-time check.
pub const SHARED: [MapLayout; 18] = [
    ACTIVE.layout(),
    ENDPOINTS.layout(),
    ENDPOINT_ADDRS.layout(),
    PEERS_V4.layout(),
    PEERS_V6.layout(),
    PEER_HOSTS_V4.layout(),
    PEER_HOSTS_V6.layout(),
    RULE_SETS.layout(),
    POLICY.layout(),
    POLICY_PORTS.layout(),
    CONNTRACK.layout(),
    CT_TRACKED.layout(),
    CT_RECLAIMED.layout(),
    STATS.layout(),
    CONFIG.layout(),
    RULE_COUNTERS.layout(),
    DROP_COUNTERS.layout(),
    EVENTS.layout(),
];
