//! One local endpoint's entries written in place into the active bank
//! (`Banks::update_endpoint`): a pod that came or went in an endpoint id that
//! stays (`policy::compiler::Recompiled::Endpoint`), with no flip and no grace
//! period to wait.

use aya::maps::MapError;
use policy_common::{
    endpoint::{AddressKey, EndpointInfo, EndpointKey},
    maps,
    peer::PeerClass,
};

use super::{grown, news, removed_or_absent, ApplyReport, Banks, Written};
use crate::dataplane::{keys::PeerPrefix, maps::map_error, DataplaneError, InterfaceIndex};

/// The entries of one endpoint to bring to these values in the active bank
/// (`None`: no entry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(in crate::dataplane) struct EndpointEntries {
    /// `ENDPOINTS`: its interface's entry.
    pub endpoints: Vec<(InterfaceIndex, Option<EndpointInfo>)>,
    /// `ENDPOINT_ADDRS`: its addresses' entries (address keys, `address_key`).
    pub addresses: Vec<([u8; 16], Option<InterfaceIndex>)>,
    /// Peer entries of its IPv4 prefixes.
    pub peers_v4: Vec<(PeerPrefix<[u8; 4]>, Option<PeerClass>)>,
    /// Peer entries of its IPv6 prefixes.
    pub peers_v6: Vec<(PeerPrefix<[u8; 16]>, Option<PeerClass>)>,
}

impl Banks {
    /// Brings the entries `entries` names to those values in the active bank
    /// itself, then moves `ACTIVE` on by two generations (the same bank: every
    /// tracked flow is re-decided at its next packet, which `fast.rs` needs after
    /// an `ENDPOINTS` or `ENDPOINT_ADDRS` entry of the active bank changed). No
    /// bank is left, so nothing waits for a grace period; the other bank catches
    /// up at the next `install`, from its own shadow.
    ///
    /// For the caller that knows the active bank differs from what it wants in
    /// these entries alone, those of one pod that came or went in an endpoint id
    /// that keeps other pods (no rule set, class or id moves). Each entry changes
    /// in one update (overwritten, never removed and added), and the order keeps
    /// every packet's verdict to what the state before or the state after would
    /// give it, or a drop:
    /// 1. address entries that go (a pod that leaves can no longer send from its
    ///    addresses, pass anti-spoofing or be a Service client: `ENDPOINT_ADDRS`
    ///    is what vouches for a local source);
    /// 2. its `ENDPOINTS` entry (a new pod's interface, pending until now, gets
    ///    its id; a leaving one's goes, or back to pending): while no address of
    ///    its is its own, its egress is dropped as spoofed whatever the entry says,
    ///    and its ingress is decided by this entry, the state after's;
    /// 3. peer entries (how other endpoints classify its addresses): set while it
    ///    cannot send from them, so the first packet from a new pod is classified
    ///    as the pod it is, and a leaving pod's class goes only once it cannot;
    /// 4. address entries that come: last, once its entry and class are in place.
    ///
    /// The bank not read gets only the removals of `ENDPOINTS` entries
    /// (`remove_gone_interfaces_from_idle`): packets that read `ACTIVE` before
    /// the last flip may read it until that flip's grace period is over, and a
    /// removal of an address's entry there could widen what they see. The next
    /// `install` writes the rest from its shadow before it is read again.
    ///
    /// Refused before any write if a map would outgrow its bank. Entries the bank
    /// already holds are not written, and with nothing to write the generation
    /// stays; whatever landed is followed by the move, even when a later write
    /// failed (`renew`: a failed move stays owed; adoption makes one).
    pub(in crate::dataplane) fn update_endpoint(
        &mut self,
        entries: &EndpointEntries,
    ) -> Result<ApplyReport, DataplaneError> {
        // An owed move first, whatever happens next (a refusal, a failed write).
        self.renew(false)?;
        let bank = self.active;
        let shadow = &self.shadows[bank as usize];
        let endpoints = news(&shadow.endpoints, &entries.endpoints);
        let addresses = news(&shadow.addresses, &entries.addresses);
        let v4 = news(&shadow.peers_v4, &entries.peers_v4);
        let v6 = news(&shadow.peers_v6, &entries.peers_v6);
        if endpoints.is_empty() && addresses.is_empty() && v4.is_empty() && v6.is_empty() {
            return Ok(ApplyReport {
                written: 0,
                removed: 0,
                bank,
            });
        }
        self.check_counts([
            (maps::ENDPOINTS.name, grown(&shadow.endpoints, &endpoints)),
            (
                maps::ENDPOINT_ADDRS.name,
                grown(&shadow.addresses, &addresses),
            ),
            (maps::PEERS_V4.name, grown(&shadow.peers_v4, &v4)),
            (maps::PEERS_V6.name, grown(&shadow.peers_v6, &v6)),
        ])?;
        let (going, coming): (Vec<_>, Vec<_>) = addresses
            .into_iter()
            .partition(|(_, ifindex)| ifindex.is_none());
        let mut done = Written::default();
        let mut shadow = std::mem::take(&mut self.shadows[bank as usize]);
        let result = self
            .set_addresses(bank, &mut shadow.addresses, &going, &mut done)
            .and_then(|()| self.set_endpoints(bank, &mut shadow.endpoints, &endpoints, &mut done))
            .and_then(|()| self.set_peers(bank, &mut shadow, &v4, &v6, &mut done))
            .and_then(|()| self.set_addresses(bank, &mut shadow.addresses, &coming, &mut done));
        self.shadows[bank as usize] = shadow;
        // Whatever landed is followed by the move, even when a later write failed:
        // no flow keeps a decision made with the entries it replaced.
        // The write's own error first: the renew's says less.
        let renewed = self.renew(done.written + done.removed > 0);
        result?;
        renewed?;
        self.remove_gone_interfaces_from_idle(&endpoints)?;
        Ok(ApplyReport {
            written: done.written,
            removed: done.removed,
            bank,
        })
    }

    /// Removes from the bank not read the `ENDPOINTS` entries `endpoints`
    /// removed from the active one, so churn written in place does not fill that
    /// bank's share of `ENDPOINTS` with interfaces gone (which would refuse a new
    /// veth's pending entry until a flip). Only these: a packet that meets no
    /// `ENDPOINTS` entry is dropped as from an unknown endpoint, so this narrows
    /// what a packet of the last flip's grace period sees, where removing an
    /// address's entry could widen it.
    fn remove_gone_interfaces_from_idle(
        &mut self,
        endpoints: &[(InterfaceIndex, Option<EndpointInfo>)],
    ) -> Result<(), DataplaneError> {
        let bank = policy_common::bank::other(self.active);
        let gone: Vec<_> = endpoints
            .iter()
            .filter(|(ifindex, entry)| {
                entry.is_none() && self.shadows[bank as usize].endpoints.contains_key(ifindex)
            })
            .copied()
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let mut shadow = std::mem::take(&mut self.shadows[bank as usize].endpoints);
        let result = self.set_endpoints(bank, &mut shadow, &gone, &mut Written::default());
        self.shadows[bank as usize].endpoints = shadow;
        result
    }

    /// Sets `ENDPOINTS` entries of bank `bank` (`None`: removed), in order,
    /// keeping `shadow` equal to the kernel entry by entry.
    fn set_endpoints(
        &mut self,
        bank: u32,
        shadow: &mut std::collections::BTreeMap<InterfaceIndex, EndpointInfo>,
        changes: &[(InterfaceIndex, Option<EndpointInfo>)],
        done: &mut Written,
    ) -> Result<(), DataplaneError> {
        let name = maps::ENDPOINTS.name;
        for (ifindex, info) in changes {
            let key = EndpointKey {
                ifindex: *ifindex,
                bank,
            };
            let result = match info {
                Some(info) => self.endpoints.insert(key, *info, 0),
                None => removed_or_absent(self.endpoints.remove(&key)),
            };
            set_one(result, name, info.is_some())?;
            count(shadow, *ifindex, *info, done);
        }
        Ok(())
    }

    /// Sets `ENDPOINT_ADDRS` entries of bank `bank` (`None`: removed), in order,
    /// keeping `shadow` equal to the kernel entry by entry.
    fn set_addresses(
        &mut self,
        bank: u32,
        shadow: &mut std::collections::BTreeMap<[u8; 16], InterfaceIndex>,
        changes: &[([u8; 16], Option<InterfaceIndex>)],
        done: &mut Written,
    ) -> Result<(), DataplaneError> {
        let name = maps::ENDPOINT_ADDRS.name;
        for (addr, ifindex) in changes {
            let key = AddressKey { addr: *addr, bank };
            let result = match ifindex {
                Some(ifindex) => self.addresses.insert(key, *ifindex, 0),
                None => removed_or_absent(self.addresses.remove(&key)),
            };
            set_one(result, name, ifindex.is_some())?;
            count(shadow, *addr, *ifindex, done);
        }
        Ok(())
    }
}

/// One write's result, with the map and what it did for the error.
fn set_one(
    result: Result<(), MapError>,
    name: &'static str,
    insert: bool,
) -> Result<(), DataplaneError> {
    result.map_err(map_error(name, if insert { "insert" } else { "remove" }))
}

/// Records a landed write in `shadow` and `done`.
fn count<K: Ord, V>(
    shadow: &mut std::collections::BTreeMap<K, V>,
    key: K,
    value: Option<V>,
    done: &mut Written,
) {
    match value {
        Some(value) => {
            shadow.insert(key, value);
            done.written += 1;
        }
        None => {
            shadow.remove(&key);
            done.removed += 1;
        }
    }
}
