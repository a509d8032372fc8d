//! Reads the `EVENTS` ring buffer: verdict events as the classifiers emitted them,
//! in host types. A ring buffer has one consumer position, so one reader at a time
//! sees each event: `lab run --show-drops` and `policy-agent flows` do not share.

use std::{
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    time::Duration,
};

use aya::maps::{Map, MapData, RingBuf};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use policy_common::{
    events::{VerdictEvent, EVENTS_MAP, EVENT_ALLOW, EVENT_DROP},
    verdict::{DIRECTION_INGRESS, STATS_LEN, STAT_NAMES},
};
use serde::Serialize;

use super::{keys::key_address, Datapath, DataplaneError, InterfaceIndex};
use crate::policy::tables::{Direction, RuleRef};

/// What the classifier did with the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventVerdict {
    /// Passed.
    Allow,
    /// Dropped.
    Drop,
    /// Passed because every isolating policy is in audit mode; enforcing them would
    /// have dropped it.
    WouldDrop,
}

/// One verdict event in host types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerdictRecord {
    /// `CLOCK_MONOTONIC` nanoseconds of the verdict.
    pub timestamp_ns: u64,
    /// The pod's host-side interface.
    pub ifindex: InterfaceIndex,
    /// The pod's endpoint id (0 when the interface is unknown).
    pub endpoint_id: u32,
    /// Direction relative to the pod.
    pub direction: Direction,
    /// What happened to the packet.
    pub verdict: EventVerdict,
    /// The `STATS` counter the packet landed in, e.g. `drop_policy`.
    pub reason: &'static str,
    /// Source address and port (ICMP echo: identifier).
    pub source: (IpAddr, u16),
    /// Destination address and port (ICMP echo: identifier).
    pub destination: (IpAddr, u16),
    /// IP protocol number.
    pub protocol: u8,
    /// The rule that allowed the packet, for an allow by a rule.
    pub rule: Option<RuleRef>,
    /// `skb->len`.
    pub packet_len: u32,
}

impl VerdictRecord {
    /// The record of a raw event; `None` for bytes that are not one.
    fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<VerdictEvent>() {
            return None;
        }
        // SAFETY: VerdictEvent is repr(C) plain old data (every bit pattern valid) and
        // `bytes` holds at least its size; read_unaligned copes with any alignment.
        let event: VerdictEvent = unsafe { bytes.as_ptr().cast::<VerdictEvent>().read_unaligned() };
        let verdict = match event.verdict {
            EVENT_ALLOW => EventVerdict::Allow,
            EVENT_DROP => EventVerdict::Drop,
            _ => EventVerdict::WouldDrop,
        };
        let reason = if event.stat < STATS_LEN {
            STAT_NAMES[event.stat as usize]
        } else {
            ""
        };
        Some(Self {
            timestamp_ns: event.timestamp_ns,
            ifindex: event.ifindex,
            endpoint_id: event.endpoint_id,
            direction: if event.direction == DIRECTION_INGRESS {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            verdict,
            reason,
            source: (key_address(event.saddr), u16::from_be(event.sport_be)),
            destination: (key_address(event.daddr), u16::from_be(event.dport_be)),
            protocol: event.protocol,
            rule: (event.policy_id != u32::MAX).then_some(RuleRef {
                policy_id: event.policy_id,
                rule_index: event.rule_index,
            }),
            packet_len: event.packet_len,
        })
    }
}

/// A consumer of the `EVENTS` ring buffer.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    fn new(data: MapData) -> Result<Self, DataplaneError> {
        let map = Map::from_map_data(data).map_err(|source| DataplaneError::MapOp {
            map: EVENTS_MAP,
            operation: "open",
            source: Box::new(source),
        })?;
        let ring = RingBuf::try_from(map).map_err(|e| DataplaneError::Map {
            map: EVENTS_MAP,
            message: e.to_string(),
        })?;
        Ok(Self { ring })
    }

    /// Opens the ring buffer a datapath pinned at `path` (`Datapath::pin_events`).
    pub fn open_pinned(path: &Path) -> Result<Self, DataplaneError> {
        let data = MapData::from_pin(path).map_err(|source| DataplaneError::Pinned {
            path: path.to_path_buf(),
            message: source.to_string(),
        })?;
        Self::new(data)
    }

    /// Every event waiting now, oldest first, without blocking.
    pub fn drain(&mut self) -> Vec<VerdictRecord> {
        let mut records = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(record) = VerdictRecord::parse(&item) {
                records.push(record);
            }
        }
        records
    }

    /// Waits until an event is waiting or `timeout` passes (an interrupted wait
    /// returns early; callers loop).
    pub fn wait(&mut self, timeout: Duration) -> Result<(), DataplaneError> {
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.ring.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(errno) => Err(DataplaneError::MapOp {
                map: EVENTS_MAP,
                operation: "poll",
                source: Box::new(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "poll",
                    io_error: std::io::Error::from(errno),
                })),
            }),
        }
    }
}

impl AsRawFd for EventReader {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

impl Datapath {
    /// A reader of this datapath's `EVENTS` (a second handle on the same ring
    /// buffer; the datapath keeps its own).
    pub fn event_reader(&mut self) -> Result<EventReader, DataplaneError> {
        let Map::RingBuf(data) = self.map(EVENTS_MAP)? else {
            return Err(DataplaneError::Map {
                map: EVENTS_MAP,
                message: "not a ring buffer".into(),
            });
        };
        let id = data
            .info()
            .map_err(|source| DataplaneError::MapOp {
                map: EVENTS_MAP,
                operation: "read info",
                source: Box::new(source),
            })?
            .id();
        let data = MapData::from_id(id).map_err(|source| DataplaneError::MapOp {
            map: EVENTS_MAP,
            operation: "open by id",
            source: Box::new(source),
        })?;
        EventReader::new(data)
    }

    /// Pins `EVENTS` at `path` (on bpffs) so another process (`policy-agent flows`)
    /// can follow it; the pin outlives this process until removed.
    pub fn pin_events(&mut self, path: &Path) -> Result<(), DataplaneError> {
        let map = self.map(EVENTS_MAP)?;
        map.pin(path).map_err(|source| DataplaneError::Pinned {
            path: path.to_path_buf(),
            message: source.to_string(),
        })
    }
}
