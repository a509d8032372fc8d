//! How podwall reads YAML: with serde-saphyr, the YAML library the kube client
//! already brings, set up so that manifests mean what they meant before (and what
//! serde_yaml makes of them), bad input is an error and never a panic, and an error
//! is one line.
//!
//! A multi-document file is read into `serde_json::Value`s (`documents`), the
//! generic tree the loader names objects from before deserializing them; a file of
//! one known shape is deserialized directly (`from_str`), naming the field of an
//! error.
//!
//! May import: serde, serde_json, serde_path_to_error, serde-saphyr.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_saphyr::{Options, SnippetMode, UserMessageFormatter};

/// A YAML syntax or type error, from the YAML library. `{}` is its user-facing
/// wording on one line, with the line and column where known: `duplicate mapping
/// key `app` is not allowed here at line 4, column 3` (the library's own `{}`
/// suggests parser options to the developer instead). Boxed: the library's error is
/// large, and every `Result` carrying it would be.
#[derive(Debug)]
pub struct YamlError(Box<serde_saphyr::Error>);

impl YamlError {
    /// Where in the text the error is, when known.
    pub fn location(&self) -> Option<serde_saphyr::Location> {
        self.0.location()
    }

    /// The error as the YAML library returned it.
    pub fn inner(&self) -> &serde_saphyr::Error {
        &self.0
    }
}

impl From<serde_saphyr::Error> for YamlError {
    fn from(error: serde_saphyr::Error) -> Self {
        Self(Box::new(error))
    }
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = serde_saphyr::render_options! {
            formatter: &UserMessageFormatter,
            snippets: SnippetMode::Off,
        };
        self.0.render_to(f, options)
    }
}

impl std::error::Error for YamlError {
    /// Only an I/O error's cause: the message of an error inside an alias (the
    /// library's other source) is already part of `{}`.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.0.without_snippet() {
            serde_saphyr::Error::IOError { cause } => Some(cause),
            _ => None,
        }
    }
}

/// The documents of a `---`-separated YAML stream, as generic trees. Empty and
/// null documents are left out; merge keys (`<<`) are resolved; a key must be a
/// scalar (numbers and booleans are read as their text, as kubectl does).
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, YamlError> {
    Ok(serde_saphyr::from_multiple_with_options(
        text,
        options(text),
    )?)
}

/// The one document of `text` as a `T`. On an error, also the path of the field
/// it is about (`steps[1].probes[0].port`; `.` for the document as a whole).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, (String, YamlError)> {
    let mut path = String::from(".");
    serde_saphyr::with_deserializer_from_str_with_options(text, options(text), |de| {
        serde_path_to_error::deserialize(de).map_err(|err| {
            path = err.path().to_string();
            err.into_inner()
        })
    })
    .map_err(|err| (path, err.into()))
}

/// Options for reading `text`:
///
/// - Scalars are read as YAML 1.2 (as serde_yaml reads them): only `true` and
///   `false` are booleans, so `yes`, `on` and `off` stay strings; `0755` and `1_000`
///   stay strings rather than becoming numbers.
/// - Limits keep a hostile file from blowing up (an alias bomb, nesting that would
///   exhaust the stack), but not a large honest one: the library's defaults
///   (250,000 nodes, 1,024 documents) are sized for configuration files, and
///   `kubectl get pods -A -o yaml` of a large cluster is more. Without aliases, a
///   text cannot hold more nodes, events or documents than it has bytes, so those
///   limits grow with the text; alias expansion keeps the library's caps. Nesting
///   keeps the library's cap of 64 levels (aliases included): deeper than
///   Kubernetes objects go, and shallow enough for the reader's recursion to fit a
///   2 MiB thread stack in a debug build (about 90 levels do not).
/// - No code snippet in errors: an error is one line.
fn options(text: &str) -> Options {
    let size = text.len().saturating_mul(2);
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: size.max(1_000_000),
            max_nodes: size.max(250_000),
            max_documents: size.max(1_024),
        },
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        with_snippet: false,
    }
}
