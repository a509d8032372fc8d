//! The kernel debug channel's switch, shared by the classifiers and the agent.

/// Name of the read-only global (a `u8`) the agent overrides at load time: 1 turns
/// the classifiers' debug records on (aya-log's `AYA_LOGS` ring buffer), 0 (the
/// object's own value) leaves them off, and the verifier then prunes them.
pub const KERNEL_DEBUG_GLOBAL: &str = "PODWALL_KERNEL_DEBUG";
