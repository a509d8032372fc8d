//! What the sync loop needs of the datapath, as a trait: `Datapath` is the real
//! one, and the loop's unit tests drive a fake (`sync::tests`) that records what
//! was asked of it and fails on demand.

use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

use crate::{
    dataplane::{
        ApplyReport, Datapath, DataplaneError, Frames, InterfaceIndex, MapUsage, PolicyCounters,
        ProgramAhead, RuleName, Stats, TunnelPorts,
    },
    model::ObjectRef,
    policy::{
        compiler::EndpointChange,
        tables::{DatapathTables, EndpointEntry},
    },
};

/// The datapath as the sync loop drives it; each method is `Datapath`'s of the
/// same name.
pub trait Dataplane {
    /// `Datapath::apply_in_place` (`Datapath::apply` when it cannot be).
    fn apply(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError>;
    /// `Datapath::update_peers`.
    fn update_peers(
        &mut self,
        tables: &DatapathTables,
        changed: &[IpNet],
    ) -> Result<ApplyReport, DataplaneError>;
    /// `Datapath::update_classes`.
    fn update_classes(
        &mut self,
        tables: &DatapathTables,
        moved: &[IpNet],
    ) -> Result<Option<ApplyReport>, DataplaneError>;
    /// `Datapath::update_endpoint`.
    fn update_endpoint(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
        change: &EndpointChange,
        ifindex: InterfaceIndex,
    ) -> Result<ApplyReport, DataplaneError>;
    /// `Datapath::add_endpoints`.
    fn add_endpoints(
        &mut self,
        extra: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError>;
    /// `Datapath::add_unattached_endpoints`.
    fn add_unattached_endpoints(
        &mut self,
        extra: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError>;
    /// `Datapath::attach`.
    fn attach(&mut self, interface: &str) -> Result<InterfaceIndex, DataplaneError>;
    /// `Datapath::detach`.
    fn detach(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError>;
    /// `Datapath::attached_interfaces`.
    fn attached(&self) -> BTreeSet<InterfaceIndex>;
    /// `Datapath::attach_exit`.
    fn attach_exit(
        &mut self,
        interface: &str,
        frames: Frames,
    ) -> Result<InterfaceIndex, DataplaneError>;
    /// `Datapath::detach_exit`.
    fn detach_exit(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError>;
    /// `Datapath::exit_interfaces`.
    fn exits(&self) -> BTreeSet<InterfaceIndex>;
    /// `Datapath::node_sockets_attached`.
    fn node_sockets_attached(&self) -> bool;
    /// `Datapath::attach_node_sockets`.
    fn attach_node_sockets(&mut self) -> Result<(), DataplaneError>;
    /// `Datapath::set_tunnel_ports`.
    fn set_tunnel_ports(&mut self, node_ports: &[u16]) -> Result<TunnelPorts, DataplaneError>;
    /// `Datapath::map_usage`.
    fn map_usage(&self) -> Vec<MapUsage>;
    /// `Datapath::policy_counters`.
    fn policy_counters(&self, tables: &DatapathTables) -> Result<PolicyCounters, DataplaneError>;
    /// `Datapath::rule_slots`.
    fn rule_slots(&self) -> BTreeMap<u32, RuleName>;
    /// `Datapath::stats`.
    fn stats(&self) -> Result<Stats, DataplaneError>;
    /// `Datapath::programs_ahead`.
    fn programs_ahead(
        &mut self,
        names: &BTreeMap<InterfaceIndex, String>,
    ) -> Result<Vec<ProgramAhead>, DataplaneError>;
}

impl Dataplane for Datapath {
    fn apply(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        Datapath::apply_in_place(self, tables, interfaces, extra_endpoints)
    }
    fn update_peers(
        &mut self,
        tables: &DatapathTables,
        changed: &[IpNet],
    ) -> Result<ApplyReport, DataplaneError> {
        Datapath::update_peers(self, tables, changed)
    }
    fn update_classes(
        &mut self,
        tables: &DatapathTables,
        moved: &[IpNet],
    ) -> Result<Option<ApplyReport>, DataplaneError> {
        Datapath::update_classes(self, tables, moved)
    }
    fn update_endpoint(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
        change: &EndpointChange,
        ifindex: InterfaceIndex,
    ) -> Result<ApplyReport, DataplaneError> {
        Datapath::update_endpoint(self, tables, interfaces, extra_endpoints, change, ifindex)
    }
    fn add_endpoints(
        &mut self,
        extra: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        Datapath::add_endpoints(self, extra)
    }
    fn add_unattached_endpoints(
        &mut self,
        extra: &BTreeMap<InterfaceIndex, EndpointEntry>,
    ) -> Result<ApplyReport, DataplaneError> {
        Datapath::add_unattached_endpoints(self, extra)
    }
    fn attach(&mut self, interface: &str) -> Result<InterfaceIndex, DataplaneError> {
        Datapath::attach(self, interface)
    }
    fn detach(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError> {
        Datapath::detach(self, ifindex)
    }
    fn attached(&self) -> BTreeSet<InterfaceIndex> {
        self.attached_interfaces().collect()
    }
    fn attach_exit(
        &mut self,
        interface: &str,
        frames: Frames,
    ) -> Result<InterfaceIndex, DataplaneError> {
        Datapath::attach_exit(self, interface, frames)
    }
    fn detach_exit(&mut self, ifindex: InterfaceIndex) -> Result<(), DataplaneError> {
        Datapath::detach_exit(self, ifindex)
    }
    fn exits(&self) -> BTreeSet<InterfaceIndex> {
        self.exit_interfaces().collect()
    }
    fn node_sockets_attached(&self) -> bool {
        Datapath::node_sockets_attached(self)
    }
    fn attach_node_sockets(&mut self) -> Result<(), DataplaneError> {
        Datapath::attach_node_sockets(self)
    }
    fn set_tunnel_ports(&mut self, node_ports: &[u16]) -> Result<TunnelPorts, DataplaneError> {
        Datapath::set_tunnel_ports(self, node_ports)
    }
    fn map_usage(&self) -> Vec<MapUsage> {
        Datapath::map_usage(self)
    }
    fn policy_counters(&self, tables: &DatapathTables) -> Result<PolicyCounters, DataplaneError> {
        Datapath::policy_counters(self, tables)
    }
    fn rule_slots(&self) -> BTreeMap<u32, RuleName> {
        Datapath::rule_slots(self)
    }
    fn stats(&self) -> Result<Stats, DataplaneError> {
        Datapath::stats(self)
    }
    fn programs_ahead(
        &mut self,
        names: &BTreeMap<InterfaceIndex, String>,
    ) -> Result<Vec<ProgramAhead>, DataplaneError> {
        Datapath::programs_ahead(self, names)
    }
}
