//! `policy-agent suggest`: NetworkPolicies that allow every flow a recording of
//! `flows --output json` saw pass, and no more than the workloads' labels
//! generalise to (`policy::suggest`), in audit mode, ready to apply; each rule
//! with a comment saying what it covers. As YAML documents (JSON bodies, which
//! YAML reads) or one JSON object.

use std::{collections::BTreeMap, path::PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use super::{recording, Input, Output};
use crate::{
    model::{ClusterState, NAMESPACE_NAME_LABEL},
    policy::suggest::{suggest, Connection, Observed, SuggestedPeer, SuggestedRule, Suggestion},
};

/// Arguments of `suggest`.
#[derive(Args)]
pub struct SuggestArgs {
    /// The pods and namespaces the flows were between (their labels name the
    /// workloads): manifests, or a live cluster.
    #[command(flatten)]
    input: Input,
    /// A recording of `policy-agent flows --output json` (a lab's or a node's).
    #[arg(long, value_name = "FILE")]
    flows: PathBuf,
    /// Suggest enforce-mode policies instead of audit-mode ones.
    #[arg(long)]
    enforce: bool,
    /// YAML (policies with comments) or JSON (`{"policies":[{"manifest","covers"}]}`).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Runs `suggest`.
pub fn run(args: &SuggestArgs) -> anyhow::Result<()> {
    let state = args.input.load()?;
    let flows = recording::read(&args.flows)?;
    let observed: Vec<Connection> = flows
        .iter()
        .map(|flow| {
            // A pod the objects do not have, or a host-network one (no pod
            // selector matches it), by its address.
            let end = |end: &recording::RecordedEnd| match &end.pod {
                Some(pod) if state.pods.get(pod).is_some_and(|p| !p.host_network) => {
                    Observed::Pod(pod.clone())
                }
                _ => Observed::Address(end.address),
            };
            (
                end(&flow.source),
                end(&flow.destination),
                flow.port,
                flow.protocol,
            )
        })
        .collect();
    let suggestions = suggest(&state, &observed);
    for warning in selector_warnings(&suggestions) {
        eprintln!("suggest: warning: {warning}");
    }
    eprintln!(
        "suggest: {} flows from {}: {} policies{}",
        flows.len(),
        args.flows.display(),
        suggestions.len(),
        if args.enforce { "" } else { ", in audit mode" }
    );
    match args.output {
        Output::Json => {
            let policies: Vec<Value> = suggestions
                .iter()
                .map(|s| json!({"manifest": manifest(s, args.enforce), "covers": covers(s)}))
                .collect();
            println!("{}", json!({ "policies": policies }));
        }
        Output::Table => print!("{}", to_yaml(&state, &suggestions, args.enforce)),
    }
    Ok(())
}

/// Where a suggested selector picks more pods than its workload's: no labels
/// (every pod of the namespace), or labels another workload's pods also carry.
fn selector_warnings(suggestions: &[Suggestion]) -> Vec<String> {
    let mut out = Vec::new();
    for s in suggestions {
        let at = format!("{}/{}", s.workload.namespace, s.name);
        if s.workload.labels.is_empty() {
            out.push(format!(
                "{at}: its pods have no labels but per-pod ones, so it selects every pod of \
                 namespace {}; label the workload and suggest again",
                s.workload.namespace
            ));
            continue;
        }
        let wider = suggestions.iter().find(|other| {
            other.workload.namespace == s.workload.namespace
                && other.workload.labels != s.workload.labels
                && s.workload
                    .labels
                    .iter()
                    .all(|(k, v)| other.workload.labels.get(k) == Some(v))
        });
        if let Some(other) = wider {
            out.push(format!(
                "{at}: its selector also selects the pods of {}/{} (their labels include its \
                 own): narrow it before applying",
                other.workload.namespace, other.name
            ));
        }
    }
    out
}

fn match_labels(labels: &BTreeMap<String, String>) -> Value {
    json!({ "matchLabels": labels })
}

fn peer(peer: &SuggestedPeer) -> Value {
    match peer {
        SuggestedPeer::Pods {
            namespace: None,
            labels,
        } => json!({ "podSelector": match_labels(labels) }),
        SuggestedPeer::Pods {
            namespace: Some(namespace),
            labels,
        } => json!({
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
            "podSelector": match_labels(labels),
        }),
        SuggestedPeer::Address(ip) => {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            json!({ "ipBlock": {"cidr": format!("{ip}/{len}")} })
        }
    }
}

fn rule(rule: &SuggestedRule, peers_key: &str) -> Value {
    let ports: Vec<Value> = rule
        .ports
        .iter()
        .map(|(port, protocol)| json!({"protocol": protocol.to_string(), "port": port}))
        .collect();
    let mut out = Map::new();
    out.insert(peers_key.into(), json!([peer(&rule.peer)]));
    out.insert("ports".into(), Value::Array(ports));
    Value::Object(out)
}

/// The NetworkPolicy of `suggestion`, isolating its workload both ways.
fn manifest(suggestion: &Suggestion, enforce: bool) -> Value {
    let mut metadata = json!({"name": suggestion.name, "namespace": suggestion.workload.namespace});
    if !enforce {
        metadata["annotations"] = json!({"podwall.io/mode": "audit"});
    }
    let ingress: Vec<Value> = suggestion.ingress.iter().map(|r| rule(r, "from")).collect();
    let egress: Vec<Value> = suggestion.egress.iter().map(|r| rule(r, "to")).collect();
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": match_labels(&suggestion.workload.labels),
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    })
}

/// What each rule covers: its path, the flows and the ends seen.
fn covers(suggestion: &Suggestion) -> Vec<Value> {
    let list = |direction: &str, rules: &[SuggestedRule]| -> Vec<Value> {
        rules
            .iter()
            .enumerate()
            .map(|(index, r)| {
                json!({"rule": format!("spec.{direction}[{index}]"), "flows": r.flows, "seen": r.seen})
            })
            .collect()
    };
    let mut out = list("ingress", &suggestion.ingress);
    out.extend(list("egress", &suggestion.egress));
    out
}

/// Each policy as a YAML document: comments saying which pods it selects and what
/// each rule covers, then the policy (a JSON body, which is YAML).
fn to_yaml(state: &ClusterState, suggestions: &[Suggestion], enforce: bool) -> String {
    let mut out = String::new();
    for suggestion in suggestions {
        let pods: Vec<String> = state
            .pods
            .values()
            .filter(|pod| {
                pod.key.namespace == suggestion.workload.namespace
                    && suggestion
                        .workload
                        .labels
                        .iter()
                        .all(|(k, v)| pod.labels.get(k) == Some(v))
            })
            .map(|pod| pod.key.name.clone())
            .collect();
        out.push_str("---\n");
        out.push_str(&format!(
            "# {}/{}: selects {}\n",
            suggestion.workload.namespace,
            suggestion.name,
            pods.join(", ")
        ));
        for cover in covers(suggestion) {
            let seen: Vec<&str> = cover["seen"]
                .as_array()
                .map(|seen| seen.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out.push_str(&format!(
                "# {}: {} flows ({})\n",
                cover["rule"].as_str().unwrap_or_default(),
                cover["flows"],
                seen.join(", ")
            ));
        }
        let body = serde_json::to_string_pretty(&manifest(suggestion, enforce)).unwrap_or_default();
        out.push_str(&body);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::suggest::Workload;

    fn suggestion(name: &str, labels: &[(&str, &str)]) -> Suggestion {
        Suggestion {
            workload: Workload {
                namespace: "shop".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            name: name.into(),
            ingress: Vec::new(),
            egress: Vec::new(),
        }
    }

    #[test]
    fn a_selector_wider_than_its_workload_is_warned_about() {
        let all = [
            suggestion("suggested-web", &[("app", "web")]),
            suggestion(
                "suggested-web-canary",
                &[("app", "web"), ("track", "canary")],
            ),
            suggestion("suggested-all", &[]),
            suggestion("suggested-db", &[("app", "db")]),
        ];
        let warnings = selector_warnings(&all);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with(
            "shop/suggested-web: its selector also selects the pods of shop/suggested-web-canary"
        ));
        assert!(warnings[1].starts_with("shop/suggested-all: its pods have no labels"));
    }
}
