//! A running datapath's tables read from their pins the way the classifiers read
//! them, for `explain --node`: for one side of a connection (a pod's interface,
//! a direction, the remote address, the protocol and port), each lookup
//! `judge` makes for a flow's first packet, in its order, the verdict it comes
//! to, and the flows conntrack tracks for that side. Nothing here writes a map.
//!
//! The lookups are the kernel's own (a hash `get`, an LPM trie `get` with a
//! full-length key, so the kernel picks the longest prefix); the prefixes
//! shown beside them are found by reading the bank, for people only.

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
        EndpointInfo, EndpointKey, EndpointValue, AUDIT_EGRESS, AUDIT_INGRESS, ISOLATED_EGRESS,
        ISOLATED_INGRESS,
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
pub const INSPECTED_MAPS: [&str; 11] = [
    maps::ACTIVE.name,
    maps::CONFIG.name,
    maps::ENDPOINTS.name,
    maps::PEERS_V4.name,
    maps::PEER_HOSTS_V4.name,
    maps::PEERS_V6.name,
    maps::PEER_HOSTS_V6.name,
    maps::RULE_SETS.name,
    maps::POLICY.name,
    maps::POLICY_PORTS.name,
    maps::CONNTRACK.name,
];

/// How many times `PinnedTables::read` reads a side again when `ACTIVE` moved
/// while it read (a flip or a write in place between its lookups).
const READ_ATTEMPTS: usize = 5;

/// Read handles on the maps of `INSPECTED_MAPS`, opened from their pins.
pub struct PinnedTables {
    dir: PathBuf,
    active: Array<MapData, u32>,
    config: Array<MapData, Config>,
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
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

/// What `judge` decides for a flow's first packet (`policy-ebpf/src/judge.rs`,
/// steps 8 to 12), or that the interface is unknown before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelVerdict {
    /// No `ENDPOINTS` entry for the interface: every packet is dropped.
    UnknownEndpoint,
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
            | KernelVerdict::Denied(_)
            | KernelVerdict::NetworkDrop
            | KernelVerdict::NoMatch
            | KernelVerdict::UnknownValue(_) => EventVerdict::Dropped,
        }
    }

    /// The `RULE_COUNTERS` slot of the rule that decided, if one did.
    pub fn rule_slot(self) -> Option<u32> {
        match self {
            KernelVerdict::Rule(slot) => Some(slot),
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
    let fd = super::sys::open_pinned_map_read_only(&path).map_err(|source| {
        DataplaneError::Pinned {
            path: path.clone(),
            what: "opening read only".into(),
            os_error: source.raw_os_error(),
            source: Some(Box::new(source)),
        }
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

impl PinnedTables {
    /// Opens the maps pinned in `dir` (`<dir>/<MAP>`).
    pub fn open(dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            dir: dir.to_path_buf(),
            active: open(dir, maps::ACTIVE)?,
            config: open(dir, maps::CONFIG)?,
            endpoints: open(dir, maps::ENDPOINTS)?,
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

    fn tables_writing(&self) -> Result<bool, DataplaneError> {
        let config = self
            .config
            .get(&0, 0)
            .map_err(map_error(maps::CONFIG.name, "read"))?;
        Ok(config.flags & CONFIG_FLAG_TABLES_WRITING != 0)
    }

    /// Reads `side` as the classifiers would decide its first packet now: with
    /// one generation of `ACTIVE` throughout (read again when it moved while
    /// reading, a few times, then an error).
    pub fn read(&self, side: &SideLookup) -> Result<SideReading, DataplaneError> {
        for _ in 0..READ_ATTEMPTS {
            let generation = self.generation()?;
            let reading = self.read_at(generation, side)?;
            if self.generation()? == generation {
                return Ok(reading);
            }
        }
        Err(DataplaneError::Map {
            map: maps::ACTIVE.name,
            what: format!(
                "moved on during each of {READ_ATTEMPTS} readings (tables being written): try again"
            ),
            source: None,
        })
    }

    fn read_at(&self, generation: u32, side: &SideLookup) -> Result<SideReading, DataplaneError> {
        let bank = bank_of(generation);
        let endpoint = found(
            self.endpoints.get(
                &EndpointKey {
                    ifindex: side.ifindex,
                    bank,
                },
                0,
            ),
            maps::ENDPOINTS.name,
        )?
        .map(|value| value.info);
        let mut reading = SideReading {
            generation,
            tables_writing: self.tables_writing()?,
            endpoint,
            peer: None,
            rule_set: None,
            entry: None,
            verdict: KernelVerdict::UnknownEndpoint,
            tracked: self.tracked(side)?,
        };
        let world = PeerClass {
            class_id: CLASS_WORLD,
            flags: 0,
        };
        if let Some(info) = endpoint {
            // `judge` looks the peer up only for an isolated direction (and,
            // unisolated, for flags that do not change the verdict).
            let isolated =
                verdict(Some(info), side.direction, world, None) != KernelVerdict::Unisolated;
            if isolated {
                let peer = self.peer(bank, side.remote)?;
                reading.peer = Some(peer);
                let decided_before = verdict(Some(info), side.direction, peer.class, None);
                if matches!(
                    decided_before,
                    KernelVerdict::NoMatch | KernelVerdict::NoMatchAudited
                ) {
                    reading.rule_set = self.rule_set(bank, &info, peer.class, side.direction)?;
                    if let Some(set) = reading.rule_set {
                        reading.entry = self.entry(bank, set.id, side.protocol, side.port)?;
                    }
                }
            }
        }
        reading.verdict = verdict(
            endpoint,
            side.direction,
            reading.peer.map_or(world, |peer| peer.class),
            reading.entry.map(|entry| entry.value),
        );
        Ok(reading)
    }

    /// `maps::peer` of the classifiers: the host hash, else the trie.
    fn peer(&self, bank: u32, remote: IpAddr) -> Result<PeerReading, DataplaneError> {
        let (class, len) = match remote {
            IpAddr::V4(v4) => {
                let data = PeerKeyV4 {
                    bank,
                    addr: v4.octets(),
                };
                let maps = (&self.peer_hosts_v4, &self.peers_v4);
                let names = (maps::PEER_HOSTS_V4.name, maps::PEERS_V4.name);
                host_or_prefix(maps, names, data, (32, PEERS_V4_PREFIX_MAX))?
            }
            IpAddr::V6(v6) => {
                let data = PeerKeyV6 {
                    bank,
                    addr: v6.octets(),
                };
                let maps = (&self.peer_hosts_v6, &self.peers_v6);
                let names = (maps::PEER_HOSTS_V6.name, maps::PEERS_V6.name);
                host_or_prefix(maps, names, data, (128, PEERS_V6_PREFIX_MAX))?
            }
        };
        Ok(PeerReading {
            class: class.unwrap_or(PeerClass {
                class_id: CLASS_WORLD,
                flags: 0,
            }),
            prefix: len
                .and_then(|len| u8::try_from(len).ok())
                .and_then(|len| IpNet::new(remote, len).ok())
                .map(|net| net.trunc()),
        })
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
    ) -> Result<Option<PolicyReading>, DataplaneError> {
        let data = PolicyKey {
            bank,
            rule_set,
            pad: 0,
            protocol,
            port_be: port.to_be(),
        };
        if let Some(value) = found(self.policy_ports.get(&data, 0), maps::POLICY_PORTS.name)? {
            return Ok(Some(PolicyReading {
                value,
                protocol: Some(protocol),
                ports: Some((port, port)),
            }));
        }
        let key = Key::new(PREFIX_FULL, data);
        let Some(value) = found(self.policy.get(&key, 0), maps::POLICY.name)? else {
            return Ok(None);
        };
        // The trie holds prefixes from `PREFIX_ALL_PROTOCOLS` to just short of
        // `PREFIX_FULL`; what the lookup matched is the longest holding the key.
        let len = longest(&self.policy, &data, maps::POLICY.name)?
            .unwrap_or(PREFIX_ALL_PROTOCOLS)
            .clamp(PREFIX_ALL_PROTOCOLS, PREFIX_FULL);
        Ok(Some(PolicyReading {
            value,
            protocol: (len >= PREFIX_ALL_PORTS).then_some(protocol),
            ports: (len > PREFIX_ALL_PORTS).then(|| port_block(port, len - PREFIX_ALL_PORTS)),
        }))
    }

    /// The tracked flows of `side`: opened in its direction at its interface
    /// between its two addresses, to its port, with its protocol.
    fn tracked(&self, side: &SideLookup) -> Result<Vec<TrackedFlow>, DataplaneError> {
        let (source, destination) = match side.direction {
            Direction::Ingress => (side.remote, side.local),
            Direction::Egress => (side.local, side.remote),
        };
        let (saddr, daddr) = (address_key(source), address_key(destination));
        let mut flows = Vec::new();
        for entry in self.conntrack.iter() {
            // An entry removed while being read (the sweep) is skipped.
            let Ok((key, value)) = entry else { continue };
            if key.ifindex == side.ifindex
                && key.direction == side.direction.code()
                && key.saddr == saddr
                && key.daddr == daddr
                && key.protocol == side.protocol
                && u16::from_be(key.dport_be) == side.port
            {
                flows.push(tracked_flow(key, value));
            }
        }
        Ok(flows)
    }
}

/// A family's peer lookup: the class in the host hash (`maps.0`), else the
/// longest prefix of the trie (`maps.1`) holding `data`, and the address
/// prefix length it was found under (`lens`: a host's, and the trie's longest
/// with its bank bits).
fn host_or_prefix<K: aya::Pod>(
    maps: (
        &HashMap<MapData, K, PeerClass>,
        &LpmTrie<MapData, K, PeerClass>,
    ),
    names: (&'static str, &'static str),
    data: K,
    lens: (u32, u32),
) -> Result<(Option<PeerClass>, Option<u32>), DataplaneError> {
    if let Some(class) = found(maps.0.get(&data, 0), names.0)? {
        return Ok((Some(class), Some(lens.0)));
    }
    let Some(class) = found(maps.1.get(&Key::new(lens.1, data), 0), names.1)? else {
        return Ok((None, None));
    };
    let len = longest(maps.1, &data, names.1)?;
    Ok((
        Some(class),
        len.and_then(|len| len.checked_sub(PEER_PREFIX_BANK)),
    ))
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
