//! Directions, drop reasons and the `STATS` counters every verdict lands in.

/// Traffic into the pod (TC egress on its host-side veth).
pub const DIRECTION_INGRESS: u8 = 0;
/// Traffic out of the pod (TC ingress on its host-side veth).
pub const DIRECTION_EGRESS: u8 = 1;

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
/// Passed: link control pods need to work: untagged ARP whose sender is the pod's
/// own (or, towards the pod, any well-formed ARP), or on-link IPv6 neighbour or
/// multicast listener discovery.
pub const STAT_ALLOW_NON_IP: u32 = 3;
/// Passed: ingress from an address of the local node (kubelet probes).
pub const STAT_ALLOW_NODE: u32 = 4;
/// Passed on: egress to a Service ClusterIP, decided after DNAT at the backend.
pub const STAT_ALLOW_DEFERRED_EGRESS: u32 = 5;
/// Passed: an ICMP or ICMPv6 error whose quoted packet belongs to a tracked flow.
pub const STAT_ALLOW_RELATED: u32 = 6;
/// Passed, would have been dropped: isolated, no rule allows it, and every
/// isolating policy of that direction is in audit mode (also every later packet of
/// such a flow).
pub const STAT_WOULD_DROP_POLICY: u32 = 7;
/// Passed: a Service egress deferred at a local client, decided and allowed where
/// it leaves the node for a backend elsewhere (`node_exit`) or where it meets a
/// socket of the node itself (`node_sockets`).
pub const STAT_ALLOW_SERVICE_EGRESS: u32 = 21;
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
/// Dropped: the frame carries a VLAN tag, in the skb (`vlan_present`: a tag the
/// kernel took out of the frame) or in the frame (EtherType 0x8100, 0x88a8 or
/// 0x9100). A tagged frame is not parsed: the kernel may strip a priority tag
/// after TC and route what was behind it.
pub const STAT_DROP_VLAN: u32 = 14;
/// Dropped: an EtherType other than IPv4, IPv6 and ARP (or an 802.3 length).
pub const STAT_DROP_ETHER_TYPE: u32 = 15;
/// Dropped: ARP that claims an address it may not: from a pod, a sender protocol
/// address that is not one of the pod's IPv4 addresses (0.0.0.0 only in a request:
/// an RFC 5227 probe); either way, a sender hardware address that is not the
/// frame's Ethernet source.
pub const STAT_DROP_ARP_SPOOFED: u32 = 16;
/// Dropped: ARP that is not an Ethernet/IPv4 request or reply (another hardware or
/// protocol type, address lengths, or operation).
pub const STAT_DROP_ARP_UNSUPPORTED: u32 = 17;
/// Dropped: an IPv6 packet whose extension headers do not end within the walk's
/// limit, so its upper-layer protocol and ports are unknown.
pub const STAT_DROP_IPV6_EXTENSION_CHAIN: u32 = 18;
/// Dropped: an IPv6 routing header with segments left: the packet's destination is
/// not its last one.
pub const STAT_DROP_IPV6_ROUTING_HEADER: u32 = 19;
/// Dropped: encapsulated traffic from a pod (IP-in-IP, IPv6-in-IP, GRE, EtherIP,
/// L2TP, MPLS-in-IP, or UDP to a tunnel port of `Config::tunnel_ports_be`), whatever
/// policy allows, unless its endpoint has `endpoint::ALLOW_TUNNELS`.
pub const STAT_DROP_TUNNEL: u32 = 20;

/// Dropped: a packet of a tracked flow whose original direction the current policy
/// denies (re-decided after a policy change), and every later packet of that flow,
/// either way; reported with the flow's original direction, whose policy denies it.
pub const STAT_DROP_REVOKED: u32 = 22;
/// Dropped at a same-node destination: the packet's egress was decided with another
/// bank at the source pod, and the source's egress decided again with the
/// destination's bank denies it (or the source is no local pod in that bank).
pub const STAT_DROP_SOURCE_EGRESS: u32 = 23;
/// Dropped: a new flow its pod interface has no room for; the interface holds
/// `Config::ct_endpoint_flows` tracked flows already.
pub const STAT_DROP_CT_ENDPOINT_LIMIT: u32 = 24;
/// Dropped: a new flow the conntrack table has no room for (`CONNTRACK_MAX`).
pub const STAT_DROP_CT_FULL: u32 = 25;
/// Dropped: a non-first fragment (offset above 0) of a datagram whose first fragment
/// did not pass here lately (denied, never seen, out of order, or forgotten;
/// `maps::FRAGMENTS`).
pub const STAT_DROP_FRAGMENT_UNKNOWN: u32 = 28;
/// Dropped: a first fragment whose IP length holds less than
/// `frag::FRAGMENT_FIRST_MIN` bytes of its upper-layer header (RFC 1858, RFC 7112).
pub const STAT_DROP_FRAGMENT_TINY: u32 = 29;
/// Dropped: a non-first fragment that starts inside its datagram's first fragment,
/// where it could rewrite the header the first fragment was decided on.
pub const STAT_DROP_FRAGMENT_OVERLAP: u32 = 30;
/// Dropped: a packet about to be handed to a pod whose destination is another
/// local pod's address (`ENDPOINT_ADDRS[daddr]` names another interface): a
/// neighbour or bridge forwarding entry a pod forged sent it to the wrong port.
pub const STAT_DROP_MISDELIVERED: u32 = 32;
/// Dropped: a new flow (or a re-decision) that a rule allowed while `ACTIVE`
/// moved under the decision, or that was denied while the agent wrote tables in
/// place (`CONFIG_FLAG_TABLES_WRITING`): its lookups may have read entries of two
/// states. Nothing is tracked or revoked; the next packet is decided anew.
pub const STAT_DROP_STATE_CHANGED: u32 = 33;

/// Side counter: a verdict event the rate limit held back.
pub const STAT_EVENTS_RATE_LIMITED: u32 = 48;
/// Side counter: a verdict event lost because the ring buffer was full.
pub const STAT_EVENTS_RING_FULL: u32 = 49;
/// Side counter: a verdict event held back by its interface's own rate limit
/// (`Config::events_per_endpoint_*`), before the per-CPU limit.
pub const STAT_EVENTS_ENDPOINT_LIMITED: u32 = 50;

/// `skb->mark` bit set on a packet whose egress verdict is deferred past Service
/// DNAT; the classifier at the destination decides it and clears the bit. The
/// default of `Config::mark_deferred_egress` (`config::DEFAULT_MARK_MASK`).
pub const MARK_DEFERRED_EGRESS: u32 = 0x0000_0001;
/// `skb->mark` bit set on a reply the backend side matched to a deferred flow the
/// client's egress policy allowed; the client side requires it and clears it. The
/// default of `Config::mark_reply_verified`.
pub const MARK_REPLY_VERIFIED: u32 = 0x0000_0002;

/// Human names of the counters, indexed like `STATS`.
pub const STAT_NAMES: [&str; STATS_LEN as usize] = {
    let mut names = [""; STATS_LEN as usize];
    names[STAT_ALLOW_UNISOLATED as usize] = "allow_unisolated";
    names[STAT_ALLOW_TRACKED as usize] = "allow_tracked";
    names[STAT_ALLOW_POLICY as usize] = "allow_policy";
    names[STAT_ALLOW_NON_IP as usize] = "allow_non_ip";
    names[STAT_ALLOW_NODE as usize] = "allow_node";
    names[STAT_ALLOW_DEFERRED_EGRESS as usize] = "allow_deferred_egress";
    names[STAT_ALLOW_RELATED as usize] = "allow_related";
    names[STAT_WOULD_DROP_POLICY as usize] = "would_drop_policy";
    names[STAT_ALLOW_SERVICE_EGRESS as usize] = "allow_service_egress";
    names[STAT_DROP_POLICY as usize] = "drop_policy";
    names[STAT_DROP_UNKNOWN_ENDPOINT as usize] = "drop_unknown_endpoint";
    names[STAT_DROP_MALFORMED as usize] = "drop_malformed";
    names[STAT_DROP_DEFERRED_UNKNOWN_SOURCE as usize] = "drop_deferred_unknown_source";
    names[STAT_DROP_DEFERRED_EGRESS as usize] = "drop_deferred_egress";
    names[STAT_DROP_SPOOFED_SOURCE as usize] = "drop_spoofed_source";
    names[STAT_DROP_VLAN as usize] = "drop_vlan";
    names[STAT_DROP_ETHER_TYPE as usize] = "drop_ether_type";
    names[STAT_DROP_ARP_SPOOFED as usize] = "drop_arp_spoofed";
    names[STAT_DROP_ARP_UNSUPPORTED as usize] = "drop_arp_unsupported";
    names[STAT_DROP_IPV6_EXTENSION_CHAIN as usize] = "drop_ipv6_extension_chain";
    names[STAT_DROP_IPV6_ROUTING_HEADER as usize] = "drop_ipv6_routing_header";
    names[STAT_DROP_TUNNEL as usize] = "drop_tunnel";
    names[STAT_DROP_REVOKED as usize] = "drop_revoked";
    names[STAT_DROP_SOURCE_EGRESS as usize] = "drop_source_egress";
    names[STAT_DROP_CT_ENDPOINT_LIMIT as usize] = "drop_ct_endpoint_limit";
    names[STAT_DROP_CT_FULL as usize] = "drop_ct_full";
    names[STAT_DROP_FRAGMENT_UNKNOWN as usize] = "drop_fragment_unknown";
    names[STAT_DROP_FRAGMENT_TINY as usize] = "drop_fragment_tiny";
    names[STAT_DROP_FRAGMENT_OVERLAP as usize] = "drop_fragment_overlap";
    names[STAT_DROP_MISDELIVERED as usize] = "drop_misdelivered";
    names[STAT_DROP_STATE_CHANGED as usize] = "drop_state_changed";
    names[STAT_EVENTS_RATE_LIMITED as usize] = "events_rate_limited";
    names[STAT_EVENTS_RING_FULL as usize] = "events_ring_full";
    names[STAT_EVENTS_ENDPOINT_LIMITED as usize] = "events_endpoint_limited";
    names
};
