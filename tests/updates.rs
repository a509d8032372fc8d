//! Updates without holes (docs/architecture.md, invariant 3), on the real kernel: probes run
//! all the time while policies, pod labels and namespace labels churn, and no probe
//! may get a verdict that every state in effect while it ran disagrees with. On
//! several nodes, which take each update at different moments, a connection
//! between two nodes meets the source node's egress as that node knows it and the
//! destination node's ingress as that node knows it: its verdict must be one that
//! some pair of states in effect gives.

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use policy_agent::{
    lab::{probe::Family, topology::Layout, Lab, LabOptions},
    model::{
        builders::{cluster, namespace, netpol, pod, rule, selector},
        ClusterState, NetworkPolicy, ObjectRef, Protocol,
    },
    policy::{
        evaluator::{evaluate, End, Query},
        probes,
    },
};
use socket2::{Domain, SockAddr, Socket, Type};

/// Updates the churn makes.
const UPDATES: usize = 300;
/// Pause between two updates, so that probes see every state.
const UPDATE_GAP: Duration = Duration::from_millis(15);
/// How long a probe waits for its connection; a dropped SYN is retried by the
/// kernel only after a second, so one probe is one verdict.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// The port every pod listens on.
const PORT: u16 = 80;
/// App labels pods move between.
const APPS: [&str; 3] = ["web", "db", "cache"];

/// A small deterministic generator (64-bit LCG, high bits out): the churn is the
/// same on every run, so a failure can be replayed.
struct Churn(u64);

impl Churn {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// The policies the churn switches on and off: ingress and egress, pod, namespace
/// and combined selectors, default denies and ports.
fn policy_pool() -> Vec<NetworkPolicy> {
    let app = |name: &str| selector().label("app", name).build();
    let team = |name: &str| selector().label("team", name).build();
    vec![
        netpol("a", "db-deny-ingress")
            .select(app("db"))
            .types(true, false)
            .build(),
        netpol("a", "db-from-web")
            .select(app("db"))
            .ingress(
                rule()
                    .from_pods(app("web"))
                    .port(PORT, Protocol::Tcp)
                    .build(),
            )
            .build(),
        netpol("b", "from-team-x")
            .select(selector().build())
            .ingress(rule().from_namespaces(team("x")).build())
            .build(),
        netpol("b", "deny-all-ingress")
            .select(selector().build())
            .types(true, false)
            .build(),
        netpol("a", "cache-deny-egress")
            .select(app("cache"))
            .types(false, true)
            .build(),
        netpol("a", "cache-to-team-y")
            .select(app("cache"))
            .egress(
                rule()
                    .to_namespaces(team("y"))
                    .port(PORT, Protocol::Tcp)
                    .build(),
            )
            .build(),
        netpol("b", "from-cache-anywhere")
            .select(app("web"))
            .ingress(
                rule()
                    .from_pods_in_namespaces(app("cache"), selector().build())
                    .build(),
            )
            .build(),
        netpol("b", "web-deny-egress")
            .select(app("web"))
            .types(false, true)
            .build(),
    ]
}

fn initial_state() -> ClusterState {
    let mut builder = cluster()
        .namespace(namespace("a").labels([("team", "x")]).build())
        .namespace(namespace("b").labels([("team", "y")]).build());
    for ns in ["a", "b"] {
        for (i, app) in APPS.iter().enumerate() {
            builder = builder.pod(
                pod(ns, &format!("{ns}{i}"))
                    .labels([("app", *app)])
                    .port(PORT, Protocol::Tcp)
                    .build(),
            );
        }
    }
    builder.build()
}

/// One change to `state`: a policy switched on or off, a pod's app label or a
/// namespace's team label changed.
fn churn_once(state: &mut ClusterState, pool: &[NetworkPolicy], churn: &mut Churn) {
    match churn.below(3) {
        0 => {
            let policy = &pool[churn.below(pool.len())];
            if state.policies.remove(&policy.key).is_none() {
                state.policies.insert(policy.key.clone(), policy.clone());
            }
        }
        1 => {
            let keys: Vec<ObjectRef> = state.pods.keys().cloned().collect();
            let key = &keys[churn.below(keys.len())];
            let app = APPS[churn.below(APPS.len())];
            if let Some(pod) = state.pods.get_mut(key) {
                pod.labels.insert("app".into(), app.into());
            }
        }
        _ => {
            let name = ["a", "b"][churn.below(2)];
            if let Some(ns) = state.namespaces.get_mut(name) {
                let team = if ns.labels.get("team").map(String::as_str) == Some("x") {
                    "y"
                } else {
                    "x"
                };
                ns.labels.insert("team".into(), team.into());
            }
        }
    }
}

/// A state and when it was being written: it may decide packets from the start of
/// its write until the end of the next state's write.
struct Applied {
    state: ClusterState,
    write_started: Instant,
    write_ended: Instant,
}

/// One probe: a fresh TCP connection from one pod to another.
#[derive(Clone, Debug)]
struct Probe {
    from: ObjectRef,
    to: ObjectRef,
    started: Instant,
    ended: Instant,
    allowed: bool,
}

/// A pod as a probe source: its namespace and its IPv4 address.
#[derive(Clone)]
struct Source {
    pod: ObjectRef,
    netns: String,
    address: IpAddr,
}

/// Connects from `source` (bound to `port`, so that no two probes share a flow) to
/// `target`; true when the handshake completed within `PROBE_TIMEOUT`.
fn connect(source: &Source, port: u16, target: SocketAddr) -> bool {
    let socket = policy_agent::lab::netns::in_netns(&source.netns, || {
        Socket::new(Domain::IPV4, Type::STREAM, None)
    })
    .unwrap_or_else(|e| panic!("entering {}: {e}", source.netns))
    .unwrap_or_else(|e| panic!("socket in {}: {e}", source.netns));
    socket
        .bind(&SockAddr::from(SocketAddr::new(source.address, port)))
        .unwrap_or_else(|e| panic!("bind {}:{port}: {e}", source.address));
    socket
        .connect_timeout(&SockAddr::from(target), PROBE_TIMEOUT)
        .is_ok()
}

/// Probes from `source` to each of `targets` in turn until `stop` is set.
fn probe_until(
    source: Source,
    targets: Vec<(ObjectRef, SocketAddr)>,
    stop: Arc<AtomicBool>,
) -> Vec<Probe> {
    let mut probes = Vec::new();
    // Fresh source ports per probe: 40,000 are more than a run makes.
    for port in (20_000u16..60_000).cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (to, target) = &targets[usize::from(port) % targets.len()];
        let started = Instant::now();
        let allowed = connect(&source, port, *target);
        probes.push(Probe {
            from: source.pod.clone(),
            to: to.clone(),
            started,
            ended: Instant::now(),
            allowed,
        });
    }
    probes
}

/// What `state` says of a TCP connection from `from` to `to` on `PORT`, judged at
/// the IPv4 addresses the probes use: (the source's egress, the destination's
/// ingress) let it through.
fn sides(state: &ClusterState, from: &ObjectRef, to: &ObjectRef) -> (bool, bool) {
    let at_v4 = |pod: &ObjectRef| probes::at_address(state, &End::Pod(pod.clone()), Family::Ipv4);
    let verdict = evaluate(
        state,
        &Query {
            src: at_v4(from),
            dst: at_v4(to),
            protocol: Protocol::Tcp,
            port: PORT,
        },
    );
    (verdict.egress.allows(), verdict.ingress.allows())
}

#[test]
fn probes_never_see_a_verdict_that_both_states_of_an_update_disagree_with() {
    support::require_root_and_bpf();
    churn_on(1);
}

#[test]
fn across_three_nodes_every_verdict_is_one_a_pair_of_states_in_effect_gives() {
    support::require_root_and_bpf();
    churn_on(3);
}

/// Churns a lab of `nodes` nodes while every pod probes every other, then checks
/// each probe against the states in effect while it ran: on one node, each state
/// alone; on several, every pair (the source node's, the destination node's).
fn churn_on(nodes: usize) {
    let mut state = initial_state();
    let start = Instant::now();
    let mut options = LabOptions::of_layout(Layout {
        nodes,
        ..Layout::default()
    });
    // The probes open tens of thousands of flows a pod, more than a pod's default
    // share of the conntrack table holds before the lab's sweep frees the closed
    // ones; a wider share keeps the flow limit out of the verdicts this checks.
    options.config.ct_endpoint_flows = policy_common::ct::CONNTRACK_MAX / 4;
    let mut lab = Lab::up_with(state.clone(), &[], &options).unwrap_or_else(|e| panic!("lab: {e}"));
    let node_of = |pod: &ObjectRef| lab.node_of(pod).map(|n| n.name.clone()).ok();
    let crossing = lab
        .pods()
        .iter()
        .flat_map(|a| lab.pods().into_iter().map(move |b| (a.clone(), b)))
        .filter(|(a, b)| node_of(a) != node_of(b))
        .count();
    assert_eq!(crossing > 0, nodes > 1, "pods on other nodes");
    let mut applied = vec![Applied {
        state: lab.state().clone(),
        write_started: start,
        write_ended: Instant::now(),
    }];
    let sources: Vec<Source> = lab
        .pods()
        .into_iter()
        .map(|pod| Source {
            netns: lab
                .pod_netns(&pod)
                .unwrap_or_else(|e| panic!("{e}"))
                .to_string(),
            address: lab
                .pod_address(&pod, Family::Ipv4)
                .unwrap_or_else(|e| panic!("{e}")),
            pod,
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let probers: Vec<_> = sources
        .iter()
        .map(|source| {
            let targets = sources
                .iter()
                .filter(|other| other.pod != source.pod)
                .map(|other| (other.pod.clone(), SocketAddr::new(other.address, PORT)))
                .collect();
            let (source, stop) = (source.clone(), Arc::clone(&stop));
            thread::spawn(move || probe_until(source, targets, stop))
        })
        .collect();

    let pool = policy_pool();
    let mut churn = Churn(0x005e_ed0f_c4a2);
    for _ in 0..UPDATES {
        churn_once(&mut state, &pool, &mut churn);
        let write_started = Instant::now();
        lab.update(state.clone())
            .unwrap_or_else(|e| panic!("update: {e}"));
        applied.push(Applied {
            state: lab.state().clone(),
            write_started,
            write_ended: Instant::now(),
        });
        thread::sleep(UPDATE_GAP);
    }
    stop.store(true, Ordering::Relaxed);
    let probes: Vec<Probe> = probers
        .into_iter()
        .flat_map(|prober| {
            prober
                .join()
                .unwrap_or_else(|_| panic!("a prober panicked"))
        })
        .collect();

    let (mut sharp, mut allowed, mut denied) = (0, 0, 0);
    for probe in &probes {
        // State k decides packets from the start of its write until the end of
        // the next write.
        let candidates: Vec<&Applied> = applied
            .iter()
            .enumerate()
            .filter(|(k, a)| {
                let until = applied.get(k + 1).map(|next| next.write_ended);
                a.write_started <= probe.ended && until.is_none_or(|end| end >= probe.started)
            })
            .map(|(_, a)| a)
            .collect();
        let each: Vec<(bool, bool)> = candidates
            .iter()
            .map(|a| sides(&a.state, &probe.from, &probe.to))
            .collect();
        let verdicts: Vec<bool> = if nodes == 1 {
            each.iter()
                .map(|(egress, ingress)| *egress && *ingress)
                .collect()
        } else {
            each.iter()
                .flat_map(|(egress, _)| each.iter().map(move |(_, ingress)| *egress && *ingress))
                .collect()
        };
        assert!(
            verdicts.contains(&probe.allowed),
            "probe {} -> {} was {} but every state in effect while it ran ({} of them) says {}: {probe:?}",
            probe.from,
            probe.to,
            if probe.allowed { "allowed" } else { "denied" },
            verdicts.len(),
            if probe.allowed { "deny" } else { "allow" },
        );
        if verdicts.iter().all(|v| *v == probe.allowed) {
            sharp += 1;
        }
        if probe.allowed {
            allowed += 1;
        } else {
            denied += 1;
        }
    }
    eprintln!(
        "{} probes over {UPDATES} updates on {nodes} node(s): {allowed} allowed, {denied} denied, {sharp} with one possible verdict",
        probes.len()
    );
    // The churn must have exercised both outcomes many times, or the test shows
    // nothing.
    assert!(
        allowed >= 100 && denied >= 50,
        "too few of one outcome: {allowed} allowed, {denied} denied"
    );
}
