//! Where a drill restores Kubernetes Secrets: a scratch namespace,
//! `coffer-drill-<run>`, on the cluster the snapshot's source talked to;
//! the Secrets the restore wrote there are deleted after.

use coffer_core::checks::{DrillScratch, ScratchEvidence, ScratchRun};
use coffer_core::{RestoreOptions, RestoreOutcome};
use serde_json::{Value, json};

use crate::NAMESPACE_OPTION;

/// The scratch namespace of one drill.
pub(crate) struct K8sScratch {
    namespace: String,
    /// The names of the drill's sources of this kind.
    sources: Vec<String>,
    /// The origin of the first of them (after the restore): its cluster.
    origin: Option<Value>,
    /// The Secrets the restore wrote into the scratch namespace.
    secrets: Vec<String>,
}

impl K8sScratch {
    pub(crate) fn new(run: &ScratchRun<'_>) -> K8sScratch {
        K8sScratch {
            namespace: format!("coffer-drill-{}", run.run),
            sources: run.sources.iter().map(|s| s.name.clone()).collect(),
            origin: None,
            secrets: Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl DrillScratch for K8sScratch {
    fn prepare(&self, opts: &mut RestoreOptions) {
        opts.params
            .insert(crate::KIND, NAMESPACE_OPTION, self.namespace.clone());
    }

    fn restored(&mut self, outcome: &RestoreOutcome) {
        self.origin = outcome
            .summary
            .sources
            .sources
            .iter()
            .find(|r| self.sources.contains(&r.name))
            .map(|r| r.origin.clone());
        let prefix = format!("Secret {}/", self.namespace);
        self.secrets = outcome
            .reports
            .iter()
            .flat_map(|(_, r)| &r.actions)
            .filter(|act| act.action == "create" || act.action == "replace")
            .filter_map(|act| act.target.strip_prefix(&prefix).map(str::to_owned))
            .collect();
    }

    fn evidence(&self) -> ScratchEvidence {
        let mut e = ScratchEvidence::default();
        e.fields.insert("k8s_namespace".into(), json!(self.namespace));
        e.lines = vec![format!("Kubernetes namespace `{}`", self.namespace)];
        e
    }

    async fn cleanup(&self) -> std::result::Result<(), String> {
        let Some(origin) = self.origin.as_ref().filter(|_| !self.secrets.is_empty()) else {
            return Ok(());
        };
        crate::source::delete_restored(origin, &self.namespace, &self.secrets)
            .await
            .map_err(|e| e.to_string())
    }
}
