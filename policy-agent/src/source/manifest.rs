//! Loads a `ClusterState` from a manifest file or a directory of them, the way
//! `kubectl apply -f PATH` reads them: `.yaml`, `.yml` and `.json` files, walked
//! recursively in sorted order, several documents per file, `kind: List` unpacked.
//!
//! Loading is all or nothing: a malformed object gets an error naming the file,
//! the object and the field, and nothing is applied. Objects are parsed to a
//! `serde_norway::Value` first (to name the object in errors), then deserialized
//! into k8s-openapi types with `serde_path_to_error` (to name the field), then
//! converted by `convert`.
//!
//! May import: `crate::model`, `super::convert`, serde_norway, serde_json,
//! serde_path_to_error, k8s-openapi (as deserialization targets only).

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{core::v1 as core, networking::v1 as net},
    Resource,
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_norway::{Mapping, Value};

use super::convert::{self, ConvertError};
use crate::model::{ClusterState, ObjectRef};

/// Why manifests could not be loaded. Every variant names the file; those about
/// one object also name it (`NetworkPolicy prod/db`, or `document 3` when it has
/// no name) and, where known, the field path.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file is not valid YAML (or JSON, for `.json` files).
    #[error("{}: syntax error: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// The parser's message (it includes the line and column when known).
        message: String,
    },
    /// A document is not a Kubernetes object we can dispatch on: not a mapping,
    /// no `kind`, a kind we read under an unsupported `apiVersion`, a bad List.
    #[error("{}: {object}: {}{message}", file.display(), field_prefix(field))]
    Document {
        /// The file.
        file: PathBuf,
        /// The object, e.g. `document 2` or `NetworkPolicy prod/db`.
        object: String,
        /// Path of the offending field; empty for the document as a whole.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An object does not have the shape of its kind (a type error).
    #[error("{}: {object}: {}{message}", file.display(), field_prefix(field))]
    Decode {
        /// The file.
        file: PathBuf,
        /// The object, e.g. `NetworkPolicy prod/db`.
        object: String,
        /// Path of the offending field, e.g. `spec.ingress[0].ports[0].port`.
        field: String,
        /// The deserializer's message.
        message: String,
    },
    /// An object is well-formed but invalid (the API server would reject it).
    #[error("{}: {object}: {source}", file.display())]
    Convert {
        /// The file.
        file: PathBuf,
        /// The object, e.g. `NetworkPolicy prod/db`.
        object: String,
        /// What is invalid, with its field path.
        #[source]
        source: ConvertError,
    },
    /// The same kind, namespace and name appear twice.
    #[error("{}: {object} is defined twice (first in {})", file.display(), first.display())]
    Duplicate {
        /// The file of the second definition.
        file: PathBuf,
        /// The object, e.g. `Pod prod/web`.
        object: String,
        /// The file of the first definition.
        first: PathBuf,
    },
}

impl ManifestError {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ManifestError::Io { .. } => "io",
            ManifestError::Syntax { .. } => "syntax",
            ManifestError::Document { .. } => "document",
            ManifestError::Decode { .. } => "decode",
            ManifestError::Convert { .. } => "convert",
            ManifestError::Duplicate { .. } => "duplicate",
        }
    }
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// Loads every Namespace, Pod, Service and NetworkPolicy under `path` (a file, or a
/// directory walked recursively in sorted order) into a `ClusterState`, then adds
/// the namespaces objects live in but no Namespace declares.
///
/// In a directory, only `.yaml`, `.yml` and `.json` files are read, and entries
/// whose name starts with `.` are skipped (a mounted ConfigMap's `..data` would
/// otherwise be read twice). A file named directly is read whatever its extension.
/// Other kinds are skipped with a warning. Any error fails the whole load.
pub fn load_manifests(path: &Path) -> Result<ClusterState, ManifestError> {
    let mut loader = Loader::default();
    for file in manifest_files(path)? {
        loader.load_file(&file)?;
    }
    let mut state = loader.state;
    state.add_implicit_namespaces();
    Ok(state)
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ManifestError + '_ {
    move |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `path` itself if it is a file, else the manifest files below it, sorted.
fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    if fs::metadata(path).map_err(io_error(path))?.is_dir() {
        walk(path, &mut files, &mut HashSet::new())?;
    } else {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// Appends the manifest files below `dir`. Symlinks are followed; `visited` holds
/// the canonical directories already walked, so a symlink cycle ends the descent.
fn walk(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), ManifestError> {
    if !visited.insert(fs::canonicalize(dir).map_err(io_error(dir))?) {
        let dir = dir.display();
        tracing::warn!(%dir, "skipping directory already walked (symlink cycle?)");
        return Ok(());
    }
    let mut entries = fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(io_error(dir))?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if hidden {
            tracing::debug!(path = %path.display(), "skipping hidden entry");
        } else if fs::metadata(&path).map_err(io_error(&path))?.is_dir() {
            walk(&path, files, visited)?;
        } else if has_extension(&path, &["yaml", "yml", "json"]) {
            files.push(path);
        } else {
            let path = path.display();
            tracing::debug!(%path, "skipping file that is not .yaml, .yml or .json");
        }
    }
    Ok(())
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| extensions.contains(&ext))
}

/// The documents of a file: a JSON stream for `.json`, else a `---`-separated YAML
/// stream (JSON read as YAML works too, for files named directly).
fn parse_documents(file: &Path, text: &str) -> Result<Vec<Value>, ManifestError> {
    if has_extension(file, &["json"]) {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .map(|doc| {
                doc.map_err(|err| ManifestError::Syntax {
                    file: file.to_path_buf(),
                    line: Some(err.line()),
                    message: err.to_string(),
                })
            })
            .collect()
    } else {
        serde_norway::Deserializer::from_str(text)
            .map(|doc| {
                Value::deserialize(doc).map_err(|err| ManifestError::Syntax {
                    file: file.to_path_buf(),
                    line: err.location().map(|at| at.line()),
                    message: err.to_string(),
                })
            })
            .collect()
    }
}

/// Accumulates objects, remembering where each was first defined.
#[derive(Default)]
struct Loader {
    state: ClusterState,
    seen: HashMap<(&'static str, ObjectRef), PathBuf>,
}

/// Where an object sits: its file and position (`document 3`, `document 3, items[1]`).
struct Origin<'a> {
    file: &'a Path,
    position: String,
}

impl Origin<'_> {
    /// A problem with the document at this position, which has no usable name.
    fn error(&self, field: &str, message: impl Into<String>) -> ManifestError {
        ManifestError::Document {
            file: self.file.to_path_buf(),
            object: self.position.clone(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl Loader {
    fn load_file(&mut self, file: &Path) -> Result<(), ManifestError> {
        let text = fs::read_to_string(file).map_err(io_error(file))?;
        for (i, mut doc) in parse_documents(file, &text)?.into_iter().enumerate() {
            let origin = Origin {
                file,
                position: format!("document {}", i + 1),
            };
            if doc.is_null() {
                continue;
            }
            doc.apply_merge()
                .map_err(|err| origin.error("", err.to_string()))?;
            self.load_object(&origin, &doc)?;
        }
        Ok(())
    }

    /// Dispatches one object on its `kind`, checking the `apiVersion` we read it as.
    fn load_object(&mut self, origin: &Origin<'_>, value: &Value) -> Result<(), ManifestError> {
        let Value::Mapping(map) = &value else {
            let message = "expected a Kubernetes object (a mapping with apiVersion and kind)";
            return Err(origin.error("", message));
        };
        let kind = match map.get("kind") {
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => return Err(origin.error("kind", "must be a string")),
            None => return Err(origin.error("kind", "required field is missing")),
        };
        let object = describe(origin, &kind, map);
        let ctx = Context {
            origin,
            object: &object,
            map,
        };
        match kind.as_str() {
            "List" => {
                ctx.check_api_version("v1")?;
                self.load_list(origin, map)
            }
            "Namespace" => {
                let ns = ctx.convert::<core::Namespace, _>(value, convert::namespace)?;
                self.claim(
                    "Namespace",
                    ObjectRef::new("", ns.name.clone()),
                    origin,
                    &object,
                )?;
                self.state.namespaces.insert(ns.name.clone(), ns);
                Ok(())
            }
            "Pod" => {
                let pod = ctx.convert::<core::Pod, _>(value, convert::pod)?;
                self.claim("Pod", pod.key.clone(), origin, &object)?;
                self.state.pods.insert(pod.key.clone(), pod);
                Ok(())
            }
            "Service" => {
                let svc = ctx.convert::<core::Service, _>(value, convert::service)?;
                self.claim("Service", svc.key.clone(), origin, &object)?;
                self.state.services.insert(svc.key.clone(), svc);
                Ok(())
            }
            "NetworkPolicy" => {
                let np = ctx.convert::<net::NetworkPolicy, _>(value, convert::network_policy)?;
                self.claim("NetworkPolicy", np.key.clone(), origin, &object)?;
                self.state.policies.insert(np.key.clone(), np);
                Ok(())
            }
            _ => {
                let file = origin.file.display();
                tracing::warn!(%file, kind, object, "skipping unsupported kind");
                Ok(())
            }
        }
    }

    /// `kind: List` (what `kubectl get -o yaml` prints): each of `items` is an object.
    fn load_list(&mut self, origin: &Origin<'_>, map: &Mapping) -> Result<(), ManifestError> {
        let items = match map.get("items") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Sequence(items)) => items,
            Some(_) => return Err(origin.error("items", "must be a list")),
        };
        for (i, item) in items.iter().enumerate() {
            let item_origin = Origin {
                file: origin.file,
                position: format!("{}, items[{i}]", origin.position),
            };
            self.load_object(&item_origin, item)?;
        }
        Ok(())
    }

    /// Records that `kind key` is defined in this file; an error if it already was.
    fn claim(
        &mut self,
        kind: &'static str,
        key: ObjectRef,
        origin: &Origin<'_>,
        object: &str,
    ) -> Result<(), ManifestError> {
        if let Some(first) = self.seen.get(&(kind, key.clone())) {
            return Err(ManifestError::Duplicate {
                file: origin.file.to_path_buf(),
                object: object.to_string(),
                first: first.clone(),
            });
        }
        self.seen.insert((kind, key), origin.file.to_path_buf());
        Ok(())
    }
}

/// How errors name an object: `Namespace prod`, `Pod prod/web` (a missing namespace
/// is `default`), or its position and kind when it has no name.
fn describe(origin: &Origin<'_>, kind: &str, map: &Mapping) -> String {
    let metadata = map.get("metadata");
    let field = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str);
    match (field("name"), kind) {
        (Some(name), "Namespace") if !name.is_empty() => format!("Namespace {name}"),
        (Some(name), _) if !name.is_empty() => {
            let namespace = field("namespace")
                .filter(|ns| !ns.is_empty())
                .unwrap_or("default");
            format!("{kind} {namespace}/{name}")
        }
        _ => format!("{} ({kind})", origin.position),
    }
}

/// One object being read, for error context.
struct Context<'a> {
    origin: &'a Origin<'a>,
    object: &'a str,
    map: &'a Mapping,
}

impl Context<'_> {
    fn check_api_version(&self, expected: &str) -> Result<(), ManifestError> {
        match self.map.get("apiVersion").and_then(Value::as_str) {
            Some(found) if found == expected => Ok(()),
            found => {
                let found = found.map_or("nothing".to_string(), |found| format!("{found:?}"));
                Err(ManifestError::Document {
                    file: self.origin.file.to_path_buf(),
                    object: self.object.to_string(),
                    field: "apiVersion".to_string(),
                    message: format!(
                        "found {found}, but this kind is read as apiVersion {expected:?}"
                    ),
                })
            }
        }
    }

    /// Deserializes `value` as `K` (naming the field of a type error) and converts it.
    fn convert<K, T>(
        &self,
        value: &Value,
        convert: fn(&K) -> Result<T, ConvertError>,
    ) -> Result<T, ManifestError>
    where
        K: Resource + DeserializeOwned,
    {
        self.check_api_version(K::API_VERSION)?;
        let object: K = serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            ManifestError::Decode {
                file: self.origin.file.to_path_buf(),
                object: self.object.to_string(),
                field: if path == "." { String::new() } else { path },
                message: err.into_inner().to_string(),
            }
        })?;
        convert(&object).map_err(|source| ManifestError::Convert {
            file: self.origin.file.to_path_buf(),
            object: self.object.to_string(),
            source,
        })
    }
}

#[cfg(test)]
#[expect(
    clippy::expect_used,
    reason = "a failing fixture setup should fail the test"
)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::model::NAMESPACE_NAME_LABEL;

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
            err.to_string().replace(&prefix, "")
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
            Err(ManifestError::Syntax { line, .. }) => assert_eq!(line, Some(7)),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_path_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing");
        let err = load_manifests(&missing).expect_err("missing path");
        assert_eq!(err.kind(), "io");
        assert!(
            err.to_string().starts_with(&missing.display().to_string()),
            "{err}"
        );
    }
}
