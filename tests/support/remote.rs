//! Another node behind a node namespace's uplink, for Service backends that run
//! elsewhere: a namespace joined by a veth (`uplink0` on the node's side), holding
//! the other node's pod addresses on its loopback and routing the node's pods back
//! through the uplink. Deleted when dropped.

use std::net::IpAddr;

use policy_agent::lab::netns;

/// The node's uplink, in the node namespace.
pub const UPLINK: &str = "uplink0";
/// Underlay addresses of the uplink and of the other node.
const UPLINK_V4: &str = "192.168.77.1";
const UPLINK_V6: &str = "fd77::1";
const REMOTE_V4: &str = "192.168.77.2";
const REMOTE_V6: &str = "fd77::2";

/// The other node's namespace.
pub struct RemoteNode {
    /// Its name: the node namespace's with `-far`.
    pub netns: String,
}

impl RemoteNode {
    /// Wires the other node to `node` (a namespace with IPv6 on): `remote_pods`
    /// live there, `local_pods` are reached back through the uplink.
    pub fn up(node: &str, local_pods: &[IpAddr], remote_pods: &[IpAddr]) -> Self {
        let remote = RemoteNode {
            netns: format!("{node}-far"),
        };
        let or_panic = |what: &str, result: Result<(), policy_agent::lab::LabError>| {
            if let Err(e) = result {
                panic!("{what}: {e}");
            }
        };
        or_panic(
            "netns add",
            netns::ip_batch(None, &[format!("netns add {}", remote.netns)]),
        );
        for key in ["default", "all"] {
            let dad = format!("net/ipv6/conf/{key}/accept_dad");
            or_panic("sysctl", netns::sysctl(&remote.netns, &dad, "0"));
        }
        let mut node_lines = vec![
            format!(
                "link add {UPLINK} type veth peer name eth0 netns {}",
                remote.netns
            ),
            format!("link set {UPLINK} up"),
            format!("addr add {UPLINK_V4}/24 dev {UPLINK}"),
            format!("addr add {UPLINK_V6}/64 dev {UPLINK} nodad"),
        ];
        let mut remote_lines = vec![
            "link set lo up".to_string(),
            "link set eth0 up".to_string(),
            format!("addr add {REMOTE_V4}/24 dev eth0"),
            format!("addr add {REMOTE_V6}/64 dev eth0 nodad"),
        ];
        for pod in remote_pods {
            let (len, via) = if pod.is_ipv4() {
                (32, REMOTE_V4)
            } else {
                (128, REMOTE_V6)
            };
            node_lines.push(format!("route add {pod}/{len} via {via} dev {UPLINK}"));
            remote_lines.push(format!("addr add {pod}/{len} dev lo nodad"));
        }
        for pod in local_pods {
            let (len, via) = if pod.is_ipv4() {
                (32, UPLINK_V4)
            } else {
                (128, UPLINK_V6)
            };
            remote_lines.push(format!("route add {pod}/{len} via {via} dev eth0"));
        }
        or_panic("uplink", netns::ip_batch(Some(node), &node_lines));
        or_panic(
            "other node",
            netns::ip_batch(Some(&remote.netns), &remote_lines),
        );
        remote
    }
}

impl Drop for RemoteNode {
    fn drop(&mut self) {
        if let Err(error) = netns::delete(std::slice::from_ref(&self.netns)) {
            eprintln!("could not delete {}: {error}", self.netns);
        }
    }
}
