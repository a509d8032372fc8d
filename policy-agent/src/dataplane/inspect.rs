//! A running datapath's tables read from their pins the way the classifiers read
//! them, for `explain --node`: for one side of a connection (a pod's interface,
//! a direction, the remote address, the protocol and port), the checks
//! `decide` makes of a well-formed first packet before policy (its own
//! address, tunnels, a misdelivered destination), each lookup `judge` makes
//! after them, in their order, the verdict they come to, and the flows conntrack
//! tracks for that side. Parsing, fragments and conntrack's own decisions are
//! not judged. Nothing here writes a map (every descriptor is read only).
//!
//! The lookups are the kernel's own (a hash `get`, an LPM trie `get` with a
//! full-length key, so the kernel picks the longest prefix), all of one
//! generation of `ACTIVE`; the prefixes shown beside them and the tracked flows
//! are read after, for people only.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, MapError};
use ipnet::IpNet;
use policy_common::{
    bank::bank_of,
    config::{Config, CONFIG_FLAG_TABLES_WRITING},
    counters::NO_COUNTER,
    ct::{CtKey, CtValue},
    endpoint::{
        AddressKey, EndpointInfo, EndpointKey, EndpointValue, OwnAddresses, ALLOW_TUNNELS,
        AUDIT_EGRESS, AUDIT_INGRESS, ISOLATED_EGRESS, ISOLATED_INGRESS, OWN_V4, OWN_V6,
    },
    maps::{self, MapDef},
    peer::{
        PeerClass, PeerKeyV4, PeerKeyV6, CLASS_WORLD, PEERS_V4_PREFIX_MAX, PEERS_V6_PREFIX_MAX,
        PEER_FLAG_NODE, PEER_FLAG_SERVICE, PEER_PREFIX_BANK,
    },
    policy::{
        PolicyKey, PolicyValue, RuleSetKey, POLICY_ALLOW, POLICY_DEFAULT, POLICY_DENY,
        POLICY_NETWORK_DROP, POLICY_NETWORK_WOULD_DROP, POLICY_WOULD_DENY, PREFIX_ALL_PORTS,
        PREFIX_ALL_PROTOCOLS, PREFIX_FULL, RULE_SET_ANY_CLASS,
    },
};

use super::{
    ct::{tracked_flow, TrackedFlow},
    events::EventVerdict,
    keys::address_key,
    maps::{map_error, map_of},
    DataplaneError, InterfaceIndex,
};
use crate::policy::tables::Direction;

/// The maps `PinnedTables` reads: what a datapath pins for it (`Datapath::pin_tables`).
pub const INSPECTED_MAPS: [&str; 12] = [
    maps::ACTIVE.name,
    maps::CONFIG.name,
    maps::ENDPOINTS.name,
    maps::ENDPOINT_ADDRS.name,
    maps::PEERS_V4.name,
    maps::PEER_HOSTS_V4.name,
    maps::PEERS_V6.name,
    maps::PEER_HOSTS_V6.name,
    maps::RULE_SETS.name,
    maps::POLICY.name,
    maps::POLICY_PORTS.name,
    maps::CONNTRACK.name,
];

/// How many times `PinnedTables::read` reads again when `ACTIVE` moved while
/// it read (a flip or a write in place between its lookups), or the agent was
/// writing whole tables in place.
const READ_ATTEMPTS: usize = 5;

/// How long `PinnedTables::read` waits before reading again.
const READ_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// How many `CONNTRACK` entries a reading of tracked flows walks at most: the
/// table's capacity twice (a walk restarts from the top when the entry it
/// stood on was removed meanwhile).
const CONNTRACK_WALK_MAX: usize = 2 * policy_common::ct::CONNTRACK_MAX as usize;

/// Read handles on the maps of `INSPECTED_MAPS`, opened from their pins.
pub struct PinnedTables {
    dir: PathBuf,
    active: Array<MapData, u32>,
    config: Array<MapData, Config>,
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    addresses: HashMap<MapData, AddressKey, u32>,
    peers_v4: LpmTrie<MapData, PeerKeyV4, PeerClass>,
    peer_hosts_v4: HashMap<MapData, PeerKeyV4, PeerClass>,
    peers_v6: LpmTrie<MapData, PeerKeyV6, PeerClass>,
    peer_hosts_v6: HashMap<MapData, PeerKeyV6, PeerClass>,
    rule_sets: HashMap<MapData, RuleSetKey, u32>,
    policy: LpmTrie<MapData, PolicyKey, PolicyValue>,
    policy_ports: HashMap<MapData, PolicyKey, PolicyValue>,
    conntrack: HashMap<MapData, CtKey, CtValue>,
}

/// One side of a connection as the classifiers see its first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideLookup {
    /// The pod's host-side interface.
    pub ifindex: InterfaceIndex,
    /// Ingress into the pod (the remote is the source) or egress from it (the
    /// remote is the destination).
    pub direction: Direction,
    /// The pod's own address of the connection.
    pub local: IpAddr,
    /// The other end's address.
    pub remote: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port.
    pub port: u16,
}

/// The peer lookup: the class of the remote address, and the prefix it was found
/// under (`None`: no prefix holds it, the class is `CLASS_WORLD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerReading {
    /// Class and flags.
    pub class: PeerClass,
    /// The longest prefix holding the address, if any.
    pub prefix: Option<IpNet>,
}

/// The `RULE_SETS` lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSetReading {
    /// The rule set id.
    pub id: u32,
    /// Found under `RULE_SET_ANY_CLASS`, the endpoint's set for every class
    /// without one of its own.
    pub any_class: bool,
}

/// The `POLICY` entry found for the protocol and port, and what it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyReading {
    /// Verdict and rule slot.
    pub value: PolicyValue,
    /// The protocol the entry covers (`None`: every protocol).
    pub protocol: Option<u8>,
    /// The ports it covers, first and last (`None`: every port).
    pub ports: Option<(u16, u16)>,
}

/// What `decide` makes of a well-formed first packet: a check before policy
/// (`policy-ebpf/src/main.rs`, steps 4 to 6), or what `judge` decides
/// (`policy-ebpf/src/judge.rs`, steps 8 to 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelVerdict {
    /// No `ENDPOINTS` entry for the interface: every packet is dropped.
    UnknownEndpoint,
    /// Egress from an address that is not the pod's own: dropped (step 4).
    SpoofedSource,
    /// Egress of encapsulated traffic (UDP to a tunnel port) from a pod without
    /// `ALLOW_TUNNELS`: dropped whatever policy says (step 5).
    Tunnel,
    /// Ingress addressed to another local pod: dropped (step 6).
    Misdelivered,
    /// The pod is not isolated in this direction: passes.
    Unisolated,
    /// Ingress from an address of the node: passes.
    Node,
    /// Egress to a Service address: decided again after translation, at the
    /// backend.
    Service,
    /// A rule allows it, counting in this slot.
    Rule(u32),
    /// No tier decides where a ClusterNetworkPolicy applies: passes by default.
    Default,
    /// A ClusterNetworkPolicy `Deny` rule drops it (its slot, if it has one).
    Denied(Option<u32>),
    /// An audit-mode ClusterNetworkPolicy `Deny` rule would drop it.
    WouldDeny(Option<u32>),
    /// The entry says the endpoint's NetworkPolicies allow none of it.
    NetworkDrop,
    /// As `NetworkDrop`, for audit-mode NetworkPolicies: passes as a would-drop.
    NetworkWouldDrop,
    /// No entry matches and the direction is enforced: dropped.
    NoMatch,
    /// No entry matches and the direction is audited: passes as a would-drop.
    NoMatchAudited,
    /// An entry with a verdict this build does not know: dropped.
    UnknownValue(u32),
}

impl KernelVerdict {
    /// Passed, dropped, or passed as a would-drop.
    pub fn outcome(self) -> EventVerdict {
        match self {
            KernelVerdict::Unisolated
            | KernelVerdict::Node
            | KernelVerdict::Service
            | KernelVerdict::Rule(_)
            | KernelVerdict::Default => EventVerdict::Allowed,
            KernelVerdict::WouldDeny(_)
            | KernelVerdict::NetworkWouldDrop
            | KernelVerdict::NoMatchAudited => EventVerdict::WouldDrop,
            KernelVerdict::UnknownEndpoint
            | KernelVerdict::SpoofedSource
            | KernelVerdict::Tunnel
            | KernelVerdict::Misdelivered
            | KernelVerdict::Denied(_)
            | KernelVerdict::NetworkDrop
            | KernelVerdict::NoMatch
            | KernelVerdict::UnknownValue(_) => EventVerdict::Dropped,
        }
    }

    /// The `RULE_COUNTERS` slot of the rule that decided, if one did.
    pub fn rule_slot(self) -> Option<u32> {
        match self {
            KernelVerdict::Rule(slot) => (slot != NO_COUNTER).then_some(slot),
            KernelVerdict::Denied(slot) | KernelVerdict::WouldDeny(slot) => slot,
            _ => None,
        }
    }
}

/// Everything read for one side, in `judge`'s order; a lookup `judge` does not
/// make for this side is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideReading {
    /// The `ACTIVE` generation read (its bank is `bank_of` it).
    pub generation: u32,
    /// The agent was writing whole tables into the active bank: a denial read
    /// now is not trusted by the classifiers (dropped as a state change).
    pub tables_writing: bool,
    /// The interface's `ENDPOINTS` entry.
    pub endpoint: Option<EndpointInfo>,
    /// The interface `ENDPOINT_ADDRS` names for the pod's own address of the
    /// connection (`None`: no local pod holds it).
    pub local_owner: Option<InterfaceIndex>,
    /// The remote's class.
    pub peer: Option<PeerReading>,
    /// The endpoint's rule set for the class and direction.
    pub rule_set: Option<RuleSetReading>,
    /// The `POLICY` entry for the protocol and port.
    pub entry: Option<PolicyReading>,
    /// The verdict.
    pub verdict: KernelVerdict,
    /// Flows conntrack tracks for this side (any source port), whatever their
    /// age: a flow's later packets pass on its entry while it is current.
    pub tracked: Vec<TrackedFlow>,
}

/// `judge`'s verdict from what its lookups found (`peer` and `found` are only
/// looked at where `judge` looks them up), for a first packet not yet past
/// Service translation.
pub fn verdict(
    endpoint: Option<EndpointInfo>,
    direction: Direction,
    peer: PeerClass,
    found: Option<PolicyValue>,
) -> KernelVerdict {
    let Some(endpoint) = endpoint else {
        return KernelVerdict::UnknownEndpoint;
    };
    let (isolated, audited) = match direction {
        Direction::Ingress => (ISOLATED_INGRESS, AUDIT_INGRESS),
        Direction::Egress => (ISOLATED_EGRESS, AUDIT_EGRESS),
    };
    if endpoint.flags & isolated == 0 {
        return KernelVerdict::Unisolated;
    }
    if direction == Direction::Ingress && peer.flags & PEER_FLAG_NODE != 0 {
        return KernelVerdict::Node;
    }
    if direction == Direction::Egress && peer.flags & PEER_FLAG_SERVICE != 0 {
        return KernelVerdict::Service;
    }
    let slot = |value: PolicyValue| (value.rule_slot != NO_COUNTER).then_some(value.rule_slot);
    match found {
        Some(value) => match value.verdict {
            POLICY_ALLOW => KernelVerdict::Rule(value.rule_slot),
            POLICY_DEFAULT => KernelVerdict::Default,
            POLICY_WOULD_DENY => KernelVerdict::WouldDeny(slot(value)),
            POLICY_NETWORK_WOULD_DROP => KernelVerdict::NetworkWouldDrop,
            POLICY_DENY => KernelVerdict::Denied(slot(value)),
            POLICY_NETWORK_DROP => KernelVerdict::NetworkDrop,
            other => KernelVerdict::UnknownValue(other),
        },
        None if endpoint.flags & audited != 0 => KernelVerdict::NoMatchAudited,
        None => KernelVerdict::NoMatch,
    }
}

/// Opens the map `def` defines from its pin in `dir`, read only (`BPF_F_RDONLY`:
/// this descriptor cannot write), as `M`; aya checks its kind and its key and
/// value sizes.
fn open<M, K, V>(dir: &Path, def: MapDef<K, V>) -> Result<M, DataplaneError>
where
    M: TryFrom<Map, Error = MapError>,
{
    let path = dir.join(def.name);
    let fd =
        super::sys::open_pinned_map_read_only(&path).map_err(|source| DataplaneError::Pinned {
            path: path.clone(),
            what: "opening read only".into(),
            os_error: source.raw_os_error(),
            source: Some(Box::new(source)),
        })?;
    let data = MapData::from_fd(fd).map_err(map_error(def.name, "open"))?;
    M::try_from(map_of(data, def.name)?).map_err(map_error(def.name, "open"))
}

/// A lookup that found nothing is `None`; any other failure is an error.
fn found<V>(result: Result<V, MapError>, map: &'static str) -> Result<Option<V>, DataplaneError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(error) => Err(map_error(map, "look up")(error)),
    }
}

/// Whether the first `bits` bits of `a` and `b` agree.
fn same_prefix(a: &[u8], b: &[u8], bits: u32) -> bool {
    let bits = bits as usize;
    let (whole, rest) = (bits / 8, bits % 8);
    if a.len() < whole + usize::from(rest > 0) || b.len() < a.len() {
        return false;
    }
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// Where a lookup found its entry: in the hash of full-length keys, in the
/// trie (its prefix is read afterwards, for people), or nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FoundIn {
    Hash,
    Trie,
    Nowhere,
}

/// Whether `own` (an `ENDPOINTS` value's own addresses) claims `addr`, as the
/// classifiers' `claims` reads it.
fn claims(own: &OwnAddresses, addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => own.flags & OWN_V4 != 0 && own.v4 == v4.octets(),
        IpAddr::V6(v6) => own.flags & OWN_V6 != 0 && own.v6 == v6.octets(),
    }
}

/// The checks `decide` makes of a well-formed first packet before policy, in
/// its order: at egress, the source must be the pod's own address (claimed by
/// its `ENDPOINTS` entry, or `ENDPOINT_ADDRS` naming its interface: step 4),
/// and UDP to a tunnel port is dropped unless the endpoint allows tunnels (step
/// 5); at ingress, a destination another local pod owns is dropped (step 6).
/// `local_owner` is `ENDPOINT_ADDRS`' interface for the local address,
/// `tunnel_ports_be` `Config::tunnel_ports_be`.
pub fn before_policy(
    value: &EndpointValue,
    side: &SideLookup,
    local_owner: Option<InterfaceIndex>,
    tunnel_ports_be: &[u16],
) -> Option<KernelVerdict> {
    let own = claims(&value.own, side.local);
    match side.direction {
        Direction::Egress => {
            if !own && local_owner != Some(side.ifindex) {
                return Some(KernelVerdict::SpoofedSource);
            }
            let tunnel = side.protocol == IPPROTO_UDP
                && side.port != 0
                && tunnel_ports_be.contains(&side.port.to_be());
            (tunnel && value.info.flags & ALLOW_TUNNELS == 0).then_some(KernelVerdict::Tunnel)
        }
        Direction::Ingress => (!own && local_owner.is_some_and(|owner| owner != side.ifindex))
            .then_some(KernelVerdict::Misdelivered),
    }
}

/// The class of an address no prefix holds, without flags.
const WORLD: PeerClass = PeerClass {
    class_id: CLASS_WORLD,
    flags: 0,
};

/// UDP's protocol number.
const IPPROTO_UDP: u8 = 17;

impl PinnedTables {
    /// Opens the maps pinned in `dir` (`<dir>/<MAP>`).
    pub fn open(dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            dir: dir.to_path_buf(),
            active: open(dir, maps::ACTIVE)?,
            config: open(dir, maps::CONFIG)?,
            endpoints: open(dir, maps::ENDPOINTS)?,
            addresses: open(dir, maps::ENDPOINT_ADDRS)?,
            peers_v4: open(dir, maps::PEERS_V4)?,
            peer_hosts_v4: open(dir, maps::PEER_HOSTS_V4)?,
            peers_v6: open(dir, maps::PEERS_V6)?,
            peer_hosts_v6: open(dir, maps::PEER_HOSTS_V6)?,
            rule_sets: open(dir, maps::RULE_SETS)?,
            policy: open(dir, maps::POLICY)?,
            policy_ports: open(dir, maps::POLICY_PORTS)?,
            conntrack: open(dir, maps::CONNTRACK)?,
        })
    }

    /// Where the maps are pinned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn generation(&self) -> Result<u32, DataplaneError> {
        self.active
            .get(&0, 0)
            .map_err(map_error(maps::ACTIVE.name, "read"))
    }

    fn config(&self) -> Result<Config, DataplaneError> {
        self.config
            .get(&0, 0)
            .map_err(map_error(maps::CONFIG.name, "read"))
    }

    /// The interface `ENDPOINT_ADDRS` names for `addr` in the bank `ACTIVE`
    /// names now: the local pod holding that address.
    pub fn address_owner(&self, addr: IpAddr) -> Result<Option<InterfaceIndex>, DataplaneError> {
        self.owner(bank_of(self.generation()?), addr)
    }

    fn owner(&self, bank: u32, addr: IpAddr) -> Result<Option<InterfaceIndex>, DataplaneError> {
        let key = AddressKey {
            addr: address_key(addr),
            bank,
        };
        found(self.addresses.get(&key, 0), maps::ENDPOINT_ADDRS.name)
    }

    /// Reads `sides` as the classifiers would decide a first packet on each
    /// now: every lookup of one generation of `ACTIVE` (read again when it
    /// moved while reading, or while the agent writes whole tables in place,
    /// a few times; still writing, the reading says so; still moving, an
    /// error). Then, for people, the prefixes matched and the tracked flows.
    pub fn read(&self, sides: &[SideLookup]) -> Result<Vec<SideReading>, DataplaneError> {
        for attempt in 1..=READ_ATTEMPTS {
            let generation = self.generation()?;
            let config = self.config()?;
            let writing = config.flags & CONFIG_FLAG_TABLES_WRITING != 0;
            if writing && attempt < READ_ATTEMPTS {
                std::thread::sleep(READ_PAUSE);
                continue;
            }
            let mut readings = Vec::new();
            for side in sides {
                readings.push(self.read_at(generation, &config, side)?);
            }
            if self.generation()? != generation {
                std::thread::sleep(READ_PAUSE);
                continue;
            }
            return readings
                .into_iter()
                .zip(sides)
                .map(|((mut reading, found), side)| {
                    self.describe(&mut reading, found, side)?;
                    reading.tracked = self.tracked(side)?;
                    Ok(reading)
                })
                .collect();
        }
        Err(DataplaneError::Map {
            map: maps::ACTIVE.name,
            what: format!(
                "moved on during each of {READ_ATTEMPTS} readings (tables being written): try again"
            ),
            source: None,
        })
    }

    /// One side's lookups in `generation`'s bank, and where the peer and the
    /// `POLICY` entry were found.
    fn read_at(
        &self,
        generation: u32,
        config: &Config,
        side: &SideLookup,
    ) -> Result<(SideReading, (FoundIn, FoundIn)), DataplaneError> {
        let bank = bank_of(generation);
        let value = found(
            self.endpoints.get(
                &EndpointKey {
                    ifindex: side.ifindex,
                    bank,
                },
                0,
            ),
            maps::ENDPOINTS.name,
        )?;
        let mut reading = SideReading {
            generation,
            tables_writing: config.flags & CONFIG_FLAG_TABLES_WRITING != 0,
            endpoint: value.map(|value| value.info),
            local_owner: self.owner(bank, side.local)?,
            peer: None,
            rule_set: None,
            entry: None,
            verdict: KernelVerdict::UnknownEndpoint,
            tracked: Vec::new(),
        };
        let mut found_in = (FoundIn::Nowhere, FoundIn::Nowhere);
        let Some(value) = value else {
            return Ok((reading, found_in));
        };
        if let Some(early) =
            before_policy(&value, side, reading.local_owner, &config.tunnel_ports_be)
        {
            reading.verdict = early;
            return Ok((reading, found_in));
        }
        let info = value.info;
        // `judge` looks the peer up only for an isolated direction (and,
        // unisolated, for flags that do not change the verdict).
        let isolated =
            verdict(Some(info), side.direction, WORLD, None) != KernelVerdict::Unisolated;
        if isolated {
            let (class, peer_in) = self.peer(bank, side.remote)?;
            found_in.0 = peer_in;
            reading.peer = Some(PeerReading {
                class,
                prefix: None,
            });
            let decided_before = verdict(Some(info), side.direction, class, None);
            if matches!(
                decided_before,
                KernelVerdict::NoMatch | KernelVerdict::NoMatchAudited
            ) {
                reading.rule_set = self.rule_set(bank, &info, class, side.direction)?;
                if let Some(set) = reading.rule_set {
                    let entry = self.entry(bank, set.id, side.protocol, side.port)?;
                    if let Some((value, entry_in)) = entry {
                        found_in.1 = entry_in;
                        reading.entry = Some(PolicyReading {
                            value,
                            protocol: Some(side.protocol),
                            ports: Some((side.port, side.port)),
                        });
                    }
                }
            }
        }
        reading.verdict = verdict(
            Some(info),
            side.direction,
            reading.peer.map_or(WORLD, |peer| peer.class),
            reading.entry.map(|entry| entry.value),
        );
        Ok((reading, found_in))
    }

    /// Fills in, for people, the prefix the peer was found under and what the
    /// `POLICY` entry covers (read after the lookups: display only).
    fn describe(
        &self,
        reading: &mut SideReading,
        (peer_in, entry_in): (FoundIn, FoundIn),
        side: &SideLookup,
    ) -> Result<(), DataplaneError> {
        let bank = bank_of(reading.generation);
        if let Some(peer) = &mut reading.peer {
            let len = match (peer_in, side.remote) {
                (FoundIn::Nowhere, _) => None,
                (FoundIn::Hash, IpAddr::V4(_)) => Some(32),
                (FoundIn::Hash, IpAddr::V6(_)) => Some(128),
                (FoundIn::Trie, IpAddr::V4(v4)) => {
                    let data = PeerKeyV4 {
                        bank,
                        addr: v4.octets(),
                    };
                    longest(&self.peers_v4, &data, maps::PEERS_V4.name)?
                        .and_then(|len| len.checked_sub(PEER_PREFIX_BANK))
                }
                (FoundIn::Trie, IpAddr::V6(v6)) => {
                    let data = PeerKeyV6 {
                        bank,
                        addr: v6.octets(),
                    };
                    longest(&self.peers_v6, &data, maps::PEERS_V6.name)?
                        .and_then(|len| len.checked_sub(PEER_PREFIX_BANK))
                }
            };
            peer.prefix = len
                .and_then(|len| u8::try_from(len).ok())
                .and_then(|len| IpNet::new(side.remote, len).ok())
                .map(|net| net.trunc());
        }
        if let (Some(entry), Some(set), FoundIn::Trie) =
            (&mut reading.entry, reading.rule_set, entry_in)
        {
            let data = PolicyKey {
                bank,
                rule_set: set.id,
                pad: 0,
                protocol: side.protocol,
                port_be: side.port.to_be(),
            };
            // The trie holds prefixes from `PREFIX_ALL_PROTOCOLS` to just short
            // of `PREFIX_FULL`.
            let len = longest(&self.policy, &data, maps::POLICY.name)?
                .unwrap_or(PREFIX_ALL_PROTOCOLS)
                .clamp(PREFIX_ALL_PROTOCOLS, PREFIX_FULL);
            entry.protocol = (len >= PREFIX_ALL_PORTS).then_some(side.protocol);
            entry.ports =
                (len > PREFIX_ALL_PORTS).then(|| port_block(side.port, len - PREFIX_ALL_PORTS));
        }
        Ok(())
    }

    /// `maps::peer` of the classifiers: the host hash, else the trie; the class
    /// (`CLASS_WORLD` where neither holds the address) and where it was found.
    fn peer(&self, bank: u32, remote: IpAddr) -> Result<(PeerClass, FoundIn), DataplaneError> {
        let (class, found_in) = match remote {
            IpAddr::V4(v4) => {
                let data = PeerKeyV4 {
                    bank,
                    addr: v4.octets(),
                };
                let maps = (&self.peer_hosts_v4, &self.peers_v4);
                let names = (maps::PEER_HOSTS_V4.name, maps::PEERS_V4.name);
                host_or_prefix(maps, names, data, PEERS_V4_PREFIX_MAX)?
            }
            IpAddr::V6(v6) => {
                let data = PeerKeyV6 {
                    bank,
                    addr: v6.octets(),
                };
                let maps = (&self.peer_hosts_v6, &self.peers_v6);
                let names = (maps::PEER_HOSTS_V6.name, maps::PEERS_V6.name);
                host_or_prefix(maps, names, data, PEERS_V6_PREFIX_MAX)?
            }
        };
        Ok((class.unwrap_or(WORLD), found_in))
    }

    /// `maps::policy`'s first half: the set of (endpoint, class, direction),
    /// else the endpoint's any-class set.
    fn rule_set(
        &self,
        bank: u32,
        endpoint: &EndpointInfo,
        class: PeerClass,
        direction: Direction,
    ) -> Result<Option<RuleSetReading>, DataplaneError> {
        for (class_id, any_class) in [(class.class_id, false), (RULE_SET_ANY_CLASS, true)] {
            let key = RuleSetKey {
                bank,
                endpoint_id: endpoint.endpoint_id,
                class_id,
                direction: direction.code(),
                pad: [0; 3],
            };
            if let Some(id) = found(self.rule_sets.get(&key, 0), maps::RULE_SETS.name)? {
                return Ok(Some(RuleSetReading { id, any_class }));
            }
        }
        Ok(None)
    }

    /// `maps::policy`'s second half: the single port in `POLICY_PORTS`, else
    /// the longest match in the `POLICY` trie.
    fn entry(
        &self,
        bank: u32,
        rule_set: u32,
        protocol: u8,
        port: u16,
    ) -> Result<Option<(PolicyValue, FoundIn)>, DataplaneError> {
        let data = PolicyKey {
            bank,
            rule_set,
            pad: 0,
            protocol,
            port_be: port.to_be(),
        };
        if let Some(value) = found(self.policy_ports.get(&data, 0), maps::POLICY_PORTS.name)? {
            return Ok(Some((value, FoundIn::Hash)));
        }
        let key = Key::new(PREFIX_FULL, data);
        Ok(found(self.policy.get(&key, 0), maps::POLICY.name)?.map(|v| (v, FoundIn::Trie)))
    }

    /// The tracked flows of `side`: opened in its direction at its interface
    /// between its two addresses, to its port, with its protocol; one per
    /// source port, however the walk met it.
    fn tracked(&self, side: &SideLookup) -> Result<Vec<TrackedFlow>, DataplaneError> {
        let (source, destination) = match side.direction {
            Direction::Ingress => (side.remote, side.local),
            Direction::Egress => (side.local, side.remote),
        };
        let (saddr, daddr) = (address_key(source), address_key(destination));
        let mut flows = std::collections::BTreeMap::new();
        for entry in self.conntrack.iter().take(CONNTRACK_WALK_MAX) {
            let (key, value) = entry.map_err(map_error(maps::CONNTRACK.name, "read"))?;
            if key.ifindex == side.ifindex
                && key.direction == side.direction.code()
                && key.saddr == saddr
                && key.daddr == daddr
                && key.protocol == side.protocol
                && u16::from_be(key.dport_be) == side.port
            {
                flows.insert(key.sport_be, tracked_flow(key, value));
            }
        }
        Ok(flows.into_values().collect())
    }
}

/// A family's peer lookup: the class in the host hash (`maps.0`), else the
/// longest prefix of the trie (`maps.1`, looked up with a key `full` bits
/// long) holding `data`, and where it was found.
fn host_or_prefix<K: aya::Pod>(
    maps: (
        &HashMap<MapData, K, PeerClass>,
        &LpmTrie<MapData, K, PeerClass>,
    ),
    names: (&'static str, &'static str),
    data: K,
    full: u32,
) -> Result<(Option<PeerClass>, FoundIn), DataplaneError> {
    if let Some(class) = found(maps.0.get(&data, 0), names.0)? {
        return Ok((Some(class), FoundIn::Hash));
    }
    Ok(
        match found(maps.1.get(&Key::new(full, data), 0), names.1)? {
            Some(class) => (Some(class), FoundIn::Trie),
            None => (None, FoundIn::Nowhere),
        },
    )
}

/// The first and last port of the block of `port` whose `fixed` high bits
/// (1 to 16) are fixed.
fn port_block(port: u16, fixed: u32) -> (u16, u16) {
    let free = 16 - fixed.min(16);
    let low = u16::MAX
        .checked_shr(16 - free)
        .filter(|_| free > 0)
        .unwrap_or(0);
    let first = port & !low;
    (first, first | low)
}

/// The prefix length (the trie's, bank bits included) of the longest key of
/// `trie` that holds `data`: what the kernel's lookup matched.
fn longest<K: aya::Pod, V: aya::Pod>(
    trie: &LpmTrie<MapData, K, V>,
    data: &K,
    map: &'static str,
) -> Result<Option<u32>, DataplaneError> {
    let wanted = pod_bytes(data);
    let mut best = None;
    for key in trie.keys() {
        let key = key.map_err(map_error(map, "read"))?;
        let (len, found) = (key.prefix_len(), key.data());
        if best.is_none_or(|b| len > b) && same_prefix(pod_bytes(&found), wanted, len) {
            best = Some(len);
        }
    }
    Ok(best)
}

/// The bytes of a plain map key, as the kernel compares them.
fn pod_bytes<K: aya::Pod>(value: &K) -> &[u8] {
    // SAFETY: `aya::Pod` types are plain `repr(C)` data without padding bytes
    // left uninitialised (policy_common's keys spell their padding out), so
    // every byte of `value` is initialised and may be read for its size.
    unsafe {
        std::slice::from_raw_parts((value as *const K).cast::<u8>(), std::mem::size_of::<K>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(flags: u32) -> Option<EndpointInfo> {
        Some(EndpointInfo {
            endpoint_id: 3,
            flags,
        })
    }

    fn class(flags: u32) -> PeerClass {
        PeerClass { class_id: 7, flags }
    }

    fn value(verdict: u32, rule_slot: u32) -> Option<PolicyValue> {
        Some(PolicyValue { rule_slot, verdict })
    }

    #[test]
    fn the_verdict_follows_judges_steps_in_order() {
        use Direction::{Egress, Ingress};
        use KernelVerdict as V;
        assert_eq!(verdict(None, Ingress, class(0), None), V::UnknownEndpoint);
        // Step 8: only the direction's own isolation counts.
        let ingress_only = endpoint(ISOLATED_INGRESS);
        assert_eq!(
            verdict(ingress_only, Egress, class(0), value(POLICY_DENY, 1)),
            V::Unisolated
        );
        // Step 9 before 11: the node passes whatever the entry says; egress
        // to a node address does not.
        let both = endpoint(ISOLATED_INGRESS | ISOLATED_EGRESS);
        let node = class(PEER_FLAG_NODE);
        assert_eq!(verdict(both, Ingress, node, value(POLICY_DENY, 1)), V::Node);
        assert_eq!(verdict(both, Egress, node, None), V::NoMatch);
        // Step 10: a Service address is deferred at egress only.
        let service = class(PEER_FLAG_SERVICE);
        assert_eq!(verdict(both, Egress, service, None), V::Service);
        assert_eq!(verdict(both, Ingress, service, None), V::NoMatch);
        // Step 11: the entry's verdict.
        assert_eq!(
            verdict(both, Ingress, class(0), value(POLICY_ALLOW, 4)),
            V::Rule(4)
        );
        assert_eq!(
            verdict(both, Ingress, class(0), value(POLICY_DEFAULT, NO_COUNTER)),
            V::Default
        );
        assert_eq!(
            verdict(both, Ingress, class(0), value(POLICY_DENY, 5)),
            V::Denied(Some(5))
        );
        assert_eq!(
            verdict(both, Ingress, class(0), value(POLICY_DENY, NO_COUNTER)),
            V::Denied(None)
        );
        assert_eq!(
            verdict(both, Ingress, class(0), value(POLICY_WOULD_DENY, 6)),
            V::WouldDeny(Some(6))
        );
        assert_eq!(
            verdict(
                both,
                Ingress,
                class(0),
                value(POLICY_NETWORK_DROP, NO_COUNTER)
            ),
            V::NetworkDrop
        );
        assert_eq!(
            verdict(
                both,
                Ingress,
                class(0),
                value(POLICY_NETWORK_WOULD_DROP, NO_COUNTER)
            ),
            V::NetworkWouldDrop
        );
        // An entry decides whatever the audit flag says; an unknown verdict drops.
        let audited = endpoint(ISOLATED_INGRESS | AUDIT_INGRESS);
        assert_eq!(
            verdict(audited, Ingress, class(0), value(POLICY_DENY, 5)),
            V::Denied(Some(5))
        );
        assert_eq!(
            verdict(audited, Ingress, class(0), value(99, 0)),
            V::UnknownValue(99)
        );
        // Step 12: a miss.
        assert_eq!(verdict(audited, Ingress, class(0), None), V::NoMatchAudited);
        assert_eq!(verdict(both, Ingress, class(0), None), V::NoMatch);
    }

    #[test]
    fn before_policy_checks_the_source_tunnels_and_the_destination_in_decides_order() {
        use KernelVerdict as V;
        let ip = |text: &str| {
            text.parse::<IpAddr>()
                .unwrap_or_else(|e| panic!("{text}: {e}"))
        };
        let value = EndpointValue {
            info: EndpointInfo {
                endpoint_id: 3,
                flags: ISOLATED_EGRESS,
            },
            own: OwnAddresses {
                flags: OWN_V4,
                v4: [10, 0, 0, 5],
                v6: [0; 16],
            },
        };
        let side = SideLookup {
            ifindex: 7,
            direction: Direction::Egress,
            local: ip("10.0.0.5"),
            remote: ip("10.0.0.9"),
            protocol: 6,
            port: 80,
        };
        assert_eq!(before_policy(&value, &side, None, &[]), None, "claimed");
        // Step 4: an address not claimed must be the interface's in ENDPOINT_ADDRS.
        let other = SideLookup {
            local: ip("10.0.0.6"),
            ..side
        };
        assert_eq!(
            before_policy(&value, &other, None, &[]),
            Some(V::SpoofedSource)
        );
        assert_eq!(
            before_policy(&value, &other, Some(8), &[]),
            Some(V::SpoofedSource)
        );
        assert_eq!(before_policy(&value, &other, Some(7), &[]), None);
        let v6 = SideLookup {
            local: ip("fd00::5"),
            remote: ip("fd00::9"),
            ..side
        };
        assert_eq!(
            before_policy(&value, &v6, None, &[]),
            Some(V::SpoofedSource)
        );
        // Step 5: UDP to a tunnel port, unless the endpoint allows tunnels.
        let ports = [4789u16.to_be()];
        let vxlan = SideLookup {
            protocol: 17,
            port: 4789,
            ..side
        };
        assert_eq!(before_policy(&value, &vxlan, None, &ports), Some(V::Tunnel));
        let tcp = SideLookup {
            protocol: 6,
            ..vxlan
        };
        assert_eq!(before_policy(&value, &tcp, None, &ports), None);
        let tunnels = EndpointValue {
            info: EndpointInfo {
                flags: ISOLATED_EGRESS | ALLOW_TUNNELS,
                ..value.info
            },
            ..value
        };
        assert_eq!(before_policy(&tunnels, &vxlan, None, &ports), None);
        // Step 6: at ingress, a destination another local pod owns.
        let ingress = SideLookup {
            direction: Direction::Ingress,
            local: ip("10.0.0.6"),
            ..vxlan
        };
        assert_eq!(
            before_policy(&value, &ingress, Some(8), &ports),
            Some(V::Misdelivered)
        );
        assert_eq!(before_policy(&value, &ingress, Some(7), &ports), None);
        assert_eq!(
            before_policy(&value, &ingress, None, &ports),
            None,
            "no local pod's"
        );
    }

    #[test]
    fn outcomes_and_rule_slots() {
        use KernelVerdict as V;
        assert_eq!(V::Rule(2).outcome(), EventVerdict::Allowed);
        assert_eq!(V::Default.outcome(), EventVerdict::Allowed);
        assert_eq!(V::NoMatchAudited.outcome(), EventVerdict::WouldDrop);
        assert_eq!(V::WouldDeny(None).outcome(), EventVerdict::WouldDrop);
        assert_eq!(V::UnknownEndpoint.outcome(), EventVerdict::Dropped);
        assert_eq!(V::UnknownValue(9).outcome(), EventVerdict::Dropped);
        assert_eq!(V::Rule(2).rule_slot(), Some(2));
        assert_eq!(V::Denied(Some(5)).rule_slot(), Some(5));
        assert_eq!(V::NetworkDrop.rule_slot(), None);
        assert_eq!(V::Rule(NO_COUNTER).rule_slot(), None);
        for before in [V::SpoofedSource, V::Tunnel, V::Misdelivered] {
            assert_eq!(before.outcome(), EventVerdict::Dropped);
        }
    }

    #[test]
    fn prefixes_compare_whole_bytes_then_the_high_bits_of_the_last() {
        assert!(same_prefix(&[10, 1, 2, 3], &[10, 1, 9, 9], 16));
        assert!(!same_prefix(&[10, 1, 2, 3], &[10, 2, 2, 3], 16));
        // /12: the high four bits of the second byte.
        assert!(same_prefix(&[10, 0x10, 0, 0], &[10, 0x1f, 5, 5], 12));
        assert!(!same_prefix(&[10, 0x10, 0, 0], &[10, 0x20, 0, 0], 12));
        assert!(same_prefix(&[1, 2], &[3, 4], 0));
        assert!(!same_prefix(&[1, 2], &[1, 2], 24), "longer than the key");
    }

    #[test]
    fn a_port_block_spans_the_ports_its_free_bits_reach() {
        assert_eq!(port_block(80, 16), (80, 80));
        assert_eq!(port_block(8100, 3), (0, 8191));
        // 13 fixed bits: blocks of 8.
        assert_eq!(port_block(8005, 13), (8000, 8007));
        assert_eq!(port_block(65535, 1), (32768, 65535));
    }
}
