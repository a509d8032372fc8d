//! podwall's policy engine, pure: no I/O, no kernel, no async, by construction (this
//! crate depends on none of them). The node agent, the lab and the CLI all reach
//! their verdicts through it.
//!
//! - `model`: owned, normalized cluster objects, what every stage reads;
//! - `policy`: the reference evaluator (the NetworkPolicy semantics, and why) and
//!   the compiler from cluster state to the tables the kernel looks up.

pub mod model;
pub mod policy;
