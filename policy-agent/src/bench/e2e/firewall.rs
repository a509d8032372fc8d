//! What the iptables and nftables rule sets are made of, and loading them into
//! (and removing them from) a lab node's own network namespace with the tools
//! (`iptables-nft-restore`, `nft`), as the enforcers that generate such rules do.

use std::{
    io::Write,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use super::{scenario, Scale};
use crate::{
    bench::cluster,
    lab::LabError,
    model::{ClusterState, ObjectRef},
};

/// Pods each synthetic policy of a rule set selects.
pub const SELECTED_PER_POLICY: usize = 5;
/// Peers each synthetic policy's rules name.
pub const PEERS_PER_POLICY: usize = 9;

/// The addresses a rule set names: the synthetic cluster's pods for the
/// synthetic policies, and the bench pods for the one policy the isolated pair
/// depends on, which comes last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInput {
    /// Policies in all, the bench's included.
    pub policies: usize,
    /// Addresses of the synthetic cluster's pods (at least one).
    pub addresses: Vec<Ipv4Addr>,
    /// The isolated client(s).
    pub clients: Vec<Ipv4Addr>,
    /// The isolated servers.
    pub servers: Vec<Ipv4Addr>,
}

impl RuleInput {
    /// The input at `scale` for the bench pods of `bench` (addressed by the lab).
    pub fn of(scale: Scale, bench: &ClusterState, nodes: usize) -> Self {
        let spec = scale.cluster();
        let addresses = (0..spec.pods)
            .filter_map(|i| match cluster::pod_at(&spec, i).ips.first() {
                Some(std::net::IpAddr::V4(v4)) => Some(*v4),
                _ => None,
            })
            .collect();
        let v4 = |pods: Vec<ObjectRef>| -> Vec<Ipv4Addr> {
            pods.iter()
                .filter_map(|p| scenario::ipv4_of(bench, p))
                .collect()
        };
        Self {
            policies: scale.policies(),
            addresses,
            clients: v4(vec![scenario::pod_ref("client")]),
            servers: v4(scenario::isolated_servers(nodes)),
        }
    }

    /// Synthetic address number `i` (wrapping around the list).
    pub fn address(&self, i: usize) -> Ipv4Addr {
        self.addresses
            .get(i % self.addresses.len().max(1))
            .copied()
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// The pods synthetic policy `p` selects.
    pub fn selected(&self, p: usize) -> impl Iterator<Item = Ipv4Addr> + Clone + '_ {
        (0..SELECTED_PER_POLICY).map(move |k| self.address(p * SELECTED_PER_POLICY + k))
    }

    /// The peers synthetic policy `p` allows.
    pub fn peers(&self, p: usize) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (0..PEERS_PER_POLICY).map(move |k| self.address(p * 7 + k * 13 + 1))
    }

    /// The port synthetic policy `p` allows.
    pub fn port(p: usize) -> u16 {
        [8080, 8000, 5432, 6379, 9090][p % 5]
    }
}

/// Runs `program args` inside lab namespace `netns` (`ip netns exec`) with
/// `input` on stdin, failing with what the tool said.
pub fn run_in(netns: &str, program: &str, args: &[&str], input: &str) -> Result<(), LabError> {
    let command = format!("ip netns exec {netns} {program} {}", args.join(" "));
    let io_error = |what: &str| {
        let (command, what) = (command.clone(), what.to_string());
        move |source| LabError::CommandIo {
            command,
            what,
            source,
        }
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error(&format!(
            "run it (is {program} installed? `cargo xtask setup`)"
        )))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(io_error("write its input"))?;
    }
    let output = child.wait_with_output().map_err(io_error("wait for it"))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command,
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The tables of `netns`'s ruleset (`nft list tables`), one per line.
pub fn tables(netns: &str) -> Result<Vec<String>, LabError> {
    let command = format!("ip netns exec {netns} nft list tables");
    let output = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "list", "tables"])
        .output()
        .map_err(|source| LabError::CommandIo {
            command: command.clone(),
            what: "run it (is nft installed? `cargo xtask setup`)".to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(LabError::Command {
            command,
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect())
}

/// A rule input for tests: `policies` policies over `addresses` synthetic pods
/// (`10.128.0.x`), one client and servers on two nodes.
#[cfg(test)]
pub(super) fn test_input(policies: usize, addresses: u8) -> RuleInput {
    RuleInput {
        policies,
        addresses: (0..addresses)
            .map(|i| Ipv4Addr::new(10, 128, 0, i))
            .collect(),
        clients: vec![Ipv4Addr::new(10, 244, 0, 2)],
        servers: vec![Ipv4Addr::new(10, 244, 0, 3), Ipv4Addr::new(10, 244, 1, 2)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_names_the_synthetic_pods_and_the_bench_pods() {
        let bench = scenario::addressed(2);
        let input = RuleInput::of(Scale::Small, &bench, 2);
        assert_eq!(input.policies, 100);
        assert_eq!(input.addresses.len(), 1_000);
        assert_eq!(input.clients.len(), 1);
        assert_eq!(input.servers.len(), 2);
        assert_eq!(input.selected(3).count(), SELECTED_PER_POLICY);
        assert_eq!(input.address(1_000), input.address(0), "wraps around");
    }
}
