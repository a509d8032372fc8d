//! `exposure` on the postgres example: what reaches each pod, as a table and
//! as JSON.

use std::path::Path;

use super::agent;

fn postgres() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/postgres")
        .display()
        .to_string()
}

#[test]
fn exposure_names_the_outside_ranges_namespaces_and_new_pods_that_reach_each_pod() {
    let out = agent(&["exposure", "-f", &postgres(), "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let of = |pod: &str, port: u64| {
        json.as_array()
            .and_then(|all| all.iter().find(|e| e["pod"] == pod && e["port"] == port))
            .cloned()
            .unwrap_or_else(|| panic!("no {pod} {port}: {json}"))
    };
    // The database: only api pods of production, none yet beyond those.
    assert_eq!(
        of("production/db", 5432),
        serde_json::json!({"pod": "production/db", "port": 5432, "protocol": "TCP",
            "outside": [], "any_namespace": false, "own_namespace": false,
            "new_pods": [{"namespace": "production", "namespace_labels": {},
                          "pod_labels": {"tier": "api"}}]})
    );
    // The web tier is open to all.
    let web = of("production/web", 80);
    assert_eq!(web["outside"], serde_json::json!(["0.0.0.0/0", "::/0"]));
    assert_eq!(web["any_namespace"], true);
    let table = agent(&["exposure", "-f", &postgres()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(
            "production/db 5432/TCP\n  from outside the cluster: no\n  from any namespace: no; \
             from its own namespace: no\n  new pods that would reach it: pods labelled tier=api \
             in namespace production\n"
        ),
        "{text}"
    );
}
