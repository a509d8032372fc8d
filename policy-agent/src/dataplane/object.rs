//! Where the agent finds the `policy-ebpf` object without the user naming it.
//!
//! In order: `$PODWALL_BPF_OBJECT`; `policy-ebpf.o` beside the running executable
//! (how a packaged agent ships it); the workspace build output of
//! `cargo xtask build-ebpf`; `/usr/lib/podwall/policy-ebpf.o`.

use std::path::{Path, PathBuf};

use super::DataplaneError;

/// Environment variable that overrides the object's location.
pub const OBJECT_ENV: &str = "PODWALL_BPF_OBJECT";

/// Where `cargo xtask build-ebpf` writes the object in this source tree.
pub fn workspace_object() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ebpf/bpfel-unknown-none/release/policy-ebpf")
}

/// Every place looked at, in order.
pub fn candidates() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(path) = std::env::var_os(OBJECT_ENV) {
        paths.push(PathBuf::from(path));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        paths.push(dir.join("policy-ebpf.o"));
    }
    paths.push(workspace_object());
    paths.push(PathBuf::from("/usr/lib/podwall/policy-ebpf.o"));
    paths
}

/// The first existing candidate.
pub fn find() -> Result<PathBuf, DataplaneError> {
    let searched = candidates();
    searched
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or(DataplaneError::ObjectNotFound { searched })
}
