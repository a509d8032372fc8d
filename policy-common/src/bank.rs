//! Banks: two copies of every "desired state" map's content, and `ACTIVE`, the
//! one-entry array saying which copy the classifiers read.
//!
//! `ENDPOINTS`, `ENDPOINT_ADDRS`, `PEERS_V4`, `PEERS_V6`, `PEER_HOSTS_V4`,
//! `PEER_HOSTS_V6`, `RULE_SETS`, `POLICY` and `POLICY_PORTS` carry a `bank` field in their keys. A classifier reads `ACTIVE[0]` once at the start of
//! a packet and uses that bank for every lookup the packet makes, so each packet is
//! decided wholly by one complete state. The agent writes the bank nothing reads,
//! then flips `ACTIVE` (one u32 store), then waits for an RCU grace period before
//! it touches the bank it left (packets that read the old value may still run).
//! Tracked flows (`CONNTRACK`), counters and events are not banked.
//!
//! `ACTIVE` holds a generation, not just the bank: the agent adds one at every
//! flip, so its lowest bit alternates and names the bank, and the whole value tells
//! a tracked flow decided by an earlier state (`CtValue::generation`) from one
//! decided by the current one.

/// Number of banks.
pub const BANKS: u32 = 2;

/// The bank a classifier uses for a stored `ACTIVE` value (a generation): its
/// lowest bit, so any value names a bank that exists.
#[inline(always)]
pub const fn bank_of(active: u32) -> u32 {
    active & 1
}

/// The other bank.
#[inline(always)]
pub const fn other(bank: u32) -> u32 {
    bank_of(bank) ^ 1
}
