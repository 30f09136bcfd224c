//! The `k8s` source passes coffer's source conformance kit against the
//! stand-in API server (`coffer_e2e::k8s`, which follows the real API's
//! paths and JSON: no Kubernetes API server can be installed here): a dry
//! run and an aborted restore leave the target namespace empty, and a
//! committed restore leaves it holding exactly the captured Secrets.

use std::collections::BTreeMap;

use async_trait::async_trait;
use coffer_core::testkit::{CapturedEntry, RestoreObserver, source_suite_with};
use coffer_core::{Registry, RestoreOptions, toml};
use coffer_e2e::k8s::{ADMIN_TOKEN, K8sServer};
use serde_json::{Value, json};

/// Restores into the namespace `into` of `server`, and reads its Secrets
/// back as their name → type and data.
struct NamespaceObserver<'a> {
    server: &'a K8sServer,
    into: &'static str,
}

/// What a restore must bring back of a Secret: its type and data.
fn essence(secret: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "type": secret["type"], "data": secret["data"] })).expect("json")
}

#[async_trait]
impl RestoreObserver for NamespaceObserver<'_> {
    fn options(&self, dry_run: bool) -> RestoreOptions {
        let mut opts = RestoreOptions::default();
        opts.dry_run = dry_run;
        opts.params.insert(
            coffer_source_k8s::KIND,
            coffer_source_k8s::NAMESPACE_OPTION,
            self.into,
        );
        opts
    }

    async fn observe(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        Ok(self
            .server
            .names(self.into)
            .into_iter()
            .map(|name| {
                let secret = self.server.get(self.into, &name).expect("listed");
                (name, essence(&secret))
            })
            .collect())
    }

    fn expected(&self, entries: &[CapturedEntry]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|e| {
                let secret: Value = serde_json::from_slice(&e.data).expect("a captured Secret is JSON");
                let name = secret["metadata"]["name"].as_str().expect("named").to_string();
                (name, essence(&secret))
            })
            .collect()
    }

    /// Each capture is stamped with its own time.
    fn stable_mtimes(&self) -> bool {
        false
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_k8s_source_passes_the_source_conformance_kit() {
    let server = K8sServer::start();
    for (name, value) in [("db", "c2VjcmV0"), ("tls", "Y2VydA==")] {
        server.put(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": "app", "labels": {"app": "x"}},
            "data": {"value": value}
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path(), "kubeconfig", ADMIN_TOKEN);
    let mut registry = Registry::new();
    coffer_source_k8s::register(&mut registry);
    let table: toml::Table = toml::from_str(&format!(
        "namespace = \"app\"\nselector = \"app=x\"\nkubeconfig = \"{}\"\n",
        kubeconfig.display()
    ))
    .unwrap();
    let source = registry
        .source_from_config(coffer_source_k8s::KIND, "secrets", table, dir.path())
        .unwrap();
    let observer = NamespaceObserver {
        server: &server,
        into: "app-restored",
    };
    let entries = source_suite_with(source.as_ref(), &observer).await;
    assert_eq!(entries.len(), 2);
    // The source's own namespace was only read.
    assert_eq!(server.names("app"), ["db", "tls"]);
}
