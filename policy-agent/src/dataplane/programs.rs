//! The object's programs by name, and which pair of classifiers an interface gets
//! (`LinkRole`): what the datapath attaches and the pin layout names.

/// Program deciding a pod's ingress; runs at TC egress of its host-side veth.
pub(super) const POD_INGRESS_PROGRAM: &str = "pod_ingress";
/// Program deciding a pod's egress; runs at TC ingress of its host-side veth.
pub(super) const POD_EGRESS_PROGRAM: &str = "pod_egress";
/// Program deciding deferred Service egress where it leaves the node; runs at TC
/// egress of the node's exits (`datapath/exits.rs`).
pub(super) const NODE_EXIT_PROGRAM: &str = "node_exit";
/// Program marking verified replies coming back through an exit; TC ingress there.
pub(super) const NODE_ENTRY_PROGRAM: &str = "node_entry";
/// `node_exit` for an exit without Ethernet frames.
pub(super) const NODE_EXIT_IP_PROGRAM: &str = "node_exit_ip";
/// `node_entry` for an exit without Ethernet frames.
pub(super) const NODE_ENTRY_IP_PROGRAM: &str = "node_entry_ip";
/// The `sk_lookup` program deciding a local pod's connection to the node itself.
pub(super) const NODE_SOCKETS_PROGRAM: &str = "node_sockets";
/// The empty classifier `cargo xtask bench datapath` measures as its floor.
pub(super) const BENCH_FLOOR_PROGRAM: &str = "bench_floor";

/// Every TC classifier the agent loads (`bench_floor` only on request).
pub(super) const CLASSIFIERS: [&str; 6] = [
    POD_INGRESS_PROGRAM,
    POD_EGRESS_PROGRAM,
    NODE_EXIT_PROGRAM,
    NODE_ENTRY_PROGRAM,
    NODE_EXIT_IP_PROGRAM,
    NODE_ENTRY_IP_PROGRAM,
];

/// What an interface's pair of classifiers is attached for: which two programs,
/// and under which names their links are pinned (`pins::PinLayout::link_pin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum LinkRole {
    /// A pod's host-side veth: `pod_ingress` at TC egress, `pod_egress` at TC
    /// ingress.
    Pod,
    /// A node exit with Ethernet frames (`datapath/exits.rs`): `node_exit` at TC
    /// egress, `node_entry` at TC ingress.
    Exit,
    /// A node exit without Ethernet frames: `node_exit_ip`, `node_entry_ip`.
    IpExit,
}

impl LinkRole {
    /// Every role.
    pub(super) const ALL: [LinkRole; 3] = [LinkRole::Pod, LinkRole::Exit, LinkRole::IpExit];

    /// Its two programs, the one at TC egress first (`attach_pair`'s order).
    pub(super) fn programs(self) -> [&'static str; 2] {
        match self {
            LinkRole::Pod => [POD_INGRESS_PROGRAM, POD_EGRESS_PROGRAM],
            LinkRole::Exit => [NODE_EXIT_PROGRAM, NODE_ENTRY_PROGRAM],
            LinkRole::IpExit => [NODE_EXIT_IP_PROGRAM, NODE_ENTRY_IP_PROGRAM],
        }
    }
}
