//! What the node says, as `plan` takes it: where the local pods' addresses lead
//! (`node::PodRoute`: interfaces, the bridge, the neighbour evidence) and the links
//! (`node::Link` as `plan::PlanLink`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::plan::PlanLink;
use crate::node::{Link, LinkKind, NodeError, RouteResolver};

/// Where the local pods' addresses lead (`node::PodRoute`), as the plan takes it.
pub(super) struct Resolved {
    /// Address -> the pod interfaces it leads to (`plan::PlanInput::routes`).
    pub routes: BTreeMap<IpAddr, BTreeSet<u32>>,
    /// Address -> the bridge port its neighbour entry leads to (evidence only).
    pub neighbours: BTreeMap<IpAddr, u32>,
    /// Bridges a route to a local pod address goes through.
    pub bridges: BTreeSet<u32>,
}

impl Resolved {
    /// Resolves `addresses` over one resolver (it caches links, bridge ports,
    /// neighbours and the FDB for the pass).
    pub(super) fn of(addresses: BTreeSet<IpAddr>) -> Result<Self, NodeError> {
        let mut resolver = RouteResolver::open()?;
        let mut out = Self {
            routes: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            bridges: BTreeSet::new(),
        };
        for ip in addresses {
            let route = resolver.resolve_pod(ip)?;
            if !route.interfaces.is_empty() {
                out.routes.insert(ip, route.interfaces);
            }
            if let Some(port) = route.neighbour_port {
                out.neighbours.insert(ip, port);
            }
            out.bridges.extend(route.bridge);
        }
        Ok(out)
    }
}

/// The links as the plan sees them.
pub(super) fn plan_links(links: &BTreeMap<u32, Link>) -> BTreeMap<u32, PlanLink> {
    links
        .iter()
        .map(|(index, link)| {
            let view = PlanLink {
                name: link.name.clone(),
                master: link.master,
                bridge: link.kind == LinkKind::Bridge,
                frames: link.frames,
            };
            (*index, view)
        })
        .collect()
}
