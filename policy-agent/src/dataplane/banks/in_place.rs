//! One local endpoint's entries written in place into the active bank
//! (`Banks::update_endpoint`): a pod that came or went in an endpoint id that
//! stays (`policy::compiler::Recompiled::Endpoint`), with no flip and no grace
//! period to wait.

use std::collections::BTreeMap;

use aya::maps::MapError;
use policy_common::{
    endpoint::{AddressKey, EndpointInfo, EndpointKey, EndpointValue, OwnAddresses},
    maps,
    peer::PeerClass,
};

use super::{
    grown, news, own_addresses, own_common, removed_or_absent, ApplyReport, Banks, OwnShadow,
    Written,
};
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
    /// give it, or a drop. An `ENDPOINTS` value's own addresses
    /// (`OwnAddresses`) vouch for a local address as `ENDPOINT_ADDRS` does, so
    /// each claim is taken out before the address entry it rests on goes or
    /// moves, and made only after that entry names the interface (the claims
    /// each interface keeps throughout are `own_common` of before and after):
    /// 0. the `ENDPOINTS` values of interfaces that lose a claim (the pod's own,
    ///    or another's whose address this write gives away): the same endpoint,
    ///    with only the claims kept;
    /// 1. address entries that go (a pod that leaves can no longer send from its
    ///    addresses, pass anti-spoofing or be a Service client: `ENDPOINT_ADDRS`
    ///    and the claims are what vouch for a local source);
    /// 2. its `ENDPOINTS` entry (a new pod's interface, pending until now, gets
    ///    its id; a leaving one's goes, or back to pending), with the claims
    ///    kept: while no address of its is its own, its egress is dropped as
    ///    spoofed whatever the entry says, and its ingress is decided by this
    ///    entry, the state after's;
    /// 3. peer entries (how other endpoints classify its addresses): set while it
    ///    cannot send from them, so the first packet from a new pod is classified
    ///    as the pod it is, and a leaving pod's class goes only once it cannot;
    /// 4. address entries that come: once its entry and class are in place;
    /// 5. the `ENDPOINTS` values that gain a claim: last, once the address
    ///    entries they rest on are in place.
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
        let steps = own_steps(
            &shadow.endpoints,
            &shadow.addresses,
            &self.owns[bank as usize],
            &endpoints,
            &addresses,
        );
        let (going, coming): (Vec<_>, Vec<_>) = addresses
            .into_iter()
            .partition(|(_, ifindex)| ifindex.is_none());
        let mut done = Written::default();
        let mut shadow = std::mem::take(&mut self.shadows[bank as usize]);
        let mut own = std::mem::take(&mut self.owns[bank as usize]);
        let result = self
            .set_endpoints(
                bank,
                &mut shadow.endpoints,
                &mut own,
                &steps.narrow,
                &mut done,
            )
            .and_then(|()| self.set_addresses(bank, &mut shadow.addresses, &going, &mut done))
            .and_then(|()| {
                self.set_endpoints(
                    bank,
                    &mut shadow.endpoints,
                    &mut own,
                    &steps.entry,
                    &mut done,
                )
            })
            .and_then(|()| self.set_peers(bank, &mut shadow, &v4, &v6, &mut done))
            .and_then(|()| self.set_addresses(bank, &mut shadow.addresses, &coming, &mut done))
            .and_then(|()| {
                self.set_endpoints(
                    bank,
                    &mut shadow.endpoints,
                    &mut own,
                    &steps.widen,
                    &mut done,
                )
            });
        self.shadows[bank as usize] = shadow;
        self.owns[bank as usize] = own;
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
        let gone: Vec<_> = gone
            .into_iter()
            .map(|(ifindex, _)| (ifindex, None))
            .collect();
        let mut shadow = std::mem::take(&mut self.shadows[bank as usize].endpoints);
        let mut own = std::mem::take(&mut self.owns[bank as usize]);
        let result =
            self.set_endpoints(bank, &mut shadow, &mut own, &gone, &mut Written::default());
        self.shadows[bank as usize].endpoints = shadow;
        self.owns[bank as usize] = own;
        result
    }

    /// Sets `ENDPOINTS` entries of bank `bank` (`None`: removed), in order,
    /// keeping `shadow` and `own` equal to the kernel entry by entry.
    fn set_endpoints(
        &mut self,
        bank: u32,
        shadow: &mut BTreeMap<InterfaceIndex, EndpointInfo>,
        own: &mut OwnShadow,
        changes: &[(InterfaceIndex, Option<EndpointValue>)],
        done: &mut Written,
    ) -> Result<(), DataplaneError> {
        let name = maps::ENDPOINTS.name;
        for (ifindex, value) in changes {
            let key = EndpointKey {
                ifindex: *ifindex,
                bank,
            };
            let result = match value {
                Some(value) => self.endpoints.insert(key, *value, 0),
                None => removed_or_absent(self.endpoints.remove(&key)),
            };
            set_one(result, name, value.is_some())?;
            match value {
                Some(value) => own.insert(*ifindex, value.own),
                None => own.remove(ifindex),
            };
            count(shadow, *ifindex, value.map(|value| value.info), done);
        }
        Ok(())
    }

    /// Sets `ENDPOINT_ADDRS` entries of bank `bank` (`None`: removed), in order,
    /// keeping `shadow` equal to the kernel entry by entry.
    fn set_addresses(
        &mut self,
        bank: u32,
        shadow: &mut BTreeMap<[u8; 16], InterfaceIndex>,
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

/// Records a landed write in `shadow` and `done` (the in-place writers' one
/// bookkeeping).
pub(super) fn count<K: Ord, V>(
    shadow: &mut BTreeMap<K, V>,
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

/// The `ENDPOINTS` writes of one `update_endpoint`, in the order it makes them.
#[derive(Debug, Default, PartialEq, Eq)]
struct OwnSteps {
    /// Step 0: interfaces that lose a claim, with their current endpoint and
    /// only the claims kept.
    narrow: Vec<(InterfaceIndex, Option<EndpointValue>)>,
    /// Step 2: the endpoint entries the write changes, with the claims kept.
    entry: Vec<(InterfaceIndex, Option<EndpointValue>)>,
    /// Step 5: interfaces that gain a claim, with their final value.
    widen: Vec<(InterfaceIndex, Option<EndpointValue>)>,
}

/// The `ENDPOINTS` writes that take a bank holding `endpoints`, `addresses` and
/// claims `own` to one where `endpoint_changes` and `address_changes` are made
/// (`None`: removed) and every endpoint claims what `own_addresses` gives it, in
/// `update_endpoint`'s order: no claim is made before the address entry it rests
/// on names its interface, and none stays past the write that removes or moves
/// that entry.
fn own_steps(
    endpoints: &BTreeMap<InterfaceIndex, EndpointInfo>,
    addresses: &BTreeMap<[u8; 16], InterfaceIndex>,
    own: &OwnShadow,
    endpoint_changes: &[(InterfaceIndex, Option<EndpointInfo>)],
    address_changes: &[([u8; 16], Option<InterfaceIndex>)],
) -> OwnSteps {
    let mut after_endpoints = endpoints.clone();
    for (ifindex, info) in endpoint_changes {
        match info {
            Some(info) => after_endpoints.insert(*ifindex, *info),
            None => after_endpoints.remove(ifindex),
        };
    }
    let mut after_addresses = addresses.clone();
    for (addr, ifindex) in address_changes {
        match ifindex {
            Some(ifindex) => after_addresses.insert(*addr, *ifindex),
            None => after_addresses.remove(addr),
        };
    }
    let after_own = own_addresses(&after_endpoints, &after_addresses);
    let none = OwnAddresses::default();
    let before = |ifindex: &InterfaceIndex| own.get(ifindex).copied().unwrap_or(none);
    let after = |ifindex: &InterfaceIndex| after_own.get(ifindex).copied().unwrap_or(none);
    let kept = |ifindex: &InterfaceIndex| own_common(&before(ifindex), &after(ifindex));
    let mut steps = OwnSteps::default();
    for (ifindex, info) in endpoints {
        if kept(ifindex) != before(ifindex) {
            let own = kept(ifindex);
            steps
                .narrow
                .push((*ifindex, Some(EndpointValue { info: *info, own })));
        }
    }
    for (ifindex, info) in endpoint_changes {
        let value = info.map(|info| EndpointValue {
            info,
            own: kept(ifindex),
        });
        steps.entry.push((*ifindex, value));
    }
    for (ifindex, info) in &after_endpoints {
        if after(ifindex) != kept(ifindex) {
            let own = after(ifindex);
            steps
                .widen
                .push((*ifindex, Some(EndpointValue { info: *info, own })));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use policy_common::endpoint::{OWN_V4, OWN_V6};

    use super::*;

    fn v4(last: u8) -> [u8; 16] {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, last]
    }

    fn v6(last: u8) -> [u8; 16] {
        let mut addr = [0; 16];
        (addr[0], addr[1], addr[15]) = (0xfd, 0, last);
        addr
    }

    fn info(endpoint_id: u32) -> EndpointInfo {
        EndpointInfo {
            endpoint_id,
            flags: 0,
        }
    }

    /// Plays `steps` with the address changes between them, as `update_endpoint`
    /// does, and checks after every single write that each claim rests on an
    /// address entry naming its interface; returns the claims at the end.
    fn play(
        endpoints: &BTreeMap<InterfaceIndex, EndpointInfo>,
        addresses: &BTreeMap<[u8; 16], InterfaceIndex>,
        address_changes: &[([u8; 16], Option<InterfaceIndex>)],
        steps: &OwnSteps,
    ) -> OwnShadow {
        let mut own = own_addresses(endpoints, addresses);
        let mut addrs = addresses.clone();
        let check = |own: &OwnShadow, addrs: &BTreeMap<[u8; 16], InterfaceIndex>| {
            for (ifindex, claims) in own {
                if claims.flags & OWN_V4 != 0 {
                    let mut key = v4(0);
                    key[12..].copy_from_slice(&claims.v4);
                    assert_eq!(addrs.get(&key), Some(ifindex), "an IPv4 claim of {ifindex}");
                }
                if claims.flags & OWN_V6 != 0 {
                    assert_eq!(
                        addrs.get(&claims.v6),
                        Some(ifindex),
                        "an IPv6 claim of {ifindex}"
                    );
                }
            }
        };
        let write = |own: &mut OwnShadow, writes: &[(InterfaceIndex, Option<EndpointValue>)]| {
            for (ifindex, value) in writes {
                match value {
                    Some(value) => own.insert(*ifindex, value.own),
                    None => own.remove(ifindex),
                };
            }
        };
        write(&mut own, &steps.narrow);
        check(&own, &addrs);
        for (addr, ifindex) in address_changes.iter().filter(|(_, i)| i.is_none()) {
            addrs.remove(addr);
            let _ = ifindex;
            check(&own, &addrs);
        }
        write(&mut own, &steps.entry);
        check(&own, &addrs);
        for (addr, ifindex) in address_changes {
            if let Some(ifindex) = ifindex {
                addrs.insert(*addr, *ifindex);
                check(&own, &addrs);
            }
        }
        write(&mut own, &steps.widen);
        check(&own, &addrs);
        own
    }

    #[test]
    fn a_pod_that_leaves_stops_claiming_its_addresses_before_they_go() {
        let endpoints = BTreeMap::from([(7, info(1)), (8, info(1))]);
        let addresses = BTreeMap::from([(v4(7), 7), (v6(7), 7), (v4(8), 8)]);
        let own = own_addresses(&endpoints, &addresses);
        assert_eq!(own[&7].flags, OWN_V4 | OWN_V6);
        let changes = [(v4(7), None), (v6(7), None)];
        let steps = own_steps(&endpoints, &addresses, &own, &[(7, None)], &changes);
        // Its claims go first, in its own entry, before its address entries.
        assert_eq!(
            steps.narrow,
            vec![(
                7,
                Some(EndpointValue {
                    info: info(1),
                    own: OwnAddresses::default()
                })
            )]
        );
        assert_eq!(steps.entry, vec![(7, None)]);
        assert!(steps.widen.is_empty());
        let end = play(&endpoints, &addresses, &changes, &steps);
        assert!(!end.contains_key(&7));
        assert_eq!(end[&8].flags, OWN_V4);
    }

    #[test]
    fn a_pod_that_comes_claims_its_addresses_only_after_they_name_it() {
        let endpoints = BTreeMap::from([(8, info(1))]);
        let addresses = BTreeMap::from([(v4(8), 8)]);
        let own = own_addresses(&endpoints, &addresses);
        let changes = [(v4(7), Some(7)), (v6(7), Some(7))];
        let steps = own_steps(
            &endpoints,
            &addresses,
            &own,
            &[(7, Some(info(2)))],
            &changes,
        );
        assert!(steps.narrow.is_empty());
        // Its entry first without claims, then the claims once the addresses
        // are in place.
        assert_eq!(
            steps.entry[0].1.map(|v| v.own),
            Some(OwnAddresses::default())
        );
        assert_eq!(steps.widen.len(), 1);
        let end = play(&endpoints, &addresses, &changes, &steps);
        assert_eq!(end[&7].flags, OWN_V4 | OWN_V6);
        assert_eq!(end[&7].v4, [10, 0, 0, 7]);
        assert_eq!(end[&7].v6, v6(7));
    }

    #[test]
    fn an_address_that_moves_to_another_pod_is_unclaimed_before_it_moves() {
        // Interface 8 holds 10.0.0.7 (a stale owner); the pod on 7 takes it.
        let endpoints = BTreeMap::from([(7, info(2)), (8, info(1))]);
        let addresses = BTreeMap::from([(v4(7), 8)]);
        let own = own_addresses(&endpoints, &addresses);
        assert_eq!(own[&8].flags, OWN_V4);
        let changes = [(v4(7), Some(7))];
        let steps = own_steps(
            &endpoints,
            &addresses,
            &own,
            &[(7, Some(info(2)))],
            &changes,
        );
        assert_eq!(steps.narrow.len(), 1);
        assert_eq!(steps.narrow[0].0, 8);
        let end = play(&endpoints, &addresses, &changes, &steps);
        assert_eq!(end[&8].flags, 0);
        assert_eq!(end[&7].flags, OWN_V4);
    }

    #[test]
    fn a_pod_with_two_addresses_of_a_family_claims_none_of_it() {
        let endpoints = BTreeMap::from([(7, info(1))]);
        let addresses = BTreeMap::from([(v4(7), 7), (v4(9), 7), (v6(7), 7)]);
        let own = own_addresses(&endpoints, &addresses);
        assert_eq!(own[&7].flags, OWN_V6);
        // Down to one: claimed then, after the removal.
        let changes = [(v4(9), None)];
        let steps = own_steps(&endpoints, &addresses, &own, &[], &changes);
        let end = play(&endpoints, &addresses, &changes, &steps);
        assert_eq!(end[&7].flags, OWN_V4 | OWN_V6);
    }
}
