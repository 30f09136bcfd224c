//! [`K8sSource`]: capture of Kubernetes Secrets.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use coffer_core::{
    Area, CaptureContext, Entry, EntryBody, EntrySender, Error, ErrorKind, RestoreOptions, Restorer, Result,
    Source, SourceFactory, SourceInfo, SourceReport, config_error, toml,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use crate::client::Connection;
use crate::config::{K8sSourceConfig, valid_name};
use crate::error::api_error;
use crate::restore::K8sRestorer;
use crate::sanitize::sanitize;
use crate::{KIND, NAMESPACE_OPTION};

/// Secrets of one namespace, by name or label selector. Holds no secret:
/// credentials stay in the kubeconfig.
#[derive(Debug, Clone)]
pub struct K8sSource {
    name: String,
    config: K8sSourceConfig,
}

impl K8sSource {
    /// A source named `name`; a relative `kubeconfig` is resolved against
    /// `base_dir`.
    pub fn with_config(name: impl Into<String>, config: &K8sSourceConfig, base_dir: &Path) -> Result<Self> {
        let name = name.into();
        config.validate().map_err(|e| e.with_context("source", &name))?;
        let mut config = config.clone();
        config.kubeconfig = config.kubeconfig.map(|k| base_dir.join(k));
        Ok(K8sSource { name, config })
    }

    fn connection(&self) -> Connection {
        Connection {
            kubeconfig: self.config.kubeconfig.clone(),
            context: self.config.context.clone(),
        }
    }

    fn selection(&self) -> String {
        match &self.config.selector {
            Some(s) => format!("{}?selector={s}", self.config.namespace),
            None => format!("{}/{}", self.config.namespace, self.config.names.join(",")),
        }
    }

    /// The selected Secrets as the API returns them, sorted by name.
    async fn fetch(&self) -> Result<Vec<Value>> {
        let (client, server) = self.connection().client().await?;
        let ns = &self.config.namespace;
        let api: Api<Secret> = Api::namespaced(client, ns);
        let mut found = Vec::new();
        match &self.config.selector {
            Some(selector) => {
                let list = api
                    .list(&ListParams::default().labels(selector))
                    .await
                    .map_err(|e| {
                        api_error(
                            e,
                            &format!("list Secrets in {ns} with selector `{selector}`"),
                            &server,
                        )
                    })?;
                if list.items.is_empty() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("no Secret in namespace {ns} matches the selector `{selector}`"),
                    )
                    .with_context("server", &server)
                    .with_hint("check the selector (kubectl get secrets -n NAMESPACE -l SELECTOR)"));
                }
                found.extend(list.items);
            }
            None => {
                for name in &self.config.names {
                    let secret = api
                        .get(name)
                        .await
                        .map_err(|e| api_error(e, &format!("get Secret {ns}/{name}"), &server))?;
                    found.push(secret);
                }
            }
        }
        let mut values = found
            .iter()
            .map(|s| {
                serde_json::to_value(s).map_err(|e| {
                    Error::new(ErrorKind::Unexpected, format!("cannot encode a Secret: {e}"))
                        .with_context("source", &self.name)
                        .set_source(e)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        values.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        Ok(values)
    }
}

/// The key names of a (sanitized) Secret's `data` and `stringData`.
pub(crate) fn key_names(secret: &Value) -> Vec<String> {
    let mut keys: Vec<String> = ["data", "stringData"]
        .iter()
        .filter_map(|f| secret[*f].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[async_trait]
impl Source for K8sSource {
    fn info(&self) -> SourceInfo {
        let mut origin = serde_json::to_value(&self.config).unwrap_or(Value::Null);
        if let Some(k) = &self.config.kubeconfig {
            origin["kubeconfig"] = json!(k.to_string_lossy());
        }
        SourceInfo::new(
            KIND,
            self.name.clone(),
            format!("k8s Secrets {}", self.selection()),
            origin,
        )
    }

    async fn check(&self) -> Result<()> {
        self.fetch().await.map(|_| ())
    }

    async fn capture(&self, ctx: &CaptureContext, out: EntrySender) -> Result<SourceReport> {
        let secrets = self.fetch().await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut details = Vec::new();
        let mut entries = Vec::new();
        for secret in &secrets {
            let clean = sanitize(secret);
            let name = clean["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if !valid_name(&name) {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    "the API server returned a Secret without a valid name",
                )
                .with_context("source", &self.name));
            }
            let keys = key_names(&clean);
            details.push(json!({
                "namespace": self.config.namespace,
                "name": name,
                "type": clean["type"],
                "keys": keys,
            }));
            let mut body = serde_json::to_vec_pretty(&clean).expect("json");
            body.push(b'\n');
            entries.push((
                format!(
                    "{}/{}.json",
                    self.config.namespace,
                    crate::config::file_stem(&name)
                ),
                body,
            ));
        }
        ctx.report_size(entries.iter().map(|(_, b)| b.len() as u64).sum());
        let key_count: usize = details
            .iter()
            .map(|d| d["keys"].as_array().map_or(0, Vec::len))
            .sum();
        for (path, body) in entries {
            out.send(Entry {
                area: Area::Secrets,
                path,
                mode: 0o600,
                mtime: now,
                owner: None,
                stat: None,
                body: EntryBody::File {
                    size: body.len() as u64,
                    reader: Box::new(Cursor::new(body)),
                },
            })
            .await?;
        }
        let n = details.len();
        Ok(SourceReport {
            position: None,
            summary: format!(
                "{n} Secret{} ({key_count} key{}) from namespace {}",
                if n == 1 { "" } else { "s" },
                if key_count == 1 { "" } else { "s" },
                self.config.namespace
            ),
            details: json!({ "secrets": details }),
        })
    }

    async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        let namespace = opts.text(NAMESPACE_OPTION).map(str::to_string);
        if let Some(ns) = &namespace
            && !valid_name(ns)
        {
            return Err(config_error(format!("`{ns}` is not a Kubernetes namespace name"))
                .with_hint("give --k8s-namespace a lower-case name such as issuer-directory-drill"));
        }
        let restorer = K8sRestorer::new(
            self.name.clone(),
            self.config.namespace.clone(),
            self.connection(),
            namespace,
            opts,
        )
        .await?;
        Ok(Box::new(restorer))
    }
}

/// Registers [`K8sSource`] under [`KIND`].
pub(crate) struct K8sSourceFactory;

impl SourceFactory for K8sSourceFactory {
    /// `--k8s-namespace` names the namespace; `--target` alone writes
    /// manifests into a directory instead of a cluster.
    fn place_given(&self, opts: &RestoreOptions) -> bool {
        opts.target.is_some() || opts.text(NAMESPACE_OPTION).is_some()
    }

    fn restore_options(&self) -> Vec<coffer_core::RestoreOptionSpec> {
        vec![coffer_core::RestoreOptionSpec {
            name: NAMESPACE_OPTION,
            kind: coffer_core::OptionKind::Text,
            help: "restore every Secret into this namespace instead of its own",
            alias: Some("--k8s-namespace"),
            env: None,
        }]
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn from_config(&self, name: &str, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Source>> {
        let config = K8sSourceConfig::from_table(table)?;
        Ok(Arc::new(K8sSource::with_config(name, &config, base_dir)?))
    }

    fn from_spec(&self, name: &str, spec: &str) -> Result<Arc<dyn Source>> {
        let config = parse_spec(spec)?;
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Ok(Arc::new(K8sSource::with_config(name, &config, &cwd)?))
    }

    /// A scratch namespace, `coffer-drill-<run>`, whose Secrets are
    /// deleted after.
    fn drill_scratch(
        &self,
        run: &coffer_core::checks::ScratchRun<'_>,
    ) -> Result<Option<Box<dyn coffer_core::checks::DrillScratch>>> {
        Ok(Some(Box::new(crate::drill::K8sScratch::new(run))))
    }

    fn from_origin(&self, name: &str, origin: &Value) -> Result<Arc<dyn Source>> {
        let config: K8sSourceConfig = coffer_core::parse_origin(KIND, name, origin)?;
        Ok(Arc::new(K8sSource::with_config(name, &config, Path::new("/"))?))
    }
}

/// `NAMESPACE/NAME` or `NAMESPACE?selector=SEL`, either with
/// `[?&]context=CTX`.
fn parse_spec(spec: &str) -> Result<K8sSourceConfig> {
    let hint = "write k8s:NAMESPACE/NAME or 'k8s:NAMESPACE?selector=app=x' (quote it for the shell)";
    let (path, query) = spec.split_once('?').unwrap_or((spec, ""));
    let mut config = K8sSourceConfig {
        namespace: String::new(),
        names: Vec::new(),
        selector: None,
        kubeconfig: None,
        context: None,
    };
    match path.split_once('/') {
        Some((ns, name)) => {
            config.namespace = ns.to_string();
            config.names = vec![name.to_string()];
        }
        None => config.namespace = path.to_string(),
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("selector", v)) => config.selector = Some(v.to_string()),
            Some(("context", v)) => config.context = Some(v.to_string()),
            _ => {
                return Err(config_error(format!("unknown option `{pair}` in k8s:{spec}"))
                    .with_hint("options are selector=… and context=…"));
            }
        }
    }
    config.validate().map_err(|e| e.with_hint(hint))?;
    Ok(config)
}

/// Deletes the Secrets `names` of `namespace` on the cluster the source
/// with `origin` (from a bundle) talks to: a drill's scratch copies.
/// Missing ones are fine.
pub(crate) async fn delete_restored(origin: &Value, namespace: &str, names: &[String]) -> Result<()> {
    let config: K8sSourceConfig = serde_json::from_value(origin.clone()).map_err(|_| {
        Error::new(
            ErrorKind::Integrity,
            "the bundle's origin of a `k8s` source is malformed",
        )
    })?;
    let connection = Connection {
        kubeconfig: config.kubeconfig,
        context: config.context,
    };
    let (client, server) = connection.client().await?;
    let api: Api<Secret> = Api::namespaced(client, namespace);
    for name in names {
        match api.delete(name, &kube::api::DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(api_error(
                    e,
                    &format!("delete Secret {namespace}/{name}"),
                    &server,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let c = parse_spec("app/db-secrets").unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.names.clone()),
            ("app", vec!["db-secrets".to_string()])
        );
        let c = parse_spec("app?selector=app=issuer-directory,tier!=cache&context=prod").unwrap();
        assert_eq!(c.selector.as_deref(), Some("app=issuer-directory,tier!=cache"));
        assert_eq!(c.context.as_deref(), Some("prod"));
        for bad in [
            "app",
            "app/",
            "/x",
            "App/x",
            "app/x?selector=a=b",
            "app?color=red",
        ] {
            assert_eq!(
                parse_spec(bad).unwrap_err().kind(),
                ErrorKind::ConfigInvalid,
                "{bad}"
            );
        }
    }
}
