//! Probes: one connection attempt per (from, to, port, protocol), all in flight at
//! once. Sockets are created inside the source's namespace (a pod's, or the node's
//! for node -> pod probes) and then driven by one poll loop, so a matrix takes about
//! one timeout however many pods it has. Where a probe connects to (the pod's IPv4
//! or IPv6 address, or a Service in front of it) is its `ProbeRoute`; results are
//! keyed by pods and pod port whatever the route.

use std::{
    collections::BTreeMap,
    io::Read,
    net::{IpAddr, SocketAddr, UdpSocket},
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

/// Which address of a pod a probe goes to.
pub use crate::model::IpFamily as Family;

/// How probes reach their destination pod. Results are keyed by the destination
/// pod and its port either way, so matrices compare across routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeRoute {
    /// Straight to the pod's address of this family.
    Pod(Family),
    /// Through a ClusterIP Service in the pod's namespace whose only backend (for
    /// that Service port) is the pod and whose target port resolves to the probed
    /// port on it: the probe connects to `clusterIP:port` and the node's DNAT rules
    /// take it to the pod. IPv4 only, as the lab's Services are.
    Service,
}

impl Default for ProbeRoute {
    /// Straight to the pod's IPv4 address.
    fn default() -> Self {
        ProbeRoute::Pod(Family::Ipv4)
    }
}

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

/// One connection attempt: a socket made inside namespace `netns`, bound to `source`
/// when given, connecting to `target`.
pub(crate) struct Connect<'a> {
    /// Namespace the socket lives in.
    pub netns: &'a str,
    /// Who is probing, for error messages.
    pub who: String,
    /// Source address to bind, if any (the kernel picks one otherwise).
    pub source: Option<IpAddr>,
    /// Where to connect.
    pub target: SocketAddr,
    /// Protocol.
    pub protocol: Protocol,
}

fn open_socket(connect: &Connect<'_>) -> Result<Socket, LabError> {
    let kind = match connect.protocol {
        Protocol::Tcp => Type::STREAM,
        Protocol::Udp => Type::DGRAM,
        Protocol::Sctp => return Err(LabError::SctpUnavailable),
    };
    let error = |what: &str| {
        let (pod, what) = (connect.who.clone(), what.to_string());
        move |source| LabError::Socket { pod, what, source }
    };
    let socket = Socket::new(Domain::for_address(connect.target), kind, None)
        .map_err(error("create a probe socket"))?;
    if let Some(source) = connect.source {
        socket
            .bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .map_err(error(&format!("bind a probe socket to {source}")))?;
    }
    Ok(socket)
}

/// Makes every connection attempt, all in flight at once (in batches of `BATCH`),
/// and reports, in order, which ones reached their target within `timeout`.
pub(crate) fn connect_all(
    connects: &[Connect<'_>],
    timeout: Duration,
) -> Result<Vec<bool>, LabError> {
    let mut reached = Vec::with_capacity(connects.len());
    for batch in connects.chunks(BATCH) {
        let mut by_netns: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, connect) in batch.iter().enumerate() {
            by_netns.entry(connect.netns).or_default().push(i);
        }
        let mut attempts: Vec<Option<Attempt>> = (0..batch.len()).map(|_| None).collect();
        for (netns, indices) in by_netns {
            let sockets = in_netns(netns, || {
                indices
                    .iter()
                    .map(|&i| open_socket(&batch[i]))
                    .collect::<Result<Vec<Socket>, LabError>>()
            })??;
            for (&i, socket) in indices.iter().zip(sockets) {
                attempts[i] = Some(start(socket, batch[i].protocol, batch[i].target));
            }
        }
        let attempts = attempts
            .into_iter()
            .map(|a| a.unwrap_or(Attempt::Done(false)))
            .collect();
        reached.extend(finish(attempts, timeout));
    }
    Ok(reached)
}

/// Runs every probe, `specs[i]` connecting to `targets[i]` from its source pod, and
/// reports, in `specs` order, which ones reached their target. Results are keyed by
/// the spec (pods and port), whatever address the probe went to.
pub fn run(
    topology: &Topology,
    specs: &[ProbeSpec],
    targets: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<ProbeResult>, LabError> {
    let connects = specs
        .iter()
        .zip(targets)
        .map(|(spec, &target)| {
            let pod = topology
                .pods
                .get(&spec.from)
                .ok_or_else(|| LabError::UnknownPod {
                    pod: spec.from.to_string(),
                })?;
            Ok(Connect {
                netns: &pod.netns,
                who: spec.from.to_string(),
                source: None,
                target,
                protocol: spec.protocol,
            })
        })
        .collect::<Result<Vec<_>, LabError>>()?;
    let reached = connect_all(&connects, timeout)?;
    Ok(specs
        .iter()
        .zip(reached)
        .map(|(spec, allowed)| ProbeResult::new(spec, allowed))
        .collect())
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
        .send_to(
            &request,
            &SockAddr::from(SocketAddr::from((target.addresses.v4, 0))),
        )
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
            && source_addr == target.addresses.v4
        {
            return Ok(true);
        }
    }
}
