//! `DatapathTables` as text: endpoints, peers, rule sets and their entries.

use std::fmt;

use super::{DatapathTables, Direction, EndpointEntry};

impl fmt::Display for DatapathTables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "endpoints:")?;
        let isolation =
            |e: &EndpointEntry, direction| match (e.isolated(direction), e.audit(direction)) {
                (true, true) => "isolated (audit)",
                (true, false) => "isolated",
                (false, _) => "open",
            };
        for (pod, e) in &self.endpoints {
            writeln!(
                f,
                "  {pod}: id={} ingress={} egress={}{}",
                e.endpoint_id,
                isolation(e, Direction::Ingress),
                isolation(e, Direction::Egress),
                if e.allow_tunnels { " tunnels" } else { "" },
            )?;
        }
        writeln!(f, "peers:")?;
        for (net, peer) in &self.peers {
            let flags = match (peer.node, peer.service) {
                (true, true) => " (node, service)",
                (true, false) => " (node)",
                (false, true) => " (service)",
                (false, false) => "",
            };
            writeln!(f, "  {net} -> class {}{flags}", peer.class_id)?;
        }
        writeln!(f, "rule sets:")?;
        for (m, id) in &self.rule_sets {
            writeln!(
                f,
                "  ep={} class={} {:?} -> set {id}",
                m.endpoint_id, m.class_id, m.direction
            )?;
        }
        writeln!(f, "policy:")?;
        for (id, set) in &self.policy {
            for (m, decision) in &set.entries {
                let proto = m.protocol.map_or("*".to_string(), |p| p.to_string());
                let port = m.port.map_or("*".to_string(), |p| match p.bits {
                    16 => p.first.to_string(),
                    bits => {
                        let last = u32::from(p.first) + (1u32 << (16 - bits)) - 1;
                        format!("{}-{last}", p.first)
                    }
                });
                let named = |rule: &super::RuleRef| {
                    let name = self
                        .policy_names
                        .get(rule.policy_id as usize)
                        .map_or("?".to_string(), ToString::to_string);
                    format!("{name} rule {}", rule.rule_index)
                };
                let decided = match decision {
                    super::Decision::Allow(rule) => named(rule),
                    super::Decision::Deny(rule) => format!("deny by {}", named(rule)),
                    super::Decision::WouldDeny(rule) => format!("would-deny by {}", named(rule)),
                    super::Decision::NetworkDrop => "network policy drop".to_string(),
                    super::Decision::NetworkWouldDrop => "network policy would-drop".to_string(),
                    super::Decision::Default => "default allow".to_string(),
                };
                writeln!(
                    f,
                    "  set {id} {:?} proto={proto} port={port} -> {decided}",
                    set.direction
                )?;
            }
        }
        Ok(())
    }
}
