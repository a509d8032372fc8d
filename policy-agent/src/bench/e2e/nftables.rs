//! The nftables rule set of the e2e bench (pure), in the style of
//! kube-network-policies' tables: one `inet` table per node whose forward hook
//! accepts established and related traffic first, then looks the source up in
//! an egress verdict map and the destination in an ingress verdict map, keyed by
//! the address of each pod a policy isolates. Each policy is a chain matching
//! its peers and ports against sets of its own (`ip saddr @peers meta l4proto .
//! th dport @ports`); what the sets do not match is dropped. Pods in neither map
//! are accepted by the hook's policy.
//!
//! kube-network-policies itself sends the first packet of a connection to its
//! user-space process (NFQUEUE) for the verdict; this rule set decides in the
//! kernel with the same sets and maps, which can only be faster than a trip to
//! user space.

use std::fmt::Write;

use super::{
    firewall::RuleInput,
    scenario::{ECHO_PORT, SINK_PORT},
};

/// The table the rule set lives in (`inet`).
pub const TABLE: &str = "podwall-bench";

/// The `nft -f` input for `input`: the whole table, created anew.
pub fn ruleset(input: &RuleInput) -> String {
    let synthetic = input.policies.saturating_sub(1);
    let list = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    let _ = writeln!(out, "table inet {TABLE} {{");
    let mut ingress = Vec::new();
    for p in 0..synthetic {
        let peers = list(&mut input.peers(p).map(|a| a.to_string()));
        let port = RuleInput::port(p);
        let _ = writeln!(
            out,
            "  set p{p:05}-peers {{ type ipv4_addr; elements = {{ {peers} }} }}\n  \
             set p{p:05}-ports {{ type inet_proto . inet_service; elements = {{ tcp . {port}, tcp . 9090 }} }}\n  \
             chain p{p:05} {{ ip saddr @p{p:05}-peers meta l4proto . th dport @p{p:05}-ports accept; drop; }}"
        );
        ingress.extend(input.selected(p).map(|a| format!("{a} : goto p{p:05}")));
    }
    let clients = list(&mut input.clients.iter().map(ToString::to_string));
    let servers = list(&mut input.servers.iter().map(ToString::to_string));
    let ports = format!("tcp . {ECHO_PORT}, tcp . {SINK_PORT}, udp . {ECHO_PORT}");
    let _ = writeln!(
        out,
        "  set bench-clients {{ type ipv4_addr; elements = {{ {clients} }} }}\n  \
         set bench-servers {{ type ipv4_addr; elements = {{ {servers} }} }}\n  \
         set bench-ports {{ type inet_proto . inet_service; elements = {{ {ports} }} }}\n  \
         chain bench-ingress {{ ip saddr @bench-clients meta l4proto . th dport @bench-ports accept; drop; }}\n  \
         chain bench-egress {{ ip daddr @bench-servers meta l4proto . th dport @bench-ports return; drop; }}"
    );
    // The maps hold each isolated address once; the bench servers come last.
    let mut seen = std::collections::BTreeSet::new();
    ingress.retain(|entry| seen.insert(entry.split(' ').next().map(str::to_string)));
    ingress.extend(
        input
            .servers
            .iter()
            .map(|a| format!("{a} : goto bench-ingress")),
    );
    let egress = list(
        &mut input
            .clients
            .iter()
            .map(|a| format!("{a} : jump bench-egress")),
    );
    let _ = writeln!(
        out,
        "  map ingress {{ type ipv4_addr : verdict; elements = {{ {} }} }}\n  \
         map egress {{ type ipv4_addr : verdict; elements = {{ {egress} }} }}\n  \
         chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         ct state established,related accept\n    ct state invalid drop\n    \
         ip saddr vmap @egress\n    ip daddr vmap @ingress\n  }}\n}}",
        ingress.join(", ")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::e2e::firewall::{test_input, PEERS_PER_POLICY, SELECTED_PER_POLICY};

    fn input(policies: usize) -> RuleInput {
        test_input(policies, 250)
    }

    #[test]
    fn a_chain_and_two_sets_per_policy_and_a_map_entry_per_isolated_pod() {
        let text = ruleset(&input(20));
        assert_eq!(
            text.matches("\n  chain p").count(),
            19,
            "synthetic policies"
        );
        assert_eq!(text.matches("\n  set p").count(), 2 * 19);
        let ingress = text
            .lines()
            .find(|l| l.trim_start().starts_with("map ingress"))
            .unwrap_or_default();
        assert_eq!(
            ingress.matches(": goto").count(),
            19 * SELECTED_PER_POLICY + 2,
            "distinct selected pods, then the two servers"
        );
        assert!(
            ingress.ends_with("10.244.1.2 : goto bench-ingress } }"),
            "{ingress}"
        );
        let peers = text
            .lines()
            .find(|l| l.contains("set p00000-peers"))
            .unwrap_or_default();
        assert_eq!(peers.matches(", ").count() + 1, PEERS_PER_POLICY);
    }

    #[test]
    fn conntrack_comes_first_in_the_forward_hook() {
        let text = ruleset(&input(3));
        let hook = text.split("chain forward").nth(1).unwrap_or_default();
        let rules: Vec<&str> = hook
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            rules[1],
            "type filter hook forward priority filter; policy accept;"
        );
        assert_eq!(rules[2], "ct state established,related accept");
        assert_eq!(rules[4], "ip saddr vmap @egress");
        assert_eq!(rules[5], "ip daddr vmap @ingress");
        assert!(text.contains("10.244.0.2 : jump bench-egress"));
    }
}
