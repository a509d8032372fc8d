//! Link changes for benchmarks and tests in a scratch network namespace: a veth
//! pair made and a link deleted with one rtnetlink request each, so a
//! measurement can start the clock at the request that makes the kernel announce
//! the link (`RTM_NEWLINK`) instead of at a process start. The agent itself never
//! changes links.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage},
    RouteNetlinkMessage,
};

use super::{socket::Netlink, NodeError};

/// Requests to the calling thread's network namespace.
pub struct Scratch {
    netlink: Netlink,
}

impl Scratch {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NodeError> {
        Ok(Self {
            netlink: Netlink::open()?,
        })
    }

    /// Makes the veth pair `name` <-> `peer` (both down), in one `RTM_NEWLINK`.
    pub fn create_veth(&mut self, name: &str, peer: &str) -> Result<(), NodeError> {
        let mut peer_message = LinkMessage::default();
        peer_message
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
        ]));
        self.netlink.change(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("link add {name} type veth peer name {peer}"),
        )
    }

    /// Deletes link `index` (a veth takes its peer along).
    pub fn delete_link(&mut self, index: u32) -> Result<(), NodeError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.netlink
            .change(RouteNetlinkMessage::DelLink(message), 0, &|| {
                format!("link del index {index}")
            })
    }
}
