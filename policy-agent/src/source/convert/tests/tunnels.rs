//! The Namespace annotation `podwall.io/allow-tunnels`: only `"true"` lets a
//! namespace's pods tunnel; any other value fails closed with a warning.

use super::super::{allow_tunnels, namespace, ALLOW_TUNNELS_ANNOTATION};
use crate::model::builders::labels;

/// Namespace `prod` with `annotations` as YAML flow, converted.
fn converted(annotations: &str) -> crate::model::Namespace {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: prod, annotations: {annotations}}}\n"
    );
    match serde_saphyr::from_str(&text) {
        Ok(ns) => namespace(&ns).unwrap_or_else(|err| panic!("{text}: {err}")),
        Err(err) => panic!("{text}: not a Namespace: {err}"),
    }
}

#[test]
fn only_the_value_true_lets_a_namespace_tunnel() {
    for (annotations, expected) in [
        ("{podwall.io/allow-tunnels: \"true\"}", true),
        ("{podwall.io/allow-tunnels: \"false\"}", false),
        ("{}", false),
        ("{other.io/allow-tunnels: \"true\"}", false),
    ] {
        assert_eq!(
            converted(annotations).allow_tunnels,
            expected,
            "{annotations}"
        );
    }
}

#[test]
fn any_other_value_allows_nothing_and_warns_naming_the_namespace_and_the_value() {
    for value in ["True", "yes", "", "true "] {
        let annotations = labels([(ALLOW_TUNNELS_ANNOTATION, value)]);
        let (allowed, warning) = allow_tunnels("prod", Some(&annotations));
        assert!(!allowed, "{value:?}");
        let warning = warning.unwrap_or_else(|| panic!("{value:?}: no warning"));
        assert!(
            warning.contains("Namespace prod")
                && warning.contains(&format!("{value:?}"))
                && warning.contains(ALLOW_TUNNELS_ANNOTATION),
            "{value:?}: {warning}"
        );
        let yaml = format!("{{podwall.io/allow-tunnels: {value:?}}}");
        assert!(!converted(&yaml).allow_tunnels, "{value:?}");
    }
    for value in ["true", "false"] {
        let annotations = labels([(ALLOW_TUNNELS_ANNOTATION, value)]);
        assert_eq!(allow_tunnels("prod", Some(&annotations)).1, None, "{value}");
    }
    assert_eq!(allow_tunnels("prod", None), (false, None));
}
