//! The sync loop against a fake datapath: what it asks of the datapath, in which
//! order, and what it does when the datapath fails. Links are made up (prefix
//! `pwt`, no such interfaces on the machine); the node's own addresses and tunnel
//! ports are read from the test's network namespace, read-only.

mod in_flight;

use ipnet::IpNet;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use tokio::sync::mpsc;

use super::{SyncConfig, SyncError, Syncer};
use crate::{
    agent::{dataplane::Dataplane, health::Health, metrics::Metrics},
    dataplane::{
        ApplyReport, DataplaneError, Frames, InterfaceIndex, MapUsage, PolicyCounters,
        ProgramAhead, RuleName, Stats, TunnelPorts,
    },
    model::{builders, ClusterState, ObjectRef},
    node::{Link, LinkEvent},
    policy::{
        compiler::EndpointChange,
        tables::{DatapathTables, EndpointEntry},
    },
    source::api_server::SourceSnapshot,
};

/// A datapath that records each call and fails the next `fail_applies` writes.
#[derive(Default)]
struct Fake {
    calls: Vec<String>,
    attached: BTreeSet<InterfaceIndex>,
    exits: BTreeSet<InterfaceIndex>,
    /// Index of each interface name `attach` may be asked for.
    indexes: BTreeMap<String, InterfaceIndex>,
    fail_applies: usize,
    /// The pending entries of the last successful write.
    pending: BTreeMap<InterfaceIndex, EndpointEntry>,
    /// Where each call is also sent as it happens (for tests of the running loop).
    live: Option<mpsc::UnboundedSender<String>>,
    /// Run inside the next `apply`: what happens while a pass writes.
    during_apply: Option<Box<dyn FnOnce() + Send>>,
    /// Also record the counters' read of the TCX chains (`programs_ahead`).
    record_counters: bool,
    /// `update_classes` finds its moves unsafe (writes nothing).
    refuse_classes: bool,
}

impl Fake {
    fn record(&mut self, call: String) {
        if let Some(live) = &self.live {
            let _ = live.send(call.clone());
        }
        self.calls.push(call);
    }
}

fn refused() -> DataplaneError {
    DataplaneError::TooManyRules {
        rules: 1,
        capacity: 0,
    }
}

impl Dataplane for Fake {
    fn apply(
        &mut self,
        _tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        let pending: Vec<InterfaceIndex> = extra_endpoints.keys().copied().collect();
        self.record(format!(
            "apply {} pods, pending {pending:?}",
            interfaces.len()
        ));
        if let Some(during) = self.during_apply.take() {
            during();
        }
        if self.fail_applies > 0 {
            self.fail_applies -= 1;
            return Err(refused());
        }
        self.pending = extra_endpoints.clone();
        Ok(ApplyReport::default())
    }
    fn update_peers(
        &mut self,
        _tables: &DatapathTables,
        changed: &[IpNet],
    ) -> Result<ApplyReport, DataplaneError> {
        let changed: Vec<String> = changed.iter().map(ToString::to_string).collect();
        self.record(format!("update_peers {changed:?}"));
        Ok(ApplyReport::default())
    }
    fn update_classes(
        &mut self,
        _tables: &DatapathTables,
        moved: &[IpNet],
    ) -> Result<Option<ApplyReport>, DataplaneError> {
        let moved: Vec<String> = moved.iter().map(ToString::to_string).collect();
        self.record(format!("update_classes {moved:?}"));
        if self.fail_applies > 0 {
            self.fail_applies -= 1;
            return Err(refused());
        }
        Ok((!self.refuse_classes).then(ApplyReport::default))
    }
    fn update_endpoint(
        &mut self,
        _tables: &DatapathTables,
        _interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
        change: &EndpointChange,
        ifindex: InterfaceIndex,
    ) -> Result<ApplyReport, DataplaneError> {
        self.record(format!("update_endpoint {} on {ifindex}", change.pod));
        self.pending = extra_endpoints.clone();
        Ok(ApplyReport::default())
    }
    fn add_endpoints(
        &mut self,
        extra: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        let added: Vec<InterfaceIndex> = extra.keys().copied().collect();
        self.record(format!("add_endpoints {added:?}"));
        Ok(ApplyReport::default())
    }
    fn add_unattached_endpoints(
        &mut self,
        extra: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        let added: Vec<InterfaceIndex> = extra.keys().copied().collect();
        self.record(format!("add_unattached {added:?}"));
        if self.fail_applies > 0 {
            self.fail_applies -= 1;
            return Err(refused());
        }
        for (index, entry) in extra {
            self.pending.entry(*index).or_insert(*entry);
        }
        Ok(ApplyReport::default())
    }
    fn attach(&mut self, interface: &str) -> Result<InterfaceIndex, DataplaneError> {
        self.record(format!("attach {interface}"));
        let index = self.indexes.get(interface).copied().ok_or_else(refused)?;
        self.attached.insert(index);
        Ok(index)
    }
    fn detach(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError> {
        self.record(format!("detach {ifindex}"));
        self.attached.remove(&ifindex);
        Ok(())
    }
    fn attached(&self) -> BTreeSet<InterfaceIndex> {
        self.attached.clone()
    }
    fn attach_exit(
        &mut self,
        interface: &str,
        _frames: Frames,
    ) -> Result<InterfaceIndex, DataplaneError> {
        let index = self.indexes.get(interface).copied().ok_or_else(refused)?;
        self.exits.insert(index);
        Ok(index)
    }
    fn detach_exit(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError> {
        self.exits.remove(&ifindex);
        Ok(())
    }
    fn exits(&self) -> BTreeSet<InterfaceIndex> {
        self.exits.clone()
    }
    fn node_sockets_attached(&self) -> bool {
        true
    }
    fn attach_node_sockets(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn set_tunnel_ports(&mut self, node_ports: &[u16]) -> Result<TunnelPorts, DataplaneError> {
        Ok(TunnelPorts::for_node(node_ports))
    }
    fn map_usage(&self) -> Vec<MapUsage> {
        Vec::new()
    }
    fn policy_counters(&self, _: &DatapathTables) -> Result<PolicyCounters, DataplaneError> {
        Ok(PolicyCounters::default())
    }
    fn rule_slots(&self) -> BTreeMap<u32, RuleName> {
        BTreeMap::new()
    }
    fn stats(&self) -> Result<Stats, DataplaneError> {
        Ok(Stats::default())
    }
    fn programs_ahead(
        &mut self,
        _: &BTreeMap<InterfaceIndex, String>,
    ) -> Result<Vec<ProgramAhead>, DataplaneError> {
        if self.record_counters {
            self.record("programs_ahead".into());
        }
        Ok(Vec::new())
    }
}

/// A pod veth the test names (`pwt` prefix): a pod interface by its name alone.
fn veth(index: InterfaceIndex) -> Link {
    Link {
        master: None,
        frames: None,
        ..Link::named(index, &format!("pwt{index}"))
    }
}

fn syncer(fake: Fake, links: &[Link]) -> Syncer<Fake> {
    let links: BTreeMap<InterfaceIndex, Link> = links
        .iter()
        .map(|link| (link.index, link.clone()))
        .collect();
    let config = SyncConfig {
        node_name: "node-a".into(),
        audit: false,
        interface_prefixes: vec!["pwt".into()],
        pod_bridges: Vec::new(),
    };
    let health = Arc::new(Health::new(Duration::from_secs(60)));
    Syncer::new(config, fake, Arc::new(Metrics::new()), health, &links, None)
}

fn synced(state: ClusterState) -> SourceSnapshot {
    SourceSnapshot {
        state: Arc::new(state),
        synced: true,
        ..SourceSnapshot::default()
    }
}

fn with_indexes(names: &[Link]) -> Fake {
    Fake {
        indexes: names
            .iter()
            .map(|link| (link.name.clone(), link.index))
            .collect(),
        ..Fake::default()
    }
}

#[test]
fn a_pass_writes_the_tables_before_it_attaches_a_new_interface() {
    let links = [veth(41)];
    let mut syncer = syncer(with_indexes(&links), &links);
    let state = builders::cluster()
        .pod(builders::pod("shop", "web").ip("10.0.0.2").build())
        .build();
    syncer
        .sync(&synced(state))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        syncer.datapath.calls,
        ["apply 0 pods, pending [41]", "attach pwt41"],
        "no classifier may meet a packet before its interface has an entry"
    );
    assert_eq!(
        syncer.health.readiness(),
        Ok(()),
        "programmed once a pass wrote"
    );
}

#[test]
fn before_the_source_is_synced_nothing_is_written_and_a_new_veth_waits() {
    let links = [veth(41)];
    let mut syncer = syncer(with_indexes(&links), &links);
    let snapshot = SourceSnapshot::default();
    syncer.sync(&snapshot).unwrap_or_else(|e| panic!("{e}"));
    assert!(!syncer.link_event(LinkEvent::Added(veth(42))));
    assert!(
        syncer.datapath.calls.is_empty(),
        "{:?}",
        syncer.datapath.calls
    );
    assert!(syncer.health.readiness().is_err());
}

#[test]
fn a_failed_write_keeps_the_old_state_attaches_nothing_and_is_retried() {
    let links = [veth(41)];
    let mut fake = Fake {
        fail_applies: 1,
        ..with_indexes(&links)
    };
    fake.indexes.insert("pwt42".into(), 42);
    let mut syncer = syncer(fake, &links);
    let state = ClusterState::default();
    let failed = syncer.sync(&synced(state.clone()));
    assert!(matches!(failed, Err(SyncError::Dataplane(_))), "{failed:?}");
    assert_eq!(syncer.datapath.calls, ["apply 0 pods, pending [41]"]);
    assert!(syncer.retry_at.is_some(), "a failed pass schedules a retry");
    assert!(
        syncer.health.readiness().is_err(),
        "not ready while unprogrammed"
    );
    // Before any pass succeeded, a new veth goes on top of what the datapath
    // enforces (the last plan's pending entry), without waiting for a pass.
    assert!(!syncer.link_event(LinkEvent::Added(veth(42))));
    assert_eq!(
        syncer.datapath.calls[1..],
        ["add_unattached [42]", "attach pwt42"]
    );
    syncer
        .sync(&synced(state))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(syncer.health.readiness(), Ok(()));
    assert!(syncer.datapath.attached.contains(&41));
}

#[test]
fn a_new_veth_after_a_pass_gets_a_pending_entry_in_place_then_is_attached() {
    let links = [veth(41)];
    let mut fake = with_indexes(&links);
    fake.indexes.insert("pwt42".into(), 42);
    let mut syncer = syncer(fake, &links);
    syncer
        .sync(&synced(ClusterState::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    let needs_pass = syncer.link_event(LinkEvent::Added(veth(42)));
    assert!(!needs_pass, "a pending entry needs no pass");
    assert_eq!(
        syncer.datapath.calls[2..],
        ["add_unattached [42]", "attach pwt42"]
    );
    assert_eq!(
        syncer.datapath.pending.keys().copied().collect::<Vec<_>>(),
        [41, 42]
    );
    // Its removal asks for a pass, which detaches it once its entry is gone.
    assert!(syncer.link_event(LinkEvent::Removed(veth(42))));
    syncer
        .sync(&synced(ClusterState::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    let last = &syncer.datapath.calls[syncer.datapath.calls.len() - 2..];
    assert_eq!(last, ["apply 0 pods, pending [41]", "detach 42"]);
}

#[test]
fn a_pod_of_another_node_is_written_in_place_unless_the_maps_missed_a_write() {
    let remote =
        |name: &str, ip: &str| builders::pod("shop", name).ip(ip).node("elsewhere").build();
    let mut syncer = syncer(Fake::default(), &[]);
    let mut state = builders::cluster().pod(remote("a", "10.0.0.2")).build();
    let pass = |syncer: &mut Syncer<Fake>, state: &ClusterState| {
        syncer.datapath.calls.clear();
        let result = syncer.sync(&synced(state.clone()));
        (result.is_ok(), syncer.datapath.calls.clone())
    };
    assert_eq!(
        pass(&mut syncer, &state),
        (true, vec!["apply 0 pods, pending []".to_string()])
    );

    // Only a pod of another node changed: its peer entry alone, in place.
    let b = remote("b", "10.0.0.3");
    state.pods.insert(b.key.clone(), b);
    assert_eq!(
        pass(&mut syncer, &state),
        (true, vec![r#"update_peers ["10.0.0.3/32"]"#.to_string()])
    );

    // A write that fails: the maps miss it, so the next change, a pod of another
    // node again, goes through a whole write.
    let policy = builders::netpol("shop", "deny")
        .select(builders::selector().build())
        .build();
    state.policies.insert(policy.key.clone(), policy);
    syncer.datapath.fail_applies = 1;
    assert!(!pass(&mut syncer, &state).0);
    let c = remote("c", "10.0.0.4");
    state.pods.insert(c.key.clone(), c);
    assert_eq!(
        pass(&mut syncer, &state),
        (true, vec!["apply 0 pods, pending []".to_string()])
    );
}

/// A namespace's labels that move its pods between classes that stay
/// (`Recompiled::Reclassed`) are written as those entries alone when the
/// datapath finds that hole-free, else the tables whole; after a failed move
/// the next change is written whole.
#[test]
fn addresses_that_only_move_class_are_written_alone_unless_the_datapath_refuses() {
    let namespace =
        |name: &str, team: &str| builders::namespace(name).labels([("team", team)]).build();
    let pod = |ns: &str, ip: &str, node: &str| builders::pod(ns, "api").ip(ip).node(node).build();
    let from_team = |team: &str| {
        builders::rule()
            .from_pods_in_namespaces(
                builders::selector().build(),
                builders::selector().label("team", team).build(),
            )
            .build()
    };
    let mut state = builders::cluster()
        .namespace(namespace("a", "x"))
        .namespace(namespace("b", "z"))
        .namespace(namespace("c", "z"))
        .pod(pod("a", "10.0.0.1", "node-a"))
        .pod(pod("b", "10.0.0.6", "elsewhere"))
        .pod(pod("c", "10.0.0.7", "elsewhere"))
        .policy(
            builders::netpol("a", "api")
                .select(builders::selector().build())
                .ingress(from_team("x"))
                .ingress(from_team("z"))
                .build(),
        )
        .build();
    // The plan maps no pod here (no routes): a/api is compiled as local anyway.
    let compile = super::compile::default_compiler();
    let local = ObjectRef::new("a", "api");
    let compiler: super::compile::Compiler = Arc::new(move |job: &super::CompileJob| {
        compile(&super::CompileJob {
            state: Arc::clone(&job.state),
            node_addresses: job.node_addresses.clone(),
            local: [local.clone()].into(),
        })
    });
    let mut syncer = syncer(Fake::default(), &[]).with_compiler(compiler);
    let mut pass = |syncer: &mut Syncer<Fake>, team: &str| {
        state.namespaces.insert("c".into(), namespace("c", team));
        syncer.datapath.calls.clear();
        let written = syncer.sync(&synced(state.clone())).is_ok();
        (written, syncer.datapath.calls.clone())
    };
    let whole = "apply 0 pods, pending []".to_string();
    let moved = r#"update_classes ["10.0.0.7/32"]"#.to_string();
    assert_eq!(pass(&mut syncer, "z"), (true, vec![whole.clone()]));
    assert_eq!(pass(&mut syncer, "x"), (true, vec![moved.clone()]));
    syncer.datapath.refuse_classes = true;
    assert_eq!(
        pass(&mut syncer, "z"),
        (true, vec![moved.clone(), whole.clone()])
    );
    // A move that fails part way leaves the maps unknown: the next change goes
    // through a whole write.
    syncer.datapath.refuse_classes = false;
    syncer.datapath.fail_applies = 1;
    assert_eq!(pass(&mut syncer, "x"), (false, vec![moved]));
    assert_eq!(pass(&mut syncer, "z"), (true, vec![whole]));
}

#[test]
fn a_service_address_is_written_in_place() {
    let mut syncer = syncer(Fake::default(), &[]);
    let remote = builders::pod("shop", "a")
        .ip("10.0.0.2")
        .node("elsewhere")
        .build();
    let mut state = builders::cluster().pod(remote).build();
    syncer
        .sync(&synced(state.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    syncer.datapath.calls.clear();
    let service = builders::service("shop", "web")
        .cluster_ip("10.96.0.10")
        .build();
    state.services.insert(service.key.clone(), service);
    syncer
        .sync(&synced(state.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(syncer.datapath.calls, [r#"update_peers ["10.96.0.10/32"]"#]);
}

/// A local pod that came or went alone (`Recompiled::Endpoint`) is written in
/// place when the maps hold the compile it was made from and the interfaces and
/// pending entries differ in that pod's and its interface's alone; any other
/// difference (another pod moved, another pending entry, another interface to
/// detach, a stale base) is a whole write.
#[test]
fn a_local_pod_that_comes_or_goes_alone_is_written_in_place_and_nothing_else_is() {
    use super::{pass::InPlace, Written};
    use crate::{agent::plan::Plan, policy::compiler::Recompiled};
    let web = ObjectRef::new("shop", "web");
    let new = ObjectRef::new("shop", "new");
    let pending_entry = EndpointEntry {
        endpoint_id: policy_common::endpoint::PENDING_ENDPOINT_ID,
        ..EndpointEntry::default()
    };
    let change = Recompiled::Endpoint(EndpointChange {
        pod: new.clone(),
        addresses: Vec::new(),
        peers: Vec::new(),
    });
    let mut syncer = syncer(Fake::default(), &[]);
    let written = |interfaces: &[(&ObjectRef, InterfaceIndex)], pending: &[InterfaceIndex]| {
        Some(Written {
            tables: Arc::default(),
            interfaces: interfaces.iter().map(|(p, i)| ((*p).clone(), *i)).collect(),
            pending: pending.iter().map(|i| (*i, pending_entry)).collect(),
            pending_entry,
        })
    };
    let plan = |interfaces: &[(&ObjectRef, InterfaceIndex)], detach: &[InterfaceIndex]| Plan {
        interfaces: interfaces.iter().map(|(p, i)| ((*p).clone(), *i)).collect(),
        detach: detach.iter().copied().collect(),
        ..Plan::default()
    };
    let none = BTreeMap::new();
    let pending_44: BTreeMap<InterfaceIndex, EndpointEntry> = [(44, pending_entry)].into();
    let on = |found: Option<InPlace<'_>>| match found {
        Some(InPlace::Endpoint(change, ifindex)) => Some((change.pod.clone(), ifindex)),
        _ => None,
    };

    // It came on 42, pending until now.
    syncer.written = written(&[(&web, 41)], &[42]);
    syncer.written_compile = Some(7);
    let came = plan(&[(&web, 41), (&new, 42)], &[]);
    assert_eq!(
        on(syncer.in_place(&came, &none, &change, Some(7))),
        Some((new.clone(), 42))
    );
    assert_eq!(on(syncer.in_place(&came, &none, &change, Some(6))), None);
    assert_eq!(
        on(syncer.in_place(&came, &pending_44, &change, Some(7))),
        None
    );
    let moved = plan(&[(&web, 43), (&new, 42)], &[]);
    assert_eq!(on(syncer.in_place(&moved, &none, &change, Some(7))), None);
    let detached = plan(&[(&web, 41), (&new, 42)], &[41]);
    assert_eq!(
        on(syncer.in_place(&detached, &none, &change, Some(7))),
        None
    );

    // It went from 42, whose veth goes too (detached after the write).
    syncer.written = written(&[(&web, 41), (&new, 42)], &[]);
    let went = plan(&[(&web, 41)], &[42]);
    assert_eq!(
        on(syncer.in_place(&went, &none, &change, Some(7))),
        Some((new.clone(), 42))
    );
    // Nothing written yet: a whole write.
    syncer.written = None;
    assert_eq!(on(syncer.in_place(&went, &none, &change, Some(7))), None);
}

#[test]
fn with_audit_each_pass_compiles_the_snapshot_with_every_policy_in_audit() {
    let links = [veth(41)];
    let mut syncer = syncer(with_indexes(&links), &links);
    syncer.config.audit = true;
    let compiled: Arc<std::sync::Mutex<Vec<Arc<ClusterState>>>> = Arc::default();
    let held = syncer.compiler.clone();
    let seen = Arc::clone(&compiled);
    syncer.compiler = Arc::new(move |job: &super::CompileJob| {
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::clone(&job.state));
        held(job)
    });
    let policy = |name: &str, port| {
        builders::netpol("shop", name)
            .select(builders::selector().build())
            .ingress(
                builders::rule()
                    .port(port, crate::model::Protocol::Tcp)
                    .build(),
            )
            .build()
    };
    let mut state = builders::cluster()
        .pod(builders::pod("shop", "web").ip("10.0.0.2").build())
        .policy(policy("a", 80))
        .policy(policy("b", 81))
        .build();
    let mut snapshots = vec![state.clone()];
    // One policy edited, one added, one removed; then nothing changed.
    state
        .policies
        .insert(policy("a", 82).key.clone(), policy("a", 82));
    state
        .policies
        .insert(policy("c", 83).key.clone(), policy("c", 83));
    state.policies.remove(&ObjectRef::new("shop", "b"));
    snapshots.push(state.clone());
    snapshots.push(state);
    for snapshot in &snapshots {
        syncer
            .sync(&synced(snapshot.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let compiled = compiled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(compiled.len(), snapshots.len());
    for (job, snapshot) in compiled.iter().zip(snapshots) {
        assert_eq!(**job, snapshot.with_every_policy_in_audit());
    }
}
