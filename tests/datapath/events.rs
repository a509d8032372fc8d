//! Verdict events (`EVENTS`) on `BPF_PROG_TEST_RUN` frames, read back through
//! `EventReader` as `policy-agent flows` reads them: what a drop, a would-drop and
//! (when asked for) an allow carry, which packets report nothing, the per-CPU and
//! per-interface rate limits and the ring-full counter, and a reader on a pinned
//! ring buffer.
//!
//! Every test silences the namespaces first (`Net::quiet`): only its own frames
//! move counters and emit events.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use nix::{
    sched::{sched_setaffinity, CpuSet},
    sys::statfs::{statfs, BPF_FS_MAGIC},
    unistd::Pid,
};
use policy_agent::{
    dataplane::{BenchProgram, EventReader, EventVerdict, Hook, RuleName, VerdictRecord},
    policy::tables::{Direction, RuleVerdict},
};
use policy_common::config::{Config, CONFIG_FLAG_ALLOW_EVENTS};

use super::{
    addr,
    frames::{self, UDP},
    net::Net,
    pods::{
        ack, server_admits_port_80, server_and_client, syn, udp, CLIENT_ID, CLIENT_V4, CLIENT_V6,
        FAMILIES, SERVER_ID, SERVER_V4, SERVER_V6,
    },
    tables::Tables,
};

/// The defaults without a per-interface limit, for tests of the per-CPU one.
const UNLIMITED_PER_ENDPOINT: Config = Config {
    events_per_endpoint_per_second: u32::MAX,
    events_per_endpoint_burst: 1_000_000,
    ..Config::DEFAULT
};

/// Writes `config` into the datapath's `CONFIG`.
fn configure(net: &mut Net, config: Config) {
    net.datapath
        .set_config(&config)
        .unwrap_or_else(|e| panic!("set config: {e}"));
}

/// Runs `frame` through `hook` of `pod` `repeat` times in one test run, on CPU 0
/// (so every run draws on one CPU's token bucket); whether the last run passed.
fn repeat_on_cpu0(net: &mut Net, hook: Hook, pod: &str, frame: &[u8], repeat: u32) -> bool {
    let ifindex = net.ifindex(pod);
    let node = net.node.clone();
    let datapath = &mut net.datapath;
    Net::in_ns(&node, || {
        let mut cpus = CpuSet::new();
        cpus.set(0).unwrap_or_else(|e| panic!("cpu set: {e}"));
        sched_setaffinity(Pid::from_raw(0), &cpus).unwrap_or_else(|e| panic!("pin to CPU 0: {e}"));
        datapath.bench_run(BenchProgram::Hook(hook), ifindex, frame, repeat)
    })
    .unwrap_or_else(|e| panic!("test run: {e}"))
    .passed
}

/// A side counter's value.
fn side_counter(net: &mut Net, name: &str) -> u64 {
    net.stats().get(name)
}

/// What an event must say about a frame, the fields a test cannot predict
/// (timestamp) taken from `got`.
#[expect(clippy::too_many_arguments, reason = "one argument per event field")]
fn expected(
    got: &VerdictRecord,
    ifindex: u32,
    endpoint_id: u32,
    direction: Direction,
    verdict: EventVerdict,
    reason: &'static str,
    source: (IpAddr, u16),
    destination: (IpAddr, u16),
    rule_slot: Option<u32>,
    frame: &[u8],
) -> VerdictRecord {
    // The IPv4 protocol or IPv6 next header byte (the frames carry no extensions).
    let protocol = frame[if frame[12] == 0x08 { 14 + 9 } else { 14 + 6 }];
    VerdictRecord {
        timestamp_ns: got.timestamp_ns,
        ifindex,
        endpoint_id,
        direction,
        verdict,
        reason,
        source,
        destination,
        protocol,
        rule_slot,
        packet_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
    }
}

#[test]
fn a_drop_is_reported_with_its_tuple_direction_endpoint_and_reason() {
    let mut net = server_and_client();
    net.apply(&server_admits_port_80(&net).build());
    let mut reader = net.event_reader();
    let (server_if, client_if) = (net.ifindex("server"), net.ifindex("client"));
    let mut sent = Vec::new();
    for (client, server) in FAMILIES {
        // Denied by policy at the server's ingress; allowed (no allow events asked
        // for) on port 80; spoofed at the client's egress.
        let denied = syn(client, server, 40000, 81);
        assert!(!net.run(Hook::PodIngress, "server", 0, &denied).passed);
        let allowed = syn(client, server, 40001, 80);
        assert!(net.run(Hook::PodIngress, "server", 0, &allowed).passed);
        let spoofed = syn(server, client, 40002, 22);
        assert!(!net.run(Hook::PodEgress, "client", 0, &spoofed).passed);
        sent.push((client, server, denied, spoofed));
    }
    let got = reader.drain();
    assert_eq!(got.len(), 4, "two drops per family: {got:#?}");
    for (i, (client, server, denied, spoofed)) in sent.iter().enumerate() {
        let (drop, spoof) = (&got[2 * i], &got[2 * i + 1]);
        assert!(drop.timestamp_ns > 0, "{drop:?}");
        assert_eq!(
            *drop,
            expected(
                drop,
                server_if,
                SERVER_ID,
                Direction::Ingress,
                EventVerdict::Dropped,
                "drop_policy",
                (addr(client), 40000),
                (addr(server), 81),
                None,
                denied,
            )
        );
        assert_eq!(
            *spoof,
            expected(
                spoof,
                client_if,
                CLIENT_ID,
                Direction::Egress,
                EventVerdict::Dropped,
                "drop_spoofed_source",
                (addr(server), 40002),
                (addr(client), 22),
                None,
                spoofed,
            )
        );
    }
    assert!(
        got.windows(2)
            .all(|w| w[0].timestamp_ns <= w[1].timestamp_ns),
        "oldest first: {got:#?}"
    );
}

#[test]
fn a_drop_before_parsing_is_reported_with_what_was_known() {
    let mut net = server_and_client();
    let mut reader = net.event_reader();
    let server_if = net.ifindex("server");
    let unspecified = |v6: bool| {
        if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    };
    for (client, server, v6) in [(CLIENT_V4, SERVER_V4, false), (CLIENT_V6, SERVER_V6, true)] {
        // The server's interface is no endpoint yet: no endpoint id, not parsed.
        net.apply(&Tables::new(&net).unregistered("server").build());
        let frame = syn(client, server, 40100, 80);
        assert!(!net.run(Hook::PodIngress, "server", 0, &frame).passed);
        // A known endpoint, a header that does not parse (version 5).
        net.apply(&server_admits_port_80(&net).build());
        let mut malformed = syn(client, server, 40101, 80);
        malformed[14] = 0x55;
        assert!(!net.run(Hook::PodIngress, "server", 0, &malformed).passed);
        let got = reader.drain();
        let want: Vec<_> = [
            (0, "drop_unknown_endpoint", &frame),
            (SERVER_ID, "drop_malformed", &malformed),
        ]
        .into_iter()
        .zip(&got)
        .map(|((endpoint_id, reason, frame), got)| VerdictRecord {
            protocol: 0,
            ..expected(
                got,
                server_if,
                endpoint_id,
                Direction::Ingress,
                EventVerdict::Dropped,
                reason,
                (unspecified(v6), 0),
                (unspecified(v6), 0),
                None,
                frame,
            )
        })
        .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn allows_are_reported_only_when_asked_for_and_only_for_the_packet_deciding_a_flow() {
    let mut net = server_and_client();
    let tables = server_admits_port_80(&net)
        .allow_port("server", Direction::Ingress, 3, UDP, 53)
        .build();
    net.apply(&tables);
    let mut reader = net.event_reader();
    let (server_if, client_if) = (net.ifindex("server"), net.ifindex("client"));
    // Without the flag: an allow by a rule and an unisolated allow report nothing.
    let quiet_syn = syn(CLIENT_V4, SERVER_V4, 41000, 80);
    assert!(net.run(Hook::PodEgress, "client", 0, &quiet_syn).passed);
    assert!(net.run(Hook::PodIngress, "server", 0, &quiet_syn).passed);
    assert_eq!(reader.drain(), vec![], "no allow events without the flag");

    configure(
        &mut net,
        Config {
            flags: CONFIG_FLAG_ALLOW_EVENTS,
            ..Config::DEFAULT
        },
    );
    for (client, server) in FAMILIES {
        let (c, s) = (addr(client), addr(server));
        let opening = syn(client, server, 41001, 80);
        let query = udp(client, server, 41002, 53);
        // Deciding packets: the client's unisolated egress, the server's ingress by
        // rule 0 (TCP 80) and by rule 1 (UDP 53).
        assert!(net.run(Hook::PodEgress, "client", 0, &opening).passed);
        assert!(net.run(Hook::PodIngress, "server", 0, &opening).passed);
        assert!(net.run(Hook::PodIngress, "server", 0, &query).passed);
        // Conntrack hits: the flow's next packet and the server's reply.
        let later = ack(client, server, 41001, 80);
        assert!(net.run(Hook::PodEgress, "client", 0, &later).passed);
        assert!(net.run(Hook::PodIngress, "server", 0, &later).passed);
        let reply = ack(server, client, 80, 41001);
        assert!(net.run(Hook::PodEgress, "server", 0, &reply).passed);
        assert!(net.run(Hook::PodIngress, "client", 0, &reply).passed);
        // Not IP: never reported.
        let arp = frames::arp(
            Ipv4Addr::new(10, 2, 0, 5),
            Ipv4Addr::new(10, 1, 0, 10),
            false,
        );
        assert!(net.run(Hook::PodEgress, "client", 0, &arp).passed);

        let got = reader.drain();
        assert_eq!(got.len(), 3, "three deciding packets: {got:#?}");
        // The slot the agent gave the rule: what the event names it by.
        let slots = net.datapath.rule_slots();
        let policy = tables.policy_names[0].clone();
        let rule = |rule_index| {
            let name = RuleName {
                policy: policy.clone(),
                direction: Direction::Ingress,
                rule_index,
                verdict: RuleVerdict::Allowed,
            };
            let slot = slots.iter().find(|(_, rule)| **rule == name);
            Some(
                *slot
                    .unwrap_or_else(|| panic!("no slot for {name:?}: {slots:?}"))
                    .0,
            )
        };
        let want = [
            (
                client_if,
                CLIENT_ID,
                Direction::Egress,
                "allow_unisolated",
                (c, 41001),
                (s, 80),
                None,
                &opening,
            ),
            (
                server_if,
                SERVER_ID,
                Direction::Ingress,
                "allow_policy",
                (c, 41001),
                (s, 80),
                rule(0),
                &opening,
            ),
            (
                server_if,
                SERVER_ID,
                Direction::Ingress,
                "allow_policy",
                (c, 41002),
                (s, 53),
                rule(1),
                &query,
            ),
        ];
        for (got, (ifindex, id, direction, reason, from, to, rule, frame)) in got.iter().zip(want) {
            assert_eq!(
                *got,
                expected(
                    got,
                    ifindex,
                    id,
                    direction,
                    EventVerdict::Allowed,
                    reason,
                    from,
                    to,
                    rule,
                    frame
                )
            );
        }
    }
}

#[test]
fn the_rate_limit_lets_a_burst_through_then_counts_what_it_holds_back() {
    let mut net = server_and_client();
    net.apply(&server_admits_port_80(&net).build());
    let mut reader = net.event_reader();
    let denied = syn(CLIENT_V4, SERVER_V4, 42000, 81);
    // No refill: each CPU reports one burst of five, ever.
    configure(
        &mut net,
        Config {
            events_per_second: 0,
            events_burst: 5,
            ..UNLIMITED_PER_ENDPOINT
        },
    );
    let limited = side_counter(&mut net, "events_rate_limited");
    let dropped = net.stats().get("drop_policy");
    assert!(!repeat_on_cpu0(
        &mut net,
        Hook::PodIngress,
        "server",
        &denied,
        20
    ));
    assert_eq!(reader.drain().len(), 5, "the burst");
    assert_eq!(side_counter(&mut net, "events_rate_limited"), limited + 15);
    assert!(!repeat_on_cpu0(
        &mut net,
        Hook::PodIngress,
        "server",
        &denied,
        10
    ));
    assert_eq!(reader.drain().len(), 0, "rate 0: nothing refills");
    assert_eq!(side_counter(&mut net, "events_rate_limited"), limited + 25);

    // 10 per second refill the bucket within 600 ms, but only up to the burst;
    // the 20 packets after it take far less than the 100 ms one more token needs
    // (at 1,000 per second a slow run of them earned a sixth).
    configure(
        &mut net,
        Config {
            events_per_second: 10,
            events_burst: 5,
            ..UNLIMITED_PER_ENDPOINT
        },
    );
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(!repeat_on_cpu0(
        &mut net,
        Hook::PodIngress,
        "server",
        &denied,
        20
    ));
    let got = reader.drain();
    assert_eq!(got.len(), 5, "refilled to the burst: {got:#?}");
    assert_eq!(side_counter(&mut net, "events_rate_limited"), limited + 40);
    assert_eq!(side_counter(&mut net, "events_ring_full"), 0);
    assert_eq!(
        net.stats().get("drop_policy"),
        dropped + 50,
        "every packet was still dropped"
    );
}

#[test]
fn one_pod_flooding_drops_cannot_hide_another_pods_single_drop() {
    let mut net = server_and_client();
    net.apply(&server_admits_port_80(&net).build());
    let mut reader = net.event_reader();
    // No refill: each interface reports at most 5 per CPU, all together 10.
    configure(
        &mut net,
        Config {
            events_per_second: 0,
            events_burst: 10,
            events_per_endpoint_per_second: 0,
            events_per_endpoint_burst: 5,
            ..Config::DEFAULT
        },
    );
    let (endpoint_limited, rate_limited) = (
        side_counter(&mut net, "events_endpoint_limited"),
        side_counter(&mut net, "events_rate_limited"),
    );
    // The client floods: 100 datagrams from the server's address, each dropped as
    // spoofed at its egress hook.
    let spoofed = udp(SERVER_V4, CLIENT_V4, 44000, 53);
    assert!(!repeat_on_cpu0(
        &mut net,
        Hook::PodEgress,
        "client",
        &spoofed,
        100
    ));
    // The server drops one SYN on the same CPU, after the flood.
    let denied = syn(CLIENT_V4, SERVER_V4, 44001, 81);
    assert!(!repeat_on_cpu0(
        &mut net,
        Hook::PodIngress,
        "server",
        &denied,
        1
    ));
    let got = reader.drain();
    let (server_if, client_if) = (net.ifindex("server"), net.ifindex("client"));
    let of = |ifindex| got.iter().filter(|e| e.ifindex == ifindex).count();
    assert_eq!(
        of(server_if),
        1,
        "the other pod's drop is still reported: {got:#?}"
    );
    assert_eq!(of(client_if), 5, "the flooding pod's own burst: {got:#?}");
    assert_eq!(
        side_counter(&mut net, "events_endpoint_limited"),
        endpoint_limited + 95
    );
    assert_eq!(side_counter(&mut net, "events_rate_limited"), rate_limited);
}

#[test]
fn events_the_full_ring_cannot_take_are_counted_and_the_ring_recovers_once_read() {
    let mut net = server_and_client();
    net.apply(&server_admits_port_80(&net).build());
    let mut reader = net.event_reader();
    // A limit that never holds anything back.
    configure(
        &mut net,
        Config {
            events_per_second: u32::MAX,
            events_burst: 1_000_000,
            ..UNLIMITED_PER_ENDPOINT
        },
    );
    let denied = syn(CLIENT_V4, SERVER_V4, 43000, 81);
    // More drops than the ring holds (1 MiB of 80-byte records), nobody reading.
    const SENT: u64 = 20_000;
    assert!(!repeat_on_cpu0(
        &mut net,
        Hook::PodIngress,
        "server",
        &denied,
        SENT as u32
    ));
    let lost = side_counter(&mut net, "events_ring_full");
    let read = reader.drain().len() as u64;
    assert!(lost > 0 && read > 10_000, "read {read}, lost {lost}");
    assert_eq!(read + lost, SENT, "every event was read or counted lost");
    assert_eq!(side_counter(&mut net, "events_rate_limited"), 0);
    // Read, the ring takes events again.
    assert!(!net.run(Hook::PodIngress, "server", 0, &denied).passed);
    assert_eq!(reader.drain().len(), 1);
    assert_eq!(side_counter(&mut net, "events_ring_full"), lost);
}

/// A directory on a bpffs for one test's pins, removed (and unmounted, if the test
/// mounted it) when dropped: `/sys/fs/bpf/<unique>` when bpffs is mounted there,
/// else a private bpffs mounted on a temporary directory (the host's /sys/fs/bpf
/// is left as it is).
struct PinDir {
    path: PathBuf,
    mounted: bool,
}

impl PinDir {
    fn new(name: &str) -> Self {
        let unique = format!("podwall-test-{}-{name}", std::process::id());
        let on_sys = Path::new("/sys/fs/bpf");
        let sys_is_bpffs = statfs(on_sys).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC);
        let (path, mounted) = if sys_is_bpffs {
            (on_sys.join(&unique), false)
        } else {
            (std::env::temp_dir().join(&unique), true)
        };
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let dir = Self { path, mounted };
        if mounted {
            let status = Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(&dir.path)
                .status()
                .unwrap_or_else(|e| panic!("mount: {e}"));
            assert!(status.success(), "mount -t bpf on {}", dir.path.display());
        }
        dir
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).status();
        }
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!("could not remove {}: {error}", self.path.display());
        }
    }
}

#[test]
fn a_reader_on_the_pinned_ring_sees_the_datapaths_events() {
    let mut net = server_and_client();
    net.apply(&server_admits_port_80(&net).build());
    let dir = PinDir::new("events");
    let pin = dir.path.join("EVENTS");
    net.datapath
        .pin_events(&pin)
        .unwrap_or_else(|e| panic!("pin: {e}"));
    let mut reader = EventReader::open_pinned(&pin).unwrap_or_else(|e| panic!("open: {e}"));
    reader.drain();
    let denied = syn(CLIENT_V6, SERVER_V6, 44000, 81);
    assert!(!net.run(Hook::PodIngress, "server", 0, &denied).passed);
    reader
        .wait(Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("wait: {e}"));
    let got = reader.drain();
    let server_if = net.ifindex("server");
    match got.as_slice() {
        [event] => assert_eq!(
            *event,
            expected(
                event,
                server_if,
                SERVER_ID,
                Direction::Ingress,
                EventVerdict::Dropped,
                "drop_policy",
                (addr(CLIENT_V6), 44000),
                (addr(SERVER_V6), 81),
                None,
                &denied,
            )
        ),
        other => panic!("one drop through the pin, got {other:#?}"),
    }
    std::fs::remove_file(&pin).unwrap_or_else(|e| panic!("unpin: {e}"));
}
