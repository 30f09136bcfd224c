//! Reaching the API server (what its failures mean for a user is in
//! `error.rs`).

use std::path::PathBuf;

use crate::error::{chain, kubeconfig_error};
use coffer_core::{Error, ErrorKind, Result, config_error};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// How to reach the API server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Connection {
    /// An explicit kubeconfig file.
    pub(crate) kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig.
    pub(crate) context: Option<String>,
}

impl Connection {
    /// A client, configured as `kubectl` would be: the explicit kubeconfig,
    /// else `KUBECONFIG` or `~/.kube/config`, else in-cluster.
    pub(crate) async fn client(&self) -> Result<(Client, String)> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(Some(path), &e))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| kubeconfig_error(Some(path), &e))?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| kubeconfig_error(None, &e))?,
            (None, None) => Config::infer().await.map_err(|e| {
                config_error(format!("no Kubernetes configuration found: {}", chain(&e))).with_hint(
                    "set KUBECONFIG or `kubeconfig` in the source, or run in a pod with a service account",
                )
            })?,
        };
        let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
        let client = Client::try_from(config).map_err(|e| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("cannot set up the Kubernetes client: {}", chain(&e)),
            )
            .with_context("server", &server)
            .with_hint("check the kubeconfig's certificate-authority and user credentials")
        })?;
        Ok((client, server))
    }
}
