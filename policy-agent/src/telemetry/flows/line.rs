//! `FlowLine`: one verdict event named for people: which pod, which peer, which
//! port, what happened and which policies are behind it. Its JSON form is what
//! `policy-agent flows --output json` prints, one object per line.

use std::net::IpAddr;

use policy_common::verdict::{
    STAT_DROP_DEFERRED_EGRESS, STAT_DROP_POLICY, STAT_DROP_REVOKED, STAT_DROP_SOURCE_EGRESS,
    STAT_NAMES, STAT_WOULD_DROP_POLICY,
};
use serde::{Deserialize, Serialize, Serializer};

use super::{
    clock::{rfc3339, WallClock},
    names::FlowNames,
};
use crate::{
    dataplane::{EventVerdict, InterfaceIndex, VerdictRecord},
    policy::tables::Direction,
};

/// One end of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowEnd {
    /// The address the packet carried.
    pub address: IpAddr,
    /// Its port (ICMP echo: the identifier; 0 for other ICMP).
    pub port: u16,
    /// The pod holding the address, when it is a known pod address.
    pub pod: Option<String>,
}

impl FlowEnd {
    /// `ns/pod (address)` for a pod's address, else the bare address.
    pub fn describe(&self) -> String {
        match &self.pod {
            Some(pod) => format!("{pod} ({})", self.address),
            None => self.address.to_string(),
        }
    }

    /// The pod's name, else the address.
    pub fn short(&self) -> String {
        self.pod.clone().unwrap_or_else(|| self.address.to_string())
    }
}

/// The rule that decided a flow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DecidingRule {
    /// `namespace/name` of the policy; the name alone for a ClusterNetworkPolicy.
    pub policy: String,
    /// The rule: a ClusterNetworkPolicy rule by its `name`, any other by its
    /// path in the policy, e.g. `spec.ingress[0]`.
    pub rule: String,
}

impl DecidingRule {
    /// The rule as `explain` writes it: `ns/policy spec.ingress[0]`, or
    /// `guardrails/deny-others` for a ClusterNetworkPolicy's (whose policy has
    /// no namespace).
    pub fn describe(&self) -> String {
        if self.policy.contains('/') {
            format!("{} {}", self.policy, self.rule)
        } else {
            format!("{}/{}", self.policy, self.rule)
        }
    }
}

/// One verdict event, named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowLine {
    /// When the classifier decided, RFC 3339 UTC.
    pub time: String,
    /// The same instant in Unix nanoseconds (for the table's time column).
    #[serde(skip)]
    pub unix_ns: i128,
    /// The pod whose policy decided (`namespace/name`); `None` for an interface
    /// the names do not know.
    pub pod: Option<String>,
    /// The pod's host-side interface index.
    pub interface: InterfaceIndex,
    /// Relative to `pod`: `ingress` (the peer is the source) or `egress` (the
    /// peer is the destination).
    #[serde(serialize_with = "lowercase_direction")]
    pub direction: Direction,
    /// Where the packet came from.
    pub source: FlowEnd,
    /// Where it went (after Service DNAT when decided at the backend).
    pub destination: FlowEnd,
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`, the IP protocol number, or `-`
    /// (dropped before it was parsed).
    pub protocol: String,
    /// `allow`, `drop` or `would-drop`.
    pub verdict: EventVerdict,
    /// The datapath's counter for it, e.g. `drop_policy`, `allow_policy`.
    pub reason: String,
    /// For a drop or would-drop by policy: the ClusterNetworkPolicy whose `Deny`
    /// rule decided it (`denied_by`), else the policies isolating `pod` in
    /// `direction`, none of which allows the flow. Empty otherwise.
    pub policies: Vec<String>,
    /// For an allow by a rule: that rule.
    pub allowed_by: Option<DecidingRule>,
    /// For a drop or would-drop by a ClusterNetworkPolicy `Deny` rule: that rule.
    pub denied_by: Option<DecidingRule>,
    /// Packet length (`skb->len`).
    pub bytes: u32,
}

fn lowercase_direction<S: Serializer>(direction: &Direction, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(direction_name(*direction))
}

/// `ingress` or `egress`.
pub fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// The name of IP protocol `number` as NetworkPolicy and ping spell it; `-` for
/// 0, what an event carries for a packet dropped before it was parsed (0 is the
/// hop-by-hop header, never a packet's last protocol).
pub fn protocol_name(number: u8) -> String {
    match number {
        0 => "-".into(),
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        other => other.to_string(),
    }
}

/// Whether the counter `reason` means "isolated, and no rule allows it": the
/// verdicts that name the isolating policies (a revoked flow's event carries the
/// direction whose policies revoked it).
fn decided_by_isolation(reason: &str) -> bool {
    [
        STAT_DROP_POLICY,
        STAT_DROP_DEFERRED_EGRESS,
        STAT_DROP_REVOKED,
        STAT_DROP_SOURCE_EGRESS,
        STAT_WOULD_DROP_POLICY,
    ]
    .iter()
    .any(|stat| STAT_NAMES[*stat as usize] == reason)
}

impl FlowLine {
    /// Names `record` with `names` (the tables of its datapath) and `clock`. The
    /// pod is the one behind the event's interface (for a Service egress decided at
    /// the backend, the kernel reports the source pod's interface).
    pub fn name(record: &VerdictRecord, names: &FlowNames, clock: WallClock) -> Self {
        let end = |(address, port): (IpAddr, u16)| FlowEnd {
            address,
            port,
            pod: names.pod_at(address).map(str::to_string),
        };
        let source = end(record.source);
        let destination = end(record.destination);
        let pod = names.pod_on_interface(record.ifindex).map(str::to_string);
        // A ClusterNetworkPolicy rule's denial names its rule; a NetworkPolicy
        // drop names the policies isolating the pod.
        let by_policy =
            record.verdict != EventVerdict::Allowed && decided_by_isolation(record.reason);
        let denied_by = record
            .rule_slot
            .filter(|_| by_policy)
            .map(|slot| names.rule(slot));
        let policies = match &denied_by {
            Some(rule) => vec![rule.policy.clone()],
            None if by_policy => names.isolating(record.endpoint_id, record.direction),
            None => Vec::new(),
        };
        let allowed_by = record
            .rule_slot
            .filter(|_| record.verdict == EventVerdict::Allowed)
            .map(|slot| names.rule(slot));
        let unix_ns = clock.unix_ns(record.timestamp_ns);
        Self {
            time: rfc3339(unix_ns),
            unix_ns,
            pod,
            interface: record.ifindex,
            direction: record.direction,
            source,
            destination,
            protocol: protocol_name(record.protocol),
            verdict: record.verdict,
            reason: record.reason.to_string(),
            policies,
            allowed_by,
            denied_by,
            bytes: record.packet_len,
        }
    }

    /// The other end of the flow, seen from `pod`.
    pub fn peer(&self) -> &FlowEnd {
        match self.direction {
            Direction::Ingress => &self.source,
            Direction::Egress => &self.destination,
        }
    }

    /// Whether the flow's protocol has ports (TCP, UDP, SCTP); ICMP's "ports" are
    /// echo identifiers, and an unparsed packet has none.
    pub fn has_ports(&self) -> bool {
        matches!(self.protocol.as_str(), "TCP" | "UDP" | "SCTP")
    }

    /// `80/TCP`; a bare protocol when the flow has no ports (`has_ports`).
    pub fn port(&self) -> String {
        if self.has_ports() {
            format!("{}/{}", self.destination.port, self.protocol)
        } else {
            self.protocol.clone()
        }
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests;
