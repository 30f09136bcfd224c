//! `coffer backup`: resolve the job (config + flags), run its hooks, capture
//! the sources into one bundle, fan it out to the sinks, then prune or pin.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use coffer_app::backup::{BackupFailed, JobBackup, fan_out};
use coffer_core::ops::BackupReport;
use coffer_core::{Progress, config_error};

use crate::Failure;
use crate::config::Config;
use crate::ctx::{BackupSinks, CmdResult, Ctx, JobFlags, JobPlan};
use crate::output::{Spinner, print_json, size};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Job from the config (default: its only job).
    pub job: Option<String>,
    /// One-off source: file:PATH, 'env:PATH#GLOB[,GLOB…]'; repeatable.
    #[arg(long = "source", value_name = "KIND:SPEC")]
    pub sources: Vec<String>,
    #[command(flatten)]
    pub sink: BackupSinks,
    /// An optional sink (name, directory or URL): written like the others,
    /// but its failure never makes the run partial (exit 4). Names one of
    /// the job's sinks to mark it optional, or adds one; repeatable.
    #[arg(long = "sink-optional", value_name = "SINK")]
    pub sinks_optional: Vec<String>,
    /// Public key to encrypt to (age1…, ssh-ed25519 …, ssh-rsa …); repeatable.
    #[arg(long = "recipient", short = 'r', value_name = "KEY")]
    pub recipients: Vec<String>,
    /// Encrypt with a passphrase instead of recipients (removable media).
    #[arg(long)]
    pub passphrase: bool,
    /// Read the passphrase from FILE.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Job name for a one-off run (default `one-off`).
    #[arg(long)]
    pub name: Option<String>,
    /// zstd (default), zstd:LEVEL, gzip, gzip:LEVEL, none.
    #[arg(long)]
    pub compression: Option<String>,
    /// Tag the snapshot; repeatable.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Record this RFC 3339 time as the snapshot time instead of now.
    #[arg(long)]
    pub time: Option<String>,
    /// After the backup, apply the retention policy (as `coffer prune`) on
    /// each sink that stored the snapshot.
    #[arg(long)]
    pub prune: bool,
    /// Pin the new snapshot: no retention policy ever deletes it.
    #[arg(long)]
    pub keep_forever: bool,
    /// Sign the snapshot's index with this key (coffer signing key or
    /// OpenSSH ed25519 private key); overrides `signing-key`.
    #[arg(long, value_name = "FILE", env = "COFFER_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<PathBuf>,
    /// Store this snapshot as `chunked` (deduplicated chunks) or `bundle`
    /// (one object) on every sink of the run, whatever the sinks'
    /// `format` says.
    #[arg(long, value_name = "FORMAT", value_parser = ["chunked", "bundle"])]
    pub format: Option<String>,
    /// This host's dedup key for chunked sinks (made there on first use,
    /// mode 0600; it keys chunk addresses and cannot decrypt). Default:
    /// the sinks' `dedup-key`, else ~/.config/coffer/dedup.key.
    #[arg(long, value_name = "FILE", env = "COFFER_DEDUP_KEY", hide_env_values = true)]
    pub dedup_key: Option<PathBuf>,
}

/// The job to run: `[job.NAME]`, or one made of `--source` flags.
fn plan(ctx: &Ctx, a: &BackupArgs, config: Option<&Config>) -> coffer_core::Result<JobPlan> {
    if a.sources.is_empty() {
        let Some(cfg) = config else {
            return Err(config_error("nothing to back up: no --source given and no coffer.toml here")
                .with_hint("pass --source KIND:SPEC --sink DIR --recipient KEY, or --config FILE (see `coffer init`)"));
        };
        return JobPlan::configured(cfg, a.job.as_deref());
    }
    if a.job.is_some() {
        return Err(config_error("give either a JOB or --source flags, not both"));
    }
    if a.sink.sinks.is_empty() && a.sinks_optional.is_empty() {
        return Err(config_error("no sink given").with_hint("add --sink DIR_OR_URL"));
    }
    let mut plan = JobPlan::ad_hoc(a.name.clone().unwrap_or_else(|| "one-off".into()), None);
    let mut names = Vec::new();
    for spec in &a.sources {
        let (factory, rest) = ctx.registry.source_spec(spec)?;
        let name = coffer_core::format::unique_source_name(&factory.spec_name(rest), &names);
        plan.sources.push(
            factory
                .from_spec(&name, rest)
                .map_err(|e| e.prefix(format!("--source {spec}")))?,
        );
        names.push(name);
    }
    Ok(plan)
}

pub(crate) async fn exec(ctx: &Ctx, a: BackupArgs) -> CmdResult {
    let config = ctx.config()?;
    let flags = JobFlags {
        sinks: &a.sink.sinks,
        recipients: &a.recipients,
        compression: a.compression.as_deref(),
        tags: &a.tags,
        passphrase: a.passphrase,
        passphrase_file: a.passphrase_file.as_deref(),
        signing_key: a.signing_key.as_deref(),
    };
    let plan = plan(ctx, &a, config.as_ref())?.with_flags(&flags);
    let (sinks, quorum) = fan_out(
        config.as_ref(),
        &plan.job,
        !plan.configured,
        plan.sinks.clone(),
        &a.sinks_optional,
    )?;
    if a.prune {
        let names: Vec<String> = sinks.iter().map(|(n, _)| n.clone()).collect();
        coffer_app::retention::check_backup_prune(config.as_ref(), &plan.job, &names)?;
    }
    let req = JobBackup {
        job: plan.resolve(&flags, config.as_ref(), &crate::ctx::new_passphrase)?,
        sinks,
        quorum,
        format: a
            .format
            .as_deref()
            .map(coffer_core::chunked::SnapshotFormat::parse)
            .transpose()?,
        dedup_key: a.dedup_key.clone(),
        time: crate::ctx::snapshot_time(a.time.as_deref())?,
        keep_forever: a.keep_forever,
        prune: a.prune,
    };
    let progress = Arc::new(Progress::default());
    let spinner = Spinner::start("backup", progress.clone(), ctx.quiet);
    let run = ctx.app.backup(config.as_ref(), req, progress).await;
    spinner.finish();
    let run = match run {
        Ok(run) => run,
        Err(BackupFailed { error, hooks }) => {
            if let Some(h) = &hooks {
                report_hooks_on_error(ctx, h);
            }
            return Err(error.into());
        }
    };
    let report = run.report();
    if ctx.json {
        print_json(&report);
    } else {
        print_text(
            &report,
            run.after.as_ref().ok().and_then(Option::as_ref),
            run.hooks.as_ref(),
        );
    }
    if !run.complete {
        return Err(partial(&report));
    }
    run.after?;
    run.hooks_done?;
    Ok(())
}

/// The run's report for a person.
pub(crate) fn print_text(
    report: &BackupReport,
    after: Option<&coffer_app::retention::AfterBackup>,
    hooks: Option<&crate::hooks::HookRun>,
) {
    match &report.chunks {
        None => println!(
            "snapshot {} (job {}): {} files, {} → {} encrypted in {:.1}s",
            report.id,
            report.job,
            report.entries,
            size(report.plain_bytes),
            size(report.object.size),
            report.seconds
        ),
        Some(c) => println!(
            "snapshot {} (job {}): {} files, {} → {} in {} chunks, {} new ({} chunks) in {:.1}s",
            report.id,
            report.job,
            report.entries,
            size(report.plain_bytes),
            size(c.stored_bytes),
            c.chunks,
            size(c.new_bytes),
            c.new_chunks,
            report.seconds
        ),
    }
    for s in &report.sources {
        println!("  source {} ({}): {}", s.name, s.kind, s.summary);
    }
    for s in &report.sinks {
        let optional = if s.required { "" } else { " (optional)" };
        match &s.error {
            None => println!("  sink {} ({}){optional}: ok", s.name, s.location),
            Some(e) => {
                println!("  sink {} ({}){optional}: FAILED: {e}", s.name, s.location);
                if let Some(h) = &s.hint {
                    println!("    hint: {h}");
                }
            }
        }
    }
    if let Some(q) = report.quorum {
        println!(
            "  quorum: stored on {} of {} sinks, {q} required",
            report.stored_on,
            report.sinks.len()
        );
    } else if report.sinks.iter().any(|s| s.optional && !s.ok) && !report.partial {
        println!("  optional sinks failed; every required sink holds the snapshot");
    }
    if let Some(after) = after {
        crate::retention::print_after(after);
    }
    for r in hooks.iter().flat_map(|h| &h.reports) {
        println!("  {}", r.line());
    }
    if let Some(health) = hooks.and_then(|h| h.health.as_ref()) {
        println!("  {}", health.line());
    }
}

/// Exit 4: the snapshot is short of its required sinks or its quorum.
pub(crate) fn partial(report: &BackupReport) -> Failure {
    let failed: Vec<_> = report
        .sinks
        .iter()
        .filter(|s| (s.required || report.quorum.is_some()) && !s.ok)
        .map(|s| s.name.as_str())
        .collect();
    Failure::Partial(match report.quorum {
        Some(q) => format!(
            "snapshot {} was stored on {} of {} sinks, short of the quorum of {q}; failed: {}",
            report.id,
            report.stored_on,
            report.sinks.len(),
            failed.join(", ")
        ),
        None => format!(
            "snapshot {} was written, but required sink(s) failed: {}",
            report.id,
            failed.join(", ")
        ),
    })
}

/// The hooks of a run that failed before its report: on stderr (stdout
/// carries no JSON then).
fn report_hooks_on_error(ctx: &Ctx, hooks: &crate::hooks::HookRun) {
    for r in &hooks.reports {
        if ctx.json {
            eprintln!("{}", serde_json::to_string(&r.typed()).expect("json"));
        } else {
            eprintln!("{}", r.line());
        }
    }
    if let Some(h) = &hooks.health {
        if ctx.json {
            eprintln!("{}", serde_json::to_string(&h.typed()).expect("json"));
        } else {
            eprintln!("{}", h.line());
        }
    }
}
