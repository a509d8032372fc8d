//! `ENDPOINTS`: host-side interface index -> the local pod's policy identity.
//!
//! Key: the ifindex (u32, host byte order) of the pod's host-side veth, as the
//! classifier reads it from `skb->ifindex`.

/// Map name in the object file.
pub const ENDPOINTS_MAP: &str = "ENDPOINTS";
/// Capacity: local pods per node.
pub const ENDPOINTS_MAX: u32 = 4096;

/// Flag: some policy selects this pod for ingress, so ingress is default-deny.
pub const ISOLATED_INGRESS: u32 = 1 << 0;
/// Flag: some policy selects this pod for egress, so egress is default-deny.
pub const ISOLATED_EGRESS: u32 = 1 << 1;

/// What the classifier knows about a local pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Policy identity: every local pod that all policies treat alike shares one,
    /// so `POLICY` grows with distinct label sets, not with pods.
    pub endpoint_id: u32,
    /// `ISOLATED_INGRESS` | `ISOLATED_EGRESS`.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 8);
