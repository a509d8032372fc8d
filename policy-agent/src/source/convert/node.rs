//! Node conversion: what `nodes` peers of ClusterNetworkPolicies select (labels)
//! and the addresses they stand for.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;

use super::{caps, required_name, Result};
use crate::model::{Labels, Node};

/// Converts a Node: name, labels, and the `status.addresses` of type
/// `InternalIP` or `ExternalIP` that parse as IP addresses, sorted, without
/// repeats. An address that does not parse is left out, with a warning.
pub fn node(node: &core::Node) -> Result<Node> {
    caps::node(node)?;
    let name = required_name(&node.metadata)?;
    let mut ips: Vec<IpAddr> = Vec::new();
    let addresses = node
        .status
        .as_ref()
        .and_then(|status| status.addresses.as_ref());
    for (i, address) in addresses.into_iter().flatten().enumerate() {
        if !matches!(address.type_.as_str(), "InternalIP" | "ExternalIP") {
            continue;
        }
        match address.address.parse() {
            Ok(ip) => ips.push(ip),
            Err(_) => tracing::warn!(
                "Node {name}: status.addresses[{i}].address: {:?} is not an IP address; left out",
                address.address
            ),
        }
    }
    ips.sort();
    ips.dedup();
    Ok(Node {
        name,
        labels: Labels::from(node.metadata.labels.clone().unwrap_or_default()),
        ips,
    })
}
