//! ClusterNetworkPolicies lowered for the compiler's steps: each becomes a
//! NetworkPolicy-shaped stand-in whose rules name the same peers and ports (so
//! peers intern, classes split and named ports resolve as for NetworkPolicy),
//! beside what NetworkPolicy has no field for: its tier, mode and each rule's
//! action (`ClusterMeta`). Stand-ins select no pod as NetworkPolicies
//! (no policyTypes, no namespace): which pods a ClusterNetworkPolicy applies to
//! is `policy::cluster::applies_to`, and the rule sets walk the tiers
//! (`entries`).
//!
//! Lowering, rule by rule (`policy::cluster` defines the matches):
//! - `namespaces` -> a pod peer of the matching namespaces, every pod;
//! - `pods` -> a pod peer of the matching namespaces and pods;
//! - `networks` -> one ipBlock per CIDR, without except;
//! - `nodes` -> one host ipBlock per address of each matching node;
//! - a port or range -> that `ports` entry; a named port -> the name on TCP,
//!   UDP and SCTP (it resolves with the protocol the container declares);
//! - a rule that fails closed -> an `Accept` that matches nothing (one invalid
//!   peer), or a `Deny` of every peer, protocol and port.

use std::{collections::BTreeMap, net::IpAddr};

use crate::{
    model::{
        ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, ClusterState, NamespaceScope,
        NetworkPolicy, ObjectRef, Peer, Peers, Pod, PolicyMode, PolicyPort, PolicyTypes, PortRef,
        Protocol, Rule, RuleAction, Tier,
    },
    policy::{
        cluster::{cluster_rules, denies_a_claimant, shared_addresses},
        selector::matches,
        tables::Direction,
    },
};

/// What a lowered policy keeps beside its stand-in's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ClusterMeta {
    /// The ClusterNetworkPolicy's name.
    pub name: String,
    /// Its tier.
    pub tier: Tier,
    /// Enforced or audited.
    pub mode: PolicyMode,
    /// The action of each ingress rule of the stand-in, in order.
    pub ingress: Vec<RuleAction>,
    /// The action of each egress rule.
    pub egress: Vec<RuleAction>,
    /// The `name` of each ingress rule (empty: unnamed), in order.
    pub ingress_names: Vec<String>,
    /// The `name` of each egress rule.
    pub egress_names: Vec<String>,
}

impl ClusterMeta {
    /// The action of rule `index` of `direction`.
    pub fn action(&self, direction: Direction, index: u32) -> Option<RuleAction> {
        let actions = match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        };
        actions.get(index as usize).copied()
    }
}

/// Every ClusterNetworkPolicy of a state, lowered, in the order the tiers read
/// them (Admin by precedence, then Baseline by precedence).
#[derive(Clone, Debug, Default)]
pub(super) struct Lowered {
    /// The stand-ins, in tier order.
    pub policies: Vec<NetworkPolicy>,
    /// What each stand-in keeps beside its rules, in the same order.
    pub meta: Vec<ClusterMeta>,
}

impl Lowered {
    /// Lowers `state`'s ClusterNetworkPolicies.
    pub fn of(state: &ClusterState) -> Self {
        let mut ordered: Vec<&ClusterNetworkPolicy> = state.cluster_policies.values().collect();
        ordered.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
        let mut out = Lowered::default();
        if ordered.is_empty() {
            return out;
        }
        let shared = shared_addresses(state);
        for policy in ordered {
            let (ingress, ingress_actions) =
                lower_rules(state, &shared, policy, Direction::Ingress);
            let (egress, egress_actions) = lower_rules(state, &shared, policy, Direction::Egress);
            out.policies.push(NetworkPolicy {
                key: ObjectRef::cluster(&policy.name),
                pod_selector: Default::default(),
                policy_types: PolicyTypes::default(),
                ingress,
                egress,
                mode: policy.mode,
            });
            let names = |direction| {
                cluster_rules(policy, direction)
                    .iter()
                    .map(|rule| rule.name.clone())
                    .collect()
            };
            out.meta.push(ClusterMeta {
                name: policy.name.clone(),
                tier: policy.tier,
                mode: policy.mode,
                ingress: ingress_actions,
                egress: egress_actions,
                ingress_names: names(Direction::Ingress),
                egress_names: names(Direction::Egress),
            });
        }
        out
    }

    /// This lowering with the policies at `refused` (indices into `policies`)
    /// failing closed, as a refused policy does: each direction it has rules
    /// for denies everything to its subjects.
    pub fn refused(&self, refused: &[usize]) -> Self {
        let mut out = self.clone();
        for &index in refused {
            let (Some(policy), Some(meta)) = (out.policies.get_mut(index), out.meta.get_mut(index))
            else {
                continue;
            };
            for (rules, actions, names) in [
                (
                    &mut policy.ingress,
                    &mut meta.ingress,
                    &mut meta.ingress_names,
                ),
                (&mut policy.egress, &mut meta.egress, &mut meta.egress_names),
            ] {
                if !rules.is_empty() {
                    *rules = vec![deny_everything()];
                    *actions = vec![RuleAction::Deny];
                    *names = vec![REFUSED_RULE.to_string()];
                }
            }
        }
        out
    }

    /// The named rules' names, as `DatapathTables::rule_names` holds them.
    pub fn rule_names(&self) -> BTreeMap<(ObjectRef, Direction, u32), String> {
        let mut out = BTreeMap::new();
        for meta in &self.meta {
            for (direction, names) in [
                (Direction::Ingress, &meta.ingress_names),
                (Direction::Egress, &meta.egress_names),
            ] {
                for (index, name) in (0..).zip(names) {
                    if !name.is_empty() {
                        let key = (ObjectRef::cluster(&meta.name), direction, index);
                        out.insert(key, name.clone());
                    }
                }
            }
        }
        out
    }
}

/// What the one rule standing in for a refused policy's rules of a direction
/// is called.
pub(super) const REFUSED_RULE: &str = "(refused)";

/// A peer that matches nothing, for `reason`.
fn nothing(reason: &str) -> Peer {
    Peer::Invalid {
        field: String::new(),
        reason: reason.to_string(),
    }
}

/// A rule of every peer, protocol and port.
fn deny_everything() -> Rule {
    Rule {
        peers: Peers::All,
        ports: Vec::new(),
    }
}

/// The stand-in rules of `policy` for `direction`, with their actions.
fn lower_rules(
    state: &ClusterState,
    shared: &BTreeMap<IpAddr, Vec<&Pod>>,
    policy: &ClusterNetworkPolicy,
    direction: Direction,
) -> (Vec<Rule>, Vec<RuleAction>) {
    cluster_rules(policy, direction)
        .iter()
        .map(|rule| lower_rule(state, shared, rule))
        .unzip()
}

/// One rule, lowered (see the module's list); a `Deny` rule's `namespaces` and
/// `pods` peers also take the `shared` addresses whose claimants they match,
/// as host ipBlocks (a shared address is no pod to a pod peer).
fn lower_rule(
    state: &ClusterState,
    shared: &BTreeMap<IpAddr, Vec<&Pod>>,
    rule: &ClusterRule,
) -> (Rule, RuleAction) {
    if rule.fails_closed() {
        return match rule.action {
            RuleAction::Accept => {
                let rule = Rule {
                    peers: Peers::Only(vec![nothing("fails closed")]),
                    ports: Vec::new(),
                };
                (rule, RuleAction::Accept)
            }
            RuleAction::Deny | RuleAction::Pass => (deny_everything(), RuleAction::Deny),
        };
    }
    let mut peers: Vec<Peer> = rule
        .peers
        .iter()
        .flat_map(|peer| lower_peer(state, peer))
        .collect();
    if rule.action == RuleAction::Deny {
        peers.extend(
            shared
                .iter()
                .filter(|(_, claimants)| {
                    rule.peers
                        .iter()
                        .any(|peer| denies_a_claimant(state, peer, claimants))
                })
                .map(|(ip, _)| Peer::IpBlock {
                    cidr: ipnet::IpNet::from(*ip),
                    except: Vec::new(),
                }),
        );
    }
    let ports = rule.ports.iter().flat_map(lower_port).collect();
    // A peer list that lowers to nothing (a `nodes` peer no node matches)
    // still matches nothing, not everything.
    let peers = if peers.is_empty() {
        vec![nothing("no address")]
    } else {
        peers
    };
    let lowered = Rule {
        peers: Peers::Only(peers),
        ports,
    };
    (lowered, rule.action)
}

/// The NetworkPolicy peers matching what `peer` matches.
fn lower_peer(state: &ClusterState, peer: &ClusterPeer) -> Vec<Peer> {
    match peer {
        ClusterPeer::Namespaces(namespaces) => vec![Peer::Pods {
            namespaces: NamespaceScope::Matching(namespaces.clone()),
            pods: Default::default(),
        }],
        ClusterPeer::Pods(selected) => vec![Peer::Pods {
            namespaces: NamespaceScope::Matching(selected.namespaces.clone()),
            pods: selected.pods.clone(),
        }],
        ClusterPeer::Networks(networks) => networks
            .iter()
            .map(|cidr| Peer::IpBlock {
                cidr: *cidr,
                except: Vec::new(),
            })
            .collect(),
        ClusterPeer::Nodes(nodes) => state
            .nodes
            .values()
            .filter(|node| matches(nodes, &node.labels))
            .flat_map(|node| node.ips.iter())
            .map(|ip| Peer::IpBlock {
                cidr: ipnet::IpNet::from(*ip),
                except: Vec::new(),
            })
            .collect(),
        ClusterPeer::Invalid { field, reason } => vec![Peer::Invalid {
            field: field.clone(),
            reason: reason.clone(),
        }],
    }
}

/// The NetworkPolicy `ports` entries matching what `port` matches.
fn lower_port(port: &ClusterPort) -> Vec<PolicyPort> {
    match port {
        ClusterPort::Ports {
            protocol,
            first,
            last,
        } => vec![PolicyPort {
            protocol: *protocol,
            port: Some(PortRef::Number(*first)),
            end_port: (last != first).then_some(*last),
        }],
        ClusterPort::Named(name) => [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .map(|protocol| PolicyPort {
                protocol,
                port: Some(PortRef::Name(name.clone())),
                end_port: None,
            })
            .collect(),
        // The rule fails closed before its ports are read.
        ClusterPort::Invalid { .. } => Vec::new(),
    }
}

/// The ClusterNetworkPolicies a local pod may be a subject of, by their
/// stand-ins' policy ids.
#[derive(Clone, Debug, Default)]
pub(super) struct Subjects<'s> {
    /// The state the policies are of (subjects read namespace labels).
    state: Option<&'s ClusterState>,
    /// (stand-in policy id, the policy), ascending.
    policies: Vec<(u32, &'s ClusterNetworkPolicy)>,
}

impl<'s> Subjects<'s> {
    /// The policies `lowered` was made of, in `state`, their stand-ins numbered
    /// from `first_id`.
    pub fn of(state: &'s ClusterState, lowered: &Lowered, first_id: u32) -> Self {
        let policies = (first_id..)
            .zip(&lowered.meta)
            .filter_map(|(id, meta)| Some((id, state.cluster_policies.get(&meta.name)?)))
            .collect();
        Self {
            state: Some(state),
            policies,
        }
    }

    /// The stand-ins of the policies that apply to `pod` for `direction`,
    /// ascending: the order the tiers read them in.
    pub fn applying(&self, pod: &crate::model::Pod, direction: Direction) -> Vec<u32> {
        let Some(state) = self.state else {
            return Vec::new();
        };
        self.policies
            .iter()
            .filter(|(_, policy)| crate::policy::cluster::applies_to(state, policy, pod, direction))
            .map(|(id, _)| *id)
            .collect()
    }
}
