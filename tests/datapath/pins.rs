//! A pinned datapath (`Datapath::open_pinned`) on real veth traffic: its TCX
//! links keep enforcing after the datapath that made them is dropped (as when the
//! agent exits or is killed), a new datapath adopts maps, links and banks without
//! a flip until its first `apply`, `detach` and `attach` work on pinned links,
//! and `Datapath::uninstall` removes it all, which ends enforcement.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use policy_agent::{
    dataplane::{self, Adoption, Datapath, LoadOptions, Traffic, RUN_ROOT, RUN_ROOT_ENV},
    lab::netns,
    policy::tables::{DatapathTables, Direction},
    telemetry::flows::FlowPaths,
};

use super::{
    frames::TCP,
    net::Net,
    node_backend,
    pods::{CLIENT_V4, CLIENT_V6, PODS, SERVER_V4},
    support,
    tables::Tables,
    tcp,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Removes the pinned datapath when dropped, even on panic (declared before the
/// `Net`, so the datapath and the namespaces go first). Named like a lab run, so
/// `policy-agent lab down` sweeps what a killed test leaves.
struct Pins(PathBuf);

impl Pins {
    /// A fresh pin directory under `/sys/fs/bpf/podwall/v4/`, bpffs mounted.
    fn new() -> Pins {
        support::require_root_and_bpf();
        let paths = FlowPaths::system();
        if let Err(error) = paths.bpffs_mount().ensure() {
            panic!("pinned datapath tests need bpffs at /sys/fs/bpf: {error}");
        }
        let instance = format!(
            "{}{}xpins{}",
            netns::LAB_PREFIX,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Pins(paths.pins_root().join(instance))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(error) = Datapath::uninstall(&self.0) {
            eprintln!("could not uninstall {}: {error}", self.0.display());
        }
    }
}

fn object() -> PathBuf {
    dataplane::object::find().unwrap_or_else(|e| panic!("object: {e}"))
}

/// Takes the net's datapath out (a loaded, unattached one takes its place) and
/// drops it, as the agent's exit would.
fn drop_datapath(net: &mut Net) {
    let placeholder = Datapath::load(&object()).unwrap_or_else(|e| panic!("load: {e}"));
    drop(std::mem::replace(&mut net.datapath, placeholder));
}

/// The server isolated for ingress, admitting the client (class 3) on `port`.
fn server_admits(net: &Net, port: u16) -> DatapathTables {
    Tables::new(net)
        .isolate("server", true, false)
        .isolated_by("server", &[0], &[])
        .pod_class("client", 3)
        .allow_port("server", Direction::Ingress, 3, TCP, port)
        .build()
}

/// Which of TCP 80 and 81 on the server the client reaches.
fn reachable(net: &Net) -> (bool, bool) {
    (
        tcp(net, "client", SERVER_V4, 80),
        tcp(net, "client", SERVER_V4, 81),
    )
}

fn link_pins(pin_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pin_dir.join("links"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn pins_of(net: &Net, pods: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .flat_map(|pod| {
            let ifindex = net.ifindex(pod);
            [format!("{ifindex}-egress"), format!("{ifindex}-ingress")]
        })
        .collect();
    names.sort();
    names
}

#[test]
fn pinned_links_enforce_without_their_datapath_and_a_new_one_adopts_them_without_a_flip() {
    let pins = Pins::new();
    let (mut net, adoption) = Net::up_pinned(&PODS[..2], &pins.0);
    assert_eq!(adoption, Adoption::Fresh);
    assert_eq!(link_pins(&pins.0), pins_of(&net, &["server", "client"]));
    let port_80 = server_admits(&net, 80);
    assert_eq!(net.apply(&port_80).bank, 1);
    assert_eq!(reachable(&net), (true, false));
    let banks = net.datapath.read_banks().unwrap_or_else(|e| panic!("{e}"));
    let allowed = net.policy_counters(&port_80).rules;
    assert!(allowed[0].traffic.packets > 0, "{allowed:?}");
    let generation = net.datapath.generation();
    let held = net
        .datapath
        .conntrack_held()
        .unwrap_or_else(|e| panic!("{e}"));
    let server_if = net.ifindex("server");
    assert!(held.get(&server_if).is_some_and(|&n| n > 0), "{held:?}");

    // The agent is gone: the pinned links and programs still decide.
    drop_datapath(&mut net);
    assert_eq!(reachable(&net), (true, false));

    // A new datapath adopts everything as it stands: no flip, no bank written;
    // `ACTIVE` moves on two generations in the same bank (a predecessor killed
    // between an in-place write and its move leaves that move owed).
    let (adopted, adoption) = Datapath::open_pinned(&object(), &LoadOptions::default(), &pins.0)
        .unwrap_or_else(|e| panic!("adopt: {e}"));
    net.datapath = adopted;
    assert_eq!(adoption, Adoption::Adopted { interfaces: 2 });
    assert_eq!(net.datapath.active_bank(), 1);
    assert_eq!(net.datapath.read_active_bank().ok(), Some(1));
    assert_eq!(net.datapath.read_banks().ok(), Some(banks));
    // ...two generations on (every tracked flow is re-decided once), and the
    // flows' counts.
    assert_eq!(net.datapath.generation(), generation + 2);
    let adopted_held = net
        .datapath
        .conntrack_held()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        adopted_held.get(&server_if) >= held.get(&server_if),
        "{held:?} then {adopted_held:?}"
    );
    let mut attached: Vec<u32> = net.datapath.attached_interfaces().collect();
    attached.sort_unstable();
    let mut expected: Vec<u32> = net.interfaces.values().copied().collect();
    expected.sort_unstable();
    assert_eq!(attached, expected);
    // The rule kept its counter slot (`state.json`): its count goes on.
    let after = net.policy_counters(&port_80).rules;
    assert!(
        after[0].traffic.packets >= allowed[0].traffic.packets,
        "{allowed:?} then {after:?}"
    );
    // Its links now run the new datapath's programs, on the same state.
    assert_eq!(reachable(&net), (true, false));

    // The first apply flips to the other bank, the next generation.
    assert_eq!(net.apply(&server_admits(&net, 81)).bank, 0);
    assert_eq!(net.datapath.generation(), generation + 3);
    assert_eq!(reachable(&net), (false, true));

    // Detach removes the server's links and pins; attach brings them back, once.
    let server = net.ifindex("server");
    net.datapath
        .detach(server)
        .unwrap_or_else(|e| panic!("detach: {e}"));
    assert_eq!(link_pins(&pins.0), pins_of(&net, &["client"]));
    assert_eq!(reachable(&net), (true, true));
    let host = net.pod("server").host.clone();
    let node = net.node.clone();
    let datapath = &mut net.datapath;
    let again = Net::in_ns(&node, || {
        let first = datapath.attach(&host)?;
        let second = datapath.attach(&host)?;
        Ok::<_, dataplane::DataplaneError>((first, second))
    })
    .unwrap_or_else(|e| panic!("attach: {e}"));
    assert_eq!(again, (server, server));
    assert_eq!(link_pins(&pins.0), pins_of(&net, &["server", "client"]));
    assert_eq!(reachable(&net), (false, true));

    // Uninstall (no datapath holding the links): enforcement ends.
    drop_datapath(&mut net);
    assert_eq!(reachable(&net), (false, true));
    assert_eq!(Datapath::uninstall(&pins.0).ok(), Some(true));
    assert!(!pins.0.exists());
    assert_eq!(reachable(&net), (true, true));
    assert_eq!(Datapath::uninstall(&pins.0).ok(), Some(false));
}

/// The rule slot state file of the datapath pinned at `pin_dir`
/// (`<run root>/v<ABI>/<instance>/state.json`).
fn state_file(pin_dir: &Path) -> PathBuf {
    let root = std::env::var_os(RUN_ROOT_ENV)
        .filter(|root| !root.is_empty())
        .map_or_else(|| PathBuf::from(RUN_ROOT), PathBuf::from);
    let instance = pin_dir.file_name().unwrap_or_default();
    root.join(format!("v{}", policy_common::ABI_VERSION))
        .join(instance)
        .join("state.json")
}

#[test]
fn adopted_without_its_slot_state_every_rule_counts_from_zero_even_with_nothing_to_write() {
    let pins = Pins::new();
    let (mut net, _) = Net::up_pinned(&PODS[..2], &pins.0);
    let port_80 = server_admits(&net, 80);
    net.apply(&port_80);
    assert_eq!(reachable(&net), (true, false));
    let counted = net.policy_counters(&port_80).rules;
    assert!(counted[0].traffic.packets > 0, "{counted:?}");
    drop_datapath(&mut net);
    let state = state_file(&pins.0);
    std::fs::remove_file(&state).unwrap_or_else(|e| panic!("{}: {e}", state.display()));

    // Which rule had which slot is lost: every slot counts as released. The
    // rule gets its old slot back, so the maps already hold what the apply
    // wants and nothing is written; the slot must still start from zero.
    let (adopted, adoption) = Datapath::open_pinned(&object(), &LoadOptions::default(), &pins.0)
        .unwrap_or_else(|e| panic!("adopt: {e}"));
    net.datapath = adopted;
    assert_eq!(adoption, Adoption::Adopted { interfaces: 2 });
    let report = net.apply(&port_80);
    assert_eq!((report.written, report.removed), (0, 0));
    let after = net.policy_counters(&port_80).rules;
    assert_eq!(after[0].traffic, Traffic::default(), "{after:?}");
    // And the assignment is saved for the next restart.
    assert!(state.exists(), "{} not written", state.display());
}

#[test]
fn links_of_vanished_interfaces_are_removed_on_open() {
    let pins = Pins::new();
    let (mut net, _) = Net::up_pinned(&PODS[..2], &pins.0);
    net.apply(&server_admits(&net, 80));
    drop_datapath(&mut net);

    // The client's veth goes while no agent runs: adoption drops its links.
    let client_host = net.pod("client").host.clone();
    netns::ip_batch(Some(&net.node), &[format!("link del {client_host}")])
        .unwrap_or_else(|e| panic!("link del: {e}"));
    let (_adopted, adoption) = Datapath::open_pinned(&object(), &LoadOptions::default(), &pins.0)
        .unwrap_or_else(|e| panic!("adopt: {e}"));
    assert_eq!(adoption, Adoption::Adopted { interfaces: 1 });
    assert_eq!(link_pins(&pins.0), pins_of(&net, &["server"]));
}

/// Every path under `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
            walk(&path, root, out);
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn an_incomplete_pin_set_with_links_is_refused_and_left_enforcing() {
    let pins = Pins::new();
    let (mut net, _) = Net::up_pinned(&PODS[..2], &pins.0);
    net.apply(&server_admits(&net, 80));
    drop_datapath(&mut net);
    assert_eq!(reachable(&net), (true, false));

    // A map pin gone while links enforce: refused, nothing removed.
    std::fs::remove_file(pins.0.join("maps/POLICY")).unwrap_or_else(|e| panic!("rm: {e}"));
    let before = tree(&pins.0);
    let instance = pins
        .0
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("pin dir {} has no name", pins.0.display()))
        .to_string();
    match Datapath::open_pinned(&object(), &LoadOptions::default(), &pins.0) {
        Err(error @ dataplane::DataplaneError::IncompletePins { .. }) => {
            let message = error.to_string();
            for part in [
                pins.0.display().to_string(),
                "POLICY".to_string(),
                "keep enforcing".to_string(),
                format!("policy-agent uninstall --instance {instance}"),
            ] {
                assert!(message.contains(&part), "{part:?} not in: {message}");
            }
            assert_eq!(error.kind(), "incomplete_pins");
        }
        Err(other) => panic!("want IncompletePins, got {other}"),
        Ok((_, adoption)) => panic!("want IncompletePins, got {adoption:?}"),
    }
    assert_eq!(tree(&pins.0), before);
    assert_eq!(link_pins(&pins.0), pins_of(&net, &["server", "client"]));
    assert_eq!(
        reachable(&net),
        (true, false),
        "the pinned links must go on"
    );

    // Uninstall starts over: enforcement ends, a fresh load follows.
    assert_eq!(Datapath::uninstall(&pins.0).ok(), Some(true));
    assert_eq!(reachable(&net), (true, true));
    let (fresh, adoption) = Datapath::open_pinned(&object(), &LoadOptions::default(), &pins.0)
        .unwrap_or_else(|e| panic!("open: {e}"));
    assert_eq!(adoption, Adoption::Fresh);
    drop(fresh);

    // Leftovers without links enforce nothing: removed and loaded fresh.
    std::fs::remove_file(pins.0.join("maps/POLICY")).unwrap_or_else(|e| panic!("rm: {e}"));
    let (fresh, adoption) = Datapath::open_pinned(&object(), &LoadOptions::default(), &pins.0)
        .unwrap_or_else(|e| panic!("open: {e}"));
    assert_eq!(adoption, Adoption::Fresh);
    assert_eq!(fresh.attached_interfaces().count(), 0);
    assert!(pins.0.join("maps/POLICY").exists());
}

#[test]
fn a_pinned_node_sockets_link_decides_without_its_datapath_and_a_new_one_adopts_it() {
    let pins = Pins::new();
    let (mut net, _) = Net::up_pinned(&[("client", CLIENT_V4, CLIENT_V6)], &pins.0);
    node_backend::serve_from_the_node(&mut net, true);
    assert!(
        link_pins(&pins.0).contains(&"node-sockets".to_string()),
        "{:?}",
        link_pins(&pins.0)
    );
    net.apply(&node_backend::client_egress_to_node(
        &net,
        node_backend::OTHER_PORT,
    ));
    let denied = |net: &Net| {
        node_backend::to_node_sockets(net, false)
            .iter()
            .all(|r| !r.2)
    };
    assert!(
        denied(&net),
        "the client's egress denies the node as a backend"
    );

    // The agent is gone: the pinned link still decides.
    drop_datapath(&mut net);
    assert!(denied(&net), "without its datapath");

    // A new datapath moves the link to its program, on the same state.
    let (adopted, _) = Datapath::open_pinned(&object(), &LoadOptions::default(), &pins.0)
        .unwrap_or_else(|e| panic!("adopt: {e}"));
    net.datapath = adopted;
    assert!(net.datapath.node_sockets_attached());
    assert!(denied(&net), "adopted");
    net.apply(&node_backend::client_egress_to_node(
        &net,
        node_backend::BACKEND_PORT,
    ));
    let reached: Vec<bool> = node_backend::to_node_sockets(&net, false)
        .iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(reached, [true; 4], "the adopted link follows the new state");
    let sockets_pins = link_pins(&pins.0)
        .iter()
        .filter(|name| *name == "node-sockets")
        .count();
    assert_eq!(sockets_pins, 1);

    // Detached, it decides nothing and its pin is gone.
    net.apply(&node_backend::client_egress_to_node(
        &net,
        node_backend::OTHER_PORT,
    ));
    net.datapath
        .detach_node_sockets()
        .unwrap_or_else(|e| panic!("detach: {e}"));
    assert!(!link_pins(&pins.0).contains(&"node-sockets".to_string()));
    let reached: Vec<bool> = node_backend::to_node_sockets(&net, false)
        .iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(reached, [true; 4], "nothing decides at the node's sockets");
}

/// A host prefix (/32) in the pinned `PEERS_V4` trie, which this build keeps in
/// the `PEER_HOSTS_V4` hash and would never remove from the trie, is refused at
/// adoption rather than left classifying its address for good.
#[test]
fn a_host_prefix_in_the_pinned_peer_trie_is_refused() {
    use aya::maps::{lpm_trie::Key, LpmTrie, MapData};
    use policy_common::peer::{PeerClass, PeerKeyV4, PEER_PREFIX_BANK};

    let pins = Pins::new();
    let (mut net, _) = Net::up_pinned(&PODS[..2], &pins.0);
    net.apply(&server_admits(&net, 80));
    drop_datapath(&mut net);

    let map = MapData::from_pin(pins.0.join("maps/PEERS_V4"))
        .unwrap_or_else(|e| panic!("open PEERS_V4: {e}"));
    let mut trie: LpmTrie<MapData, PeerKeyV4, PeerClass> =
        LpmTrie::try_from(aya::maps::Map::LpmTrie(map)).unwrap_or_else(|e| panic!("{e}"));
    let key = PeerKeyV4 {
        bank: 0,
        addr: [10, 9, 9, 9],
    };
    trie.insert(
        &Key::new(PEER_PREFIX_BANK + 32, key),
        PeerClass::default(),
        0,
    )
    .unwrap_or_else(|e| panic!("insert: {e}"));
    drop(trie);

    match Datapath::open_pinned(&object(), &LoadOptions::default(), &pins.0) {
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.contains("PEERS_V4") && message.contains("host prefix"),
                "{message}"
            );
        }
        Ok((_, adoption)) => panic!("a host prefix in the trie was adopted: {adoption:?}"),
    }
}
