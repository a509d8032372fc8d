//! Tests of the parent module.

#![expect(
    clippy::expect_used,
    reason = "a malformed test fixture should fail the test"
)]

use super::*;
use crate::model::{
    LabelSelector, NamespaceScope, NetworkPolicy, Peer, Peers, PolicyPort, PolicyTypes, Rule,
    SelectorRequirement,
};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1 as net;

use super::network_policy::entries_matching_nothing;

mod caps;
mod cluster_policy;
mod mode;
mod tunnels;

/// A NetworkPolicy `prod/np` with `spec` written as YAML flow (`{...}`).
fn netpol(spec: &str) -> Result<NetworkPolicy> {
    let text = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: np, namespace: prod}}\nspec: {spec}\n"
    );
    network_policy(&serde_saphyr::from_str(&text).expect("fixture is a NetworkPolicy"))
}

fn ok(spec: &str) -> NetworkPolicy {
    netpol(spec).unwrap_or_else(|err| panic!("{spec}: {err}"))
}

/// Each spec is rejected with a message containing the expected text.
fn assert_rejected(cases: &[(String, &str)]) {
    for (spec, expected) in cases {
        match netpol(spec) {
            Ok(np) => panic!("{spec}: accepted as {np:?}"),
            Err(err) => assert!(err.to_string().contains(expected), "{spec}: got {err}"),
        }
    }
}

/// A policy whose first ingress rule has the given peer.
fn with_peer(peer: &str) -> String {
    format!("{{ingress: [{{from: [{peer}]}}]}}")
}

/// A policy whose first ingress rule has a valid port, then the given one.
fn with_port(port: &str) -> String {
    format!("{{ingress: [{{ports: [{{port: 1}}, {port}]}}]}}")
}

fn selector(labels: &[(&str, &str)]) -> LabelSelector {
    let match_labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    LabelSelector {
        match_labels: match_labels.collect(),
        match_expressions: Vec::new(),
    }
}

#[test]
fn policy_types_default_as_the_api_server_does() {
    // (spec, isolates ingress, isolates egress)
    let cases = [
        // Absent: Ingress always; Egress iff there is at least one egress rule.
        ("{egress: [{}]}", true, true),
        ("{egress: []}", true, false),
        ("{}", true, false),
        ("{policyTypes: [], egress: [{}]}", true, true),
        // Given: exactly what it says, whatever rules are present.
        ("{policyTypes: [Egress], ingress: [{}]}", false, true),
        ("{policyTypes: [Ingress], egress: [{}]}", true, false),
        ("{policyTypes: [Ingress, Egress]}", true, true),
    ];
    for (spec, ingress, egress) in cases {
        assert_eq!(
            ok(spec).policy_types,
            PolicyTypes { ingress, egress },
            "{spec}"
        );
    }
}

#[test]
fn empty_and_absent_peers_and_ports_both_mean_everything() {
    let all = Rule {
        peers: Peers::All,
        ports: Vec::new(),
    };
    for spec in [
        "{ingress: [{}], egress: [{}]}",
        "{ingress: [{from: [], ports: []}], egress: [{to: [], ports: []}]}",
    ] {
        let np = ok(spec);
        assert_eq!(np.ingress, vec![all.clone()], "{spec}");
        assert_eq!(np.egress, vec![all.clone()], "{spec}");
    }
}

#[test]
fn absent_pod_selector_selects_every_pod() {
    assert_eq!(ok("{}").pod_selector, LabelSelector::default());
    let np = ok("{podSelector: {matchLabels: {app: db}}}");
    assert_eq!(np.pod_selector, selector(&[("app", "db")]));
}

#[test]
fn selectors_in_one_peer_are_anded_and_in_two_peers_ored() {
    let one = ok(&with_peer(
        "{namespaceSelector: {matchLabels: {team: a}}, podSelector: {matchLabels: {app: web}}}",
    ));
    let two = ok(&with_peer(
        "{namespaceSelector: {matchLabels: {team: a}}}, {podSelector: {matchLabels: {app: web}}}",
    ));
    let team_a = || NamespaceScope::Matching(selector(&[("team", "a")]));
    let web = || selector(&[("app", "web")]);
    let web_in_team_a = Peer::Pods {
        namespaces: team_a(),
        pods: web(),
    };
    let all_in_team_a = Peer::Pods {
        namespaces: team_a(),
        pods: LabelSelector::default(),
    };
    let web_here = Peer::Pods {
        namespaces: NamespaceScope::PolicyNamespace,
        pods: web(),
    };
    assert_eq!(one.ingress[0].peers, Peers::Only(vec![web_in_team_a]));
    assert_eq!(
        two.ingress[0].peers,
        Peers::Only(vec![all_in_team_a, web_here])
    );
}

#[test]
fn ip_block_keeps_except_inside_cidr_and_truncates_host_bits() {
    let np = ok(
        "{egress: [{to: [{ipBlock: {cidr: 10.1.2.3/16, except: [10.1.5.0/24]}}, \
                 {ipBlock: {cidr: 'fd00::/64'}}]}]}",
    );
    let net = |s: &str| s.parse::<IpNet>().expect("test CIDR");
    let v4 = Peer::IpBlock {
        cidr: net("10.1.0.0/16"),
        except: vec![net("10.1.5.0/24")],
    };
    let v6 = Peer::IpBlock {
        cidr: net("fd00::/64"),
        except: Vec::new(),
    };
    assert_eq!(np.egress[0].peers, Peers::Only(vec![v4, v6]));
}

#[test]
fn ports_default_to_tcp_and_keep_names_and_ranges() {
    let np = ok(
        "{ingress: [{ports: [{port: 80}, {protocol: UDP, port: dns-udp}, \
                 {port: 8000, endPort: 8080}, {protocol: SCTP}]}]}",
    );
    let port = |protocol, port, end_port| PolicyPort {
        protocol,
        port,
        end_port,
    };
    let expected = vec![
        port(Protocol::Tcp, Some(PortRef::Number(80)), None),
        port(Protocol::Udp, Some(PortRef::Name("dns-udp".into())), None),
        port(Protocol::Tcp, Some(PortRef::Number(8000)), Some(8080)),
        port(Protocol::Sctp, None, None),
    ];
    assert_eq!(np.ingress[0].ports, expected);
}

#[test]
fn match_expressions_are_converted_with_their_values() {
    let np = ok(
        "{podSelector: {matchExpressions: [{key: tier, operator: In, values: [a, b]}, \
                 {key: x, operator: DoesNotExist}]}}",
    );
    let req = |key: &str, operator, values: &[&str]| SelectorRequirement {
        key: key.into(),
        operator,
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    let expected = vec![
        req("tier", SelectorOperator::In, &["a", "b"]),
        req("x", SelectorOperator::DoesNotExist, &[]),
    ];
    assert_eq!(np.pod_selector.match_expressions, expected);
}

#[test]
fn bad_ip_blocks_become_invalid_peers_naming_the_field_and_the_rest_still_loads() {
    let invalid = |field: &str, reason: &str| Peer::Invalid {
        field: field.into(),
        reason: reason.into(),
    };
    let at = "spec.ingress[0].from[1].ipBlock";
    let cases = [
        (
            "{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}",
            invalid(
                &format!("{at}.except[0]"),
                "11.0.0.0/16 must be a strict subset of cidr 10.0.0.0/8",
            ),
        ),
        (
            "{cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.0.0.0/8]}",
            invalid(
                &format!("{at}.except[1]"),
                "10.0.0.0/8 must be a strict subset of cidr 10.0.0.0/8",
            ),
        ),
        (
            "{cidr: 10.0.0.0/8, except: ['fd00::/64']}",
            invalid(
                &format!("{at}.except[0]"),
                "fd00::/64 is not of the address family of cidr 10.0.0.0/8",
            ),
        ),
        (
            "{cidr: 10.0.0.1}",
            invalid(
                &format!("{at}.cidr"),
                "\"10.0.0.1\" is not a CIDR such as 10.0.0.0/8 or fd00::/64",
            ),
        ),
        (
            "{cidr: 10.0.0.0/8, except: [ten]}",
            invalid(
                &format!("{at}.except[0]"),
                "\"ten\" is not a CIDR such as 10.0.0.0/8 or fd00::/64",
            ),
        ),
    ];
    let good = Peer::Pods {
        namespaces: NamespaceScope::PolicyNamespace,
        pods: selector(&[("app", "web")]),
    };
    for (block, expected) in cases {
        let np = ok(&with_peer(&format!(
            "{{podSelector: {{matchLabels: {{app: web}}}}}}, {{ipBlock: {block}}}"
        )));
        assert_eq!(
            np.ingress[0].peers,
            Peers::Only(vec![good.clone(), expected.clone()]),
            "{block}"
        );
        let Peer::Invalid { field, reason } = expected else {
            unreachable!("every case expects an invalid peer");
        };
        assert_eq!(entries_matching_nothing(&np), vec![(field, reason)]);
    }
}

#[test]
fn peers_the_model_cannot_hold_are_rejected_naming_the_field() {
    let peer = "spec.ingress[0].from[0]";
    assert_rejected(&[
        (
            with_peer("{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}"),
            &format!("{peer}: ipBlock cannot be combined"),
        ),
        (
            with_peer("{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}"),
            &format!("{peer}: ipBlock cannot be combined"),
        ),
        (
            "{egress: [{to: [{}]}]}".into(),
            "spec.egress[0].to[0]: a peer must set",
        ),
    ]);
}

#[test]
fn end_ports_below_port_or_without_a_numeric_port_are_kept_and_listed() {
    let np = ok(
        "{egress: [{ports: [{port: 8080, endPort: 8000}, {port: http, endPort: 8000}, \
                 {protocol: UDP, endPort: 8000}, {port: 80, endPort: 80}]}]}",
    );
    let port = |protocol, port, end_port| PolicyPort {
        protocol,
        port,
        end_port,
    };
    let expected = vec![
        port(Protocol::Tcp, Some(PortRef::Number(8080)), Some(8000)),
        port(
            Protocol::Tcp,
            Some(PortRef::Name("http".into())),
            Some(8000),
        ),
        port(Protocol::Udp, None, Some(8000)),
        port(Protocol::Tcp, Some(PortRef::Number(80)), Some(80)),
    ];
    assert_eq!(np.egress[0].ports, expected);
    let at = |i: usize| format!("spec.egress[0].ports[{i}].endPort");
    assert_eq!(
        entries_matching_nothing(&np),
        vec![
            (at(0), "endPort 8000 is below port 8080".to_string()),
            (
                at(1),
                "endPort 8000 with the named port \"http\"".to_string()
            ),
            (at(2), "endPort 8000 without a port".to_string()),
        ]
    );
}

#[test]
fn bad_protocols_ports_and_port_numbers_are_rejected_naming_the_field() {
    let at = "spec.ingress[0].ports[1]";
    let bad_name = |name: &str| format!("{at}.port: \"{name}\" is not a valid port name");
    assert_rejected(&[
        (
            with_port("{protocol: tcp}"),
            &format!("{at}.protocol: unsupported protocol \"tcp\""),
        ),
        (
            with_port("{protocol: ICMP}"),
            &format!("{at}.protocol: unsupported protocol"),
        ),
        (
            with_port("{port: 0}"),
            &format!("{at}.port: 0 is not a port number"),
        ),
        (
            with_port("{port: 65536}"),
            &format!("{at}.port: 65536 is not a port number"),
        ),
        (with_port("{port: HTTP}"), &bad_name("HTTP")),
        (
            with_port("{port: '8080'}"),
            &format!("{}: must contain at least one letter", bad_name("8080")),
        ),
        (with_port("{port: a--b}"), &bad_name("a--b")),
        (with_port("{port: web-}"), &bad_name("web-")),
        (
            with_port("{port: abcdefghijklmnop}"),
            &bad_name("abcdefghijklmnop"),
        ),
        (
            with_port("{port: 1, endPort: 70000}"),
            &format!("{at}.endPort: 70000 is not a port number"),
        ),
    ]);
}

#[test]
fn bad_policy_types_and_selector_operators_are_rejected_naming_the_field() {
    let expressions = |exprs: &str| format!("{{matchExpressions: [{exprs}]}}");
    assert_rejected(&[
        (
            "{policyTypes: [Ingress, egress]}".into(),
            "spec.policyTypes[1]: unknown policy type \"egress\"",
        ),
        (
            format!(
                "{{podSelector: {}}}",
                expressions("{key: a, operator: Equals, values: [b]}")
            ),
            "spec.podSelector.matchExpressions[0].operator: unknown operator \"Equals\"",
        ),
        (
            with_peer(&format!(
                "{{namespaceSelector: {}}}",
                expressions("{key: a, operator: In}")
            )),
            "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values: \
             operator In needs at least one value",
        ),
        (
            with_peer(&format!(
                "{{podSelector: {}}}",
                expressions("{key: a, operator: Exists, values: [b]}")
            )),
            "spec.ingress[0].from[0].podSelector.matchExpressions[0].values: \
             operator Exists must have no values",
        ),
    ]);
}

#[test]
fn object_without_name_is_rejected_and_without_namespace_is_in_default() {
    let unnamed: net::NetworkPolicy =
        serde_saphyr::from_str("metadata: {namespace: x}").expect("fixture");
    let err = network_policy(&unnamed).expect_err("no name");
    assert_eq!(err.to_string(), "metadata.name: required field is missing");
    let pod = pod_from("metadata: {name: p}").expect("valid pod");
    assert_eq!(pod.key, ObjectRef::new("default", "p"));
}

#[test]
fn namespace_always_carries_its_name_label() {
    let ns: core::Namespace = serde_saphyr::from_str(
        "metadata: {name: prod, labels: {team: a, kubernetes.io/metadata.name: other}}",
    )
    .expect("fixture");
    let labels = namespace(&ns).expect("valid namespace").labels;
    assert_eq!(
        labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
        Some("prod")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
}

fn pod_from(yaml: &str) -> Result<Pod> {
    pod(&serde_saphyr::from_str(yaml).expect("fixture is a Pod"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test IP")
}

#[test]
fn dual_stack_pod_gets_both_ips_from_pod_ips() {
    let pod = pod_from(
        "metadata: {name: web, namespace: prod, labels: {app: web}}\n\
         spec: {nodeName: n1, containers: [{name: c, ports: \
                [{containerPort: 80, name: http}, {containerPort: 53, protocol: UDP}]}]}\n\
         status: {podIP: 10.0.0.5, podIPs: [{ip: 10.0.0.5}, {ip: 'fd00::5'}]}",
    )
    .expect("valid pod");
    assert_eq!(pod.ips, vec![ip("10.0.0.5"), ip("fd00::5")]);
    assert_eq!(pod.node_name.as_deref(), Some("n1"));
    assert!(!pod.host_network);
    let port = |name: Option<&str>, port, protocol| ContainerPort {
        name: name.map(String::from),
        port,
        protocol,
    };
    let expected = vec![
        port(Some("http"), 80, Protocol::Tcp),
        port(None, 53, Protocol::Udp),
    ];
    assert_eq!(pod.ports, expected);
}

#[test]
fn a_pod_that_has_terminated_has_no_ips_its_address_may_be_reused() {
    for phase in ["Succeeded", "Failed"] {
        let pod = pod_from(&format!(
            "metadata: {{name: job}}\n\
             status: {{phase: {phase}, podIP: 10.0.0.5, podIPs: [{{ip: 10.0.0.5}}]}}"
        ))
        .expect("valid pod");
        assert_eq!(pod.ips, Vec::<IpAddr>::new(), "{phase}");
    }
    for phase in ["Pending", "Running", "Unknown"] {
        let pod = pod_from(&format!(
            "metadata: {{name: job}}\nstatus: {{phase: {phase}, podIP: 10.0.0.5}}"
        ))
        .expect("valid pod");
        assert_eq!(pod.ips, vec![ip("10.0.0.5")], "{phase}");
    }
}

#[test]
fn pod_ip_is_used_when_pod_ips_is_absent_and_bad_ips_are_rejected() {
    let pod = pod_from(
        "metadata: {name: p}\nspec: {hostNetwork: true, containers: []}\n\
                        status: {podIP: 192.0.2.1}",
    )
    .expect("valid pod");
    assert_eq!(pod.ips, vec![ip("192.0.2.1")]);
    assert!(pod.host_network);
    let err = pod_from("metadata: {name: p}\nstatus: {podIPs: [{ip: 10.0.0.1}, {ip: nope}]}")
        .expect_err("bad IP");
    let expected = "status.podIPs[1].ip: \"nope\" is not an IPv4 or IPv6 address";
    assert_eq!(err.to_string(), expected);
    let err = pod_from(
        "metadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}",
    )
    .expect_err("port 0");
    let expected = "spec.containers[0].ports[0].containerPort: 0 is not a port number";
    assert!(err.to_string().starts_with(expected), "{err}");
}

#[test]
fn service_defaults_target_port_and_treats_headless_as_no_cluster_ip() {
    let svc: core::Service = serde_saphyr::from_str(
        "metadata: {name: db, namespace: prod}\n\
         spec: {selector: {app: db}, clusterIP: None, ports: [{port: 5432}, \
                {name: m, port: 9000, targetPort: metrics, protocol: UDP}, \
                {port: 80, targetPort: 8080}]}",
    )
    .expect("fixture");
    let svc = service(&svc).expect("valid service");
    assert_eq!(svc.selector, Some(selector(&[("app", "db")]).match_labels));
    assert_eq!(svc.cluster_ip, None);
    let targets: Vec<_> = svc
        .ports
        .iter()
        .map(|p| (p.port, p.target_port.clone(), p.protocol))
        .collect();
    let expected = vec![
        (5432, PortRef::Number(5432), Protocol::Tcp),
        (9000, PortRef::Name("metrics".into()), Protocol::Udp),
        (80, PortRef::Number(8080), Protocol::Tcp),
    ];
    assert_eq!(targets, expected);
}

#[test]
fn a_services_extra_ips_are_its_other_cluster_ip_external_ips_and_balanced_ingress_ips() {
    let yaml = "metadata: {name: s}\n\
                spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10, 'fd96::10'], \
                       externalIPs: [198.51.100.7, 198.51.100.7]}\n\
                status: {loadBalancer: {ingress: [{ip: 203.0.113.9}, {hostname: lb.example}, \
                         {ip: 203.0.113.10, ipMode: Proxy}, {ip: 203.0.113.11, ipMode: VIP}]}}";
    let svc = service(&serde_saphyr::from_str(yaml).expect("fixture")).expect("valid");
    assert_eq!(svc.cluster_ip, Some(ip("10.96.0.10")));
    // Sorted, no repeats, not the cluster IP, not a Proxy-mode load balancer's.
    assert_eq!(
        svc.extra_ips,
        [
            ip("198.51.100.7"),
            ip("203.0.113.9"),
            ip("203.0.113.11"),
            ip("fd96::10")
        ]
    );
    assert_eq!(
        svc.addresses().collect::<Vec<_>>()[..2],
        [ip("10.96.0.10"), ip("198.51.100.7")]
    );
    let bad = "metadata: {name: s}\nspec: {externalIPs: [not-an-ip]}";
    let error = service(&serde_saphyr::from_str(bad).expect("fixture")).expect_err("invalid IP");
    assert!(error.to_string().contains("spec.externalIPs"), "{error}");
}

#[test]
fn service_with_empty_selector_has_none_and_keeps_its_cluster_ip() {
    let yaml = "metadata: {name: s}\nspec: {selector: {}, clusterIP: 10.96.0.10}";
    let svc = service(&serde_saphyr::from_str(yaml).expect("fixture")).expect("valid");
    assert_eq!(svc.selector, None);
    assert_eq!(svc.cluster_ip, Some(ip("10.96.0.10")));
}
