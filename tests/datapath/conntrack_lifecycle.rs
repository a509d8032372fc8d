//! Conntrack cases about TCP states and timeouts (`conntrack.rs` runs them): the
//! state machine driven by the flags, flows picked up mid-stream, denials that leave
//! no entry, and one case per protocol's idle timeout.

use policy_agent::{
    dataplane::Hook::{PodEgress as Out, PodIngress as In},
    policy::tables::Direction,
};
use policy_common::ct::{
    CT_STATE_ANSWERED, CT_STATE_CLOSED, CT_STATE_CLOSING, CT_STATE_ESTABLISHED, CT_STATE_OPENING,
};

use super::{
    conntrack::{
        echo, just_after, just_before, port, tcp, udp, Case, Family, DENIED, OSPF, POLICY,
        TIMEOUTS, TRACKED,
    },
    frames::{self, ACK, FIN, RST, SCTP, SYN, TCP, UDP},
    probe,
};

/// The TCP cases of one family: the state machine, pickups and what a denial leaves.
pub(super) fn tcp_cases(f: &Family) -> Vec<Case> {
    let (s, c, fam) = (f.server, f.client, f.name);
    let est = Some(CT_STATE_ESTABLISHED);
    let mut cases = Vec::new();
    let p = port();
    cases.push(
        Case::new(format!("an {fam} TCP handshake: the SYN opens the flow, the SYN/ACK answers it, the client's ACK establishes it and later packets keep it established"), f, TCP, p)
            .send(In, tcp(c, s, p, 80, SYN), POLICY)
            .state(Direction::Ingress, Some(CT_STATE_OPENING))
            .send(Out, tcp(s, c, 80, p, SYN | ACK), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_ANSWERED))
            .send(In, tcp(c, s, p, 80, ACK), TRACKED)
            .state(Direction::Ingress, est)
            .send(Out, tcp(s, c, 80, p, ACK), TRACKED)
            .state(Direction::Ingress, est),
    );
    let p = port();
    cases.push(
        Case::new(format!("an {fam} half-open TCP connection (SYN and SYN/ACK only) is forgotten after the opening timeout, not the established one"), f, TCP, p)
            .send(In, tcp(c, s, p, 80, SYN), POLICY)
            .send(Out, tcp(s, c, 80, p, SYN | ACK), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_ANSWERED))
            .age(just_after(TIMEOUTS.ct_tcp_opening_ns))
            .send(Out, tcp(s, c, 80, p, ACK), DENIED),
    );
    let p = port();
    cases.push(
        Case::new(format!("an {fam} client's ACK before any answer passes as tracked and leaves the flow opening"), f, TCP, p)
            .send(In, tcp(c, s, p, 80, SYN), POLICY)
            .send(In, tcp(c, s, p, 80, ACK), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_OPENING)),
    );
    let p = port();
    cases.push(
        Case::new(format!("an {fam} RST answering a SYN closes the flow, which is forgotten after the closing timeout, not the opening one"), f, TCP, p)
            .send(In, tcp(c, s, p, 80, SYN), POLICY)
            .send(Out, tcp(s, c, 80, p, RST | ACK), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_CLOSED))
            .age(just_after(TIMEOUTS.ct_tcp_closing_ns))
            .send(Out, tcp(s, c, 80, p, RST | ACK), DENIED),
    );
    let p = port();
    cases.push(
        Case::new(format!("an {fam} FIN from the server moves an established flow to closing, the client's FIN keeps it there, and it is forgotten after the closing timeout"), f, TCP, p)
            .send(In, tcp(c, s, p, 80, SYN), POLICY)
            .send(Out, tcp(s, c, 80, p, SYN | ACK), TRACKED)
            .send(Out, tcp(s, c, 80, p, FIN | ACK), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_CLOSING))
            .send(In, tcp(c, s, p, 80, FIN | ACK), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_CLOSING))
            .age(just_before(TIMEOUTS.ct_tcp_closing_ns))
            .send(Out, tcp(s, c, 80, p, ACK), TRACKED)
            .age(just_after(TIMEOUTS.ct_tcp_closing_ns))
            .send(Out, tcp(s, c, 80, p, ACK), DENIED),
    );
    let p = port();
    cases.push(
        Case::new(
            format!("an {fam} FIN from the client moves an established flow to closing"),
            f,
            TCP,
            p,
        )
        .send(In, tcp(c, s, p, 80, SYN), POLICY)
        .send(Out, tcp(s, c, 80, p, SYN | ACK), TRACKED)
        .send(In, tcp(c, s, p, 80, FIN | ACK), TRACKED)
        .state(Direction::Ingress, Some(CT_STATE_CLOSING))
        .send(Out, tcp(s, c, 80, p, ACK), TRACKED)
        .state(Direction::Ingress, Some(CT_STATE_CLOSING)),
    );
    let p = port();
    cases.push(
        Case::new(format!("an {fam} RST from the server closes an established flow, later packets leave it closed, and after the closing timeout the client's ACK is picked up afresh, as opening"), f, TCP, p)
            .send(In, tcp(c, s, p, 80, SYN), POLICY)
            .send(Out, tcp(s, c, 80, p, SYN | ACK), TRACKED)
            .send(In, tcp(c, s, p, 80, ACK), TRACKED)
            .send(Out, tcp(s, c, 80, p, RST), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_CLOSED))
            .send(In, tcp(c, s, p, 80, ACK), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_CLOSED))
            .age(just_after(TIMEOUTS.ct_tcp_closing_ns))
            .send(In, tcp(c, s, p, 80, ACK), POLICY)
            .state(Direction::Ingress, Some(CT_STATE_OPENING)),
    );
    let p = port();
    cases.push(
        Case::new(format!("an {fam} ACK of a connection never seen is decided by policy and picked up mid-stream as opening, and the server's answer establishes it, which then outlives the opening timeout"), f, TCP, p)
            .send(In, tcp(c, s, p, 80, ACK), POLICY)
            .state(Direction::Ingress, Some(CT_STATE_OPENING))
            .send(Out, tcp(s, c, 80, p, ACK), TRACKED)
            .state(Direction::Ingress, est)
            .age(just_after(TIMEOUTS.ct_tcp_opening_ns))
            .send(In, tcp(c, s, p, 80, ACK), TRACKED),
    );
    let p = port();
    cases.push(
        Case::new(format!("an {fam} flow picked up mid-stream that nobody answers stays opening however many ACKs the client sends, and is forgotten after the opening timeout"), f, TCP, p)
            .send(In, tcp(c, s, p, 80, ACK), POLICY)
            .send(In, tcp(c, s, p, 80, ACK), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_OPENING))
            .age(just_before(TIMEOUTS.ct_tcp_opening_ns))
            .send(In, tcp(c, s, p, 80, ACK), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_OPENING))
            .age(just_after(TIMEOUTS.ct_tcp_opening_ns))
            .send(Out, tcp(s, c, 80, p, ACK), DENIED),
    );
    let p = port();
    cases.push(
        Case::new(format!("an {fam} SYN/ACK the server sends for a SYN never seen is picked up as opening, and the client's ACK establishes it"), f, TCP, p)
            .send(Out, tcp(s, c, p, 80, SYN | ACK), POLICY)
            .state(Direction::Egress, Some(CT_STATE_OPENING))
            .send(In, tcp(c, s, 80, p, ACK), TRACKED)
            .state(Direction::Egress, est),
    );
    let p = [port(), port(), port(), port()];
    for (what, protocol, hook, frame, direction, p) in [
        (
            "a SYN to a port the server's ingress denies",
            TCP,
            In,
            tcp(c, s, p[0], 81, SYN),
            Direction::Ingress,
            p[0],
        ),
        (
            "an ACK to a port the server's ingress denies",
            TCP,
            In,
            tcp(c, s, p[1], 81, ACK),
            Direction::Ingress,
            p[1],
        ),
        (
            "a UDP datagram to a port the server's ingress denies",
            UDP,
            In,
            udp(c, s, p[2], 54),
            Direction::Ingress,
            p[2],
        ),
        (
            "a SYN the server's egress denies",
            TCP,
            Out,
            tcp(s, c, p[3], 81, SYN),
            Direction::Egress,
            p[3],
        ),
    ] {
        cases.push(
            Case::new(
                format!("an {fam} {what} is dropped and leaves no entry"),
                f,
                protocol,
                p,
            )
            .send(hook, frame, DENIED)
            .state(direction, None),
        );
    }
    cases
}

/// One case per protocol's timeout: just before it a reply passes and refreshes the
/// flow, just after it the reply is decided by policy and dropped.
pub(super) fn timeout_cases(f: &Family) -> Vec<Case> {
    let (s, c, o, fam) = (f.server, f.client, f.other, f.name);
    let mut cases = Vec::new();
    let p = port();
    cases.push(
        Case::new(
            format!("an {fam} TCP flow without an answer is forgotten after the opening timeout"),
            f,
            TCP,
            p,
        )
        .send(In, tcp(c, s, p, 80, SYN), POLICY)
        .age(just_before(TIMEOUTS.ct_tcp_opening_ns))
        .send(In, tcp(c, s, p, 80, ACK), TRACKED)
        .refreshed(Direction::Ingress, true)
        .age(just_after(TIMEOUTS.ct_tcp_opening_ns))
        .send(Out, tcp(s, c, 80, p, SYN | ACK), DENIED),
    );
    let p = port();
    cases.push(
        Case::new(
            format!("an {fam} established TCP flow is forgotten after the established timeout"),
            f,
            TCP,
            p,
        )
        .send(In, tcp(c, s, p, 80, SYN), POLICY)
        .send(Out, tcp(s, c, 80, p, SYN | ACK), TRACKED)
        .send(Out, tcp(s, c, 80, p, ACK), TRACKED)
        .age(just_before(TIMEOUTS.ct_tcp_established_ns))
        .send(Out, tcp(s, c, 80, p, ACK), TRACKED)
        .refreshed(Direction::Ingress, true)
        .age(just_after(TIMEOUTS.ct_tcp_established_ns))
        .send(Out, tcp(s, c, 80, p, ACK), DENIED),
    );
    let p = port();
    cases.push(
        Case::new(format!("an {fam} UDP flow is established by its answer, forgotten after the UDP timeout, and its next datagram is decided afresh and tracked anew"), f, UDP, p)
            .send(In, udp(c, s, p, 53), POLICY)
            .state(Direction::Ingress, Some(CT_STATE_OPENING))
            .send(Out, udp(s, c, 53, p), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_ESTABLISHED))
            .age(just_before(TIMEOUTS.ct_udp_ns))
            .send(Out, udp(s, c, 53, p), TRACKED)
            .refreshed(Direction::Ingress, true)
            .age(just_after(TIMEOUTS.ct_udp_ns))
            .send(Out, udp(s, c, 53, p), DENIED)
            .send(In, udp(c, s, p, 53), POLICY)
            .state(Direction::Ingress, Some(CT_STATE_OPENING))
            .send(Out, udp(s, c, 53, p), TRACKED),
    );
    let p = port();
    let sctp =
        |from, to, sport, dport| frames::ip(from, to, SCTP, &probe::sctp_init(sport, dport, 7));
    cases.push(
        Case::new(
            format!("an {fam} SCTP flow is forgotten after the UDP timeout"),
            f,
            SCTP,
            p,
        )
        .send(In, sctp(c, s, p, 5000), POLICY)
        .send(Out, sctp(s, c, 5000, p), TRACKED)
        .age(just_before(TIMEOUTS.ct_udp_ns))
        .send(Out, sctp(s, c, 5000, p), TRACKED)
        .age(just_after(TIMEOUTS.ct_udp_ns))
        .send(Out, sctp(s, c, 5000, p), DENIED),
    );
    let id = port();
    cases.push(
        Case::new(format!("an {fam} echo flow is established by its reply and forgotten after the ICMP timeout"), f, f.icmp, id)
            .send(In, echo(f, o, s, true, id), POLICY)
            .state(Direction::Ingress, Some(CT_STATE_OPENING))
            .send(Out, echo(f, s, o, false, id), TRACKED)
            .state(Direction::Ingress, Some(CT_STATE_ESTABLISHED))
            .age(just_before(TIMEOUTS.ct_icmp_ns))
            .send(Out, echo(f, s, o, false, id), TRACKED)
            .age(just_after(TIMEOUTS.ct_icmp_ns))
            .send(Out, echo(f, s, o, false, id), DENIED),
    );
    let ospf = |from, to| frames::ip(from, to, OSPF, &[2, 1, 0, 8, 0, 0, 0, 0]);
    cases.push(
        Case::new(
            format!(
                "an {fam} OSPF flow (no ports) is forgotten after the timeout of other protocols"
            ),
            f,
            OSPF,
            0,
        )
        .send(In, ospf(c, s), POLICY)
        .send(Out, ospf(s, c), TRACKED)
        .age(just_before(TIMEOUTS.ct_other_ns))
        .send(Out, ospf(s, c), TRACKED)
        .age(just_after(TIMEOUTS.ct_other_ns))
        .send(Out, ospf(s, c), DENIED),
    );
    cases
}
