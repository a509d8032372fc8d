//! Names and records for the flow-log tests: pods `shop/web` (interface 12,
//! endpoint 3, isolated for ingress by `shop/deny-in` and `shop/web-in`) and
//! `shop/client` (interface 13), policy `shop/web-in` allowing with its rule 0,
//! which counts in slot 5.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use super::{DecidingRule, FlowNames};
use crate::{
    dataplane::{EventVerdict, VerdictRecord},
    policy::tables::{Direction, Isolation},
};

/// `shop/web`'s address.
pub(crate) const WEB: [u8; 4] = [10, 244, 0, 2];
/// `shop/client`'s address.
pub(crate) const CLIENT: [u8; 4] = [10, 244, 0, 3];

/// The names of the fixture cluster.
pub(crate) fn names() -> FlowNames {
    FlowNames {
        abi_version: policy_common::ABI_VERSION,
        instance: "test".into(),
        pid: std::process::id(),
        pid_namespace: None,
        events_pin: PathBuf::from("/sys/fs/bpf/podwall/test/events"),
        stats_pin: PathBuf::from("/sys/fs/bpf/podwall/test/stats"),
        maps_dir: PathBuf::from("/sys/fs/bpf/podwall/test/maps"),
        tables_since_ns: 0,
        interfaces: BTreeMap::from([(12, "shop/web".into()), (13, "shop/client".into())]),
        pods: BTreeMap::from([
            (IpAddr::from(WEB), "shop/web".into()),
            (IpAddr::from(CLIENT), "shop/client".into()),
        ]),
        policies: vec!["shop/deny-in".into(), "shop/web-in".into()],
        isolation: BTreeMap::from([(
            3,
            Isolation {
                ingress: vec![0, 1],
                egress: vec![],
            },
        )]),
        rules: BTreeMap::from([(
            5,
            DecidingRule {
                policy: "shop/web-in".into(),
                rule: "spec.ingress[0]".into(),
            },
        )]),
    }
}

/// `shop/client:40000 -> shop/web:80` TCP, dropped by policy at `shop/web`'s
/// ingress, at monotonic time 5 s.
pub(crate) fn drop_into_web() -> VerdictRecord {
    VerdictRecord {
        timestamp_ns: 5_000_000_000,
        ifindex: 12,
        endpoint_id: 3,
        direction: Direction::Ingress,
        verdict: EventVerdict::Dropped,
        reason: "drop_policy",
        source: (IpAddr::from(CLIENT), 40000),
        destination: (IpAddr::from(WEB), 80),
        protocol: 6,
        rule_slot: None,
        packet_len: 74,
    }
}

/// The same flow allowed by `shop/web-in` rule 0.
pub(crate) fn allow_into_web() -> VerdictRecord {
    VerdictRecord {
        verdict: EventVerdict::Allowed,
        reason: "allow_policy",
        rule_slot: Some(5),
        ..drop_into_web()
    }
}
