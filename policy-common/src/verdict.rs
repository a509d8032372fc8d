//! Directions, drop reasons and the `STATS` counters every verdict lands in.

/// Traffic into the pod (TC egress on its host-side veth).
pub const DIRECTION_INGRESS: u8 = 0;
/// Traffic out of the pod (TC ingress on its host-side veth).
pub const DIRECTION_EGRESS: u8 = 1;

/// Map name of the per-CPU verdict counters, indexed by `STAT_*`.
pub const STATS_MAP: &str = "STATS";
/// Number of counters in `STATS`.
pub const STATS_LEN: u32 = 64;
/// Counters below this index are verdicts: every packet bumps exactly one of them.
/// From it on are side counters (events lost), bumped on top of a verdict.
pub const STAT_VERDICTS: u32 = 48;

/// Passed: the pod is not isolated in this direction.
pub const STAT_ALLOW_UNISOLATED: u32 = 0;
/// Passed: a tracked flow (forward packet or reply).
pub const STAT_ALLOW_TRACKED: u32 = 1;
/// Passed: a policy rule matched.
pub const STAT_ALLOW_POLICY: u32 = 2;
/// Passed: not IP, or on-link IPv6 neighbour or multicast listener discovery, which
/// pods need to work.
pub const STAT_ALLOW_NON_IP: u32 = 3;
/// Passed: ingress from an address of the local node (kubelet probes).
pub const STAT_ALLOW_NODE: u32 = 4;
/// Passed on: egress to a Service ClusterIP, decided after DNAT at the backend.
pub const STAT_EGRESS_DEFERRED: u32 = 5;
/// Passed: an ICMP or ICMPv6 error whose quoted packet belongs to a tracked flow.
pub const STAT_ALLOW_RELATED: u32 = 6;
/// Passed, would have been dropped: isolated, no rule allows it, and every
/// isolating policy of that direction is in audit mode (also every later packet of
/// such a flow).
pub const STAT_ALLOW_AUDIT: u32 = 7;
/// Dropped: isolated and no rule allows it.
pub const STAT_DROP_POLICY: u32 = 8;
/// Dropped: the interface runs the classifier but is not in `ENDPOINTS`.
pub const STAT_DROP_UNKNOWN_ENDPOINT: u32 = 9;
/// Dropped: a header is truncated or malformed.
pub const STAT_DROP_MALFORMED: u32 = 10;
/// Dropped: a deferred egress packet whose source is no local pod (e.g. it was
/// masqueraded), so its egress policy cannot be found.
pub const STAT_DROP_DEFERRED_UNKNOWN_SOURCE: u32 = 11;
/// Dropped: the source pod's egress policy denies the DNAT-translated destination.
pub const STAT_DROP_DEFERRED_EGRESS: u32 = 12;
/// Dropped: a packet from a pod whose source address is not one of that pod's
/// addresses (anti-spoofing; IPv6 link-local and unspecified sources are exempt).
pub const STAT_DROP_SPOOFED_SOURCE: u32 = 13;
/// Dropped: a packet about to be handed to a pod whose destination is another
/// local pod's address (`ENDPOINT_ADDRS[daddr]` names another interface): a
/// neighbour or bridge forwarding entry a pod forged sent it to the wrong port.
pub const STAT_DROP_MISDELIVERED: u32 = 32;

/// Side counter: a verdict event the rate limit held back.
pub const STAT_EVENTS_RATE_LIMITED: u32 = 48;
/// Side counter: a verdict event lost because the ring buffer was full.
pub const STAT_EVENTS_RING_FULL: u32 = 49;
/// Side counter: a verdict event held back by its interface's own rate limit
/// (`Config::events_per_endpoint_*`), before the per-CPU limit.
pub const STAT_EVENTS_ENDPOINT_LIMITED: u32 = 50;

/// `skb->mark` bit set on a packet whose egress verdict is deferred past Service
/// DNAT; the classifier at the destination decides it and clears the bit.
pub const MARK_DEFERRED_EGRESS: u32 = 0x0010_0000;
/// `skb->mark` bit set on a reply the backend side matched to a deferred flow the
/// client's egress policy allowed; the client side requires it and clears it.
pub const MARK_REPLY_VERIFIED: u32 = 0x0020_0000;

/// Human names of the counters, indexed like `STATS`.
pub const STAT_NAMES: [&str; STATS_LEN as usize] = {
    let mut names = [""; STATS_LEN as usize];
    names[STAT_ALLOW_UNISOLATED as usize] = "allow_unisolated";
    names[STAT_ALLOW_TRACKED as usize] = "allow_tracked";
    names[STAT_ALLOW_POLICY as usize] = "allow_policy";
    names[STAT_ALLOW_NON_IP as usize] = "allow_non_ip";
    names[STAT_ALLOW_NODE as usize] = "allow_node";
    names[STAT_EGRESS_DEFERRED as usize] = "egress_deferred";
    names[STAT_ALLOW_RELATED as usize] = "allow_related";
    names[STAT_ALLOW_AUDIT as usize] = "allow_audit";
    names[STAT_DROP_POLICY as usize] = "drop_policy";
    names[STAT_DROP_UNKNOWN_ENDPOINT as usize] = "drop_unknown_endpoint";
    names[STAT_DROP_MALFORMED as usize] = "drop_malformed";
    names[STAT_DROP_DEFERRED_UNKNOWN_SOURCE as usize] = "drop_deferred_unknown_source";
    names[STAT_DROP_DEFERRED_EGRESS as usize] = "drop_deferred_egress";
    names[STAT_DROP_SPOOFED_SOURCE as usize] = "drop_spoofed_source";
    names[STAT_DROP_MISDELIVERED as usize] = "drop_misdelivered";
    names[STAT_EVENTS_RATE_LIMITED as usize] = "events_rate_limited";
    names[STAT_EVENTS_RING_FULL as usize] = "events_ring_full";
    names[STAT_EVENTS_ENDPOINT_LIMITED as usize] = "events_endpoint_limited";
    names
};
