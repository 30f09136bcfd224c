//! `coffer import-runbook`: turns a backup made by the manual Issuer
//! Directory runbook (`<BACKUP_DIR>.tar.gz.age`) into a normal coffer
//! snapshot ([`coffer_app::App::import_runbook`]); this command resolves
//! the keys and the job from its flags and reports the backup.

use std::path::PathBuf;

use clap::Args;

use crate::ctx::{CmdResult, Ctx, KeySel, SinkSel};

/// `coffer import-runbook FILE.tar.gz.age --identity F --sink S`.
#[derive(Debug, Args)]
pub struct ImportRunbookArgs {
    /// The runbook's encrypted backup, `<BACKUP_DIR>.tar.gz.age`.
    pub file: PathBuf,
    #[command(flatten)]
    pub keys: KeySel,
    #[command(flatten)]
    pub sink: SinkSel,
    /// Job name of the new snapshot.
    #[arg(long, default_value = "issuer-directory")]
    pub job: String,
    /// Public key to encrypt the snapshot to (default: the job's or the
    /// config's recipients); repeatable.
    #[arg(long = "recipient", short = 'r', value_name = "KEY")]
    pub recipients: Vec<String>,
    /// Snapshot time (RFC 3339) instead of the one in the archive's name.
    #[arg(long)]
    pub time: Option<String>,
    /// Tag the snapshot (besides `runbook-import`); repeatable.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// zstd (default), zstd:LEVEL, gzip, gzip:LEVEL, none.
    #[arg(long)]
    pub compression: Option<String>,
}

/// Runs `coffer import-runbook`.
pub(crate) async fn exec(ctx: &Ctx, a: ImportRunbookArgs) -> CmdResult {
    #[cfg(feature = "mongo")]
    {
        imp::run(ctx, a).await
    }
    #[cfg(not(feature = "mongo"))]
    {
        let _ = (ctx, a);
        Err(coffer_core::Error::new(
            coffer_core::ErrorKind::Unsupported,
            "this coffer was built without the MongoDB source",
        )
        .with_hint("build coffer with the `mongo` feature to import runbook backups")
        .into())
    }
}

#[cfg(feature = "mongo")]
mod imp {
    use coffer_core::ops::BackupReport;
    use coffer_core::{Error, config_error};

    use super::ImportRunbookArgs;
    use crate::commands::backup;
    use crate::config::Config;
    use crate::ctx::{CmdResult, Ctx, JobFlags, JobPlan, ResolvedJob};
    use crate::output::print_json;

    pub(super) async fn run(ctx: &Ctx, a: ImportRunbookArgs) -> CmdResult {
        let config = ctx.config()?;
        let file = std::path::absolute(&a.file)
            .map_err(|e| Error::io(format!("cannot resolve {}", a.file.display()), e))?;
        // Everything that can be refused is checked before any decryption.
        let job = resolve_job(&a, config.as_ref())?;
        let forced_time = crate::ctx::snapshot_time(a.time.as_deref())?;
        let ids = crate::ctx::identities(&a.keys)?;
        if ids.is_empty() {
            return Err(config_error("no identity to decrypt the runbook backup")
                .with_hint("pass --identity FILE (the age identity the runbook's `age -r` encrypted to)")
                .into());
        }

        let progress = std::sync::Arc::new(coffer_core::Progress::default());
        let spinner = crate::output::Spinner::start("import-runbook", progress.clone(), ctx.quiet);
        let done = ctx
            .app
            .import_runbook(config.as_ref(), &file, ids, job, forced_time, progress)
            .await;
        spinner.finish();
        let imported = done?;
        let (outcome, secs) = (imported.outcome, imported.seconds);
        let mut report = BackupReport::new(&outcome, secs, None, outcome.required_ok());
        report.imported_from = Some(file.to_string_lossy().into_owned());
        report.sha256sums_checked = Some(imported.checked);
        if ctx.json {
            print_json(&report);
        } else {
            println!(
                "imported {} ({} SHA256SUMS lines ok) as of {}",
                file.display(),
                imported.checked,
                outcome.index.created_at
            );
            backup::print_text(&report, None, None);
        }
        if report.partial {
            return Err(backup::partial(&report));
        }
        Ok(())
    }

    /// The job of the new snapshot: `[job.NAME]` when coffer.toml has it
    /// (its settings apply; its sources do not, the archive brings its
    /// own), else one made of the flags; tagged `runbook-import`.
    fn resolve_job(a: &ImportRunbookArgs, config: Option<&Config>) -> coffer_core::Result<ResolvedJob> {
        let plan = match config.filter(|c| c.jobs.contains_key(&a.job)) {
            Some(cfg) => JobPlan::configured(cfg, Some(&a.job))?,
            None => JobPlan::ad_hoc(a.job.clone(), config),
        };
        let tags: Vec<String> = std::iter::once("runbook-import".to_string())
            .chain(a.tags.iter().cloned())
            .collect();
        let flags = JobFlags {
            sinks: &a.sink.sinks,
            recipients: &a.recipients,
            compression: a.compression.as_deref(),
            tags: &tags,
            ..JobFlags::default()
        };
        let plan = plan.with_flags(&flags);
        if plan.sinks.is_empty() {
            return Err(config_error("no sink given")
                .with_hint("add --sink DIR_OR_URL (or a sink name from coffer.toml)"));
        }
        plan.resolve(&flags, config, &crate::ctx::new_passphrase)
    }
}
