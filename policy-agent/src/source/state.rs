//! Assembling a `ClusterState` from converted objects: what every source does the
//! same way, whatever it reads (manifest files, the API server's watch).
//!
//! May import: `crate::model`, `super::convert` (its `ApiKind` table). Nothing that
//! reads Kubernetes objects itself.

use super::convert::{conversion_error, ApiKind};
use crate::model::{ClusterState, ObjectRef};

/// A `ClusterState` being filled, one converted object at a time.
#[derive(Debug, Default)]
pub struct StateBuilder {
    state: ClusterState,
    errors: Vec<String>,
}

impl StateBuilder {
    /// Adds a converted object. An object of the same kind and key added before is
    /// kept, and its key is returned as the error (the caller says where each came
    /// from).
    pub fn add<K: ApiKind>(&mut self, model: K::Model) -> Result<(), ObjectRef> {
        let key = K::key(&model);
        if let Some(first) = K::insert(&mut self.state, model) {
            K::insert(&mut self.state, first);
            return Err(key);
        }
        Ok(())
    }

    /// Converts `object` and adds it, for sources that keep going past a bad object
    /// (the API server's watch): one that does not convert is recorded as an error
    /// naming it and the field, and replaced by its kind's fail-closed stand-in, if
    /// it has one (a NetworkPolicy's, see `convert::network_policy_fail_closed`),
    /// else left out.
    pub fn add_or_record<K: ApiKind>(&mut self, object: &K) {
        let model = match object.convert() {
            Ok(model) => model,
            Err(error) => {
                let stand_in = object.fail_closed();
                self.errors
                    .push(conversion_error(object, &error, stand_in.is_some()));
                match stand_in {
                    Some(stand_in) => stand_in,
                    None => return,
                }
            }
        };
        if let Err(key) = self.add::<K>(model) {
            // The API server keys objects by kind, namespace and name: not reached.
            tracing::warn!(kind = K::KIND, %key, "object listed twice; keeping the first");
        }
    }

    /// The state, with an implicit Namespace for every namespace an object lives in
    /// but no Namespace declares, and the conversion errors `add_or_record` met,
    /// sorted.
    pub fn finish(self) -> (ClusterState, Vec<String>) {
        let Self {
            mut state,
            mut errors,
        } = self;
        state.add_implicit_namespaces();
        errors.sort();
        (state, errors)
    }
}

#[cfg(test)]
mod tests;
