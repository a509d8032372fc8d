//! Label selector matching with the exact Kubernetes semantics.
//!
//! Pure; imports only `crate::model`. Used by the evaluator and the compiler, so both
//! agree on what a selector selects by construction.

use crate::model::{LabelSelector, Labels, SelectorOperator, SelectorRequirement};

/// Whether `selector` selects an object with `labels`.
///
/// "A label selector is a label query over a set of resources. The result of
/// matchLabels and matchExpressions are ANDed. An empty label selector matches all
/// objects."
pub fn matches(selector: &LabelSelector, labels: &Labels) -> bool {
    // "matchLabels is a map of {key,value} pairs. A single {key,value} in the
    // matchLabels map is equivalent to an element of matchExpressions, whose key
    // field is "key", the operator is "In", and the values array contains only
    // "value". The requirements are ANDed."
    let labels_hold = selector
        .match_labels
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value));
    labels_hold
        && selector
            .match_expressions
            .iter()
            .all(|requirement| requirement_holds(requirement, labels))
}

/// Whether one `matchExpressions` entry holds for `labels`.
fn requirement_holds(requirement: &SelectorRequirement, labels: &Labels) -> bool {
    let value = labels.get(&requirement.key);
    let in_values = |v: &String| requirement.values.iter().any(|allowed| allowed == v);
    match requirement.operator {
        // "In: the label's key exists and its value is one of the values."
        SelectorOperator::In => value.is_some_and(in_values),
        // "NotIn: the label's key does not exist, or its value is none of the values."
        SelectorOperator::NotIn => !value.is_some_and(in_values),
        // "Exists: the label's key exists (values must be empty)."
        SelectorOperator::Exists => value.is_some(),
        // "DoesNotExist: the label's key does not exist (values must be empty)."
        SelectorOperator::DoesNotExist => value.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builders::{labels, selector};

    #[test]
    #[rustfmt::skip]
    fn selector_operators_follow_kubernetes_semantics() {
        use SelectorOperator::*;
        let web_prod = labels([("app", "web"), ("env", "prod")]);
        let no_labels = Labels::new();
        let cases: Vec<(&str, LabelSelector, &Labels, bool)> = vec![
            ("empty_selector_matches_everything", selector().build(), &web_prod, true),
            ("empty_selector_matches_unlabelled_objects", selector().build(), &no_labels, true),
            ("match_labels_requires_every_pair", selector().label("app", "web").label("env", "prod").build(), &web_prod, true),
            ("match_labels_fails_on_a_different_value", selector().label("app", "db").build(), &web_prod, false),
            ("match_labels_fails_on_a_missing_key", selector().label("tier", "front").build(), &web_prod, false),
            ("match_labels_fails_if_one_of_two_pairs_differs", selector().label("app", "web").label("env", "dev").build(), &web_prod, false),
            ("in_matches_one_of_the_values", selector().expr("env", In, ["dev", "prod"]).build(), &web_prod, true),
            ("in_fails_on_another_value", selector().expr("env", In, ["dev"]).build(), &web_prod, false),
            ("in_fails_on_a_missing_key", selector().expr("tier", In, ["front"]).build(), &web_prod, false),
            ("not_in_matches_another_value", selector().expr("env", NotIn, ["dev"]).build(), &web_prod, true),
            ("not_in_fails_on_one_of_the_values", selector().expr("env", NotIn, ["dev", "prod"]).build(), &web_prod, false),
            ("not_in_matches_when_the_key_is_absent", selector().expr("tier", NotIn, ["front"]).build(), &web_prod, true),
            ("exists_matches_a_present_key", selector().expr("app", Exists, [""; 0]).build(), &web_prod, true),
            ("exists_fails_on_a_missing_key", selector().expr("tier", Exists, [""; 0]).build(), &web_prod, false),
            ("does_not_exist_matches_a_missing_key", selector().expr("tier", DoesNotExist, [""; 0]).build(), &web_prod, true),
            ("does_not_exist_fails_on_a_present_key", selector().expr("app", DoesNotExist, [""; 0]).build(), &web_prod, false),
            ("labels_and_expressions_are_anded", selector().label("app", "web").expr("env", In, ["dev"]).build(), &web_prod, false),
            ("all_expressions_must_hold", selector().expr("app", Exists, [""; 0]).expr("env", DoesNotExist, [""; 0]).build(), &web_prod, false),
            ("labels_and_expressions_that_all_hold_match", selector().label("app", "web").expr("env", NotIn, ["dev"]).expr("tier", DoesNotExist, [""; 0]).build(), &web_prod, true),
            ("in_with_no_values_matches_nothing", selector().expr("app", In, [""; 0]).build(), &web_prod, false),
        ];
        for (name, sel, object, expected) in cases {
            assert_eq!(matches(&sel, object), expected, "{name}");
        }
    }
}
