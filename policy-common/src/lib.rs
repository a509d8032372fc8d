//! The ABI shared by the TC classifiers (`policy-ebpf`) and the agent.
//!
//! Owns map value and key layouts, map names and capacities, and the numeric codes
//! both sides agree on. Every type is `#[repr(C)]` with explicit padding and no
//! bool/enum/Option, so its bytes mean the same thing on both sides. Imports nothing
//! but `core` (and `aya` for `Pod` with the `user` feature). Every shared map is
//! defined once in `maps`.
//!
//! # Words
//!
//! One word for one thing, here, in the kernel programs, the agent, the CLI and the
//! docs:
//! - **endpoint**: a local pod as the datapath sees it, its host-side interface with
//!   an `ENDPOINTS` entry; **endpoint id**: the number that entry carries, shared by
//!   pods of one namespace that every policy treats alike;
//! - **peer**: the other end of a packet or connection, seen from the endpoint whose
//!   policy decides it; **peer class**: the number `PEERS_V4`/`PEERS_V6` give a
//!   peer's address, shared by addresses every local rule treats alike
//!   (`peer::CLASS_WORLD`: every address no rule names);
//! - **rule**: one item of a NetworkPolicy's `ingress` or `egress` list; **rule
//!   set**: the rules one endpoint id allows with one peer class in one direction;
//!   **entry**: one key and value of a map;
//! - **direction**: ingress or egress, relative to the pod (the TC hook is the other
//!   way round);
//! - **verdict**: what podwall does with a packet or connection: **unisolated** (no
//!   policy selects the pod for that direction), **allowed**, **dropped**, or
//!   **would-drop** (passes only because every isolating policy is in audit mode).
//!   Counter names start with the verdict: `allow_*`, `drop_*`, `would_drop_*`;
//! - **bank**, **generation**, **slot**: see `bank` and `counters`.
#![no_std]

pub mod bank;
pub mod config;
pub mod counters;
pub mod ct;
pub mod debug;
pub mod endpoint;
pub mod events;
pub mod frag;
pub mod maps;
pub mod peer;
pub mod policy;
pub mod verdict;

/// Bumped on any incompatible change to a layout below; part of pin paths.
pub const ABI_VERSION: u32 = 11;

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
    endpoint::EndpointValue,
    endpoint::OwnAddresses,
    endpoint::EndpointKey,
    endpoint::AddressKey,
    peer::PeerClass,
    peer::PeerKeyV4,
    peer::PeerKeyV6,
    policy::PolicyKey,
    policy::PolicyValue,
    policy::RuleSetKey,
);
