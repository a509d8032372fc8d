//! The UDP ports the node's own tunnel devices receive on: each vxlan and geneve
//! link's destination port. A pod that sends to one of them could have the node
//! unwrap and forward what it carries, past its egress policy, so the datapath
//! drops UDP to these ports from pods (with the usual defaults, `Config`).

use netlink_packet_route::{
    link::{InfoData, InfoGeneve, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage},
    RouteNetlinkMessage,
};

use super::{socket::Netlink, NodeError};

/// The destination ports of every vxlan and geneve link of this network namespace,
/// sorted and without duplicates.
pub fn tunnel_ports() -> Result<Vec<u16>, NodeError> {
    let replies = Netlink::open()?.request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        true,
        &|| "link dump (tunnel ports)".to_string(),
    )?;
    let mut ports: Vec<u16> = replies
        .iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(link) => Some(link),
            _ => None,
        })
        .flat_map(link_ports)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// The UDP port a vxlan or geneve link receives on (its `IFLA_*_PORT`); nothing
/// for any other link.
fn link_ports(message: &LinkMessage) -> Vec<u16> {
    let mut ports = Vec::new();
    for attribute in &message.attributes {
        let LinkAttribute::LinkInfo(infos) = attribute else {
            continue;
        };
        for info in infos {
            match info {
                LinkInfo::Data(InfoData::Vxlan(vxlan)) => {
                    ports.extend(vxlan.iter().filter_map(|a| match a {
                        InfoVxlan::Port(port) => Some(*port),
                        _ => None,
                    }));
                }
                LinkInfo::Data(InfoData::Geneve(geneve)) => {
                    ports.extend(geneve.iter().filter_map(|a| match a {
                        InfoGeneve::Port(port) => Some(*port),
                        _ => None,
                    }));
                }
                _ => {}
            }
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::{InfoData, InfoGeneve, InfoKind, InfoVxlan, LinkInfo};

    use super::*;

    fn link(infos: Vec<LinkInfo>) -> LinkMessage {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::LinkInfo(infos));
        message
    }

    #[test]
    fn vxlan_and_geneve_links_give_their_destination_port_and_others_none() {
        let vxlan = link(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(42),
                InfoVxlan::Port(4789),
            ])),
        ]);
        let geneve = link(vec![
            LinkInfo::Kind(InfoKind::Geneve),
            LinkInfo::Data(InfoData::Geneve(vec![InfoGeneve::Port(6081)])),
        ]);
        let veth = link(vec![LinkInfo::Kind(InfoKind::Veth)]);
        assert_eq!(link_ports(&vxlan), [4789]);
        assert_eq!(link_ports(&geneve), [6081]);
        assert_eq!(link_ports(&veth), [] as [u16; 0]);
        assert_eq!(link_ports(&LinkMessage::default()), [] as [u16; 0]);
    }
}
