//! What the classifiers report of their verdicts, and its owner `VerdictReports`:
//! `STATS` (a count per verdict and reason) and the `EVENTS` ring buffer (verdict
//! events as the classifiers emitted them, read here in host types). A ring buffer
//! has one consumer position, so one reader at a time sees each event: `lab run
//! --show-drops` and `policy-agent flows` do not share.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd, AsRawFd},
    path::Path,
    time::Duration,
};

use aya::{
    maps::{IterableMap, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use policy_common::{
    counters::NO_COUNTER,
    events::{VerdictEvent, EVENT_ALLOWED, EVENT_DROPPED, EVENT_WOULD_DROP},
    maps,
    verdict::{DIRECTION_EGRESS, DIRECTION_INGRESS, STATS_LEN, STAT_NAMES},
};
use serde::Serialize;

use super::{
    keys::key_address,
    maps::{map_error, map_of, pinned_map_data, Stats},
    DataplaneError, InterfaceIndex,
};
use crate::policy::tables::Direction;

/// What the classifier did with the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventVerdict {
    /// Passed.
    Allowed,
    /// Dropped.
    Dropped,
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
    /// Source address and port (ICMP echo: identifier); unspecified (`0.0.0.0` or
    /// `::`, port 0) for a packet dropped before it was parsed.
    pub source: (IpAddr, u16),
    /// Destination address and port (ICMP echo: identifier); unspecified as
    /// `source` is.
    pub destination: (IpAddr, u16),
    /// IP protocol number.
    pub protocol: u8,
    /// The `RULE_COUNTERS` slot of the rule that allowed the packet, for an allow
    /// by a rule: `Datapath::rule_slots` (or a flow log's names file) names it.
    pub rule_slot: Option<u32>,
    /// `skb->len`.
    pub packet_len: u32,
}

impl VerdictRecord {
    /// The record of a raw event; `None` for bytes that are not one: too short, or
    /// a verdict or direction byte this agent does not know (another ABI's event
    /// is not guessed at).
    fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<VerdictEvent>() {
            return None;
        }
        // SAFETY: VerdictEvent is repr(C) plain old data (every bit pattern valid) and
        // `bytes` holds at least its size; read_unaligned copes with any alignment.
        let event: VerdictEvent = unsafe { bytes.as_ptr().cast::<VerdictEvent>().read_unaligned() };
        let verdict = match event.verdict {
            EVENT_ALLOWED => EventVerdict::Allowed,
            EVENT_DROPPED => EventVerdict::Dropped,
            EVENT_WOULD_DROP => EventVerdict::WouldDrop,
            _ => return None,
        };
        let direction = match event.direction {
            DIRECTION_INGRESS => Direction::Ingress,
            DIRECTION_EGRESS => Direction::Egress,
            _ => return None,
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
            direction,
            verdict,
            reason,
            source: (
                event_address(event.saddr, event.ipv6),
                u16::from_be(event.sport_be),
            ),
            destination: (
                event_address(event.daddr, event.ipv6),
                u16::from_be(event.dport_be),
            ),
            protocol: event.protocol,
            rule_slot: (event.rule_slot != NO_COUNTER).then_some(event.rule_slot),
            packet_len: event.packet_len,
        })
    }
}

/// An event's address: IPv4 for a mapped address, and `0.0.0.0` for the zero
/// address of an IPv4 packet dropped before it was parsed (`::` for IPv6).
fn event_address(bytes: [u8; 16], ipv6: u8) -> IpAddr {
    if ipv6 == 0 && bytes == [0; 16] {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        key_address(bytes)
    }
}

/// A consumer of the `EVENTS` ring buffer.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    fn new(data: MapData) -> Result<Self, DataplaneError> {
        let map = map_of(data, maps::EVENTS.name)?;
        let ring = RingBuf::try_from(map).map_err(|e| DataplaneError::Map {
            map: maps::EVENTS.name,
            what: "open".into(),
            source: Some(Box::new(e)),
        })?;
        Ok(Self { ring })
    }

    /// Opens the ring buffer a datapath pinned at `path` (`Datapath::pin_events`).
    pub fn open_pinned(path: &Path) -> Result<Self, DataplaneError> {
        Self::new(pinned_map_data(path)?)
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
                map: maps::EVENTS.name,
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

/// `STATS` and `EVENTS`: the agent's handles on them (the classifiers write both;
/// the agent reads, and pins them for readers in other processes).
pub(super) struct VerdictReports {
    stats: PerCpuArray<MapData, u64>,
    events: MapData,
}

impl VerdictReports {
    /// Takes both maps out of `ebpf`.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            stats: super::maps::per_cpu_array(ebpf, maps::STATS)?,
            events: super::maps::ring_buf(ebpf, maps::EVENTS)?,
        })
    }

    /// The verdict counters, summed over CPUs.
    pub(super) fn stats(&self) -> Result<Stats, DataplaneError> {
        read_stats(&self.stats)
    }

    /// A reader of `EVENTS` with a handle of its own on the ring buffer.
    pub(super) fn reader(&self) -> Result<EventReader, DataplaneError> {
        // A duplicate of the fd, not `MapData::from_id`: opening a map by id needs
        // CAP_SYS_ADMIN, which the agent does not have.
        EventReader::new(super::maps::duplicate(&self.events, maps::EVENTS.name)?)
    }

    /// Pins `EVENTS` at `path` (on bpffs).
    pub(super) fn pin_events(&self, path: &Path) -> Result<(), DataplaneError> {
        super::maps::pin(&self.events, path)
    }

    /// Pins `STATS` at `path` (on bpffs).
    pub(super) fn pin_stats(&self, path: &Path) -> Result<(), DataplaneError> {
        super::maps::pin(self.stats.map(), path)
    }
}

/// Every named counter of a `STATS` map, summed over CPUs.
pub(super) fn read_stats(array: &PerCpuArray<MapData, u64>) -> Result<Stats, DataplaneError> {
    let mut counters = Vec::new();
    for index in 0..STATS_LEN {
        let name = STAT_NAMES[index as usize];
        if name.is_empty() {
            continue;
        }
        let values = array
            .get(&index, 0)
            .map_err(map_error(maps::STATS.name, "read"))?;
        counters.push((name, values.iter().sum()));
    }
    Ok(Stats { counters })
}

#[cfg(test)]
mod tests {
    use policy_common::verdict::{STAT_ALLOW_POLICY, STAT_DROP_MALFORMED};

    use super::*;

    fn bytes(event: &VerdictEvent) -> Vec<u8> {
        // SAFETY: VerdictEvent is repr(C) plain old data without padding bytes.
        unsafe {
            std::slice::from_raw_parts(
                (event as *const VerdictEvent).cast::<u8>(),
                size_of::<VerdictEvent>(),
            )
        }
        .to_vec()
    }

    fn mapped(v4: [u8; 4]) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[10] = 0xff;
        key[11] = 0xff;
        key[12..].copy_from_slice(&v4);
        key
    }

    #[test]
    fn an_allow_by_a_rule_reads_back_in_host_types() {
        let event = VerdictEvent {
            timestamp_ns: 7,
            ifindex: 12,
            endpoint_id: 3,
            saddr: mapped([10, 2, 0, 5]),
            daddr: mapped([10, 1, 0, 10]),
            sport_be: 40000u16.to_be(),
            dport_be: 80u16.to_be(),
            protocol: 6,
            direction: DIRECTION_EGRESS,
            verdict: EVENT_ALLOWED,
            ipv6: 0,
            stat: STAT_ALLOW_POLICY,
            rule_slot: 4,
            packet_len: 74,
            pad: 0,
        };
        let record = VerdictRecord::parse(&bytes(&event));
        assert_eq!(
            record,
            Some(VerdictRecord {
                timestamp_ns: 7,
                ifindex: 12,
                endpoint_id: 3,
                direction: Direction::Egress,
                verdict: EventVerdict::Allowed,
                reason: "allow_policy",
                source: (IpAddr::from([10, 2, 0, 5]), 40000),
                destination: (IpAddr::from([10, 1, 0, 10]), 80),
                protocol: 6,
                rule_slot: Some(4),
                packet_len: 74,
            })
        );
    }

    #[test]
    fn an_unparsed_drop_has_unspecified_addresses_of_its_family_and_no_rule() {
        for (ipv6, unspecified) in [(0, IpAddr::from([0u8; 4])), (1, IpAddr::from([0u16; 8]))] {
            let event = VerdictEvent {
                verdict: EVENT_DROPPED,
                ipv6,
                stat: STAT_DROP_MALFORMED,
                rule_slot: NO_COUNTER,
                ..VerdictEvent::default()
            };
            let record = VerdictRecord::parse(&bytes(&event));
            let record = record.unwrap_or_else(|| panic!("a whole event"));
            assert_eq!(
                (
                    record.source,
                    record.destination,
                    record.rule_slot,
                    record.reason
                ),
                ((unspecified, 0), (unspecified, 0), None, "drop_malformed")
            );
            assert_eq!(record.verdict, EventVerdict::Dropped);
        }
    }

    #[test]
    fn a_would_drop_reads_as_such_and_short_bytes_are_no_event() {
        let event = VerdictEvent {
            verdict: EVENT_WOULD_DROP,
            stat: u32::MAX,
            rule_slot: NO_COUNTER,
            ..VerdictEvent::default()
        };
        let raw = bytes(&event);
        let record = VerdictRecord::parse(&raw).map(|r| (r.verdict, r.reason));
        assert_eq!(record, Some((EventVerdict::WouldDrop, "")));
        assert_eq!(VerdictRecord::parse(&raw[..raw.len() - 1]), None);
    }

    #[test]
    fn an_unknown_verdict_or_direction_byte_is_no_event() {
        let known = VerdictEvent {
            verdict: EVENT_DROPPED,
            direction: DIRECTION_EGRESS,
            rule_slot: NO_COUNTER,
            ..VerdictEvent::default()
        };
        assert!(VerdictRecord::parse(&bytes(&known)).is_some());
        for verdict in [EVENT_WOULD_DROP + 1, u8::MAX] {
            let event = VerdictEvent { verdict, ..known };
            assert_eq!(
                VerdictRecord::parse(&bytes(&event)),
                None,
                "verdict {verdict}"
            );
        }
        for direction in [DIRECTION_EGRESS + 1, u8::MAX] {
            let event = VerdictEvent { direction, ..known };
            assert_eq!(
                VerdictRecord::parse(&bytes(&event)),
                None,
                "direction {direction}"
            );
        }
    }
}
