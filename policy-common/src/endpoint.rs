//! `ENDPOINTS`: host-side interface index -> the local pod's policy identity, and
//! `ENDPOINT_ADDRS`: a local pod's address -> that interface index.
//!
//! `ENDPOINTS` key: the ifindex (u32, host byte order) of the pod's host-side veth,
//! as the classifier reads it from `skb->ifindex`, and the bank (`bank.rs`). Its
//! value (`EndpointValue`) also carries the pod's own addresses when it has one of
//! a family (`OwnAddresses`), so the address checks of a packet to or from its own
//! address compare in registers instead of looking `ENDPOINT_ADDRS` up.
//! `ENDPOINT_ADDRS` lets the egress classifier drop a packet whose source is not
//! its pod's own address, the destination side find the source pod of a packet
//! whose egress was deferred past Service DNAT, and the reply path find the
//! client's tracked flow.

/// Capacity of one bank: local pods per node (the map holds `bank::BANKS` times
/// as many entries).
pub const ENDPOINTS_MAX: u32 = 4096;
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

/// `OwnAddresses::flags`: `v4` is the pod's IPv4 address.
pub const OWN_V4: u32 = 1 << 0;
/// `OwnAddresses::flags`: `v6` is the pod's IPv6 address.
pub const OWN_V6: u32 = 1 << 1;

/// A local pod's own addresses, inside its `ENDPOINTS` value: of each family the
/// one address `ENDPOINT_ADDRS` maps to this interface in the same bank, when it
/// maps exactly one of that family there (a pod with more, or none, has the
/// family's flag clear). Only what it claims counts: an address it claims is the
/// pod's own, exactly as `ENDPOINT_ADDRS` says (the agent writes an address here
/// only once its `ENDPOINT_ADDRS` entry names this interface, and takes it out
/// before that entry goes or moves); an address it does not claim is looked up
/// in `ENDPOINT_ADDRS`, as before.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnAddresses {
    /// `OWN_V4` | `OWN_V6`: which of the addresses below is set.
    pub flags: u32,
    /// The IPv4 address, packet byte order (the last four bytes of its
    /// IPv4-mapped form).
    pub v4: [u8; 4],
    /// The IPv6 address, packet byte order.
    pub v6: [u8; 16],
}

const _: () = assert!(
    core::mem::size_of::<OwnAddresses>() == 24
        && core::mem::offset_of!(OwnAddresses, v4) == 4
        && core::mem::offset_of!(OwnAddresses, v6) == 8
        && core::mem::align_of::<OwnAddresses>() == 4
);

/// `ENDPOINTS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointValue {
    /// The endpoint's policy identity and flags.
    pub info: EndpointInfo,
    /// The pod's own addresses, as far as they are one per family.
    pub own: OwnAddresses,
}

const _: () = assert!(
    core::mem::size_of::<EndpointValue>() == 32 && core::mem::offset_of!(EndpointValue, own) == 8
);
