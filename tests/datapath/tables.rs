//! `DatapathTables` written by hand, for datapath behaviour the compiler on this
//! branch does not produce yet (ipBlock prefixes, IPv6, node and Service flags).

use std::net::IpAddr;

use ipnet::IpNet;
use policy_agent::policy::tables::{
    DatapathTables, Direction, EndpointEntry, Isolation, PeerEntry, PolicyMatch, PortBlock, RuleRef,
};

use super::net::Net;

/// A table builder over the pods of one `Net`.
pub struct Tables<'a> {
    net: &'a Net,
    /// The tables built so far.
    pub tables: DatapathTables,
}

impl<'a> Tables<'a> {
    /// Every pod of `net` as an open local endpoint (id = position + 1) with both
    /// of its addresses; no peers, no rules.
    pub fn new(net: &'a Net) -> Self {
        let mut tables = DatapathTables::default();
        for (i, pod) in net.pods.iter().enumerate() {
            let endpoint_id = u32::try_from(i + 1).unwrap_or(u32::MAX);
            tables.endpoints.insert(
                pod.key.clone(),
                EndpointEntry {
                    endpoint_id,
                    isolated_ingress: false,
                    isolated_egress: false,
                    ..EndpointEntry::default()
                },
            );
            tables
                .endpoint_addresses
                .insert(IpAddr::V4(pod.v4), pod.key.clone());
            tables
                .endpoint_addresses
                .insert(IpAddr::V6(pod.v6), pod.key.clone());
        }
        tables
            .policy_names
            .push(policy_agent::model::ObjectRef::new("x", "hand-written"));
        Self { net, tables }
    }

    fn entry(&mut self, pod: &str) -> &mut EndpointEntry {
        let key = self.net.pod(pod).key.clone();
        self.tables
            .endpoints
            .get_mut(&key)
            .unwrap_or_else(|| panic!("no endpoint {key}"))
    }

    /// Leaves `pod` out of the endpoints and their addresses: its interface is no
    /// registered endpoint (and its addresses no known source).
    pub fn unregistered(mut self, pod: &str) -> Self {
        let key = self.net.pod(pod).key.clone();
        self.tables.endpoints.remove(&key);
        self.tables
            .endpoint_addresses
            .retain(|_, owner| *owner != key);
        self
    }

    /// Lets `pod` send encapsulated traffic (as a namespace that allows tunnels).
    pub fn allow_tunnels(mut self, pod: &str) -> Self {
        self.entry(pod).allow_tunnels = true;
        self
    }

    /// Makes `pod` default-deny in the given directions.
    pub fn isolate(mut self, pod: &str, ingress: bool, egress: bool) -> Self {
        let entry = self.entry(pod);
        entry.isolated_ingress |= ingress;
        entry.isolated_egress |= egress;
        self
    }

    /// Records policies `ingress` and `egress` (ids) as those isolating `pod`
    /// (`DatapathTables::isolation`, which names the deny counters).
    pub fn isolated_by(mut self, pod: &str, ingress: &[u32], egress: &[u32]) -> Self {
        let endpoint_id = self.entry(pod).endpoint_id;
        self.tables.isolation.insert(
            endpoint_id,
            Isolation {
                ingress: ingress.to_vec(),
                egress: egress.to_vec(),
            },
        );
        self
    }

    /// Puts prefix `cidr` in `class`.
    pub fn prefix(self, cidr: &str, class_id: u32) -> Self {
        self.peer(
            cidr,
            PeerEntry {
                class_id,
                node: false,
                service: false,
            },
        )
    }

    /// Sets the peer entry of prefix `cidr`.
    pub fn peer(mut self, cidr: &str, entry: PeerEntry) -> Self {
        let net: IpNet = cidr.parse().unwrap_or_else(|e| panic!("{cidr}: {e}"));
        self.tables.peers.insert(net, entry);
        self
    }

    /// Flags prefix `cidr` as a Service ClusterIP (class 0, not the node).
    pub fn service(self, cidr: &str) -> Self {
        self.peer(
            cidr,
            PeerEntry {
                class_id: 0,
                node: false,
                service: true,
            },
        )
    }

    /// Puts both addresses of `pod` (as host prefixes) in `class`.
    pub fn pod_class(self, pod: &str, class_id: u32) -> Self {
        let (v4, v6) = (self.net.pod(pod).v4, self.net.pod(pod).v6);
        self.prefix(&format!("{v4}/32"), class_id)
            .prefix(&format!("{v6}/128"), class_id)
    }

    /// Allows `pod` to talk with peers of `class_id` in `direction` on `protocol`
    /// (`None`: all) and `port` (`None`: all ports).
    pub fn allow(
        mut self,
        pod: &str,
        direction: Direction,
        class_id: u32,
        protocol: Option<u8>,
        port: Option<PortBlock>,
    ) -> Self {
        let endpoint_id = self.entry(pod).endpoint_id;
        let rule_index = u32::try_from(self.tables.policy_entries()).unwrap_or(u32::MAX);
        self.tables.allow(
            PolicyMatch {
                endpoint_id,
                class_id,
                direction,
                protocol,
                port,
            },
            RuleRef {
                policy_id: 0,
                rule_index,
            },
        );
        self
    }

    /// Allows `pod` to talk with peers of `class_id` in `direction` on one `port`
    /// of `protocol`.
    pub fn allow_port(
        self,
        pod: &str,
        direction: Direction,
        class_id: u32,
        protocol: u8,
        port: u16,
    ) -> Self {
        self.allow(
            pod,
            direction,
            class_id,
            Some(protocol),
            Some(PortBlock::single(port)),
        )
    }

    /// The finished tables.
    pub fn build(self) -> DatapathTables {
        self.tables
    }
}
