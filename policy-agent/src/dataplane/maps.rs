//! Typed handles on the object's maps, opened only through their definitions in
//! `policy_common::maps`, so a map cannot be read with another map's types. Each
//! owner (`Banks`, `Counters`, `Conntrack`, `EventMaps`, `Datapath` for `CONFIG`)
//! takes its maps out of the loaded object once; nothing else opens them.
//!
//! Also what the maps' readings are in host terms: `Stats` and `MapUsage`.

use std::{os::fd::AsFd, path::Path};

use aya::{
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray},
    Ebpf, Pod,
};
use policy_common::{
    maps::{MapDef, SHARED},
    verdict::{STAT_NAMES, STAT_VERDICTS},
};

use super::DataplaneError;

/// Turns an aya map error into a `DataplaneError::MapOp` naming map and operation.
pub(super) fn map_error(
    map: &'static str,
    operation: &'static str,
) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::MapOp {
        map,
        operation,
        source: Box::new(source),
    }
}

/// Takes map `name` out of `ebpf` as `M`; aya checks its kind and, for typed
/// maps, its key and value sizes.
fn take<M: TryFrom<Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<M, DataplaneError> {
    let map = ebpf.take_map(name).ok_or(DataplaneError::Map {
        map: name,
        what: "not found in the object".into(),
        source: None,
    })?;
    M::try_from(map).map_err(map_error(name, "open"))
}

/// The hash map `def` defines.
pub(super) fn hash<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    def: MapDef<K, V>,
) -> Result<HashMap<MapData, K, V>, DataplaneError> {
    take(ebpf, def.name)
}

/// The LPM trie `def` defines.
pub(super) fn lpm_trie<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    def: MapDef<K, V>,
) -> Result<LpmTrie<MapData, K, V>, DataplaneError> {
    take(ebpf, def.name)
}

/// The array `def` defines.
pub(super) fn array<V: Pod>(
    ebpf: &mut Ebpf,
    def: MapDef<u32, V>,
) -> Result<Array<MapData, V>, DataplaneError> {
    take(ebpf, def.name)
}

/// The per-CPU array `def` defines.
pub(super) fn per_cpu_array<V: Pod>(
    ebpf: &mut Ebpf,
    def: MapDef<u32, V>,
) -> Result<PerCpuArray<MapData, V>, DataplaneError> {
    take(ebpf, def.name)
}

/// The ring buffer `def` defines, as its map data (a reader opens its own handle).
pub(super) fn ring_buf(ebpf: &mut Ebpf, def: MapDef<(), ()>) -> Result<MapData, DataplaneError> {
    match ebpf.take_map(def.name) {
        Some(Map::RingBuf(data)) => Ok(data),
        Some(_) => Err(DataplaneError::Map {
            map: def.name,
            what: "not a ring buffer".into(),
            source: None,
        }),
        None => Err(DataplaneError::Map {
            map: def.name,
            what: "not found in the object".into(),
            source: None,
        }),
    }
}

/// A second handle on `data` (a duplicate of its fd), for a reader that lives
/// apart from the owner (another thread, the conntrack sweeper).
pub(super) fn duplicate(data: &MapData, name: &'static str) -> Result<MapData, DataplaneError> {
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| DataplaneError::Map {
            map: name,
            what: "duplicating its fd".into(),
            source: Some(Box::new(e)),
        })?;
    MapData::from_fd(fd).map_err(map_error(name, "open"))
}

/// Pins `data` at `path` on bpffs.
pub(super) fn pin(data: &MapData, path: &Path) -> Result<(), DataplaneError> {
    data.pin(path).map_err(|source| DataplaneError::Pinned {
        path: path.to_path_buf(),
        what: "pinning".into(),
        os_error: os_error(&source),
        source: Some(Box::new(source)),
    })
}

/// `max_entries` of map `name` in `ebpf`, as the kernel made it.
pub(super) fn max_entries(ebpf: &Ebpf, name: &'static str) -> Result<u32, DataplaneError> {
    let data = ebpf
        .map(name)
        .and_then(map_data)
        .ok_or(DataplaneError::Map {
            map: name,
            what: "not found in the object".into(),
            source: None,
        })?;
    let info = data.info().map_err(map_error(name, "read info"))?;
    Ok(info.max_entries())
}

/// Refuses an object (or pinned maps) whose shared maps do not have the kind and the
/// key and value sizes their definitions give: a layout change without an ABI bump would
/// otherwise be read as garbage.
pub(super) fn check_layouts(ebpf: &Ebpf) -> Result<(), DataplaneError> {
    for layout in SHARED {
        let Some(data) = ebpf.map(layout.name).and_then(map_data) else {
            return Err(DataplaneError::Map {
                map: layout.name,
                what: "not found in the object".into(),
                source: None,
            });
        };
        let info = data.info().map_err(map_error(layout.name, "read info"))?;
        let kind = info
            .map_type()
            .map_err(map_error(layout.name, "read its type"))? as u32;
        if kind != layout.map_type {
            return Err(DataplaneError::MapKind {
                map: layout.name,
                found: kind,
                want: layout.map_type,
            });
        }
        let (key, value) = (layout.key_size, layout.value_size);
        if (info.key_size(), info.value_size()) != (key, value) {
            return Err(DataplaneError::MapLayout {
                map: layout.name,
                found: (info.key_size(), info.value_size()),
                want: (key, value),
            });
        }
    }
    Ok(())
}

/// The errno behind `error`: the first `std::io::Error` in its source chain.
pub(super) fn os_error(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        current = error.source();
    }
    None
}

/// The map pinned at `path` on bpffs, opened for this process.
pub(super) fn pinned_map_data(path: &Path) -> Result<MapData, DataplaneError> {
    MapData::from_pin(path).map_err(|source| DataplaneError::Pinned {
        path: path.to_path_buf(),
        what: "pinning".into(),
        os_error: os_error(&source),
        source: Some(Box::new(source)),
    })
}

/// `data` as aya's typed map enum; `name` names the map in errors.
pub(super) fn map_of(data: MapData, name: &'static str) -> Result<Map, DataplaneError> {
    Map::from_map_data(data).map_err(|source| DataplaneError::MapOp {
        map: name,
        operation: "open",
        source: Box::new(source),
    })
}

/// The `MapData` of the map types this object defines.
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LpmTrie(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::RingBuf(data) => Some(data),
        _ => None,
    }
}

/// How full one map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapUsage {
    /// Map name.
    pub map: &'static str,
    /// Entries in use (for a banked map: in the active bank).
    pub entries: usize,
    /// Entries it can hold (for a banked map: per bank).
    pub capacity: u32,
}

/// Verdict counters summed over CPUs, with their names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `(name, count)` for every named counter, in `STATS` order.
    pub counters: Vec<(&'static str, u64)>,
}

impl Stats {
    /// The count of one counter by name (0 when unknown).
    pub fn get(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    }

    /// Every counter that grew since `before`, with how much, in `STATS` order.
    pub fn growth_since(&self, before: &Stats) -> Vec<(&'static str, u64)> {
        self.counters
            .iter()
            .map(|&(name, count)| (name, count.saturating_sub(before.get(name))))
            .filter(|&(_, grown)| grown > 0)
            .collect()
    }

    /// `growth_since` of the verdict counters only (below `STAT_VERDICTS`: each
    /// packet bumps exactly one), leaving out side counters such as lost events.
    pub fn verdict_growth_since(&self, before: &Stats) -> Vec<(&'static str, u64)> {
        let verdicts = &STAT_NAMES[..STAT_VERDICTS as usize];
        self.growth_since(before)
            .into_iter()
            .filter(|(name, _)| verdicts.contains(name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errno_of_a_failed_pin_syscall_is_kept() {
        let denied = aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "BPF_OBJ_GET",
            io_error: std::io::Error::from_raw_os_error(nix::libc::EACCES),
        });
        assert_eq!(os_error(&denied), Some(nix::libc::EACCES));
        let not_a_syscall = aya::maps::MapError::InvalidName { name: "x".into() };
        assert_eq!(os_error(&not_a_syscall), None);
    }
}
