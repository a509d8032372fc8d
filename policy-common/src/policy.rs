//! The allow rules, in two steps so that a rule's peers and its ports are not
//! multiplied into one entry per (peer, port):
//! - `RULE_SETS` (hash): (bank, endpoint, peer class, direction) -> rule set id. A
//!   rule set is everything one local endpoint allows with one peer class in one
//!   direction: (protocol, port) -> rule. Endpoints and classes the rules treat
//!   alike share one set, so 257 peers x 256 ports is 257 + 256 entries, not 65,792.
//!   A peer class without an entry of its own takes the endpoint's entry for
//!   `RULE_SET_ANY_CLASS` (what rules without peers allow), if there is one, so a
//!   rule without peers costs one entry, not one per class.
//! - `POLICY` (LPM trie): (bank, rule set, protocol, port) -> the policy and rule
//!   that allow it, for every prefix shorter than `PREFIX_FULL`; the full-length
//!   entries (a single port) are in the hash `POLICY_PORTS` under the same key
//!   data. A full-length entry is the longest match there can be, so a lookup
//!   that finds the packet's key there has the answer one trie of every entry
//!   would give, and the trie is walked only on a miss: an exact port costs one
//!   hash lookup. The agent writes each entry to the one map its length picks.
//!
//! A NetworkPolicy match allows; an endpoint only NetworkPolicies decide has
//! allows only, and a miss drops. Where a ClusterNetworkPolicy applies, the
//! agent walks the tiers once per entry and writes the outcome
//! (`PolicyValue::verdict`), with an all-protocols entry in every such set, so
//! the lookup there never misses. `POLICY`'s fields are ordered
//! from the always-exact to the wildcardable, because an LPM trie can only leave a
//! suffix unspecified:
//! - `PREFIX_ALL_PROTOCOLS` (64 bits): bank, rule set; a rule without ports.
//! - `PREFIX_ALL_PORTS` (80 bits): + pad (always zero) and protocol; a port entry
//!   that names only a protocol.
//! - `PREFIX_FULL` (96 bits): + port; a single port. The port is big-endian so
//!   that an endPort range splits into aligned blocks, each `PREFIX_ALL_PORTS + n`
//!   bits long (n = the block's fixed high port bits).

/// Capacity of one bank of `RULE_SETS`: (endpoint, class, direction) triples with
/// some allow (the map holds `bank::BANKS` times as many).
pub const RULE_SETS_MAX: u32 = 65536;

/// `RuleSetKey::class_id` of an endpoint's any-class entry: the rule set of every
/// peer class without an entry of its own. Class ids are dense from 1, so it is
/// never a real class.
pub const RULE_SET_ANY_CLASS: u32 = u32::MAX;

/// Capacity of one bank: allow entries of every rule set, `POLICY` and
/// `POLICY_PORTS` together (each map holds `bank::BANKS` times as many).
pub const POLICY_MAX: u32 = 65536;

/// Prefix length (bits) matching any protocol and port.
pub const PREFIX_ALL_PROTOCOLS: u32 = 64;
/// Prefix length (bits) matching any port of one protocol.
pub const PREFIX_ALL_PORTS: u32 = 80;
/// Prefix length (bits) matching one protocol and port.
pub const PREFIX_FULL: u32 = 96;

/// `RULE_SETS` key: every field matched exactly (a hash map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleSetKey {
    /// The bank this entry belongs to (`bank.rs`), host byte order.
    pub bank: u32,
    /// `EndpointInfo::endpoint_id` of the local pod, host byte order.
    pub endpoint_id: u32,
    /// `PeerClass::class_id` of the remote address, or `RULE_SET_ANY_CLASS`; host
    /// byte order.
    pub class_id: u32,
    /// `verdict::DIRECTION_INGRESS` or `verdict::DIRECTION_EGRESS`.
    pub direction: u8,
    /// Explicit padding; always zero.
    pub pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<RuleSetKey>() == 16);

/// The data part of a `POLICY` key (the prefix length precedes it in the map key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The bank this entry belongs to (`bank.rs`), host byte order; always
    /// matched whole.
    pub bank: u32,
    /// The rule set (`RULE_SETS`' value), host byte order; always matched whole.
    pub rule_set: u32,
    /// Explicit padding; always zero (matched with the protocol).
    pub pad: u8,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP).
    pub protocol: u8,
    /// Destination port, network byte order; 0 for protocols without ports.
    pub port_be: u16,
}

const _: () = assert!(core::mem::size_of::<PolicyKey>() == 12);

/// `PolicyValue::verdict`: a rule allows it (counted in `rule_slot`).
pub const POLICY_ALLOW: u32 = 0;
/// `PolicyValue::verdict`: a ClusterNetworkPolicy `Deny` rule drops it.
pub const POLICY_DENY: u32 = 1;
/// `PolicyValue::verdict`: passes as a would-drop; an audit-mode
/// ClusterNetworkPolicy `Deny` rule would drop it.
pub const POLICY_WOULD_DENY: u32 = 2;
/// `PolicyValue::verdict`: the endpoint's NetworkPolicies allow none of it:
/// dropped, as a miss is.
pub const POLICY_NETWORK_DROP: u32 = 3;
/// `PolicyValue::verdict`: as `POLICY_NETWORK_DROP` for audit-mode
/// NetworkPolicies: passes as a would-drop.
pub const POLICY_NETWORK_WOULD_DROP: u32 = 4;
/// `PolicyValue::verdict`: no tier decides; allowed by default, no rule counts.
pub const POLICY_DEFAULT: u32 = 5;

/// What a `POLICY` entry decides, and the rule that decides it: its
/// `counters::RULE_COUNTERS` slot, which also names it in verdict events (the
/// agent keeps which rule holds which slot). A rule keeps its slot for as long
/// as it has entries, so a change of other policies (which renumbers the agent's
/// policy ids) leaves every value as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyValue {
    /// `counters::RULE_COUNTERS` slot of (policy, direction, rule), host byte
    /// order; `counters::NO_COUNTER` for a rule without one or no rule.
    pub rule_slot: u32,
    /// `POLICY_ALLOW` .. `POLICY_DEFAULT`; any other value is dropped as a miss
    /// is. Host byte order.
    pub verdict: u32,
}

const _: () = assert!(core::mem::size_of::<PolicyValue>() == 8);
