//! Where the parts of a pinned datapath live (`PinLayout`), and removing them.

use crate::causes::causes;
use std::{
    fs,
    path::{Path, PathBuf},
};

use policy_common::ABI_VERSION;

use super::{
    programs::LinkRole,
    slots::{RuleSlots, SlotState},
    DataplaneError, InterfaceIndex,
};

/// The maps a pinned datapath keeps across restarts: every shared map
/// (`policy_common::maps::SHARED`); kernel-only scratch maps are made per load.
pub(super) fn pinned_maps() -> impl Iterator<Item = &'static str> {
    policy_common::maps::SHARED.iter().map(|layout| layout.name)
}

/// Where a datapath's run files live (its state file here, its published flow
/// names in `telemetry::flows::publish`) unless `RUN_ROOT_ENV` says otherwise.
pub const RUN_ROOT: &str = "/run/podwall";
/// Environment variable overriding `RUN_ROOT` (for writers and readers alike).
pub const RUN_ROOT_ENV: &str = "PODWALL_RUN_DIR";
/// The state file's name.
const STATE_FILE: &str = "state.json";
/// The paths of one pinned datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PinLayout {
    dir: PathBuf,
    /// `state.json` of this instance.
    pub(super) state_file: PathBuf,
}

/// A failed file operation `what` on `path` under the pins or the run directory.
pub(super) fn io_error(path: &Path, what: &str, source: std::io::Error) -> DataplaneError {
    DataplaneError::Pinned {
        path: path.to_path_buf(),
        what: what.to_string(),
        os_error: source.raw_os_error(),
        source: Some(Box::new(source)),
    }
}

/// Removes `path` (a file or pin); true if it was there.
pub(super) fn remove_file(path: &Path) -> Result<bool, DataplaneError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, "removing", e)),
    }
}

/// Detaches the link pinned at `path` (at once, whoever holds it open: a removed
/// pin alone lets go of the link only later, in a kernel work item) and removes
/// the pin; nothing to do if there is none. A failed detach is logged: the
/// removed pin still releases the link once nothing holds it.
fn remove_link(path: &Path) -> Result<bool, DataplaneError> {
    match crate::dataplane::sys::detach_pinned_link(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => {
            tracing::warn!(pin = %path.display(), error = %causes(&error), "could not detach the pinned link; removing its pin");
        }
    }
    remove_file(path)
}

/// Every entry of directory `dir` (none if it is missing).
pub(super) fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataplaneError> {
    match fs::read_dir(dir) {
        Ok(read) => read
            .map(|entry| {
                entry
                    .map(|e| e.path())
                    .map_err(|e| io_error(dir, "listing", e))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error(dir, "listing", e)),
    }
}

/// The name of `node_sockets`' link pin under `links/`.
pub(super) const SOCKETS_LINK: &str = "node-sockets";

/// The names of `role`'s two link pins after `<ifindex>-`, in
/// `LinkRole::programs` order: a pod's `ingress` and `egress` (its directions), an
/// exit's `exit` and `entry`.
fn link_suffixes(role: LinkRole) -> [&'static str; 2] {
    match role {
        LinkRole::Pod => ["ingress", "egress"],
        LinkRole::Exit => ["exit", "entry"],
        LinkRole::IpExit => ["ip-exit", "ip-entry"],
    }
}

/// The datapath version a directory named `v<N>` holds (`v7` -> 7).
pub fn version_of(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `(ifindex, role, hook)` of a link pin named `<ifindex>-<suffix>`
/// (`link_suffixes`).
pub(super) fn parse_link_name(name: &str) -> Option<(InterfaceIndex, LinkRole, usize)> {
    let (index, suffix) = name.split_once('-')?;
    let (role, hook) = LinkRole::ALL.into_iter().find_map(|role| {
        let hook = link_suffixes(role).iter().position(|s| *s == suffix)?;
        Some((role, hook))
    })?;
    Some((index.parse().ok()?, role, hook))
}

impl PinLayout {
    /// The layout of pin directory `dir`; its state file is named after the
    /// directory's last component (the instance), under the datapath version its
    /// parent names (`.../v<N>/<instance>`; this build's version when the parent
    /// names none), so another version's pins find that version's state file.
    pub(super) fn new(dir: &Path) -> Self {
        let run_root = std::env::var_os(RUN_ROOT_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(RUN_ROOT), PathBuf::from);
        let instance = dir.file_name().map_or_else(
            || std::ffi::OsString::from("default"),
            std::ffi::OsStr::to_os_string,
        );
        let version = dir
            .parent()
            .and_then(Path::file_name)
            .and_then(|name| version_of(&name.to_string_lossy()))
            .unwrap_or(ABI_VERSION);
        Self {
            dir: dir.to_path_buf(),
            state_file: run_root
                .join(format!("v{version}"))
                .join(instance)
                .join(STATE_FILE),
        }
    }

    /// The pin of map `name`.
    pub(super) fn map_pin(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    pub(super) fn program_pin(&self, name: &str) -> PathBuf {
        self.dir.join("programs").join(name)
    }

    pub(super) fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }

    /// The pin of the link of `role`'s program `hook` (0 or 1, in
    /// `LinkRole::programs` order) on `ifindex`.
    pub(super) fn link_pin(&self, ifindex: InterfaceIndex, role: LinkRole, hook: usize) -> PathBuf {
        let suffix = link_suffixes(role)[hook.min(1)];
        self.links_dir().join(format!("{ifindex}-{suffix}"))
    }

    /// The pin of `node_sockets`' link on the node's network namespace
    /// (`sockets.rs`).
    pub(super) fn sockets_pin(&self) -> PathBuf {
        self.links_dir().join(SOCKETS_LINK)
    }

    /// Detaches the `node_sockets` link and removes its pin; true if it was there.
    pub(super) fn remove_sockets_link(&self) -> Result<bool, DataplaneError> {
        remove_link(&self.sockets_pin())
    }

    /// The maps of `pinned_maps` without a pin (none: the set is complete).
    pub(super) fn missing_maps(&self) -> Vec<&'static str> {
        pinned_maps()
            .filter(|name| !self.map_pin(name).exists())
            .collect()
    }

    /// Whether any link is pinned under `links/` (something may be enforcing).
    pub(super) fn has_links(&self) -> Result<bool, DataplaneError> {
        Ok(!entries(&self.links_dir())?.is_empty())
    }

    /// The instance: the pin directory's last component.
    pub(super) fn instance(&self) -> String {
        self.dir
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
    }

    pub(super) fn create_dirs(&self) -> Result<(), DataplaneError> {
        for dir in ["maps", "programs", "links"].map(|d| self.dir.join(d)) {
            fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "creating", e))?;
        }
        Ok(())
    }

    /// Detaches the links pinned for `role` on `ifindex` and removes their pins.
    pub(super) fn remove_links(
        &self,
        ifindex: InterfaceIndex,
        role: LinkRole,
    ) -> Result<(), DataplaneError> {
        for hook in [0, 1] {
            remove_link(&self.link_pin(ifindex, role, hook))?;
        }
        Ok(())
    }

    /// Removes links (detaching them at once), programs, maps, the directories and
    /// the state file; true if anything was there.
    pub(super) fn remove_all(&self) -> Result<bool, DataplaneError> {
        let mut removed = false;
        for path in entries(&self.links_dir())? {
            removed |= remove_link(&path)?;
        }
        // Then everything else under the directory, whoever pinned it there (the
        // flow log pins `EVENTS` and `STATS` beside ours).
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&self.dir, "removing", e)),
        }
        removed |= remove_file(&self.state_file)?;
        if let Some(parent) = self.state_file.parent() {
            // Only if empty: other files of the instance (names.json) stay.
            let _ = fs::remove_dir(parent);
        }
        Ok(removed)
    }

    /// Writes the rule slots (temporary file, then rename: a reader sees the old
    /// or the new file).
    pub(super) fn save_slots(&self, slots: &RuleSlots) -> Result<(), DataplaneError> {
        let path = &self.state_file;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io_error(parent, "creating", e))?;
        }
        let json = serde_json::to_vec(&slots.to_state()).map_err(|e| DataplaneError::Pinned {
            path: path.clone(),
            what: "serializing rule slots".into(),
            source: Some(Box::new(e)),
            os_error: None,
        })?;
        let temporary = path.with_extension("json.tmp");
        fs::write(&temporary, json).map_err(|e| io_error(&temporary, "writing", e))?;
        fs::rename(&temporary, path).map_err(|e| io_error(path, "renaming into place", e))
    }

    /// The rule slots saved last, if there is a readable file.
    pub(super) fn load_slots(&self) -> Option<SlotState> {
        let bytes = fs::read(&self.state_file).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_name_the_interface_and_the_pods_direction() {
        assert_eq!(parse_link_name("12-ingress"), Some((12, LinkRole::Pod, 0)));
        assert_eq!(parse_link_name("7-egress"), Some((7, LinkRole::Pod, 1)));
        assert_eq!(parse_link_name("3-exit"), Some((3, LinkRole::Exit, 0)));
        assert_eq!(parse_link_name("3-entry"), Some((3, LinkRole::Exit, 1)));
        assert_eq!(parse_link_name("3-ip-exit"), Some((3, LinkRole::IpExit, 0)));
        for bad in ["12", "x-ingress", "12-sideways", "-egress", "4-"] {
            assert_eq!(parse_link_name(bad), None, "{bad}");
        }
        let layout = PinLayout::new(Path::new("/sys/fs/bpf/podwall/v4/agent"));
        assert_eq!(
            layout.link_pin(12, LinkRole::Pod, 1),
            Path::new("/sys/fs/bpf/podwall/v4/agent/links/12-egress")
        );
        for role in LinkRole::ALL {
            for hook in [0, 1] {
                let pin = layout.link_pin(5, role, hook);
                let name = pin.file_name().and_then(|n| n.to_str());
                assert_eq!(name.and_then(parse_link_name), Some((5, role, hook)));
            }
        }
        assert_eq!(
            layout.map_pin("ACTIVE"),
            Path::new("/sys/fs/bpf/podwall/v4/agent/maps/ACTIVE")
        );
    }

    #[test]
    fn the_state_file_lives_where_flows_names_do_under_the_pins_version() {
        let current = format!("/sys/fs/bpf/podwall/v{ABI_VERSION}/agent");
        let layout = PinLayout::new(Path::new(&current));
        assert!(layout
            .state_file
            .ends_with(format!("v{ABI_VERSION}/agent/state.json")));
        // Another version's pins: that version's state file.
        let layout = PinLayout::new(Path::new("/sys/fs/bpf/podwall/v4/agent"));
        assert!(layout.state_file.ends_with("v4/agent/state.json"));
        // A directory outside the versioned tree: this build's version.
        let layout = PinLayout::new(Path::new("/sys/fs/bpf/scratch/agent"));
        assert!(layout
            .state_file
            .ends_with(format!("v{ABI_VERSION}/agent/state.json")));
    }

    #[test]
    fn version_directories_are_v_and_digits() {
        assert_eq!(version_of("v7"), Some(7));
        assert_eq!(version_of("v12"), Some(12));
        for other in ["v", "7", "vx", "v7a", "v-1", "agent", "V7"] {
            assert_eq!(version_of(other), None, "{other}");
        }
    }
}
