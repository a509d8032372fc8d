//! The `cls_bpf`-style TC filters on an interface's `clsact` hooks, read over
//! rtnetlink (`RTM_GETTFILTER` dump): how the agent bench and tests see which
//! filters a pod interface carries.

use netlink_packet_route::{
    tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption},
    RouteNetlinkMessage,
};

use super::{socket::Netlink, NodeError};

/// One filter on a `clsact` hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcFilter {
    /// Its priority (lower runs first).
    pub priority: u16,
    /// Its handle.
    pub handle: u32,
    /// Its classifier's kind (`bpf` for a `cls_bpf` filter).
    pub kind: String,
    /// The id of a `cls_bpf` filter's program.
    pub program_id: Option<u32>,
}

/// The filters on the `clsact` ingress (`ingress`) or egress hook of interface
/// `ifindex`, in the calling thread's network namespace: none when it has no
/// `clsact` qdisc.
pub fn tc_filters(ifindex: u32, ingress: bool) -> Result<Vec<TcFilter>, NodeError> {
    let index = i32::try_from(ifindex).unwrap_or(i32::MAX);
    let mut message = TcMessage::with_index(index);
    message.header.parent = TcHandle {
        major: TcHandle::CLSACT.major,
        minor: if ingress {
            TcHandle::MIN_INGRESS
        } else {
            TcHandle::MIN_EGRESS
        },
    };
    let request = || format!("filter dump of ifindex {ifindex}");
    let replies = match Netlink::open()?.request(
        RouteNetlinkMessage::GetTrafficFilter(message),
        true,
        &request,
    ) {
        Ok(replies) => replies,
        // No clsact qdisc: no filters.
        Err(error) if matches!(error.errno(), Some(nix::libc::EINVAL | nix::libc::ENOENT)) => {
            Vec::new()
        }
        Err(error) => return Err(error),
    };
    Ok(replies
        .into_iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewTrafficFilter(filter) => Some(filter),
            _ => None,
        })
        .filter(|filter| filter.header.index == index)
        .map(|filter| TcFilter {
            priority: (filter.header.info >> 16) as u16,
            handle: filter.header.handle.into(),
            kind: filter
                .attributes
                .iter()
                .find_map(|attribute| match attribute {
                    TcAttribute::Kind(kind) => Some(kind.clone()),
                    _ => None,
                })
                .unwrap_or_default(),
            program_id: filter
                .attributes
                .iter()
                .find_map(|attribute| match attribute {
                    TcAttribute::Options(options) => {
                        options.iter().find_map(|option| match option {
                            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => Some(*id),
                            _ => None,
                        })
                    }
                    _ => None,
                }),
        })
        .collect())
}
