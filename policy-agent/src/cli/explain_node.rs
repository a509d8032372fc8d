//! `explain --node`: the verdict a running datapath (a node agent, a lab node)
//! makes for a connection, read from its pinned maps, side by side with the
//! evaluator's. Where both judge a side and they differ, that is a bug in
//! podwall (or tables that do not hold what the manifests say), and it is said
//! so, loudly.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::{
    causes::causes,
    dataplane::{
        EventVerdict, InterfaceIndex, KernelVerdict, PinnedTables, SideLookup, SideReading,
        TrackedFlow,
    },
    model::{ClusterState, ObjectRef},
    policy::{
        evaluator::{End, Explanation, Query, Side},
        probes,
        tables::Direction,
    },
    telemetry::flows::{
        clock::monotonic_now_ns,
        publish::{choose, read_names},
        table::verdict_name,
        FlowNames, FlowPaths,
    },
};

/// Exit code of `explain --node` when the node's tables and the evaluator
/// disagree on a side.
pub const EXIT_DISAGREE: u8 = 5;

/// A running datapath: its names and its pinned maps.
pub struct NodeView {
    names: FlowNames,
    tables: PinnedTables,
}

impl NodeView {
    /// The datapath `instance` names (the only one running when `None`), found
    /// under `run_dir` as `policy-agent flows` finds it.
    pub fn open(instance: Option<&str>, run_dir: &Path) -> anyhow::Result<Self> {
        let paths = FlowPaths {
            run_root: run_dir.to_path_buf(),
            ..FlowPaths::system()
        };
        let chosen = choose(&paths, instance)?;
        let names = read_names(&chosen.names_file)?;
        if names.maps_dir.as_os_str().is_empty() {
            bail!(
                "datapath {} publishes no pinned tables to read: pinning them failed (its log \
                 says why), or its agent or lab is of an older version",
                names.instance
            );
        }
        let tables = match PinnedTables::open(&names.maps_dir) {
            Ok(tables) => tables,
            Err(error) if error.permission_denied() => bail!(
                "{}\nreading a datapath's tables opens its pinned BPF maps, which needs root \
                 (CAP_BPF, and read access to the pins): run `policy-agent explain --node` as \
                 root, or inside the agent's container",
                causes(&error)
            ),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("opening the tables of datapath {}", names.instance))
            }
        };
        Ok(Self { names, tables })
    }

    /// `state` with each pod the datapath knows at the addresses it knows it
    /// by: the evaluator judges the addresses the kernel sees.
    pub fn addressed(&self, state: ClusterState) -> ClusterState {
        let mut addresses: BTreeMap<ObjectRef, Vec<IpAddr>> = BTreeMap::new();
        for (address, pod) in &self.names.pods {
            if let Some(key) = object_ref(pod) {
                addresses.entry(key).or_default().push(*address);
            }
        }
        probes::with_addresses(state, &addresses)
    }

    /// The interface of `pod` on this node, if it has one.
    fn interface_of(&self, pod: &ObjectRef) -> Option<InterfaceIndex> {
        let name = pod.to_string();
        self.names
            .interfaces
            .iter()
            .find(|(_, on)| **on == name)
            .map(|(index, _)| *index)
    }

    /// Both sides of `judged` (ends at the addresses they are judged at) as the
    /// node's tables decide them, beside `explanation`, the evaluator's.
    pub fn read(
        &self,
        state: &ClusterState,
        judged: &Query,
        explanation: &Explanation,
    ) -> anyhow::Result<NodeReading> {
        let (source, destination) = (
            self.address(state, &judged.src)?,
            self.address(state, &judged.dst)?,
        );
        if source.is_ipv4() != destination.is_ipv4() {
            bail!(
                "{source} and {destination} are of two families: a connection has one \
                 (--family picks the pods' addresses)"
            );
        }
        let ends = [
            (Direction::Egress, &judged.src, source, destination),
            (Direction::Ingress, &judged.dst, destination, source),
        ];
        let mut sides = Vec::new();
        for (direction, end, local, remote) in ends {
            let Some(pod) = end.pod(state).map(|pod| pod.key.clone()) else {
                continue;
            };
            let Some(ifindex) = self.interface(&pod, local)? else {
                continue;
            };
            let lookup = SideLookup {
                ifindex,
                direction,
                local,
                remote,
                protocol: judged.protocol.number(),
                port: judged.port,
            };
            sides.push((pod, lookup));
        }
        if sides.is_empty() {
            let pods: Vec<&str> = self.names.interfaces.values().map(String::as_str).collect();
            bail!(
                "neither end has an interface on datapath {} (its pods: {}); ask the node of \
                 either end",
                self.names.instance,
                if pods.is_empty() {
                    "none".to_string()
                } else {
                    pods.join(", ")
                }
            );
        }
        let lookups: Vec<SideLookup> = sides.iter().map(|(_, lookup)| *lookup).collect();
        let kernel = self
            .tables
            .read(&lookups)
            .with_context(|| format!("reading the tables of datapath {}", self.names.instance))?;
        let mut reading = NodeReading {
            instance: self.names.instance.clone(),
            maps_dir: self.tables.dir().to_path_buf(),
            egress: None,
            ingress: None,
        };
        for ((pod, lookup), kernel) in sides.into_iter().zip(kernel) {
            let (evaluator, slot) = match lookup.direction {
                Direction::Egress => (outcome(&explanation.egress), &mut reading.egress),
                Direction::Ingress => (outcome(&explanation.ingress), &mut reading.ingress),
            };
            *slot = Some(NodeSide {
                pod,
                ifindex: lookup.ifindex,
                direction: lookup.direction,
                evaluator,
                kernel,
            });
        }
        Ok(reading)
    }

    /// The address `end` is judged at: an IP address, or a pod's of the
    /// family asked for. A pod without one is an error naming it.
    fn address(&self, state: &ClusterState, end: &End) -> anyhow::Result<IpAddr> {
        match end {
            End::PodAt(_, ip) | End::Address(ip) => {
                if let IpAddr::V6(v6) = ip {
                    if v6.to_ipv4_mapped().is_some() {
                        bail!("{ip} is an IPv4-mapped IPv6 address, which no packet between pods carries: give the IPv4 address");
                    }
                }
                Ok(*ip)
            }
            End::Pod(key) => bail!(
                "pod {key} has no address of that family{}",
                if state.pods.get(key).is_some_and(|pod| pod.ips.is_empty()) {
                    " (it has no address at all)"
                } else {
                    " (--family picks the other)"
                }
            ),
        }
    }

    /// The interface of `pod` (holding `local`) on this datapath, if it has one
    /// there: the one the tables name for its address, or, for a pod without
    /// one in them (pending), the one the names give. Names that say another
    /// interface than the tables are out of date: an error.
    fn interface(&self, pod: &ObjectRef, local: IpAddr) -> anyhow::Result<Option<InterfaceIndex>> {
        let named = self.interface_of(pod);
        let owner = self
            .tables
            .address_owner(local)
            .with_context(|| format!("reading the tables of datapath {}", self.names.instance))?;
        match (owner, named) {
            (Some(owner), Some(named)) if owner != named => bail!(
                "datapath {}'s tables put {local} on interface {owner}, its names put {pod} on \
                 interface {named}: the names are out of date (run again in a moment)",
                self.names.instance
            ),
            (Some(owner), _) => Ok(Some(owner)),
            (None, named) => Ok(named),
        }
    }

    /// The rule of counter slot `slot`, as `explain` writes rules.
    fn rule(&self, slot: u32) -> String {
        self.names.rule(slot).describe()
    }
}

/// `namespace/name` as a pod key.
fn object_ref(text: &str) -> Option<ObjectRef> {
    let (namespace, name) = text.split_once('/')?;
    Some(ObjectRef::new(namespace, name))
}

/// The evaluator's verdict for a side as a verdict event would say it.
fn outcome(side: &Side) -> EventVerdict {
    let verdict = side.verdict();
    match (verdict.allows(), verdict.would_drop()) {
        (_, true) => EventVerdict::WouldDrop,
        (true, false) => EventVerdict::Allowed,
        (false, false) => EventVerdict::Dropped,
    }
}

/// Whether the evaluator judges what decided `verdict`: not a Service's
/// deferral (decided at the backend), the node's admission (the evaluator
/// leaves node traffic out), nor the tunnel drop (it knows no tunnels).
fn compared(verdict: KernelVerdict) -> bool {
    !matches!(
        verdict,
        KernelVerdict::Service | KernelVerdict::Node | KernelVerdict::Tunnel
    )
}

/// One side read from the node.
pub struct NodeSide {
    pod: ObjectRef,
    ifindex: InterfaceIndex,
    direction: Direction,
    evaluator: EventVerdict,
    kernel: SideReading,
}

impl NodeSide {
    /// Whether the node and the evaluator agree (`None`: the node defers the
    /// side to the Service's backend, so there is nothing to compare here).
    fn agrees(&self) -> Option<bool> {
        compared(self.kernel.verdict).then(|| self.kernel.verdict.outcome() == self.evaluator)
    }
}

/// What the node's tables say of both sides; a side whose pod has no
/// interface on the node is `None`.
pub struct NodeReading {
    instance: String,
    maps_dir: PathBuf,
    egress: Option<NodeSide>,
    ingress: Option<NodeSide>,
}

impl NodeReading {
    fn sides(&self) -> impl Iterator<Item = &NodeSide> {
        self.egress.iter().chain(&self.ingress)
    }

    /// Whether no side read disagrees with the evaluator.
    pub fn agrees(&self) -> bool {
        self.sides().all(|side| side.agrees() != Some(false))
    }

    /// Whether a side drops the connection for a reason the evaluator does
    /// not judge (a tunnel port): the connection fails whatever it says.
    pub fn dropped_unjudged(&self) -> bool {
        self.sides().any(|side| {
            !compared(side.kernel.verdict) && side.kernel.verdict.outcome() == EventVerdict::Dropped
        })
    }

    /// The lines for people, after the evaluator's.
    pub fn text(&self, view: &NodeView) -> String {
        let generation = self.sides().next().map_or(0, |s| s.kernel.generation);
        let mut out = format!(
            "\nnode: datapath {} (tables of generation {generation}, bank {}, both sides read \
             in it):\n",
            self.instance,
            policy_common::bank::bank_of(generation)
        );
        for side in self.sides() {
            let (heading, list) = match side.direction {
                Direction::Egress => ("egress from", "egress"),
                Direction::Ingress => ("ingress to", "ingress"),
            };
            let mark = match side.agrees() {
                Some(true) => "agrees with the evaluator",
                Some(false) => "DISAGREES with the evaluator",
                None => "not the evaluator's to judge, not compared",
            };
            let _ = writeln!(
                out,
                "{heading} {} (interface {}): {} [{mark}]",
                side.pod,
                side.ifindex,
                kernel_phrase(side.kernel.verdict, list, view)
            );
            for line in lookups(&side.kernel, list, view) {
                let _ = writeln!(out, "  {line}");
            }
        }
        for (end, side) in [("source", &self.egress), ("destination", &self.ingress)] {
            if side.is_none() {
                let _ = writeln!(
                    out,
                    "  the {end} has no interface on this node: its side is decided elsewhere"
                );
            }
        }
        out
    }

    /// The loud lines for stderr, one per side the node and the evaluator
    /// disagree on.
    pub fn disagreements(&self) -> Vec<String> {
        self.sides()
            .filter(|side| side.agrees() == Some(false))
            .map(|side| {
                let list = match side.direction {
                    Direction::Egress => "egress from",
                    Direction::Ingress => "ingress to",
                };
                format!(
                    "BUG: datapath {} and the evaluator disagree on {list} {}: the kernel's tables \
                     say {}, the evaluator says {}. Either the node enforces other objects than \
                     the ones given (a stale agent, other manifests, an agent run with --audit \
                     where explain was not, or the other way round), or podwall has a bug: \
                     please report it with `explain --node --output json`",
                    self.instance,
                    side.pod,
                    verdict_name(side.kernel.verdict.outcome()),
                    verdict_name(side.evaluator)
                ) + if side.kernel.tables_writing {
                    " (the agent was writing tables in place while this was read: run again \
                     once it is done)"
                } else {
                    ""
                }
            })
            .collect()
    }

    /// `explain --node --output json`'s `node` object.
    pub fn json(&self, view: &NodeView) -> NodeJson {
        let side = |side: &Option<NodeSide>| side.as_ref().map(|side| side_json(side, view));
        NodeJson {
            instance: self.instance.clone(),
            maps: self.maps_dir.display().to_string(),
            agrees: self.agrees(),
            egress: side(&self.egress),
            ingress: side(&self.ingress),
        }
    }
}

/// The kernel's verdict in one phrase.
fn kernel_phrase(verdict: KernelVerdict, list: &str, view: &NodeView) -> String {
    let rule = |slot: Option<u32>| slot.map_or_else(|| "a rule".to_string(), |s| view.rule(s));
    match verdict {
        KernelVerdict::UnknownEndpoint => {
            "dropped: the interface has no ENDPOINTS entry (a pod the agent does not know)".into()
        }
        KernelVerdict::SpoofedSource => {
            "dropped: the source is not the pod's own address in ENDPOINTS or ENDPOINT_ADDRS".into()
        }
        KernelVerdict::Tunnel => "dropped before policy: UDP to a tunnel port (VXLAN, Geneve) \
             from a pod whose namespace does not allow tunnels"
            .into(),
        KernelVerdict::Misdelivered => {
            "dropped: ENDPOINT_ADDRS puts the destination on another local pod".into()
        }
        KernelVerdict::Unisolated => format!("allowed: not isolated for {list}"),
        KernelVerdict::Node => {
            "allowed: from an address of the node, which always passes (the evaluator leaves \
             node traffic out)"
                .into()
        }
        KernelVerdict::Service => {
            "deferred: to a Service address, decided after translation at the backend".into()
        }
        KernelVerdict::Rule(slot) => format!("allowed by {}", view.rule(slot)),
        KernelVerdict::Default => "allowed: no tier decides it (the default)".into(),
        KernelVerdict::Denied(slot) => format!("dropped by {}: Deny", rule(slot)),
        KernelVerdict::WouldDeny(slot) => format!(
            "would-drop: {} denies it, and the policy is in audit mode",
            rule(slot)
        ),
        KernelVerdict::NetworkDrop => {
            "dropped: no NetworkPolicy rule allows it (the POLICY entry says so)".into()
        }
        KernelVerdict::NetworkWouldDrop => {
            "would-drop: no NetworkPolicy rule allows it, and they are in audit mode".into()
        }
        KernelVerdict::NoMatch => "dropped: no POLICY entry matches".into(),
        KernelVerdict::NoMatchAudited => {
            "would-drop: no POLICY entry matches, and the direction is audited".into()
        }
        KernelVerdict::UnknownValue(value) => {
            format!(
                "dropped: the POLICY entry holds verdict {value}, which this build does not know"
            )
        }
    }
}

/// The endpoint flags by name.
fn endpoint_flags(flags: u32) -> Vec<&'static str> {
    use policy_common::endpoint::{
        ALLOW_TUNNELS, AUDIT_EGRESS, AUDIT_INGRESS, ISOLATED_EGRESS, ISOLATED_INGRESS,
    };
    [
        (ISOLATED_INGRESS, "isolated-ingress"),
        (ISOLATED_EGRESS, "isolated-egress"),
        (AUDIT_INGRESS, "audit-ingress"),
        (AUDIT_EGRESS, "audit-egress"),
        (ALLOW_TUNNELS, "allow-tunnels"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// `80/TCP`, `ports 8000-8007/TCP`, `every TCP port`, `every protocol`.
fn entry_covers(protocol: Option<u8>, ports: Option<(u16, u16)>) -> String {
    let name = |number| crate::telemetry::flows::line::protocol_name(number);
    match (protocol, ports) {
        (None, _) => "every protocol".into(),
        (Some(p), None) => format!("every {} port", name(p)),
        (Some(p), Some((first, last))) if first == last => format!("{first}/{}", name(p)),
        (Some(p), Some((first, last))) => format!("ports {first}-{last}/{}", name(p)),
    }
}

/// The POLICY verdict by name.
fn entry_verdict(verdict: u32) -> String {
    use policy_common::policy::{
        POLICY_ALLOW, POLICY_DEFAULT, POLICY_DENY, POLICY_NETWORK_DROP, POLICY_NETWORK_WOULD_DROP,
        POLICY_WOULD_DENY,
    };
    match verdict {
        POLICY_ALLOW => "allow".into(),
        POLICY_DENY => "deny".into(),
        POLICY_WOULD_DENY => "would-deny".into(),
        POLICY_NETWORK_DROP => "network-drop".into(),
        POLICY_NETWORK_WOULD_DROP => "network-would-drop".into(),
        POLICY_DEFAULT => "default".into(),
        other => format!("unknown ({other})"),
    }
}

/// One line per lookup the classifiers made, and the tracked flows.
fn lookups(kernel: &SideReading, list: &str, view: &NodeView) -> Vec<String> {
    let mut lines = Vec::new();
    match kernel.endpoint {
        Some(info) => {
            let flags = endpoint_flags(info.flags);
            let flags = if flags.is_empty() {
                "isolated in neither direction".to_string()
            } else {
                flags.join(", ")
            };
            lines.push(format!(
                "ENDPOINTS: endpoint {} [{flags}]",
                info.endpoint_id
            ));
        }
        None => lines.push("ENDPOINTS: no entry".into()),
    }
    if let Some(peer) = kernel.peer {
        let mut flags = Vec::new();
        if peer.class.flags & policy_common::peer::PEER_FLAG_NODE != 0 {
            flags.push("node");
        }
        if peer.class.flags & policy_common::peer::PEER_FLAG_SERVICE != 0 {
            flags.push("service");
        }
        let under = peer.prefix.map_or_else(
            || "no prefix holds it (the world class)".to_string(),
            |prefix| format!("under {prefix}"),
        );
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", flags.join(", "))
        };
        let world = if peer.class.class_id == policy_common::peer::CLASS_WORLD {
            " (world)"
        } else {
            ""
        };
        lines.push(format!(
            "peer: class {}{world}{flags}, {under}",
            peer.class.class_id
        ));
    }
    // The peer's flags decide the node and Service verdicts before any rule set
    // is looked up; without a peer lookup there is none either.
    let rule_looked_up = kernel.peer.is_some()
        && !matches!(kernel.verdict, KernelVerdict::Node | KernelVerdict::Service);
    if rule_looked_up {
        lines.push(match kernel.rule_set {
            Some(set) if set.any_class => format!(
                "RULE_SETS: set {} (the endpoint's {list} set for every class)",
                set.id
            ),
            Some(set) => format!("RULE_SETS: set {}", set.id),
            None => "RULE_SETS: none for this class or any class: nothing is allowed".into(),
        });
    }
    if rule_looked_up && kernel.rule_set.is_some() {
        lines.push(match kernel.entry {
            Some(entry) => {
                let slot = entry.value.rule_slot;
                let rule = if slot == policy_common::counters::NO_COUNTER {
                    String::new()
                } else {
                    format!(", rule {} (slot {slot})", view.rule(slot))
                };
                format!(
                    "POLICY: {} -> {}{rule}",
                    entry_covers(entry.protocol, entry.ports),
                    entry_verdict(entry.value.verdict)
                )
            }
            None => "POLICY: no entry for this protocol and port".into(),
        });
    }
    if kernel.tables_writing {
        lines.push(
            "CONFIG: the agent is writing whole tables in place: a denial now is dropped as a \
             state change and decided again at the next packet"
                .into(),
        );
    }
    if kernel.tracked.is_empty() {
        lines.push("CONNTRACK: no tracked flow".into());
    }
    let now = monotonic_now_ns();
    for flow in &kernel.tracked {
        lines.push(format!(
            "CONNTRACK: {}",
            tracked(flow, kernel.generation, now, view)
        ));
    }
    lines
}

/// A conntrack state by name.
fn state_name(state: u8) -> &'static str {
    use policy_common::ct::{
        CT_STATE_ANSWERED, CT_STATE_CLOSED, CT_STATE_CLOSING, CT_STATE_ESTABLISHED,
        CT_STATE_OPENING,
    };
    match state {
        CT_STATE_OPENING => "opening",
        CT_STATE_ESTABLISHED => "established",
        CT_STATE_CLOSING => "closing",
        CT_STATE_CLOSED => "closed",
        CT_STATE_ANSWERED => "answered",
        _ => "unknown",
    }
}

/// One tracked flow: `from port 41234, established, seen 2s ago, decided by
/// generation 4 (current), rule shop/web-allow spec.ingress[0]`.
fn tracked(flow: &TrackedFlow, generation: u32, now_ns: u64, view: &NodeView) -> String {
    let mut text = format!(
        "from port {}, {}, seen {}s ago, decided by generation {}",
        flow.source.1,
        state_name(flow.state),
        now_ns.saturating_sub(flow.last_seen_ns) / 1_000_000_000,
        flow.generation
    );
    text.push_str(if flow.generation == generation {
        " (current)"
    } else {
        " (older: decided again at its next packet)"
    });
    for (set, what) in [
        (flow.audit, "audit"),
        (flow.revoked, "revoked"),
        (flow.deferred, "deferred"),
    ] {
        if set {
            let _ = write!(text, ", {what}");
        }
    }
    if let Some(slot) = flow.counter_slot.filter(|_| !flow.audit) {
        let _ = write!(text, ", rule {}", view.rule(slot));
    }
    text
}

/// `explain --node --output json`'s `node`.
#[derive(Serialize)]
pub struct NodeJson {
    instance: String,
    /// Where the maps read are pinned.
    maps: String,
    /// No side read disagrees with the evaluator.
    agrees: bool,
    egress: Option<NodeSideJson>,
    ingress: Option<NodeSideJson>,
}

#[derive(Serialize)]
struct NodeSideJson {
    pod: String,
    interface: InterfaceIndex,
    generation: u32,
    tables_writing: bool,
    /// `allowed`, `dropped` or `would-drop`.
    verdict: EventVerdict,
    /// The evaluator's, in the same words.
    evaluator: EventVerdict,
    /// `null` where the node defers the side to a Service's backend.
    agrees: Option<bool>,
    /// The kernel's decision in a phrase.
    decision: String,
    /// The deciding rule, when a rule decides.
    rule: Option<String>,
    endpoint: Option<EndpointJson>,
    peer: Option<PeerJson>,
    rule_set: Option<RuleSetJson>,
    entry: Option<EntryJson>,
    tracked: Vec<TrackedJson>,
}

#[derive(Serialize)]
struct EndpointJson {
    id: u32,
    flags: Vec<&'static str>,
}

#[derive(Serialize)]
struct PeerJson {
    class: u32,
    prefix: Option<String>,
    node: bool,
    service: bool,
}

#[derive(Serialize)]
struct RuleSetJson {
    id: u32,
    any_class: bool,
}

#[derive(Serialize)]
struct EntryJson {
    verdict: String,
    rule_slot: Option<u32>,
    covers: String,
}

#[derive(Serialize)]
struct TrackedJson {
    source_port: u16,
    state: &'static str,
    generation: u32,
    audit: bool,
    revoked: bool,
    deferred: bool,
}

fn side_json(side: &NodeSide, view: &NodeView) -> NodeSideJson {
    let kernel = &side.kernel;
    let list = match side.direction {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    };
    NodeSideJson {
        pod: side.pod.to_string(),
        interface: side.ifindex,
        generation: kernel.generation,
        tables_writing: kernel.tables_writing,
        verdict: kernel.verdict.outcome(),
        evaluator: side.evaluator,
        agrees: side.agrees(),
        decision: kernel_phrase(kernel.verdict, list, view),
        rule: kernel.verdict.rule_slot().map(|slot| view.rule(slot)),
        endpoint: kernel.endpoint.map(|info| EndpointJson {
            id: info.endpoint_id,
            flags: endpoint_flags(info.flags),
        }),
        peer: kernel.peer.map(|peer| PeerJson {
            class: peer.class.class_id,
            prefix: peer.prefix.map(|p| p.to_string()),
            node: peer.class.flags & policy_common::peer::PEER_FLAG_NODE != 0,
            service: peer.class.flags & policy_common::peer::PEER_FLAG_SERVICE != 0,
        }),
        rule_set: kernel.rule_set.map(|set| RuleSetJson {
            id: set.id,
            any_class: set.any_class,
        }),
        entry: kernel.entry.map(|entry| EntryJson {
            verdict: entry_verdict(entry.value.verdict),
            rule_slot: (entry.value.rule_slot != policy_common::counters::NO_COUNTER)
                .then_some(entry.value.rule_slot),
            covers: entry_covers(entry.protocol, entry.ports),
        }),
        tracked: kernel
            .tracked
            .iter()
            .map(|flow| TrackedJson {
                source_port: flow.source.1,
                state: state_name(flow.state),
                generation: flow.generation,
                audit: flow.audit,
                revoked: flow.revoked,
                deferred: flow.deferred,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_say_what_they_cover() {
        assert_eq!(entry_covers(None, None), "every protocol");
        assert_eq!(entry_covers(Some(6), None), "every TCP port");
        assert_eq!(entry_covers(Some(17), Some((53, 53))), "53/UDP");
        assert_eq!(
            entry_covers(Some(6), Some((8000, 8007))),
            "ports 8000-8007/TCP"
        );
    }

    #[test]
    fn endpoint_flags_are_named() {
        use policy_common::endpoint::{AUDIT_EGRESS, ISOLATED_INGRESS};
        assert_eq!(
            endpoint_flags(ISOLATED_INGRESS | AUDIT_EGRESS),
            vec!["isolated-ingress", "audit-egress"]
        );
        assert!(endpoint_flags(0).is_empty());
    }

    #[test]
    fn pod_names_split_at_the_first_slash() {
        assert_eq!(object_ref("shop/web"), Some(ObjectRef::new("shop", "web")));
        assert_eq!(object_ref("web"), None);
    }
}
