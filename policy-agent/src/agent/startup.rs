//! Start-up checks: kernel features podwall cannot enforce without, each failing
//! with what is missing and why podwall needs it.
//!
//! Hidden test hooks (environment): `PODWALL_BTF_PATH` replaces the BTF path,
//! `PODWALL_KERNEL_VERSION` (e.g. `6.1.0`) the running kernel's version.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use aya::util::KernelVersion;

/// Where the kernel exposes its own BTF.
pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
/// The first kernel with TCX (BPF links for TC ingress/egress).
pub const TCX_MIN_VERSION: KernelVersion = KernelVersion::new(6, 6, 0);
/// Test hook: the BTF file to check instead of `BTF_PATH`.
const BTF_PATH_ENV: &str = "PODWALL_BTF_PATH";
/// Test hook: the kernel version to check instead of the running kernel's.
const KERNEL_VERSION_ENV: &str = "PODWALL_KERNEL_VERSION";

/// A kernel feature podwall needs is missing.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// No kernel BTF.
    #[error("kernel has no BTF ({} missing): podwall needs CONFIG_DEBUG_INFO_BTF (its programs and maps are loaded with BTF type information)", path.display())]
    NoBtf {
        /// The path checked.
        path: PathBuf,
    },
    /// The BTF file exists but cannot be read.
    #[error("kernel BTF at {} cannot be read (podwall needs it to load its programs)", path.display())]
    UnreadableBtf {
        /// The path checked.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel predates TCX.
    #[error("kernel {found} has no TCX (Linux 6.6 or later): podwall attaches its classifiers as TCX links, which stay pinned and enforcing across agent restarts and coexist with other TC programs")]
    NoTcx {
        /// The kernel's version.
        found: String,
    },
    /// The kernel version could not be read.
    #[error("cannot read the kernel version to check for TCX (Linux 6.6 or later)")]
    KernelVersion {
        /// What aya said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The test hook's stand-in version does not parse.
    #[error("cannot read the kernel version to check for TCX (Linux 6.6 or later): {KERNEL_VERSION_ENV}={text:?} is not a version like 6.6.0")]
    KernelVersionOverride {
        /// What `PODWALL_KERNEL_VERSION` holds.
        text: String,
    },
}

impl StartupError {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StartupError::NoBtf { .. } | StartupError::UnreadableBtf { .. } => "no_btf",
            StartupError::NoTcx { .. }
            | StartupError::KernelVersion { .. }
            | StartupError::KernelVersionOverride { .. } => "no_tcx",
        }
    }
}

/// Checks the running kernel (or the test hooks' stand-ins): BTF, then TCX.
pub fn check_kernel() -> Result<(), StartupError> {
    check_with(|name| std::env::var(name).ok())
}

/// `check_kernel` with the environment read through `env`.
pub fn check_with(env: impl Fn(&str) -> Option<String>) -> Result<(), StartupError> {
    let btf = env(BTF_PATH_ENV).map_or_else(|| PathBuf::from(BTF_PATH), PathBuf::from);
    check_btf(&btf)?;
    let version = match env(KERNEL_VERSION_ENV) {
        Some(text) => parse_version(&text)
            .ok_or_else(|| StartupError::KernelVersionOverride { text: text.clone() })?,
        None => KernelVersion::current().map_err(|error| StartupError::KernelVersion {
            source: Box::new(error),
        })?,
    };
    check_tcx(version)
}

/// The kernel's BTF is there and readable.
pub fn check_btf(path: &Path) -> Result<(), StartupError> {
    match std::fs::File::open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == ErrorKind::NotFound => Err(StartupError::NoBtf {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(StartupError::UnreadableBtf {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `version` has TCX.
pub fn check_tcx(version: KernelVersion) -> Result<(), StartupError> {
    if version >= TCX_MIN_VERSION {
        Ok(())
    } else {
        Err(StartupError::NoTcx {
            found: version.to_string(),
        })
    }
}

/// `major.minor[.patch]`, ignoring a suffix after the numbers (`6.6.0-rc1`).
fn parse_version(text: &str) -> Option<KernelVersion> {
    let mut parts = text.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some(KernelVersion::new(major, minor, patch))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn check(vars: &[(&str, &str)]) -> Result<(), StartupError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        check_with(|name| vars.get(name).cloned())
    }

    /// A file that exists, standing in for the kernel's BTF.
    fn some_file() -> String {
        std::env::current_exe()
            .unwrap_or_else(|e| panic!("{e}"))
            .display()
            .to_string()
    }

    #[test]
    fn a_kernel_without_btf_is_refused_naming_the_path_and_the_config_option() {
        let error = check(&[
            ("PODWALL_BTF_PATH", "/nonexistent/vmlinux"),
            ("PODWALL_KERNEL_VERSION", "6.8.0"),
        ])
        .err()
        .unwrap_or_else(|| panic!("a missing BTF file must fail"));
        assert_eq!(
            error.to_string(),
            "kernel has no BTF (/nonexistent/vmlinux missing): podwall needs \
             CONFIG_DEBUG_INFO_BTF (its programs and maps are loaded with BTF type information)"
        );
        assert_eq!(error.kind(), "no_btf");
    }

    #[test]
    fn a_kernel_older_than_6_6_is_refused_naming_tcx() {
        let file = some_file();
        let error = check(&[
            ("PODWALL_BTF_PATH", &file),
            ("PODWALL_KERNEL_VERSION", "6.1.55"),
        ])
        .err()
        .unwrap_or_else(|| panic!("6.1 must fail"));
        let message = error.to_string();
        assert!(
            message.starts_with("kernel 6.1.55 has no TCX (Linux 6.6 or later)"),
            "{message}"
        );
        assert_eq!(error.kind(), "no_tcx");
    }

    #[test]
    fn a_kernel_with_btf_and_tcx_passes() {
        let file = some_file();
        for version in ["6.6.0", "6.6", "6.12.3-arch1", "7.0.0"] {
            let result = check(&[
                ("PODWALL_BTF_PATH", &file),
                ("PODWALL_KERNEL_VERSION", version),
            ]);
            assert!(result.is_ok(), "{version}: {result:?}");
        }
    }

    #[test]
    fn an_unparsable_version_override_is_an_error_not_a_pass() {
        let file = some_file();
        let error = check(&[
            ("PODWALL_BTF_PATH", &file),
            ("PODWALL_KERNEL_VERSION", "six"),
        ])
        .err()
        .unwrap_or_else(|| panic!("must fail"));
        assert!(
            error.to_string().contains("PODWALL_KERNEL_VERSION=\"six\""),
            "{error}"
        );
    }

    #[test]
    fn the_running_kernel_is_checked_without_overrides() {
        // This machine runs podwall's tests, so it has both; this proves the real
        // paths and version reading work.
        assert!(check(&[]).is_ok(), "{:?}", check(&[]));
    }
}
