//! Layout tests of the kernel<->user ABI: the offsets the BPF program and the LPM
//! prefix lengths rely on. A reordered or resized field fails here first.

use core::mem::{align_of, offset_of, size_of};

use policy_common::{
    bank::{bank_of, other},
    config::{
        mark_bits, Config, MarkBits, CONFIG_FLAG_ALLOW_EVENTS, CONFIG_FLAG_KEEP_ESTABLISHED,
        DEFAULT_MARK_MASK, DEFAULT_TUNNEL_PORTS, TUNNEL_PORTS_MAX,
    },
    counters::{drop_slot, TrafficCounter, DROP_COUNTERS_MAX},
    ct::{
        CtKey, CtValue, CT_FLAG_AUDIT, CT_FLAG_DECIDED_THERE, CT_FLAG_DEFERRED, CT_FLAG_DIRECT,
        CT_FLAG_LOCAL_OWNED, CT_FLAG_REVOKED, CT_STATE_CLOSED, CT_STATE_ESTABLISHED,
        CT_STATE_OPENING,
    },
    endpoint::{
        AddressKey, EndpointInfo, EndpointKey, EndpointValue, OwnAddresses, ALLOW_TUNNELS,
        AUDIT_EGRESS, AUDIT_INGRESS, ENDPOINTS_MAX, ISOLATED_EGRESS, ISOLATED_INGRESS, OWN_V4,
        OWN_V6, PENDING_ENDPOINT_ID,
    },
    events::{VerdictEvent, EVENTS_BYTES},
    frag::{FragKey, FragValue, FRAGMENTS_MAX},
    maps,
    peer::{
        PeerClass, PeerKeyV4, PeerKeyV6, PEERS_V4_PREFIX_MAX, PEERS_V6_PREFIX_MAX, PEER_FLAG_NODE,
        PEER_FLAG_SERVICE, PEER_PREFIX_BANK,
    },
    policy::{
        PolicyKey, PolicyValue, RuleSetKey, PREFIX_ALL_PORTS, PREFIX_ALL_PROTOCOLS, PREFIX_FULL,
    },
    verdict::{
        MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED, STATS_LEN, STAT_ALLOW_DEFERRED_EGRESS,
        STAT_ALLOW_NODE, STAT_ALLOW_NON_IP, STAT_ALLOW_POLICY, STAT_ALLOW_RELATED,
        STAT_ALLOW_SERVICE_EGRESS, STAT_ALLOW_TRACKED, STAT_ALLOW_UNISOLATED,
        STAT_DROP_ARP_SPOOFED, STAT_DROP_ARP_UNSUPPORTED, STAT_DROP_CT_ENDPOINT_LIMIT,
        STAT_DROP_CT_FULL, STAT_DROP_DEFERRED_EGRESS, STAT_DROP_DEFERRED_UNKNOWN_SOURCE,
        STAT_DROP_ETHER_TYPE, STAT_DROP_FRAGMENT_OVERLAP, STAT_DROP_FRAGMENT_TINY,
        STAT_DROP_FRAGMENT_UNKNOWN, STAT_DROP_IPV6_EXTENSION_CHAIN, STAT_DROP_IPV6_ROUTING_HEADER,
        STAT_DROP_MALFORMED, STAT_DROP_MISDELIVERED, STAT_DROP_POLICY, STAT_DROP_REVOKED,
        STAT_DROP_SOURCE_EGRESS, STAT_DROP_SPOOFED_SOURCE, STAT_DROP_STATE_CHANGED,
        STAT_DROP_TUNNEL, STAT_DROP_UNKNOWN_ENDPOINT, STAT_DROP_VLAN, STAT_EVENTS_ENDPOINT_LIMITED,
        STAT_EVENTS_RATE_LIMITED, STAT_EVENTS_RING_FULL, STAT_NAMES, STAT_VERDICTS,
        STAT_WOULD_DROP_POLICY,
    },
    ABI_VERSION,
};

/// The docs write the ABI version once (the pin and run paths say `v<ABI>`); that
/// one place must name this build's.
#[test]
fn the_docs_name_the_abi_version_of_this_build() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/architecture.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let stated = format!("`policy_common::ABI_VERSION` (**{ABI_VERSION}**)");
    assert!(text.contains(&stated), "{path} must say {stated}");
}

#[test]
fn policy_key_prefixes_end_exactly_at_their_fields() {
    assert_eq!(offset_of!(PolicyKey, bank), 0);
    assert_eq!(offset_of!(PolicyKey, rule_set), 4);
    assert_eq!(offset_of!(PolicyKey, pad), 8);
    assert_eq!(offset_of!(PolicyKey, protocol), 9);
    assert_eq!(offset_of!(PolicyKey, port_be), 10);
    assert_eq!(size_of::<PolicyKey>(), 12);
    // "All protocols" matches bank and rule set; "all ports" adds the (zero) pad
    // and the protocol; a full key adds the port. Each prefix must end where the
    // next field begins, or a wildcard would swallow part of a field; the
    // shortest still covers the whole bank, so no entry matches a lookup in the
    // other bank.
    assert!(PREFIX_ALL_PROTOCOLS as usize >= offset_of!(PolicyKey, rule_set) * 8);
    assert_eq!(
        PREFIX_ALL_PROTOCOLS as usize,
        offset_of!(PolicyKey, pad) * 8
    );
    assert_eq!(
        PREFIX_ALL_PORTS as usize,
        offset_of!(PolicyKey, port_be) * 8
    );
    assert_eq!(PREFIX_FULL as usize, size_of::<PolicyKey>() * 8);
}

#[test]
fn rule_set_keys_have_no_hidden_padding_and_the_any_class_is_no_class() {
    assert_eq!(offset_of!(RuleSetKey, bank), 0);
    assert_eq!(offset_of!(RuleSetKey, endpoint_id), 4);
    assert_eq!(offset_of!(RuleSetKey, class_id), 8);
    assert_eq!(offset_of!(RuleSetKey, direction), 12);
    assert_eq!(offset_of!(RuleSetKey, pad), 13);
    assert_eq!(size_of::<RuleSetKey>(), 16);
    // Class ids are dense from 1 (0 is CLASS_WORLD): the any-class id is never one.
}

#[test]
fn a_port_block_prefix_spans_exactly_the_port_field() {
    // A block of n fixed high port bits is PREFIX_ALL_PORTS + n: n = 0 is "all
    // ports", n = 16 a single port, and the port is the key's last field, so every
    // n in between cuts only inside it.
    assert_eq!(PREFIX_ALL_PORTS + 16, PREFIX_FULL);
    assert_eq!(
        offset_of!(PolicyKey, port_be) + size_of::<u16>(),
        size_of::<PolicyKey>()
    );
    // `port_be` holds the port big-endian, so the bytes an LPM trie compares (in
    // memory order, most significant bit first) start with the port's high bits:
    // the block 8000/13 matches exactly 8000..=8007.
    let bit = |bytes: [u8; 2], i: usize| bytes[i / 8] >> (7 - i % 8) & 1;
    let block = 8000u16.to_be().to_ne_bytes();
    for port in 0..=u16::MAX {
        let key = port.to_be().to_ne_bytes();
        let matches = (0..13).all(|i| bit(key, i) == bit(block, i));
        assert_eq!(matches, (8000..=8007).contains(&port), "port {port}");
    }
}

#[test]
fn peer_trie_prefixes_are_the_bank_then_the_address_bits() {
    // Key data is the bank, then the address in packet order, so a CIDR of
    // length n is the trie prefix PEER_PREFIX_BANK + n and a host address is the
    // longest one; /0 still matches the whole bank.
    assert_eq!(offset_of!(PeerKeyV4, bank), 0);
    assert_eq!(offset_of!(PeerKeyV4, addr), 4);
    assert_eq!(offset_of!(PeerKeyV6, bank), 0);
    assert_eq!(offset_of!(PeerKeyV6, addr), 4);
    assert_eq!(PEER_PREFIX_BANK as usize, offset_of!(PeerKeyV4, addr) * 8);
    assert_eq!(PEER_PREFIX_BANK as usize, offset_of!(PeerKeyV6, addr) * 8);
    assert_eq!(PEERS_V4_PREFIX_MAX as usize, size_of::<PeerKeyV4>() * 8);
    assert_eq!(PEERS_V6_PREFIX_MAX as usize, size_of::<PeerKeyV6>() * 8);
}

#[test]
fn banked_keys_have_no_hidden_padding_and_banks_differ_in_their_first_byte() {
    assert_eq!(size_of::<EndpointKey>(), 4 + 4);
    assert_eq!(offset_of!(EndpointKey, ifindex), 0);
    assert_eq!(offset_of!(EndpointKey, bank), 4);
    assert_eq!(size_of::<AddressKey>(), 16 + 4);
    assert_eq!(offset_of!(AddressKey, addr), 0);
    assert_eq!(offset_of!(AddressKey, bank), 16);
    assert_eq!(size_of::<PeerKeyV4>(), 4 + 4);
    assert_eq!(size_of::<PeerKeyV6>(), 4 + 16);
    // An LPM trie compares bytes in memory order: the two banks' keys must part
    // within the bank field, which every prefix covers.
    assert_ne!(0u32.to_ne_bytes()[0], 1u32.to_ne_bytes()[0]);
    assert_eq!((bank_of(0), bank_of(1), bank_of(7)), (0, 1, 1));
    assert_eq!((other(0), other(1)), (1, 0));
}

#[test]
fn every_shared_map_is_listed_once_with_the_sizes_its_kind_gives() {
    let mut names: Vec<&str> = maps::SHARED.iter().map(|layout| layout.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), maps::SHARED.len(), "a map listed twice");
    // An LPM trie's kernel key is the 4-byte prefix length, then the data.
    let policy = maps::POLICY.layout();
    assert_eq!(policy.key_size as usize, 4 + size_of::<PolicyKey>());
    assert_eq!(policy.value_size as usize, size_of::<PolicyValue>());
    let endpoints = maps::ENDPOINTS.layout();
    assert_eq!(endpoints.key_size as usize, size_of::<EndpointKey>());
    assert_eq!(endpoints.value_size as usize, size_of::<EndpointValue>());
    // A ring buffer has neither key nor value.
    assert_eq!(
        (
            maps::EVENTS.layout().key_size,
            maps::EVENTS.layout().value_size
        ),
        (0, 0)
    );
    assert!(maps::SHARED.contains(&maps::CONNTRACK.layout()));
}

#[test]
fn an_endpoint_value_is_its_info_then_its_own_addresses() {
    // The classifiers copy the first 8 bytes (the info) on their stack and the
    // addresses beside it; they compare the addresses a 4-byte word at a time.
    assert_eq!(offset_of!(EndpointValue, info), 0);
    assert_eq!(size_of::<EndpointInfo>(), 8);
    assert_eq!(offset_of!(EndpointValue, own), 8);
    assert_eq!(offset_of!(OwnAddresses, flags), 0);
    assert_eq!(offset_of!(OwnAddresses, v4), 4);
    assert_eq!(offset_of!(OwnAddresses, v6), 8);
    assert_eq!(size_of::<OwnAddresses>(), 24);
    assert_eq!(size_of::<EndpointValue>(), 32);
    assert_eq!(align_of::<EndpointValue>(), 4);
    assert_eq!(OWN_V4 & OWN_V6, 0);
    // No padding: every byte of a value is a field's.
    assert_eq!(size_of::<OwnAddresses>(), 4 + 4 + 16);
}

#[test]
fn a_policy_port_hash_key_is_its_trie_key_data() {
    // The agent writes a single-port allow entry into `POLICY_PORTS` under the
    // key data it would have had in `POLICY` (a full-length prefix), and the
    // classifiers look both up with that data.
    let (hash, trie) = (maps::POLICY_PORTS.layout(), maps::POLICY.layout());
    assert_eq!(hash.key_size + 4, trie.key_size);
    assert_eq!(hash.key_size as usize, size_of::<PolicyKey>());
    assert_eq!(hash.value_size, trie.value_size);
    assert_eq!(hash.map_type, maps::MapKind::Hash.map_type());
    assert_eq!(PREFIX_FULL as usize, size_of::<PolicyKey>() * 8);
}

#[test]
fn a_peer_host_hash_key_is_its_trie_key_data() {
    // The agent writes a host prefix into the hash under the key data it would
    // have had in the trie (bank, address), and the classifiers look both up
    // with that data: the hash key is the trie key less its prefix length.
    for (hosts, trie) in [
        (maps::PEER_HOSTS_V4.layout(), maps::PEERS_V4.layout()),
        (maps::PEER_HOSTS_V6.layout(), maps::PEERS_V6.layout()),
    ] {
        assert_eq!(hosts.key_size + 4, trie.key_size, "{}", hosts.name);
        assert_eq!(hosts.value_size, trie.value_size, "{}", hosts.name);
        assert_eq!(hosts.map_type, maps::MapKind::Hash.map_type());
    }
    assert_eq!(
        maps::PEER_HOSTS_V4.layout().key_size as usize,
        size_of::<PeerKeyV4>()
    );
    assert_eq!(
        maps::PEER_HOSTS_V6.layout().key_size as usize,
        size_of::<PeerKeyV6>()
    );
}

#[test]
fn the_pending_endpoint_id_is_no_real_id_and_has_its_own_deny_slots() {
    for direction in [0u8, 1] {
        for audit in [false, true] {
            assert!(drop_slot(PENDING_ENDPOINT_ID, direction, audit) < DROP_COUNTERS_MAX);
        }
    }
}

#[test]
fn map_types_have_no_hidden_padding() {
    assert_eq!(size_of::<PolicyKey>(), 4 + 4 + 1 + 1 + 2);
    assert_eq!(size_of::<RuleSetKey>(), 4 + 4 + 4 + 1 + 3);
    assert_eq!(size_of::<PolicyValue>(), 8);
    assert_eq!(offset_of!(PolicyValue, rule_slot), 0);
    assert_eq!(offset_of!(PolicyValue, verdict), 4);
    assert_eq!(size_of::<EndpointInfo>(), 4 + 4);
    assert_eq!(offset_of!(EndpointInfo, endpoint_id), 0);
    assert_eq!(offset_of!(EndpointInfo, flags), 4);
    assert_eq!(size_of::<PeerClass>(), 4 + 4);
    assert_eq!(offset_of!(PeerClass, class_id), 0);
    assert_eq!(offset_of!(PeerClass, flags), 4);
    assert_eq!(size_of::<CtValue>(), 8 + 8 + 4 + 4 + 1 + 3 + 4);
    assert_eq!(offset_of!(CtValue, created_ns), 0);
    assert_eq!(offset_of!(CtValue, last_seen_ns), 8);
    assert_eq!(offset_of!(CtValue, counter_slot), 16);
    assert_eq!(offset_of!(CtValue, flags), 20);
    assert_eq!(offset_of!(CtValue, state), 24);
    assert_eq!(offset_of!(CtValue, pad), 25);
    assert_eq!(offset_of!(CtValue, generation), 28);
    assert_eq!(size_of::<TrafficCounter>(), 8 + 8);
    assert_eq!(offset_of!(TrafficCounter, bytes), 8);
    assert_eq!(size_of::<Config>(), 6 * 8 + 12 * 4 + 2 * TUNNEL_PORTS_MAX);
    assert_eq!(offset_of!(Config, events_per_second), 48);
    assert_eq!(offset_of!(Config, flags), 56);
    assert_eq!(offset_of!(Config, mark_deferred_egress), 64);
    assert_eq!(offset_of!(Config, mark_stamp_shift), 76);
    assert_eq!(offset_of!(Config, ct_endpoint_flows), 80);
    assert_eq!(offset_of!(Config, pad2), 84);
    assert_eq!(offset_of!(Config, tunnel_ports_be), 88);
    assert_eq!(offset_of!(Config, events_per_endpoint_per_second), 104);
    assert_eq!(offset_of!(Config, events_per_endpoint_burst), 108);
}

#[test]
fn verdict_events_are_packed_for_the_ring_buffer() {
    assert_eq!(
        size_of::<VerdictEvent>(),
        8 + 4 + 4 + 16 + 16 + 2 + 2 + 1 + 1 + 1 + 1 + 4 * 4
    );
    assert_eq!(align_of::<VerdictEvent>(), 8);
    assert_eq!(offset_of!(VerdictEvent, ifindex), 8);
    assert_eq!(offset_of!(VerdictEvent, endpoint_id), 12);
    assert_eq!(offset_of!(VerdictEvent, saddr), 16);
    assert_eq!(offset_of!(VerdictEvent, daddr), 32);
    assert_eq!(offset_of!(VerdictEvent, sport_be), 48);
    assert_eq!(offset_of!(VerdictEvent, protocol), 52);
    assert_eq!(offset_of!(VerdictEvent, direction), 53);
    assert_eq!(offset_of!(VerdictEvent, verdict), 54);
    assert_eq!(offset_of!(VerdictEvent, ipv6), 55);
    assert_eq!(offset_of!(VerdictEvent, stat), 56);
    assert_eq!(offset_of!(VerdictEvent, rule_slot), 60);
    assert_eq!(offset_of!(VerdictEvent, packet_len), 64);
    assert_eq!(offset_of!(VerdictEvent, pad), 68);
    // A BPF ring buffer is a power of two of pages.
    assert!(EVENTS_BYTES.is_power_of_two() && EVENTS_BYTES >= 4096);
}

#[test]
fn deny_slots_of_distinct_endpoints_and_directions_never_collide() {
    let mut seen = std::collections::BTreeSet::new();
    for endpoint_id in 1..=ENDPOINTS_MAX {
        for direction in [0u8, 1] {
            for audit in [false, true] {
                let slot = drop_slot(endpoint_id, direction, audit);
                assert!(slot < DROP_COUNTERS_MAX, "slot {slot}");
                assert!(seen.insert(slot), "slot {slot} twice");
            }
        }
    }
}

#[test]
fn conntrack_keys_hold_both_families_in_sixteen_bytes() {
    assert_eq!(size_of::<CtKey>(), 4 + 16 + 16 + 2 + 2 + 1 + 1 + 2);
    assert_eq!(align_of::<CtKey>(), 4);
    assert_eq!(offset_of!(CtKey, ifindex), 0);
    assert_eq!(offset_of!(CtKey, saddr), 4);
    assert_eq!(offset_of!(CtKey, daddr), 20);
    assert_eq!(offset_of!(CtKey, sport_be), 36);
    assert_eq!(offset_of!(CtKey, dport_be), 38);
    assert_eq!(offset_of!(CtKey, protocol), 40);
    assert_eq!(offset_of!(CtKey, direction), 41);
    assert_eq!(offset_of!(CtKey, pad), 42);
}

#[test]
fn fragment_keys_name_a_datagram_in_both_families_without_hidden_padding() {
    assert_eq!(size_of::<FragKey>(), 4 + 4 + 16 + 16 + 1 + 1 + 2);
    assert_eq!(align_of::<FragKey>(), 4);
    assert_eq!(offset_of!(FragKey, ifindex), 0);
    assert_eq!(offset_of!(FragKey, id), 4);
    assert_eq!(offset_of!(FragKey, saddr), 8);
    assert_eq!(offset_of!(FragKey, daddr), 24);
    assert_eq!(offset_of!(FragKey, protocol), 40);
    assert_eq!(offset_of!(FragKey, direction), 41);
    assert_eq!(offset_of!(FragKey, pad), 42);
    assert_eq!(size_of::<FragValue>(), 8 + 2 + 2 + 2 + 1 + 1);
    assert_eq!(offset_of!(FragValue, created_ns), 0);
    assert_eq!(offset_of!(FragValue, sport_be), 8);
    assert_eq!(offset_of!(FragValue, dport_be), 10);
    assert_eq!(offset_of!(FragValue, first_end), 12);
    assert_eq!(offset_of!(FragValue, protocol), 14);
    assert_eq!(offset_of!(FragValue, pad), 15);
    // (FRAGMENT_FIRST_MIN and FRAGMENT_LIFETIME_NS are checked where they are
    // defined, at compile time.)
    assert!(FRAGMENTS_MAX.is_power_of_two());
}

#[test]
fn flags_and_marks_are_distinct_bits() {
    for flags in [
        [ISOLATED_INGRESS, ISOLATED_EGRESS],
        [AUDIT_INGRESS, AUDIT_EGRESS],
        [
            ISOLATED_INGRESS | ISOLATED_EGRESS,
            AUDIT_INGRESS | AUDIT_EGRESS,
        ],
        [CT_FLAG_DEFERRED, CT_FLAG_AUDIT],
        [CT_FLAG_DEFERRED | CT_FLAG_AUDIT, CT_FLAG_REVOKED],
        [
            CT_FLAG_DEFERRED | CT_FLAG_AUDIT | CT_FLAG_REVOKED,
            CT_FLAG_LOCAL_OWNED,
        ],
        [
            CT_FLAG_DEFERRED | CT_FLAG_AUDIT | CT_FLAG_REVOKED | CT_FLAG_LOCAL_OWNED,
            CT_FLAG_DIRECT,
        ],
        [
            CT_FLAG_DEFERRED
                | CT_FLAG_AUDIT
                | CT_FLAG_REVOKED
                | CT_FLAG_LOCAL_OWNED
                | CT_FLAG_DIRECT,
            CT_FLAG_DECIDED_THERE,
        ],
        [CONFIG_FLAG_ALLOW_EVENTS, CONFIG_FLAG_KEEP_ESTABLISHED],
        [
            ISOLATED_INGRESS | ISOLATED_EGRESS | AUDIT_INGRESS | AUDIT_EGRESS,
            ALLOW_TUNNELS,
        ],
        [PEER_FLAG_NODE, PEER_FLAG_SERVICE],
        [MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED],
    ] {
        assert!(flags.iter().all(|f| f.count_ones() >= 1), "{flags:?}");
        assert_eq!(flags[0] & flags[1], 0, "{flags:?}");
    }
    assert_eq!(CT_FLAG_DEFERRED.count_ones(), 1);
    assert_eq!(CT_FLAG_REVOKED.count_ones(), 1);
}

#[test]
fn the_default_marks_are_the_low_byte_clear_of_calico_cilium_and_kube_proxy() {
    let default = Config::DEFAULT;
    assert_eq!(default.own_marks(), DEFAULT_MARK_MASK);
    assert_eq!(
        (default.mark_deferred_egress, default.mark_reply_verified),
        (MARK_DEFERRED_EGRESS, MARK_REPLY_VERIFIED)
    );
    // Calico's IptablesMarkMask, Cilium's mark nibbles (magic, then kube-proxy's
    // masquerade and drop bits, which kube-proxy uses alone too).
    for (whose, mask) in [
        ("Calico", 0xffff_0000),
        ("Cilium", 0x0f00),
        ("kube-proxy", 0xf000),
    ] {
        assert_eq!(default.own_marks() & mask, 0, "{whose}");
    }
}

#[test]
fn a_mark_mask_gives_two_single_bits_and_a_contiguous_stamp_of_at_least_two() {
    assert_eq!(
        mark_bits(0xff),
        Some(MarkBits {
            deferred_egress: 0x1,
            reply_verified: 0x2,
            stamp_mask: 0xfc,
            stamp_shift: 2,
        })
    );
    for refused in [0, 0x7, 0x1f0f, 0x8000_0007, 0xf0f0] {
        assert_eq!(mark_bits(refused), None, "{refused:#x}");
    }
    for mask in [0xf, 0xf0, 0x0f00_0000, 0xffff_ffff, 0x3c1] {
        let bits = mark_bits(mask).unwrap_or_else(|| panic!("{mask:#x}"));
        let parts = [bits.deferred_egress, bits.reply_verified, bits.stamp_mask];
        assert_eq!(parts.iter().fold(0, |all, p| all | p), mask, "{mask:#x}");
        assert_eq!(parts[0] & parts[1], 0);
        assert_eq!((parts[0] | parts[1]) & parts[2], 0);
        assert_eq!(bits.stamp_mask >> bits.stamp_shift & 1, 1);
    }
}

#[test]
fn stamps_are_never_zero_stay_in_their_bits_and_part_generations_within_the_modulus() {
    for mask in [0xff, 0xf, 0xff00_0000] {
        let config = Config::DEFAULT.with_marks(mark_bits(mask).unwrap_or_else(|| panic!()));
        let modulus = config.mark_stamp_mask >> config.mark_stamp_shift;
        for generation in [0, 1, 2, 61, 62, 63, 64, u32::MAX - 1, u32::MAX] {
            let stamp = config.mark_stamp(generation);
            assert_ne!(stamp, 0, "{mask:#x} {generation}");
            assert_eq!(stamp & !config.mark_stamp_mask, 0, "{mask:#x} {generation}");
            // Two generations fewer than `modulus` flips apart never share a stamp
            // (short of the u32 wrapping, four billion flips on).
            for later in 1..modulus {
                let Some(later) = generation.checked_add(later) else {
                    break;
                };
                let other = config.mark_stamp(later);
                assert_ne!(
                    stamp, other,
                    "{mask:#x}: generations {generation} and {later}"
                );
            }
        }
    }
    let unstamped = Config {
        mark_stamp_mask: 0,
        mark_stamp_shift: 0,
        ..Config::DEFAULT
    };
    assert_eq!(unstamped.mark_stamp(7), 0);
}

#[test]
fn conntrack_timeouts_follow_protocol_and_state_and_each_pod_gets_an_eighth() {
    let c = Config::DEFAULT;
    assert_eq!(c.ct_timeout_ns(6, CT_STATE_OPENING), c.ct_tcp_opening_ns);
    assert_eq!(
        c.ct_timeout_ns(6, CT_STATE_ESTABLISHED),
        c.ct_tcp_established_ns
    );
    assert_eq!(c.ct_timeout_ns(6, CT_STATE_CLOSED), c.ct_tcp_closing_ns);
    assert_eq!(c.ct_timeout_ns(17, CT_STATE_ESTABLISHED), c.ct_udp_ns);
    assert_eq!(c.ct_timeout_ns(132, CT_STATE_OPENING), c.ct_udp_ns);
    assert_eq!(c.ct_timeout_ns(58, CT_STATE_OPENING), c.ct_icmp_ns);
    assert_eq!(c.ct_timeout_ns(47, CT_STATE_OPENING), c.ct_other_ns);
}

#[test]
fn every_counter_has_a_name_and_its_own_slot() {
    let counters = [
        STAT_ALLOW_UNISOLATED,
        STAT_ALLOW_TRACKED,
        STAT_ALLOW_POLICY,
        STAT_ALLOW_NON_IP,
        STAT_ALLOW_NODE,
        STAT_ALLOW_DEFERRED_EGRESS,
        STAT_ALLOW_RELATED,
        STAT_WOULD_DROP_POLICY,
        STAT_ALLOW_SERVICE_EGRESS,
        STAT_DROP_POLICY,
        STAT_DROP_UNKNOWN_ENDPOINT,
        STAT_DROP_MALFORMED,
        STAT_DROP_DEFERRED_UNKNOWN_SOURCE,
        STAT_DROP_DEFERRED_EGRESS,
        STAT_DROP_SPOOFED_SOURCE,
        STAT_DROP_REVOKED,
        STAT_DROP_SOURCE_EGRESS,
        STAT_DROP_CT_ENDPOINT_LIMIT,
        STAT_DROP_CT_FULL,
        STAT_DROP_FRAGMENT_UNKNOWN,
        STAT_DROP_FRAGMENT_TINY,
        STAT_DROP_FRAGMENT_OVERLAP,
        STAT_DROP_VLAN,
        STAT_DROP_ETHER_TYPE,
        STAT_DROP_ARP_SPOOFED,
        STAT_DROP_ARP_UNSUPPORTED,
        STAT_DROP_IPV6_EXTENSION_CHAIN,
        STAT_DROP_IPV6_ROUTING_HEADER,
        STAT_DROP_TUNNEL,
        STAT_DROP_MISDELIVERED,
        STAT_DROP_STATE_CHANGED,
        STAT_EVENTS_RATE_LIMITED,
        STAT_EVENTS_RING_FULL,
        STAT_EVENTS_ENDPOINT_LIMITED,
    ];
    for (i, stat) in counters.iter().enumerate() {
        assert!(*stat < STATS_LEN);
        // Verdicts first, side counters after: a packet bumps one verdict.
        let side = matches!(
            *stat,
            STAT_EVENTS_RATE_LIMITED | STAT_EVENTS_RING_FULL | STAT_EVENTS_ENDPOINT_LIMITED
        );
        assert_eq!(*stat >= STAT_VERDICTS, side, "counter {stat}");
        assert!(!STAT_NAMES[*stat as usize].is_empty(), "counter {stat}");
        assert!(!counters[..i].contains(stat), "counter {stat} twice");
    }
    let named = STAT_NAMES.iter().filter(|n| !n.is_empty()).count();
    assert_eq!(named, counters.len());
    // Tests and `policy-agent` read counters by name.
    assert_eq!(
        STAT_NAMES[STAT_DROP_SPOOFED_SOURCE as usize],
        "drop_spoofed_source"
    );
}

#[test]
fn tunnel_ports_are_stored_big_endian_with_zero_in_unused_slots() {
    let slots = Config::DEFAULT.tunnel_ports_be;
    assert_eq!(slots.len(), TUNNEL_PORTS_MAX);
    for (i, port) in DEFAULT_TUNNEL_PORTS.iter().enumerate() {
        assert_eq!(slots[i].to_ne_bytes(), port.to_be_bytes(), "slot {i}");
    }
    assert!(slots[DEFAULT_TUNNEL_PORTS.len()..].iter().all(|p| *p == 0));
    // Ports past the last slot are left out, not wrapped around.
    let many: Vec<u16> = (1..=20).collect();
    let stored = Config::tunnel_ports(&many);
    assert_eq!(
        u16::from_be(stored[TUNNEL_PORTS_MAX - 1]),
        TUNNEL_PORTS_MAX as u16
    );
}
