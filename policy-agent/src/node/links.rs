//! Links: names, indexes, kinds, the bridge a link is a port of, and a veth's
//! peer.

use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkInfo, LinkLayerType, LinkMessage},
    RouteNetlinkMessage,
};

use super::{socket::Netlink, NodeError};
use crate::dataplane::Frames;

/// `ENODEV`: the kernel's answer for a link that does not exist.
const ENODEV: i32 = 19;

/// A network interface of this namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    /// Its index (what TC attaches to and routes name).
    pub index: u32,
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: LinkKind,
    /// The device it is enslaved to (`IFLA_MASTER`: a bridge for a bridge port).
    pub master: Option<u32>,
    /// What its packets start with, when it is something podwall's exit
    /// classifiers parse: an Ethernet header, or (an IP-in-IP, WireGuard or tun
    /// device) the IP header itself.
    pub frames: Option<Frames>,
}

impl Link {
    /// A link known only by index and name (kind `Other`, no master).
    pub fn named(index: u32, name: &str) -> Self {
        Self {
            index,
            name: name.to_string(),
            kind: LinkKind::Other,
            master: None,
            frames: Some(Frames::Ethernet),
        }
    }
}

/// What a link is, as far as finding pod interfaces goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkKind {
    /// One end of a veth pair (most CNIs' pod interface) or a netkit device.
    PodLike,
    /// A Linux bridge (bridge CNIs: the pod's veth is one of its ports).
    Bridge,
    /// Anything else (loopback, physical, tunnels): never a pod interface.
    Other,
}

/// The other end of a veth, as its host side's `RTM_NEWLINK` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Peer {
    /// Its ifindex, in its own namespace (`IFLA_LINK`).
    pub index: u32,
    /// Its namespace's id as seen from here (`IFLA_LINK_NETNSID`); `None`: this
    /// namespace.
    pub netnsid: Option<i32>,
}

/// A link's name, kind and master, from one `RTM_NEWLINK` message.
pub(super) fn describe(message: &LinkMessage) -> (Link, LinkKind) {
    let (link, _) = describe_with_peer(message);
    let kind = link.kind;
    (link, kind)
}

/// `describe`, and the peer of a veth (or netkit device).
pub(super) fn describe_with_peer(message: &LinkMessage) -> (Link, Option<Peer>) {
    let mut name = String::new();
    let mut kind = LinkKind::Other;
    let mut master = None;
    let (mut peer_index, mut netnsid) = (None, None);
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name.clone_from(n),
            LinkAttribute::Controller(index) => master = Some(*index),
            LinkAttribute::Link(index) => peer_index = Some(*index),
            LinkAttribute::LinkNetNsId(id) => netnsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        kind = match k {
                            InfoKind::Veth | InfoKind::Netkit => LinkKind::PodLike,
                            InfoKind::Bridge => LinkKind::Bridge,
                            _ => LinkKind::Other,
                        };
                    }
                }
            }
            _ => {}
        }
    }
    let link = Link {
        index: message.header.index,
        name,
        kind,
        master,
        frames: frames_of(message.header.link_layer_type),
    };
    let peer = match (kind, peer_index) {
        (LinkKind::PodLike, Some(index)) => Some(Peer { index, netnsid }),
        _ => None,
    };
    (link, peer)
}

impl Netlink {
    /// Every link of the namespace, with the peer of each veth.
    pub(super) fn links_with_peers(&mut self) -> Result<Vec<(Link, Option<Peer>)>, NodeError> {
        Ok(self
            .link_dump()?
            .map(|link| describe_with_peer(&link))
            .collect())
    }

    /// Every link of the namespace.
    pub(super) fn links(&mut self) -> Result<Vec<(Link, LinkKind)>, NodeError> {
        Ok(self.link_dump()?.map(|link| describe(&link)).collect())
    }

    /// The link messages of one dump of the namespace's links.
    fn link_dump(&mut self) -> Result<impl Iterator<Item = LinkMessage>, NodeError> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            true,
            &|| "link dump".to_string(),
        )?;
        Ok(replies.into_iter().filter_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(link) => Some(link),
            _ => None,
        }))
    }

    /// The link with index `index` or name `name` (one of them set), if it exists.
    pub(super) fn link(
        &mut self,
        index: u32,
        name: Option<&str>,
    ) -> Result<Option<(Link, LinkKind)>, NodeError> {
        Ok(self.link_with_peer(index, name)?.map(|(link, _)| {
            let kind = link.kind;
            (link, kind)
        }))
    }

    /// `link`, and its peer if it is a veth.
    pub(super) fn link_with_peer(
        &mut self,
        index: u32,
        name: Option<&str>,
    ) -> Result<Option<(Link, Option<Peer>)>, NodeError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        if let Some(name) = name {
            message
                .attributes
                .push(LinkAttribute::IfName(name.to_string()));
        }
        let request = || match name {
            Some(name) => format!("link get {name}"),
            None => format!("link get index {index}"),
        };
        match self.request(RouteNetlinkMessage::GetLink(message), false, &request) {
            Ok(replies) => Ok(replies.iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(describe_with_peer(link)),
                _ => None,
            })),
            Err(error) if error.errno() == Some(ENODEV) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// Every link of this network namespace, by index.
pub fn links() -> Result<Vec<Link>, NodeError> {
    let mut links: Vec<Link> = Netlink::open()?
        .links()?
        .into_iter()
        .map(|(link, _)| link)
        .collect();
    links.sort();
    Ok(links)
}

/// The name of interface `ifindex`; `None` if there is no such interface.
pub fn interface_name(ifindex: u32) -> Result<Option<String>, NodeError> {
    Ok(Netlink::open()?
        .link(ifindex, None)?
        .map(|(link, _)| link.name))
}

/// The index of interface `name`; `None` if there is no such interface.
pub fn interface_index(name: &str) -> Result<Option<u32>, NodeError> {
    Ok(Netlink::open()?
        .link(0, Some(name))?
        .map(|(link, _)| link.index))
}

/// What the packets of a link of `link_layer_type` start with, as far as the exit
/// classifiers go.
fn frames_of(link_layer_type: LinkLayerType) -> Option<Frames> {
    match link_layer_type {
        LinkLayerType::Ether => Some(Frames::Ethernet),
        LinkLayerType::None
        | LinkLayerType::Tunnel
        | LinkLayerType::Tunnel6
        | LinkLayerType::Sit
        | LinkLayerType::Rawip => Some(Frames::Ip),
        _ => None,
    }
}
