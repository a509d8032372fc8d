//! Which policies isolate a pod in one direction, audit mode included: one
//! definition for the evaluator and the compiler, so both pick the same set.
//!
//! Public for the node agent too: its plan asks whether a pod still waiting for
//! its interface is isolated. Pure; imports only `crate::model`,
//! `policy::selector` and `policy::tables`'s `Direction`.

use crate::{
    model::{NetworkPolicy, Pod, PolicyMode},
    policy::{selector::matches, tables::Direction},
};

/// The policies that apply to one pod for one direction, split by mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolating<T> {
    /// `Audit` when only audit-mode policies apply; `Enforce` otherwise (also when
    /// none applies).
    pub mode: PolicyMode,
    /// The policies whose rules decide, in the order given: the enforce-mode ones
    /// if any applies, else the audit-mode ones. Empty: the pod is not isolated.
    pub deciding: Vec<T>,
    /// Audit-mode policies that apply too but are ignored, because enforce-mode
    /// ones decide this direction.
    pub ignored_audit: Vec<T>,
}

/// Splits `policies` (each with the id the caller knows it by) into those that
/// decide traffic of `pod` in `direction` and those ignored there.
///
/// podwall's audit mode, per (pod, direction):
/// 1. the policies that apply (`applies_to`) and are in enforce mode decide, if
///    there is any; audit-mode ones are then ignored: they cannot widen access
///    (their allows do not count) nor narrow it (they isolate nothing already
///    isolated);
/// 2. else the audit-mode policies that apply decide, in audit: what none of their
///    rules allows passes and is reported as a would-drop;
/// 3. else nothing isolates the pod.
pub fn isolating<'p, T>(
    policies: impl IntoIterator<Item = (T, &'p NetworkPolicy)>,
    pod: &Pod,
    direction: Direction,
) -> Isolating<T> {
    let mut enforce = Vec::new();
    let mut audit = Vec::new();
    for (id, policy) in policies {
        if applies_to(policy, pod, direction) {
            match policy.mode {
                PolicyMode::Enforce => enforce.push(id),
                PolicyMode::Audit => audit.push(id),
            }
        }
    }
    if enforce.is_empty() && !audit.is_empty() {
        Isolating {
            mode: PolicyMode::Audit,
            deciding: audit,
            ignored_audit: Vec::new(),
        }
    } else {
        Isolating {
            mode: PolicyMode::Enforce,
            deciding: enforce,
            ignored_audit: audit,
        }
    }
}

/// Whether `policy` applies to `pod` for `direction`, i.e. would isolate it
/// (whatever its mode).
pub fn applies_to(policy: &NetworkPolicy, pod: &Pod, direction: Direction) -> bool {
    // "A pod is isolated for ingress if there is any NetworkPolicy that both selects
    // the pod and has "Ingress" in its policyTypes; we say that such a policy applies
    // to the pod for ingress." (Likewise for egress.)
    // "podSelector: Each NetworkPolicy includes a podSelector which selects the
    // grouping of pods to which the policy applies. [...] An empty podSelector
    // selects all pods in the namespace." hostNetwork pods are never selected.
    let has_type = match direction {
        Direction::Ingress => policy.policy_types.ingress,
        Direction::Egress => policy.policy_types.egress,
    };
    has_type
        && !pod.host_network
        && policy.key.namespace == pod.key.namespace
        && matches(&policy.pod_selector, &pod.labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builders::{netpol, pod, selector};

    fn ids(policies: &[NetworkPolicy], direction: Direction) -> Isolating<&str> {
        let web = pod("prod", "web").labels([("app", "web")]).build();
        isolating(
            policies.iter().map(|p| (p.key.name.as_str(), p)),
            &web,
            direction,
        )
    }

    #[test]
    fn enforce_mode_policies_decide_and_audit_ones_are_ignored_beside_them() {
        let web = selector().label("app", "web").build();
        let policies = [
            netpol("prod", "audit-all").audit().build(),
            netpol("prod", "enforced").select(web.clone()).build(),
            netpol("prod", "audit-web").select(web).audit().build(),
            netpol("other", "elsewhere").build(),
        ];
        assert_eq!(
            ids(&policies, Direction::Ingress),
            Isolating {
                mode: PolicyMode::Enforce,
                deciding: vec!["enforced"],
                ignored_audit: vec!["audit-all", "audit-web"],
            }
        );
    }

    #[test]
    fn audit_mode_policies_decide_where_no_enforce_mode_one_applies() {
        let policies = [
            netpol("prod", "audit-all").audit().build(),
            // Enforced, but for egress only: it does not touch ingress.
            netpol("prod", "egress").types(false, true).build(),
        ];
        assert_eq!(
            ids(&policies, Direction::Ingress),
            Isolating {
                mode: PolicyMode::Audit,
                deciding: vec!["audit-all"],
                ignored_audit: vec![],
            }
        );
        assert_eq!(
            ids(&policies, Direction::Egress),
            Isolating {
                mode: PolicyMode::Enforce,
                deciding: vec!["egress"],
                ignored_audit: vec![],
            }
        );
    }

    #[test]
    fn nothing_applying_isolates_nothing() {
        let policies = [netpol("other", "elsewhere").audit().build()];
        assert_eq!(
            ids(&policies, Direction::Ingress),
            Isolating {
                mode: PolicyMode::Enforce,
                deciding: vec![],
                ignored_audit: vec![],
            }
        );
    }
}
