//! What can go wrong talking rtnetlink.

/// An rtnetlink request that failed, with what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The netlink socket could not be opened, bound or read.
    #[error("rtnetlink socket: cannot {what}")]
    Socket {
        /// What was attempted (open, bind, send, receive, subscribe).
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel answered a request with an error.
    #[error("rtnetlink {request}: the kernel answered")]
    Kernel {
        /// The request, with its argument (e.g. `route get 10.0.0.1`).
        request: String,
        /// The error the kernel sent.
        #[source]
        source: std::io::Error,
    },
    /// A reply could not be decoded.
    #[error("rtnetlink {request}: undecodable reply")]
    Decode {
        /// The request.
        request: String,
        /// What the decoder said.
        #[source]
        source: netlink_packet_core::DecodeError,
    },
}

impl NodeError {
    /// A short label for metrics (`podwall_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            NodeError::Socket { .. } => "netlink_socket",
            NodeError::Kernel { .. } => "netlink_kernel",
            NodeError::Decode { .. } => "netlink_decode",
        }
    }

    /// The errno the kernel answered with, if this is a kernel answer.
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            NodeError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
