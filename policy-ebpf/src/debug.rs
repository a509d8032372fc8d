//! The kernel debug channel: a few records, through aya-log's ring buffer, of what
//! a verdict alone does not say. The agent drains them into its own log at debug
//! level when run with `-vv`.
//!
//! Off unless the agent turns it on: `PODWALL_KERNEL_DEBUG` is a read-only global
//! (`.rodata`), 0 in the object, which the agent overrides to 1 at load time. The
//! kernel freezes `.rodata` before the programs are verified, so the verifier reads
//! the flag as a constant: with 0 it never walks the logging branches and removes
//! them, and a classifier runs exactly the instructions it would without them.
//!
//! Records, all from `to_tc_action` (the classifiers' one place a verdict becomes a
//! TC action, with the shallowest stack): a packet dropped because it did not
//! parse or because it is of a kind not decided (its reason by name, interface,
//! direction and length), and a new flow dropped because conntrack has no room.

use aya_ebpf::{programs::TcContext, Global};
use aya_log_ebpf::debug;
use policy_common::verdict::{
    DIRECTION_EGRESS, STAT_DROP_ARP_UNSUPPORTED, STAT_DROP_CT_ENDPOINT_LIMIT, STAT_DROP_CT_FULL,
    STAT_DROP_ETHER_TYPE, STAT_DROP_FRAGMENT_TINY, STAT_DROP_IPV6_EXTENSION_CHAIN,
    STAT_DROP_IPV6_ROUTING_HEADER, STAT_DROP_MALFORMED, STAT_DROP_VLAN,
};

use crate::facts::Facts;

/// 1 when the agent loaded the programs with the debug channel on; 0 (the object's
/// value) when not. Its name is `policy_common::debug::KERNEL_DEBUG_GLOBAL`.
#[no_mangle]
static PODWALL_KERNEL_DEBUG: Global<u8> = Global::new(0);

/// Records a drop whose reason `stat` is one the channel reports; nothing when it
/// is off (module comment) or the reason is another.
#[inline(always)]
pub(crate) fn dropped(ctx: &TcContext, facts: &Facts, stat: u32) {
    if PODWALL_KERNEL_DEBUG.load() != 0 {
        record_drop(ctx, facts, stat);
    }
}

/// `dropped` with the channel on, as a BPF subprogram: the record is built in its
/// frame, not in the classifier's.
#[inline(never)]
fn record_drop(ctx: &TcContext, facts: &Facts, stat: u32) {
    let Some(reason) = reported(stat) else {
        return;
    };
    let direction = if facts.direction == DIRECTION_EGRESS {
        "egress"
    } else {
        "ingress"
    };
    debug!(
        ctx,
        "podwall: dropped {} ({}) ifindex={} {} len={}",
        reason,
        stat,
        facts.ifindex,
        direction,
        ctx.len()
    );
}

/// The name of a drop reason the channel reports (the `STATS` counter's name), or
/// `None` for a reason it leaves to the counters and verdict events.
#[inline(always)]
fn reported(stat: u32) -> Option<&'static str> {
    Some(match stat {
        STAT_DROP_MALFORMED => "drop_malformed",
        STAT_DROP_VLAN => "drop_vlan",
        STAT_DROP_ETHER_TYPE => "drop_ether_type",
        STAT_DROP_ARP_UNSUPPORTED => "drop_arp_unsupported",
        STAT_DROP_IPV6_EXTENSION_CHAIN => "drop_ipv6_extension_chain",
        STAT_DROP_IPV6_ROUTING_HEADER => "drop_ipv6_routing_header",
        STAT_DROP_FRAGMENT_TINY => "drop_fragment_tiny",
        STAT_DROP_CT_FULL => "drop_ct_full",
        STAT_DROP_CT_ENDPOINT_LIMIT => "drop_ct_endpoint_limit",
        _ => return None,
    })
}
