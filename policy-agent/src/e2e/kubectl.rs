//! `kubectl` against the e2e cluster: apply and delete objects, wait for pods,
//! read addresses, exec probes. The one part of `e2e` that runs anything.

use std::{
    collections::BTreeMap,
    io::Write,
    net::IpAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};

use super::probe::{self, Seen};
use crate::model::ObjectRef;

/// Why an e2e run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// kubectl could not be started.
    #[error("cannot run kubectl")]
    Spawn(#[source] std::io::Error),
    /// kubectl failed.
    #[error("kubectl {args}: {message}")]
    Failed {
        /// Its arguments.
        args: String,
        /// What it said on stderr (or its status).
        message: String,
    },
    /// kubectl printed something that is not the JSON asked for.
    #[error("kubectl {args}: its output is not the JSON asked for")]
    Json {
        /// Its arguments.
        args: String,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The case directory could not be read.
    #[error(transparent)]
    Cases(#[from] crate::lab::conformance::ConformanceError),
    /// A case or example file could not be used.
    #[error("{0}")]
    Input(String),
}

/// kubectl with the run's `--kubeconfig` and `--context`.
#[derive(Clone, Debug)]
pub struct Kubectl {
    global: Vec<String>,
}

impl Kubectl {
    /// kubectl for `kubeconfig` (else kubectl's default) at `context` (else its
    /// current one).
    pub fn new(kubeconfig: Option<&Path>, context: Option<&str>) -> Self {
        let mut global = Vec::new();
        if let Some(path) = kubeconfig {
            global.push(format!("--kubeconfig={}", path.display()));
        }
        if let Some(context) = context {
            global.push(format!("--context={context}"));
        }
        Self { global }
    }

    /// Runs `kubectl args` with `stdin`; its stdout, or the failure.
    fn run(&self, args: &[String], stdin: Option<&str>) -> Result<String, E2eError> {
        let mut command = Command::new("kubectl");
        command
            .args(&self.global)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(E2eError::Spawn)?;
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input.write_all(text.as_bytes()).map_err(E2eError::Spawn)?;
        }
        let out = child.wait_with_output().map_err(E2eError::Spawn)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(E2eError::Failed {
            args: args.join(" "),
            message: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        })
    }

    /// `kubectl apply` of `objects` (one List).
    pub fn apply(&self, objects: &[Value]) -> Result<(), E2eError> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.run(&strings(&["apply", "-f", "-"]), Some(&list.to_string()))
            .map(drop)
    }

    /// Deletes `objects` (one List), those already gone included, and waits
    /// until they are gone.
    pub fn delete(&self, objects: &[Value]) -> Result<(), E2eError> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let args = strings(&["delete", "--ignore-not-found", "--wait=true", "-f", "-"]);
        self.run(&args, Some(&list.to_string())).map(drop)
    }

    /// Whether namespace `name` exists.
    pub fn namespace_exists(&self, name: &str) -> Result<bool, E2eError> {
        let args = strings(&["get", "namespace", name, "--ignore-not-found", "-o", "name"]);
        Ok(!self.run(&args, None)?.trim().is_empty())
    }

    /// The context kubectl uses.
    pub fn current_context(&self) -> Result<String, E2eError> {
        Ok(self
            .run(&strings(&["config", "current-context"]), None)?
            .trim()
            .to_string())
    }

    /// Deletes every NetworkPolicy in `namespace`.
    pub fn delete_policies(&self, namespace: &str) -> Result<(), E2eError> {
        self.run(
            &strings(&[
                "delete",
                "networkpolicies",
                "--all",
                "--namespace",
                namespace,
            ]),
            None,
        )
        .map(drop)
    }

    /// Deletes NetworkPolicy `key`.
    pub fn delete_policy(&self, key: &ObjectRef) -> Result<(), E2eError> {
        let args = [
            "delete",
            "networkpolicy",
            "--ignore-not-found",
            "--namespace",
            &key.namespace,
            &key.name,
        ];
        self.run(&strings(&args), None).map(drop)
    }

    /// Waits up to `timeout` until every pod of `namespace` is Ready.
    pub fn wait_ready(&self, namespace: &str, timeout: Duration) -> Result<(), E2eError> {
        let timeout = format!("--timeout={}s", timeout.as_secs().max(1));
        let args = [
            "wait",
            "--for=condition=Ready",
            "pods",
            "--all",
            "--namespace",
            namespace,
            &timeout,
        ];
        self.run(&strings(&args), None).map(drop)
    }

    /// The first IPv4 address (else the first address) of every pod (`pods`) or
    /// the ClusterIP of every Service (`services`) in `namespaces`.
    pub fn addresses(
        &self,
        resource: &str,
        namespaces: &[&str],
    ) -> Result<BTreeMap<ObjectRef, IpAddr>, E2eError> {
        let mut found = BTreeMap::new();
        for namespace in namespaces {
            let text = self.run(
                &strings(&["get", resource, "--namespace", namespace, "-o", "json"]),
                None,
            )?;
            let list: Value = serde_json::from_str(&text).map_err(|source| E2eError::Json {
                args: format!("get {resource} --namespace {namespace} -o json"),
                source,
            })?;
            found.extend(
                list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|item| {
                        let key = ObjectRef::new(
                            item["metadata"]["namespace"].as_str()?,
                            item["metadata"]["name"].as_str()?,
                        );
                        Some((key, address_of(item)?))
                    }),
            );
        }
        Ok(found)
    }

    /// Runs one probe (`probe::exec_args`): what it saw, or why it did not run.
    pub fn probe(&self, args: &[String]) -> Result<Seen, String> {
        let out = Command::new("kubectl")
            .args(&self.global)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run kubectl: {e}"))?;
        probe::interpret(out.status.code(), &String::from_utf8_lossy(&out.stderr))
    }
}

/// A pod's (`status.podIPs`) or a Service's (`spec.clusterIPs`) first IPv4
/// address, else its first.
fn address_of(item: &Value) -> Option<IpAddr> {
    let addresses: Vec<IpAddr> = item["status"]["podIPs"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip["ip"].as_str())
                .collect::<Vec<_>>()
        })
        .or_else(|| {
            item["spec"]["clusterIPs"]
                .as_array()
                .map(|ips| ips.iter().filter_map(Value::as_str).collect())
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addresses.first())
        .copied()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_prefer_ipv4_for_pods_and_services() {
        let pod = json!({"status": {"podIPs": [{"ip": "fd00::5"}, {"ip": "10.244.1.5"}]}});
        assert_eq!(address_of(&pod), "10.244.1.5".parse().ok());
        let service = json!({"spec": {"clusterIPs": ["10.96.0.12"]}});
        assert_eq!(address_of(&service), "10.96.0.12".parse().ok());
        let pending = json!({"status": {"phase": "Pending"}});
        assert_eq!(address_of(&pending), None);
    }
}
