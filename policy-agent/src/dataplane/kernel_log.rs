//! The kernel debug channel, agent side (`LoadOptions::kernel_debug`): the
//! classifiers' aya-log records, drained from their ring buffer into `tracing` at
//! debug level under `KERNEL_LOG_TARGET`.
//!
//! The object's switch is a read-only global (`KERNEL_DEBUG_GLOBAL`) set once at
//! load time, so a datapath loaded without the channel runs no logging code at
//! all: the verifier removed it. With the channel on, `KernelLog::start` takes the
//! object's `AYA_LOGS` ring buffer and a thread of its own waits on it and hands
//! every record to aya-log's `EbpfLogger`, which formats it and passes it to
//! `Forward`. Dropping the `KernelLog` drains what is left and stops the thread.

use std::{
    os::fd::AsFd,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::Ebpf;
use aya_log::EbpfLogger;
use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
};

use super::DataplaneError;

/// The `tracing` target of the classifiers' records
/// (`RUST_LOG=podwall::kernel=debug` selects them alone).
pub const KERNEL_LOG_TARGET: &str = "podwall::kernel";

/// How long the drain waits for a record before it looks at its stop flag again.
const POLL_INTERVAL_MS: u16 = 100;

/// The drain of a loaded object's debug records; stops when dropped.
pub(super) struct KernelLog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KernelLog {
    /// Takes `ebpf`'s `AYA_LOGS` ring buffer and starts draining it. Call it
    /// between `load_file` and loading the programs: the programs refer to the map,
    /// which this keeps open.
    pub(super) fn start(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let logger = EbpfLogger::init_with_logger(ebpf, Forward).map_err(|error| {
            DataplaneError::KernelLog {
                what: "the object has no debug channel (rebuild it with `cargo xtask build-ebpf`)",
                source: Some(Box::new(error)),
            }
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("kernel-log".to_string())
            .spawn({
                let stop = Arc::clone(&stop);
                move || drain(logger, &stop)
            })
            .map_err(|error| DataplaneError::KernelLog {
                what: "starting the drain thread",
                source: Some(Box::new(error)),
            })?;
        tracing::info!("kernel debug channel on: the classifiers' records are logged at debug level under {KERNEL_LOG_TARGET}");
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for KernelLog {
    /// Tells the drain to stop without waiting for it: under a flood of records
    /// (a pod sending malformed frames as fast as it can) aya-log's flush returns
    /// only once the ring is empty, and the datapath's owner must not hang on it.
    /// The thread ends at its next pass once the programs stop writing.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.thread.take());
    }
}

/// Waits for records and logs them until `stop`, then logs what is left.
fn drain(mut logger: EbpfLogger<Forward>, stop: &AtomicBool) {
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let ready = {
            let mut fds = [PollFd::new(logger.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(POLL_INTERVAL_MS))
        };
        match ready {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(error) => {
                tracing::warn!(%error, "waiting on the kernel debug ring buffer failed; retrying");
                std::thread::sleep(Duration::from_millis(u64::from(POLL_INTERVAL_MS)));
            }
        }
        flush(&mut logger);
        if stopping {
            return;
        }
    }
}

/// Logs every record waiting. aya-log panics on a record it cannot decode (its
/// `flush` unwraps): that record is skipped (the ring buffer entry is released as
/// the panic unwinds) with a warning, and the drain goes on.
fn flush<T: log::Log>(logger: &mut EbpfLogger<T>) {
    if catch_unwind(AssertUnwindSafe(|| logger.flush())).is_err() {
        tracing::warn!("a kernel debug record could not be decoded and was skipped");
    }
}

/// Hands aya-log's records on to `tracing`, at debug level whatever level the
/// classifier gave them.
struct Forward;

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        tracing::debug!(target: KERNEL_LOG_TARGET, "{}", record.args());
    }

    fn flush(&self) {}
}

/// The debug records waiting in `ebpf`'s ring buffer, which nothing drained.
/// Takes the ring buffer, so it can be read once (`Datapath::kernel_log_backlog`).
#[cfg(feature = "testing")]
pub(super) fn backlog(ebpf: &mut Ebpf) -> Result<Vec<String>, DataplaneError> {
    let records = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut logger =
        EbpfLogger::init_with_logger(ebpf, Collect(Arc::clone(&records))).map_err(|error| {
            DataplaneError::KernelLog {
                what: "opening its ring buffer (was the backlog read already?)",
                source: Some(Box::new(error)),
            }
        })?;
    flush(&mut logger);
    let collected = match records.lock() {
        Ok(records) => records.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    Ok(collected)
}

/// Keeps aya-log's records as text (`Datapath::kernel_log_backlog`).
#[cfg(feature = "testing")]
struct Collect(Arc<std::sync::Mutex<Vec<String>>>);

#[cfg(feature = "testing")]
impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut records) = self.0.lock() {
            records.push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}
