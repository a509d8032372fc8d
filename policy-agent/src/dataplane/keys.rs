//! Conversions from the compiler's host-order tables to `policy_common` layouts and
//! wire byte order: the only place that knows how a table row becomes map bytes.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use policy_common::{
    counters::NO_COUNTER,
    endpoint::{
        EndpointInfo, ALLOW_TUNNELS, AUDIT_EGRESS, AUDIT_INGRESS, ISOLATED_EGRESS, ISOLATED_INGRESS,
    },
    peer::{PeerClass, PEER_FLAG_NODE, PEER_FLAG_SERVICE},
    policy::{
        PolicyKey, PolicyValue, RuleSetKey, POLICY_ALLOW, POLICY_DEFAULT, POLICY_DENY,
        POLICY_NETWORK_DROP, POLICY_NETWORK_WOULD_DROP, POLICY_WOULD_DENY, PREFIX_ALL_PORTS,
        PREFIX_ALL_PROTOCOLS, PREFIX_FULL,
    },
};

/// A peer prefix as `(address prefix length, address)`; the bank's 32 bits are
/// added to the length only in the kernel key.
pub type PeerPrefix<A> = (u32, A);

/// A `POLICY` entry's key as `(LPM prefix length, key with bank 0)`.
pub type PolicyPrefix = (u32, PolicyKey);
use crate::policy::tables::{Decision, EndpointEntry, PeerEntry, PortMatch, RuleSetMatch};

/// The flag word with the bit of every `(set, bit)` pair that is set.
fn flags(pairs: &[(bool, u32)]) -> u32 {
    pairs
        .iter()
        .filter(|&&(set, _)| set)
        .fold(0, |flags, &(_, bit)| flags | bit)
}

/// `ENDPOINTS` value of a local pod.
pub(super) fn endpoint_value(entry: &EndpointEntry) -> EndpointInfo {
    EndpointInfo {
        endpoint_id: entry.endpoint_id,
        flags: flags(&[
            (entry.isolated_ingress, ISOLATED_INGRESS),
            (entry.isolated_egress, ISOLATED_EGRESS),
            (entry.audit_ingress, AUDIT_INGRESS),
            (entry.audit_egress, AUDIT_EGRESS),
            (entry.allow_tunnels, ALLOW_TUNNELS),
        ]),
    }
}

/// The `RULE_SETS` key of a rule set's (endpoint, class, direction), in bank 0
/// (`banks.rs` sets the bank it writes).
pub(super) fn rule_set_key(m: &RuleSetMatch) -> RuleSetKey {
    RuleSetKey {
        bank: 0,
        endpoint_id: m.endpoint_id,
        class_id: m.class_id,
        direction: m.direction.code(),
        pad: [0; 3],
    }
}

/// The `POLICY` key of entry `m` of rule set `rule_set`, in bank 0 (`banks.rs`
/// sets the bank it writes): wildcards become a shorter prefix, a port block of
/// n fixed high bits is `PREFIX_ALL_PORTS + n` bits long.
pub(super) fn policy_key(rule_set: u32, m: &PortMatch) -> Key<PolicyKey> {
    let prefix = match (m.protocol, m.port) {
        (None, _) => PREFIX_ALL_PROTOCOLS,
        (Some(_), None) => PREFIX_ALL_PORTS,
        (Some(_), Some(block)) => (PREFIX_ALL_PORTS + u32::from(block.bits)).min(PREFIX_FULL),
    };
    Key::new(
        prefix,
        PolicyKey {
            bank: 0,
            rule_set,
            pad: 0,
            protocol: m.protocol.unwrap_or(0),
            port_be: m.port.map_or(0, |block| block.first).to_be(),
        },
    )
}

/// `POLICY` value of `decision`, its rule (if it names one) counting in
/// `rule_slot`: the slot alone names the rule in the kernel, so it stays when
/// policy ids shift.
pub(super) fn decision_value(decision: &Decision, rule_slot: u32) -> PolicyValue {
    let verdict = match decision {
        Decision::Allow(_) => POLICY_ALLOW,
        Decision::Deny(_) => POLICY_DENY,
        Decision::WouldDeny(_) => POLICY_WOULD_DENY,
        Decision::NetworkDrop => POLICY_NETWORK_DROP,
        Decision::NetworkWouldDrop => POLICY_NETWORK_WOULD_DROP,
        Decision::Default => POLICY_DEFAULT,
    };
    let rule_slot = if decision.rule().is_some() {
        rule_slot
    } else {
        NO_COUNTER
    };
    PolicyValue { rule_slot, verdict }
}

/// `PEERS_V4`/`PEERS_V6` value of a prefix.
pub(super) fn peer_value(entry: &PeerEntry) -> PeerClass {
    PeerClass {
        class_id: entry.class_id,
        flags: flags(&[
            (entry.node, PEER_FLAG_NODE),
            (entry.service, PEER_FLAG_SERVICE),
        ]),
    }
}

/// The desired content of one peer trie, keys without their bank.
pub(super) type PeerTrie<A> = BTreeMap<PeerPrefix<A>, PeerClass>;

/// The peer prefixes split by family into `(prefix length, address)`: address
/// bytes in packet order, host bits cleared (the kernel ignores them for matching
/// but would keep them).
pub(super) fn peer_keys(
    peers: &BTreeMap<IpNet, PeerEntry>,
) -> (PeerTrie<[u8; 4]>, PeerTrie<[u8; 16]>) {
    // Gathered in lists and built in bulk (sorted once): cheaper than an insert
    // per prefix. Of two prefixes equal once truncated, the later one wins, as
    // with inserts in turn.
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (net, entry) in peers {
        let value = peer_value(entry);
        match net.trunc() {
            IpNet::V4(net) => v4.push(((u32::from(net.prefix_len()), net.addr().octets()), value)),
            IpNet::V6(net) => v6.push(((u32::from(net.prefix_len()), net.addr().octets()), value)),
        }
    }
    (trie(v4), trie(v6))
}

/// A trie of `entries`, the last of equal keys kept.
fn trie<A: Ord>(mut entries: Vec<(PeerPrefix<A>, PeerClass)>) -> PeerTrie<A> {
    // Stable: equal keys stay in their order, and `dedup_by` keeps the first of
    // a run, so the later value moves into it.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|later, kept| {
        let equal = later.0 == kept.0;
        if equal {
            std::mem::swap(later, kept);
        }
        equal
    });
    entries.into_iter().collect()
}

/// An address as the 16-byte key of `ENDPOINT_ADDRS` and conntrack: IPv6 as is,
/// IPv4 as `::ffff:a.b.c.d`, packet byte order.
pub fn address_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address an `address_key` holds (IPv4-mapped back to IPv4).
pub fn key_address(key: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(key);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::policy::tables::{Direction, PortBlock};

    #[test]
    fn ipv4_addresses_are_mapped_and_round_trip() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(
            address_key(v4),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]
        );
        assert_eq!(key_address(address_key(v4)), v4);
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7));
        assert_eq!(key_address(address_key(v6)), v6);
    }

    #[test]
    fn endpoint_isolation_sets_one_flag_bit_per_direction() {
        let value = |isolated_ingress, isolated_egress| {
            endpoint_value(&EndpointEntry {
                endpoint_id: 7,
                isolated_ingress,
                isolated_egress,
                ..EndpointEntry::default()
            })
        };
        assert_eq!(
            value(false, false),
            EndpointInfo {
                endpoint_id: 7,
                flags: 0
            }
        );
        assert_eq!(value(true, false).flags, ISOLATED_INGRESS);
        assert_eq!(value(false, true).flags, ISOLATED_EGRESS);
        assert_eq!(value(true, true).flags, ISOLATED_INGRESS | ISOLATED_EGRESS);
        let tunnels = endpoint_value(&EndpointEntry {
            endpoint_id: 7,
            isolated_egress: true,
            allow_tunnels: true,
            ..EndpointEntry::default()
        });
        assert_eq!(tunnels.flags, ISOLATED_EGRESS | ALLOW_TUNNELS);
    }

    #[test]
    fn peer_prefixes_land_in_their_family_trie_with_host_bits_cleared() {
        let mut peers = BTreeMap::new();
        let net = |s: &str| s.parse::<IpNet>().unwrap_or_else(|e| panic!("{s}: {e}"));
        peers.insert(
            net("10.1.2.3/16"),
            PeerEntry {
                class_id: 4,
                node: true,
                service: false,
            },
        );
        peers.insert(
            net("fd00::1:2/112"),
            PeerEntry {
                class_id: 5,
                node: false,
                service: true,
            },
        );
        let (v4, v6) = peer_keys(&peers);
        assert_eq!(
            v4.into_iter().collect::<Vec<_>>(),
            vec![(
                (16, [10, 1, 0, 0]),
                PeerClass {
                    class_id: 4,
                    flags: PEER_FLAG_NODE
                }
            )]
        );
        let mut fd00 = [0u8; 16];
        fd00[0] = 0xfd;
        fd00[13] = 1; // fd00::1:0, the host bits (:2) cleared
        assert_eq!(
            v6.into_iter().collect::<Vec<_>>(),
            vec![(
                (112, fd00),
                PeerClass {
                    class_id: 5,
                    flags: PEER_FLAG_SERVICE
                }
            )]
        );
    }

    #[test]
    fn of_prefixes_equal_once_truncated_the_later_one_wins_and_order_is_by_key() {
        let net = |s: &str| s.parse::<IpNet>().unwrap_or_else(|e| panic!("{s}: {e}"));
        let entry = |class_id| PeerEntry {
            class_id,
            node: false,
            service: false,
        };
        // 10.0.0.0/8 sorts before 10.1.0.0/8 (IpNet order); both are (8, 10.0.0.0).
        let peers = BTreeMap::from([
            (net("10.0.0.0/8"), entry(1)),
            (net("10.1.0.0/8"), entry(2)),
            (net("9.0.0.0/24"), entry(3)),
            (net("10.0.0.0/16"), entry(4)),
        ]);
        let (v4, _) = peer_keys(&peers);
        let class = |class_id| PeerClass { class_id, flags: 0 };
        assert_eq!(
            v4.into_iter().collect::<Vec<_>>(),
            vec![
                ((8, [10, 0, 0, 0]), class(2)),
                ((16, [10, 0, 0, 0]), class(4)),
                ((24, [9, 0, 0, 0]), class(3)),
            ]
        );
    }

    #[test]
    fn a_port_block_is_a_prefix_of_its_fixed_bits_with_the_port_big_endian() {
        let m = PortMatch {
            protocol: Some(6),
            port: Some(PortBlock {
                first: 8000,
                bits: 13,
            }),
        };
        let key = policy_key(9, &m);
        assert_eq!(key.prefix_len(), PREFIX_ALL_PORTS + 13);
        assert_eq!(key.data().port_be, 8000u16.to_be());
        assert_eq!(key.data().rule_set, 9);
        let all_ports = policy_key(9, &PortMatch { port: None, ..m });
        assert_eq!(all_ports.prefix_len(), PREFIX_ALL_PORTS);
        let all = policy_key(
            9,
            &PortMatch {
                protocol: None,
                port: None,
            },
        );
        assert_eq!(all.prefix_len(), PREFIX_ALL_PROTOCOLS);
        assert_eq!(
            policy_key(
                9,
                &PortMatch {
                    port: Some(PortBlock::single(80)),
                    ..m
                }
            )
            .prefix_len(),
            PREFIX_FULL
        );
    }

    #[test]
    fn a_rule_set_key_carries_endpoint_class_and_direction_code() {
        let key = rule_set_key(&RuleSetMatch {
            endpoint_id: 3,
            class_id: 4,
            direction: Direction::Egress,
        });
        assert_eq!(
            key,
            RuleSetKey {
                bank: 0,
                endpoint_id: 3,
                class_id: 4,
                direction: policy_common::verdict::DIRECTION_EGRESS,
                pad: [0; 3],
            }
        );
    }
}
