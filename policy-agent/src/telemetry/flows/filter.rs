//! Which flow lines `policy-agent flows` prints: by namespace, pod and verdict.
//!
//! As Hubble's filters do, a namespace or pod matches a flow when it is either end:
//! the pod whose policy decided or the peer, when the peer is a known pod. Values
//! of one filter are alternatives; different filters must all match.

use super::line::FlowLine;
use crate::dataplane::EventVerdict;

/// A `--pod` value: `namespace/name`, or a bare name in any namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPattern {
    /// The namespace, when given.
    pub namespace: Option<String>,
    /// The pod's name.
    pub name: String,
}

impl PodPattern {
    /// Parses `namespace/name` or `name`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (namespace, name) = match text.split_once('/') {
            Some((namespace, name)) => (Some(namespace), name),
            None => (None, text),
        };
        if name.is_empty() || name.contains('/') || namespace.is_some_and(str::is_empty) {
            return Err(format!(
                "'{text}' is not a pod: write NAME or NAMESPACE/NAME"
            ));
        }
        Ok(Self {
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        })
    }

    fn matches(&self, pod: &str) -> bool {
        let Some((namespace, name)) = pod.split_once('/') else {
            return false;
        };
        name == self.name && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// The filters of one `flows` run; empty ones let everything through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Namespaces of either end.
    pub namespaces: Vec<String>,
    /// Pods at either end.
    pub pods: Vec<PodPattern>,
    /// Verdicts.
    pub verdicts: Vec<EventVerdict>,
}

impl FlowFilter {
    /// Whether `line` passes every filter.
    pub fn matches(&self, line: &FlowLine) -> bool {
        let ends: Vec<&str> = [&line.pod, &line.source.pod, &line.destination.pod]
            .into_iter()
            .filter_map(|pod| pod.as_deref())
            .collect();
        let namespace_ok = self.namespaces.is_empty()
            || ends.iter().any(|pod| {
                pod.split_once('/')
                    .is_some_and(|(ns, _)| self.namespaces.iter().any(|want| want == ns))
            });
        let pod_ok = self.pods.is_empty()
            || ends
                .iter()
                .any(|pod| self.pods.iter().any(|pattern| pattern.matches(pod)));
        let verdict_ok = self.verdicts.is_empty() || self.verdicts.contains(&line.verdict);
        namespace_ok && pod_ok && verdict_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::flows::{
        fixtures::{allow_into_web, drop_into_web, names},
        WallClock,
    };

    fn drop_line() -> FlowLine {
        FlowLine::name(&drop_into_web(), &names(), WallClock::with_offset(0))
    }

    fn pattern(text: &str) -> PodPattern {
        PodPattern::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pod_patterns_take_a_name_or_namespace_and_name() {
        assert_eq!(
            pattern("shop/web"),
            PodPattern {
                namespace: Some("shop".into()),
                name: "web".into()
            }
        );
        assert_eq!(pattern("web").namespace, None);
        for bad in ["", "shop/", "/web", "a/b/c"] {
            assert!(PodPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_filter_passes_everything() {
        assert!(FlowFilter::default().matches(&drop_line()));
    }

    #[test]
    fn namespace_and_pod_match_either_end_of_the_flow() {
        let line = drop_line();
        let by_namespace = |ns: &str| FlowFilter {
            namespaces: vec![ns.into()],
            ..FlowFilter::default()
        };
        assert!(by_namespace("shop").matches(&line));
        assert!(!by_namespace("prod").matches(&line));
        let by_pod = |text: &str| FlowFilter {
            pods: vec![pattern(text)],
            ..FlowFilter::default()
        };
        // The deciding pod, the peer, and a bare name in any namespace.
        assert!(by_pod("shop/web").matches(&line));
        assert!(by_pod("shop/client").matches(&line));
        assert!(by_pod("client").matches(&line));
        assert!(!by_pod("prod/client").matches(&line));
        assert!(!by_pod("db").matches(&line));
    }

    #[test]
    fn verdicts_are_alternatives_and_filters_must_all_match() {
        let allow = FlowLine::name(&allow_into_web(), &names(), WallClock::with_offset(0));
        let drops = FlowFilter {
            verdicts: vec![EventVerdict::Dropped, EventVerdict::WouldDrop],
            ..FlowFilter::default()
        };
        assert!(drops.matches(&drop_line()));
        assert!(!drops.matches(&allow));
        let drops_in_prod = FlowFilter {
            namespaces: vec!["prod".into()],
            ..drops.clone()
        };
        assert!(!drops_in_prod.matches(&drop_line()));
        let drops_in_shop_or_prod = FlowFilter {
            namespaces: vec!["prod".into(), "shop".into()],
            ..drops
        };
        assert!(drops_in_shop_or_prod.matches(&drop_line()));
    }
}
