//! `DatapathTables`: the compiler's output, the desired content of the kernel maps
//! in host byte order, plus the lookup the BPF program performs on it.
//!
//! This is the whole contract between the policy engine and the dataplane: the
//! dataplane converts it to `policy_common` layouts and wire byte order; tests look
//! it up with `lookup` exactly as `policy-ebpf` does.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr};

use policy_common::peer::CLASS_WORLD;

use crate::model::ObjectRef;

/// Traffic direction relative to the local pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Direction {
    /// Into the pod.
    Ingress,
    /// Out of the pod.
    Egress,
}

impl Direction {
    /// The `policy_common::verdict::DIRECTION_*` code.
    pub fn code(self) -> u8 {
        match self {
            Direction::Ingress => policy_common::verdict::DIRECTION_INGRESS,
            Direction::Egress => policy_common::verdict::DIRECTION_EGRESS,
        }
    }
}

/// What `ENDPOINTS` holds for one local pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    /// Shared by local pods that every policy treats alike.
    pub endpoint_id: u32,
    /// Some policy selects the pod for ingress.
    pub isolated_ingress: bool,
    /// Some policy selects the pod for egress.
    pub isolated_egress: bool,
}

impl EndpointEntry {
    /// Whether the pod is isolated in `direction`.
    pub fn isolated(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.isolated_ingress,
            Direction::Egress => self.isolated_egress,
        }
    }
}

/// A `POLICY` key with its wildcards made explicit (host byte order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyMatch {
    /// Local endpoint identity.
    pub endpoint_id: u32,
    /// Peer class.
    pub class_id: u32,
    /// Direction relative to the local pod.
    pub direction: Direction,
    /// IP protocol number; `None` = every protocol (and then `port` is `None`).
    pub protocol: Option<u8>,
    /// Destination port; `None` = every port of `protocol`.
    pub port: Option<u16>,
}

/// Which policy rule an entry comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleRef {
    /// Index into `DatapathTables::policy_names`.
    pub policy_id: u32,
    /// Index of the rule in that policy's ingress or egress list.
    pub rule_index: u32,
}

/// Something the compiler could not enforce exactly; the affected pods fail closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The policy concerned.
    pub policy: ObjectRef,
    /// What was not enforced and what happens instead.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {}: {}", self.policy, self.message)
    }
}

/// The desired content of every policy map, for the pods of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathTables {
    /// Local pods and their identity and isolation.
    pub endpoints: BTreeMap<ObjectRef, EndpointEntry>,
    /// IPv4 peer addresses with a class other than `CLASS_WORLD`.
    pub peers_v4: BTreeMap<Ipv4Addr, u32>,
    /// Allow entries.
    pub policy: BTreeMap<PolicyMatch, RuleRef>,
    /// Policy names by `RuleRef::policy_id`.
    pub policy_names: Vec<ObjectRef>,
    /// What could not be enforced exactly (fail closed).
    pub diagnostics: Vec<Diagnostic>,
}

impl DatapathTables {
    /// The verdict the BPF program reaches for a new flow of `pod` (not conntrack):
    /// `Some(None)` when `pod` is not isolated in `direction`, `Some(Some(rule))` when
    /// a rule allows it, `None` when it is dropped (or `pod` is not local).
    /// Follows the lookup order documented in `policy-ebpf`'s `decide`.
    pub fn lookup(
        &self,
        pod: &ObjectRef,
        direction: Direction,
        peer: Ipv4Addr,
        protocol: u8,
        port: u16,
    ) -> Option<Option<RuleRef>> {
        let endpoint = self.endpoints.get(pod)?;
        if !endpoint.isolated(direction) {
            return Some(None);
        }
        let class_id = self.peers_v4.get(&peer).copied().unwrap_or(CLASS_WORLD);
        let base = PolicyMatch {
            endpoint_id: endpoint.endpoint_id,
            class_id,
            direction,
            protocol: Some(protocol),
            port: Some(port),
        };
        // Longest prefix first: exact port, then all ports, then all protocols.
        [
            base,
            PolicyMatch { port: None, ..base },
            PolicyMatch {
                protocol: None,
                port: None,
                ..base
            },
        ]
        .iter()
        .find_map(|key| self.policy.get(key))
        .map(|rule| Some(*rule))
    }
}

impl fmt::Display for DatapathTables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "endpoints:")?;
        for (pod, e) in &self.endpoints {
            writeln!(
                f,
                "  {pod}: id={} ingress={} egress={}",
                e.endpoint_id,
                if e.isolated_ingress {
                    "isolated"
                } else {
                    "open"
                },
                if e.isolated_egress {
                    "isolated"
                } else {
                    "open"
                },
            )?;
        }
        writeln!(f, "peers_v4:")?;
        for (addr, class) in &self.peers_v4 {
            writeln!(f, "  {addr} -> class {class}")?;
        }
        writeln!(f, "policy:")?;
        for (m, rule) in &self.policy {
            let proto = m.protocol.map_or("*".to_string(), |p| p.to_string());
            let port = m.port.map_or("*".to_string(), |p| p.to_string());
            let name = self
                .policy_names
                .get(rule.policy_id as usize)
                .map_or("?".to_string(), ToString::to_string);
            writeln!(
                f,
                "  ep={} class={} {:?} proto={proto} port={port} -> {name} rule {}",
                m.endpoint_id, m.class_id, m.direction, rule.rule_index
            )?;
        }
        Ok(())
    }
}
