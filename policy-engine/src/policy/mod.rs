//! The policy engine, pure: no I/O, no kernel, no async. Imports only `model` and
//! `policy_common`'s constants.
//!
//! - `selector`: label selector matching;
//! - `isolation`: which policies isolate a pod in one direction (audit mode
//!   included), shared by the evaluator and the compiler;
//! - `cluster`: what a ClusterNetworkPolicy's subject, peers and ports match, and
//!   the order its tier reads it in, shared by the evaluator and the compiler;
//! - `evaluator`: the reference verdict straight from the NetworkPolicy and
//!   ClusterNetworkPolicy semantics, and why (`explain`);
//! - `exposure`: what can reach each pod: from outside, any namespace, pods not
//!   created yet;
//! - `lint`: what is likely wrong in a set of NetworkPolicies;
//! - `probes`: which probes a reachability matrix holds (`simulate`, the lab);
//! - `suggest`: NetworkPolicies that allow exactly the connections observed;
//! - `capacity`: what the kernel's tables hold, and the policies refused when a
//!   node's tables would not (they fail closed for their pods only);
//! - `compiler`: cluster state -> `DatapathTables` for one node;
//! - `tables`: the compiler's output and the lookup the kernel performs on it.

pub mod capacity;
pub mod cluster;
pub mod compiler;
pub mod evaluator;
pub mod exposure;
pub mod isolation;
pub mod lint;
pub mod probes;
pub mod selector;
pub mod suggest;
pub mod tables;

use crate::model::{NetworkPolicy, Rule};
use tables::Direction;

/// The rules of `policy` for `direction`: one definition for the evaluator and the
/// compiler.
pub(crate) fn rules(policy: &NetworkPolicy, direction: Direction) -> &[Rule] {
    match direction {
        Direction::Ingress => &policy.ingress,
        Direction::Egress => &policy.egress,
    }
}
