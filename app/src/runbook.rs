//! Importing a backup made by the manual Issuer Directory runbook
//! (`<BACKUP_DIR>.tar.gz.age`) as a coffer snapshot of a job: the archive
//! is read and its SHA256SUMS checked by `coffer-source-runbook` (nothing
//! plaintext on disk), and its sources are backed up to the job's sinks.

use std::path::Path;
use std::sync::Arc;

use coffer_core::{
    Error, ErrorKind, Progress, Result, config_error, keys::Identities, ops::BackupOutcome,
    ops::BackupRequest,
};

use crate::App;
use crate::config::Config;
use crate::job::ResolvedJob;

/// What an import stored.
pub struct Imported {
    /// The new snapshot and each sink's result.
    pub outcome: BackupOutcome,
    /// Wall time of the backup.
    pub seconds: f64,
    /// The SHA256SUMS lines of the archive that were checked.
    pub checked: usize,
}

impl App {
    /// Imports the runbook backup `file` (decrypted with `ids`) as a
    /// snapshot of `job` on the job's sinks (as bundles), timed `time` or
    /// as the archive's name says; phases on `progress`.
    pub async fn import_runbook(
        &self,
        config: Option<&Config>,
        file: &Path,
        ids: Identities,
        job: ResolvedJob,
        time: Option<jiff::Timestamp>,
        progress: Arc<Progress>,
    ) -> Result<Imported> {
        let targets: Vec<(String, bool)> = job.plan.sinks.iter().map(|s| (s.clone(), true)).collect();
        let sinks = self.sink_targets(
            &targets,
            config,
            Some(coffer_core::chunked::SnapshotFormat::Bundle),
        )?;
        let path = file.to_path_buf();
        let file_factory = self.registry.source_factory("file")?.clone();
        let imported = tokio::task::spawn_blocking(move || {
            coffer_source_runbook::read(&path, &ids, file_factory.as_ref())
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("the import task failed: {e}")))??;
        let backup_name = coffer_source_runbook::backup_name(file);
        let time = time
            .or_else(|| coffer_source_runbook::snapshot_time(&imported.archive_name, &backup_name))
            .ok_or_else(|| {
                config_error(format!(
                    "cannot tell the backup's time from `{}` or `{}`",
                    imported.archive_name,
                    file.display()
                ))
                .with_hint("pass --time 2026-11-27T22:15:00Z")
            })?;
        let req = BackupRequest {
            job: job.plan.job,
            sources: imported.sources,
            sinks,
            encryption: job.encryption,
            compression: job.compression,
            tags: job.plan.tags,
            time: Some(time),
            threads: crate::job::threads(),
            signing_key: job.signing_key,
            dedup_key: None,
            trusted: Default::default(),
        };
        let (outcome, seconds) = coffer_core::ops::backup(req, "import-runbook", progress).await?;
        Ok(Imported {
            outcome,
            seconds,
            checked: imported.checked,
        })
    }
}
