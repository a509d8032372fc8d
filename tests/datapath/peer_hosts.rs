//! Peer host prefixes in their hash (`PEER_HOSTS_V4`/`PEER_HOSTS_V6`), looked up
//! before the family's trie, which holds only the shorter prefixes: a pod peer is
//! matched by its host entry even inside a CIDR of another class, an address no
//! host entry names is matched in the trie, and an in-place change of a pod's
//! entries (`Datapath::update_peers`) writes the hash and moves the generation.
//! `BPF_PROG_TEST_RUN` frames at the server's ingress.

use ipnet::IpNet;
use policy_agent::{
    dataplane::Hook,
    policy::tables::{DatapathTables, Direction},
};
use policy_common::maps;

use super::{
    frames::TCP,
    net::Net,
    pods::{self, syn, CLIENT_V4, CLIENT_V6, PODS, SERVER_V4, SERVER_V6},
    support,
    tables::Tables,
};

/// The port the server admits.
const PORT: u16 = 7200;
/// Class of the client's own addresses, admitted.
const POD_CLASS: u32 = 3;
/// Class of ipBlock-style ranges the server admits too.
const CIDR_CLASS: u32 = 4;
/// Class of ranges around the client's addresses, not admitted.
const COVERING_CLASS: u32 = 5;
/// An address in an admitted range (`CIDR_CLASS`) of each family.
const IN_CIDR: [&str; 2] = ["198.51.100.7", "2001:db8::7"];
/// An address beside the client's in its covering range (`COVERING_CLASS`).
const BESIDE_CLIENT: [&str; 2] = ["10.2.9.9", "fd00:2::99"];

/// The server isolated for ingress, admitting `POD_CLASS` and `CIDR_CLASS` on
/// `PORT`; ranges covering the client's addresses in `COVERING_CLASS`; and, when
/// `client_listed`, the client's own addresses (host prefixes) in `POD_CLASS`.
fn tables(net: &Net, client_listed: bool) -> DatapathTables {
    let mut tables = Tables::new(net)
        .isolate("server", true, false)
        .prefix("10.2.0.0/16", COVERING_CLASS)
        .prefix("fd00:2::/32", COVERING_CLASS)
        .prefix("198.51.100.0/24", CIDR_CLASS)
        .prefix("2001:db8::/32", CIDR_CLASS);
    if client_listed {
        tables = tables.pod_class("client", POD_CLASS);
    }
    tables
        .allow_port("server", Direction::Ingress, POD_CLASS, TCP, PORT)
        .allow_port("server", Direction::Ingress, CIDR_CLASS, TCP, PORT)
        .build()
}

/// Whether a SYN from `from` to the server's `PORT` (of `from`'s family) passes
/// the server's ingress: a new flow, decided by its peer's class each time.
fn admitted(net: &mut Net, from: &str) -> bool {
    let to = if from.contains(':') {
        SERVER_V6
    } else {
        SERVER_V4
    };
    let frame = syn(from, to, pods::fresh_sport(), PORT);
    net.run(Hook::PodIngress, "server", 0, &frame).passed
}

/// Prefixes of each kernel peer map, both banks together, in the order
/// `PEERS_V4`, `PEER_HOSTS_V4`, `PEERS_V6`, `PEER_HOSTS_V6`.
fn in_kernel(net: &Net) -> [usize; 4] {
    let entries = net
        .datapath
        .peer_map_entries()
        .unwrap_or_else(|e| panic!("peer map entries: {e}"));
    let names = entries.map(|(name, _)| name);
    assert_eq!(
        names,
        [
            maps::PEERS_V4.name,
            maps::PEER_HOSTS_V4.name,
            maps::PEERS_V6.name,
            maps::PEER_HOSTS_V6.name
        ]
    );
    entries.map(|(_, count)| count)
}

/// Host prefixes (/32, /128) and shorter ones per family in `tables`, in
/// `in_kernel`'s order.
fn split(tables: &DatapathTables) -> [usize; 4] {
    let mut counts = [0; 4];
    for net in tables.peers.keys() {
        let at = match net {
            IpNet::V4(net) if net.prefix_len() == 32 => 1,
            IpNet::V4(_) => 0,
            IpNet::V6(net) if net.prefix_len() == 128 => 3,
            IpNet::V6(_) => 2,
        };
        counts[at] += 1;
    }
    counts
}

/// The client's host prefixes.
fn client_prefixes(net: &Net) -> Vec<IpNet> {
    let client = net.pod("client");
    vec![
        IpNet::from(std::net::IpAddr::from(client.v4)),
        IpNet::from(std::net::IpAddr::from(client.v6)),
    ]
}

#[test]
fn a_pod_peer_is_matched_by_its_host_entry_and_other_addresses_in_the_trie() {
    support::require_root_and_bpf();
    let mut net = Net::up(&PODS[..2]);
    let listed = tables(&net, true);
    net.apply(&listed);
    // One bank written: host prefixes in the hashes only, the rest in the tries.
    let want = split(&listed);
    assert_eq!(want, [2, 1, 2, 1], "the tables as this test means them");
    assert_eq!(in_kernel(&net), want);
    let bank = net.active_in_kernel();
    let banks = net.read_banks();
    assert_eq!(&banks[bank as usize], net.datapath.bank_shadow(bank));

    // The client's host entry, not the range around it that is not admitted (the
    // trie alone would find that range: its /32 and /128 are not there).
    for client in [CLIENT_V4, CLIENT_V6] {
        assert!(
            admitted(&mut net, client),
            "{client}: its host entry's class"
        );
    }
    // No host entry: the trie's longest match decides.
    for (inside, beside) in IN_CIDR.into_iter().zip(BESIDE_CLIENT) {
        assert!(admitted(&mut net, inside), "{inside}: an admitted range");
        assert!(!admitted(&mut net, beside), "{beside}: the covering range");
    }
}

#[test]
fn a_pod_peer_changed_in_place_is_written_to_the_hash_and_re_decides_flows() {
    support::require_root_and_bpf();
    let mut net = Net::up(&PODS[..2]);
    let (listed, unlisted) = (tables(&net, true), tables(&net, false));
    net.apply(&listed);
    let bank = net.active_in_kernel();
    let generation = net.datapath.generation();
    assert_eq!(in_kernel(&net), [2, 1, 2, 1]);

    // The client's host entries leave the hash of the active bank: its address
    // falls back to the range around it, which is not admitted.
    let report = net
        .datapath
        .update_peers(&unlisted, &client_prefixes(&net))
        .unwrap_or_else(|e| panic!("update_peers: {e}"));
    assert_eq!((report.written, report.removed, report.bank), (0, 2, bank));
    assert_eq!(in_kernel(&net), [2, 0, 2, 0]);
    assert_eq!(
        net.datapath.generation(),
        generation + 2,
        "flows decided with the old host entries are re-decided"
    );
    assert_eq!(net.active_in_kernel(), bank, "no flip");
    for client in [CLIENT_V4, CLIENT_V6] {
        assert!(
            !admitted(&mut net, client),
            "{client}: the covering range now"
        );
    }
    for inside in IN_CIDR {
        assert!(
            admitted(&mut net, inside),
            "{inside}: the trie is untouched"
        );
    }

    // And back: the host entries return to the hash, the client is admitted.
    let report = net
        .datapath
        .update_peers(&listed, &client_prefixes(&net))
        .unwrap_or_else(|e| panic!("update_peers: {e}"));
    assert_eq!((report.written, report.removed), (2, 0));
    assert_eq!(in_kernel(&net), [2, 1, 2, 1]);
    assert_eq!(net.datapath.generation(), generation + 4);
    for client in [CLIENT_V4, CLIENT_V6] {
        assert!(admitted(&mut net, client), "{client}: its host entry again");
    }
    let banks = net.read_banks();
    assert_eq!(&banks[bank as usize], net.datapath.bank_shadow(bank));
}
