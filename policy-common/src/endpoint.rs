//! `ENDPOINTS`: host-side interface index -> the local pod's policy identity, and
//! `ENDPOINT_ADDRS`: a local pod's address -> that interface index.
//!
//! `ENDPOINTS` key: the ifindex (u32, host byte order) of the pod's host-side veth,
//! as the classifier reads it from `skb->ifindex`, and the bank (`bank.rs`).
//! `ENDPOINT_ADDRS` lets the egress classifier drop a packet whose source is not
//! its pod's own address, the destination side find the source pod of a packet
//! whose egress was deferred past Service DNAT, and the reply path find the
//! client's tracked flow.

/// Map name in the object file.
pub const ENDPOINTS_MAP: &str = "ENDPOINTS";
/// Capacity of one bank: local pods per node (the map holds `bank::BANKS` times
/// as many entries).
pub const ENDPOINTS_MAX: u32 = 4096;
/// Map name of the address index (key `AddressKey`).
pub const ENDPOINT_ADDRS_MAP: &str = "ENDPOINT_ADDRS";
/// Capacity of one bank: local pod addresses per node (two families per pod).
pub const ENDPOINT_ADDRS_MAX: u32 = 2 * ENDPOINTS_MAX;

/// Endpoint id of an interface the agent attached before it knows which pod is
/// behind it (a new veth): no `POLICY` entry names it, so whatever its isolation
/// flags isolate is denied. Its deny slots exist (`counters::DROP_COUNTERS_MAX`
/// covers it); real endpoint ids stay below it.
pub const PENDING_ENDPOINT_ID: u32 = ENDPOINTS_MAX;

/// `ENDPOINTS` key. Both fields are always matched exactly (a hash map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointKey {
    /// ifindex of the pod's host-side veth, host byte order.
    pub ifindex: u32,
    /// The bank this entry belongs to (`bank.rs`).
    pub bank: u32,
}

const _: () = assert!(core::mem::size_of::<EndpointKey>() == 8);

/// `ENDPOINT_ADDRS` key: a local pod's address and the bank. The value is the
/// ifindex of that pod's host-side veth (u32, host byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddressKey {
    /// IPv6, or IPv4-mapped IPv6 (`::ffff:a.b.c.d`), packet byte order.
    pub addr: [u8; 16],
    /// The bank this entry belongs to (`bank.rs`).
    pub bank: u32,
}

const _: () = assert!(core::mem::size_of::<AddressKey>() == 20);

/// Flag: some policy selects this pod for ingress, so ingress is default-deny.
pub const ISOLATED_INGRESS: u32 = 1 << 0;
/// Flag: some policy selects this pod for egress, so egress is default-deny.
pub const ISOLATED_EGRESS: u32 = 1 << 1;

/// Flag: every policy isolating this pod for ingress is in audit mode, so a packet
/// they would drop passes, counted and reported as would-drop.
pub const AUDIT_INGRESS: u32 = 1 << 2;
/// Flag: as `AUDIT_INGRESS`, for egress.
pub const AUDIT_EGRESS: u32 = 1 << 3;

/// Flag: the pod may send encapsulated traffic (IP-in-IP, GRE, UDP to a tunnel
/// port, ...): its egress hook does not drop it as `STAT_DROP_TUNNEL`, and policy
/// decides it like any packet. Set for the pods of a namespace annotated
/// `podwall.io/allow-tunnels: "true"`.
pub const ALLOW_TUNNELS: u32 = 1 << 4;

/// What the classifier knows about a local pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Policy identity: every local pod that all policies treat alike shares one,
    /// so `POLICY` grows with distinct label sets, not with pods.
    pub endpoint_id: u32,
    /// `ISOLATED_*` | `AUDIT_*` | `ALLOW_TUNNELS`.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 8);
