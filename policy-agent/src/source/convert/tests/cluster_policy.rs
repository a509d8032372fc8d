//! ClusterNetworkPolicy conversion: every CRD constraint, once broken and once
//! kept; what fails closed where; the stand-in; the mode annotation; Nodes.

use serde_json::{json, Value};

use super::super::{
    cluster_network_policy, cluster_network_policy_fail_closed, node, ClusterNetworkPolicy,
    ConvertError,
};
use crate::model::{
    builders::selector, ClusterNetworkPolicy as Model, ClusterPeer, ClusterPort, ClusterRule,
    ClusterSubject, LabelSelector, NamespacedPods, PolicyMode, Protocol, RuleAction, Tier,
};

/// A ClusterNetworkPolicy `guardrails` with `spec` (JSON) and `annotations`.
fn object(spec: Value, annotations: Value) -> ClusterNetworkPolicy {
    let value = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "guardrails", "annotations": annotations},
        "spec": spec,
    });
    serde_json::from_value(value).unwrap_or_else(|err| panic!("fixture: {err}"))
}

fn convert(spec: Value) -> Result<Model, ConvertError> {
    cluster_network_policy(&object(spec, json!({})))
}

fn ok(spec: Value) -> Model {
    convert(spec.clone()).unwrap_or_else(|err| panic!("{spec}: {err}"))
}

/// A valid spec: Admin, priority 10, every namespace, no rules.
fn base() -> Value {
    json!({"tier": "Admin", "priority": 10, "subject": {"namespaces": {}}})
}

fn with(mut spec: Value, key: &str, value: Value) -> Value {
    spec[key] = value;
    spec
}

/// A spec whose one ingress rule has `rule`'s fields.
fn ingress(rule: Value) -> Value {
    with(base(), "ingress", json!([rule]))
}

/// A spec whose one egress rule has `rule`'s fields.
fn egress(rule: Value) -> Value {
    with(base(), "egress", json!([rule]))
}

/// The one egress rule of `spec`, converted.
fn egress_rule(spec: Value) -> ClusterRule {
    let mut policy = ok(spec);
    assert_eq!(policy.egress.len(), 1, "{policy:?}");
    policy.egress.remove(0)
}

fn ingress_rule(spec: Value) -> ClusterRule {
    let mut policy = ok(spec);
    assert_eq!(policy.ingress.len(), 1, "{policy:?}");
    policy.ingress.remove(0)
}

/// The `(field, reason)` of the first Invalid peer or port of `rule`.
fn invalid_in(rule: &ClusterRule) -> Option<(String, String)> {
    let peers = rule.peers.iter().filter_map(|peer| match peer {
        ClusterPeer::Invalid { field, reason } => Some((field.clone(), reason.clone())),
        _ => None,
    });
    let ports = rule.ports.iter().filter_map(|port| match port {
        ClusterPort::Invalid { field, reason } => Some((field.clone(), reason.clone())),
        _ => None,
    });
    peers.chain(ports).next()
}

fn error_of(spec: Value) -> String {
    match convert(spec.clone()) {
        Ok(policy) => panic!("{spec}: accepted as {policy:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn a_valid_policy_converts_with_every_kind_of_peer_and_port() {
    let spec = json!({
        "tier": "Baseline", "priority": 1000,
        "subject": {"pods": {"namespaceSelector": {"matchLabels": {"team": "a"}},
                             "podSelector": {"matchLabels": {"app": "db"}}}},
        "ingress": [{"name": "from-web", "action": "Accept",
                     "from": [{"namespaces": {"matchLabels": {"team": "a"}}},
                              {"pods": {"podSelector": {"matchLabels": {"app": "web"}}}}],
                     "protocols": [{"tcp": {"destinationPort": {"number": 5432}}},
                                   {"destinationNamedPort": "metrics"}]}],
        "egress": [{"action": "Pass",
                    "to": [{"networks": ["10.1.2.3/8", "fd00::1/64"]},
                           {"nodes": {"matchLabels": {"role": "infra"}}}],
                    "protocols": [{"udp": {"destinationPort": {"range": {"start": 1000, "end": 2000}}}},
                                  {"sctp": {"destinationPort": {"number": 9}}}]}],
    });
    let policy = ok(spec);
    let team_a = selector().label("team", "a").build();
    assert_eq!(policy.tier, Tier::Baseline);
    assert_eq!(policy.priority, 1000);
    assert_eq!(policy.mode, PolicyMode::Enforce);
    assert_eq!(
        policy.subject,
        ClusterSubject::Pods(NamespacedPods {
            namespaces: team_a.clone(),
            pods: selector().label("app", "db").build(),
        })
    );
    let rule = &policy.ingress[0];
    assert_eq!(
        (rule.name.as_str(), rule.action),
        ("from-web", RuleAction::Accept)
    );
    assert_eq!(
        rule.peers,
        vec![
            ClusterPeer::Namespaces(team_a),
            // An absent namespaceSelector is every namespace.
            ClusterPeer::Pods(NamespacedPods {
                namespaces: LabelSelector::default(),
                pods: selector().label("app", "web").build(),
            }),
        ]
    );
    assert_eq!(
        rule.ports,
        vec![
            ClusterPort::Ports {
                protocol: Protocol::Tcp,
                first: 5432,
                last: 5432
            },
            ClusterPort::Named("metrics".to_string()),
        ]
    );
    let rule = &policy.egress[0];
    assert_eq!(rule.action, RuleAction::Pass);
    let networks = vec!["10.0.0.0/8".parse().ok(), "fd00::/64".parse().ok()];
    assert_eq!(
        rule.peers,
        vec![
            // Host bits are accepted, as upstream's isCIDR does, and cleared.
            ClusterPeer::Networks(networks.into_iter().flatten().collect()),
            ClusterPeer::Nodes(selector().label("role", "infra").build()),
        ]
    );
    assert_eq!(
        rule.ports,
        vec![
            ClusterPort::Ports {
                protocol: Protocol::Udp,
                first: 1000,
                last: 2000
            },
            ClusterPort::Ports {
                protocol: Protocol::Sctp,
                first: 9,
                last: 9
            },
        ]
    );
    assert!(!rule.fails_closed());
}

#[test]
fn whole_object_constraints_are_errors_naming_the_field() {
    let rule = json!({"action": "Deny", "from": [{"namespaces": {}}]});
    let name_100 = "n".repeat(100);
    let name_101 = "n".repeat(101);
    // (spec that breaks the rule, what the error says, a spec that keeps it)
    let cases = [
        (
            with(base(), "tier", json!("Middle")),
            "spec.tier: \"Middle\" is not Admin or Baseline",
            with(base(), "tier", json!("Baseline")),
        ),
        (
            with(base(), "priority", json!(1001)),
            "spec.priority: 1001 is not in 0..=1000",
            with(base(), "priority", json!(1000)),
        ),
        (
            with(base(), "priority", json!(-1)),
            "spec.priority: -1",
            with(base(), "priority", json!(0)),
        ),
        (
            with(base(), "priority", json!("high")),
            "spec.priority",
            base(),
        ),
        (
            with(base(), "ingress", json!(vec![rule.clone(); 26])),
            "spec.ingress: 26 rules, more than the 25 allowed",
            with(base(), "ingress", json!(vec![rule.clone(); 25])),
        ),
        (
            with(
                base(),
                "egress",
                json!(vec![
                    json!({"action": "Deny", "to": [{"namespaces": {}}]});
                    26
                ]),
            ),
            "spec.egress: 26 rules",
            with(
                base(),
                "egress",
                json!(vec![
                    json!({"action": "Deny", "to": [{"namespaces": {}}]});
                    25
                ]),
            ),
        ),
        (
            ingress(json!({"name": name_101, "action": "Deny", "from": [{"namespaces": {}}]})),
            "spec.ingress[0].name: 101 characters",
            ingress(json!({"name": name_100, "action": "Deny", "from": [{"namespaces": {}}]})),
        ),
        (
            ingress(json!({"action": "Allow", "from": [{"namespaces": {}}]})),
            "spec.ingress[0].action: \"Allow\" is not Accept, Deny or Pass",
            ingress(rule.clone()),
        ),
        (
            ingress(json!({"from": [{"namespaces": {}}]})),
            "spec.ingress[0].action: required field is missing",
            ingress(rule.clone()),
        ),
        (
            json!({"priority": 1, "subject": {"namespaces": {}}}),
            "spec.tier: required field is missing",
            base(),
        ),
        (json!("not an object"), "spec", base()),
    ];
    for (broken, expected, kept) in cases {
        let error = error_of(broken.clone());
        assert!(error.contains(expected), "{broken}: got {error}");
        ok(kept);
    }
}

#[test]
fn a_subject_that_is_not_exactly_one_of_namespaces_or_pods_is_invalid() {
    let cases = [
        (json!({}), "exactly one of namespaces or pods must be set"),
        (
            json!({"namespaces": {}, "pods": {"podSelector": {}}}),
            "exactly one of namespaces or pods",
        ),
        (
            json!({"pods": {"namespaceSelector": {}}}),
            "spec.subject.pods.podSelector: required field is missing",
        ),
        (
            json!({"namespaces": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}),
            "unknown operator",
        ),
        (json!({"nodes": {}}), "exactly one of namespaces or pods"),
    ];
    for (subject, expected) in cases {
        let policy = ok(with(base(), "subject", subject.clone()));
        match &policy.subject {
            ClusterSubject::Invalid { reason } => {
                assert!(reason.contains(expected), "{subject}: {reason}")
            }
            other => panic!("{subject}: converted to {other:?}"),
        }
    }
    let subject = json!({"pods": {"podSelector": {}}});
    assert!(matches!(
        ok(with(base(), "subject", subject)).subject,
        ClusterSubject::Pods(_)
    ));
}

#[test]
fn a_peer_the_api_server_rejects_fails_closed_naming_its_field() {
    let ns = json!({"namespaces": {}});
    let to = |peers: Value| egress(json!({"action": "Deny", "to": peers}));
    let from = |peers: Value| ingress(json!({"action": "Accept", "from": peers}));
    let networks = |n: usize| {
        let texts: Vec<String> = (0..n).map(|i| format!("10.{i}.0.0/16")).collect();
        json!([{"networks": texts}])
    };
    // (rule that breaks a constraint, field, reason contains, one that keeps it)
    let cases = [
        (
            from(json!([ns, {}])),
            "spec.ingress[0].from[1]",
            "exactly one of namespaces or pods must be set",
            from(json!([ns, ns])),
        ),
        (
            from(json!([{"namespaces": {}, "pods": {"podSelector": {}}}])),
            "spec.ingress[0].from[0]",
            "exactly one of namespaces or pods must be set (found namespaces, pods)",
            from(json!([{"pods": {"podSelector": {}}}])),
        ),
        // An ingress peer has no networks: the API server prunes it, leaving nothing.
        (
            from(json!([{"networks": ["10.0.0.0/8"]}])),
            "spec.ingress[0].from[0]",
            "exactly one of namespaces or pods",
            from(json!([ns])),
        ),
        (
            from(json!([])),
            "spec.ingress[0].from",
            "must have 1 to 25 items",
            from(json!([ns])),
        ),
        (
            from(json!(vec![ns.clone(); 26])),
            "spec.ingress[0].from",
            "26 items",
            from(json!(vec![ns.clone(); 25])),
        ),
        (
            egress(json!({"action": "Deny"})),
            "spec.egress[0].to",
            "must have 1 to 25 items",
            to(json!([ns])),
        ),
        (
            to(json!([{"networks": ["10.0.0.0/8"], "nodes": {}}])),
            "spec.egress[0].to[0]",
            "exactly one of namespaces, pods, networks, nodes or domainNames",
            to(json!([{"nodes": {}}])),
        ),
        (
            to(json!([{"networkz": ["10.0.0.0/8"]}])),
            "spec.egress[0].to[0]",
            "exactly one of",
            to(json!([{"networks": ["10.0.0.0/8"]}])),
        ),
        (
            to(networks(0)),
            "spec.egress[0].to[0].networks",
            "must have 1 to 25",
            to(networks(1)),
        ),
        (
            to(json!([{"networks": ["10.0.0.0/8", "10.0.0.0/8"]}])),
            "spec.egress[0].to[0].networks[1]",
            "duplicate value \"10.0.0.0/8\"",
            to(json!([{"networks": ["10.0.0.0/8", "10.0.0.1/8"]}])),
        ),
        (
            to(networks(26)),
            "spec.egress[0].to[0].networks",
            "26 items",
            to(networks(25)),
        ),
        (
            to(json!([{"networks": ["10.0.0.0/33"]}])),
            "spec.egress[0].to[0].networks[0]",
            "is not a CIDR",
            to(json!([{"networks": ["10.0.0.0/32"]}])),
        ),
        (
            to(json!([{"networks": ["10.0.0.0"]}])),
            "spec.egress[0].to[0].networks[0]",
            "is not a CIDR",
            to(json!([{"networks": ["::/0"]}])),
        ),
        (
            to(json!([{"networks": ["fe80::1%eth0/64"]}])),
            "spec.egress[0].to[0].networks[0]",
            "is not a CIDR",
            to(json!([{"networks": ["fe80::1/64"]}])),
        ),
        (
            to(json!([{"networks": ["::ffff:10.0.0.0/104"]}])),
            "spec.egress[0].to[0].networks[0]",
            "is not a CIDR",
            to(json!([{"networks": ["::fffe:a00:0/104"]}])),
        ),
        (
            to(json!([{"networks": ["10.0.0.0/08"]}])),
            "spec.egress[0].to[0].networks[0]",
            "is not a CIDR",
            to(json!([{"networks": ["10.0.0.0/0"]}])),
        ),
        (
            to(json!([{"networks": ["10.0.0.0/+8"]}])),
            "spec.egress[0].to[0].networks[0]",
            "is not a CIDR",
            to(json!([{"networks": ["10.0.0.0/8"]}])),
        ),
        (
            to(json!([{"networks": ["010.0.0.0/8"]}])),
            "spec.egress[0].to[0].networks[0]",
            "is not a CIDR",
            to(json!([{"networks": ["10.0.0.0/8"]}])),
        ),
        (
            to(json!([{"domainNames": ["example.com"]}])),
            "spec.egress[0].to[0].domainNames",
            "domainNames peers are not enforced by podwall yet",
            to(json!([ns])),
        ),
        (
            to(json!([{"pods": {"namespaceSelector": {}}}])),
            "spec.egress[0].to[0].pods.podSelector",
            "required field is missing",
            to(json!([{"pods": {"podSelector": {}}}])),
        ),
        (
            to(json!([{"namespaces": "all"}])),
            "spec.egress[0].to[0].namespaces",
            "invalid type",
            to(json!([ns])),
        ),
    ];
    for (broken, field, reason, kept) in cases {
        let rule = ok(broken.clone());
        let rule = rule.ingress.first().or(rule.egress.first()).cloned();
        let rule = rule.unwrap_or_else(|| panic!("{broken}: no rule"));
        let (found_field, found_reason) =
            invalid_in(&rule).unwrap_or_else(|| panic!("{broken}: nothing invalid: {rule:?}"));
        assert_eq!(found_field, field, "{broken}");
        assert!(found_reason.contains(reason), "{broken}: {found_reason}");
        assert!(rule.fails_closed(), "{broken}");
        let kept_policy = ok(kept.clone());
        let kept_rule = kept_policy.ingress.first().or(kept_policy.egress.first());
        let kept_rule = kept_rule.unwrap_or_else(|| panic!("{kept}: no rule"));
        assert_eq!(invalid_in(kept_rule), None, "{kept}");
        assert!(!kept_rule.fails_closed(), "{kept}");
    }
}

#[test]
fn a_protocols_entry_the_api_server_rejects_fails_closed_naming_its_field() {
    let rule = |protocols: Value| {
        ingress(json!({"action": "Deny", "from": [{"namespaces": {}}], "protocols": protocols}))
    };
    let tcp = |port: Value| json!([{"tcp": {"destinationPort": port}}]);
    let field = "spec.ingress[0].protocols[0]";
    // (protocols that break a constraint, field, reason contains, ones that keep it)
    let cases = [
        (
            json!([]),
            "spec.ingress[0].protocols".to_string(),
            "0 items; must have 1 to 25",
            tcp(json!({"number": 80})),
        ),
        (
            json!(vec![json!({"destinationNamedPort": "http"}); 26]),
            "spec.ingress[0].protocols".to_string(),
            "26 items",
            json!(vec![json!({"destinationNamedPort": "http"}); 25]),
        ),
        (
            json!([{}]),
            field.to_string(),
            "exactly one of tcp, udp, sctp or destinationNamedPort",
            tcp(json!({"number": 80})),
        ),
        (
            json!([{"tcp": {"destinationPort": {"number": 80}}, "udp": {"destinationPort": {"number": 80}}}]),
            field.to_string(),
            "exactly one of",
            json!([{"udp": {"destinationPort": {"number": 80}}}]),
        ),
        (
            json!([{"tcp": {}}]),
            format!("{field}.tcp.destinationPort"),
            "required field is missing",
            tcp(json!({"number": 1})),
        ),
        (
            tcp(json!({"number": 0})),
            format!("{field}.tcp.destinationPort.number"),
            "0 is not a port number",
            tcp(json!({"number": 65535})),
        ),
        (
            tcp(json!({"number": 65536})),
            format!("{field}.tcp.destinationPort.number"),
            "65536 is not a port number",
            tcp(json!({"number": 1})),
        ),
        (
            tcp(json!({})),
            format!("{field}.tcp.destinationPort"),
            "exactly one of number or range",
            tcp(json!({"number": 1})),
        ),
        (
            tcp(json!({"number": 80, "range": {"start": 1, "end": 2}})),
            format!("{field}.tcp.destinationPort"),
            "exactly one of number or range",
            tcp(json!({"range": {"start": 1, "end": 2}})),
        ),
        (
            tcp(json!({"range": {"start": 80, "end": 80}})),
            format!("{field}.tcp.destinationPort.range"),
            "start (80) must be less than end (80)",
            tcp(json!({"range": {"start": 79, "end": 80}})),
        ),
        (
            tcp(json!({"range": {"start": 0, "end": 80}})),
            format!("{field}.tcp.destinationPort.range.start"),
            "not a port number",
            tcp(json!({"range": {"start": 1, "end": 65535}})),
        ),
        (
            tcp(json!({"range": {"start": 1, "end": 65536}})),
            format!("{field}.tcp.destinationPort.range.end"),
            "not a port number",
            tcp(json!({"range": {"start": 1, "end": 65535}})),
        ),
        (
            tcp(json!({"range": {"start": 1}})),
            format!("{field}.tcp.destinationPort.range.end"),
            "required field is missing",
            tcp(json!({"range": {"start": 1, "end": 2}})),
        ),
        (
            json!([{"destinationNamedPort": ""}]),
            format!("{field}.destinationNamedPort"),
            "must not be empty",
            json!([{"destinationNamedPort": "http"}]),
        ),
    ];
    for (broken, expected_field, reason, kept) in cases {
        let rule_of_broken = ingress_rule(rule(broken.clone()));
        let (found_field, found_reason) = invalid_in(&rule_of_broken)
            .unwrap_or_else(|| panic!("{broken}: nothing invalid: {rule_of_broken:?}"));
        assert_eq!(found_field, expected_field, "{broken}");
        assert!(found_reason.contains(reason), "{broken}: {found_reason}");
        assert!(rule_of_broken.fails_closed(), "{broken}");
        let kept_rule = ingress_rule(rule(kept.clone()));
        assert_eq!(invalid_in(&kept_rule), None, "{kept}");
    }
}

#[test]
fn a_named_port_in_a_rule_with_networks_or_nodes_peers_fails_closed() {
    let named = json!([{"destinationNamedPort": "http"}]);
    for peer in [json!({"networks": ["10.0.0.0/8"]}), json!({"nodes": {}})] {
        let spec = egress(
            json!({"action": "Accept", "to": [{"namespaces": {}}, peer], "protocols": named}),
        );
        let rule = egress_rule(spec);
        let (field, reason) = invalid_in(&rule).unwrap_or_else(|| panic!("{rule:?}"));
        assert_eq!(field, "spec.egress[0].protocols[0].destinationNamedPort");
        assert!(
            reason.contains("networks, nodes or domainNames"),
            "{reason}"
        );
    }
    // With pod peers only, and with port numbers next to networks, all is well.
    let pods = egress(json!({"action": "Accept", "to": [{"namespaces": {}}], "protocols": named}));
    assert_eq!(invalid_in(&egress_rule(pods)), None);
    let numbered = egress(
        json!({"action": "Accept", "to": [{"networks": ["10.0.0.0/8"]}],
                                 "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}),
    );
    assert_eq!(invalid_in(&egress_rule(numbered)), None);
}

#[test]
fn unknown_fields_are_ignored_outside_peers_and_protocols() {
    let spec = json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
                      "futureField": true,
                      "ingress": [{"action": "Deny", "from": [{"namespaces": {}}], "extra": 1}]});
    let policy = ok(spec);
    assert!(!policy.ingress[0].fails_closed());
}

#[test]
fn the_mode_annotation_works_as_for_network_policies() {
    let cases = [
        (json!({"podwall.io/mode": "audit"}), PolicyMode::Audit),
        (json!({"podwall.io/mode": "enforce"}), PolicyMode::Enforce),
        (json!({}), PolicyMode::Enforce),
        // A typo enforces (fail closed).
        (json!({"podwall.io/mode": "Audit"}), PolicyMode::Enforce),
    ];
    for (annotations, expected) in cases {
        let policy = cluster_network_policy(&object(base(), annotations.clone()));
        let policy = policy.unwrap_or_else(|err| panic!("{annotations}: {err}"));
        assert_eq!(policy.mode, expected, "{annotations}");
    }
}

#[test]
fn a_rejected_policy_stands_in_as_an_admin_deny_everything_in_its_directions() {
    let spec = json!({"tier": "Middle", "priority": 5,
                      "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
                      "egress": [{"action": "Accept", "to": [{"namespaces": {}}]}]});
    let cnp = object(spec, json!({"podwall.io/mode": "audit"}));
    let error = cluster_network_policy(&cnp)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    let stand_in =
        cluster_network_policy_fail_closed(&cnp, &error).unwrap_or_else(|| panic!("no stand-in"));
    assert_eq!((stand_in.tier, stand_in.priority), (Tier::Admin, 0));
    assert_eq!(
        stand_in.subject,
        ClusterSubject::Namespaces(selector().label("team", "a").build())
    );
    assert_eq!(
        stand_in.mode,
        PolicyMode::Audit,
        "the annotation still counts"
    );
    assert!(
        stand_in.ingress.is_empty(),
        "no ingress rules, no ingress stand-in"
    );
    assert_eq!(stand_in.egress.len(), 1);
    let rule = &stand_in.egress[0];
    assert_eq!(rule.action, RuleAction::Deny);
    assert!(rule.fails_closed());
    let (_, reason) = invalid_in(rule).unwrap_or_else(|| panic!("{rule:?}"));
    assert!(reason.contains("spec.tier"), "{reason}");
    // A spec that is no object at all: both directions, subject invalid.
    let cnp = object(json!([1, 2]), json!({}));
    let error = cluster_network_policy(&cnp)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    let stand_in =
        cluster_network_policy_fail_closed(&cnp, &error).unwrap_or_else(|| panic!("no stand-in"));
    assert!(matches!(stand_in.subject, ClusterSubject::Invalid { .. }));
    assert_eq!((stand_in.ingress.len(), stand_in.egress.len()), (1, 1));
}

#[test]
fn a_node_converts_to_its_sorted_internal_and_external_addresses() {
    let value = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"role": "infra"}},
        "status": {"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "InternalIP", "address": "10.0.0.2"},
            {"type": "ExternalIP", "address": "203.0.113.9"},
            {"type": "InternalIP", "address": "fd00::2"},
            {"type": "InternalIP", "address": "10.0.0.2"},
            {"type": "InternalDNS", "address": "10.9.9.9"},
            {"type": "ExternalIP", "address": "not-an-ip"},
        ]},
    });
    let k8s: k8s_openapi::api::core::v1::Node =
        serde_json::from_value(value).unwrap_or_else(|err| panic!("fixture: {err}"));
    let converted = node(&k8s).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(converted.name, "n1");
    assert_eq!(
        converted.labels.get("role").map(String::as_str),
        Some("infra")
    );
    let ips: Vec<std::net::IpAddr> = ["10.0.0.2", "203.0.113.9", "fd00::2"]
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    assert_eq!(converted.ips, ips);
}
