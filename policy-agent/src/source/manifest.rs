//! Loads a `ClusterState` from a manifest file or a directory of them, the way
//! `kubectl apply -f PATH` reads them: `.yaml`, `.yml` and `.json` files, walked
//! recursively in sorted order, several documents per file, `kind: List` unpacked.
//!
//! Loading is all or nothing: a malformed object gets an error naming the file,
//! the object and the field, and nothing is applied. Objects are parsed to a
//! `serde_json::Value` first (by `super::yaml`, which also resolves merge keys `<<`;
//! to name the object in errors), then deserialized into k8s-openapi types with
//! `serde_path_to_error` (to name the field), then converted by `convert`.
//!
//! May import: `crate::model`, `super::convert`, `super::state`, `super::yaml`,
//! serde_json, serde_path_to_error, k8s-openapi (as deserialization targets only).

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{core::v1 as core, networking::v1 as net};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{
    convert::{ApiKind, ClusterNetworkPolicy, ConvertError},
    state::StateBuilder,
    yaml::{self, YamlError},
};
use crate::model::{ClusterState, ObjectRef};

/// Why manifests could not be loaded. Every variant names the file; those about
/// one object also name it (`NetworkPolicy prod/db`, or `document 3` when it has
/// no name) and, where known, the field path.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("{}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file is not valid YAML (or JSON, for `.json` files).
    #[error("{}: syntax error", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// What the parser said (with the line and column when known).
        #[source]
        source: SyntaxError,
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
    #[error("{}: {object}{}", file.display(), field_suffix(field))]
    Decode {
        /// The file.
        file: PathBuf,
        /// The object, e.g. `NetworkPolicy prod/db`.
        object: String,
        /// Path of the offending field, e.g. `spec.ingress[0].ports[0].port`.
        field: String,
        /// What the deserializer said.
        #[source]
        source: serde_json::Error,
    },
    /// An object is well-formed but invalid (the API server would reject it).
    #[error("{}: {object}", file.display())]
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

/// What the YAML or JSON parser said about a file that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum SyntaxError {
    /// A `.json` file.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A YAML file (or any file named directly that is not `.json`), including a
    /// merge key (`<<`) that cannot be resolved and input over the reader's limits.
    #[error(transparent)]
    Yaml(#[from] YamlError),
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// `: field` after an object, or nothing for the object as a whole.
fn field_suffix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(": {field}")
    }
}

/// Loads every Namespace, Pod, Service, NetworkPolicy, ClusterNetworkPolicy
/// (`policy.networking.k8s.io/v1alpha2`) and Node under `path` (a file, or a
/// directory walked recursively in sorted order) into a `ClusterState`, then adds
/// the namespaces objects live in but no Namespace declares.
///
/// In a directory, only `.yaml`, `.yml` and `.json` files are read, and entries
/// whose name starts with `.` are skipped (a mounted ConfigMap's `..data` would
/// otherwise be read twice). A file named directly is read whatever its extension.
/// Other kinds are skipped with a warning. Any error fails the whole load.
pub fn load_manifests(path: &Path) -> Result<ClusterState, ManifestError> {
    load_all(std::slice::from_ref(&path))
}

/// `load_manifests` of several paths, read in order as one set of objects (as
/// `kubectl -f A -f B` takes them): an object in two of them is an error as in
/// one directory.
pub fn load_all(paths: &[impl AsRef<Path>]) -> Result<ClusterState, ManifestError> {
    let mut loader = Loader::default();
    for path in paths {
        for file in manifest_files(path.as_ref())? {
            loader.load_file(&file)?;
        }
    }
    // A load stops at the first error, so `finish` never has conversion errors.
    let (state, _) = loader.builder.finish();
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
/// stream (JSON read as YAML works too, for files named directly). A YAML stream's
/// empty and null documents are left out; a JSON stream's `null`s are kept.
pub fn parse_documents(file: &Path, text: &str) -> Result<Vec<Value>, ManifestError> {
    if has_extension(file, &["json"]) {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .map(|doc| {
                doc.map_err(|err| ManifestError::Syntax {
                    file: file.to_path_buf(),
                    line: Some(err.line()),
                    source: err.into(),
                })
            })
            .collect()
    } else {
        yaml::documents(text).map_err(|err| ManifestError::Syntax {
            file: file.to_path_buf(),
            line: err
                .location()
                .and_then(|at| usize::try_from(at.line()).ok()),
            source: err.into(),
        })
    }
}

/// Accumulates objects, remembering where each was first defined.
#[derive(Default)]
struct Loader {
    builder: StateBuilder,
    seen: HashMap<(&'static str, ObjectRef), PathBuf>,
}

/// Where an object sits: its file and position (`document 3`, `document 3, items[1]`).
/// Documents count from 1; empty YAML documents (`---` with nothing after) are not
/// counted, as the YAML reader leaves them out.
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
        for (i, doc) in parse_documents(file, &text)?.iter().enumerate() {
            let origin = Origin {
                file,
                position: format!("document {}", i + 1),
            };
            if !doc.is_null() {
                self.load_object(&origin, doc)?;
            }
        }
        Ok(())
    }

    /// Dispatches one object on its `kind`, checking the `apiVersion` we read it as.
    fn load_object(&mut self, origin: &Origin<'_>, value: &Value) -> Result<(), ManifestError> {
        let Value::Object(map) = value else {
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
            "Namespace" => self.add::<core::Namespace>(&ctx, value),
            "Pod" => self.add::<core::Pod>(&ctx, value),
            "Service" => self.add::<core::Service>(&ctx, value),
            "NetworkPolicy" => self.add::<net::NetworkPolicy>(&ctx, value),
            "ClusterNetworkPolicy" => {
                ctx.check_cluster_scoped()?;
                self.add::<ClusterNetworkPolicy>(&ctx, value)
            }
            "Node" => {
                ctx.check_cluster_scoped()?;
                self.add::<core::Node>(&ctx, value)
            }
            _ => {
                let file = origin.file.display();
                tracing::warn!(%file, kind, object, "skipping unsupported kind");
                Ok(())
            }
        }
    }

    /// `kind: List` (what `kubectl get -o yaml` prints): each of `items` is an object.
    fn load_list(
        &mut self,
        origin: &Origin<'_>,
        map: &Map<String, Value>,
    ) -> Result<(), ManifestError> {
        let items = match map.get("items") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(items)) => items,
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

    /// Converts `value` as a `K` and adds it; an error if the same kind and key
    /// was defined before (naming the file of the first definition).
    fn add<K>(&mut self, ctx: &Context<'_>, value: &Value) -> Result<(), ManifestError>
    where
        K: ApiKind + DeserializeOwned,
    {
        let model = ctx.convert::<K>(value)?;
        let key = K::key(&model);
        if let Err(key) = self.builder.add::<K>(model) {
            let first = self.seen.get(&(K::KIND, key)).cloned().unwrap_or_default();
            return Err(ManifestError::Duplicate {
                file: ctx.origin.file.to_path_buf(),
                object: ctx.object.to_string(),
                first,
            });
        }
        self.seen
            .insert((K::KIND, key), ctx.origin.file.to_path_buf());
        Ok(())
    }
}

/// How errors name an object: `Namespace prod`, `ClusterNetworkPolicy guardrails`,
/// `Pod prod/web` (a missing namespace
/// is `default`), or its position and kind when it has no name.
fn describe(origin: &Origin<'_>, kind: &str, map: &Map<String, Value>) -> String {
    let metadata = map.get("metadata");
    let field = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str);
    match (field("name"), kind) {
        (Some(name), "Namespace" | "ClusterNetworkPolicy" | "Node") if !name.is_empty() => {
            format!("{kind} {name}")
        }
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
    map: &'a Map<String, Value>,
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

    /// A cluster-scoped kind (ClusterNetworkPolicy, Node) has no namespace: one
    /// given is an error, as `kubectl apply` of it to a namespace is a mistake.
    fn check_cluster_scoped(&self) -> Result<(), ManifestError> {
        let namespace = self
            .map
            .get("metadata")
            .and_then(|meta| meta.get("namespace"));
        match namespace {
            None | Some(Value::Null) => Ok(()),
            Some(_) => Err(ManifestError::Document {
                file: self.origin.file.to_path_buf(),
                object: self.object.to_string(),
                field: "metadata.namespace".to_string(),
                message: "this kind is cluster-scoped; remove the namespace".to_string(),
            }),
        }
    }

    /// Deserializes `value` as `K` (naming the field of a type error) and converts it.
    fn convert<K>(&self, value: &Value) -> Result<K::Model, ManifestError>
    where
        K: ApiKind + DeserializeOwned,
    {
        self.check_api_version(K::API_VERSION)?;
        let object: K = serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            ManifestError::Decode {
                file: self.origin.file.to_path_buf(),
                object: self.object.to_string(),
                field: if path == "." { String::new() } else { path },
                source: err.into_inner(),
            }
        })?;
        object.convert().map_err(|source| ManifestError::Convert {
            file: self.origin.file.to_path_buf(),
            object: self.object.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests;
