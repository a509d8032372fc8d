//! The tables the datapath benchmark runs against, built as `DatapathTables` (pure:
//! no kernel). One local endpoint, the server, whose ingress is decided; `pod_peers`
//! remote pod addresses per family as host prefixes (as the compiler writes pods);
//! `cidr_prefixes` ipBlock-like prefixes per family; and the same `POLICY` in every
//! table: one TCP/80 ingress rule per peer class, so tables differ only in the peer
//! tries.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{
    model::ObjectRef,
    policy::tables::{
        DatapathTables, Direction, EndpointEntry, PeerEntry, PolicyMatch, PortBlock, RuleRef,
    },
};

/// The server's IPv4 address (in `ENDPOINT_ADDRS`).
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
/// The server's IPv6 address.
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x10);
/// The server's endpoint id.
pub const SERVER_ENDPOINT_ID: u32 = 1;
/// The port every rule allows (TCP).
pub const ALLOWED_PORT: u16 = 80;
/// A port no rule allows.
pub const DENIED_PORT: u16 = 81;
/// TCP's protocol number.
pub const TCP: u8 = 6;
/// Pod peers share this many classes (ids `1..=POD_CLASSES`), as pods share
/// label sets.
pub const POD_CLASSES: u32 = 64;
/// ipBlock prefixes share this many classes (after the pod classes).
pub const CIDR_CLASSES: u32 = 64;
/// Most pod peers a table may hold: they are numbered inside `10.128.0.0/9`.
pub const MAX_POD_PEERS: u32 = 1 << 23;

/// The first pod peer address of each family; peer `i` is this plus `i`.
const POD_BASE_V4: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 0);
const POD_BASE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0);
/// Seed of the generator the ipBlock prefixes come from (any fixed value).
const CIDR_SEED: u64 = 0x706f_6477_616c_6c21;

/// What one table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// Remote pod addresses per family (`/32` and `/128` prefixes).
    pub pod_peers: u32,
    /// ipBlock-like prefixes per family (shorter prefixes, outside the pod ranges).
    pub cidr_prefixes: u32,
    /// Whether a policy selects the server for ingress.
    pub isolated: bool,
}

/// A table and the addresses the benchmark's packets come from.
#[derive(Clone, Debug)]
pub struct BenchTables {
    /// The desired map contents.
    pub tables: DatapathTables,
    /// The pod peer the packets come from: the middle one of the range.
    pub pod_peer: (Ipv4Addr, Ipv6Addr),
    /// An address inside the middle generated ipBlock prefix (none without any).
    pub cidr_peer: Option<(Ipv4Addr, Ipv6Addr)>,
}

/// The benchmark's only local pod.
pub fn server() -> ObjectRef {
    ObjectRef::new("bench", "server")
}

/// Pod peer `i`'s addresses.
pub fn pod_peer(i: u32) -> (Ipv4Addr, Ipv6Addr) {
    (
        Ipv4Addr::from(u32::from(POD_BASE_V4) + i),
        Ipv6Addr::from(u128::from(POD_BASE_V6) + u128::from(i)),
    )
}

/// SplitMix64: a small deterministic generator, so every run builds the same table.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `count` distinct IPv4 prefixes of length 12 to 30 in unicast space outside
/// `10.0.0.0/8` (the pods), in generation order. Some nest, as ipBlock excepts do.
pub fn cidr_v4(count: u32) -> Vec<Ipv4Net> {
    let mut rng = SplitMix(CIDR_SEED);
    let mut seen = BTreeSet::new();
    let mut prefixes = Vec::new();
    while prefixes.len() < count as usize {
        let x = rng.next();
        let len = 12 + (x % 19) as u8;
        let addr = Ipv4Addr::from((x >> 32) as u32);
        let first = addr.octets()[0];
        if first == 0 || first == 10 || first == 127 || first >= 224 {
            continue;
        }
        if let Ok(net) = Ipv4Net::new(addr, len) {
            let net = net.trunc();
            if seen.insert(net) {
                prefixes.push(net);
            }
        }
    }
    prefixes
}

/// `count` distinct IPv6 prefixes of length 16 to 124 in `2000::/3` (outside the
/// pods' `fd00::/8`), in generation order.
pub fn cidr_v6(count: u32) -> Vec<Ipv6Net> {
    let mut rng = SplitMix(CIDR_SEED ^ 6);
    let mut seen = BTreeSet::new();
    let mut prefixes = Vec::new();
    while prefixes.len() < count as usize {
        let bits = (u128::from(rng.next()) << 64) | u128::from(rng.next());
        let len = 16 + (bits % 109) as u8;
        let addr = Ipv6Addr::from((bits >> 3) | (1 << 125));
        if let Ok(net) = Ipv6Net::new(addr, len) {
            let net = net.trunc();
            if seen.insert(net) {
                prefixes.push(net);
            }
        }
    }
    prefixes
}

/// The class of the `i`th ipBlock prefix.
fn cidr_class(i: usize) -> u32 {
    POD_CLASSES + 1 + (i as u32 % CIDR_CLASSES)
}

/// Builds the table `spec` describes. `spec.pod_peers` is at most `MAX_POD_PEERS`
/// (larger counts are cut to it) and at least 1.
pub fn build(spec: &TableSpec) -> BenchTables {
    let pod_peers = spec.pod_peers.clamp(1, MAX_POD_PEERS);
    let mut tables = DatapathTables::default();
    let server = server();
    tables.endpoints.insert(
        server.clone(),
        EndpointEntry {
            endpoint_id: SERVER_ENDPOINT_ID,
            isolated_ingress: spec.isolated,
            isolated_egress: false,
            ..EndpointEntry::default()
        },
    );
    tables
        .endpoint_addresses
        .insert(IpAddr::V4(SERVER_V4), server.clone());
    tables
        .endpoint_addresses
        .insert(IpAddr::V6(SERVER_V6), server);
    tables
        .policy_names
        .push(ObjectRef::new("bench", "allow-tcp-80"));
    for class_id in 1..=POD_CLASSES + CIDR_CLASSES {
        tables.allow(
            PolicyMatch {
                endpoint_id: SERVER_ENDPOINT_ID,
                class_id,
                direction: Direction::Ingress,
                protocol: Some(TCP),
                port: Some(PortBlock::single(ALLOWED_PORT)),
            },
            RuleRef {
                policy_id: 0,
                rule_index: class_id - 1,
            },
        );
    }
    tables.peers = pod_prefixes(pod_peers);
    let (v4, v6) = (cidr_v4(spec.cidr_prefixes), cidr_v6(spec.cidr_prefixes));
    for (i, net) in v4.iter().enumerate() {
        tables
            .peers
            .insert(IpNet::V4(*net), peer_entry(cidr_class(i)));
    }
    for (i, net) in v6.iter().enumerate() {
        tables
            .peers
            .insert(IpNet::V6(*net), peer_entry(cidr_class(i)));
    }
    let middle = v4.len() / 2;
    let cidr_peer = v4.get(middle).zip(v6.get(middle)).map(|(a, b)| {
        (
            Ipv4Addr::from(u32::from(a.network()) + 1),
            Ipv6Addr::from(u128::from(b.network()) + 1),
        )
    });
    BenchTables {
        tables,
        pod_peer: pod_peer(pod_peers / 2),
        cidr_peer,
    }
}

fn peer_entry(class_id: u32) -> PeerEntry {
    PeerEntry {
        class_id,
        node: false,
        service: false,
    }
}

/// Host prefixes of pod peers `0..count` in both families, class `1 + i % 64`.
fn pod_prefixes(count: u32) -> BTreeMap<IpNet, PeerEntry> {
    let mut peers = BTreeMap::new();
    for i in 0..count {
        let (v4, v6) = pod_peer(i);
        let entry = peer_entry(1 + i % POD_CLASSES);
        peers.insert(IpNet::from(IpAddr::V4(v4)), entry);
        peers.insert(IpNet::from(IpAddr::V6(v6)), entry);
    }
    peers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(tables: &DatapathTables, v4: bool, host: bool) -> usize {
        tables
            .peers
            .keys()
            .filter(|net| matches!(net, IpNet::V4(_)) == v4)
            .filter(|net| (net.prefix_len() == net.max_prefix_len()) == host)
            .count()
    }

    #[test]
    fn a_table_of_n_pod_peers_holds_n_host_prefixes_per_family() {
        for n in [1, 100, 10_000] {
            let built = build(&TableSpec {
                pod_peers: n,
                cidr_prefixes: 0,
                isolated: true,
            });
            let n = n as usize;
            assert_eq!(count(&built.tables, true, true), n, "IPv4 /32s");
            assert_eq!(count(&built.tables, false, true), n, "IPv6 /128s");
            assert_eq!(built.tables.peers.len(), 2 * n);
            assert!(built.cidr_peer.is_none());
        }
    }

    #[test]
    fn a_cidr_table_adds_exactly_that_many_shorter_prefixes_per_family() {
        let built = build(&TableSpec {
            pod_peers: 100,
            cidr_prefixes: 10_000,
            isolated: true,
        });
        assert_eq!(count(&built.tables, true, true), 100);
        assert_eq!(count(&built.tables, true, false), 10_000);
        assert_eq!(count(&built.tables, false, true), 100);
        assert_eq!(count(&built.tables, false, false), 10_000);
        assert_eq!(cidr_v4(50), cidr_v4(50), "the same prefixes every run");
    }

    #[test]
    fn every_table_has_the_same_policy_one_rule_per_class() {
        let small = build(&TableSpec {
            pod_peers: 10,
            cidr_prefixes: 0,
            isolated: true,
        });
        let large = build(&TableSpec {
            pod_peers: 1000,
            cidr_prefixes: 100,
            isolated: false,
        });
        assert_eq!(small.tables.policy, large.tables.policy);
        assert_eq!(
            small.tables.policy.len(),
            (POD_CLASSES + CIDR_CLASSES) as usize
        );
    }

    #[test]
    fn the_reference_lookup_decides_each_benchmark_packet_as_its_path_says() {
        let built = build(&TableSpec {
            pod_peers: 1000,
            cidr_prefixes: 1000,
            isolated: true,
        });
        let (tables, server) = (&built.tables, server());
        let decide =
            |peer: IpAddr, port| tables.lookup(&server, Direction::Ingress, peer, TCP, port);
        let Some((cidr_v4, cidr_v6)) = built.cidr_peer else {
            panic!("a CIDR table has a CIDR peer");
        };
        let (pod_v4, pod_v6) = built.pod_peer;
        for peer in [
            IpAddr::V4(pod_v4),
            IpAddr::V6(pod_v6),
            IpAddr::V4(cidr_v4),
            IpAddr::V6(cidr_v6),
        ] {
            assert!(
                matches!(decide(peer, ALLOWED_PORT), Some(Some(_))),
                "{peer} allowed on {ALLOWED_PORT}"
            );
            assert_eq!(decide(peer, DENIED_PORT), None, "{peer} denied");
        }
        assert!(tables.peer(IpAddr::V4(cidr_v4)).class_id > POD_CLASSES);
        assert!(tables.peer(IpAddr::V6(cidr_v6)).class_id > POD_CLASSES);
        let open = build(&TableSpec {
            pod_peers: 10,
            cidr_prefixes: 0,
            isolated: false,
        });
        assert_eq!(
            open.tables.lookup(
                &server,
                Direction::Ingress,
                IpAddr::V4(open.pod_peer.0),
                TCP,
                DENIED_PORT
            ),
            Some(None),
            "unisolated passes without a rule"
        );
    }
}
