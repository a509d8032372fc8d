//! What policy says of a flow: steps 8 to 12 of `decide`'s lookup precedence, in
//! one BPF subprogram (`judge`) that decides a new flow's first packet, re-decides
//! a tracked flow another state decided (`recheck`, `ct.rs` transition 5), and
//! decides a source pod's egress at a same-node destination (`service.rs`).
//!
//! One subprogram for all of them keeps the rules in one place, and keeps its keys
//! (a peer prefix, a `POLICY` key) in a stack frame of its own rather than in the
//! classifier's, which the rest of `decide` fills.

use policy_common::{
    counters::{drop_slot, NO_COUNTER},
    ct::{
        CT_FLAG_AUDIT, CT_FLAG_DEFERRED, CT_FLAG_DIRECT, CT_FLAG_REMOTE_PLAIN, CT_FLAG_RULE_SLOT,
    },
    endpoint::{EndpointInfo, ISOLATED_EGRESS, ISOLATED_INGRESS},
    peer::{PEER_FLAG_NODE, PEER_FLAG_SERVICE},
    policy::{
        POLICY_ALLOW, POLICY_DEFAULT, POLICY_DENY, POLICY_NETWORK_DROP, POLICY_NETWORK_WOULD_DROP,
        POLICY_WOULD_DENY,
    },
    verdict::{DIRECTION_INGRESS, STAT_DROP_REVOKED, STAT_DROP_STATE_CHANGED},
};

use crate::{
    audit,
    ct::{self, Hit, Site},
    facts::{Counter, Facts},
    maps,
    parse::Flow,
};

/// `Judgement::kind`: the direction is not isolated (step 8).
pub(crate) const UNISOLATED: u32 = 1;
/// `Judgement::kind`: ingress from the node (step 9).
pub(crate) const NODE: u32 = 2;
/// `Judgement::kind`: egress to a Service ClusterIP, decided after DNAT (step 10).
pub(crate) const SERVICE: u32 = 3;
/// `Judgement::kind`: a `POLICY` rule allows it; the slot is the rule's (step 11).
pub(crate) const RULE: u32 = 4;
/// `Judgement::kind`: an audit-mode direction lets it pass as a would-drop; the
/// slot is the audit deny slot (step 12), or with `RULE_SLOT` the slot of the
/// audit-mode ClusterNetworkPolicy rule that would deny it (step 11).
pub(crate) const AUDIT: u32 = 5;
/// `Judgement::kind`: denied; the slot is the direction's deny slot (step 12),
/// or with `RULE_SLOT` the slot of the ClusterNetworkPolicy rule that denies it
/// (step 11).
pub(crate) const DENIED: u32 = 0;
/// `Judgement::kind`: a rule allowed it while `ACTIVE` moved, or it was denied
/// while `ACTIVE` moved or the agent wrote whole tables in place
/// (`maps::decided_mid_write`): the lookups may have read entries of two states,
/// so the verdict is not trusted; the packet is dropped as
/// `STAT_DROP_STATE_CHANGED` and nothing is tracked or revoked.
pub(crate) const CHANGED: u32 = 6;

/// `Judgement`'s high half, with an ingress verdict's kind: replies to the remote
/// need no deferral (`CT_FLAG_REMOTE_PLAIN`).
const REMOTE_PLAIN: u32 = 1 << 16;

/// `Judgement`'s high half, with an `AUDIT` or `DENIED` kind: the slot is a
/// ClusterNetworkPolicy `Deny` rule's `RULE_COUNTERS` slot, so the packet counts
/// in that rule (a flow tracked by it with `CT_FLAG_RULE_SLOT`).
const RULE_SLOT: u32 = 1 << 17;

/// A verdict and the counter slot that goes with it, packed in one u64 so the
/// subprogram returns it in a register: the kind (`UNISOLATED` .. `DENIED`, with
/// `REMOTE_PLAIN` and `RULE_SLOT`) in the high half, the slot in the low half.
#[derive(Clone, Copy)]
pub(crate) struct Judgement(u64);

impl Judgement {
    #[inline(always)]
    fn new(kind: u32, slot: u32) -> Self {
        Judgement(u64::from(kind) << 32 | u64::from(slot))
    }

    /// `UNISOLATED`, `NODE`, `SERVICE`, `RULE`, `AUDIT` or `DENIED`.
    #[inline(always)]
    pub(crate) fn kind(self) -> u32 {
        (self.0 >> 32) as u32 & !(REMOTE_PLAIN | RULE_SLOT)
    }

    /// Whether the slot is a ClusterNetworkPolicy rule's (`RULE_SLOT`).
    #[inline(always)]
    pub(crate) fn in_rule_slot(self) -> bool {
        (self.0 >> 32) as u32 & RULE_SLOT != 0
    }

    /// Where the packet's bytes count.
    #[inline(always)]
    pub(crate) fn counter(self) -> Counter {
        match self.kind() {
            RULE => Counter::rule(self.slot()),
            AUDIT | DENIED if self.in_rule_slot() => Counter::Rule(self.slot()),
            AUDIT | DENIED => Counter::Deny(self.slot()),
            _ => Counter::None,
        }
    }

    /// The counter slot (`NO_COUNTER` for `UNISOLATED`, `NODE` and `SERVICE`).
    #[inline(always)]
    pub(crate) fn slot(self) -> u32 {
        self.0 as u32
    }

    /// The `CtValue::flags` of a flow tracked by this verdict.
    #[inline(always)]
    pub(crate) fn ct_flags(self) -> u32 {
        let plain = if (self.0 >> 32) as u32 & REMOTE_PLAIN != 0 {
            CT_FLAG_REMOTE_PLAIN
        } else {
            0
        };
        plain
            | match self.kind() {
                SERVICE => CT_FLAG_DEFERRED,
                AUDIT if self.in_rule_slot() => CT_FLAG_AUDIT | CT_FLAG_RULE_SLOT,
                AUDIT => CT_FLAG_AUDIT,
                _ => 0,
            }
    }
}

/// For a verdict on the ingress of `endpoint`: `REMOTE_PLAIN` when the pod's
/// replies to the remote need no deferral, its egress not being isolated or the
/// remote's peer flags (`flags`, looked up only when needed) naming no Service
/// address, or the node's; else 0.
#[inline(always)]
fn remote_plain(endpoint: &EndpointInfo, flags: impl FnOnce() -> u32) -> u32 {
    if endpoint.flags & ISOLATED_EGRESS == 0 {
        return REMOTE_PLAIN;
    }
    let flags = flags();
    if flags & PEER_FLAG_SERVICE == 0 || flags & PEER_FLAG_NODE != 0 {
        REMOTE_PLAIN
    } else {
        0
    }
}

/// What bank `site.bank` says of the flow opened in `site.direction` at
/// `site.ifindex`, whose endpoint there is `endpoint`: `flow` is its first packet
/// or, with `reversed`, a reply (the first packet reversed). A `RULE` verdict also
/// leaves the rule in `facts.rule`, for the allow event of a flow's first packet.
///
/// The rules, for the flow's first packet:
/// 8. a pod not isolated in that direction: `UNISOLATED`;
/// 9. ingress from an address with `PEER_FLAG_NODE`: `NODE`;
/// 10. egress to an address with `PEER_FLAG_SERVICE`: `SERVICE`, unless
///     `facts.translated` (the packet is past Service translation);
/// 11. the peer's class (`maps::peer`) and the protocol and destination port in
///     `POLICY`, by the entry's verdict: an allow is `RULE` with the rule's
///     counter slot, a default allow (no tier decided, where a
///     ClusterNetworkPolicy applies) `UNISOLATED`, both only while `ACTIVE` has
///     not moved since the packet read it (the lookups may span two writes in
///     place; a moved one goes on to step 12); a would-deny or a NetworkPolicy
///     would-drop is `AUDIT`; a deny or a NetworkPolicy drop is `DENIED`, or
///     `CHANGED` while the lookups may have read two states
///     (`maps::decided_mid_write`); a deny or would-deny counts in its rule's
///     slot (`RULE_SLOT`) and leaves its rule in `facts.rule`, for the drop
///     event; a verdict this program does not know is `DENIED` (or `CHANGED`
///     mid-write), never audited;
/// 12. else `AUDIT` when the endpoint audits that direction (also for step 11's
///     `CHANGED`: an audited direction passes either way), `CHANGED` while the
///     lookups may have read two states (`maps::decided_mid_write`), `DENIED`.
#[inline(never)]
pub(crate) fn judge(
    site: Site,
    endpoint: &EndpointInfo,
    flow: &Flow,
    reversed: bool,
    facts: &mut Facts,
) -> Judgement {
    let (direction, bank) = (site.direction, u32::from(site.bank));
    let ingress = direction == DIRECTION_INGRESS;
    let isolation_flag = if ingress {
        ISOLATED_INGRESS
    } else {
        ISOLATED_EGRESS
    };
    // The first packet's remote end (its source at ingress, its destination at
    // egress) and destination port.
    let (remote, port_be) = match (ingress, reversed) {
        (true, false) => (&flow.saddr, flow.dport_be),
        (true, true) => (&flow.daddr, flow.sport_be),
        (false, false) => (&flow.daddr, flow.dport_be),
        (false, true) => (&flow.saddr, flow.sport_be),
    };
    if endpoint.flags & isolation_flag == 0 {
        let plain = if ingress {
            remote_plain(endpoint, || maps::peer(bank, flow.ipv6, remote).flags)
        } else {
            0
        };
        return Judgement::new(UNISOLATED | plain, NO_COUNTER);
    }
    let peer = maps::peer(bank, flow.ipv6, remote);
    let plain = if ingress {
        remote_plain(endpoint, || peer.flags)
    } else {
        0
    };
    if ingress && peer.flags & PEER_FLAG_NODE != 0 {
        return Judgement::new(NODE | plain, NO_COUNTER);
    }
    // Past translation (`Facts::translated`) the destination is where the
    // packet goes: a Service address that is also a pod's is judged by its class.
    if !ingress && peer.flags & PEER_FLAG_SERVICE != 0 && !facts.translated {
        return Judgement::new(SERVICE, NO_COUNTER);
    }
    let id = endpoint.endpoint_id;
    if let Some(found) = maps::policy(bank, id, peer.class_id, direction, flow.protocol, port_be) {
        // An allow is trusted unless `ACTIVE` moved; if it did, what follows
        // finds it moved too. The tiers' other outcomes decide here, whatever
        // the endpoint's audit flag says of a miss.
        let moved = maps::generation_moved(facts.generation);
        match found.verdict {
            POLICY_ALLOW if !moved => {
                facts.rule = Some(found.rule_slot);
                return Judgement::new(RULE | plain, found.rule_slot);
            }
            POLICY_DEFAULT if !moved => return Judgement::new(UNISOLATED | plain, NO_COUNTER),
            // A ClusterNetworkPolicy rule's would-deny or denial counts in its
            // rule and is reported by it (in the deny slot if it has no slot).
            POLICY_WOULD_DENY | POLICY_NETWORK_WOULD_DROP => {
                if found.verdict == POLICY_WOULD_DENY && found.rule_slot != NO_COUNTER {
                    facts.rule = Some(found.rule_slot);
                    return Judgement::new(AUDIT | RULE_SLOT | plain, found.rule_slot);
                }
                return Judgement::new(AUDIT | plain, drop_slot(id, direction, true));
            }
            POLICY_DENY | POLICY_NETWORK_DROP => {
                if maps::decided_mid_write(facts.generation) {
                    return Judgement::new(CHANGED, NO_COUNTER);
                }
                if found.verdict == POLICY_DENY && found.rule_slot != NO_COUNTER {
                    facts.rule = Some(found.rule_slot);
                    return Judgement::new(DENIED | RULE_SLOT, found.rule_slot);
                }
                return Judgement::new(DENIED, drop_slot(id, direction, false));
            }
            // An allow or a default across a move goes on below.
            POLICY_ALLOW | POLICY_DEFAULT => {}
            // A verdict this program does not know drops, whatever the
            // endpoint's audit flag says.
            _ => {
                return if maps::decided_mid_write(facts.generation) {
                    Judgement::new(CHANGED, NO_COUNTER)
                } else {
                    Judgement::new(DENIED, drop_slot(id, direction, false))
                };
            }
        }
    }
    // An audited direction passes either way; a denial (or an allow across a
    // move) is trusted unless the agent is writing tables in place or `ACTIVE`
    // moved.
    if audit::audits(endpoint, direction) {
        Judgement::new(AUDIT | plain, drop_slot(id, direction, true))
    } else if maps::decided_mid_write(facts.generation) {
        Judgement::new(CHANGED, NO_COUNTER)
    } else {
        Judgement::new(DENIED, drop_slot(id, direction, false))
    }
}

/// Re-decides the flow of `hit`, found at `at` for a packet decided with
/// `generation`, when the entry does not let it pass as it is (`Hit::current`):
/// its original direction is judged with the packet's bank. Allowed (a rule, no
/// isolation, the node, audit, or a Service, which makes the entry deferred), the
/// entry takes the verdict, with `CT_FLAG_LOCAL_OWNED` when `owned` has it (the
/// caller found the flow's local address to be the interface's own in this
/// bank), and the packet goes on. The entry keeps its `CT_FLAG_DIRECT` only when
/// `owned` has that flag too: a re-decision at the interface's own hook. A
/// destination's side that re-decides a source's entry judges the tuple as it
/// arrived there, which says nothing of where the source's next packet on it
/// goes. Denied, or revoked by this same
/// state already, the entry is revoked (`Hit::revoke`), refreshed, and the packet
/// dropped with `STAT_DROP_REVOKED`, counted in the original direction's deny slot
/// of `endpoint` (or, revoked by a ClusterNetworkPolicy `Deny` rule, in that rule,
/// which its event names) and reported with that direction.
#[inline(always)]
pub(crate) fn recheck(
    hit: &Hit,
    at: Site,
    endpoint: &EndpointInfo,
    flow: &Flow,
    facts: &mut Facts,
    generation: u32,
    owned: u32,
) -> Result<(), u32> {
    let original = if hit.reply {
        ct::opposite(at.direction)
    } else {
        at.direction
    };
    let revoked_here = hit.generation() == generation;
    // The ClusterNetworkPolicy rule's slot, when one revoked the flow.
    let mut by_rule = None;
    if !revoked_here {
        let site = Site {
            direction: original,
            ..at
        };
        let judged = judge(site, endpoint, flow, hit.reply, facts);
        facts.rule = None;
        if judged.kind() == CHANGED {
            // Neither renewed nor revoked: the next packet is decided anew.
            return Err(STAT_DROP_STATE_CHANGED);
        }
        if judged.kind() != DENIED {
            let flags = judged.ct_flags() | owned & !CT_FLAG_DIRECT;
            hit.renew(generation, flags, judged.slot(), owned & CT_FLAG_DIRECT);
            return Ok(());
        }
        by_rule = judged.in_rule_slot().then_some(judged.slot());
        hit.revoke(generation, by_rule);
    } else if hit.flags() & CT_FLAG_RULE_SLOT != 0 {
        by_rule = Some(hit.counter_slot());
    }
    hit.seen(flow);
    // Counted and reported as a denial of the original direction: its policy
    // revoked the flow, whichever way this packet goes.
    match by_rule {
        Some(slot) => {
            facts.counter = Counter::Rule(slot);
            facts.rule = Some(slot);
        }
        None => {
            facts.counter = Counter::Deny(drop_slot(endpoint.endpoint_id, original, false));
        }
    }
    facts.direction = original;
    Err(STAT_DROP_REVOKED)
}
