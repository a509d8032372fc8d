//! podwall's node agent as a library: the CLI in `main.rs` is a thin layer over it.
//!
//! Data flows one way: `source` (manifests, or the API server's watch) -> `model` ->
//! `policy` (pure: evaluator and compiler) -> `dataplane` (the only code that touches
//! BPF). `lab` builds a local mini-cluster from network namespaces and wires the
//! stages together; `cli` holds one module per subcommand. `bench` times the
//! datapath with `BPF_PROG_TEST_RUN` (`cargo xtask bench datapath`) and the agent's
//! compile and event -> maps latency on a synthetic cluster (`cargo xtask bench
//! agent`); `telemetry` names verdict events for flow logs (`policy-agent flows`,
//! `lab run --show-drops`); `e2e` runs the conformance cases and the examples on a
//! real cluster with kubectl (`cargo xtask e2e`).

pub mod agent;
pub mod bench;
pub mod cli;
pub mod dataplane;
pub mod e2e;
pub mod lab;
pub mod model;
pub mod node;
pub mod policy;
pub mod source;
pub mod telemetry;
