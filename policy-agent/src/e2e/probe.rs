//! One probe: `kubectl exec` into the source pod and run agnhost's `connect`
//! against the destination, as the upstream e2e suite does; and what its exit
//! status and error output mean.

use std::{net::SocketAddr, time::Duration};

use crate::model::{ObjectRef, Protocol};

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The connection was made (TCP), or answered (UDP).
    Connected,
    /// No answer in time, or refused: what a policy drop looks like from the pod.
    Blocked,
}

/// The container a fixture pod serves `port`/`protocol` from (and probes from):
/// `cont-<port>-<proto>`, as upstream names it.
pub fn container_name(port: u16, protocol: Protocol) -> String {
    format!("cont-{port}-{}", protocol.to_string().to_lowercase())
}

/// `kubectl` arguments that probe `to` from `from`'s `container`: agnhost's
/// `connect` with a timeout of whole seconds (at least 1).
pub fn exec_args(
    from: &ObjectRef,
    container: &str,
    to: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
) -> Vec<String> {
    let seconds = timeout.as_secs().max(1);
    [
        "exec",
        "--namespace",
        &from.namespace,
        &from.name,
        "--container",
        container,
        "--",
        "/agnhost",
        "connect",
        &to.to_string(),
        &format!("--timeout={seconds}s"),
        &format!("--protocol={}", protocol.to_string().to_lowercase()),
    ]
    .map(String::from)
    .to_vec()
}

/// What a finished `kubectl exec ... agnhost connect` means: exit 0 is a
/// connection; exit 1 with agnhost's `TIMEOUT` or `REFUSED` is a blocked one;
/// anything else (kubectl could not exec, a DNS failure, agnhost's `OTHER`, a
/// signal) is an error naming what was said, never a verdict.
pub fn interpret(exit_code: Option<i32>, stderr: &str) -> Result<Seen, String> {
    let said = stderr.trim();
    match exit_code {
        Some(0) => Ok(Seen::Connected),
        Some(1)
            if said
                .lines()
                .any(|line| matches!(line.trim(), "TIMEOUT" | "REFUSED")) =>
        {
            Ok(Seen::Blocked)
        }
        Some(code) => Err(format!("the probe failed to run (exit {code}): {said}")),
        None => Err(format!("the probe was killed by a signal: {said}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_agnhost_connect_from_the_ports_container_with_whole_seconds() {
        let args = exec_args(
            &ObjectRef::new("x", "a"),
            &container_name(81, Protocol::Udp),
            "10.96.3.4:81".parse().unwrap_or_else(|e| panic!("{e}")),
            Protocol::Udp,
            Duration::from_millis(500),
        );
        assert_eq!(
            args.join(" "),
            "exec --namespace x a --container cont-81-udp -- /agnhost connect 10.96.3.4:81 \
             --timeout=1s --protocol=udp"
        );
    }

    #[test]
    fn only_agnhosts_timeout_or_refusal_counts_as_blocked() {
        assert_eq!(interpret(Some(0), ""), Ok(Seen::Connected));
        assert_eq!(interpret(Some(1), "TIMEOUT\n"), Ok(Seen::Blocked));
        assert_eq!(
            interpret(Some(1), "REFUSED\ncommand terminated with exit code 1\n"),
            Ok(Seen::Blocked)
        );
        for (code, said) in [
            (Some(1), "DNS: lookup s-x-b: no such host"),
            (Some(1), "OTHER: dial udp: network is unreachable"),
            (
                Some(1),
                "error: unable to upgrade connection: container not found (\"cont-80-tcp\")",
            ),
            (Some(126), "OCI runtime exec failed"),
            (None, ""),
        ] {
            assert!(interpret(code, said).is_err(), "{code:?} {said:?}");
        }
    }
}
