//! podwall's node agent as a library: the CLI in `main.rs` is a thin layer over it.
//!
//! Data flows one way: `source` (manifests, or the API server's watch) -> `model` ->
//! `policy` (pure: evaluator and compiler) -> `dataplane` (the only code that touches
//! BPF). `model` and `policy` are the `policy-engine` crate, re-exported here: a
//! crate that depends on no I/O, kernel or async library. `lab` builds a local mini-cluster from network namespaces and wires the
//! stages together; `cli` holds one module per subcommand. `bench` times the
//! datapath with `BPF_PROG_TEST_RUN` (`cargo xtask bench datapath`) and the agent's
//! compile and event -> maps latency on a synthetic cluster (`cargo xtask bench
//! agent`); `telemetry` names verdict events for flow logs (`policy-agent flows`,
//! `lab run --show-drops`); `e2e` runs the conformance cases and the examples on a
//! real cluster with kubectl (`cargo xtask e2e`). Errors say their own context and
//! keep their cause as `source()`; `causes` prints one with its causes.
//!
//! Features: `lab` (the lab, conformance, e2e, `simulate`, `diff`, `lint`,
//! `exposure`, `suggest`) and `bench` are on by default; the image the DaemonSet
//! runs is built without them (`explain`, which `--node` makes a node's tool, is
//! in both). `testing`
//! exposes hooks for tests and benchmarks only (`BPF_PROG_TEST_RUN`, the model
//! builders).

pub mod agent;
#[cfg(feature = "bench")]
pub mod bench;
pub mod causes;
pub mod cli;
pub mod dataplane;
#[cfg(feature = "lab")]
pub mod e2e;
#[cfg(feature = "lab")]
pub mod lab;
pub mod node;
pub mod source;
pub mod telemetry;

pub use policy_engine::{model, policy};
