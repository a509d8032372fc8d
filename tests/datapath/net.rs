//! A dual-stack network of pod namespaces for datapath tests, with the real
//! classifiers attached and tables written by hand through `Datapath::apply`.
//!
//! Like the lab (a "node" namespace routing between one veth per pod, IPv4 with
//! permanent neighbour entries), plus IPv6 on every pod with real neighbour
//! discovery: each host-side veth has `fe80::1`, the pods' IPv6 gateway, so IPv6
//! traffic only flows if the classifiers let ND through. Namespaces are named like
//! the lab's (`pwlab-<pid>x...`), so `policy-agent lab down` sweeps leftovers.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::support::remote::RemoteNode;
use policy_agent::{
    dataplane::{
        self, Adoption, ApplyReport, BankContent, Datapath, EventReader, Hook, InterfaceIndex,
        LoadOptions, PolicyCounters, Stats, TestRunOutcome, TrackedFlow, TunnelPorts,
    },
    lab::netns,
    model::ObjectRef,
    policy::tables::DatapathTables,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// MAC of every host-side veth, as in the lab.
const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// `HOST_MAC` as bytes: where a pod's frames go.
pub const HOST_MAC_BYTES: [u8; 6] = [0xee; 6];
/// The pods' IPv4 gateway (answered by a permanent neighbour entry).
const GATEWAY_V4: &str = "169.254.1.1";
/// The pods' IPv6 gateway: an address of every host-side veth, found through ND.
const GATEWAY_V6: &str = "fe80::1";

/// One pod of the network.
pub struct NetPod {
    /// Its name.
    pub key: ObjectRef,
    /// Its network namespace.
    pub netns: String,
    /// Its host-side veth in the node namespace.
    pub host: String,
    /// Its IPv4 address.
    pub v4: Ipv4Addr,
    /// Its IPv6 address.
    pub v6: Ipv6Addr,
    /// The MAC address of its `eth0`.
    pub mac: [u8; 6],
}

/// Deletes the run's namespaces when dropped (after the datapath, declared before it).
struct Guard(Vec<String>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(error) = netns::delete(&self.0) {
            eprintln!("could not delete {:?}: {error}", self.0);
        }
    }
}

/// Pod namespaces around a node namespace, the datapath attached to every pod veth.
pub struct Net {
    /// The node namespace.
    pub node: String,
    /// The pods, in the order given to `up`.
    pub pods: Vec<NetPod>,
    /// The loaded classifiers and maps.
    pub datapath: Datapath,
    /// Host-side interface of every pod, as `Datapath::apply` takes it.
    pub interfaces: BTreeMap<ObjectRef, InterfaceIndex>,
    _guard: Guard,
}

fn or_panic<T, E: std::fmt::Display>(what: &str) -> impl FnOnce(Result<T, E>) -> T + '_ {
    move |result| result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

impl Net {
    /// Both banks as the kernel holds them.
    pub fn read_banks(&mut self) -> [BankContent; 2] {
        self.datapath
            .read_banks()
            .unwrap_or_else(|e| panic!("read banks: {e}"))
    }

    /// The bank `ACTIVE` names in the kernel.
    pub fn active_in_kernel(&mut self) -> u32 {
        self.datapath
            .read_active_bank()
            .unwrap_or_else(|e| panic!("read ACTIVE: {e}"))
    }

    /// Builds the network for `pods` given as `(namespace/name, IPv4, IPv6)`.
    pub fn up(pods: &[(&str, &str, &str)]) -> Net {
        Net::up_with(pods, &LoadOptions::default())
    }

    /// `up` with the datapath loaded with `options` (conntrack timeouts, capacity).
    pub fn up_with(pods: &[(&str, &str, &str)], options: &LoadOptions) -> Net {
        Net::build(pods, |object| {
            or_panic("load")(Datapath::load_with(object, options))
        })
    }

    /// `up` with a pinned datapath (`Datapath::open_pinned` at `pin_dir`), and how
    /// it was opened.
    pub fn up_pinned(pods: &[(&str, &str, &str)], pin_dir: &std::path::Path) -> (Net, Adoption) {
        let mut adoption = None;
        let net = Net::build(pods, |object| {
            let (datapath, adopted) = or_panic("open pinned")(Datapath::open_pinned(
                object,
                &LoadOptions::default(),
                pin_dir,
            ));
            adoption = Some(adopted);
            datapath
        });
        let Some(adoption) = adoption else {
            panic!("the pinned datapath was not opened");
        };
        (net, adoption)
    }

    /// The network for `pods`, with the datapath `load` makes from the object
    /// attached to every pod.
    fn build(pods: &[(&str, &str, &str)], load: impl FnOnce(&std::path::Path) -> Datapath) -> Net {
        let run = format!(
            "{}{}xd{}",
            netns::LAB_PREFIX,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let node = format!("{run}-node");
        let pods: Vec<NetPod> = pods
            .iter()
            .enumerate()
            .map(|(i, (name, v4, v6))| {
                let (namespace, name) = name.split_once('/').unwrap_or(("x", name));
                NetPod {
                    key: ObjectRef::new(namespace, name),
                    netns: format!("{run}-p{i}"),
                    host: format!("pw{i}"),
                    v4: or_panic("IPv4 literal")(v4.parse()),
                    v6: or_panic("IPv6 literal")(v6.parse()),
                    mac: [2, 0, 0, 0, 0, (i + 1) as u8],
                }
            })
            .collect();
        let mut names: Vec<String> = pods.iter().map(|p| p.netns.clone()).collect();
        names.push(node.clone());
        let guard = Guard(names.clone());
        let adds: Vec<String> = names.iter().map(|n| format!("netns add {n}")).collect();
        or_panic("netns add")(netns::ip_batch(None, &adds));
        for name in &names {
            // New interfaces skip duplicate address detection, so addresses work at once.
            or_panic("sysctl")(netns::sysctl(name, "net/ipv6/conf/default/accept_dad", "0"));
            or_panic("sysctl")(netns::sysctl(name, "net/ipv6/conf/all/accept_dad", "0"));
        }
        or_panic("sysctl")(netns::sysctl(&node, "net/ipv4/ip_forward", "1"));
        or_panic("sysctl")(netns::sysctl(&node, "net/ipv6/conf/all/forwarding", "1"));

        let mut node_lines = vec!["link set lo up".to_string()];
        for pod in &pods {
            let mac = pod.mac.map(|b| format!("{b:02x}")).join(":");
            let host = &pod.host;
            node_lines.extend([
                format!("link add {host} address {HOST_MAC} type veth peer name eth0 address {mac} netns {}", pod.netns),
                format!("link set {host} up"),
                format!("addr add {GATEWAY_V6}/64 dev {host} nodad"),
                format!("route add {}/32 dev {host}", pod.v4),
                format!("neigh add {} lladdr {mac} dev {host} nud permanent", pod.v4),
                format!("route add {}/128 dev {host}", pod.v6),
            ]);
        }
        or_panic("node network")(netns::ip_batch(Some(&node), &node_lines));
        for pod in &pods {
            or_panic("pod network")(netns::ip_batch(
                Some(&pod.netns),
                &[
                    "link set lo up".to_string(),
                    "link set eth0 up".to_string(),
                    format!("addr add {}/32 dev eth0", pod.v4),
                    format!("route add {GATEWAY_V4} dev eth0 scope link"),
                    format!("route add default via {GATEWAY_V4} dev eth0"),
                    format!("neigh add {GATEWAY_V4} lladdr {HOST_MAC} dev eth0 nud permanent"),
                    format!("addr add {}/128 dev eth0 nodad", pod.v6),
                    format!("route add ::/0 via {GATEWAY_V6} dev eth0"),
                ],
            ));
        }

        let object = or_panic("eBPF object")(dataplane::object::find());
        let mut datapath = load(&object);
        let interfaces = or_panic("attach")(or_panic("enter node")(netns::in_netns(&node, || {
            pods.iter()
                .map(|p| Ok((p.key.clone(), datapath.attach(&p.host)?)))
                .collect::<Result<BTreeMap<_, _>, dataplane::DataplaneError>>()
        })));
        Net {
            node,
            pods,
            datapath,
            interfaces,
            _guard: guard,
        }
    }

    /// The pod named `namespace/name` (or `name` in namespace `x`).
    pub fn pod(&self, name: &str) -> &NetPod {
        let (namespace, name) = name.split_once('/').unwrap_or(("x", name));
        let key = ObjectRef::new(namespace, name);
        self.pods
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no pod {key}"))
    }

    /// The host-side interface index of pod `name`.
    pub fn ifindex(&self, name: &str) -> InterfaceIndex {
        self.interfaces[&self.pod(name).key]
    }

    /// `interfaces` without pod `name`'s: as `Datapath::apply` takes them when no
    /// pod of the tables owns that veth (its extra entry decides it).
    pub fn interfaces_without(&self, name: &str) -> BTreeMap<ObjectRef, InterfaceIndex> {
        let key = &self.pod(name).key;
        self.interfaces
            .iter()
            .filter(|(pod, _)| *pod != key)
            .map(|(pod, ifindex)| (pod.clone(), *ifindex))
            .collect()
    }

    /// Writes `tables` into the maps.
    pub fn apply(&mut self, tables: &DatapathTables) -> ApplyReport {
        or_panic("apply")(
            self.datapath
                .apply(tables, &self.interfaces, &BTreeMap::new()),
        )
    }

    /// The mark bits a packet passing a pod's egress leaves with now: the stamp of
    /// the active generation (`Config::mark_stamp`), for a same-node destination.
    pub fn stamp(&self) -> u32 {
        let datapath = &self.datapath;
        datapath.config().mark_stamp(datapath.generation())
    }

    /// The verdict counters.
    pub fn stats(&mut self) -> Stats {
        or_panic("stats")(self.datapath.stats())
    }

    /// The tracked flows.
    pub fn conntrack(&mut self) -> Vec<TrackedFlow> {
        or_panic("conntrack")(self.datapath.conntrack())
    }

    /// The per-policy counters, named with `tables` (the tables last applied).
    pub fn policy_counters(&mut self, tables: &DatapathTables) -> PolicyCounters {
        or_panic("policy counters")(self.datapath.policy_counters(tables))
    }

    /// A reader of the datapath's verdict events with nothing waiting: what was
    /// reported before (the pods' own traffic before `quiet`) is drained.
    pub fn event_reader(&mut self) -> EventReader {
        let mut reader = or_panic("event reader")(self.datapath.event_reader());
        reader.drain();
        reader
    }

    /// Runs classifier `hook` of pod `pod`'s interface on `frame` arriving with
    /// `mark` (`BPF_PROG_TEST_RUN`: maps change, nothing is sent).
    pub fn run(&mut self, hook: Hook, pod: &str, mark: u32, frame: &[u8]) -> TestRunOutcome {
        let ifindex = self.ifindex(pod);
        let node = self.node.clone();
        let datapath = &mut self.datapath;
        or_panic("test run")(Net::in_ns(&node, || {
            datapath.test_run(hook, ifindex, mark, frame)
        }))
    }

    /// Runs `f` inside the network namespace `name`.
    pub fn in_ns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
        or_panic("enter namespace")(netns::in_netns(name, f))
    }

    /// Reads the UDP ports of the node namespace's tunnel devices and writes them
    /// into the datapath with the defaults, as the agent does; returns what it wrote.
    pub fn refresh_tunnel_ports(&mut self) -> TunnelPorts {
        let node = self.node.clone();
        let ports = or_panic("tunnel ports")(or_panic("enter node")(netns::in_netns(
            &node,
            policy_agent::node::tunnel_ports,
        )));
        or_panic("set tunnel ports")(self.datapath.set_tunnel_ports(&ports))
    }

    /// Adds `addresses` to the node namespace's loopback (node addresses that
    /// node-to-pod traffic comes from).
    pub fn add_node_addresses(&self, addresses: &[IpAddr]) {
        add_addresses(&self.node, "lo", addresses);
    }

    /// Adds `addresses` to pod `pod`'s eth0, as a pod with NET_ADMIN could.
    pub fn add_pod_addresses(&self, pod: &str, addresses: &[IpAddr]) {
        add_addresses(&self.pod(pod).netns, "eth0", addresses);
    }

    /// Switches IPv6 off on every interface of the network's namespaces and waits
    /// until no counter moves for a while (pods' neighbour discovery and MLD in
    /// flight), so only the frames a test runs move counters and emit events.
    pub fn quiet(&mut self) {
        let mut names: Vec<String> = self.pods.iter().map(|p| p.netns.clone()).collect();
        names.push(self.node.clone());
        for name in &names {
            for conf in ["all", "default"] {
                let key = format!("net/ipv6/conf/{conf}/disable_ipv6");
                netns::sysctl(name, &key, "1").unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        let mut last = self.stats();
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let now = self.stats();
            if moved(&last, &now).is_empty() {
                return;
            }
            last = now;
        }
        panic!("the counters never stopped moving: {:?}", last.counters);
    }

    /// Runs `f` on the datapath from inside the node namespace (attaching what
    /// sits on the node's own links or namespace); panics naming `what` on error.
    pub fn on_node<T: Send, E: std::fmt::Display + Send>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Datapath) -> Result<T, E> + Send,
    ) -> T {
        let node = self.node.clone();
        let datapath = &mut self.datapath;
        Net::in_ns(&node, || f(datapath)).unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Loads an nftables ruleset into the node namespace (`nft -f -`).
    pub fn nft(&self, ruleset: &str) {
        or_panic("nft")(policy_agent::lab::services::nft(&self.node, ruleset));
    }

    /// Service rules as kube-proxy makes them, in the node namespace: each family's
    /// ClusterIP of `CLUSTER_IPS` on `port` translated to that family's address of
    /// `to` (IPv4, IPv6) on `to_port`, for each of `protocols` ("tcp", "udp").
    pub fn translate_cluster_ips(
        &self,
        to: [&str; 2],
        protocols: &[&str],
        port: u16,
        to_port: u16,
    ) {
        let [vip4, vip6] = super::pods::CLUSTER_IPS;
        let [to4, to6] = to;
        let mut rules = String::new();
        for (family, vip, to) in [
            ("ip", vip4, to4.to_string()),
            ("ip6", vip6, format!("[{to6}]")),
        ] {
            let translations: String = protocols
                .iter()
                .map(|protocol| {
                    format!(
                        " {family} daddr {vip} {protocol} dport {port} dnat to {to}:{to_port}\n"
                    )
                })
                .collect();
            rules.push_str(&format!(
                "table {family} svc {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n{translations} }}\n}}\n"
            ));
        }
        self.nft(&rules);
    }
}

impl Net {
    /// Adds another node behind the node namespace's uplink
    /// (`support::remote::UPLINK`) holding `remote_pods`, with routes back to this
    /// network's pods; deleted with the network.
    pub fn add_remote_node(&mut self, remote_pods: &[IpAddr]) -> RemoteNode {
        let local: Vec<IpAddr> = self
            .pods
            .iter()
            .flat_map(|pod| [IpAddr::V4(pod.v4), IpAddr::V6(pod.v6)])
            .collect();
        RemoteNode::up(&self.node, &local, remote_pods)
    }
}

/// Adds host addresses to interface `dev` of namespace `netns`.
fn add_addresses(netns: &str, dev: &str, addresses: &[IpAddr]) {
    let lines: Vec<String> = addresses
        .iter()
        .map(|a| {
            let len = if a.is_ipv4() { 32 } else { 128 };
            format!("addr add {a}/{len} dev {dev} nodad")
        })
        .collect();
    or_panic("add addresses")(netns::ip_batch(Some(netns), &lines));
}

/// How the counters moved between `before` and `after`, as `name +n` pairs.
pub fn moved(before: &Stats, after: &Stats) -> Vec<(&'static str, u64)> {
    after.growth_since(before)
}
