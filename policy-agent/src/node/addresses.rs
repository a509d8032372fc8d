//! The node's own addresses: ingress from them always passes (kubelet probes).

use std::net::IpAddr;

use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    RouteNetlinkMessage,
};

use super::{socket::Netlink, NodeError};

/// Every address of every interface of this network namespace, both families,
/// sorted and without duplicates, except IPv6 link-local ones (`fe80::/10`: every
/// veth has one, and they never leave their link).
pub fn node_addresses() -> Result<Vec<IpAddr>, NodeError> {
    let replies = Netlink::open()?.request(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        true,
        &|| "address dump".to_string(),
    )?;
    let mut addresses: Vec<IpAddr> = replies
        .iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewAddress(message) => local_address(message),
            _ => None,
        })
        .filter(|ip| !is_ipv6_link_local(ip))
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// The interface's own address: `IFA_LOCAL` (on point-to-point links `IFA_ADDRESS`
/// is the peer's), else `IFA_ADDRESS` (IPv6 sends only that).
pub(super) fn local_address(message: &AddressMessage) -> Option<IpAddr> {
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_ipv6_link_local;

    #[test]
    fn only_ipv6_link_local_addresses_are_left_out() {
        let link_local = ["fe80::1", "febf::1"];
        let kept = ["fec0::1", "fd00::1", "::1", "169.254.1.1", "10.0.0.1"];
        for ip in link_local {
            assert!(
                is_ipv6_link_local(&ip.parse().unwrap_or_else(|e| panic!("{e}"))),
                "{ip}"
            );
        }
        for ip in kept {
            assert!(
                !is_ipv6_link_local(&ip.parse().unwrap_or_else(|e| panic!("{e}"))),
                "{ip}"
            );
        }
    }
}
