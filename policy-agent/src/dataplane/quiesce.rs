//! Waiting until no classifier run still uses the bank `ACTIVE` just left.
//!
//! The kernel offers no "wait for BPF programs" call, but updating an element of a
//! map-in-map from userspace makes it call `synchronize_rcu()` (expedited on
//! recent kernels) before the syscall returns (`maybe_wait_bpf_programs` in
//! `kernel/bpf/syscall.c`): every program run that started before the update has
//! finished by then. TC classifiers run inside an RCU read-side section, so after
//! that call no packet that read the old `ACTIVE` value is still being decided.
//!
//! aya 0.14 cannot create a map-of-maps on its own (its constructor with an inner
//! map is crate-private), so the outer `BPF_MAP_TYPE_ARRAY_OF_MAPS` comes from one
//! raw `bpf(BPF_MAP_CREATE)` call (`sys.rs`). Both maps belong to this process
//! alone; no program uses them.

use std::os::fd::{AsFd, AsRawFd};

use aya::{
    maps::{Array, ArrayOfMaps, IterableMap, Map, MapData, MapError},
    sys::SyscallError,
};

use super::DataplaneError;

/// Name of the outer map (kernel object names are at most 15 bytes).
pub(super) const QUIESCE_MAP: &str = "pw_quiesce";

/// The map-in-map whose update waits for running programs.
pub(super) struct Quiesce {
    outer: ArrayOfMaps<MapData, Array<MapData, u32>>,
    inner: Array<MapData, u32>,
}

fn error(operation: &'static str, call: &'static str, io_error: std::io::Error) -> DataplaneError {
    DataplaneError::MapOp {
        map: QUIESCE_MAP,
        operation,
        source: Box::new(MapError::SyscallError(SyscallError { call, io_error })),
    }
}

impl Quiesce {
    /// Creates the inner array and the one-slot outer array of maps.
    pub fn new() -> Result<Self, DataplaneError> {
        let inner =
            Array::<MapData, u32>::create(1, 0).map_err(|source| DataplaneError::MapOp {
                map: QUIESCE_MAP,
                operation: "create the inner map",
                source: Box::new(source),
            })?;
        let inner_fd = inner.map().fd().as_fd().as_raw_fd();
        let outer = super::sys::create_array_of_maps(QUIESCE_MAP, inner_fd)
            .map_err(|e| error("create", "BPF_MAP_CREATE", e))?;
        let data = MapData::from_fd(outer).map_err(|source| DataplaneError::MapOp {
            map: QUIESCE_MAP,
            operation: "open",
            source: Box::new(source),
        })?;
        let map = Map::from_map_data(data).map_err(|source| DataplaneError::MapOp {
            map: QUIESCE_MAP,
            operation: "open",
            source: Box::new(source),
        })?;
        let outer = ArrayOfMaps::try_from(map).map_err(|source| DataplaneError::MapOp {
            map: QUIESCE_MAP,
            operation: "open as an array of maps",
            source: Box::new(source),
        })?;
        Ok(Self { outer, inner })
    }

    /// Returns once every classifier run that started before the call has ended.
    pub fn wait(&mut self) -> Result<(), DataplaneError> {
        self.outer
            .set(0, &self.inner, 0)
            .map_err(|source| DataplaneError::MapOp {
                map: QUIESCE_MAP,
                operation: "wait for running programs",
                source: Box::new(source),
            })
    }
}
