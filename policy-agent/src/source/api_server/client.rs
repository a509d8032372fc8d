//! The API server connection: a kubeconfig file when given, else what kube infers
//! (in-cluster service account, then `$KUBECONFIG` / `~/.kube/config`).

use std::path::{Path, PathBuf};

use kube::config::{Config, KubeConfigOptions, Kubeconfig};

/// Why the agent could not set up its API server client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or parsed.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What kube reported.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The default kubeconfig could not be read, or has no such context.
    #[error("kubeconfig ($KUBECONFIG or ~/.kube/config)")]
    Context(#[source] kube::config::KubeconfigError),
    /// Neither in-cluster configuration nor a kubeconfig was found.
    #[error("no API server configuration (not in a pod with a service account, and no kubeconfig; pass --kubeconfig)")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration (TLS, proxy).
    #[error("building the API server client")]
    Build(#[source] kube::Error),
}

/// A client for the API server `kubeconfig` names (at its `context`, else its
/// current one), or the inferred one.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Client, ClientError> {
    let config = config(kubeconfig, context).await?;
    kube::Client::try_from(config).map_err(ClientError::Build)
}

/// The configuration `client` connects with. With a `context` but no
/// `kubeconfig`, the kubeconfig is `$KUBECONFIG` or `~/.kube/config`, as kubectl
/// reads it; without either, it is inferred (in-cluster first).
pub async fn config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Config, ClientError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    match (kubeconfig, context) {
        (Some(path), _) => {
            let error = |source| ClientError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(error)?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(error)
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(ClientError::Context),
        (None, None) => Config::infer().await.map_err(ClientError::Infer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubeconfig with contexts `a` (current) and `b`, each its own server.
    const TWO_CONTEXTS: &str = r#"
apiVersion: v1
kind: Config
current-context: a
clusters:
- name: one
  cluster: {server: "https://one.example:6443"}
- name: two
  cluster: {server: "https://two.example:6443"}
users:
- name: me
  user: {token: "x"}
contexts:
- name: a
  context: {cluster: one, user: me}
- name: b
  context: {cluster: two, user: me}
"#;

    #[tokio::test]
    async fn a_context_picks_its_cluster_and_an_unknown_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("podwall-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("config");
        std::fs::write(&path, TWO_CONTEXTS).unwrap_or_else(|e| panic!("{e}"));
        let server = |context| {
            let path = path.clone();
            async move {
                config(Some(&path), context)
                    .await
                    .map(|config| config.cluster_url.to_string())
            }
        };
        assert_eq!(
            server(None).await.ok().as_deref(),
            Some("https://one.example:6443/")
        );
        assert_eq!(
            server(Some("b")).await.ok().as_deref(),
            Some("https://two.example:6443/")
        );
        let unknown = server(Some("c")).await;
        assert!(unknown.is_err(), "{unknown:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
