//! `policy_agent::node` against a real kernel: each test builds a lab node
//! namespace (per-pod veths with /32 and /128 routes, as `lab::topology` makes
//! them) and runs the code under test inside it. Nothing touches the host's own
//! interfaces or routes; the namespaces are deleted on drop, even on panic.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use policy_agent::{
    lab::{
        addresses::{PlacedPod, PodAddresses, NODE_V4, NODE_V6},
        netns::{self, in_netns},
        network::RunGuard,
        topology::{self, Layout, Topology, TopologyKind},
    },
    model::ObjectRef,
    node::{self, LinkEvent, LinkWatch},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A lab topology with two pods; its namespaces are deleted on drop.
struct Lab {
    topology: Topology,
    _guard: RunGuard,
}

impl Lab {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates network namespaces, veths and routes and needs root \
             (CAP_SYS_ADMIN, CAP_NET_ADMIN); run it as root"
        );
        let run = format!(
            "{}{}xnode{}",
            netns::LAB_PREFIX,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let pods = BTreeMap::from([
            (ObjectRef::new("prod", "a"), on_the_node(2)),
            (ObjectRef::new("prod", "b"), on_the_node(3)),
        ]);
        // The guard exists before anything is created, so a failed create cleans up.
        let guard = RunGuard::new(&run);
        let topology =
            topology::create(&run, &pods, |_| true, Layout::single(TopologyKind::Routed))
                .unwrap_or_else(|e| panic!("creating the lab: {e}"));
        Lab {
            topology,
            _guard: guard,
        }
    }

    fn node(&self) -> &str {
        self.topology.first_node()
    }

    /// Runs `f` inside the node namespace.
    fn in_node<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(self.node(), f).unwrap_or_else(|e| panic!("entering the node namespace: {e}"))
    }

    /// Runs `ip -n <node> -batch` with `lines`.
    fn ip(&self, lines: &[&str]) {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        netns::ip_batch(Some(self.node()), &lines).unwrap_or_else(|e| panic!("{e}"));
    }

    fn index(&self, name: &str) -> u32 {
        self.in_node(|| node::interface_index(name))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no interface {name} in the node namespace"))
    }
}

fn pod_addresses(n: u8) -> PodAddresses {
    PodAddresses {
        v4: Ipv4Addr::new(10, 20, 0, n),
        v6: Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, u16::from(n)),
    }
}

/// A pod of the lab's one node with `pod_addresses(n)`.
fn on_the_node(n: u8) -> PlacedPod {
    PlacedPod {
        node: 0,
        addresses: pod_addresses(n),
    }
}

#[test]
fn route_interface_finds_each_pod_veth_for_both_families() {
    let lab = Lab::new();
    for (key, pod) in &lab.topology.pods {
        let expected = lab.index(&pod.host_interface);
        for ip in pod.addresses.both() {
            let found = lab
                .in_node(|| node::route_interface(ip))
                .unwrap_or_else(|e| panic!("route_interface({ip}): {e}"));
            assert_eq!(found, Some(expected), "{key} at {ip}");
        }
    }
    let all: Vec<IpAddr> = lab
        .topology
        .pods
        .values()
        .flat_map(|pod| pod.addresses.both())
        .collect();
    let batch = lab
        .in_node(|| node::route_interfaces(all.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(batch.len(), all.len(), "{batch:?}");
}

#[test]
fn addresses_without_a_pod_route_have_no_interface() {
    let lab = Lab::new();
    let cases: [(&str, IpAddr); 4] = [
        (
            "no route at all",
            "10.99.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
        ),
        (
            "no IPv6 route",
            "fd00:99::1".parse().unwrap_or_else(|e| panic!("{e}")),
        ),
        (
            "the node's own IPv4 address (a local route)",
            IpAddr::V4(NODE_V4),
        ),
        ("the node's own IPv6 address", IpAddr::V6(NODE_V6)),
    ];
    for (what, ip) in cases {
        let found = lab
            .in_node(|| node::route_interface(ip))
            .unwrap_or_else(|e| panic!("route_interface({ip}): {e}"));
        assert_eq!(found, None, "{what}: {ip}");
    }
    // A route via a gateway (another node's pods) is not a pod route either, even
    // though it leaves through a veth.
    lab.ip(&["route add 10.98.0.0/24 via 10.20.0.2 dev pw0"]);
    let via = lab
        .in_node(|| node::route_interface("10.98.0.7".parse().unwrap_or_else(|e| panic!("{e}"))))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(via, None, "a route via a gateway");
}

#[test]
fn a_bridge_port_is_found_by_its_peers_address_never_by_a_forged_neighbour_entry() {
    let lab = Lab::new();
    let pod_ns = |i: usize| {
        lab.topology
            .pods
            .values()
            .nth(i)
            .map(|pod| pod.netns.clone())
            .unwrap_or_else(|| panic!("no pod {i}"))
    };
    let (first, second) = (pod_ns(0), pod_ns(1));
    // A bridge in the node namespace with one veth port into each pod namespace,
    // the pod subnet on the bridge, as the bridge CNI makes it.
    lab.ip(&[
        "link add pwbr0 type bridge",
        &format!("link add pwb0 type veth peer name br0 address 02:aa:00:00:00:05 netns {first}"),
        &format!("link add pwb1 type veth peer name br0 address 02:aa:00:00:00:06 netns {second}"),
        "link set pwb0 master pwbr0",
        "link set pwb1 master pwbr0",
        "link set pwbr0 up",
        "link set pwb0 up",
        "link set pwb1 up",
        "route add 10.97.0.0/24 dev pwbr0",
    ]);
    for (ns, address) in [(&first, "10.97.0.5/24"), (&second, "10.97.0.6/24")] {
        netns::ip_batch(
            Some(ns),
            &[
                format!("addr add {address} dev br0"),
                "link set br0 up".to_string(),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    // What a pod can forge: the node's neighbour entry of the first pod's address
    // points at the second pod's MAC, which the bridge learned on the second port.
    lab.ip(&["neigh add 10.97.0.5 lladdr 02:aa:00:00:00:06 dev pwbr0 nud permanent"]);
    bridge_fdb(&lab, "02:aa:00:00:00:06", "pwb1");
    let (bridge, first_port, second_port) =
        (lab.index("pwbr0"), lab.index("pwb0"), lab.index("pwb1"));
    let resolve = |ip: &str| {
        let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{e}"));
        lab.in_node(|| node::RouteResolver::open()?.resolve_pod(ip))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        resolve("10.97.0.5"),
        node::PodRoute {
            interfaces: BTreeSet::from([first_port]),
            bridge: Some(bridge),
            neighbour_port: Some(second_port),
        },
        "the port whose peer holds the address; the forged entry is only evidence"
    );
    let second_route = resolve("10.97.0.6");
    assert_eq!(second_route.interfaces, BTreeSet::from([second_port]));
    assert_eq!(
        resolve("10.97.0.7").interfaces,
        BTreeSet::new(),
        "no peer holds it"
    );
    // A pod with CAP_NET_ADMIN puts the first pod's address on its own interface:
    // the address leads to both ports (a conflict for the agent's plan).
    netns::ip_batch(
        Some(&second),
        &["addr add 10.97.0.5/32 dev br0".to_string()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        resolve("10.97.0.5").interfaces,
        BTreeSet::from([first_port, second_port])
    );
}

/// `bridge fdb replace MAC dev PORT master static` in the lab's node namespace.
fn bridge_fdb(lab: &Lab, mac: &str, port: &str) {
    let status = std::process::Command::new("bridge")
        .args([
            "-n",
            lab.node(),
            "fdb",
            "replace",
            mac,
            "dev",
            port,
            "master",
            "static",
        ])
        .status()
        .unwrap_or_else(|e| panic!("running `bridge` (iproute2): {e}"));
    assert!(status.success(), "bridge fdb replace failed");
}

#[test]
fn node_addresses_are_the_namespaces_addresses_without_link_local() {
    let lab = Lab::new();
    let addresses = lab
        .in_node(node::node_addresses)
        .unwrap_or_else(|e| panic!("{e}"));
    let expected: Vec<IpAddr> = vec![
        IpAddr::V4(NODE_V4),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(NODE_V6),
    ];
    let mut expected_sorted = expected;
    expected_sorted.sort();
    assert_eq!(addresses, expected_sorted);
}

#[test]
fn interface_names_and_indexes_round_trip() {
    let lab = Lab::new();
    let index = lab.index("pw0");
    let name = lab
        .in_node(|| node::interface_name(index))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(name.as_deref(), Some("pw0"));
    let missing = lab
        .in_node(|| node::interface_index("pw-none"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(missing, None);
    let links = lab.in_node(node::links).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["lo", "pw0", "pw1"], "{links:?}");
}

/// A `LinkWatch` of the lab's node namespace and a runtime to wait on it.
struct Watching {
    watch: LinkWatch,
    runtime: tokio::runtime::Runtime,
}

impl Watching {
    fn open(lab: &Lab) -> Self {
        Self {
            watch: lab
                .in_node(LinkWatch::open)
                .unwrap_or_else(|e| panic!("{e}")),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// The next event or error, within 5 s.
    fn next(&mut self, what: &str) -> Result<LinkEvent, node::NodeError> {
        let watch = &mut self.watch;
        self.runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), watch.next()).await })
            .unwrap_or_else(|_| panic!("no link event within 5 s while waiting for {what}"))
    }
}

#[test]
fn link_watch_reports_existing_created_and_deleted_links() {
    let lab = Lab::new();
    let mut watching = Watching::open(&lab);
    let mut next = |what: &str| watching.next(what).unwrap_or_else(|e| panic!("{e}"));
    let mut existing: Vec<String> = (0..3)
        .map(|_| match next("the existing links") {
            LinkEvent::Added(link) => link.name,
            other => panic!("expected the existing links first, got {other:?}"),
        })
        .collect();
    existing.sort();
    assert_eq!(existing, ["lo", "pw0", "pw1"]);

    lab.ip(&["link add pwnew type veth peer name pwnewp"]);
    let mut added: Vec<String> = Vec::new();
    while added.len() < 2 {
        match next("the new veth pair") {
            LinkEvent::Added(link) => added.push(link.name),
            other => panic!("expected the new veths, got {other:?}"),
        }
    }
    added.sort();
    assert_eq!(added, ["pwnew", "pwnewp"]);
    let index = lab.index("pwnew");

    // Flag changes repeat RTM_NEWLINK; they are no new link.
    lab.ip(&["link set pwnew up", "link del pwnew"]);
    let mut removed: Vec<(u32, String)> = Vec::new();
    while removed.len() < 2 {
        match next("the deleted veth pair") {
            LinkEvent::Removed(link) => removed.push((link.index, link.name)),
            other => panic!("expected the veths to go, got {other:?}"),
        }
    }
    removed.sort();
    assert!(
        removed.contains(&(index, "pwnew".to_string())),
        "{removed:?}"
    );
    assert!(!watching.watch.known().contains_key(&index));
}

#[test]
fn tunnel_ports_are_the_destination_ports_of_the_vxlan_devices() {
    let lab = Lab::new();
    let ports = || {
        lab.in_node(node::tunnel_ports)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(ports(), [] as [u16; 0], "veths and loopback are no tunnels");
    lab.ip(&[
        "link add vx0 type vxlan id 42 dstport 4789",
        "link add vx1 type vxlan id 43 dstport 9999",
        "link add vx2 type vxlan id 44 dstport 9999",
    ]);
    assert_eq!(
        ports(),
        [4789, 9999],
        "each port once, sorted; up or down alike"
    );
}

/// A datagram of link notifications that cannot be read is an error once; the
/// call after it dumps the links again, so a link announced only in that
/// datagram is still reported (else its pod's veth would never be attached).
#[test]
fn link_watch_dumps_again_after_a_datagram_it_could_not_read() {
    let lab = Lab::new();
    let mut watching = Watching::open(&lab);
    for _ in 0..3 {
        watching
            .next("the existing links")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // A veth pair: its first datagram of notifications is lost.
    watching.watch.fail_next_datagram();
    lab.ip(&["link add pwlost type veth peer name pwlostp"]);
    assert!(
        watching.next("the datagram that fails").is_err(),
        "the datagram was made to fail"
    );
    let mut added: Vec<String> = Vec::new();
    while added.len() < 2 {
        match watching.next("both links of the pair, the lost one from a dump") {
            Ok(LinkEvent::Added(link)) => added.push(link.name),
            other => panic!("expected the pair to be reported, got {other:?}"),
        }
    }
    added.sort();
    assert_eq!(added, ["pwlost", "pwlostp"]);
}
