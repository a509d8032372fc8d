//! Directions, drop reasons and the `STATS` counters every verdict lands in.

/// Traffic into the pod (TC egress on its host-side veth).
pub const DIRECTION_INGRESS: u8 = 0;
/// Traffic out of the pod (TC ingress on its host-side veth).
pub const DIRECTION_EGRESS: u8 = 1;

/// Map name of the per-CPU verdict counters, indexed by `STAT_*`.
pub const STATS_MAP: &str = "STATS";
/// Number of counters in `STATS`.
pub const STATS_LEN: u32 = 16;

/// Passed: the pod is not isolated in this direction.
pub const STAT_ALLOW_UNISOLATED: u32 = 0;
/// Passed: a tracked flow (forward packet or reply).
pub const STAT_ALLOW_TRACKED: u32 = 1;
/// Passed: a policy rule matched.
pub const STAT_ALLOW_POLICY: u32 = 2;
/// Passed: not IP, or IPv6 neighbour discovery, which pods need to work.
pub const STAT_ALLOW_NON_IP: u32 = 3;
/// Dropped: isolated and no rule allows it.
pub const STAT_DROP_POLICY: u32 = 8;
/// Dropped: the interface runs the classifier but is not in `ENDPOINTS`.
pub const STAT_DROP_UNKNOWN_ENDPOINT: u32 = 9;
/// Dropped: a header is truncated or malformed.
pub const STAT_DROP_MALFORMED: u32 = 10;
/// Dropped: IPv6 to or from an isolated pod (IPv6 rules are not compiled yet).
pub const STAT_DROP_IPV6_ISOLATED: u32 = 11;

/// Human names of the counters, indexed like `STATS`.
pub const STAT_NAMES: [&str; STATS_LEN as usize] = [
    "allow_unisolated",
    "allow_tracked",
    "allow_policy",
    "allow_non_ip",
    "",
    "",
    "",
    "",
    "drop_policy",
    "drop_unknown_endpoint",
    "drop_malformed",
    "drop_ipv6_isolated",
    "",
    "",
    "",
    "",
];
