//! ClusterIP Services as kube-proxy's nftables mode makes them: DNAT rules in the
//! node namespace that send `clusterIP:port` to a random backend pod.
//!
//! The ruleset (one table, replaced whole and atomically on every update, because
//! label changes move endpoints):
//!
//! ```text
//! table ip podwall-lab {
//!   map service-ips { type ipv4_addr . inet_proto . inet_service : verdict
//!     elements = { 10.96.0.2 . tcp . 80 : goto service-HASH-ns/web/tcp/80 } }
//!   chain services { ip daddr . meta l4proto . th dport vmap @service-ips }
//!   chain nat-prerouting { type nat hook prerouting priority dstnat; jump services }
//!   chain nat-output { type nat hook output priority -100; jump services }
//!   chain service-HASH-ns/web/tcp/80 {
//!     numgen random mod 2 vmap { 0 : goto endpoint-HASH-..., 1 : goto endpoint-HASH-... } }
//!   chain endpoint-HASH-ns/web/tcp/80__10.244.0.2/8080 { meta l4proto tcp dnat to 10.244.0.2:8080 }
//! }
//! ```
//!
//! Backends of a Service port are the lab pods in the Service's namespace whose labels
//! match its selector and on which its targetPort resolves (a number as is, a name
//! through the pod's container ports of that protocol). A port without backends gets
//! no map element: the node has no route to the ClusterIP, so the client gets a
//! "network unreachable" (kube-proxy answers with a reject instead). Services are
//! IPv4 only; a Service whose clusterIP is IPv6 is skipped with a warning.
//!
//! The rules are applied with the `nft` binary rather than netlink messages built
//! here: nf_tables' netlink encoding of sets, concatenated keys, verdict maps and
//! expressions is large and version-dependent, `nft -f` gives the whole replacement
//! one kernel transaction, and the text it reads is what a person debugging the lab
//! runs `nft list ruleset` to see.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::{Command, Stdio},
};

use super::{topology::LabPod, LabError};
use crate::causes::causes;
use crate::model::{ClusterState, ObjectRef, PortRef, Protocol};

/// The nftables table the lab owns in its node namespace.
const TABLE: &str = "podwall-lab";

/// One pod behind a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The pod.
    pub pod: ObjectRef,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// The targetPort as resolved on this pod.
    pub port: u16,
}

/// One port of one ClusterIP Service and the pods it leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRoute {
    /// The Service.
    pub service: ObjectRef,
    /// Its ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// Pods traffic to `cluster_ip:port` is sent to, in pod order.
    pub backends: Vec<Backend>,
}

impl ServiceRoute {
    /// `clusterIP:port`.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((self.cluster_ip, self.port))
    }
}

/// Every Service port of `state` with its backends among the lab's `pods`, in
/// Service order then port order. Services need their ClusterIP already set.
pub fn routes(state: &ClusterState, pods: &BTreeMap<ObjectRef, LabPod>) -> Vec<ServiceRoute> {
    let mut routes = Vec::new();
    for service in state.services.values() {
        let cluster_ip = match service.cluster_ip {
            Some(IpAddr::V4(ip)) => ip,
            Some(IpAddr::V6(ip)) => {
                tracing::warn!(service = %service.key, %ip, "no DNAT rules: the lab's Services are IPv4 only");
                continue;
            }
            None => continue,
        };
        let selected: Vec<_> = state
            .pods
            .values()
            .filter(|pod| pod.key.namespace == service.key.namespace)
            .filter(|pod| {
                service.selector.as_ref().is_some_and(|selector| {
                    selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
                })
            })
            .filter_map(|pod| Some((pod, pods.get(&pod.key)?)))
            .collect();
        for port in &service.ports {
            let backends = selected
                .iter()
                .filter_map(|(pod, lab_pod)| {
                    let target = match &port.target_port {
                        PortRef::Number(n) => *n,
                        PortRef::Name(name) => pod.ports_named(name, port.protocol).next()?,
                    };
                    Some(Backend {
                        pod: pod.key.clone(),
                        ip: lab_pod.addresses.v4,
                        port: target,
                    })
                })
                .collect();
            routes.push(ServiceRoute {
                service: service.key.clone(),
                cluster_ip,
                port: port.port,
                protocol: port.protocol,
                backends,
            });
        }
    }
    routes
}

/// The Service address that leads only to `pod` on `port`/`protocol`: the first
/// route whose single backend is that pod with that target port.
pub fn address_of(
    routes: &[ServiceRoute],
    pod: &ObjectRef,
    port: u16,
    protocol: Protocol,
) -> Option<SocketAddr> {
    routes
        .iter()
        .find(|route| {
            route.protocol == protocol
                && route.service.namespace == pod.namespace
                && matches!(route.backends.as_slice(), [only] if only.pod == *pod && only.port == port)
        })
        .map(ServiceRoute::address)
}

/// 8 hex digits of FNV-1a over `text`: keeps chain names unique after `sanitize`,
/// as kube-proxy's hash prefix does.
fn short_hash(text: &str) -> String {
    let hash = text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    format!("{hash:08x}")
}

/// `text` with every character nft does not allow in a chain name replaced.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "/-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn proto(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn chain_name(kind: &str, identity: &str) -> String {
    format!("{kind}-{}-{}", short_hash(identity), sanitize(identity))
}

/// The nft script that replaces the lab's table with one DNAT chain per Service
/// port (a random choice among its endpoint chains) and one chain per endpoint.
pub fn ruleset(routes: &[ServiceRoute]) -> String {
    let mut elements = Vec::new();
    let mut chains = String::new();
    for route in routes.iter().filter(|r| !r.backends.is_empty()) {
        let proto = proto(route.protocol);
        let identity = format!("{}/{proto}/{}", route.service, route.port);
        let service_chain = chain_name("service", &identity);
        elements.push(format!(
            "{} . {proto} . {} : goto {service_chain}",
            route.cluster_ip, route.port
        ));
        let mut choices = Vec::new();
        for (i, backend) in route.backends.iter().enumerate() {
            let endpoint = chain_name(
                "endpoint",
                &format!("{identity}__{}/{}", backend.ip, backend.port),
            );
            choices.push(format!("{i} : goto {endpoint}"));
            let _ = writeln!(
                chains,
                "  chain {endpoint} {{\n    meta l4proto {proto} dnat to {}:{}\n  }}",
                backend.ip, backend.port
            );
        }
        let _ = writeln!(
            chains,
            "  chain {service_chain} {{\n    numgen random mod {} vmap {{ {} }}\n  }}",
            route.backends.len(),
            choices.join(", ")
        );
    }
    let elements = if elements.is_empty() {
        String::new()
    } else {
        format!("\n    elements = {{ {} }}", elements.join(",\n      "))
    };
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{
  map service-ips {{
    type ipv4_addr . inet_proto . inet_service : verdict{elements}
  }}
  chain services {{
    ip daddr . meta l4proto . th dport vmap @service-ips
  }}
  chain nat-prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }}
  chain nat-output {{
    type nat hook output priority -100; policy accept;
    jump services
  }}
{chains}}}\n"
    )
}

/// Runs `nft -f -` with `script` inside namespace `netns` (one transaction).
pub fn nft(netns: &str, script: &str) -> Result<(), LabError> {
    let command = format!("ip netns exec {netns} nft -f -");
    let failed = |message: String| LabError::Command {
        command: command.clone(),
        message,
    };
    let io_error = |what: &str| {
        let what = what.to_string();
        |source| LabError::CommandIo {
            command: command.clone(),
            what,
            source,
        }
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error("run it"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(io_error("write its input"))?;
    }
    let output = child.wait_with_output().map_err(io_error("wait for it"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let hint = if stderr.contains("No such file") || stderr.contains("not found") {
        " (is nftables installed? `cargo xtask setup` installs it)"
    } else {
        ""
    };
    Err(failed(format!("{stderr}{hint}")))
}

/// Replaces the node namespace's Service rules with those for `routes`. If nft
/// rejects the ruleset and it has SCTP ports, they are left out with a warning
/// and the rest is applied.
pub fn apply(node: &str, routes: &[ServiceRoute]) -> Result<(), LabError> {
    let Err(error) = nft(node, &ruleset(routes)) else {
        return Ok(());
    };
    let (sctp, rest): (Vec<_>, Vec<_>) = routes
        .iter()
        .cloned()
        .partition(|r| r.protocol == Protocol::Sctp);
    if sctp.is_empty() {
        return Err(error);
    }
    for route in &sctp {
        tracing::warn!(service = %route.service, port = route.port, error = %causes(&error), "SCTP Service port skipped: nft rejected it");
    }
    nft(node, &ruleset(&rest))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests parse address literals")]
mod tests;
