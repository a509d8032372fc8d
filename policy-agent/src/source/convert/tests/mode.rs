//! The `podwall.io/mode` annotation: audit, enforce, absent, and values that fail
//! closed with a warning.

use super::super::network_policy::mode;
use crate::model::{builders::labels, NetworkPolicy, ObjectRef, PolicyMode};

/// A NetworkPolicy `prod/np` (default-deny ingress) with `annotations` as YAML flow.
fn annotated(annotations: &str) -> NetworkPolicy {
    let text = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: np, namespace: prod, annotations: {annotations}}}\nspec: {{}}\n"
    );
    match serde_saphyr::from_str(&text) {
        Ok(np) => super::network_policy(&np).unwrap_or_else(|err| panic!("{text}: {err}")),
        Err(err) => panic!("{text}: not a NetworkPolicy: {err}"),
    }
}

#[test]
fn the_mode_annotation_selects_audit_or_enforce() {
    let cases = [
        ("{podwall.io/mode: audit}", PolicyMode::Audit),
        ("{podwall.io/mode: enforce}", PolicyMode::Enforce),
        ("{}", PolicyMode::Enforce),
        ("{other.io/mode: audit}", PolicyMode::Enforce),
    ];
    for (annotations, expected) in cases {
        assert_eq!(annotated(annotations).mode, expected, "{annotations}");
    }
    // No annotations at all.
    assert_eq!(
        super::ok("{}").mode,
        PolicyMode::Enforce,
        "without metadata.annotations"
    );
}

#[test]
fn an_unknown_mode_enforces_and_warns_naming_the_policy_and_the_value() {
    let key = format!("NetworkPolicy {}", ObjectRef::new("prod", "np"));
    for value in ["Audit", "dry-run", "", "audit "] {
        let annotations = labels([("podwall.io/mode", value)]);
        let (found, warning) = mode(&key, Some(&annotations));
        assert_eq!(found, PolicyMode::Enforce, "{value:?}");
        let warning = warning.unwrap_or_else(|| panic!("{value:?}: no warning"));
        assert!(
            warning.contains("NetworkPolicy prod/np")
                && warning.contains(&format!("{value:?}"))
                && warning.contains("podwall.io/mode")
                && warning.contains("enforced"),
            "{value:?}: {warning}"
        );
        // The conversion applies the same rule.
        let policy = annotated(&format!("{{podwall.io/mode: {value:?}}}"));
        assert_eq!(policy.mode, PolicyMode::Enforce, "{value:?}");
    }
    for value in ["audit", "enforce"] {
        let annotations = labels([("podwall.io/mode", value)]);
        assert_eq!(mode(&key, Some(&annotations)).1, None, "{value}");
    }
    assert_eq!(mode(&key, None), (PolicyMode::Enforce, None));
}
