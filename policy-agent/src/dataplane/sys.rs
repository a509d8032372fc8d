//! The raw `bpf(2)` calls aya 0.14 does not offer, and the only `unsafe` of the
//! dataplane's own code besides reading event bytes:
//! - `BPF_MAP_CREATE` of an `ARRAY_OF_MAPS` with an inner map (aya's constructor
//!   taking an inner map is crate-private), for `quiesce.rs`;
//! - `BPF_OBJ_GET` + `BPF_LINK_DETACH` of a pinned link: unlinking a link's pin
//!   drops the pin's reference only in a kernel work item, and a link held open by
//!   another process stays attached; an explicit detach ends enforcement on that
//!   interface before the call returns, whoever holds the link.
//!
//! - `BPF_LINK_UPDATE` of a pinned link aya cannot update (the `sk_lookup` link
//!   of `sockets.rs`), so a restarted agent moves it to its program atomically;
//! - `BPF_PROG_QUERY` of a TCX hook with only the ids: aya's `query_tcx` also
//!   opens each program by id, which needs `CAP_SYS_ADMIN` the agent does not
//!   have;
//! - (benchmarks only) `BPF_LINK_CREATE` of a TCX link from any thread, which
//!   aya's `&mut` program cannot do from two threads at once.
//!
//! Each call passes a `#[repr(C)]` prefix of `union bpf_attr` and its size; the
//! kernel zero-fills the fields past that size.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// `enum bpf_cmd` values (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: nix::libc::c_long = 0;
const BPF_OBJ_GET: nix::libc::c_long = 7;
const BPF_LINK_UPDATE: nix::libc::c_long = 29;
const BPF_LINK_DETACH: nix::libc::c_long = 34;
const BPF_PROG_QUERY: nix::libc::c_long = 16;
#[cfg(feature = "testing")]
const BPF_LINK_CREATE: nix::libc::c_long = 28;
/// `enum bpf_attach_type` values of the TCX hooks.
pub(super) const BPF_TCX_INGRESS: u32 = 46;
pub(super) const BPF_TCX_EGRESS: u32 = 47;
/// Program ids one query asks for (the kernel says how many there are).
const QUERY_IDS: usize = 64;
/// `BPF_MAP_TYPE_ARRAY_OF_MAPS` (`enum bpf_map_type`).
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// `bpf_attr` for `BPF_MAP_CREATE`, up to `map_name`.
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

/// `bpf_attr` for `BPF_OBJ_GET`.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `bpf_attr` for `BPF_LINK_UPDATE`.
#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// `bpf_attr` for `BPF_LINK_CREATE` of a TCX link, up to `flags` (the TCX
/// fields after it are zero: appended last, any revision).
#[cfg(feature = "testing")]
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf_attr` for `BPF_LINK_DETACH`.
#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// `bpf_attr` for `BPF_PROG_QUERY`, whole: the kernel writes `prog_cnt` and, for
/// multi-program hooks, `revision` back.
#[repr(C)]
struct ProgQueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// `bpf(cmd, attr, size_of::<A>())`: a new fd (or 0) on success.
fn bpf<A>(cmd: nix::libc::c_long, attr: &A) -> io::Result<i32> {
    // SAFETY: `attr` is a live, initialized `bpf_attr` prefix of the size passed;
    // the kernel reads it (and any path it points to, which the caller keeps
    // alive) and returns a non-negative result or -1 with errno.
    let result =
        unsafe { nix::libc::syscall(nix::libc::SYS_bpf, cmd, attr as *const A, size_of::<A>()) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(result).map_err(|_| io::Error::other("bpf(2) result out of range"))
}

/// The ids of the programs at TCX hook `attach_type` (`BPF_TCX_*`) of interface
/// `ifindex`, in the order they run.
pub(super) fn tcx_program_ids(ifindex: u32, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; QUERY_IDS];
    let mut attr = ProgQueryAttr {
        target_ifindex: ifindex,
        attach_type,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: QUERY_IDS as u32,
        pad: 0,
        prog_attach_flags: 0,
        link_ids: 0,
        link_attach_flags: 0,
        revision: 0,
    };
    // SAFETY: `attr` is a whole, initialized `bpf_attr` query; `prog_ids` points at
    // `ids`, which holds `prog_cnt` entries and outlives the call; the kernel
    // writes at most that many ids, then `prog_cnt` and `revision` into `attr`.
    let result = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_PROG_QUERY,
            std::ptr::from_mut(&mut attr),
            size_of::<ProgQueryAttr>(),
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    ids.truncate((attr.prog_cnt as usize).min(QUERY_IDS));
    Ok(ids)
}

/// A TCX link of `program` at hook `attach_type` (`BPF_TCX_*`) of interface
/// `ifindex`, last in its chain; dropping the fd detaches it.
#[cfg(feature = "testing")]
pub(super) fn tcx_link_create(
    program: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let attr = LinkCreateAttr {
        prog_fd: raw(&program)?,
        target_ifindex: ifindex,
        attach_type,
        flags: 0,
    };
    bpf(BPF_LINK_CREATE, &attr).map(owned)
}

/// Takes ownership of an fd the kernel just returned.
fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf(2) for this process, and nothing else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A one-entry `ARRAY_OF_MAPS` named `name` (at most 15 bytes) whose inner maps
/// look like the map `inner_fd`.
pub(super) fn create_array_of_maps(name: &str, inner_fd: i32) -> io::Result<OwnedFd> {
    let inner_map_fd = u32::try_from(inner_fd).map_err(|_| io::Error::other("negative fd"))?;
    let mut map_name = [0u8; 16];
    let bytes = name.as_bytes();
    let len = bytes.len().min(15);
    map_name[..len].copy_from_slice(&bytes[..len]);
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
    bpf(BPF_MAP_CREATE, &attr).map(owned)
}

/// Detaches the link pinned at `path` from its hook now (the pin stays; the
/// caller removes it).
pub(super) fn detach_pinned_link(path: &Path) -> io::Result<()> {
    let link = open_pinned(path)?;
    let link_fd = raw(&link)?;
    bpf(BPF_LINK_DETACH, &LinkDetachAttr { link_fd }).map(drop)
}

/// Moves the link pinned at `path` to program `program` in one
/// `BPF_LINK_UPDATE` (its hook never runs without a program), for links aya 0.14
/// cannot update itself (an `sk_lookup` link).
pub(super) fn update_pinned_link(path: &Path, program: BorrowedFd<'_>) -> io::Result<()> {
    let link = open_pinned(path)?;
    let attr = LinkUpdateAttr {
        link_fd: raw(&link)?,
        new_prog_fd: raw(&program)?,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &attr).map(drop)
}

/// The object pinned at `path`, opened (`BPF_OBJ_GET`).
fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    open_pinned_with(path, 0)
}

/// `BPF_F_RDONLY`: a map descriptor that can look up and never update.
const BPF_F_RDONLY: u32 = 1 << 3;

/// The map pinned at `path`, opened read only: nothing can write through it.
pub(super) fn open_pinned_map_read_only(path: &Path) -> io::Result<OwnedFd> {
    open_pinned_with(path, BPF_F_RDONLY)
}

fn open_pinned_with(path: &Path, file_flags: u32) -> io::Result<OwnedFd> {
    let pathname = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("a NUL byte in the pin path"))?;
    let get = ObjGetAttr {
        pathname: pathname.as_ptr() as u64,
        bpf_fd: 0,
        file_flags,
    };
    Ok(owned(bpf(BPF_OBJ_GET, &get)?))
}

/// A descriptor as `bpf_attr` holds it.
fn raw(fd: &impl AsRawFd) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("negative fd"))
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn the_attr_prefixes_have_the_kernels_offsets() {
        assert_eq!(offset_of!(MapCreateAttr, inner_map_fd), 20);
        assert_eq!(offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(size_of::<MapCreateAttr>(), 44);
        assert_eq!(offset_of!(ObjGetAttr, bpf_fd), 8);
        assert_eq!(size_of::<ObjGetAttr>(), 16);
        assert_eq!(offset_of!(LinkUpdateAttr, old_prog_fd), 12);
        assert_eq!(size_of::<LinkUpdateAttr>(), 16);
        assert_eq!(size_of::<LinkDetachAttr>(), 4);
        #[cfg(feature = "testing")]
        assert_eq!(offset_of!(LinkCreateAttr, flags), 12);
        assert_eq!(offset_of!(ProgQueryAttr, prog_ids), 16);
        assert_eq!(offset_of!(ProgQueryAttr, prog_cnt), 24);
        assert_eq!(offset_of!(ProgQueryAttr, revision), 56);
        assert_eq!(size_of::<ProgQueryAttr>(), 64);
    }
}
