//! `Datapath::update_endpoint`: a local pod that came or went, written in place
//! into the active bank (`Banks::update_endpoint` has the order and why it is
//! hole-free).

use std::collections::BTreeMap;

use ipnet::IpNet;
use policy_common::endpoint::PENDING_ENDPOINT_ID;

use super::Datapath;
use crate::{
    dataplane::{
        banks::{trie_changes, ApplyReport, EndpointEntries},
        keys, DataplaneError, InterfaceIndex,
    },
    model::ObjectRef,
    policy::{
        compiler::EndpointChange,
        tables::{DatapathTables, EndpointEntry, PeerEntry},
    },
};

impl Datapath {
    /// Brings the entries of `change` (a pod that came or went in an endpoint id
    /// that stays: `policy::compiler::Recompiled::Endpoint`) to what `apply` would
    /// write for `tables`, `interfaces` and `extra_endpoints`, in the active bank,
    /// without a flip or a grace period to wait: the `ENDPOINTS` entry of
    /// `ifindex`, the pod's interface (where it is, for a pod that came; where it
    /// was, for one that went), the `ENDPOINT_ADDRS` entries of its addresses and
    /// the peer entries `change` names. Tracked flows are re-decided at their next
    /// packet, as after `apply`.
    ///
    /// For tables, interfaces and extra entries that differ from those last
    /// applied in these entries alone; anything else goes through `apply`. A pod of
    /// `tables` mapped to another interface than `ifindex`, or an endpoint id at or
    /// above `PENDING_ENDPOINT_ID`, is refused before any write.
    pub fn update_endpoint(
        &mut self,
        tables: &DatapathTables,
        interfaces: &BTreeMap<ObjectRef, InterfaceIndex>,
        extra_endpoints: &BTreeMap<InterfaceIndex, EndpointEntry>,
        change: &EndpointChange,
        ifindex: InterfaceIndex,
    ) -> Result<ApplyReport, DataplaneError> {
        let interface = |pod: &ObjectRef| {
            interfaces
                .get(pod)
                .copied()
                .ok_or_else(|| DataplaneError::NoInterface {
                    pod: pod.to_string(),
                })
        };
        // As `apply`: the pod's entry on its interface, else the extra one, else
        // none.
        let endpoint = match tables.endpoints.get(&change.pod) {
            Some(entry) => {
                if interface(&change.pod)? != ifindex {
                    return Err(DataplaneError::NoInterface {
                        pod: format!("{} on interface {ifindex}", change.pod),
                    });
                }
                if entry.endpoint_id >= PENDING_ENDPOINT_ID {
                    return Err(DataplaneError::EndpointId {
                        endpoint_id: entry.endpoint_id,
                        owner: format!("pod {}", change.pod),
                        limit: PENDING_ENDPOINT_ID,
                    });
                }
                Some(entry)
            }
            None => extra_endpoints.get(&ifindex),
        };
        let mut addresses = Vec::with_capacity(change.addresses.len());
        for addr in &change.addresses {
            let owner = match tables.endpoint_addresses.get(addr) {
                Some(pod) => Some(interface(pod)?),
                None => None,
            };
            addresses.push((keys::address_key(*addr), owner));
        }
        let present: BTreeMap<IpNet, PeerEntry> = change
            .peers
            .iter()
            .filter_map(|net| Some((*net, *tables.peers.get(net)?)))
            .collect();
        let absent: BTreeMap<IpNet, PeerEntry> = change
            .peers
            .iter()
            .filter(|net| !present.contains_key(net))
            .map(|net| (*net, PeerEntry::default()))
            .collect();
        let (set_v4, set_v6) = keys::peer_keys(&present);
        let (gone_v4, gone_v6) = keys::peer_keys(&absent);
        let entries = EndpointEntries {
            endpoints: vec![(ifindex, endpoint.map(keys::endpoint_value))],
            addresses,
            peers_v4: trie_changes(set_v4, gone_v4.into_keys()),
            peers_v6: trie_changes(set_v6, gone_v6.into_keys()),
        };
        let report = self.banks.update_endpoint(&entries)?;
        tracing::debug!(
            pod = %change.pod,
            ifindex,
            written = report.written,
            removed = report.removed,
            bank = report.bank,
            "endpoint entries updated in place"
        );
        Ok(report)
    }
}
