//! Probes: one connection attempt per (from, to, port, protocol), all in flight at
//! once. Sockets are created inside the source pod's namespace and then driven by
//! one poll loop, so a matrix takes about one timeout however many pods it has.

use std::{
    collections::BTreeMap,
    io::Read,
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
};
use socket2::{Domain, SockAddr, Socket, Type};

use super::{netns::in_netns, report::ProbeResult, topology::Topology, LabError};
use crate::model::{ObjectRef, Protocol};

/// Probes at most this many sockets at once (keeps far below the fd limit).
const BATCH: usize = 400;

/// One probe to run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProbeSpec {
    /// Source pod.
    pub from: ObjectRef,
    /// Destination pod.
    pub to: ObjectRef,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

enum Attempt {
    Done(bool),
    Tcp(Socket),
    Udp(UdpSocket),
}

/// An error that still proves the packet reached the destination's stack.
fn reached(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(Errno::ECONNREFUSED as i32)
}

fn start(socket: Socket, protocol: Protocol, addr: SocketAddr) -> Attempt {
    if socket.set_nonblocking(true).is_err() {
        return Attempt::Done(false);
    }
    match protocol {
        Protocol::Tcp => match socket.connect(&SockAddr::from(addr)) {
            Ok(()) => Attempt::Done(true),
            Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS as i32) => Attempt::Tcp(socket),
            Err(e) => Attempt::Done(reached(&e)),
        },
        Protocol::Udp | Protocol::Sctp => {
            let udp = UdpSocket::from(socket);
            match udp.connect(addr).and_then(|()| udp.send(b"podwall-probe")) {
                Ok(_) => Attempt::Udp(udp),
                Err(e) => Attempt::Done(reached(&e)),
            }
        }
    }
}

/// Waits for every pending attempt until `timeout` has passed since the start.
fn finish(mut attempts: Vec<Attempt>, timeout: Duration) -> Vec<bool> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 64];
    loop {
        let pending: Vec<usize> = (0..attempts.len())
            .filter(|&i| !matches!(attempts[i], Attempt::Done(_)))
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if pending.is_empty() || left.is_zero() {
            break;
        }
        let mut fds: Vec<PollFd<'_>> = pending
            .iter()
            .filter_map(|&i| match &attempts[i] {
                Attempt::Tcp(s) => Some(PollFd::new(s.as_fd(), PollFlags::POLLOUT)),
                Attempt::Udp(u) => Some(PollFd::new(u.as_fd(), PollFlags::POLLIN)),
                Attempt::Done(_) => None,
            })
            .collect();
        let wait = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, wait).unwrap_or(0) <= 0 {
            continue;
        }
        let ready: Vec<usize> = pending
            .iter()
            .zip(fds.iter())
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(&i, _)| i)
            .collect();
        drop(fds);
        for i in ready {
            let outcome = match &attempts[i] {
                Attempt::Tcp(s) => match s.take_error() {
                    Ok(None) => true,
                    Ok(Some(e)) => reached(&e),
                    Err(_) => false,
                },
                Attempt::Udp(u) => match u.recv(&mut buf) {
                    Ok(_) => true,
                    Err(e) => reached(&e),
                },
                Attempt::Done(done) => *done,
            };
            attempts[i] = Attempt::Done(outcome);
        }
    }
    attempts
        .iter()
        .map(|a| matches!(a, Attempt::Done(true)))
        .collect()
}

/// Runs every probe and reports, in `specs` order, which ones reached their target.
pub fn run(
    topology: &Topology,
    specs: &[ProbeSpec],
    timeout: Duration,
) -> Result<Vec<ProbeResult>, LabError> {
    let mut results = Vec::with_capacity(specs.len());
    for batch in specs.chunks(BATCH) {
        let mut by_source: BTreeMap<&ObjectRef, Vec<usize>> = BTreeMap::new();
        for (i, spec) in batch.iter().enumerate() {
            by_source.entry(&spec.from).or_default().push(i);
        }
        let mut attempts: Vec<Option<Attempt>> = (0..batch.len()).map(|_| None).collect();
        for (source, indices) in by_source {
            let pod = topology
                .pods
                .get(source)
                .ok_or_else(|| LabError::UnknownPod {
                    pod: source.to_string(),
                })?;
            let sockets = in_netns(&pod.netns, || {
                indices
                    .iter()
                    .map(|&i| {
                        let kind = match batch[i].protocol {
                            Protocol::Tcp => Type::STREAM,
                            Protocol::Udp => Type::DGRAM,
                            Protocol::Sctp => return Err(LabError::SctpUnavailable),
                        };
                        Socket::new(Domain::IPV4, kind, None).map_err(|source| LabError::Socket {
                            pod: batch[i].from.to_string(),
                            what: "create a probe socket".into(),
                            source,
                        })
                    })
                    .collect::<Result<Vec<Socket>, LabError>>()
            })??;
            for (&i, socket) in indices.iter().zip(sockets) {
                let spec = &batch[i];
                let target = topology
                    .pods
                    .get(&spec.to)
                    .ok_or_else(|| LabError::UnknownPod {
                        pod: spec.to.to_string(),
                    })?;
                let addr = SocketAddr::from((target.ip, spec.port));
                attempts[i] = Some(start(socket, spec.protocol, addr));
            }
        }
        let attempts = attempts
            .into_iter()
            .map(|a| a.unwrap_or(Attempt::Done(false)))
            .collect();
        for (spec, allowed) in batch.iter().zip(finish(attempts, timeout)) {
            results.push(ProbeResult::new(spec, allowed));
        }
    }
    Ok(results)
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| {
            u32::from(u16::from_be_bytes([
                pair[0],
                pair.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one ICMP echo request from pod `from` to pod `to` over a raw socket in
/// `from`'s namespace; true when the matching echo reply arrives within `timeout`.
pub fn ping(
    topology: &Topology,
    from: &ObjectRef,
    to: &ObjectRef,
    timeout: Duration,
) -> Result<bool, LabError> {
    let lookup = |pod: &ObjectRef| {
        topology.pods.get(pod).ok_or_else(|| LabError::UnknownPod {
            pod: pod.to_string(),
        })
    };
    let (source, target) = (lookup(from)?, lookup(to)?);
    let socket_error = |what: &str| {
        let pod = from.to_string();
        let what = what.to_string();
        move |source| LabError::Socket { pod, what, source }
    };
    let socket = in_netns(&source.netns, || {
        Socket::new(Domain::IPV4, Type::RAW, Some(socket2::Protocol::ICMPV4))
    })?
    .map_err(socket_error("open a raw ICMP socket"))?;
    let identifier = (std::process::id() as u16) ^ 0x5057;
    let mut request = vec![8, 0, 0, 0];
    request.extend_from_slice(&identifier.to_be_bytes());
    request.extend_from_slice(&1u16.to_be_bytes());
    request.extend_from_slice(b"podwall-ping");
    let sum = checksum(&request);
    request[2..4].copy_from_slice(&sum.to_be_bytes());
    socket
        .send_to(&request, &SockAddr::from(SocketAddr::from((target.ip, 0))))
        .map_err(socket_error("send an ICMP echo request"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(socket_error("set a receive timeout"))?;
        let Ok(len) = (&socket).read(&mut buf) else {
            return Ok(false);
        };
        // A raw IPv4 socket receives the IP header too.
        let header = usize::from(buf[0] & 0x0F) * 4;
        let reply = buf.get(header..len).unwrap_or_default();
        let source_addr = std::net::Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        if reply.len() >= 8
            && reply[0] == 0
            && reply[4..6] == identifier.to_be_bytes()
            && source_addr == target.ip
        {
            return Ok(true);
        }
    }
}
