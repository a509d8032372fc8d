//! Runs a classifier on a hand-made frame with `BPF_PROG_TEST_RUN`: the verdict and
//! mark the program gives it, with every map (conntrack, counters) updated as for a
//! real packet, but nothing sent anywhere. How tests reach cases real traffic cannot
//! produce on demand (extension-header chains, fragments, forged marks).

use aya::{TestRun, TestRunOptions};

use super::{
    datapath::{classifier, POD_EGRESS_PROGRAM, POD_INGRESS_PROGRAM},
    Datapath, DataplaneError, InterfaceIndex,
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
}

/// What a classifier did with a test frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program let the frame on (anything but `TC_ACT_SHOT`).
    pub passed: bool,
    /// `skb->mark` after the program ran.
    pub mark: u32,
}

impl Datapath {
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
        let name = match hook {
            Hook::PodIngress => POD_INGRESS_PROGRAM,
            Hook::PodEgress => POD_EGRESS_PROGRAM,
        };
        let mut ctx_in = [0u8; SKB_CTX_LEN];
        ctx_in[SKB_MARK..SKB_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
        ctx_in[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        let mut ctx_out = [0u8; SKB_CTX_LEN];
        let result = classifier(&mut self.ebpf, name)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::default()
            })
            .map_err(|e| DataplaneError::Program {
                program: name,
                message: match std::error::Error::source(&e) {
                    Some(cause) => format!("test run: {e}: {cause}"),
                    None => format!("test run: {e}"),
                },
            })?;
        let mut mark_out = [0u8; 4];
        mark_out.copy_from_slice(&ctx_out[SKB_MARK..SKB_MARK + 4]);
        Ok(TestRunOutcome {
            passed: result.return_value != TC_ACT_SHOT,
            mark: u32::from_ne_bytes(mark_out),
        })
    }
}
