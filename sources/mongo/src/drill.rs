//! Where a drill restores MongoDB sources: a scratch copy of each database,
//! `<db><suffix>`, on the server `--mongo-uri` names (else the one the
//! snapshot was dumped from, when its URI held no password), created by
//! the drill (never an existing database: `new-databases-only`), counted
//! against the snapshot, and dropped after.

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_core::checks::{Check, ChecksAt, DrillScratch, ScratchEvidence, ScratchRun};
use coffer_core::{RestoreOptions, RestoreOutcome, format::SourceRecord};
use serde_json::{Value, json};

use crate::URI_OPTION;
use crate::checks::{MongoCountsCheck, MongoTarget, counts_of};

/// The scratch databases of one drill, for the sources of one kind.
pub(crate) struct MongoScratch {
    /// The source kind (`mongo`, `mongodump`) whose options it sets.
    kind: String,
    suffix: String,
    /// The drill's sources of this kind, by name.
    sources: Vec<String>,
    /// The server the scratch copies are on, if known: `--mongo-uri`, else
    /// (after the restore) the one the snapshot's origin names.
    uri: Option<String>,
    /// Source database → scratch database, once restored.
    databases: Vec<(String, String)>,
    /// What the scratch databases must hold.
    counts: BTreeMap<String, u64>,
}

impl MongoScratch {
    pub(crate) fn new(run: &ScratchRun<'_>) -> MongoScratch {
        MongoScratch {
            kind: run.kind.to_string(),
            suffix: run.suffix.to_string(),
            sources: run.sources.iter().map(|s| s.name.clone()).collect(),
            uri: run.options.text(URI_OPTION).map(str::to_owned),
            databases: Vec::new(),
            counts: BTreeMap::new(),
        }
    }
}

/// The server of a snapshot's MongoDB source, when its origin names one
/// usable without a password from the bundle.
fn origin_uri(sources: &[SourceRecord]) -> Option<String> {
    sources.iter().find_map(|s| {
        if let Some(var) = s.origin.get("uri-env").and_then(Value::as_str) {
            return std::env::var(var).ok();
        }
        match (
            s.origin.get("uri").and_then(Value::as_str),
            s.origin.get("has-password"),
        ) {
            (Some(uri), Some(Value::Bool(false))) => Some(uri.to_string()),
            _ => None,
        }
    })
}

#[async_trait::async_trait]
impl DrillScratch for MongoScratch {
    fn prepare(&self, opts: &mut RestoreOptions) {
        // Every database `db` to `db<suffix>` (database names hold no `.`,
        // and `*` captures leftmost-shortest). Only into databases that do
        // not exist yet: a drill drops what it restored, so it must never
        // write into (or replace) a database it did not create, such as
        // another team's `app-staging` for `--scratch-suffix=-staging`.
        let kind = &self.kind;
        opts.params.insert(kind, "ns-from", "*.*");
        opts.params.insert(kind, "ns-to", format!("*{}.*", self.suffix));
        opts.params.insert(kind, "new-databases-only", "true");
    }

    fn restored(&mut self, outcome: &RestoreOutcome) {
        let names: Vec<&str> = self.sources.iter().map(String::as_str).collect();
        if self.uri.is_none() {
            let records: Vec<SourceRecord> = outcome
                .summary
                .sources
                .sources
                .iter()
                .filter(|r| names.contains(&r.name.as_str()))
                .cloned()
                .collect();
            self.uri = origin_uri(&records);
        }
        self.counts = counts_of(outcome, &names).unwrap_or_default();
        for db in self
            .counts
            .keys()
            .filter_map(|ns| ns.split_once('.').map(|(d, _)| d))
        {
            if !self.databases.iter().any(|(from, _)| from == db) {
                self.databases
                    .push((db.to_string(), format!("{db}{}", self.suffix)));
            }
        }
    }

    fn checks(&self) -> Vec<Arc<dyn Check>> {
        if self.counts.is_empty() {
            return Vec::new();
        }
        // The scratch databases hold exactly what the snapshot holds.
        vec![Arc::new(MongoCountsCheck {
            target: MongoTarget {
                uri: self.uri.clone(),
                uri_env: None,
            },
            minimums: BTreeMap::new(),
            exact: Some(self.counts.clone()),
        })]
    }

    fn checks_at(&self, at: &mut ChecksAt) {
        at.renamed.extend(self.databases.iter().cloned());
        if let Some(uri) = &self.uri {
            at.params.insert_default(&self.kind, URI_OPTION, uri.clone());
        }
    }

    fn evidence(&self) -> ScratchEvidence {
        let mut e = ScratchEvidence::default();
        e.fields.insert("databases".into(), json!(self.databases));
        e.lines = self
            .databases
            .iter()
            .map(|(from, to)| format!("database `{from}` → `{to}`"))
            .collect();
        e
    }

    async fn cleanup(&self) -> std::result::Result<(), String> {
        if self.databases.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.databases.iter().map(|(_, to)| to.as_str()).collect();
        let Some(uri) = &self.uri else {
            return Err(format!("no server known to drop {}", names.join(", ")));
        };
        let (client, server) = crate::checks::connect(uri).await?;
        for name in names {
            client
                .database(name)
                .drop()
                .await
                .map_err(|e| format!("dropping {name} on {server}: {e}"))?;
        }
        Ok(())
    }
}
