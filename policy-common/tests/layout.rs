//! Layout tests of the kernel<->user ABI: the offsets the BPF program and the LPM
//! prefix lengths rely on. A reordered or resized field fails here first.

use core::mem::{offset_of, size_of};

use policy_common::{
    ct::{CtKey, CtValue},
    endpoint::EndpointInfo,
    peer::PeerClass,
    policy::{PolicyKey, PolicyValue, PREFIX_ALL_PORTS, PREFIX_ALL_PROTOCOLS, PREFIX_FULL},
};

#[test]
fn policy_key_prefixes_end_exactly_at_their_fields() {
    assert_eq!(offset_of!(PolicyKey, endpoint_id), 0);
    assert_eq!(offset_of!(PolicyKey, class_id), 4);
    assert_eq!(offset_of!(PolicyKey, direction), 8);
    assert_eq!(offset_of!(PolicyKey, protocol), 9);
    assert_eq!(offset_of!(PolicyKey, port_be), 10);
    // "All protocols" matches endpoint, class and direction; "all ports" adds the
    // protocol; a full key adds the port. Each prefix must end where the next
    // field begins, or a wildcard would swallow part of a field.
    assert_eq!(
        PREFIX_ALL_PROTOCOLS as usize,
        offset_of!(PolicyKey, protocol) * 8
    );
    assert_eq!(
        PREFIX_ALL_PORTS as usize,
        offset_of!(PolicyKey, port_be) * 8
    );
    assert_eq!(PREFIX_FULL as usize, size_of::<PolicyKey>() * 8);
}

#[test]
fn map_types_have_no_hidden_padding() {
    assert_eq!(size_of::<PolicyKey>(), 4 + 4 + 1 + 1 + 2);
    assert_eq!(size_of::<PolicyValue>(), 4 + 4);
    assert_eq!(size_of::<EndpointInfo>(), 4 + 4);
    assert_eq!(size_of::<PeerClass>(), 4 + 4);
    assert_eq!(size_of::<CtKey>(), 4 + 16 + 16 + 2 + 2 + 1 + 1 + 2);
    assert_eq!(offset_of!(CtKey, pad), 42);
    assert_eq!(size_of::<CtValue>(), 8 + 4 + 4);
}
