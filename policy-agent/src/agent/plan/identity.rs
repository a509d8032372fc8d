//! Rules 3 to 7 of `plan`: which local pod is which interface, what contests an
//! interface, and the conflicts reported without being followed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use crate::model::{ObjectRef, Pod};

/// An interface as conflicts name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    /// Its ifindex.
    pub index: u32,
    /// Its name (empty if the link is not known).
    pub name: String,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "ifindex {}", self.index)
        } else {
            write!(f, "{} (ifindex {})", self.name, self.index)
        }
    }
}

/// Something that says a pod address belongs elsewhere than where the plan
/// maps it. Reported (log, metric, `/readyz` detail), never followed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Conflict {
    /// Rule 4: `address` of `pod` also leads to `other`; the pod keeps `kept`.
    AlsoElsewhere {
        /// The pod.
        pod: ObjectRef,
        /// Its address that leads elsewhere too.
        address: IpAddr,
        /// Where else it leads.
        other: Port,
        /// The interface the pod holds and keeps.
        kept: Port,
    },
    /// Rule 4: `address` of `pod` leads to `interface`, which `holder` holds; `pod`
    /// is not mapped there.
    HeldByAnother {
        /// The pod whose address leads there.
        pod: ObjectRef,
        /// That address.
        address: IpAddr,
        /// The interface.
        interface: Port,
        /// The pod that holds it.
        holder: ObjectRef,
    },
    /// Rule 7: the node's neighbour entry of `address` and the bridge's forwarding
    /// database lead to `port`, not to `pod`'s interface.
    Neighbour {
        /// The pod that owns the address.
        pod: ObjectRef,
        /// The address.
        address: IpAddr,
        /// Where the neighbour entry and the FDB lead.
        port: Port,
        /// The pod's interface (kept).
        interface: Port,
    },
}

impl Conflict {
    /// The pod the conflict is about.
    pub fn pod(&self) -> &ObjectRef {
        match self {
            Conflict::AlsoElsewhere { pod, .. }
            | Conflict::HeldByAnother { pod, .. }
            | Conflict::Neighbour { pod, .. } => pod,
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::AlsoElsewhere {
                pod,
                address,
                other,
                kept,
            } => write!(
                f,
                "pod {pod}: its address {address} also leads to {other}; it keeps {kept}"
            ),
            Conflict::HeldByAnother {
                pod,
                address,
                interface,
                holder,
            } => write!(
                f,
                "pod {pod}: its address {address} leads to {interface}, which pod {holder} holds; not mapped there"
            ),
            Conflict::Neighbour {
                pod,
                address,
                port,
                interface,
            } => write!(
                f,
                "pod {pod}: the node's neighbour entry for {address} leads to bridge port {port}, not to its interface {interface} (a forged ARP/NDP reply or MAC?); its identity is kept"
            ),
        }
    }
}

/// Who is which interface (rules 3 to 7).
#[derive(Debug, Default)]
pub(super) struct Mapping {
    pub interfaces: BTreeMap<ObjectRef, u32>,
    pub contested: BTreeMap<u32, BTreeSet<ObjectRef>>,
    pub conflicts: BTreeSet<Conflict>,
}

/// Maps `pods` (the local ones) to interfaces from `routes` (address -> the
/// interfaces it leads to), keeping what `previous` (the last plan) held.
/// `neighbours` (address -> the bridge port its neighbour entry leads to) only
/// adds conflicts; `port` names an interface.
pub(super) fn map(
    pods: &[&Pod],
    routes: &BTreeMap<IpAddr, BTreeSet<u32>>,
    previous: &BTreeMap<ObjectRef, u32>,
    neighbours: &BTreeMap<IpAddr, u32>,
    port: &dyn Fn(u32) -> Port,
) -> Mapping {
    // Rule 3: each pod's targets, with the address that leads there.
    let targets: BTreeMap<&ObjectRef, BTreeSet<(u32, IpAddr)>> = pods
        .iter()
        .map(|pod| {
            let found = pod
                .ips
                .iter()
                .flat_map(|ip| routes.get(ip).into_iter().flatten().map(|i| (*i, *ip)))
                .collect();
            (&pod.key, found)
        })
        .collect();
    // Rule 4: what each pod holds.
    let held: BTreeMap<u32, &ObjectRef> = targets
        .iter()
        .filter_map(|(key, found)| {
            let index = *previous.get(*key)?;
            found
                .iter()
                .any(|(i, _)| *i == index)
                .then_some((index, *key))
        })
        .collect();
    let holding: BTreeSet<&ObjectRef> = held.values().copied().collect();
    let mut out = Mapping::default();
    for (index, key) in &held {
        out.interfaces.insert((*key).clone(), *index);
        for (other, address) in &targets[key] {
            if other != index {
                out.conflicts.insert(Conflict::AlsoElsewhere {
                    pod: (*key).clone(),
                    address: *address,
                    other: port(*other),
                    kept: port(*index),
                });
            }
        }
    }
    // Rules 4-6 for the pods that hold nothing.
    let mut free_claims: BTreeMap<u32, BTreeSet<&ObjectRef>> = BTreeMap::new();
    let mut blocked: BTreeSet<&ObjectRef> = BTreeSet::new();
    for (key, found) in targets.iter().filter(|(key, _)| !holding.contains(*key)) {
        for (index, address) in found {
            match held.get(index) {
                Some(holder) => {
                    blocked.insert(key);
                    out.conflicts.insert(Conflict::HeldByAnother {
                        pod: (*key).clone(),
                        address: *address,
                        interface: port(*index),
                        holder: (*holder).clone(),
                    });
                }
                None => {
                    free_claims.entry(*index).or_default().insert(key);
                }
            }
        }
    }
    for (key, found) in targets.iter().filter(|(key, _)| !holding.contains(*key)) {
        let free: BTreeSet<u32> = found
            .iter()
            .map(|(i, _)| *i)
            .filter(|i| !held.contains_key(i))
            .collect();
        let only = match free.iter().collect::<Vec<_>>()[..] {
            [only] if !blocked.contains(key) => Some(*only),
            _ => None,
        };
        match only {
            Some(index) if free_claims[&index].len() == 1 => {
                out.interfaces.insert((*key).clone(), index);
            }
            _ => {
                for index in free {
                    out.contested
                        .entry(index)
                        .or_default()
                        .insert((*key).clone());
                }
            }
        }
    }
    for (index, claimants) in &free_claims {
        if claimants.len() > 1 {
            out.contested
                .entry(*index)
                .or_default()
                .extend(claimants.iter().map(|key| (*key).clone()));
        }
    }
    // Rule 7.
    for pod in pods {
        let Some(index) = out.interfaces.get(&pod.key) else {
            continue;
        };
        for address in &pod.ips {
            match neighbours.get(address) {
                Some(learned) if learned != index => {
                    out.conflicts.insert(Conflict::Neighbour {
                        pod: pod.key.clone(),
                        address: *address,
                        port: port(*learned),
                        interface: port(*index),
                    });
                }
                _ => {}
            }
        }
    }
    out
}
