//! Listeners in every pod namespace, served by one thread: TCP connections are
//! accepted and closed, UDP datagrams are echoed, so a probe can tell "reached"
//! from "dropped". Every listener takes IPv4 and IPv6 on one socket.

use std::{
    io::Write,
    net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    os::fd::AsFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::{Domain, SockAddr, Socket, Type};

use super::{netns::in_netns, LabError};
use crate::model::Protocol;

/// A bound socket waiting for probes.
pub enum Listener {
    /// Accepts and closes connections.
    Tcp(TcpListener),
    /// Echoes datagrams.
    Udp(UdpSocket),
}

/// One socket on `[::]:port` that takes both IPv4 (as mapped addresses) and IPv6,
/// so a probe reaches the pod over either family.
fn bind_dual_stack(port: u16, protocol: Protocol) -> std::io::Result<Listener> {
    let kind = match protocol {
        Protocol::Tcp => Type::STREAM,
        Protocol::Udp => Type::DGRAM,
        Protocol::Sctp => return Err(std::io::ErrorKind::Unsupported.into()),
    };
    let socket = Socket::new(Domain::IPV6, kind, None)?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(SocketAddr::from((
        Ipv6Addr::UNSPECIFIED,
        port,
    ))))?;
    Ok(match protocol {
        Protocol::Tcp => {
            socket.listen(1024)?;
            Listener::Tcp(TcpListener::from(socket))
        }
        _ => Listener::Udp(UdpSocket::from(socket)),
    })
}

/// Binds a dual-stack listener on `port` for each entry, inside namespace `netns`.
/// SCTP ports are skipped with a warning: this kernel cannot open SCTP sockets.
pub fn open_listeners(
    netns: &str,
    pod: &str,
    ports: &[(u16, Protocol)],
) -> Result<Vec<Listener>, LabError> {
    for (port, _) in ports.iter().filter(|(_, p)| *p == Protocol::Sctp) {
        tracing::warn!(
            pod,
            port,
            "no SCTP listener: the kernel has no SCTP support"
        );
    }
    in_netns(netns, || {
        ports
            .iter()
            .filter(|(_, protocol)| *protocol != Protocol::Sctp)
            .map(|&(port, protocol)| {
                bind_dual_stack(port, protocol).map_err(|source| LabError::Socket {
                    pod: pod.to_string(),
                    what: format!("listen on {port}/{protocol}"),
                    source,
                })
            })
            .collect()
    })?
}

/// The serving thread; stops and joins on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Servers {
    /// Starts serving `listeners` until dropped.
    pub fn start(listeners: Vec<Listener>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("lab-servers".into())
            .spawn(move || serve(&listeners, &flag))
            .ok();
        Self { stop, thread }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listeners: &[Listener], stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|l| match l {
                Listener::Tcp(t) => PollFd::new(t.as_fd(), PollFlags::POLLIN),
                Listener::Udp(u) => PollFd::new(u.as_fd(), PollFlags::POLLIN),
            })
            .collect();
        if poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) <= 0 {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .collect();
        for (listener, _) in listeners.iter().zip(ready).filter(|(_, r)| *r) {
            match listener {
                Listener::Tcp(tcp) => {
                    while let Ok((mut stream, _)) = tcp.accept() {
                        let _ = stream.write_all(b"podwall\n");
                    }
                }
                Listener::Udp(udp) => {
                    while let Ok((len, from)) = udp.recv_from(&mut buf) {
                        let _ = udp.send_to(&buf[..len], from);
                    }
                }
            }
        }
    }
}
