//! The node's own network, read over rtnetlink (no `ip` commands): the pod
//! interface a route to a pod address leaves through (behind a bridge, the port
//! whose veth peer holds the address), the node's addresses, the UDP ports of its
//! tunnel devices, interface names, indexes, kinds and bridges, and a watch of
//! links coming and going.
//!
//! Everything here works on the network namespace of the thread that opens the
//! socket: the agent runs in the node's namespace (`hostNetwork: true`); tests open
//! it inside a lab namespace (`lab::netns::in_netns`). Read-only except for the
//! multicast subscription of `LinkWatch`: nothing here changes links, routes or
//! addresses. Imports nothing from `policy`, `source` or `dataplane`.

mod addresses;
mod bridge;
mod error;
mod links;
mod routes;
#[cfg(feature = "testing")]
pub mod scratch;
mod socket;
mod tunnels;
mod watch;

pub use addresses::node_addresses;
pub use error::NodeError;
pub use links::{interface_index, interface_name, links, Link, LinkKind};
pub use routes::{route_interface, route_interfaces, PodRoute, RouteResolver};
pub use tunnels::tunnel_ports;
pub use watch::{LinkEvent, LinkWatch};
