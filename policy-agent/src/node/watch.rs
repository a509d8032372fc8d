//! `LinkWatch`: links appearing and disappearing, from the kernel's `RTNLGRP_LINK`
//! multicast group, so a new pod veth can be attached the moment it exists.

use std::collections::{BTreeMap, VecDeque};

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::Socket;
use tokio::io::unix::AsyncFd;

use super::{
    links::{describe, Link},
    socket::{decode_all, open_socket, Netlink},
    NodeError,
};

/// `RTNLGRP_LINK` (linux/rtnetlink.h): link notifications.
const RTNLGRP_LINK: u32 = 1;
/// `ENOBUFS`: the socket's receive buffer overflowed and notifications were lost.
const ENOBUFS: i32 = 105;

/// A change in the set of links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link exists that was not announced before, or was renamed or enslaved to
    /// another device (or released from one): then with its new name and master,
    /// same index.
    Added(Link),
    /// A link is gone (deleted or moved to another namespace).
    Removed(Link),
}

/// Link events of the network namespace the watch was opened in. Its first events
/// are `Added` for every link that exists at `open`; the subscription starts
/// before that dump, so no link is missed in between. When the kernel drops
/// notifications (receive buffer overflow), the watch dumps the links again and
/// reports the difference, so a consumer's view stays exact.
pub struct LinkWatch {
    /// The subscribed socket until the first `next` registers it with tokio.
    socket: Option<Socket>,
    fd: Option<AsyncFd<Socket>>,
    /// For dumps after an overflow: opened with the watch, so in its namespace.
    dump: Netlink,
    known: BTreeMap<u32, Link>,
    queue: VecDeque<LinkEvent>,
    /// Notifications may have been lost (a datagram that did not decode, a dump
    /// after an overflow that failed, a receive error): the next `next` dumps the
    /// links again before it waits, or a link announced in them would never be.
    stale: bool,
    /// Tests: treat the next datagram as one that does not decode.
    #[cfg(feature = "testing")]
    fail_next: bool,
}

impl LinkWatch {
    /// Subscribes to link notifications in the calling thread's network namespace
    /// and queues the links that exist now. Needs no tokio runtime; `next` does.
    pub fn open() -> Result<Self, NodeError> {
        let socket = open_socket()?;
        socket
            .add_membership(RTNLGRP_LINK)
            .map_err(|source| NodeError::Socket {
                what: "subscribe to link notifications",
                source,
            })?;
        socket
            .set_non_blocking(true)
            .map_err(|source| NodeError::Socket {
                what: "make non-blocking",
                source,
            })?;
        let mut watch = Self {
            socket: Some(socket),
            fd: None,
            dump: Netlink::open()?,
            known: BTreeMap::new(),
            queue: VecDeque::new(),
            stale: false,
            #[cfg(feature = "testing")]
            fail_next: false,
        };
        watch.resync()?;
        Ok(watch)
    }

    /// The links known now (as announced so far), by index.
    pub fn known(&self) -> &BTreeMap<u32, Link> {
        &self.known
    }

    /// The next event. Cancel-safe: an event read but not returned stays queued.
    /// After an error that may have lost notifications, the next call dumps the
    /// links first and queues what changed.
    pub async fn next(&mut self) -> Result<LinkEvent, NodeError> {
        if self.stale {
            self.resync()?;
            self.stale = false;
        }
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(event);
            }
            let received = {
                let fd = self.registered()?;
                let mut guard = fd.readable().await.map_err(|source| NodeError::Socket {
                    what: "wait for link notifications",
                    source,
                })?;
                match guard.try_io(|socket| socket.get_ref().recv_from_full()) {
                    Ok(result) => result,
                    Err(_would_block) => continue,
                }
            };
            let handled = match received {
                Ok((data, _)) => self.handle(&data),
                Err(error) if error.raw_os_error() == Some(ENOBUFS) => {
                    tracing::warn!("link notifications were lost (receive buffer full); dumping the links again");
                    self.resync()
                }
                Err(source) => Err(NodeError::Socket {
                    what: "receive link notifications",
                    source,
                }),
            };
            if let Err(error) = handled {
                self.stale = true;
                return Err(error);
            }
        }
    }

    fn registered(&mut self) -> Result<&AsyncFd<Socket>, NodeError> {
        if let Some(socket) = self.socket.take() {
            // SAFETY: `Socket` owns its descriptor (closed only when it drops) and
            // `as_raw_fd` always returns that one, so the descriptor stays valid and
            // the same for as long as the `AsyncFd` owns the socket.
            let fd = unsafe { AsyncFd::register(socket) }.map_err(|error| NodeError::Socket {
                what: "register with the tokio runtime",
                source: std::io::Error::from(error),
            })?;
            self.fd = Some(fd);
        }
        self.fd.as_ref().ok_or_else(|| NodeError::Socket {
            what: "register with the tokio runtime",
            source: std::io::Error::other("the watch socket was lost"),
        })
    }

    /// Tests: the next datagram received is dropped as one that does not decode
    /// would be, and `next` returns an error for it.
    #[cfg(feature = "testing")]
    pub fn fail_next_datagram(&mut self) {
        self.fail_next = true;
    }

    /// Queues the events one datagram of notifications carries.
    fn handle(&mut self, data: &[u8]) -> Result<(), NodeError> {
        #[cfg(feature = "testing")]
        if std::mem::take(&mut self.fail_next) {
            return Err(NodeError::Socket {
                what: "decode link notifications (made to fail by a test)",
                source: std::io::Error::other("test"),
            });
        }
        for message in decode_all(data, &|| "link notification".to_string())? {
            match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    self.seen(describe(&link).0);
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    if let Some(gone) = self.known.remove(&link.header.index) {
                        self.queue.push_back(LinkEvent::Removed(gone));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Records a link the kernel reports present; queues `Added` if it is new,
    /// renamed or has another master (`RTM_NEWLINK` also announces every flag or
    /// state change, which are no news here).
    fn seen(&mut self, link: Link) {
        let known = self.known.get(&link.index);
        if known.is_none_or(|k| k.name != link.name || k.master != link.master) {
            self.known.insert(link.index, link.clone());
            self.queue.push_back(LinkEvent::Added(link));
        }
    }

    /// Dumps the links and queues the difference from what is known.
    fn resync(&mut self) -> Result<(), NodeError> {
        let present: BTreeMap<u32, Link> = self
            .dump
            .links()?
            .into_iter()
            .map(|(link, _)| (link.index, link))
            .collect();
        let gone: Vec<u32> = self
            .known
            .keys()
            .filter(|index| !present.contains_key(index))
            .copied()
            .collect();
        for index in gone {
            if let Some(link) = self.known.remove(&index) {
                self.queue.push_back(LinkEvent::Removed(link));
            }
        }
        for link in present.into_values() {
            self.seen(link);
        }
        Ok(())
    }
}
