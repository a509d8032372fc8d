//! The e2e bench's load generator: netperf's four tests, our own small client and
//! server. Sockets are made inside the pods' network namespaces (a socket stays
//! in the namespace it was made in); each thread is pinned to one CPU.
//!
//! - Servers (`Servers::start`): per server pod a TCP echo listener and a UDP
//!   echo socket on `ECHO_PORT`, a TCP sink on `SINK_PORT`, one thread each,
//!   serving one connection at a time (the client is sequential).
//! - Client (`measure`): for the test's duration, TCP_RR writes 1 byte and reads
//!   the 1-byte answer on one connection; TCP_CRR connects, does one such
//!   transaction and closes, again and again; TCP_STREAM writes 128 KiB buffers;
//!   UDP_RR sends a 1-byte datagram and waits for its echo (a datagram lost is
//!   sent again after `UDP_WAIT`). Returns the rate: transactions per second, or
//!   bits per second for TCP_STREAM.

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{
    scenario::{ECHO_PORT, SINK_PORT},
    Test,
};
use crate::lab::{netns, LabError};

/// How long a client waits for a connection or an answer before failing.
pub const ANSWER_WAIT: Duration = Duration::from_secs(1);
/// How long UDP_RR waits for an echo before sending again.
pub const UDP_WAIT: Duration = Duration::from_millis(50);
/// How often an idle server thread looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Datagrams UDP_RR may lose in one test before it fails.
const UDP_MAX_LOST: u64 = 100;

/// Why the load generator failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A socket operation failed.
    #[error("{test} from {client} to {target}: {what}")]
    Socket {
        /// The test.
        test: Test,
        /// The client pod.
        client: String,
        /// Where it connects.
        target: SocketAddr,
        /// What was being done.
        what: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A server could not listen.
    #[error("server {pod}: {what}")]
    Server {
        /// The pod.
        pod: String,
        /// What was being done.
        what: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Entering a namespace or pinning failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// Pinning a thread to its CPU failed.
    #[error("pinning a load thread to CPU {cpu} (see --client-cpu, --server-cpu)")]
    Pin {
        /// The CPU.
        cpu: usize,
        /// What the kernel said.
        #[source]
        source: nix::Error,
    },
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> Result<(), LoadError> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set))
        .map_err(|source| LoadError::Pin { cpu, source })
}

/// The servers of the lab; dropped, their threads stop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A bound server socket, before its thread serves it.
enum Socket {
    Echo(TcpListener),
    Sink(TcpListener),
    Udp(UdpSocket),
}

impl Servers {
    /// Starts the listeners of each `(netns, pod)` on threads pinned to `cpu`.
    pub fn start(pods: &[(String, String)], cpu: usize) -> Result<Self, LoadError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = Self {
            stop: Arc::clone(&stop),
            threads: Vec::new(),
        };
        for (netns, pod) in pods {
            let sockets = netns::in_netns(netns, || bind_all(pod))??;
            for socket in sockets {
                let stop = Arc::clone(&stop);
                servers.threads.push(std::thread::spawn(move || {
                    if let Err(error) = pin(cpu) {
                        tracing::warn!(%error, "server thread not pinned");
                    }
                    serve(socket, &stop);
                }));
            }
        }
        Ok(servers)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn bind_all(pod: &str) -> Result<Vec<Socket>, LoadError> {
    let error = |what: String| {
        let pod = pod.to_string();
        move |source| LoadError::Server { pod, what, source }
    };
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let echo =
        TcpListener::bind(any(ECHO_PORT)).map_err(error(format!("listen on {ECHO_PORT}/TCP")))?;
    let sink =
        TcpListener::bind(any(SINK_PORT)).map_err(error(format!("listen on {SINK_PORT}/TCP")))?;
    let udp = UdpSocket::bind(any(ECHO_PORT)).map_err(error(format!("bind {ECHO_PORT}/UDP")))?;
    udp.set_read_timeout(Some(STOP_POLL))
        .map_err(error("set a UDP timeout".to_string()))?;
    Ok(vec![
        Socket::Echo(echo),
        Socket::Sink(sink),
        Socket::Udp(udp),
    ])
}

/// Serves `socket` until `stop`; a connection's error ends that connection only.
fn serve(socket: Socket, stop: &AtomicBool) {
    let mut buffer = vec![0u8; 256 * 1024];
    let accept = |listener: &TcpListener| -> Option<TcpStream> {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let wait = PollTimeout::try_from(STOP_POLL).unwrap_or(PollTimeout::NONE);
        match poll(&mut fds, wait) {
            Ok(n) if n > 0 => listener.accept().ok().map(|(stream, _)| stream),
            _ => None,
        }
    };
    while !stop.load(Ordering::Relaxed) {
        match &socket {
            Socket::Echo(listener) | Socket::Sink(listener) => {
                let Some(mut stream) = accept(listener) else {
                    continue;
                };
                let echo = matches!(socket, Socket::Echo(_));
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(STOP_POLL));
                while !stop.load(Ordering::Relaxed) {
                    let size = if echo { 64 } else { buffer.len() };
                    match stream.read(&mut buffer[..size]) {
                        Ok(0) => break,
                        Ok(n) if echo => {
                            if stream.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
            }
            Socket::Udp(udp) => {
                if let Ok((n, from)) = udp.recv_from(&mut buffer[..64]) {
                    let _ = udp.send_to(&buffer[..n], from);
                }
            }
        }
    }
}

/// Runs `test` from `client` (its namespace `netns`) to `server`'s address for
/// `duration`, on a thread pinned to `cpu`; returns transactions per second (bits
/// per second for TCP_STREAM). Fails if no transaction completed.
pub fn measure(
    netns: &str,
    client: &str,
    test: Test,
    server: IpAddr,
    duration: Duration,
    cpu: usize,
) -> Result<f64, LoadError> {
    let port = if test == Test::TcpStream {
        SINK_PORT
    } else {
        ECHO_PORT
    };
    let target = SocketAddr::new(server, port);
    let fail = |what: &'static str| {
        let client = client.to_string();
        move |source| LoadError::Socket {
            test,
            client,
            target,
            what,
            source,
        }
    };
    netns::in_netns(netns, || {
        pin(cpu)?;
        let started = Instant::now();
        let deadline = started + duration;
        let count = match test {
            Test::TcpRr => {
                let mut stream = connect(target).map_err(fail("connect"))?;
                rr_loop(&mut stream, deadline).map_err(fail("a transaction"))?
            }
            Test::TcpCrr => {
                let mut count = 0;
                while Instant::now() < deadline {
                    let mut stream = connect(target).map_err(fail("connect"))?;
                    transaction(&mut stream).map_err(fail("a transaction"))?;
                    count += 1;
                }
                count
            }
            Test::TcpStream => {
                let mut stream = connect(target).map_err(fail("connect"))?;
                stream_loop(&mut stream, deadline).map_err(fail("send"))?
            }
            Test::UdpRr => udp_loop(target, deadline).map_err(fail("a UDP transaction"))?,
        };
        let elapsed = started.elapsed().as_secs_f64();
        if count == 0 {
            return Err(fail("traffic")(std::io::Error::new(
                ErrorKind::TimedOut,
                "nothing got through in the whole test",
            )));
        }
        Ok(count as f64 / elapsed.max(1e-9))
    })?
}

fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, ANSWER_WAIT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ANSWER_WAIT))?;
    stream.set_write_timeout(Some(ANSWER_WAIT))?;
    Ok(stream)
}

/// One 1-byte request and its 1-byte answer.
fn transaction(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut answer = [0u8; 1];
    stream.write_all(&[1])?;
    stream.read_exact(&mut answer)
}

fn rr_loop(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<u64> {
    let mut count = 0;
    while Instant::now() < deadline {
        transaction(stream)?;
        count += 1;
    }
    Ok(count)
}

/// Bits sent until `deadline`.
fn stream_loop(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<u64> {
    let buffer = vec![0x5au8; 128 * 1024];
    let mut bytes = 0u64;
    while Instant::now() < deadline {
        bytes += stream.write(&buffer)? as u64;
    }
    Ok(bytes * 8)
}

fn udp_loop(target: SocketAddr, deadline: Instant) -> std::io::Result<u64> {
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
    socket.connect(target)?;
    socket.set_read_timeout(Some(UDP_WAIT))?;
    let (mut count, mut lost) = (0u64, 0u64);
    let mut answer = [0u8; 64];
    while Instant::now() < deadline {
        socket.send(&[1])?;
        match socket.recv(&mut answer) {
            Ok(_) => count += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                lost += 1;
                if lost > UDP_MAX_LOST {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        format!("{lost} datagrams got no echo"),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(count)
}
