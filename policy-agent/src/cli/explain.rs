//! `policy-agent explain`: the verdict for one connection and the policies and
//! rules that decided it, from the reference evaluator. A would-drop (the
//! connection passes only because the policies that would drop it are in audit
//! mode) is its own verdict, naming those policies. With `--node`, also the
//! verdict a running datapath's tables make (`explain_node`), side by side.

use std::{fmt::Write as _, net::IpAddr, process::ExitCode};

use anyhow::bail;
use clap::Args;
use serde::Serialize;

use super::{
    explain_node::{NodeJson, NodeView, EXIT_DISAGREE},
    parse_port_protocol, FamilyArg, Input, Output,
};
use crate::{
    model::{ClusterState, ObjectRef, PolicyMode, Protocol},
    policy::{
        evaluator::{
            explain, first_match, ClusterPolicyExplanation, ClusterRuleRef, End, Explanation,
            PolicyExplanation, Query, RuleMatch, Side, SideExplanation, SideVerdict,
        },
        probes,
    },
};

/// Arguments of `explain`.
#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    manifests: Input,
    /// Who opens the connection: `namespace/pod`, or an IP address (the address of a
    /// pod is that pod: its address in a live cluster, or the one the datapath of
    /// --node knows; from manifests, the one `lab run` gives it).
    #[arg(long, value_name = "NS/POD|IP", value_parser = parse_endpoint)]
    from: End,
    /// Who it goes to: `namespace/pod` or an IP address.
    #[arg(long, value_name = "NS/POD|IP", value_parser = parse_endpoint)]
    to: End,
    /// Destination PORT/PROTO (`80/TCP`, `53/udp`; a bare number means TCP).
    #[arg(long, value_name = "PORT/PROTO", value_parser = parse_port_protocol)]
    port: (u16, Protocol),
    /// Which address of a pod the connection uses, as `lab run --family` (ipBlocks
    /// see that address; an IP given in --from/--to is used as it is).
    #[arg(long, value_enum, default_value_t = FamilyArg::Ipv4)]
    family: FamilyArg,
    /// A few lines for people, or JSON for machines.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Put every policy in audit mode (per-agent audit, as `lab run --audit` and
    /// `simulate --audit` do, and as `run --audit` does on a node).
    #[arg(long)]
    audit: bool,
    /// Also read the verdict from a running datapath's pinned maps (a node
    /// agent, or a running lab), lookup by lookup, beside the evaluator's;
    /// pods are judged at the addresses that datapath knows them by. A
    /// disagreement is reported as a bug and exits with code 5. Needs root.
    #[arg(long)]
    node: bool,
    /// With --node: which datapath, an instance name (`agent`, a lab's
    /// `pwlab-<pid>x<n>`) or the path of its names directory or file. Default:
    /// the only one running.
    #[arg(long, value_name = "NAME|PATH", requires = "node")]
    instance: Option<String>,
    /// With --node: where datapaths publish their names
    /// (`<DIR>/v<ABI>/<instance>/names.json`).
    #[arg(long, value_name = "DIR", env = crate::dataplane::RUN_ROOT_ENV, default_value = crate::dataplane::RUN_ROOT)]
    run_dir: std::path::PathBuf,
}

/// Parses `namespace/pod` or an IP address.
fn parse_endpoint(text: &str) -> Result<End, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(End::Address(ip));
    }
    match text.split_once('/') {
        // A namespace name is a DNS label: no dots, so `10.0.0.0/8` is not a pod.
        Some((namespace, name))
            if !namespace.is_empty()
                && namespace
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.is_empty()
                && !name.contains('/') =>
        {
            Ok(End::Pod(ObjectRef::new(namespace, name)))
        }
        _ => Err(format!(
            "'{text}' is neither namespace/pod nor an IP address"
        )),
    }
}

/// Exit code of `explain` for a dropped connection.
pub const EXIT_DROPPED: u8 = 3;
/// Exit code of `explain` for a connection that passes only because the policies
/// that would drop it are in audit mode.
pub const EXIT_WOULD_DROP: u8 = 4;

/// Explains the connection; the exit code says the verdict (0 allowed,
/// `EXIT_DROPPED`, `EXIT_WOULD_DROP`; with `--node`, `EXIT_DISAGREE` before
/// all), so scripts need not parse the output.
pub fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let mut state = args.manifests.load()?;
    if args.audit {
        state = state.with_every_policy_in_audit();
    }
    // Manifests: pods at the lab's addresses where the lab is built in; the
    // agent's image (no lab) judges them at the addresses their status gives.
    #[cfg(feature = "lab")]
    let (mut state, _) = super::simulate::addressed(state, args.manifests.live())?;
    let node = if args.node {
        let view = NodeView::open(args.instance.as_deref(), &args.run_dir)?;
        state = view.addressed(state);
        Some(view)
    } else {
        None
    };
    for endpoint in [&args.from, &args.to] {
        if let End::Pod(key) = endpoint {
            if !state.pods.contains_key(key) {
                bail!("pod {key} is not in {}", args.manifests.describe());
            }
        }
    }
    let (port, protocol) = args.port;
    let query = Query {
        src: args.from.clone(),
        dst: args.to.clone(),
        protocol,
        port,
    };
    // Pods are judged at their address of --family, as a lab probe carries it.
    let family = args.family.family();
    let judged = Query {
        src: probes::at_address(&state, &query.src, family),
        dst: probes::at_address(&state, &query.dst, family),
        ..query.clone()
    };
    let explanation = explain(&state, &judged);
    let reading = node
        .as_ref()
        .map(|view| view.read(&state, &judged, &explanation))
        .transpose()?;
    match args.output {
        Output::Table => {
            print!("{}", text(&state, &query, &judged, &explanation));
            if let (Some(view), Some(reading)) = (&node, &reading) {
                print!("{}", reading.text(view));
            }
        }
        Output::Json => {
            let node = node.as_ref().zip(reading.as_ref());
            let node = node.map(|(view, reading)| reading.json(view));
            println!(
                "{}",
                serde_json::to_string(&json(&query, &explanation, node))?
            );
        }
    }
    if let Some(reading) = &reading {
        let disagreements = reading.disagreements();
        for line in &disagreements {
            eprintln!("{line}");
        }
        if !disagreements.is_empty() {
            return Ok(ExitCode::from(EXIT_DISAGREE));
        }
        if reading.dropped_unjudged() {
            return Ok(ExitCode::from(EXIT_DROPPED));
        }
    }
    let verdict = explanation.verdict();
    Ok(match (verdict.allowed, verdict.would_drop) {
        (_, true) => ExitCode::from(EXIT_WOULD_DROP),
        (true, false) => ExitCode::SUCCESS,
        (false, false) => ExitCode::from(EXIT_DROPPED),
    })
}

/// `ns/pod (10.0.0.1)` for a pod judged at 10.0.0.1, `10.0.0.1 (pod ns/pod)` for a
/// pod's address given as such, else the endpoint as given.
fn describe(state: &ClusterState, given: &End, judged: &End) -> String {
    match (given, judged, given.pod(state)) {
        (_, End::PodAt(key, ip), _) => format!("{key} ({ip})"),
        (End::Address(ip), _, Some(pod)) => format!("{ip} (pod {})", pod.key),
        _ => given.to_string(),
    }
}

/// `spec.ingress[0]` or `spec.egress[0]`.
fn rule_path(list: &str, index: usize) -> String {
    format!("spec.{list}[{index}]")
}

/// Which halves of a rule failed.
fn failed_halves(rule: &RuleMatch) -> &'static str {
    match (rule.peer_matched, rule.port_matched) {
        (true, true) => "peer and port match",
        (true, false) => "peer matches, port does not",
        (false, true) => "port matches, peer does not",
        (false, false) => "neither peer nor port matches",
    }
}

/// The verdict in one phrase: `allowed`, `dropped`, or a would-drop.
fn verdict_phrase(allowed: bool, would_drop: bool) -> &'static str {
    match (allowed, would_drop) {
        (_, true) => "would-drop (allowed: the policies that would drop it are in audit mode)",
        (true, false) => "allowed",
        (false, false) => "dropped",
    }
}

/// The human output: the verdict, then one paragraph per side.
fn text(state: &ClusterState, query: &Query, judged: &Query, explanation: &Explanation) -> String {
    let verdict = explanation.verdict();
    let mut out = format!(
        "{} -> {} {}/{}: {}\n",
        describe(state, &query.src, &judged.src),
        describe(state, &query.dst, &judged.dst),
        query.port,
        query.protocol,
        verdict_phrase(verdict.allowed, verdict.would_drop)
    );
    let sides = [
        ("egress from", "egress", &query.src, &explanation.egress),
        ("ingress to", "ingress", &query.dst, &explanation.ingress),
    ];
    for (heading, list, endpoint, side) in sides {
        let name = endpoint
            .pod(state)
            .map_or_else(|| endpoint.to_string(), |pod| pod.key.to_string());
        let _ = write!(out, "{heading} {name}: ");
        let verdict = side.verdict();
        match &verdict {
            SideVerdict::Accepted(rule) => {
                let _ = writeln!(out, "allowed by {}: Accept", cluster_rule(list, rule));
            }
            SideVerdict::Denied(rule) => {
                let _ = writeln!(out, "dropped by {}: Deny", cluster_rule(list, rule));
            }
            SideVerdict::WouldDeny(rule) => {
                let _ = writeln!(
                    out,
                    "would-drop: {} denies it, and the policy is in audit mode",
                    cluster_rule(list, rule)
                );
            }
            _ => network_side(&mut out, list, &side.network),
        }
        if !side.admin.is_empty() || !side.baseline.is_empty() {
            let _ = writeln!(out, "  tiers: {}", walk(list, side));
        }
    }
    out
}

/// `Admin guardrails/deny-rest` (a rule without a name: `Admin guardrails/ingress[2]`).
fn cluster_rule(list: &str, rule: &ClusterRuleRef) -> String {
    let label = rule_label(list, &rule.rule_name, rule.rule_index);
    format!("{} {}/{label}", rule.tier, rule.policy)
}

/// A cluster rule's name, or its place in its list (`ingress[2]`) when it has none.
fn rule_label(list: &str, name: &str, index: usize) -> String {
    if name.is_empty() {
        format!("{list}[{index}]")
    } else {
        name.to_string()
    }
}

/// The walk through the tiers for one side, as far as it went:
/// `Admin tenants/from-dev: Pass -> NetworkPolicy: no policy selects it ->
/// Baseline defaults/deny-rest: Deny`. Audit-mode policies are not walked; their
/// would-denials are the side's verdict.
fn walk(list: &str, side: &Side) -> String {
    let mut steps = Vec::new();
    // Audit-mode policies are not walked: their would-denials are the verdict.
    let first_match = |policies: &[ClusterPolicyExplanation]| {
        first_match(policies, false).map(|(rule, action)| {
            let label = rule_label(list, &rule.rule_name, rule.rule_index);
            (format!("{}/{label}", rule.policy), action)
        })
    };
    match first_match(&side.admin) {
        Some((rule, action)) => {
            steps.push(format!("Admin {rule}: {action}"));
            if action != crate::model::RuleAction::Pass {
                return steps.join(" -> ");
            }
        }
        None => steps.push("Admin: no rule matches".to_string()),
    }
    match &side.network {
        SideExplanation::Isolated {
            mode: PolicyMode::Enforce,
            ..
        } => {
            let decided = if side.network.verdict().allows() {
                "allowed"
            } else {
                "dropped"
            };
            steps.push(format!("NetworkPolicy: {decided}"));
            return steps.join(" -> ");
        }
        _ => steps.push("NetworkPolicy: no policy selects it".to_string()),
    }
    match first_match(&side.baseline) {
        Some((rule, action)) if action != crate::model::RuleAction::Pass => {
            steps.push(format!("Baseline {rule}: {action}"));
            return steps.join(" -> ");
        }
        Some((rule, action)) => steps.push(format!("Baseline {rule}: {action}")),
        None => steps.push("Baseline: no rule matches".to_string()),
    }
    steps.push("default: allowed".to_string());
    steps.join(" -> ")
}

/// The paragraph of a side NetworkPolicy decides (or that no policy of any tier
/// decides).
fn network_side(out: &mut String, list: &str, side: &SideExplanation) {
    match side {
        SideExplanation::NotAPod => {
            out.push_str("allowed: not a pod of the cluster, no policy applies\n");
        }
        SideExplanation::HostNetwork => {
            out.push_str("allowed: a hostNetwork pod, policies never isolate it\n");
        }
        SideExplanation::Unisolated => {
            let _ = writeln!(out, "allowed: no policy selects it for {list}");
        }
        SideExplanation::Isolated {
            mode,
            policies,
            ignored_audit,
        } => {
            match side.verdict() {
                SideVerdict::Allowed { policy, rule_index } => {
                    let rule = rule_path(list, rule_index);
                    let audit = match mode {
                        PolicyMode::Audit => "; the policy is in audit mode",
                        PolicyMode::Enforce => "",
                    };
                    let _ = writeln!(
                        out,
                        "allowed by {policy} {rule} (peer and port match{audit})"
                    );
                }
                SideVerdict::WouldDrop { .. } => {
                    out.push_str(
                        "would-drop: isolated only by these policies, which are in audit \
                             mode; no rule matches, so it passes and is reported\n",
                    );
                    for explained in policies {
                        denied_policy(out, list, explained);
                    }
                }
                _ => {
                    out.push_str("dropped: isolated by these policies, no rule matches\n");
                    for explained in policies {
                        denied_policy(out, list, explained);
                    }
                }
            }
            ignored(out, list, ignored_audit);
        }
    }
}

/// The line naming the audit-mode policies a side ignores, if there are any.
fn ignored(out: &mut String, list: &str, ignored_audit: &[ObjectRef]) {
    if ignored_audit.is_empty() {
        return;
    }
    let names: Vec<String> = ignored_audit.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "  ignored (audit mode; enforce-mode policies decide {list}): {}",
        names.join(", ")
    );
}

/// The lines for one isolating policy of a dropping side: each rule and what failed.
fn denied_policy(out: &mut String, list: &str, explained: &PolicyExplanation) {
    let _ = writeln!(out, "  {}", explained.policy);
    if explained.rules.is_empty() {
        let _ = writeln!(out, "    no {list} rules: it allows nothing");
    }
    for rule in &explained.rules {
        let path = rule_path(list, rule.index);
        let _ = writeln!(out, "    {path}: {}", failed_halves(rule));
    }
}

/// `explain --output json`.
#[derive(Serialize)]
struct QueryJson {
    from: String,
    to: String,
    port: u16,
    protocol: Protocol,
    /// The connection passes (a would-drop does).
    allowed: bool,
    /// It passes only because a side's deciding policies are in audit mode.
    would_drop: bool,
    egress: SideJson,
    ingress: SideJson,
    /// With `--node`: what the datapath's tables say of each side.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<NodeJson>,
}

/// One side in JSON: `status` is `not_a_pod`, `host_network`, `unisolated` or
/// `isolated` (by NetworkPolicies); `allowed_by` the deciding NetworkPolicy rule
/// of an isolated side that allows; `mode` (`enforce` or `audit`) the mode of
/// `policies`, the deciding NetworkPolicies, for an isolated side;
/// `ignored_audit` the audit-mode ones ignored beside enforce-mode ones;
/// `decided_by` the ClusterNetworkPolicy rule that accepts or denies the side
/// (or, with `would_drop`, would deny it), and `admin`/`baseline` those tiers'
/// policies that apply, in the order they are read.
#[derive(Serialize)]
struct SideJson {
    allowed: bool,
    would_drop: bool,
    status: &'static str,
    mode: Option<PolicyMode>,
    allowed_by: Option<RuleRefJson>,
    policies: Vec<PolicyJson>,
    ignored_audit: Vec<String>,
    decided_by: Option<ClusterDecisionJson>,
    admin: Vec<ClusterPolicyJson>,
    baseline: Vec<ClusterPolicyJson>,
}

#[derive(Serialize)]
struct ClusterDecisionJson {
    tier: crate::model::Tier,
    policy: String,
    rule: String,
    action: crate::model::RuleAction,
}

#[derive(Serialize)]
struct ClusterPolicyJson {
    policy: String,
    priority: u16,
    mode: PolicyMode,
    rules: Vec<ClusterRuleJson>,
}

#[derive(Serialize)]
struct ClusterRuleJson {
    rule: String,
    action: crate::model::RuleAction,
    peer_matched: bool,
    port_matched: bool,
    failed_closed: bool,
    matched: bool,
}

/// The JSON of one tier's policies for a side.
fn cluster_policies_json(
    list: &str,
    policies: &[ClusterPolicyExplanation],
) -> Vec<ClusterPolicyJson> {
    policies
        .iter()
        .map(|policy| ClusterPolicyJson {
            policy: policy.name.clone(),
            priority: policy.priority,
            mode: policy.mode,
            rules: policy
                .rules
                .iter()
                .map(|(name, rule)| ClusterRuleJson {
                    rule: rule_label(list, name, rule.index),
                    action: rule.action,
                    peer_matched: rule.peer_matched,
                    port_matched: rule.port_matched,
                    failed_closed: rule.failed_closed,
                    matched: rule.matched(),
                })
                .collect(),
        })
        .collect()
}

#[derive(Serialize)]
struct RuleRefJson {
    policy: String,
    rule: String,
}

#[derive(Serialize)]
struct PolicyJson {
    policy: String,
    rules: Vec<RuleJson>,
}

#[derive(Serialize)]
struct RuleJson {
    rule: String,
    peer_matched: bool,
    port_matched: bool,
}

fn json(query: &Query, explanation: &Explanation, node: Option<NodeJson>) -> QueryJson {
    let side = |list: &str, whole: &Side| {
        let verdict = whole.verdict();
        let decided_by = match &verdict {
            SideVerdict::Accepted(rule)
            | SideVerdict::Denied(rule)
            | SideVerdict::WouldDeny(rule) => Some(ClusterDecisionJson {
                tier: rule.tier,
                policy: rule.policy.clone(),
                rule: rule_label(list, &rule.rule_name, rule.rule_index),
                action: match verdict {
                    SideVerdict::Accepted(_) => crate::model::RuleAction::Accept,
                    _ => crate::model::RuleAction::Deny,
                },
            }),
            _ => None,
        };
        let side = &whole.network;
        let (status, mode, policies, ignored_audit) = match side {
            SideExplanation::NotAPod => ("not_a_pod", None, &[][..], &[][..]),
            SideExplanation::HostNetwork => ("host_network", None, &[][..], &[][..]),
            SideExplanation::Unisolated => ("unisolated", None, &[][..], &[][..]),
            SideExplanation::Isolated {
                mode,
                policies,
                ignored_audit,
            } => (
                "isolated",
                Some(*mode),
                policies.as_slice(),
                ignored_audit.as_slice(),
            ),
        };
        SideJson {
            allowed: verdict.allows(),
            would_drop: verdict.would_drop(),
            status,
            mode,
            ignored_audit: ignored_audit.iter().map(ToString::to_string).collect(),
            allowed_by: match verdict {
                SideVerdict::Allowed { policy, rule_index } => Some(RuleRefJson {
                    policy: policy.to_string(),
                    rule: rule_path(list, rule_index),
                }),
                _ => None,
            },
            decided_by,
            admin: cluster_policies_json(list, &whole.admin),
            baseline: cluster_policies_json(list, &whole.baseline),
            policies: policies
                .iter()
                .map(|explained| PolicyJson {
                    policy: explained.policy.to_string(),
                    rules: explained
                        .rules
                        .iter()
                        .map(|rule| RuleJson {
                            rule: rule_path(list, rule.index),
                            peer_matched: rule.peer_matched,
                            port_matched: rule.port_matched,
                        })
                        .collect(),
                })
                .collect(),
        }
    };
    QueryJson {
        from: query.src.to_string(),
        to: query.dst.to_string(),
        port: query.port,
        protocol: query.protocol,
        allowed: explanation.verdict().allowed,
        would_drop: explanation.verdict().would_drop,
        egress: side("egress", &explanation.egress),
        ingress: side("ingress", &explanation.ingress),
        node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_pods_or_addresses_and_anything_else_is_refused() {
        assert_eq!(
            parse_endpoint("prod/web"),
            Ok(End::Pod(ObjectRef::new("prod", "web")))
        );
        assert!(matches!(parse_endpoint("fd00::1"), Ok(End::Address(_))));
        assert!(matches!(parse_endpoint("10.0.0.1"), Ok(End::Address(_))));
        for bad in ["web", "prod/", "/web", "a/b/c", "10.0.0.0/8"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
