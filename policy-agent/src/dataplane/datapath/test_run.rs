//! Runs a classifier on a hand-made frame with `BPF_PROG_TEST_RUN`: the verdict and
//! mark the program gives it, with every map (conntrack, counters) updated as for a
//! real packet, but nothing sent anywhere. How tests reach cases real traffic cannot
//! produce on demand (extension-header chains, fragments, forged marks), and how the
//! benchmark times the datapath (`bench_run`: the kernel repeats the program and
//! reports the average duration).

use std::time::Duration;

use aya::{TestRun, TestRunOptions};

use super::{links::classifier, Datapath};
use crate::dataplane::{
    programs::{
        BENCH_FLOOR_PROGRAM, NODE_ENTRY_PROGRAM, NODE_EXIT_PROGRAM, POD_EGRESS_PROGRAM,
        POD_INGRESS_PROGRAM,
    },
    DataplaneError, InterfaceIndex,
};

/// Size of the kernel's `struct __sk_buff` (the test run's context).
const SKB_CTX_LEN: usize = 192;
/// Offset of `__sk_buff.mark`.
const SKB_MARK: usize = 8;
/// Offset of `__sk_buff.ifindex` (the test run puts the frame on that device).
const SKB_IFINDEX: usize = 40;
/// `TC_ACT_SHOT` as the program returns it.
const TC_ACT_SHOT: u32 = 2;

/// Which classifier to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// The pod's ingress (TC egress of its host-side veth).
    PodIngress,
    /// The pod's egress (TC ingress of its host-side veth).
    PodEgress,
    /// A node exit's way out (`node_exit`, TC egress of an uplink or tunnel device).
    NodeExit,
    /// A node exit's way in (`node_entry`, TC ingress there).
    NodeEntry,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::PodIngress => POD_INGRESS_PROGRAM,
            Hook::PodEgress => POD_EGRESS_PROGRAM,
            Hook::NodeExit => NODE_EXIT_PROGRAM,
            Hook::NodeEntry => NODE_ENTRY_PROGRAM,
        }
    }
}

/// A classifier `Datapath::bench_run` can time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchProgram {
    /// `bench_floor`: returns at once, touches neither packet nor maps. Needs
    /// `LoadOptions::bench_floor`.
    Floor,
    /// One of podwall's classifiers.
    Hook(Hook),
}

impl BenchProgram {
    fn program(self) -> &'static str {
        match self {
            BenchProgram::Floor => BENCH_FLOOR_PROGRAM,
            BenchProgram::Hook(hook) => hook.program(),
        }
    }
}

/// What a classifier did with a test frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program let the frame on (anything but `TC_ACT_SHOT`).
    pub passed: bool,
    /// `skb->mark` after the program ran.
    pub mark: u32,
}

/// What the kernel reported for a frame run `repeat` times in one test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchRun {
    /// The last run let the frame on (anything but `TC_ACT_SHOT`).
    pub passed: bool,
    /// The kernel's average time per run: whole nanoseconds, rounded down.
    pub per_run: Duration,
}

/// One test run as the kernel reported it.
struct RunResult {
    passed: bool,
    mark: u32,
    per_run: Duration,
}

impl Datapath {
    /// The debug records waiting in the object's ring buffer, for a datapath loaded
    /// without the kernel debug channel, which nothing drains: what the classifiers
    /// wrote although the channel was off (nothing, unless the switch failed).
    /// Takes the ring buffer, so it can be read once.
    pub fn kernel_log_backlog(&mut self) -> Result<Vec<String>, DataplaneError> {
        if self.kernel_log.is_some() {
            return Err(DataplaneError::KernelLog {
                what: "loaded with the channel on: its records are drained into tracing",
                source: None,
            });
        }
        crate::dataplane::kernel_log::backlog(&mut self.ebpf)
    }

    /// The size in bytes of the `hook` classifier as the kernel runs it: its
    /// instructions after the verifier removed the dead ones (those behind a
    /// read-only flag that is off, such as the kernel debug channel's).
    pub fn translated_len(&mut self, hook: Hook) -> Result<u32, DataplaneError> {
        let program = hook.program();
        let info =
            classifier(&mut self.ebpf, program)?
                .info()
                .map_err(|e| DataplaneError::Program {
                    program,
                    what: "reading its info".into(),
                    source: Some(Box::new(e)),
                })?;
        info.size_translated().ok_or(DataplaneError::Program {
            program,
            what: "the kernel reports no translated size".into(),
            source: None,
        })
    }

    /// Runs the `hook` classifier on `frame` (Ethernet header first) as if it crossed
    /// interface `ifindex` carrying `mark`. The interface must exist in the calling
    /// thread's network namespace (the kernel attaches the test skb to it).
    pub fn test_run(
        &mut self,
        hook: Hook,
        ifindex: InterfaceIndex,
        mark: u32,
        frame: &[u8],
    ) -> Result<TestRunOutcome, DataplaneError> {
        let run = self.run(hook.program(), ifindex, mark, frame, 1)?;
        Ok(TestRunOutcome {
            passed: run.passed,
            mark: run.mark,
        })
    }

    /// Runs `program` on `frame` (no mark) `repeat` times in one `BPF_PROG_TEST_RUN`
    /// on the calling thread's CPU, as `test_run` does once; every run changes the
    /// maps as a real packet would. Returns the kernel's average duration per run.
    pub fn bench_run(
        &mut self,
        program: BenchProgram,
        ifindex: InterfaceIndex,
        frame: &[u8],
        repeat: u32,
    ) -> Result<BenchRun, DataplaneError> {
        let run = self.run(program.program(), ifindex, 0, frame, repeat.max(1))?;
        Ok(BenchRun {
            passed: run.passed,
            per_run: run.per_run,
        })
    }

    /// The one `BPF_PROG_TEST_RUN` call behind `test_run` and `bench_run`.
    fn run(
        &mut self,
        name: &'static str,
        ifindex: InterfaceIndex,
        mark: u32,
        frame: &[u8],
        repeat: u32,
    ) -> Result<RunResult, DataplaneError> {
        let mut ctx_in = [0u8; SKB_CTX_LEN];
        ctx_in[SKB_MARK..SKB_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
        ctx_in[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        let mut ctx_out = [0u8; SKB_CTX_LEN];
        let result = classifier(&mut self.ebpf, name)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| DataplaneError::Program {
                program: name,
                what: "test run".into(),
                source: Some(Box::new(e)),
            })?;
        let mut mark_out = [0u8; 4];
        mark_out.copy_from_slice(&ctx_out[SKB_MARK..SKB_MARK + 4]);
        Ok(RunResult {
            passed: result.return_value != TC_ACT_SHOT,
            mark: u32::from_ne_bytes(mark_out),
            per_run: result.duration,
        })
    }
}
