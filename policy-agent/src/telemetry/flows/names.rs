//! `FlowNames`: what an event's numbers mean at one moment of one datapath:
//! interfaces and addresses of pods, policy names, the policies isolating each
//! endpoint id, the rule behind each counter slot. The owner of a datapath
//! writes it as `names.json` after every table apply; readers name events with it.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::line::DecidingRule;
use crate::{
    dataplane::{InterfaceIndex, RuleName},
    model::ObjectRef,
    policy::tables::{DatapathTables, Direction, Isolation},
};

/// Everything needed to name a datapath's verdict events. Pods and policies are
/// `namespace/name` strings, as printed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowNames {
    /// `policy_common::ABI_VERSION` of the datapath that emits the events.
    pub abi_version: u32,
    /// The datapath's instance name (a lab's run name, later the node agent's).
    pub instance: String,
    /// The process that owns the datapath; the instance is gone when it is.
    pub pid: u32,
    /// The inode of the owner's pid namespace (`/proc/self/ns/pid`): `pid` means
    /// that process only to a reader in the same namespace. A node agent in a
    /// container is pid 1 there; a reader on the host asks its instance lock.
    #[serde(default)]
    pub pid_namespace: Option<u64>,
    /// Where the `EVENTS` ring buffer is pinned (bpffs).
    pub events_pin: PathBuf,
    /// Where `STATS` is pinned (bpffs), for its lost-event counters; empty when
    /// not pinned.
    #[serde(default)]
    pub stats_pin: PathBuf,
    /// Where the maps `explain --node` reads are pinned (`<dir>/<MAP>`); empty
    /// when they are not.
    #[serde(default)]
    pub maps_dir: PathBuf,
    /// `CLOCK_MONOTONIC` nanoseconds (the clock of event timestamps) when the
    /// owner began writing these tables to the kernel: an event stamped earlier
    /// was decided by older tables, and a reader names it with older names.
    #[serde(default)]
    pub tables_since_ns: u64,
    /// Host-side interface index -> the pod behind it.
    pub interfaces: BTreeMap<InterfaceIndex, String>,
    /// Pod address (both families) -> the pod.
    pub pods: BTreeMap<IpAddr, String>,
    /// Policy names by policy id (`DatapathTables::policy_names`).
    pub policies: Vec<String>,
    /// Endpoint id -> the policies isolating its pods (`DatapathTables::isolation`).
    pub isolation: BTreeMap<u32, Isolation>,
    /// Counter slot -> the rule counting in it (`Datapath::rule_slots`): what an
    /// event's `rule_slot` names.
    #[serde(default)]
    pub rules: BTreeMap<u32, DecidingRule>,
}

impl FlowNames {
    /// The names for a datapath of this process that holds `tables` (the tables
    /// it began writing at `tables_since_ns`, monotonic) on `interfaces`, with
    /// `pod_addresses` the addresses of every pod known (local or not) and
    /// `rule_slots` the counter slot of each rule of `tables`. The pin paths are
    /// left empty: `Publication::publish` fills them in.
    pub fn new<'a>(
        instance: &str,
        tables_since_ns: u64,
        (tables, rule_slots): (&DatapathTables, &BTreeMap<u32, RuleName>),
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        pod_addresses: impl IntoIterator<Item = (IpAddr, &'a ObjectRef)>,
    ) -> Self {
        Self {
            abi_version: policy_common::ABI_VERSION,
            instance: instance.to_string(),
            pid: std::process::id(),
            pid_namespace: super::publish::own_pid_namespace(),
            events_pin: PathBuf::new(),
            stats_pin: PathBuf::new(),
            maps_dir: PathBuf::new(),
            tables_since_ns,
            interfaces: interfaces
                .iter()
                .map(|(pod, index)| (*index, pod.to_string()))
                .collect(),
            pods: pod_addresses
                .into_iter()
                .map(|(address, pod)| (address, pod.to_string()))
                .collect(),
            policies: tables
                .policy_names
                .iter()
                .map(ToString::to_string)
                .collect(),
            isolation: tables.isolation.clone(),
            rules: rule_slots
                .iter()
                .map(|(slot, rule)| {
                    let named = DecidingRule {
                        policy: rule.policy.to_string(),
                        rule: tables.rule_label(&rule.policy, rule.direction, rule.rule_index),
                    };
                    (*slot, named)
                })
                .collect(),
        }
    }

    /// The pod behind host-side interface `index`, if known.
    pub fn pod_on_interface(&self, index: InterfaceIndex) -> Option<&str> {
        self.interfaces.get(&index).map(String::as_str)
    }

    /// The pod holding `address`, if it is a known pod address.
    pub fn pod_at(&self, address: IpAddr) -> Option<&str> {
        self.pods.get(&address).map(String::as_str)
    }

    /// The name of policy `id`; `#id` when these names do not have it (the tables
    /// changed after the event).
    pub fn policy(&self, id: u32) -> String {
        self.policies
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }

    /// The rule counting in slot `slot`; `#slot` for both names when these names
    /// do not have it (the tables changed after the event).
    pub fn rule(&self, slot: u32) -> DecidingRule {
        self.rules
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| DecidingRule {
                policy: format!("#{slot}"),
                rule: format!("#{slot}"),
            })
    }

    /// The names of the policies isolating endpoint `endpoint_id` in `direction`.
    pub fn isolating(&self, endpoint_id: u32, direction: Direction) -> Vec<String> {
        self.isolation
            .get(&endpoint_id)
            .map_or(&[][..], |isolation| isolation.get(direction))
            .iter()
            .map(|id| self.policy(*id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tables::RuleVerdict;

    fn tables() -> DatapathTables {
        let mut tables = DatapathTables {
            policy_names: vec![
                ObjectRef::new("shop", "deny-in"),
                ObjectRef::new("shop", "web"),
                ObjectRef::cluster("guardrails"),
            ],
            ..DatapathTables::default()
        };
        // Rule 0 of the cluster policy's egress is named, rule 1 is not.
        tables.rule_names.insert(
            (ObjectRef::cluster("guardrails"), Direction::Egress, 0),
            "other-tenants".into(),
        );
        tables.isolation.insert(
            3,
            Isolation {
                ingress: vec![0, 1],
                egress: vec![],
            },
        );
        tables
    }

    fn names() -> FlowNames {
        let web = ObjectRef::new("shop", "web");
        let interfaces = BTreeMap::from([(web.clone(), 12)]);
        let address: IpAddr = [10, 244, 0, 2].into();
        let rule = |policy: ObjectRef, direction, rule_index, verdict| RuleName {
            policy,
            direction,
            rule_index,
            verdict,
        };
        let slots = BTreeMap::from([
            (
                9,
                rule(
                    ObjectRef::new("shop", "web"),
                    Direction::Ingress,
                    1,
                    RuleVerdict::Allowed,
                ),
            ),
            (
                4,
                rule(
                    ObjectRef::cluster("guardrails"),
                    Direction::Egress,
                    0,
                    RuleVerdict::Dropped,
                ),
            ),
            (
                5,
                rule(
                    ObjectRef::cluster("guardrails"),
                    Direction::Egress,
                    1,
                    RuleVerdict::Allowed,
                ),
            ),
        ]);
        FlowNames::new(
            "lab-1",
            42,
            (&tables(), &slots),
            &interfaces,
            [(address, &web)],
        )
    }

    #[test]
    fn names_come_from_the_tables_interfaces_and_addresses() {
        let names = names();
        assert_eq!(names.abi_version, policy_common::ABI_VERSION);
        assert_eq!(names.pid, std::process::id());
        assert_eq!(names.tables_since_ns, 42);
        assert_eq!(names.pod_on_interface(12), Some("shop/web"));
        assert_eq!(names.pod_on_interface(13), None);
        assert_eq!(names.pod_at([10, 244, 0, 2].into()), Some("shop/web"));
        assert_eq!(names.pod_at([10, 244, 0, 9].into()), None);
        assert_eq!(
            names.isolating(3, Direction::Ingress),
            vec!["shop/deny-in", "shop/web"]
        );
        assert!(names.isolating(3, Direction::Egress).is_empty());
        assert!(names.isolating(4, Direction::Ingress).is_empty());
        assert_eq!(names.policy(7), "#7");
        let rule = |policy: &str, rule: &str| DecidingRule {
            policy: policy.into(),
            rule: rule.into(),
        };
        assert_eq!(names.rule(9), rule("shop/web", "spec.ingress[1]"));
        assert_eq!(names.rule(4), rule("guardrails", "other-tenants"));
        assert_eq!(names.rule(5), rule("guardrails", "spec.egress[1]"));
        assert_eq!(names.rule(1), rule("#1", "#1"));
    }

    #[test]
    fn names_survive_a_json_round_trip() {
        let names = names();
        let json = serde_json::to_string(&names).unwrap_or_else(|e| panic!("{e}"));
        assert!(json.contains(r#""interfaces":{"12":"shop/web"}"#), "{json}");
        assert!(
            json.contains(r#""pods":{"10.244.0.2":"shop/web"}"#),
            "{json}"
        );
        assert!(
            json.contains(r#""isolation":{"3":{"ingress":[0,1],"egress":[]}}"#),
            "{json}"
        );
        for rule in [
            r#""9":{"policy":"shop/web","rule":"spec.ingress[1]"}"#,
            r#""4":{"policy":"guardrails","rule":"other-tenants"}"#,
        ] {
            assert!(json.contains(rule), "{json}");
        }
        let back: FlowNames = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, names);
    }
}
