//! The objects a cluster run creates, as JSON for `kubectl apply`: the upstream
//! fixture (namespaces x, y, z; pods a, b, c in each; a Service `s-<ns>-<pod>`
//! per pod) with one agnhost container per served port, as the upstream suite
//! builds it; and an example's pods with their containers replaced by agnhost
//! serving the ports the example probes.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::probe::container_name;
use crate::{
    lab::conformance::fixture::{self, NAMESPACES},
    model::{Labels, ObjectRef, Protocol},
};

/// The probe image: agnhost, from the Kubernetes e2e test images.
pub const AGNHOST_IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
/// The container every example pod probes from (it serves nothing).
pub const PROBE_CONTAINER: &str = "probe";

fn lower(protocol: Protocol) -> String {
    protocol.to_string().to_lowercase()
}

/// A container serving `port`/`protocol` with agnhost's `serve-hostname`, its
/// port named `name` when given.
fn serving_container(
    container: &str,
    port: u16,
    protocol: Protocol,
    name: Option<&str>,
) -> Result<Value, String> {
    let mode = match protocol {
        Protocol::Tcp => "--tcp",
        Protocol::Udp => "--udp",
        Protocol::Sctp => {
            return Err(format!(
                "{port}/SCTP: the probe image serves TCP and UDP only here"
            ))
        }
    };
    let mut container_port = json!({"containerPort": port, "protocol": protocol.to_string()});
    if let Some(name) = name {
        container_port["name"] = json!(name);
    }
    Ok(json!({
        "name": container,
        "image": AGNHOST_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/agnhost", "serve-hostname", mode, "--http=false", "--port", port.to_string()],
        "ports": [container_port],
    }))
}

/// `kind: Namespace` `name` with `labels`.
pub fn namespace(name: &str, labels: &Labels) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// Fixture pod `key` with `labels`, one container per `ports` entry
/// (`cont-<port>-<proto>`, its port named `serve-<port>-<proto>`).
pub fn fixture_pod(
    key: &ObjectRef,
    labels: &Labels,
    ports: &[(u16, Protocol)],
) -> Result<Value, String> {
    let containers = ports
        .iter()
        .map(|&(port, protocol)| {
            let name = format!("serve-{port}-{}", lower(protocol));
            serving_container(&container_name(port, protocol), port, protocol, Some(&name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": key.name, "namespace": key.namespace, "labels": labels},
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 0},
    }))
}

/// Every fixture object with its default labels (what each case starts from):
/// namespaces labelled `ns=<ns>`, pods `pod=<name>` serving `ports`, and the
/// per-pod Services.
pub fn fixture(ports: &[(u16, Protocol)]) -> Result<Vec<Value>, String> {
    let mut objects: Vec<Value> = NAMESPACES
        .iter()
        .map(|ns| namespace(ns, &Labels::from([("ns".to_string(), ns.to_string())])))
        .collect();
    for key in fixture::pods() {
        let labels = Labels::from([("pod".to_string(), key.name.clone())]);
        objects.push(fixture_pod(&key, &labels, ports)?);
        let service_ports: Vec<Value> = ports
            .iter()
            .map(|&(port, protocol)| {
                json!({
                    "name": format!("service-port-{}-{port}", lower(protocol)),
                    "port": port,
                    "targetPort": port,
                    "protocol": protocol.to_string(),
                })
            })
            .collect();
        objects.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": format!("s-{}-{}", key.namespace, key.name), "namespace": key.namespace},
            "spec": {"selector": labels, "ports": service_ports},
        }));
    }
    Ok(objects)
}

/// An example's object as applied to the cluster: a Pod keeps its metadata and
/// declared ports (names included) but runs agnhost: the `probe` container, and
/// one container serving each declared port and each of `serve` (the ports the
/// example probes it on). Other objects pass unchanged.
pub fn example_object(object: &Value, serve: &BTreeSet<(u16, Protocol)>) -> Result<Value, String> {
    if object.get("kind").and_then(Value::as_str) != Some("Pod") {
        return Ok(object.clone());
    }
    let mut ports: Vec<(u16, Protocol, Option<String>)> = Vec::new();
    let declared = object["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default());
    for port in declared {
        let number = port["containerPort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("a containerPort that is no port: {port}"))?;
        let protocol = match port["protocol"].as_str().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => return Err(format!("protocol {other:?}")),
        };
        ports.push((number, protocol, port["name"].as_str().map(str::to_string)));
    }
    for &(port, protocol) in serve {
        if !ports
            .iter()
            .any(|(p, proto, _)| *p == port && *proto == protocol)
        {
            ports.push((port, protocol, None));
        }
    }
    let mut containers = vec![json!({
        "name": PROBE_CONTAINER,
        "image": AGNHOST_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/agnhost", "pause"],
    })];
    for (port, protocol, name) in &ports {
        containers.push(serving_container(
            &container_name(*port, *protocol),
            *port,
            *protocol,
            name.as_deref(),
        )?);
    }
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "labels": object["metadata"]["labels"],
        },
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 0},
    });
    if object["metadata"]["labels"].is_null() {
        if let Some(metadata) = pod["metadata"].as_object_mut() {
            metadata.remove("labels");
        }
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_is_three_namespaces_nine_pods_and_a_service_per_pod() {
        let objects =
            fixture(&[(80, Protocol::Tcp), (81, Protocol::Udp)]).unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "Namespace").count(), 3);
        assert_eq!(kinds.iter().filter(|k| **k == "Pod").count(), 9);
        assert_eq!(kinds.iter().filter(|k| **k == "Service").count(), 9);
        let pod = objects
            .iter()
            .find(|o| {
                o["kind"] == "Pod"
                    && o["metadata"]["namespace"] == "y"
                    && o["metadata"]["name"] == "b"
            })
            .unwrap_or_else(|| panic!("no y/b"));
        assert_eq!(pod["metadata"]["labels"], json!({"pod": "b"}));
        let udp = &pod["spec"]["containers"][1];
        assert_eq!(udp["name"], "cont-81-udp");
        assert_eq!(
            udp["command"],
            json!([
                "/agnhost",
                "serve-hostname",
                "--udp",
                "--http=false",
                "--port",
                "81"
            ])
        );
        assert_eq!(
            udp["ports"],
            json!([{"containerPort": 81, "protocol": "UDP", "name": "serve-81-udp"}])
        );
        let service = objects
            .iter()
            .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "s-y-b")
            .unwrap_or_else(|| panic!("no s-y-b"));
        assert_eq!(service["spec"]["selector"], json!({"pod": "b"}));
        assert_eq!(service["spec"]["ports"][0]["name"], "service-port-tcp-80");
    }

    #[test]
    fn an_example_pod_keeps_its_labels_and_port_names_and_serves_what_is_probed() {
        let nginx = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nginx", "namespace": "web", "labels": {"app": "nginx"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx",
                "ports": [{"containerPort": 80, "name": "http"}]}]},
        });
        let serve = BTreeSet::from([(80, Protocol::Tcp), (8443, Protocol::Tcp)]);
        let pod = example_object(&nginx, &serve).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pod["metadata"]["labels"], json!({"app": "nginx"}));
        let names: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["probe", "cont-80-tcp", "cont-8443-tcp"]);
        assert_eq!(
            pod["spec"]["containers"][1]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
        let policy = json!({"kind": "NetworkPolicy", "metadata": {"name": "p"}});
        assert_eq!(example_object(&policy, &serve), Ok(policy));
    }

    #[test]
    fn sctp_is_refused_rather_than_served_wrongly() {
        let error = fixture(&[(80, Protocol::Sctp)]).err().unwrap_or_default();
        assert!(error.contains("SCTP"), "{error}");
    }
}
