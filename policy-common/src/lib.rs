//! The ABI shared by the TC classifiers (`policy-ebpf`) and the agent.
//!
//! Owns map value and key layouts, map names and capacities, and the numeric codes
//! both sides agree on. Every type is `#[repr(C)]` with explicit padding and no
//! bool/enum/Option, so its bytes mean the same thing on both sides. Imports nothing
//! but `core` (and `aya` for `Pod` with the `user` feature).
#![no_std]

pub mod bank;
pub mod config;
pub mod counters;
pub mod ct;
pub mod debug;
pub mod endpoint;
pub mod events;
pub mod frag;
pub mod peer;
pub mod policy;
pub mod verdict;

/// Bumped on any incompatible change to a layout below; part of pin paths.
pub const ABI_VERSION: u32 = 5;

/// Marks a type as plain old data for aya's map accessors (userspace only).
#[cfg(feature = "user")]
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: every type listed is #[repr(C)], Copy, made only of integers,
            // with all padding spelled out as fields, so any bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )*
    };
}

#[cfg(feature = "user")]
impl_pod!(
    config::Config,
    counters::TrafficCounter,
    events::VerdictEvent,
    ct::CtKey,
    ct::CtValue,
    endpoint::EndpointInfo,
    endpoint::EndpointKey,
    endpoint::AddressKey,
    peer::PeerClass,
    peer::PeerKeyV4,
    peer::PeerKeyV6,
    policy::PolicyKey,
    policy::PolicyValue,
    policy::RuleSetKey,
);
