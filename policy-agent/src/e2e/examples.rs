//! The expectations an example's file states: leading comment lines
//! `# expect: FROM -> TO PORT/PROTO allowed|dropped` (pods as `namespace/name`),
//! what must hold once the file is applied on top of the ones before it. The
//! CLI tests check them with `simulate`, the lab tests on real packets, the e2e
//! run on a cluster.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use crate::model::{ObjectRef, Protocol};

/// One `# expect:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// The probing pod.
    pub from: ObjectRef,
    /// The probed pod.
    pub to: ObjectRef,
    /// Destination port.
    pub port: u16,
    /// Protocol (`TCP` when the line gives none).
    pub protocol: Protocol,
    /// Whether the connection must succeed.
    pub allowed: bool,
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "dropped" };
        write!(
            f,
            "{} -> {} {}/{} {verdict}",
            self.from, self.to, self.port, self.protocol
        )
    }
}

/// An example: its name and its files in the order a tour applies them.
pub type Example = (String, Vec<PathBuf>);

/// The examples of `dir` (e.g. `deploy/examples`), by name: each folder's
/// `cluster.yaml`, then its `steps/*.yaml` in name order.
pub fn list(dir: &Path) -> Result<Vec<Example>, String> {
    let sorted = |dir: &Path| -> Result<Vec<PathBuf>, String> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        paths.sort();
        Ok(paths)
    };
    let mut examples = Vec::new();
    for folder in sorted(dir)?.into_iter().filter(|p| p.is_dir()) {
        let mut files = vec![folder.join("cluster.yaml")];
        let steps = folder.join("steps");
        if steps.is_dir() {
            files.extend(
                sorted(&steps)?
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml")),
            );
        }
        let name = folder
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        examples.push((name, files));
    }
    if examples.is_empty() {
        return Err(format!("{}: no example folders", dir.display()));
    }
    Ok(examples)
}

fn pod(text: &str) -> Option<ObjectRef> {
    let (namespace, name) = text.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| ObjectRef::new(namespace, name))
}

/// The expectations in the leading comments of a manifest's `text`; an
/// `expect:` line of another shape is an error quoting it.
pub fn expectations(text: &str) -> Result<Vec<Expectation>, String> {
    text.lines()
        .map_while(|line| line.strip_prefix('#'))
        .filter_map(|line| line.trim().strip_prefix("expect:"))
        .map(|line| {
            let shape = || {
                format!(
                    "not `FROM -> TO PORT/PROTO allowed|dropped`: {}",
                    line.trim()
                )
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let [from, "->", to, port, verdict] = words[..] else {
                return Err(shape());
            };
            let (port, protocol) = port.split_once('/').unwrap_or((port, "TCP"));
            let protocol = match protocol {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                _ => return Err(shape()),
            };
            Ok(Expectation {
                from: pod(from).ok_or_else(shape)?,
                to: pod(to).ok_or_else(shape)?,
                port: port.parse().map_err(|_| shape())?,
                protocol,
                allowed: match verdict {
                    "allowed" => true,
                    "dropped" => false,
                    _ => return Err(shape()),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_expect_lines_are_read_and_others_ignored() {
        let text = "# The cluster.\n# expect: web/a -> web/b 80/TCP allowed\n\
                    # expect: web/a -> db/c 53/UDP dropped\n# expect: web/a -> web/b 81 dropped\n\
                    apiVersion: v1\n# expect: web/z -> web/z 1/TCP allowed\n";
        let found = expectations(text).unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "web/a -> web/b 80/TCP allowed",
                "web/a -> db/c 53/UDP dropped",
                "web/a -> web/b 81/TCP dropped"
            ]
        );
    }

    #[test]
    fn a_malformed_expect_line_is_an_error_quoting_it() {
        for bad in [
            "# expect: web/a -> web/b 80/TCP maybe",
            "# expect: a -> web/b 80/TCP allowed",
            "# expect: web/a web/b 80/TCP allowed",
            "# expect: web/a -> web/b http/TCP allowed",
        ] {
            let error = expectations(bad).err().unwrap_or_default();
            assert!(
                error.contains(bad.trim_start_matches("# expect:").trim()),
                "{error}"
            );
        }
    }
}
