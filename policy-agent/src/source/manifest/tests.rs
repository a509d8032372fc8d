//! Tests of the parent module.

#![expect(
    clippy::expect_used,
    reason = "a failing fixture setup should fail the test"
)]

use tempfile::TempDir;

use super::*;
use crate::{causes::causes, model::NAMESPACE_NAME_LABEL};

mod cluster_policy;

const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                      metadata: {name: db-lockdown, namespace: prod}\n\
                      spec: {podSelector: {matchLabels: {app: db}}}\n";

/// POLICY with one ingress rule on the given port.
fn policy_with_port(port: &str) -> String {
    POLICY.replace(
        "spec: {",
        &format!("spec: {{ingress: [{{ports: [{{port: {port}}}]}}], "),
    )
}

/// A temp dir holding `files` (path relative to the dir, contents).
fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("file has a parent")).expect("mkdir");
        fs::write(path, text).expect("write fixture");
    }
    dir
}

/// Loads `files` from a temp dir; errors are rendered with paths relative to it.
fn load(files: &[(&str, &str)]) -> Result<ClusterState, String> {
    let dir = dir_with(files);
    load_manifests(dir.path()).map_err(|err| {
        let prefix = format!("{}/", dir.path().display());
        causes(&err).to_string().replace(&prefix, "")
    })
}

/// Loading `files` fails (as a whole) with a message starting with `expected`.
fn assert_load_fails(files: &[(&str, &str)], expected: &str) {
    match load(files) {
        Ok(state) => panic!("expected {expected:?}, loaded {state:?}"),
        Err(err) => assert!(
            err.starts_with(expected),
            "expected {expected:?}, got {err}"
        ),
    }
}

#[test]
fn directory_is_walked_with_multi_document_files_lists_and_json() {
    let namespace = "---\napiVersion: v1\nkind: Namespace\n\
                     metadata: {name: prod, labels: {env: prod}}\n---\n---\n";
    let list = "apiVersion: v1\nkind: List\nitems:\n\
                - {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: prod}}\n\
                - {apiVersion: v1, kind: Service, metadata: {name: web, namespace: prod}}\n";
    let json = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cli"},
                   "status": {"podIP": "10.0.0.9"}}"#;
    let state = load(&[
        ("a.yaml", namespace),
        ("a.yaml.bak", "not: [valid"),
        ("README.md", "# not a manifest: ["),
        (".hidden/x.yaml", "not: [valid"),
        ("nested/deep/policy.yml", POLICY),
        ("nested/list.yaml", list),
        ("pod.json", json),
    ])
    .expect("valid manifests");
    let keys = |refs: Vec<&ObjectRef>| refs.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    assert_eq!(
        keys(state.pods.keys().collect()),
        ["default/cli", "prod/web"]
    );
    assert_eq!(keys(state.services.keys().collect()), ["prod/web"]);
    assert_eq!(keys(state.policies.keys().collect()), ["prod/db-lockdown"]);
    let prod = &state.namespaces["prod"].labels;
    assert_eq!(prod.get("env").map(String::as_str), Some("prod"));
    assert_eq!(
        prod.get(NAMESPACE_NAME_LABEL).map(String::as_str),
        Some("prod")
    );
}

#[test]
fn namespaces_without_a_namespace_object_are_added_with_their_name_label() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n";
    let state = load(&[("p.yaml", POLICY), ("pod.yaml", pod)]).expect("valid manifests");
    assert_eq!(
        state.namespaces.keys().collect::<Vec<_>>(),
        ["default", "prod"]
    );
    for (name, ns) in &state.namespaces {
        assert_eq!(ns.labels.get(NAMESPACE_NAME_LABEL), Some(name));
    }
}

#[test]
fn unknown_kinds_are_skipped_and_an_empty_directory_is_an_empty_state() {
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n\
                      spec: {replicas: not-a-number}\n";
    assert_eq!(load(&[("d.yaml", deployment)]), Ok(ClusterState::default()));
    assert_eq!(load(&[]), Ok(ClusterState::default()));
}

#[test]
fn a_symlink_cycle_is_walked_once() {
    let dir = dir_with(&[("p.yaml", POLICY)]);
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).expect("symlink");
    let state = load_manifests(dir.path()).expect("each file read once, no duplicate");
    assert_eq!(state.policies.len(), 1);
}

#[test]
fn a_file_named_directly_is_read_whatever_its_extension() {
    let dir = dir_with(&[("policy.txt", POLICY)]);
    let state = load_manifests(&dir.path().join("policy.txt")).expect("valid manifest");
    assert_eq!(state.policies.len(), 1);
}

#[test]
fn a_type_error_fails_the_whole_load_naming_file_object_and_field() {
    let other = POLICY.replace("db-lockdown", "other");
    assert_load_fails(
        &[
            ("a.yaml", &other),
            ("deploy/x.yaml", &policy_with_port("[80]")),
        ],
        "deploy/x.yaml: NetworkPolicy prod/db-lockdown: spec.ingress[0].ports[0].port: \
         invalid type: sequence, expected IntOrString",
    );
}

#[test]
fn an_invalid_value_fails_the_load_naming_file_object_and_field() {
    assert_load_fails(
        &[("x.yaml", &policy_with_port("0"))],
        "x.yaml: NetworkPolicy prod/db-lockdown: spec.ingress[0].ports[0].port: \
         0 is not a port number",
    );
}

#[test]
fn an_object_without_a_name_is_named_by_its_position() {
    let list = "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Pod, metadata: {}}]";
    assert_load_fails(
        &[("l.yaml", list)],
        "l.yaml: document 1, items[0] (Pod): metadata.name: required field is missing",
    );
}

#[test]
fn documents_that_are_not_kubernetes_objects_are_rejected() {
    let scalar = format!("{POLICY}---\njust a string\n");
    assert_load_fails(
        &[("s.yaml", &scalar)],
        "s.yaml: document 2: expected a Kubernetes object",
    );
    let no_kind = "apiVersion: v1\nmetadata: {name: x}\n";
    assert_load_fails(
        &[("k.yaml", no_kind)],
        "k.yaml: document 1: kind: required field is missing",
    );
}

#[test]
fn a_known_kind_under_another_api_version_is_rejected_not_skipped() {
    let beta = POLICY.replace("networking.k8s.io/v1", "extensions/v1beta1");
    assert_load_fails(
        &[("v.yaml", &beta)],
        "v.yaml: NetworkPolicy prod/db-lockdown: apiVersion: found \"extensions/v1beta1\"",
    );
}

#[test]
fn the_same_object_in_two_files_is_rejected_naming_both() {
    assert_load_fails(
        &[("a.yaml", POLICY), ("b/c.yaml", POLICY)],
        "b/c.yaml: NetworkPolicy prod/db-lockdown is defined twice (first in a.yaml)",
    );
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let yaml = format!("{POLICY}---\nkind: [Pod\n");
    assert_load_fails(&[("bad.yaml", &yaml)], "bad.yaml: syntax error: ");
    let json = "{\"kind\": \"Pod\",\n}";
    assert_load_fails(
        &[("bad.json", json)],
        "bad.json: syntax error: trailing comma at line 2",
    );
    let dir = dir_with(&[("bad.yaml", &yaml)]);
    match load_manifests(&dir.path().join("bad.yaml")) {
        // The line of the bracket that is never closed.
        Err(ManifestError::Syntax { line, .. }) => assert_eq!(line, Some(6)),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert_load_fails(
        &[("bad.yaml", &yaml)],
        "bad.yaml: syntax error: unclosed bracket '[' at line 6, column 7",
    );
}

/// The labels of Namespace `prod` written as `labels` (YAML flow) in `file`.
fn namespace_labels(labels: &str) -> Result<crate::model::Labels, String> {
    let yaml =
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: prod, labels: {labels}}}\n");
    let mut state = load(&[("ns.yaml", &yaml)])?;
    let mut labels = state.namespaces.remove("prod").expect("loaded").labels;
    labels.remove(NAMESPACE_NAME_LABEL);
    Ok(labels)
}

#[test]
fn scalars_are_read_as_yaml_1_2_so_yes_on_and_leading_zeros_stay_strings() {
    let labels = namespace_labels("{a: yes, b: on, c: off, d: 0755, e: 1_000, f: y}")
        .expect("every value is a string");
    let values: Vec<&str> = labels.values().map(String::as_str).collect();
    assert_eq!(values, ["yes", "on", "off", "0755", "1_000", "y"]);
    // Only true and false are booleans, and a boolean is no label value.
    assert_load_fails(
        &[(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {a: true}}\n",
        )],
        "ns.yaml: Namespace prod: metadata.labels.a: invalid type: boolean `true`, expected a string",
    );
}

#[test]
fn a_scalar_key_is_read_as_its_text_and_a_null_or_collection_key_is_refused() {
    // As kubectl reads it: YAML to JSON turns a number or boolean key into its text.
    let labels = namespace_labels("{1: a, true: b}").expect("scalar keys");
    assert_eq!(
        labels.into_iter().collect::<Vec<_>>(),
        [("1".into(), "a".into()), ("true".into(), "b".into())]
    );
    assert_load_fails(
        &[("n.yaml", "kind: Pod\nmetadata: {~: a}\n")],
        "n.yaml: syntax error: null is not allowed here at line 2, column 12",
    );
    assert_load_fails(
        &[("c.yaml", "kind: Pod\nmetadata: {[a]: b}\n")],
        "c.yaml: syntax error: expected string scalar at line 2, column 12",
    );
}

#[test]
fn merge_keys_are_resolved_and_a_merge_of_no_mapping_is_a_syntax_error() {
    let yaml = "apiVersion: v1\nkind: Namespace\n\
                metadata:\n  <<: {name: base, labels: {team: a}}\n  name: prod\n";
    let state = load(&[("ns.yaml", yaml)]).expect("merged");
    assert_eq!(
        state.namespaces["prod"]
            .labels
            .get("team")
            .map(String::as_str),
        Some("a")
    );
    let anchors = "apiVersion: v1\nkind: List\nitems:\n\
                   - &pod {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: x}}\n\
                   - {<<: *pod, metadata: {name: b, namespace: x}}\n";
    let state = load(&[("list.yaml", anchors)]).expect("merged");
    assert_eq!(state.pods.len(), 2);
    assert_load_fails(
        &[("m.yaml", "kind: Pod\nmetadata: {<<: 1, name: a}\n")],
        "m.yaml: syntax error: YAML merge value must be mapping or sequence of mappings \
         at line 2, column 16",
    );
}

#[test]
fn a_duplicate_key_is_a_syntax_error_naming_the_key_and_line() {
    let yaml = format!("{POLICY}metadata: {{name: other}}\n");
    assert_load_fails(
        &[("d.yaml", &yaml)],
        "d.yaml: syntax error: duplicate mapping key `metadata` is not allowed here \
         at line 5, column 1",
    );
}

#[test]
fn empty_documents_are_skipped_and_not_counted() {
    let yaml = "---\n# nothing\n---\n---\napiVersion: v1\nmetadata: {name: x}\n";
    assert_load_fails(
        &[("e.yaml", yaml)],
        "e.yaml: document 1: kind: required field is missing",
    );
}

#[test]
fn a_large_honest_file_loads_past_the_yaml_libraries_default_limits() {
    // 2,000 documents and 300,000 nodes: more than serde-saphyr's defaults
    // (1,024 documents, 250,000 nodes), as `kubectl get -o yaml` of a big cluster is.
    let labels: String = (0..50).map(|i| format!("l{i}: v, ")).collect();
    let pods: String = (0..2_000)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Pod\n\
                 metadata: {{name: p{i}, namespace: x, labels: {{{labels}}}}}\n\
                 spec: {{containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}\n"
            )
        })
        .collect();
    let state = load(&[("big.yaml", &pods)]).expect("a large file loads");
    assert_eq!(state.pods.len(), 2_000);
}

#[test]
fn hostile_yaml_is_an_error_not_a_crash() {
    // A billion laughs: each level's alias expands ten of the one below.
    let mut bomb =
        String::from("kind: Pod\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let below = i - 1;
        let aliases = vec![format!("*l{below}"); 10].join(", ");
        bomb.push_str(&format!("lol{i}: &l{i} [{aliases}]\n"));
    }
    assert_load_fails(
        &[("bomb.yaml", &bomb)],
        "bomb.yaml: syntax error: YAML document too large or too complex",
    );
    // Nesting deep enough to exhaust the stack of a recursive reader.
    let deep = format!(
        "kind: Pod\nx: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_load_fails(&[("deep.yaml", &deep)], "deep.yaml: syntax error: ");
    // 60 levels are read (in a test's thread, with its smaller stack).
    let nested = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nx: {}1{}\n",
        "{a: ".repeat(60),
        "}".repeat(60)
    );
    assert_eq!(
        load(&[("nested.yaml", &nested)]).map(|s| s.pods.len()),
        Ok(1)
    );
}

#[test]
fn a_missing_path_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing");
    let err = load_manifests(&missing).expect_err("missing path");
    assert_eq!(err.kind(), "io");
    // The message is the path alone; the OS error is its cause, said once.
    assert_eq!(err.to_string(), missing.display().to_string());
    let cause = std::error::Error::source(&err)
        .and_then(|cause| cause.downcast_ref::<io::Error>())
        .map(io::Error::kind);
    assert_eq!(cause, Some(io::ErrorKind::NotFound));
}

#[test]
fn the_mode_annotation_survives_loading() {
    let audited = POLICY.replace(
        "namespace: prod}",
        "namespace: prod, annotations: {podwall.io/mode: audit}}",
    );
    let other = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                 metadata: {name: other, namespace: prod}\nspec: {}\n";
    let state = load(&[("audit.yaml", &audited), ("other.yaml", other)]).expect("loads");
    let mode = |name: &str| state.policies[&ObjectRef::new("prod", name)].mode;
    assert_eq!(mode("db-lockdown"), crate::model::PolicyMode::Audit);
    assert_eq!(mode("other"), crate::model::PolicyMode::Enforce);
}
