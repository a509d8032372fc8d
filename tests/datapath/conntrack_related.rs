//! Conntrack cases about ICMP and ICMPv6 errors (`conntrack.rs` runs them): each
//! error type quoting a packet of a tracked flow passes as related at both hooks and
//! in both orientations of the flow; errors that do not relate (untracked, expired,
//! elsewhere, the wrong way, sent to another address than the quote's source, no
//! error type, a quote that does not parse) are decided
//! by policy like any ICMP packet, never dropped as malformed.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use policy_agent::{
    dataplane::Hook::{PodEgress as Out, PodIngress as In},
    policy::tables::Direction,
};
use policy_common::ct::{CT_STATE_ESTABLISHED, CT_STATE_OPENING};

use super::{
    conntrack::{
        echo, error, families, just_after, port, tcp, udp, Case, Family, DENIED, POLICY, RELATED,
        TIMEOUTS, TRACKED, UNISOLATED,
    },
    frames::{self, Ext, ACK, SYN, TCP, UDP},
};

/// Related errors: each error type quoting a packet of a tracked flow, at both
/// hooks and in both orientations of the flow.
pub(super) fn related_cases(f: &Family) -> Vec<Case> {
    let (s, c, r, fam) = (f.server, f.client, f.router, f.name);
    let mut cases = Vec::new();
    for (t, code, what) in f.errors {
        let kind = (t, code);
        let p = port();
        cases.push(
            Case::new(format!("an {fam} {what} from a router quoting the server's answer in a tracked UDP flow passes the server's ingress as related and neither refreshes nor moves the flow"), f, UDP, p)
                .send(In, udp(c, s, p, 53), POLICY)
                .send(Out, udp(s, c, 53, p), TRACKED)
                .age(Duration::from_secs(10))
                .send(In, error(f, r, s, kind, &udp(s, c, 53, p)), RELATED)
                .refreshed(Direction::Ingress, false)
                .state(Direction::Ingress, Some(CT_STATE_ESTABLISHED)),
        );
        let q = port();
        cases.push(
            Case::new(format!("an {fam} {what} from a router quoting the server's own SYN passes the server's ingress as related"), f, TCP, q)
                .send(Out, tcp(s, c, q, 80, SYN), POLICY)
                .send(In, error(f, r, s, kind, &tcp(s, c, q, 80, SYN)), RELATED)
                .state(Direction::Egress, Some(CT_STATE_OPENING)),
        );
        let p = port();
        cases.push(
            Case::new(format!("an {fam} {what} the server sends about the client's datagram passes the server's egress as related"), f, UDP, p)
                .send(In, udp(c, s, p, 53), POLICY)
                .send(Out, error(f, s, c, kind, &udp(c, s, p, 53)), RELATED),
        );
        let q = port();
        cases.push(
            Case::new(format!("an {fam} {what} the server sends about the client's SYN/ACK in the server's TCP flow passes the server's egress as related"), f, TCP, q)
                .send(Out, tcp(s, c, q, 80, SYN), POLICY)
                .send(Out, error(f, s, c, kind, &tcp(c, s, 80, q, SYN | ACK)), RELATED),
        );
    }
    let kind = (f.errors[0].0, f.errors[0].1);
    let id = port();
    let other_id = port();
    cases.push(
        Case::new(format!("an {fam} error quoting the server's echo reply passes the server's ingress as related, and one quoting another identifier is dropped"), f, f.icmp, id)
            .send(In, echo(f, f.other, s, true, id), POLICY)
            .send(In, error(f, r, s, kind, &echo(f, s, f.other, false, id)), RELATED)
            .send(In, error(f, r, s, kind, &echo(f, s, f.other, false, other_id)), DENIED),
    );
    cases
}

/// Errors that are not related: decided by policy like any ICMP packet with ports 0
/// (a router is allowed nothing, the other pod ICMP), never dropped as malformed.
pub(super) fn unrelated_cases(f: &Family) -> Vec<Case> {
    let (s, c, r, fam) = (f.server, f.client, f.router, f.name);
    let kind = (f.errors[0].0, f.errors[0].1);
    let mut cases = Vec::new();
    // A UDP flow from the client to the server, answered: a correct quote of the
    // answer is related, so each case below fails for its own reason.
    let tracked = |name: String, p: u16| {
        Case::new(name, f, UDP, p)
            .send(In, udp(c, s, p, 53), POLICY)
            .send(Out, udp(s, c, 53, p), TRACKED)
    };
    let answer = |p: u16| udp(s, c, 53, p);
    let p = port();
    cases.push(
        tracked(
            format!(
                "an {fam} error from a router quoting a flow nobody tracked is dropped by policy"
            ),
            p,
        )
        .send(In, error(f, r, s, kind, &answer(port())), DENIED),
    );
    let p = port();
    cases.push(
        tracked(format!("an {fam} error at the server's ingress quoting the client's own datagram (the way the client's packets go) is not related and is dropped"), p)
            .send(In, error(f, r, s, kind, &udp(c, s, p, 53)), DENIED),
    );
    let p = port();
    cases.push(
        Case::new(format!("an {fam} error at the server quoting a flow tracked only at the client's interface is dropped"), f, TCP, p)
            .send_at("client", Out, tcp(c, f.stranger, p, 443, SYN), UNISOLATED)
            .send(In, error(f, r, s, kind, &tcp(f.stranger, c, 443, p, SYN | ACK)), DENIED)
            .send(In, error(f, r, s, kind, &tcp(c, f.stranger, p, 443, SYN)), DENIED),
    );
    let p = port();
    cases.push(
        tracked(format!("an {fam} error the server sends to a stranger, quoting the client's datagram in a tracked flow, is not related (the quote's source is not the error's destination) and is dropped"), p)
            .send(Out, error(f, s, f.stranger, kind, &udp(c, s, p, 53)), DENIED),
    );
    let p = port();
    cases.push(
        // (To an address of no local pod: one of another local pod's is
        // `drop_misdelivered` first, the verdict table's case.)
        tracked(format!("an {fam} error to another address, quoting the server's answer in a tracked flow, is not related at the server's ingress and is dropped"), p)
            .send(In, error(f, r, f.stranger, kind, &answer(p)), DENIED),
    );
    let p = port();
    cases.push(
        tracked(format!("an {fam} error quoting the answer of an expired UDP flow is not related and is dropped"), p)
            .age(just_after(TIMEOUTS.ct_udp_ns))
            .send(In, error(f, r, s, kind, &answer(p)), DENIED),
    );
    let p = port();
    cases.push(
        tracked(
            format!(
                "an {fam} redirect (no error) quoting a tracked flow's answer is dropped by policy"
            ),
            p,
        )
        .send(In, error(f, r, s, (f.redirect, 0), &answer(p)), DENIED),
    );
    let ip_header = if s.is_ipv4() { 20 } else { 40 };
    let p = port();
    let cut_header = truncated(error(f, r, s, kind, &answer(p)), 14 + ip_header + 8 + 12);
    cases.push(
        tracked(format!("an {fam} error whose quote is cut inside its IP header is not related and is dropped by policy, not as malformed"), p)
            .send(In, cut_header, DENIED),
    );
    let p = port();
    let cut_ports = truncated(
        error(f, r, s, kind, &answer(p)),
        14 + ip_header + 8 + ip_header + 2,
    );
    cases.push(
        tracked(format!("an {fam} error whose quote is cut before its ports is not related and is dropped by policy"), p)
            .send(In, cut_ports, DENIED),
    );
    let p = port();
    let cut_icmp = truncated(error(f, r, s, kind, &answer(p)), 14 + ip_header + 4);
    cases.push(
        tracked(
            format!(
                "an {fam} error cut inside its ICMP header is not related and is dropped by policy"
            ),
            p,
        )
        .send(In, cut_icmp, DENIED),
    );
    let p = port();
    let cut_quote = truncated(
        error(f, f.other, s, kind, &answer(p)),
        14 + ip_header + 8 + 12,
    );
    cases.push(
        tracked(format!("an {fam} error whose quote is cut short, from a peer allowed ICMP, passes by policy like any ICMP packet"), p)
            .send(In, cut_quote, POLICY),
    );
    let p = port();
    let (quote, what) = if s.is_ipv4() {
        let mut v4 = answer(p);
        v4[14] = 0x44;
        (v4, "with IHL 4")
    } else {
        let with_hop_by_hop =
            frames::ipv6(v6(s), v6(c), &[Ext::HopByHop], UDP, &frames::udp(53, p));
        (with_hop_by_hop, "that starts with a hop-by-hop header")
    };
    cases.push(
        tracked(
            format!(
                "an {fam} error whose quoted packet {what} is not related and is dropped by policy"
            ),
            p,
        )
        .send(In, error(f, r, s, kind, &quote), DENIED),
    );
    if s.is_ipv4() {
        let p = port();
        let with_options = frames::ipv4_options(answer(p), 1);
        cases.push(
            tracked(format!("an {fam} error quoting a tracked flow's answer with 4 bytes of IP options (IHL 6) passes as related"), p)
                .send(In, error(f, r, s, kind, &with_options), RELATED),
        );
        let p = port();
        let as_v6 = frames::ipv6(v4_mapped(s), v4_mapped(c), &[], UDP, &frames::udp(53, p));
        cases.push(
            tracked(format!("an {fam} error whose quote is IPv6 (the other family) is not related and is dropped by policy"), p)
                .send(In, error(f, r, s, kind, &as_v6), DENIED),
        );
    } else {
        // The same tuple as an IPv4 flow's key: an IPv6 quote with IPv4-mapped
        // addresses must not match the IPv4 flow.
        let v4 = Family::v4_pair();
        let p = port();
        let mapped = frames::ipv6(
            v4_mapped(v4.0),
            v4_mapped(v4.1),
            &[],
            UDP,
            &frames::udp(53, p),
        );
        cases.push(
            Case::new(format!("an {fam} error quoting IPv4-mapped addresses of a tracked IPv4 flow is not related and is dropped by policy"), f, UDP, p)
                .send(In, udp(v4.1, v4.0, p, 53), POLICY)
                .send(Out, udp(v4.0, v4.1, 53, p), TRACKED)
                .send(In, error(f, r, s, kind, &mapped), DENIED),
        );
    }
    let id = port();
    cases.push(
        Case::new(format!("an {fam} error from the client pod quoting the server's echo reply to the other pod is not related (a pod cannot speak for another) and is dropped"), f, f.icmp, id)
            .send(In, echo(f, f.other, s, true, id), POLICY)
            .send(In, error(f, c, s, kind, &echo(f, s, f.other, false, id)), DENIED),
    );
    cases
}

impl Family {
    /// The server's and the client's IPv4 addresses.
    fn v4_pair() -> (IpAddr, IpAddr) {
        let [v4, _] = families();
        (v4.server, v4.client)
    }
}

fn v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(v4) => panic!("{v4} is not IPv6"),
    }
}

fn v4_mapped(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn truncated(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}
