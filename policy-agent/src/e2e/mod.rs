//! The conformance cases and the seed examples against a real cluster (a kind
//! cluster `cargo xtask e2e` makes, with podwall's DaemonSet on it), driven with
//! `kubectl`: the same case data and expectations the lab uses, pods from the
//! upstream probe image (agnhost), probes with `kubectl exec ... /agnhost
//! connect`, and the same `N passed, N failed, N skipped` line.
//!
//! - `manifests`: pure: the objects a run creates (the upstream fixture, an
//!   example's pods served by agnhost);
//! - `probe`: pure: the probe's command line and what its result means;
//! - `examples`: pure: the `# expect:` lines of an example's files;
//! - `kubectl`: the only part that runs anything (`kubectl` against the cluster);
//! - `run`: the cases and the examples, step by step.
//!
//! A probe that could not run (kubectl failed, the name did not resolve) is an
//! error, never a verdict: a run reports no pass it did not see.
//!
//! May import `model` and `lab::conformance` (case files, matrices, outcomes).

pub mod examples;
pub mod kubectl;
pub mod manifests;
pub mod probe;
pub mod run;
