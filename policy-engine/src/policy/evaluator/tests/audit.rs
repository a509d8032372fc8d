//! Audit mode in the evaluator: which policies decide a side, and would-drops.

use super::*;

/// A default-deny for ingress of prod/web, in `mode`.
fn deny_web(name: &str, mode: PolicyMode) -> NetworkPolicy {
    netpol("prod", name)
        .select(sel("app", "web"))
        .mode(mode)
        .build()
}

#[test]
fn an_audit_only_side_lets_through_what_it_would_drop_as_a_would_drop() {
    let state = base().policy(deny_web("deny", PolicyMode::Audit)).build();
    let verdict = evaluate(&state, &query("prod/client", "prod/web", Tcp, 80));
    assert_eq!(
        verdict,
        Verdict {
            allowed: true,
            would_drop: true,
            egress: SideVerdict::Unisolated,
            ingress: SideVerdict::WouldDrop {
                audited_by: vec![ObjectRef::new("prod", "deny")]
            },
        }
    );
    assert!(verdict.ingress.allows() && verdict.ingress.would_drop());
    // The same policy enforced drops exactly that.
    let enforced = base().policy(deny_web("deny", PolicyMode::Enforce)).build();
    let verdict = evaluate(&enforced, &query("prod/client", "prod/web", Tcp, 80));
    assert!(!verdict.allowed && !verdict.would_drop && !verdict.ingress.would_drop());
}

#[test]
fn what_an_audit_mode_rule_allows_is_allowed_and_no_would_drop() {
    let audit = netpol("prod", "web-audit")
        .select(sel("app", "web"))
        .ingress(rule().from_pods(sel("app", "client")).port(80, Tcp).build())
        .audit()
        .build();
    let state = base().policy(audit).build();
    let allowed = evaluate(&state, &query("prod/client", "prod/web", Tcp, 80));
    assert!(allowed.allowed && !allowed.would_drop, "{allowed:?}");
    assert_eq!(
        allowed.ingress,
        SideVerdict::Allowed {
            policy: ObjectRef::new("prod", "web-audit"),
            rule_index: 0
        }
    );
    let other_port = evaluate(&state, &query("prod/client", "prod/web", Tcp, 81));
    assert!(
        other_port.allowed && other_port.would_drop,
        "{other_port:?}"
    );
}

#[test]
fn beside_an_enforce_mode_policy_audit_mode_ones_cannot_widen_access() {
    // Enforced: only app=client on 80. In audit: everything from everyone.
    let audit_allow_all = netpol("prod", "audit-allow-all")
        .select(sel("app", "web"))
        .ingress(rule().build())
        .audit()
        .build();
    let state = base()
        .policy(super::web_policy())
        .policy(audit_allow_all)
        .build();
    let query_db = query("prod/db", "prod/web", Tcp, 80);
    let verdict = evaluate(&state, &query_db);
    assert!(!verdict.allowed && !verdict.would_drop, "{verdict:?}");
    assert_eq!(
        verdict.ingress,
        SideVerdict::Dropped {
            isolated_by: vec![ObjectRef::new("prod", "web")]
        }
    );
    let SideExplanation::Isolated {
        mode,
        policies,
        ignored_audit,
    } = explain(&state, &query_db).ingress.network
    else {
        panic!("web is isolated for ingress");
    };
    assert_eq!(mode, PolicyMode::Enforce);
    assert_eq!(policies.len(), 1, "only the enforced policy decides");
    assert_eq!(
        ignored_audit,
        vec![ObjectRef::new("prod", "audit-allow-all")]
    );
}

#[test]
fn beside_an_enforce_mode_policy_audit_mode_ones_cannot_narrow_or_report() {
    let allow_all = netpol("prod", "allow-all")
        .select(sel("app", "web"))
        .ingress(rule().build())
        .build();
    let state = base()
        .policy(allow_all)
        .policy(deny_web("audit-deny", PolicyMode::Audit))
        .build();
    let verdict = evaluate(&state, &query("dev/tool", "prod/web", Udp, 53));
    assert!(verdict.allowed && !verdict.would_drop, "{verdict:?}");
    assert_eq!(
        verdict.ingress,
        SideVerdict::Allowed {
            policy: ObjectRef::new("prod", "allow-all"),
            rule_index: 0
        }
    );
}

#[test]
fn audit_mode_is_per_direction() {
    // Egress of prod/client in audit; ingress of prod/web enforced.
    let audit_egress = netpol("prod", "client-egress")
        .select(sel("app", "client"))
        .types(false, true)
        .audit()
        .build();
    let state = base()
        .policy(audit_egress)
        .policy(super::web_policy())
        .build();
    // Egress would drop, ingress allows: passes as a would-drop.
    let passes = evaluate(&state, &query("prod/client", "prod/web", Tcp, 80));
    assert!(passes.allowed && passes.would_drop, "{passes:?}");
    assert!(passes.egress.would_drop() && !passes.ingress.would_drop());
    // Egress would drop, ingress drops: dropped, so no would-drop overall.
    let dropped = evaluate(&state, &query("prod/client", "prod/web", Tcp, 8080));
    assert!(!dropped.allowed && !dropped.would_drop, "{dropped:?}");
    assert!(dropped.egress.would_drop());
    assert_eq!(
        dropped.ingress,
        SideVerdict::Dropped {
            isolated_by: vec![ObjectRef::new("prod", "web")]
        }
    );
}

#[test]
fn every_policy_in_audit_turns_every_drop_into_a_would_drop_and_keeps_every_allow() {
    let deny_egress = netpol("prod", "deny-egress")
        .select(sel("app", "client"))
        .types(false, true)
        .build();
    let state = base()
        .policy(super::web_policy())
        .policy(deny_egress)
        .build();
    let audited = state.clone().with_every_policy_in_audit();
    let pods = [
        "prod/web",
        "prod/db",
        "prod/client",
        "dev/client",
        "8.8.8.8",
    ];
    let (mut would_drops, mut allows) = (0, 0);
    for src in pods {
        for dst in pods {
            for (protocol, port) in [(Tcp, 80), (Tcp, 443), (Udp, 53)] {
                let q = query(src, dst, protocol, port);
                let enforced = evaluate(&state, &q);
                let audit = evaluate(&audited, &q);
                assert!(audit.allowed, "{q:?}: {audit:?}");
                assert_eq!(audit.would_drop, !enforced.allowed, "{q:?}: {audit:?}");
                if audit.would_drop {
                    would_drops += 1;
                } else {
                    allows += 1;
                }
            }
        }
    }
    assert!(would_drops > 0 && allows > 0, "{would_drops} / {allows}");
}
