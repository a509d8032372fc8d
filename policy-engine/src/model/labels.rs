//! `Labels`: a label map that clones by sharing. A pod's labels are read by
//! every selector and kept by the source that watched the pod, by the model built
//! from it and by the compiler's classes; with 10k pods one copy each is several
//! MiB of the agent's memory, so all of them hold the same map.

use std::{
    collections::{btree_map, BTreeMap},
    fmt,
    ops::Deref,
    sync::Arc,
};

/// Kubernetes labels, sorted so that equal sets compare and hash equal. Reads
/// as the `BTreeMap<String, String>` it derefs to; a clone shares the map (one
/// reference count), and a change to a shared map copies it first, so a clone
/// never sees another's change.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Arc<BTreeMap<String, String>>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, returning the value it had.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        Arc::make_mut(&mut self.0).insert(key, value)
    }

    /// Removes `key`, returning the value it had.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        if !self.0.contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.0).remove(key)
    }

    /// Whether `self` and `other` are the same map, not just equal ones.
    pub fn shares(&self, other: &Labels) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// How many holders share this map (1: only this one).
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl Deref for Labels {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(Arc::new(map))
    }
}

impl From<Labels> for BTreeMap<String, String> {
    /// The map, taken if no one else holds it, else copied.
    fn from(labels: Labels) -> Self {
        Arc::unwrap_or_clone(labels.0)
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Self {
        Self::from(BTreeMap::from(pairs))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self::from(pairs.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl Extend<(String, String)> for Labels {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, pairs: I) {
        Arc::make_mut(&mut self.0).extend(pairs);
    }
}

impl IntoIterator for Labels {
    type Item = (String, String);
    type IntoIter = btree_map::IntoIter<String, String>;

    /// The pairs, taken from the map if no one else holds it, else copied.
    fn into_iter(self) -> Self::IntoIter {
        Arc::unwrap_or_clone(self.0).into_iter()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl PartialEq<BTreeMap<String, String>> for Labels {
    fn eq(&self, other: &BTreeMap<String, String>) -> bool {
        *self.0 == *other
    }
}

impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_clone_shares_the_map_until_one_of_them_changes() {
        let web = labels(&[("app", "web")]);
        let mut copy = web.clone();
        assert!(copy.shares(&web));
        assert_eq!(web.holders(), 2);
        copy.insert("tier".into(), "front".into());
        assert!(!copy.shares(&web));
        assert_eq!(web, labels(&[("app", "web")]), "the original is unchanged");
        assert_eq!(copy.get("tier").map(String::as_str), Some("front"));
        assert_eq!(copy.remove("nothing"), None);
        assert_eq!(copy.remove("tier"), Some("front".into()));
        assert_eq!(copy, web);
        assert!(!copy.shares(&web), "equal, but not the same map");
    }

    #[test]
    fn labels_compare_and_hash_by_content_as_the_map_does() {
        let a = labels(&[("b", "2"), ("a", "1")]);
        let b = Labels::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]);
        assert_eq!(a, b);
        let set: std::collections::HashSet<Labels> = [a.clone(), b].into();
        assert_eq!(set.len(), 1);
        assert!(Labels::new() < a);
        assert_eq!(format!("{a:?}"), r#"{"a": "1", "b": "2"}"#);
        assert_eq!(
            (&a).into_iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
