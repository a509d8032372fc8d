//! The UDP tunnel ports in `CONFIG` (`Config::tunnel_ports_be`): the destination
//! ports a pod's egress hook drops as `drop_tunnel`, whatever policy allows. Always
//! `DEFAULT_TUNNEL_PORTS`, plus the ports of the node's own vxlan and geneve
//! devices (`node::tunnel_ports`), which the agent and the lab read and write here.

use policy_common::config::{DEFAULT_TUNNEL_PORTS, TUNNEL_PORTS_MAX};

/// The tunnel ports of `CONFIG` for a node whose devices receive on `node_ports`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelPorts {
    /// The ports written, defaults first, each once (at most `TUNNEL_PORTS_MAX`).
    pub ports: Vec<u16>,
    /// Node ports that found no slot: pods can reach these tunnels (warn).
    pub left_out: Vec<u16>,
}

impl TunnelPorts {
    /// `DEFAULT_TUNNEL_PORTS`, then each of `node_ports` not already there (port 0
    /// names no tunnel), as many as `CONFIG` has slots for.
    pub fn for_node(node_ports: &[u16]) -> Self {
        let mut all: Vec<u16> = DEFAULT_TUNNEL_PORTS.to_vec();
        for port in node_ports {
            if *port != 0 && !all.contains(port) {
                all.push(*port);
            }
        }
        let left_out = all.split_off(all.len().min(TUNNEL_PORTS_MAX));
        Self {
            ports: all,
            left_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_come_first_and_node_ports_follow_once_each_as_far_as_slots_go() {
        assert_eq!(TunnelPorts::for_node(&[]).ports, DEFAULT_TUNNEL_PORTS);
        let node = TunnelPorts::for_node(&[4789, 0, 9999, 9999, 6081, 4790]);
        assert_eq!(node.ports, [4789, 8472, 6081, 9999, 4790]);
        assert!(node.left_out.is_empty());
        let many: Vec<u16> = (10_000..10_010).collect();
        let full = TunnelPorts::for_node(&many);
        assert_eq!(full.ports.len(), TUNNEL_PORTS_MAX);
        assert_eq!(full.ports[..3], DEFAULT_TUNNEL_PORTS);
        assert_eq!(full.left_out, [10_005, 10_006, 10_007, 10_008, 10_009]);
    }
}
