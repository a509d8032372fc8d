//! Shared helpers of the integration tests: privilege checks that fail loudly, the
//! stand-in API server (`apiserver`), the agent as a child process (`agent`) and
//! frames a pod sends on a raw socket (`forge`, `packet`), and another node behind
//! an uplink (`remote`).
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

pub mod agent;
/// The stand-in API server, a workspace crate of its own (the agent benchmark
/// serves its cluster from it too).
#[allow(
    unused_imports,
    reason = "each test binary uses a different part of the support code"
)]
pub use stand_in_apiserver as apiserver;
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

/// Starts `command` with stdout piped and each line of its stderr sent to the
/// receiver as it comes (how the tests follow `policy-agent flows`).
pub fn spawn_reading_stderr(
    mut command: std::process::Command,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    let (send, receive) = std::sync::mpsc::channel();
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = send.send(line);
            }
        });
    }
    (child, receive)
}

/// Every example of `deploy/examples`, in name order: its directory, and its
/// files in the order a tour applies them (`cluster.yaml`, then the sorted
/// steps), as `e2e::examples::list` finds them.
pub fn examples() -> Vec<(std::path::PathBuf, Vec<std::path::PathBuf>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let examples: Vec<_> = policy_agent::e2e::examples::list(&root)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(name, files)| (root.join(name), files))
        .collect();
    assert!(examples.len() >= 3, "examples under {}", root.display());
    examples
}
