//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`, network-policy-api
//! v0.2.0) conversion: the ONE place that reads the CRD's wire shape. No
//! k8s-openapi type exists for it, so `ClusterNetworkPolicy` here is the watched
//! and deserialized type: its metadata, and its `spec` kept as JSON, read field by
//! field below so that a malformed part spoils only that part.
//!
//! Checks follow the CRD's OpenAPI schema and CEL rules (the API server's
//! validation of the object). What the API server would reject:
//! - in a peer or a `protocols` entry (not exactly one field set, a bad CIDR, a
//!   bad port, `domainNames`, a named port next to networks/nodes peers), or a
//!   `from`/`to`/`protocols` list of the wrong length: that entry becomes
//!   `ClusterPeer::Invalid`/`ClusterPort::Invalid`, so its rule fails closed
//!   (`ClusterRule::fails_closed`); a bad subject becomes `ClusterSubject::Invalid`.
//!   Both sources keep such a policy and warn, naming the object and the field;
//! - anywhere else (tier, priority, action, rule name, rule count, a spec that is
//!   not an object): an error. The API server source puts the fail-closed stand-in
//!   (`cluster_network_policy_fail_closed`) in its place; the manifest loader stops.
//!
//! `networks` entries are what upstream's `isCIDR` accepts (Go's
//! `netip.ParsePrefix`: host bits may be set, no zone, no IPv4-mapped IPv6
//! address), stored truncated to their network: `10.1.2.3/8` is `10.0.0.0/8`.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, ObjectMeta};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use super::{caps, network_policy::label_selector, port_number, ConvertError, Result};
use crate::model::{
    ClusterNetworkPolicy as Model, ClusterPeer, ClusterPort, ClusterRule, ClusterSubject,
    NamespacedPods, Protocol, RuleAction, Tier, MAX_CLUSTER_PRIORITY, MAX_CLUSTER_RULES,
    MAX_CLUSTER_RULE_ITEMS, MAX_CLUSTER_RULE_NAME,
};

/// A ClusterNetworkPolicy as the API server and manifests hold it: the metadata,
/// and the spec as JSON (`status` is not read). Serialized with its `apiVersion`
/// and `kind`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ClusterNetworkPolicy {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `spec`, as given.
    #[serde(default)]
    pub spec: Option<Value>,
}

impl Serialize for ClusterNetworkPolicy {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("apiVersion", <Self as k8s_openapi::Resource>::API_VERSION)?;
        map.serialize_entry("kind", <Self as k8s_openapi::Resource>::KIND)?;
        map.serialize_entry("metadata", &self.metadata)?;
        if let Some(spec) = &self.spec {
            map.serialize_entry("spec", spec)?;
        }
        map.end()
    }
}

impl k8s_openapi::Resource for ClusterNetworkPolicy {
    const API_VERSION: &'static str = "policy.networking.k8s.io/v1alpha2";
    const GROUP: &'static str = "policy.networking.k8s.io";
    const KIND: &'static str = "ClusterNetworkPolicy";
    const VERSION: &'static str = "v1alpha2";
    const URL_PATH_SEGMENT: &'static str = "clusternetworkpolicies";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::ListableResource for ClusterNetworkPolicy {
    const LIST_KIND: &'static str = "ClusterNetworkPolicyList";
}

impl k8s_openapi::Metadata for ClusterNetworkPolicy {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `spec`, the fields read whole.
#[derive(Deserialize)]
struct Spec {
    tier: Option<String>,
    priority: Option<i64>,
    subject: Option<Value>,
    ingress: Option<Vec<Value>>,
    egress: Option<Vec<Value>>,
}

/// One ingress or egress rule; `from` is read for ingress, `to` for egress (the
/// API server prunes the other).
#[derive(Deserialize)]
struct WireRule {
    name: Option<String>,
    action: Option<String>,
    from: Option<Vec<Value>>,
    to: Option<Vec<Value>>,
    protocols: Option<Vec<Value>>,
}

/// `subject`, an ingress peer or an egress peer (ingress ones only read
/// `namespaces` and `pods`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePeer {
    namespaces: Option<K8sSelector>,
    pods: Option<WireNamespacedPods>,
    networks: Option<Vec<String>>,
    nodes: Option<K8sSelector>,
    domain_names: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNamespacedPods {
    namespace_selector: Option<K8sSelector>,
    pod_selector: Option<K8sSelector>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireProtocol {
    tcp: Option<WireTransport>,
    udp: Option<WireTransport>,
    sctp: Option<WireTransport>,
    destination_named_port: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireTransport {
    destination_port: Option<WirePort>,
}

#[derive(Deserialize)]
struct WirePort {
    number: Option<i64>,
    range: Option<WireRange>,
}

#[derive(Deserialize)]
struct WireRange {
    start: Option<i64>,
    end: Option<i64>,
}

/// Which list a rule is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn word(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn peers_key(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

/// Deserializes `value` as `T`; a type error names its field under `field`.
fn decode<T: DeserializeOwned>(value: &Value, field: &str) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            field.to_string()
        } else {
            format!("{field}.{path}")
        };
        ConvertError::Malformed {
            field,
            message: err.into_inner().to_string(),
        }
    })
}

/// "Wrong" as a `Result`, for the helpers below.
fn invalid<T>(field: &str, reason: impl Into<String>) -> Result<T> {
    Err(ConvertError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    })
}

/// `(field, reason)` of an error, for an `Invalid` entry.
fn field_and_reason(error: ConvertError, fallback: &str) -> (String, String) {
    match error {
        ConvertError::Invalid { field, reason } => (field, reason),
        ConvertError::Malformed { field, message } => (field, message),
        ConvertError::Missing { field } => (field, "required field is missing".to_string()),
        ConvertError::PortOutOfRange { field, value } => {
            (field, format!("{value} is not a port number (1-65535)"))
        }
        other => (fallback.to_string(), other.to_string()),
    }
}

/// How messages name the object.
fn describe(name: &str) -> String {
    format!("ClusterNetworkPolicy {name}")
}

/// Converts a ClusterNetworkPolicy; its mode comes from the `podwall.io/mode`
/// annotation, as a NetworkPolicy's. Entries the API server would reject become
/// `Invalid` (fail closed) and are logged as warnings.
pub fn cluster_network_policy(cnp: &ClusterNetworkPolicy) -> Result<Model> {
    caps::cluster_network_policy(cnp)?;
    let name = super::required_name(&cnp.metadata)?;
    let (mode, warning) = super::network_policy::mode(&describe(&name), annotations(cnp));
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let Some(spec_value) = &cnp.spec else {
        return Err(ConvertError::Missing {
            field: "spec".to_string(),
        });
    };
    let spec: Spec = decode(spec_value, "spec")?;
    let tier = match spec.tier.as_deref() {
        Some("Admin") => Tier::Admin,
        Some("Baseline") => Tier::Baseline,
        Some(other) => return invalid("spec.tier", format!("{other:?} is not Admin or Baseline")),
        None => return missing("spec.tier"),
    };
    let priority = match spec.priority {
        None => return missing("spec.priority"),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p <= MAX_CLUSTER_PRIORITY)
            .map_or_else(
                || {
                    invalid(
                        "spec.priority",
                        format!("{p} is not in 0..={MAX_CLUSTER_PRIORITY}"),
                    )
                },
                Ok,
            )?,
    };
    let subject = match &spec.subject {
        None => return missing("spec.subject"),
        Some(value) => subject(value),
    };
    let ingress = rules(spec.ingress.as_deref(), Direction::Ingress)?;
    let egress = rules(spec.egress.as_deref(), Direction::Egress)?;
    let policy = Model {
        name,
        tier,
        priority,
        subject,
        ingress,
        egress,
        mode,
    };
    for (field, reason) in invalid_entries(&policy) {
        tracing::warn!(
            "{}: {field}: {reason}; the entry fails closed",
            describe(&policy.name)
        );
    }
    Ok(policy)
}

fn missing<T>(field: &str) -> Result<T> {
    Err(ConvertError::Missing {
        field: field.to_string(),
    })
}

fn annotations(cnp: &ClusterNetworkPolicy) -> Option<&BTreeMap<String, String>> {
    cnp.metadata.annotations.as_ref()
}

/// `(field, reason)` of every `Invalid` subject, peer and port of `policy`.
pub fn invalid_entries(policy: &Model) -> Vec<(String, String)> {
    let mut found = Vec::new();
    if let ClusterSubject::Invalid { reason } = &policy.subject {
        found.push(("spec.subject".to_string(), reason.clone()));
    }
    for rule in policy.ingress.iter().chain(&policy.egress) {
        for peer in &rule.peers {
            if let ClusterPeer::Invalid { field, reason } = peer {
                found.push((field.clone(), reason.clone()));
            }
        }
        for port in &rule.ports {
            if let ClusterPort::Invalid { field, reason } = port {
                found.push((field.clone(), reason.clone()));
            }
        }
    }
    found
}

/// What stands in for a ClusterNetworkPolicy `cluster_network_policy` rejects,
/// for the API server source (fail closed): an Admin policy of priority 0 with
/// its subject (`Invalid` when that does not convert either) and, for each
/// direction the object has rules in (both when that is unknown), one Deny rule
/// whose only peer is `Invalid` with `error` as its reason, which denies
/// everything. Its mode comes from the annotation, as a NetworkPolicy
/// stand-in's. `None` when the object has no name.
pub fn cluster_network_policy_fail_closed(
    cnp: &ClusterNetworkPolicy,
    error: &ConvertError,
) -> Option<Model> {
    let name = super::required_name(&cnp.metadata).ok()?;
    let (mode, _) = super::network_policy::mode(&describe(&name), annotations(cnp));
    let spec = cnp.spec.as_ref().and_then(Value::as_object);
    let reason = format!("the policy was rejected: {error}");
    let subject = match spec.and_then(|spec| spec.get("subject")) {
        Some(value) => subject(value),
        None => ClusterSubject::Invalid {
            reason: error.to_string(),
        },
    };
    let has_rules = |key: &str| match spec {
        None => true,
        Some(spec) => spec
            .get(key)
            .is_some_and(|rules| rules.as_array().is_none_or(|rules| !rules.is_empty())),
    };
    let mut stand_in = Model {
        name,
        tier: Tier::Admin,
        priority: 0,
        subject,
        ingress: Vec::new(),
        egress: Vec::new(),
        mode,
    };
    deny_everything(
        &mut stand_in,
        has_rules(Direction::Ingress.word()),
        has_rules(Direction::Egress.word()),
        &reason,
    );
    Some(stand_in)
}

/// `policy` made a fail-closed stand-in in place: Admin tier, priority 0, and
/// as its only rules one Deny rule whose only peer is `Invalid` (with `reason`)
/// in each direction asked for. Its name, subject and mode stay.
pub fn deny_everything(policy: &mut Model, ingress: bool, egress: bool, reason: &str) {
    let rules = |wanted: bool, direction: Direction| -> Vec<ClusterRule> {
        wanted
            .then(|| ClusterRule::deny_everything(format!("spec.{}", direction.word()), reason))
            .into_iter()
            .collect()
    };
    policy.tier = Tier::Admin;
    policy.priority = 0;
    policy.ingress = rules(ingress, Direction::Ingress);
    policy.egress = rules(egress, Direction::Egress);
}

/// `spec.subject`: exactly one of `namespaces` and `pods`.
fn subject(value: &Value) -> ClusterSubject {
    match peer_or_subject(value, "spec.subject", None) {
        Ok(ClusterPeer::Namespaces(selector)) => ClusterSubject::Namespaces(selector),
        Ok(ClusterPeer::Pods(pods)) => ClusterSubject::Pods(pods),
        Ok(_) => ClusterSubject::Invalid {
            reason: "exactly one of namespaces or pods must be set".to_string(),
        },
        Err(error) => {
            let (field, reason) = field_and_reason(error, "spec.subject");
            ClusterSubject::Invalid {
                reason: format!("{field}: {reason}"),
            }
        }
    }
}

/// The rules of one direction: at most `MAX_CLUSTER_RULES`.
fn rules(list: Option<&[Value]>, direction: Direction) -> Result<Vec<ClusterRule>> {
    let list = list.unwrap_or_default();
    let field = format!("spec.{}", direction.word());
    if list.len() > MAX_CLUSTER_RULES {
        return invalid(
            &field,
            format!(
                "{} rules, more than the {MAX_CLUSTER_RULES} allowed",
                list.len()
            ),
        );
    }
    list.iter()
        .enumerate()
        .map(|(i, value)| rule(value, &format!("{field}[{i}]"), direction))
        .collect()
}

/// One rule: name, action, peers and protocols.
fn rule(value: &Value, field: &str, direction: Direction) -> Result<ClusterRule> {
    let wire: WireRule = decode(value, field)?;
    let name = wire.name.unwrap_or_default();
    let length = name.chars().count();
    if length > MAX_CLUSTER_RULE_NAME {
        return invalid(
            &format!("{field}.name"),
            format!("{length} characters, more than the {MAX_CLUSTER_RULE_NAME} allowed"),
        );
    }
    let action = match wire.action.as_deref() {
        Some("Accept") => RuleAction::Accept,
        Some("Deny") => RuleAction::Deny,
        Some("Pass") => RuleAction::Pass,
        Some(other) => {
            let reason = format!("{other:?} is not Accept, Deny or Pass");
            return invalid(&format!("{field}.action"), reason);
        }
        None => return missing(&format!("{field}.action")),
    };
    let peers_field = format!("{field}.{}", direction.peers_key());
    let peer_values = match direction {
        Direction::Ingress => wire.from,
        Direction::Egress => wire.to,
    };
    let peers = match peer_values.as_deref() {
        None | Some([]) => vec![ClusterPeer::Invalid {
            field: peers_field,
            reason: format!("must have 1 to {MAX_CLUSTER_RULE_ITEMS} items"),
        }],
        Some(list) if list.len() > MAX_CLUSTER_RULE_ITEMS => vec![ClusterPeer::Invalid {
            field: peers_field,
            reason: format!(
                "{} items, more than the {MAX_CLUSTER_RULE_ITEMS} allowed",
                list.len()
            ),
        }],
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, value)| peer(value, &format!("{peers_field}[{i}]"), direction))
            .collect(),
    };
    let protocols_field = format!("{field}.protocols");
    let ports = protocols(wire.protocols.as_deref(), &protocols_field);
    let ports = without_named_ports_for_addresses(&peers, ports, &protocols_field);
    Ok(ClusterRule {
        name,
        action,
        peers,
        ports,
    })
}

/// One `from`/`to` entry, `Invalid` when the API server would reject it.
fn peer(value: &Value, field: &str, direction: Direction) -> ClusterPeer {
    peer_or_subject(value, field, Some(direction)).unwrap_or_else(|error| {
        let (field, reason) = field_and_reason(error, field);
        ClusterPeer::Invalid { field, reason }
    })
}

/// A subject (`direction` `None`) or a peer: exactly one of the fields its
/// place has (`namespaces`, `pods`; egress peers also `networks`, `nodes`,
/// `domainNames`). A peer podwall does not enforce (`domainNames`) is an error.
fn peer_or_subject(
    value: &Value,
    field: &str,
    direction: Option<Direction>,
) -> Result<ClusterPeer> {
    let wire: WirePeer = decode(value, field)?;
    let egress = direction == Some(Direction::Egress);
    let mut set = Vec::new();
    if wire.namespaces.is_some() {
        set.push("namespaces");
    }
    if wire.pods.is_some() {
        set.push("pods");
    }
    if egress {
        for (present, key) in [
            (wire.networks.is_some(), "networks"),
            (wire.nodes.is_some(), "nodes"),
            (wire.domain_names.is_some(), "domainNames"),
        ] {
            if present {
                set.push(key);
            }
        }
    }
    if set.len() != 1 {
        let fields = if egress {
            "namespaces, pods, networks, nodes or domainNames"
        } else {
            "namespaces or pods"
        };
        let found = if set.is_empty() {
            String::new()
        } else {
            format!(" (found {})", set.join(", "))
        };
        return invalid(field, format!("exactly one of {fields} must be set{found}"));
    }
    if let Some(selector) = &wire.namespaces {
        return Ok(ClusterPeer::Namespaces(label_selector(
            selector,
            &format!("{field}.namespaces"),
        )?));
    }
    if let Some(pods) = &wire.pods {
        return namespaced_pods(pods, &format!("{field}.pods")).map(ClusterPeer::Pods);
    }
    if let Some(selector) = &wire.nodes {
        return Ok(ClusterPeer::Nodes(label_selector(
            selector,
            &format!("{field}.nodes"),
        )?));
    }
    if let Some(networks) = &wire.networks {
        return cidrs(networks, &format!("{field}.networks")).map(ClusterPeer::Networks);
    }
    invalid(
        &format!("{field}.domainNames"),
        "domainNames peers are not enforced by podwall yet",
    )
}

/// `pods`: `podSelector` required, `namespaceSelector` optional (absent: every
/// namespace).
fn namespaced_pods(pods: &WireNamespacedPods, field: &str) -> Result<NamespacedPods> {
    let Some(pod_selector) = &pods.pod_selector else {
        return missing(&format!("{field}.podSelector"));
    };
    let namespaces = match &pods.namespace_selector {
        None => Default::default(),
        Some(selector) => label_selector(selector, &format!("{field}.namespaceSelector"))?,
    };
    Ok(NamespacedPods {
        namespaces,
        pods: label_selector(pod_selector, &format!("{field}.podSelector"))?,
    })
}

/// `networks`: 1 to 25 CIDRs, no text twice (a list of type set), each
/// truncated to its network.
fn cidrs(texts: &[String], field: &str) -> Result<Vec<IpNet>> {
    if texts.is_empty() || texts.len() > MAX_CLUSTER_RULE_ITEMS {
        let reason = format!(
            "{} items; must have 1 to {MAX_CLUSTER_RULE_ITEMS}",
            texts.len()
        );
        return invalid(field, reason);
    }
    for (i, text) in texts.iter().enumerate() {
        if texts[..i].contains(text) {
            return invalid(
                &format!("{field}[{i}]"),
                format!("duplicate value {text:?}"),
            );
        }
    }
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| cidr(text, &format!("{field}[{i}]")))
        .collect()
}

/// What `isCIDR` accepts (Go's `netip.ParsePrefix`: no leading zeros in an IPv4
/// octet or in the prefix length; and neither a zone nor an IPv4-mapped IPv6
/// address), at most 43 characters long; truncated to its network.
pub fn cidr(text: &str, field: &str) -> Result<IpNet> {
    let net = (text.len() <= 43).then(|| parse_prefix(text)).flatten();
    match net {
        Some(net) => Ok(net.trunc()),
        None => invalid(
            field,
            format!("{text:?} is not a CIDR such as 10.0.0.0/8 or fd00::/64"),
        ),
    }
}

/// `address/bits` as Go's `netip.ParsePrefix` reads it, less what `isCIDR`
/// refuses besides (IPv4-mapped IPv6 addresses); std's address parser already
/// refuses zones and IPv4 octets with leading zeros.
fn parse_prefix(text: &str) -> Option<IpNet> {
    let (address, bits) = text.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    if let IpAddr::V6(v6) = address {
        if v6.to_ipv4_mapped().is_some() {
            return None;
        }
    }
    let digits = !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit());
    if !digits || (bits.len() > 1 && bits.starts_with('0')) {
        return None;
    }
    IpNet::new(address, bits.parse().ok()?).ok()
}

/// `protocols`: absent is every protocol and port; present, 1 to 25 entries.
fn protocols(list: Option<&[Value]>, field: &str) -> Vec<ClusterPort> {
    match list {
        None => Vec::new(),
        Some(list) if list.is_empty() || list.len() > MAX_CLUSTER_RULE_ITEMS => {
            vec![ClusterPort::Invalid {
                field: field.to_string(),
                reason: format!(
                    "{} items; must have 1 to {MAX_CLUSTER_RULE_ITEMS}",
                    list.len()
                ),
            }]
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let field = format!("{field}[{i}]");
                protocol(value, &field).unwrap_or_else(|error| {
                    let (field, reason) = field_and_reason(error, &field);
                    ClusterPort::Invalid { field, reason }
                })
            })
            .collect(),
    }
}

/// One `protocols` entry: exactly one of `tcp`, `udp`, `sctp` (each with a
/// `destinationPort`) and `destinationNamedPort`.
fn protocol(value: &Value, field: &str) -> Result<ClusterPort> {
    let wire: WireProtocol = decode(value, field)?;
    let transports = [
        (wire.tcp, Protocol::Tcp, "tcp"),
        (wire.udp, Protocol::Udp, "udp"),
        (wire.sctp, Protocol::Sctp, "sctp"),
    ];
    let set = transports.iter().filter(|(t, _, _)| t.is_some()).count()
        + usize::from(wire.destination_named_port.is_some());
    if set != 1 {
        return invalid(
            field,
            "exactly one of tcp, udp, sctp or destinationNamedPort must be set",
        );
    }
    if let Some(name) = wire.destination_named_port {
        if name.is_empty() {
            return invalid(
                &format!("{field}.destinationNamedPort"),
                "must not be empty",
            );
        }
        return Ok(ClusterPort::Named(name));
    }
    for (transport, protocol, key) in transports {
        if let Some(transport) = transport {
            let port_field = format!("{field}.{key}.destinationPort");
            let Some(port) = transport.destination_port else {
                return missing(&port_field);
            };
            let (first, last) = destination_port(&port, &port_field)?;
            return Ok(ClusterPort::Ports {
                protocol,
                first,
                last,
            });
        }
    }
    invalid(field, "no protocol set")
}

/// `destinationPort`: exactly one of `number` and `range` (`start < end`), ports
/// in 1..=65535.
fn destination_port(port: &WirePort, field: &str) -> Result<(u16, u16)> {
    match (port.number, &port.range) {
        (Some(number), None) => {
            let number = port_number(number, &format!("{field}.number"))?;
            Ok((number, number))
        }
        (None, Some(range)) => {
            let bound = |value: Option<i64>, key: &str| {
                let field = format!("{field}.range.{key}");
                value.map_or_else(|| missing(&field), |v| port_number(v, &field))
            };
            let start = bound(range.start, "start")?;
            let end = bound(range.end, "end")?;
            if start >= end {
                return invalid(
                    &format!("{field}.range"),
                    format!("start ({start}) must be less than end ({end})"),
                );
            }
            Ok((start, end))
        }
        _ => invalid(field, "exactly one of number or range must be set"),
    }
}

/// "networks/nodes/domainNames peer cannot be set with namedPorts since there
/// are no namedPorts for networks/nodes/domainNames": in a rule with such a
/// peer, each `destinationNamedPort` entry is `Invalid`.
fn without_named_ports_for_addresses(
    peers: &[ClusterPeer],
    ports: Vec<ClusterPort>,
    field: &str,
) -> Vec<ClusterPort> {
    let address_peer = peers.iter().any(|peer| match peer {
        ClusterPeer::Networks(_) | ClusterPeer::Nodes(_) => true,
        ClusterPeer::Invalid { field, .. } => {
            field.contains(".networks") || field.ends_with(".domainNames")
        }
        _ => false,
    });
    if !address_peer {
        return ports;
    }
    ports
        .into_iter()
        .enumerate()
        .map(|(i, port)| match port {
            ClusterPort::Named(name) => ClusterPort::Invalid {
                field: format!("{field}[{i}].destinationNamedPort"),
                reason: format!(
                    "named port {name:?} cannot be used in a rule with networks, nodes or \
                     domainNames peers"
                ),
            },
            other => other,
        })
        .collect()
}
