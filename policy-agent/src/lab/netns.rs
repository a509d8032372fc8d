//! Named network namespaces (as `ip netns` makes them) for the lab, and running
//! code or `ip` commands inside one. Nothing here touches the root namespace's
//! interfaces, routes or firewall.

use std::{
    fs::File,
    io::Write,
    process::{Command, Stdio},
};

use nix::sched::{setns, CloneFlags};

use super::LabError;
use crate::telemetry::flows::publish::process_alive;

/// Prefix of every namespace the lab creates: `pwlab-<pid>x<seq>-...`.
pub const LAB_PREFIX: &str = "pwlab-";
const NETNS_DIR: &str = "/run/netns";

/// Runs `f` on a thread that has entered network namespace `name`; sockets it
/// creates and interfaces it looks up belong to that namespace.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
    let path = format!("{NETNS_DIR}/{name}");
    let file = File::open(&path).map_err(|source| LabError::Netns {
        name: name.to_string(),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Netns {
                    name: name.to_string(),
                    source: std::io::Error::from(source),
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(LabError::Thread {
                    what: format!("work inside network namespace {name}"),
                })
            })
    })
}

/// Writes a sysctl of namespace `name` (a path under /proc/sys).
pub fn sysctl(name: &str, key: &str, value: &str) -> Result<(), LabError> {
    let path = format!("/proc/sys/{key}");
    in_netns(name, || std::fs::write(&path, value))?.map_err(|source| LabError::Sysctl {
        netns: name.to_string(),
        key: key.to_string(),
        source,
    })
}

/// Runs `ip [-n netns] -batch -` with `lines` on stdin, failing on the first error.
pub fn ip_batch(netns: Option<&str>, lines: &[String]) -> Result<(), LabError> {
    batch("ip", netns, lines)
}

/// Runs `bridge [-n netns] -batch -` (forwarding database entries of VXLAN
/// devices) with `lines`, failing on the first error.
pub fn bridge_batch(netns: Option<&str>, lines: &[String]) -> Result<(), LabError> {
    batch("bridge", netns, lines)
}

/// Runs iproute2's `tool [-n netns] -batch -` with `lines` on stdin.
fn batch(tool: &str, netns: Option<&str>, lines: &[String]) -> Result<(), LabError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut command = Command::new(tool);
    if let Some(ns) = netns {
        command.args(["-n", ns]);
    }
    command
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let describe = || {
        format!(
            "{tool} {}-batch: {}",
            netns.map_or(String::new(), |n| format!("-n {n} ")),
            lines.join("; ")
        )
    };
    let io_error = |what: String| {
        move |source| LabError::CommandIo {
            command: describe(),
            what,
            source,
        }
    };
    let mut child = command
        .spawn()
        .map_err(io_error(format!("run `{tool}` (install iproute2)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(lines.join("\n").as_bytes())
            .map_err(io_error("write its input".to_string()))?;
    }
    let output = child
        .wait_with_output()
        .map_err(io_error("wait for it".to_string()))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: describe(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Names of the lab namespaces that exist now.
pub fn lab_namespaces() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(LAB_PREFIX))
        .collect();
    names.sort();
    names
}

/// The pid of the process that created a lab namespace, from its name.
pub fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(LAB_PREFIX)?
        .split('x')
        .next()?
        .parse()
        .ok()
}

/// Deletes the named namespaces (their interfaces go with them); missing ones are
/// not an error. Returns the ones deleted.
pub fn delete(names: &[String]) -> Result<Vec<String>, LabError> {
    let existing: Vec<String> = lab_namespaces()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    let lines: Vec<String> = existing
        .iter()
        .map(|n| format!("netns delete {n}"))
        .collect();
    ip_batch(None, &lines)?;
    Ok(existing)
}

/// Deletes every lab namespace whose creating process is gone (or all of them).
pub fn sweep(all: bool) -> Result<Vec<String>, LabError> {
    let stale: Vec<String> = lab_namespaces()
        .into_iter()
        .filter(|name| all || owner_pid(name).is_none_or(|pid| !process_alive(pid)))
        .collect();
    delete(&stale)
}

/// Deletes every lab namespace this process created (used on Ctrl-C).
pub fn delete_own() -> Result<Vec<String>, LabError> {
    let own = format!("{LAB_PREFIX}{}x", std::process::id());
    let names: Vec<String> = lab_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&own))
        .collect();
    delete(&names)
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn owner_pid_is_read_from_the_namespace_name() {
        assert_eq!(owner_pid("pwlab-4242x3-node"), Some(4242));
        assert_eq!(owner_pid("pwlab-4242x3-p7"), Some(4242));
        assert_eq!(owner_pid("pwlab-junk"), None);
        assert_eq!(owner_pid("other-1x1"), None);
    }
}
