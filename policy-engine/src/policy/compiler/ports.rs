//! A rule's `ports` -> the (protocol, port block) parts of `POLICY` keys, and how
//! named ports resolve on a pod.
//!
//! "port represents the port on the given protocol. This can either be a numerical
//! or named port on a pod. If this field is not provided, this matches all port
//! names and numbers. If present, only traffic on the specified protocol AND port
//! will be matched." "endPort indicates that the range of ports from port to endPort
//! if set, inclusive, should be allowed by the policy. This field cannot be defined
//! if the port field is not defined or if the port field is defined as a named
//! (string) port. The endPort must be equal or greater than port."

use std::collections::{BTreeMap, BTreeSet};

use super::applied::PortName;
use crate::{
    model::{Pod, PolicyPort, PortRef, Protocol},
    policy::tables::PortBlock,
};

/// The protocol and port parts of a `PolicyMatch`: `(None, None)` = every protocol,
/// `(Some(p), None)` = every port of `p`.
pub(super) type PortKey = (Option<u8>, Option<PortBlock>);

/// What one `ports` entry (or an empty `ports`) contributes to a rule's entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PortItem<'a> {
    /// These keys, whoever the peer is (empty for an entry that matches nothing).
    Keys(Vec<PortKey>),
    /// A named port: the numbers it resolves to on the pod receiving the traffic.
    Named(&'a str, Protocol),
}

/// The port items of a rule. Entries the API server would reject (endPort below
/// port, or with a named or absent port) match nothing: they give no key.
pub(super) fn port_items(ports: &[PolicyPort]) -> Vec<PortItem<'_>> {
    if ports.is_empty() {
        // "If this field is empty or missing, this rule matches all ports."
        return vec![PortItem::Keys(vec![(None, None)])];
    }
    ports
        .iter()
        .map(|port| {
            let protocol = port.protocol.number();
            match (&port.port, port.end_port) {
                (None, None) => PortItem::Keys(vec![(Some(protocol), None)]),
                (Some(PortRef::Number(first)), None) => {
                    PortItem::Keys(vec![(Some(protocol), Some(PortBlock::single(*first)))])
                }
                (Some(PortRef::Number(first)), Some(last)) => {
                    PortItem::Keys(range_keys(protocol, *first, last))
                }
                (Some(PortRef::Name(name)), None) => PortItem::Named(name, port.protocol),
                (None, Some(_)) | (Some(PortRef::Name(_)), Some(_)) => PortItem::Keys(Vec::new()),
            }
        })
        .collect()
}

/// The keys of `first..=last` on `protocol` (none if `last < first`). The block of
/// all ports is written as "every port of the protocol", the one key the kernel
/// has for it, so that no two keys of the tables mean the same kernel key.
pub(super) fn range_keys(protocol: u8, first: u16, last: u16) -> Vec<PortKey> {
    PortBlock::split_range(first, last)
        .into_iter()
        .map(|block| (Some(protocol), (block.bits > 0).then_some(block)))
        .collect()
}

/// The keys of the numbers a name resolved to.
pub(super) fn number_keys<'a>(
    protocol: Protocol,
    numbers: impl IntoIterator<Item = &'a u16>,
) -> Vec<PortKey> {
    numbers
        .into_iter()
        .map(|number| (Some(protocol.number()), Some(PortBlock::single(*number))))
        .collect()
}

/// A pod's numbers for port names: only names it declares appear.
pub(super) type Resolution = BTreeMap<PortName, BTreeSet<u16>>;

/// How `pod` resolves each of `names`: the container ports with that name and
/// protocol (several containers may declare one name).
pub(super) fn resolve<'n>(pod: &Pod, names: impl IntoIterator<Item = &'n PortName>) -> Resolution {
    let mut out = Resolution::new();
    for (name, protocol) in names {
        let numbers: BTreeSet<u16> = pod.ports_named(name, *protocol).collect();
        if !numbers.is_empty() {
            out.insert((name.clone(), *protocol), numbers);
        }
    }
    out
}
