//! The kernel debug channel on real veths. A pod sends a frame that does not
//! parse (an IPv4 EtherType whose header says version 5): with
//! `LoadOptions::kernel_debug` its drop reaches the agent's log, drained into
//! `tracing` under `KERNEL_LOG_TARGET` with its reason, interface, direction and
//! length; without it the classifier writes no record at all, and runs fewer
//! instructions: the verifier removed the logging code.
//!
//! Every `Net` names its first host veth alike, so records are told apart by the
//! frame's length, which each test makes its own.

use std::{
    fmt::Debug,
    sync::{Mutex, Once},
    time::{Duration, Instant},
};

use policy_agent::dataplane::{self, Datapath, Hook, LoadOptions, KERNEL_LOG_TARGET};
use tracing::{
    field::{Field, Visit},
    Event, Subscriber,
};
use tracing_subscriber::{layer::Context, prelude::*, Layer};

use super::{
    frames,
    net::{Net, HOST_MAC_BYTES},
    support::{self, packet::send_frames},
    tables::Tables,
};

/// Every message logged under `KERNEL_LOG_TARGET` in this test binary.
static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records the messages of `KERNEL_LOG_TARGET` events into `RECORDS`.
struct Capture;

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != KERNEL_LOG_TARGET {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if let Ok(mut records) = RECORDS.lock() {
            records.push(message.0);
        }
    }
}

/// An event's `message` field.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// Makes `Capture` the process's subscriber (once): the drain logs from a thread
/// of its own, which a thread-local subscriber would not see.
fn capture() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        if let Err(error) = tracing::subscriber::set_global_default(subscriber) {
            panic!("installing the capturing subscriber: {error}");
        }
    });
}

/// The kernel records captured so far that end with `suffix`.
fn records_ending(suffix: &str) -> Vec<String> {
    RECORDS
        .lock()
        .map(|records| {
            records
                .iter()
                .filter(|r| r.ends_with(suffix))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A frame from the pod's MAC to the node's of `len` bytes (at least 34): an IPv4
/// EtherType, then a 20-byte header whose version is 5, then zeros.
fn not_ipv4(pod_mac: [u8; 6], len: usize) -> Vec<u8> {
    let mut frame = frames::ethernet(0x0800);
    frame[..6].copy_from_slice(&HOST_MAC_BYTES);
    frame[6..12].copy_from_slice(&pod_mac);
    frame.push(0x55);
    frame.resize(len.max(34), 0);
    frame
}

/// Sends `not_ipv4` of `len` bytes from the only pod of `net` and waits until its
/// drop is counted as `drop_malformed`.
fn send_unparsed(net: &mut Net, len: usize) {
    let (netns, mac) = {
        let pod = net.pod("sender");
        (pod.netns.clone(), pod.mac)
    };
    let before = net.stats().get("drop_malformed");
    send_frames(&netns, "eth0", &[not_ipv4(mac, len)]);
    let deadline = Instant::now() + Duration::from_secs(2);
    while net.stats().get("drop_malformed") == before {
        assert!(
            Instant::now() < deadline,
            "the frame was not dropped as malformed: {:?}",
            net.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn load(kernel_debug: bool) -> LoadOptions {
    LoadOptions {
        kernel_debug,
        ..LoadOptions::default()
    }
}

const SENDER: [(&str, &str, &str); 1] = [("sender", "10.3.0.6", "fd00:3::6")];

#[test]
fn with_the_kernel_debug_channel_on_an_unparsed_frame_from_a_pod_is_logged_with_its_reason() {
    support::require_root_and_bpf();
    capture();
    let mut net = Net::up_with(&SENDER, &load(true));
    assert!(net.datapath.kernel_debug());
    net.apply(&Tables::new(&net).build());
    let ifindex = net.ifindex("sender");
    let len = 41;
    send_unparsed(&mut net, len);
    let expected =
        format!("podwall: dropped drop_malformed (10) ifindex={ifindex} egress len={len}");
    let deadline = Instant::now() + Duration::from_secs(3);
    let suffix = format!(" len={len}");
    loop {
        let found = records_ending(&suffix);
        if !found.is_empty() {
            assert_eq!(found, std::slice::from_ref(&expected));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no kernel record `{expected}` was drained; all: {:?}",
            RECORDS.lock().map(|r| r.clone()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn with_the_kernel_debug_channel_off_no_record_is_written_and_the_logging_code_is_pruned() {
    support::require_root_and_bpf();
    capture();
    let mut net = Net::up_with(&SENDER, &load(false));
    assert!(!net.datapath.kernel_debug());
    net.apply(&Tables::new(&net).build());
    let len = 43;
    send_unparsed(&mut net, len);
    // Nothing drains this datapath's ring buffer: whatever the classifier wrote
    // would still be there.
    let backlog = net
        .datapath
        .kernel_log_backlog()
        .unwrap_or_else(|e| panic!("reading the ring buffer: {e}"));
    assert_eq!(backlog, Vec::<String>::new());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(records_ending(&format!(" len={len}")), Vec::<String>::new());

    // The same object with the channel on runs more instructions: with it off,
    // the verifier dropped the logging branches and the subprogram behind them.
    let object = dataplane::object::find().unwrap_or_else(|e| panic!("eBPF object: {e}"));
    let mut on = Datapath::load_with(&object, &load(true))
        .unwrap_or_else(|e| panic!("load with the channel on: {e}"));
    for hook in [Hook::PodEgress, Hook::PodIngress, Hook::NodeExit] {
        let size = |datapath: &mut Datapath| {
            datapath
                .translated_len(hook)
                .unwrap_or_else(|e| panic!("{hook:?}: {e}"))
        };
        let (off_len, on_len) = (size(&mut net.datapath), size(&mut on));
        assert!(
            off_len < on_len,
            "{hook:?}: {off_len} translated bytes with the channel off, {on_len} with it on"
        );
    }
}
