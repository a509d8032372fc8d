//! The iptables rule set of the e2e bench (pure), in the style iptables
//! NetworkPolicy enforcers generate (weave-npc's linear rule list, kube-router's
//! chain per policy): in each node's FORWARD chain, established and related
//! traffic is accepted first, then a new connection walks one chain per policy,
//! each with one ACCEPT rule per peer; the isolated pods' DROP rules come last,
//! and what no rule took is accepted (pods no policy selects).
//!
//! The bench's own policy is the last chain, so the isolated pair's new
//! connections walk every other rule before they are accepted, and the
//! unselected pair's walk everything and fall through: what a rule count costs.
//! Written for `iptables-nft-restore` (the nf_tables backend of iptables).

use super::{
    firewall::{RuleInput, PEERS_PER_POLICY},
    scenario::{ECHO_PORT, SINK_PORT},
};

/// Rules per policy: a jump to its chain and its peers' ACCEPT rules.
pub const RULES_PER_POLICY: usize = 1 + PEERS_PER_POLICY;
/// The chain FORWARD jumps to.
pub const FORWARD_CHAIN: &str = "PODWALL-BENCH-FWD";

/// The `iptables-nft-restore` input for `input`: the filter table, with
/// `FORWARD` jumping to `FORWARD_CHAIN`.
pub fn ruleset(input: &RuleInput) -> String {
    let synthetic = input.policies.saturating_sub(1);
    let chain = |p: usize| format!("PODWALL-POL-{p:05}");
    let mut out = vec!["*filter".to_string(), format!(":{FORWARD_CHAIN} - [0:0]")];
    out.extend((0..=synthetic).map(|p| format!(":{} - [0:0]", chain(p))));
    out.push(format!("-A FORWARD -j {FORWARD_CHAIN}"));
    out.push(format!(
        "-A {FORWARD_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    ));
    out.push(format!(
        "-A {FORWARD_CHAIN} -m conntrack --ctstate INVALID -j DROP"
    ));
    for p in 0..synthetic {
        out.push(format!("-A {FORWARD_CHAIN} -j {}", chain(p)));
        let port = RuleInput::port(p);
        for (to, from) in input.selected(p).cycle().zip(input.peers(p)) {
            out.push(format!(
                "-A {} -s {from}/32 -d {to}/32 -p tcp -m tcp --dport {port} -j ACCEPT",
                chain(p)
            ));
        }
    }
    // The bench's policy: last, so the allowed pair is found after every other.
    let bench = chain(synthetic);
    out.push(format!("-A {FORWARD_CHAIN} -j {bench}"));
    for client in &input.clients {
        for server in &input.servers {
            out.push(format!(
                "-A {bench} -s {client}/32 -d {server}/32 -p tcp -m multiport --dports {ECHO_PORT},{SINK_PORT} -j ACCEPT"
            ));
            out.push(format!(
                "-A {bench} -s {client}/32 -d {server}/32 -p udp -m udp --dport {ECHO_PORT} -j ACCEPT"
            ));
        }
    }
    // Isolation: what no rule accepted, to or from an isolated pod, is dropped.
    for server in &input.servers {
        out.push(format!("-A {FORWARD_CHAIN} -d {server}/32 -j DROP"));
    }
    for client in &input.clients {
        out.push(format!("-A {FORWARD_CHAIN} -s {client}/32 -j DROP"));
    }
    out.push("COMMIT".to_string());
    out.push(String::new());
    out.join("\n")
}

/// The rules (`-A` lines) of a rule set.
pub fn rule_count(ruleset: &str) -> usize {
    ruleset.lines().filter(|l| l.starts_with("-A ")).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::e2e::firewall::test_input;

    fn input(policies: usize) -> RuleInput {
        test_input(policies, 50)
    }

    #[test]
    fn ten_rules_per_policy_give_the_scale_s_rule_count() {
        for policies in [10, 100, 1_000] {
            let rules = rule_count(&ruleset(&input(policies)));
            let expected = policies * RULES_PER_POLICY;
            assert!(
                (expected..expected + 10).contains(&rules),
                "{policies} policies: {rules} rules"
            );
        }
    }

    #[test]
    fn conntrack_comes_first_and_the_bench_policy_last() {
        let text = ruleset(&input(10));
        let forward: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {FORWARD_CHAIN} ")))
            .collect();
        assert!(
            forward[0].contains("--ctstate RELATED,ESTABLISHED -j ACCEPT"),
            "{forward:?}"
        );
        let jumps: Vec<&&str> = forward
            .iter()
            .filter(|l| l.contains("-j PODWALL-POL-"))
            .collect();
        assert_eq!(jumps.len(), 10, "a chain per policy");
        assert!(jumps[9].ends_with("PODWALL-POL-00009"));
        let bench: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A PODWALL-POL-00009 "))
            .collect();
        assert_eq!(
            bench.len(),
            4,
            "tcp and udp, client to each of two servers: {bench:?}"
        );
        assert!(bench[0].contains("-s 10.244.0.2/32 -d 10.244.0.3/32 -p tcp"));
        let drops: Vec<&&str> = forward.iter().filter(|l| l.ends_with("-j DROP")).collect();
        assert_eq!(
            drops.len(),
            4,
            "invalid, two servers, the client: {drops:?}"
        );
        assert!(text.starts_with("*filter\n") && text.ends_with("COMMIT\n"));
    }
}
