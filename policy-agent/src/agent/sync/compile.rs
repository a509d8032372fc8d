//! What a pass compiles and how: the job (pure data the loop hands to a blocking
//! thread), and the default compiler, which keeps the last compile so the next one
//! changes only what the changed objects touch when it can
//! (`policy::compiler::Incremental`).

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use crate::{
    model::{ClusterState, ObjectRef, Pod},
    policy::{
        capacity::Budgets,
        compiler::{compile, Incremental, Recompiled},
        tables::DatapathTables,
    },
};

/// What one pass compiles: pure data, shared with the thread that compiles it.
#[derive(Debug)]
pub struct CompileJob {
    /// The cluster as the pass plans it (every policy in audit mode with `--audit`).
    pub state: Arc<ClusterState>,
    /// The node's own addresses (ingress from them always passes).
    pub node_addresses: Vec<IpAddr>,
    /// The pods the plan mapped to an interface: the ones compiled as endpoints.
    pub local: BTreeSet<ObjectRef>,
}

/// A compile's result: the tables, and how they differ from the compile they were
/// made from.
#[derive(Debug)]
pub struct Compiled {
    /// The node's tables for the job, shared with the compiler that keeps them
    /// (the default compiler's next compile copies them before changing them
    /// only while the pass that wrote them still holds them).
    pub tables: Arc<DatapathTables>,
    /// What changed since compile `base`.
    pub recompiled: Recompiled,
    /// The compile these tables were made from (`None`: made in full).
    pub base: Option<u64>,
    /// This compile's number.
    pub id: u64,
}

impl From<DatapathTables> for Compiled {
    /// Tables made in full, by a compiler that keeps nothing.
    fn from(tables: DatapathTables) -> Self {
        Self {
            tables: Arc::new(tables),
            recompiled: Recompiled::Full,
            base: None,
            id: 0,
        }
    }
}

/// The last compile of the default compiler: its inputs and its tables (shared
/// with the `Compiled` it returned).
struct Last {
    id: u64,
    state: Arc<ClusterState>,
    node_addresses: Vec<IpAddr>,
    local: BTreeSet<ObjectRef>,
    incremental: Incremental,
}

impl CompileJob {
    /// The node's tables for this job, in full (`policy::compiler::compile`).
    pub fn compile(&self) -> DatapathTables {
        compile(&self.state, &self.node_addresses, |pod| {
            self.local.contains(&pod.key)
        })
    }

    /// The node's tables for this job, made from `last` (`Incremental::changed`:
    /// the objects that differ, a pod the plan maps or unmaps counting as changed)
    /// when the node's addresses are the same, else in full; kept in `last` for
    /// the next.
    fn compile_after(&self, last: &mut Option<Last>) -> Compiled {
        let is_local = |pod: &Pod| self.local.contains(&pod.key);
        if let Some(kept) = last
            .as_mut()
            .filter(|kept| kept.node_addresses == self.node_addresses)
        {
            let mut changes = kept.state.changes(&self.state);
            for key in kept.local.symmetric_difference(&self.local) {
                if !changes.pods.iter().any(|(changed, _)| changed == key) {
                    changes
                        .pods
                        .push((key.clone(), kept.state.pods.get(key).cloned()));
                }
            }
            let was_local = |pod: &Pod| kept.local.contains(&pod.key);
            let recompiled = kept
                .incremental
                .changed(&self.state, &changes, was_local, is_local);
            let base = kept.id;
            kept.id += 1;
            kept.state = Arc::clone(&self.state);
            kept.local.clone_from(&self.local);
            return Compiled {
                tables: kept.incremental.shared_tables(),
                recompiled,
                base: Some(base),
                id: kept.id,
            };
        }
        let incremental = Incremental::new(
            &self.state,
            &self.node_addresses,
            is_local,
            &Budgets::kernel(),
        );
        let id = last.as_ref().map_or(1, |kept| kept.id + 1);
        let tables = incremental.shared_tables();
        *last = Some(Last {
            id,
            state: Arc::clone(&self.state),
            node_addresses: self.node_addresses.clone(),
            local: self.local.clone(),
            incremental,
        });
        Compiled {
            tables,
            recompiled: Recompiled::Full,
            base: None,
            id,
        }
    }
}

/// How passes compile: the default compiler unless a test gates it or a benchmark
/// times it. Shared with the compiling thread, hence `Send + Sync`.
pub type Compiler = Arc<dyn Fn(&CompileJob) -> Compiled + Send + Sync>;

/// The compiler passes use unless told otherwise: it keeps the last compile and
/// makes the next from it (one compile runs at a time, so
/// its lock is never contended). A compile that panicked leaves nothing kept.
pub fn default_compiler() -> Compiler {
    let last: Mutex<Option<Last>> = Mutex::new(None);
    Arc::new(move |job: &CompileJob| {
        let mut kept = last.lock().unwrap_or_else(|poisoned| {
            let mut kept = poisoned.into_inner();
            *kept = None;
            kept
        });
        last.clear_poison();
        job.compile_after(&mut kept)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builders::{cluster, netpol, pod, selector, service};

    fn job(state: &Arc<ClusterState>, local: &[&str]) -> CompileJob {
        CompileJob {
            state: Arc::clone(state),
            node_addresses: Vec::new(),
            local: local
                .iter()
                .map(|name| ObjectRef::new("ns", *name))
                .collect(),
        }
    }

    /// The plan mapping or unmapping a pod whose object is unchanged is a change of
    /// that pod: each compile equals a full compile of its own job.
    #[test]
    fn a_pod_the_plan_maps_or_unmaps_counts_as_changed() {
        let web = |name: &str, ip: &str| pod("ns", name).labels([("app", "web")]).ip(ip).build();
        let state = Arc::new(
            cluster()
                .pod(web("a", "10.0.0.1"))
                .pod(web("b", "10.0.0.2"))
                .pod(web("c", "10.0.0.3"))
                .policy(
                    netpol("ns", "web")
                        .select(selector().label("app", "web").build())
                        .build(),
                )
                .build(),
        );
        let mut last = None;
        for local in [
            &["a", "b"][..],
            &[],
            &["a"],
            &["a", "b"],
            &["b"],
            &["a", "b"],
        ] {
            let job = job(&state, local);
            let compiled = job.compile_after(&mut last);
            assert_eq!(*compiled.tables, job.compile(), "local {local:?}");
        }
        // Made from the last compile each time, not in full.
        let again = job(&state, &["a", "b", "c"]).compile_after(&mut last);
        assert_eq!(*again.tables, job(&state, &["a", "b", "c"]).compile());
        assert_ne!(again.recompiled, Recompiled::Full);
        assert!(again.base.is_some());
    }

    /// A Service added after a compile is made from it, as its address's peer
    /// entry alone, equal to a full compile.
    #[test]
    fn a_service_added_is_made_from_the_last_compile() {
        let web = pod("ns", "a")
            .labels([("app", "web")])
            .ip("10.0.0.1")
            .build();
        let first = Arc::new(cluster().pod(web).build());
        let mut last = None;
        let base = job(&first, &["a"]).compile_after(&mut last).id;
        let mut next = (*first).clone();
        let service = service("ns", "web").cluster_ip("10.96.0.10").build();
        next.services.insert(service.key.clone(), service);
        let next = Arc::new(next);
        let compiled = job(&next, &["a"]).compile_after(&mut last);
        assert_eq!(*compiled.tables, job(&next, &["a"]).compile());
        let address = "10.96.0.10/32".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(compiled.recompiled, Recompiled::Peers(vec![address]));
        assert_eq!(compiled.base, Some(base));
    }
}
