//! `ENDPOINTS`: host-side interface index -> the local pod's policy identity, and
//! `ENDPOINT_ADDRS`: a local pod's address -> that interface index.
//!
//! `ENDPOINTS` key: the ifindex (u32, host byte order) of the pod's host-side veth,
//! as the classifier reads it from `skb->ifindex`. `ENDPOINT_ADDRS` lets the egress
//! classifier drop a packet whose source is not its pod's own address, the
//! destination side find the source pod of a packet whose egress was deferred past
//! Service DNAT, and the reply path find the client's tracked flow.

/// Map name in the object file.
pub const ENDPOINTS_MAP: &str = "ENDPOINTS";
/// Capacity: local pods per node.
pub const ENDPOINTS_MAX: u32 = 4096;
/// Map name of the address index (key `[u8; 16]`: IPv6, or IPv4-mapped IPv6).
pub const ENDPOINT_ADDRS_MAP: &str = "ENDPOINT_ADDRS";
/// Capacity: local pod addresses per node (two families per pod).
pub const ENDPOINT_ADDRS_MAX: u32 = 2 * ENDPOINTS_MAX;

/// Flag: some policy selects this pod for ingress, so ingress is default-deny.
pub const ISOLATED_INGRESS: u32 = 1 << 0;
/// Flag: some policy selects this pod for egress, so egress is default-deny.
pub const ISOLATED_EGRESS: u32 = 1 << 1;

/// Flag: every policy isolating this pod for ingress is in audit mode, so a packet
/// they would drop passes, counted and reported as would-drop.
pub const AUDIT_INGRESS: u32 = 1 << 2;
/// Flag: as `AUDIT_INGRESS`, for egress.
pub const AUDIT_EGRESS: u32 = 1 << 3;

/// What the classifier knows about a local pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Policy identity: every local pod that all policies treat alike shares one,
    /// so `POLICY` grows with distinct label sets, not with pods.
    pub endpoint_id: u32,
    /// `ISOLATED_*` | `AUDIT_*`.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 8);
