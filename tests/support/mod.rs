//! Shared helpers of the integration tests: privilege checks that fail loudly, the
//! stand-in API server (`apiserver`), the agent as a child process (`agent`) and
//! frames a pod sends on a raw socket (`forge`, `packet`), and another node behind
//! an uplink (`remote`).
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

pub mod agent;
pub mod apiserver;
pub mod forge;
pub mod packet;
pub mod remote;

/// Fails the test with a clear message when it cannot touch the kernel: the lab
/// needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) and a built eBPF object.
pub fn require_root_and_bpf() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs real packets through BPF in network namespaces and needs root \
         (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); run `cargo xtask test` as root"
    );
    if let Err(error) = policy_agent::dataplane::object::find() {
        panic!("this test needs the eBPF object: {error}");
    }
}
