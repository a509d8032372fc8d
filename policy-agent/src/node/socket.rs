//! One rtnetlink socket and the request/reply exchange every query uses.

use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::NodeError;

/// How long a reply may take before the request fails (the kernel answers at once;
/// this only keeps a lost reply from hanging the agent).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A blocking rtnetlink socket in the network namespace of the thread that opened
/// it, for one request at a time.
pub(super) struct Netlink {
    socket: Socket,
    sequence: u32,
}

/// Opens a route netlink socket bound to a kernel-chosen port.
pub(super) fn open_socket() -> Result<Socket, NodeError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|source| NodeError::Socket {
        what: "open",
        source,
    })?;
    socket.bind_auto().map_err(|source| NodeError::Socket {
        what: "bind",
        source,
    })?;
    Ok(socket)
}

/// Decodes every message of one datagram; `request` names it in errors.
pub(super) fn decode_all(
    data: &[u8],
    request: &dyn Fn() -> String,
) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, NodeError> {
    let mut messages = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let bytes = data.get(offset..).unwrap_or_default();
        let message =
            NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).map_err(|source| {
                NodeError::Decode {
                    request: request(),
                    source,
                }
            })?;
        let length = message.header.length as usize;
        if length == 0 {
            break;
        }
        // Messages in one datagram start at 4-byte boundaries (NLMSG_ALIGN).
        offset += (length + 3) & !3;
        messages.push(message);
    }
    Ok(messages)
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NodeError> {
        let socket = open_socket()?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|source| NodeError::Socket {
                what: "connect",
                source,
            })?;
        socket2::SockRef::from(&socket)
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|source| NodeError::Socket {
                what: "set a receive timeout",
                source,
            })?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// `open` with strict checking of requests (`NETLINK_GET_STRICT_CHK`), which
    /// the kernel needs to honour `IFA_TARGET_NETNSID` in an address dump.
    pub fn open_strict() -> Result<Self, NodeError> {
        let netlink = Self::open()?;
        netlink
            .socket
            .set_netlink_get_strict_chk(true)
            .map_err(|source| NodeError::Socket {
                what: "turn on strict checking",
                source,
            })?;
        Ok(netlink)
    }

    /// Sends `message` (a dump if `dump`) and returns the replies: every message
    /// of a dump, or the one reply of a get. `request` names it in errors.
    pub fn request(
        &mut self,
        message: RouteNetlinkMessage,
        dump: bool,
        request: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NodeError> {
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        self.exchange(message, flags, dump, request)
    }

    /// Sends `message` as a change the kernel acknowledges (`NLM_F_ACK` plus
    /// `flags`, e.g. `NLM_F_CREATE | NLM_F_EXCL`) and waits for the
    /// acknowledgement. `request` names it in errors.
    #[cfg(feature = "testing")]
    pub fn change(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        request: &dyn Fn() -> String,
    ) -> Result<(), NodeError> {
        let flags = NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK | flags;
        self.exchange(message, flags, false, request).map(drop)
    }

    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        dump: bool,
        request: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NodeError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket
            .send(&buffer, 0)
            .map_err(|source| NodeError::Socket {
                what: "send",
                source,
            })?;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(|source| NodeError::Socket {
                    what: "receive",
                    source,
                })?;
            for reply in decode_all(&data, request)? {
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(NodeError::Kernel {
                            request: request(),
                            source: error.to_io(),
                        })
                    }
                    // An acknowledgement: nothing more follows.
                    NetlinkPayload::Error(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if !dump {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
