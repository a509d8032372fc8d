//! `Incremental`: one node's tables kept across changes, compiled in full only when
//! a change needs it.

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;

use super::{
    compile_indexed,
    one_pod::{self, Done},
    relabel_namespaces, relabel_pod, repolicy, Relabelled,
};
use crate::{
    model::{ClusterState, ObjectRef, Pod, PodChange, StateChanges},
    policy::{capacity::Budgets, tables::DatapathTables},
};

/// What a change did to the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recompiled {
    /// Only the peer entries of these prefixes changed (present: inserted or
    /// changed; absent: removed; none: nothing changed); every other table is as
    /// it was. The addresses of one pod of another node, or Service addresses:
    /// `Datapath::update_peers` can write them in place.
    Peers(Vec<IpNet>),
    /// Only the entries of one pod that became or stopped being a local endpoint
    /// of an endpoint id that has other pods before and after (`EndpointChange`);
    /// no rule set, class or id moved. `Datapath::update_endpoint` can write them
    /// in place.
    Endpoint(EndpointChange),
    /// Only the peer entries of these host prefixes (addresses) changed, each
    /// from one class to another that the tables had before (present before and
    /// after, neither a node's nor a Service's address); every other table,
    /// rule sets included, is as it was. A namespace's labels moving its pods
    /// between classes that stay. Unlike `Peers`, one decision may read two of
    /// them (the client's and the server's address, at two hooks):
    /// `Datapath::update_classes` writes them in place only when no such pair
    /// can pass what neither the tables before nor after pass.
    Reclassed(Vec<IpNet>),
    /// Some entries changed without a full compile: a local pod's own when it
    /// stays an endpoint (`ENDPOINTS` entries, addresses, peer entries), more than
    /// one pod's, the policy ids of `POLICY` entries and names, or what a label or
    /// policy change made again without one (classes, endpoint groups, rule sets;
    /// their ids may be renumbered); the tables go through a flip.
    Entries,
    /// Compiled in full: anything may have changed.
    Full,
}

/// The entries a local pod's arrival or departure changed, and nothing else
/// (`Recompiled::Endpoint`): its `ENDPOINTS` entry (present in the tables: it
/// came; absent: it went), the `ENDPOINT_ADDRS` entries of `addresses` and the
/// peer entries of `peers` (present: inserted or changed; absent: removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointChange {
    /// The pod.
    pub pod: ObjectRef,
    /// Its addresses whose `endpoint_addresses` entry came or went.
    pub addresses: Vec<IpAddr>,
    /// The prefixes whose peer entry changed (its addresses', when they did).
    pub peers: Vec<IpNet>,
}

/// One node's tables, kept equal to what `compile_with` makes of the current state
/// (property-tested, ids included), with less work per change: a pod's change is
/// made on its own entries when its peer class and endpoint group exist and
/// nothing else depends on it, which is what most changes of a large cluster are.
/// Any other change, and whatever that cannot rule out, compiles in full.
///
/// The tables are shared (`shared_tables`): whoever holds them (the agent's last
/// write) sees them as they were. A change made in them (a pod's, a Service's,
/// policy ids renumbered) copies them first while someone does, and only once
/// its checks passed; one that makes new tables copies nothing.
#[derive(Clone, Debug)]
pub struct Incremental {
    node_addresses: Vec<IpAddr>,
    budgets: Budgets,
    tables: Arc<DatapathTables>,
    /// `None` after a full compile with refusals: every change compiles in full.
    index: Option<one_pod::Index>,
}

impl Incremental {
    /// Compiles `state` in full for the pods `is_local` accepts, whose node has
    /// `node_addresses`, within `budgets` (`compile_with`).
    pub fn new(
        state: &ClusterState,
        node_addresses: &[IpAddr],
        is_local: impl Fn(&Pod) -> bool,
        budgets: &Budgets,
    ) -> Self {
        let (tables, index) = compile_indexed(state, node_addresses, is_local, budgets, true);
        Self {
            node_addresses: node_addresses.to_vec(),
            budgets: *budgets,
            tables: Arc::new(tables),
            index,
        }
    }

    /// The tables of the last state given.
    pub fn tables(&self) -> &DatapathTables {
        &self.tables
    }

    /// The tables of the last state given, shared rather than copied: they stay
    /// as they are when later changes are made.
    pub fn shared_tables(&self) -> Arc<DatapathTables> {
        Arc::clone(&self.tables)
    }

    /// The tables, kept no longer (copied only if they are shared).
    pub fn into_tables(self) -> DatapathTables {
        Arc::unwrap_or_clone(self.tables)
    }

    /// Compiles `state` in full (any change, or several at once).
    pub fn recompile(&mut self, state: &ClusterState, is_local: impl Fn(&Pod) -> bool) {
        let (tables, index) =
            compile_indexed(state, &self.node_addresses, is_local, &self.budgets, true);
        self.tables = Arc::new(tables);
        self.index = index;
    }

    /// What a change made on its own did (`done`), or, when it could not be made on
    /// its own (`None`), a full compile of `state`.
    fn settle(
        &mut self,
        done: Option<Done>,
        state: &ClusterState,
        is_local: impl Fn(&Pod) -> bool,
    ) -> Recompiled {
        match done {
            Some(Done::Peers(prefixes)) => Recompiled::Peers(prefixes),
            Some(Done::Endpoint) => Recompiled::Entries,
            Some(Done::Pod(change)) => Recompiled::Endpoint(change),
            Some(Done::Classes(prefixes)) => Recompiled::Reclassed(prefixes),
            None => {
                self.recompile(state, is_local);
                Recompiled::Full
            }
        }
    }

    /// Brings the tables to `state`, which differs from the last state given in
    /// `changes` (`ClusterState::changes`, plus any pod whose locality changed
    /// among the pods); `was_local` says which pods were the node's, `is_local`
    /// which are. A change of one kind of object is made on its own where the
    /// guards allow (pods: `pods_changed`; Services, namespaces, policies:
    /// `one_object`); where the applied rules intern as before, a namespace label
    /// change classes only its pods again (`relabel_namespaces`), and where they
    /// differ at most in pod peers and ipBlocks, a policy change classes again
    /// only the addresses whose peers or blocks changed (`repolicy`). Changes of
    /// several kinds, and whatever the guards cannot rule out, compile in full.
    pub fn changed(
        &mut self,
        state: &ClusterState,
        changes: &StateChanges,
        was_local: impl Fn(&Pod) -> bool,
        is_local: impl Fn(&Pod) -> bool,
    ) -> Recompiled {
        if changes.kinds() == 0 {
            return Recompiled::Peers(Vec::new());
        }
        // ClusterNetworkPolicies, and the Nodes their `nodes` peers read, are
        // made in full (with any ClusterNetworkPolicy there is no index, so
        // every change is).
        let nodes_read = !state.cluster_policies.is_empty() && !changes.nodes.is_empty();
        if !changes.cluster_policies.is_empty() || nodes_read {
            self.recompile(state, is_local);
            return Recompiled::Full;
        }
        if changes.nodes.len() == changes.kinds() {
            return Recompiled::Peers(Vec::new());
        }
        if changes.kinds() == 1 && !changes.pods.is_empty() {
            return self.pods_changed(state, &changes.pods, was_local, is_local);
        }
        let done = match &mut self.index {
            Some(index) if changes.kinds() == 1 => {
                if !changes.services.is_empty() {
                    index.services_changed(state, &changes.services, &mut self.tables)
                } else if !changes.policies.is_empty() {
                    index
                        .policies_changed(state, &changes.policies, &mut self.tables)
                        .or_else(|| {
                            let tables =
                                repolicy(state, &is_local, &self.budgets, index, &self.tables)?;
                            Some(replace(&mut self.tables, tables))
                        })
                } else if index.namespaces_unchanging(state, &changes.namespaces, &self.tables) {
                    Some(Done::Peers(Vec::new()))
                } else {
                    let names: Vec<&str> = changes
                        .namespaces
                        .iter()
                        .map(|(name, _)| name.as_str())
                        .collect();
                    let relabelled = relabel_namespaces(
                        state,
                        &is_local,
                        &self.budgets,
                        index,
                        &self.tables,
                        &names,
                    );
                    relabelled.map(|relabelled| match relabelled {
                        Relabelled::Classes(_, prefixes) if prefixes.is_empty() => {
                            Done::Peers(Vec::new())
                        }
                        Relabelled::Classes(tables, prefixes) => {
                            self.tables = Arc::new(tables);
                            Done::Classes(prefixes)
                        }
                        Relabelled::Tables(tables) => replace(&mut self.tables, tables),
                    })
                }
            }
            _ => None,
        };
        self.settle(done, state, is_local)
    }

    /// Brings the tables to `state`, which differs from the last state given only
    /// in the pods of `changes` (`ClusterState::pod_changes`, plus any pod whose
    /// locality changed), one after the other. `was_local` says which pods were
    /// the node's, `is_local` which are; `Peers` only for one pod's change.
    pub fn pods_changed(
        &mut self,
        state: &ClusterState,
        changes: &[PodChange],
        was_local: impl Fn(&Pod) -> bool,
        is_local: impl Fn(&Pod) -> bool,
    ) -> Recompiled {
        if changes.is_empty() {
            return Recompiled::Peers(Vec::new());
        }
        if let [(key, before)] = changes {
            return self.pod_changed(state, key, before.as_ref(), was_local, is_local);
        }
        for (key, before) in changes {
            // Each change reads only its own pod and what no change touches.
            let done = self.one_of(state, key, before.as_ref(), &was_local, &is_local, false);
            if matches!(done, Recompiled::Full) {
                // The full compile took in every change at once.
                return Recompiled::Full;
            }
        }
        Recompiled::Entries
    }

    /// Brings the tables to `state`, which differs from the last state given only
    /// in pod `key`, which was `before` (`None`: it did not exist) and was local
    /// if `was_local` accepted it. Only the pod's own entries change when they
    /// can (`Endpoint` when it became or stopped being a local endpoint, `Peers`
    /// when it is no local endpoint before or after, else `Entries`); anything
    /// else compiles in full. A label change may read the rest of `state`
    /// (`relabel_pod`), so this is for one change on its own: several at once go
    /// to `pods_changed`.
    pub fn pod_changed(
        &mut self,
        state: &ClusterState,
        key: &ObjectRef,
        before: Option<&Pod>,
        was_local: impl Fn(&Pod) -> bool,
        is_local: impl Fn(&Pod) -> bool,
    ) -> Recompiled {
        self.one_of(state, key, before, was_local, is_local, true)
    }

    /// `pod_changed`, for a change that may be one of several (`alone`: it is
    /// not): only a change alone may read the rest of the state, as a relabel
    /// made without a full compile does (`relabel_pod`).
    fn one_of(
        &mut self,
        state: &ClusterState,
        key: &ObjectRef,
        before: Option<&Pod>,
        was_local: impl Fn(&Pod) -> bool,
        is_local: impl Fn(&Pod) -> bool,
        alone: bool,
    ) -> Recompiled {
        let after = state.pods.get(key);
        let done = self.index.as_mut().and_then(|index| {
            index.pod_changed(
                state,
                before,
                after,
                &was_local,
                &is_local,
                // Copied, if shared (with tables already written), only once
                // the change is made.
                &mut self.tables,
            )
        });
        if done.is_none() && alone {
            // Only its labels changed: its endpoint group and classes are made
            // again without a full compile where the applied rules stay.
            if let (Some(index), Some(before), Some(after)) = (self.index.as_mut(), before, after) {
                let relabelled = relabel_pod(
                    state,
                    (before, after),
                    &was_local,
                    &is_local,
                    &self.budgets,
                    index,
                    &self.tables,
                );
                if let Some(tables) = relabelled {
                    let done = replace(&mut self.tables, tables);
                    return self.settle(Some(done), state, is_local);
                }
            }
        }
        self.settle(done, state, is_local)
    }
}

/// Makes `tables`, made again without a full compile, the current ones: `Peers`
/// with no prefix when they equal what they replace (nothing to write, no flip),
/// else `Endpoint` (written through a flip).
fn replace(current: &mut Arc<DatapathTables>, tables: DatapathTables) -> Done {
    if **current == tables {
        return Done::Peers(Vec::new());
    }
    *current = Arc::new(tables);
    Done::Endpoint
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests parse prefix literals")]
mod tests;
