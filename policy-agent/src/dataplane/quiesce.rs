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
//! raw `bpf(BPF_MAP_CREATE)` call: the only `unsafe` here. Both maps belong to this
//! process alone; no program uses them.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use aya::{
    maps::{Array, ArrayOfMaps, IterableMap, Map, MapData, MapError},
    sys::SyscallError,
};

use super::DataplaneError;

/// Name of the outer map (kernel object names are at most 15 bytes).
pub(super) const QUIESCE_MAP: &str = "pw_quiesce";

/// `BPF_MAP_CREATE` (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_MAP_CREATE: nix::libc::c_long = 0;
/// `BPF_MAP_TYPE_ARRAY_OF_MAPS` (`enum bpf_map_type`).
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The head of `union bpf_attr` as `BPF_MAP_CREATE` reads it, up to `map_name`.
/// The kernel zero-fills the fields past the size it is given.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

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
        let outer = create_outer(inner.map().fd().as_fd().as_raw_fd())?;
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

/// `bpf(BPF_MAP_CREATE)` for a one-entry `ARRAY_OF_MAPS` whose inner maps look
/// like `inner_fd`.
fn create_outer(inner_fd: i32) -> Result<OwnedFd, DataplaneError> {
    let inner_map_fd = u32::try_from(inner_fd).map_err(|_| {
        error(
            "create",
            "BPF_MAP_CREATE",
            std::io::Error::other("negative fd"),
        )
    })?;
    let mut map_name = [0u8; 16];
    map_name[..QUIESCE_MAP.len()].copy_from_slice(QUIESCE_MAP.as_bytes());
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
        inner_map_fd,
        numa_node: 0,
        map_name,
    };
    // SAFETY: `attr` is a live, initialized bpf_attr prefix of the size passed; the
    // kernel only reads it. The call returns a new fd or -1 with errno.
    let fd = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreateAttr,
            size_of::<MapCreateAttr>(),
        )
    };
    if fd < 0 {
        return Err(error(
            "create",
            "BPF_MAP_CREATE",
            std::io::Error::last_os_error(),
        ));
    }
    let fd = i32::try_from(fd).map_err(|_| {
        error(
            "create",
            "BPF_MAP_CREATE",
            std::io::Error::other("fd out of range"),
        )
    })?;
    // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attr_prefix_ends_with_the_map_name_where_the_kernel_has_it() {
        assert_eq!(std::mem::offset_of!(MapCreateAttr, inner_map_fd), 20);
        assert_eq!(std::mem::offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(size_of::<MapCreateAttr>(), 44);
        assert!(QUIESCE_MAP.len() < 16);
    }
}
