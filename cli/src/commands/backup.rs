//! `coffer backup`: resolve the job (config + flags), run its hooks, capture
//! the sources into one bundle, fan it out to the sinks, then prune or pin.

use std::path::PathBuf;

use clap::Args;
use coffer_core::ops::BackupReport;
use coffer_core::{BackupRequest, Result, config_error};

use crate::Failure;
use crate::config::Config;
use crate::ctx::{BackupSinks, CmdResult, Ctx, JobFlags, JobPlan, ResolvedJob, run_locked_backup};
use crate::output::{print_json, size};

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
        let name = coffer_core::unique_source_name(&factory.spec_name(rest), &names);
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
    let one_off = !plan.configured;
    let (targets, quorum) = fan_out(
        config.as_ref(),
        &plan.job,
        one_off,
        plan.sinks.clone(),
        &a.sinks_optional,
    )?;
    if a.prune {
        let names: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
        crate::retention::check_backup_prune(config.as_ref(), &plan.job, &names)?;
    }
    let ResolvedJob {
        plan,
        encryption,
        compression,
        signing_key,
    } = plan.resolve(&flags, config.as_ref(), &crate::ctx::new_passphrase)?;
    let time = crate::ctx::snapshot_time(a.time.as_deref())?;
    let format = a
        .format
        .as_deref()
        .map(coffer_core::chunked::SnapshotFormat::parse)
        .transpose()?;
    let sinks = ctx.sink_targets(&targets, config.as_ref(), format)?;
    let dedup_key = ctx
        .dedup_key(&sinks, config.as_ref(), a.dedup_key.as_deref(), &encryption)
        .await?;
    let JobPlan {
        job, sources, tags, ..
    } = plan;
    // Until it succeeds, the run counts as failed.
    let now = jiff::Timestamp::now().as_second() as f64;
    ctx.record.note("job", job.as_str());
    ctx.record
        .metric("coffer_backup_last_run_timestamp_seconds", &[("job", &job)], now);
    ctx.record
        .metric("coffer_backup_last_run_success", &[("job", &job)], 0.0);
    // A configured source that cannot be read (a missing path) names its
    // place in the config file.
    if let Some(cfg) = config.as_ref().filter(|_| !one_off) {
        for s in &sources {
            let name = s.info().name;
            if let Some(place) = cfg.source_places.get(&name) {
                s.check().await.map_err(|e| e.prefix(place))?;
            }
        }
    }
    let threads = crate::ctx::threads();
    let req = BackupRequest {
        job,
        sources,
        sinks,
        encryption,
        compression,
        tags,
        time,
        threads,
        signing_key,
        dedup_key,
        // The config's trusted signers (or its own signing keys): chunks
        // are reused only from snapshots they signed.
        trusted: crate::ctx::trusted_signers(&Default::default(), config.as_ref())?,
    };

    // A job's hooks (cold backups): `before`, then the backup, then
    // `after` whatever happened (see crate::hooks).
    let mut hooks = match (&config, one_off) {
        (Some(cfg), false) => cfg
            .jobs
            .get(&req.job)
            .map(|j| j.hooks())
            .filter(|h| !h.is_empty())
            .map(crate::hooks::HookRun::new),
        _ => None,
    };
    if let Some(h) = hooks.as_mut()
        && let Err(e) = h.before().await
    {
        let _ = h.finish(true).await;
        report_hooks_on_error(ctx, h);
        return Err(e.into());
    }
    let (outcome, secs) = match run_locked_backup(ctx, req, "backup").await {
        Ok(done) => done,
        Err(e) => {
            if let Some(h) = hooks.as_mut() {
                let _ = h.finish(true).await;
                report_hooks_on_error(ctx, h);
            }
            return Err(e.into());
        }
    };
    let after = crate::retention::after_backup(ctx, config.as_ref(), a.keep_forever, a.prune, &outcome).await;
    let stored = outcome.sinks.iter().filter(|s| s.result.is_ok()).count();
    let complete = match quorum {
        Some(q) => stored >= q,
        None => outcome.required_ok(),
    };
    let hooks_done = match hooks.as_mut() {
        Some(h) => h.finish(!complete || after.is_err()).await,
        None => Ok(()),
    };
    record_backup(ctx, config.as_ref(), &outcome, complete, secs).await;

    let mut report = BackupReport::new(&outcome, secs, quorum, complete);
    if let Ok(Some(after)) = &after {
        report.pinned_on = Some(after.pinned.clone());
        report.prune = Some(after.pruned.clone());
    }
    if let Some(h) = &hooks {
        report.hooks = Some(h.reports.iter().map(|r| r.typed()).collect());
        report.health = h.health.as_ref().map(|r| r.typed());
    }
    if ctx.json {
        print_json(&report);
    } else {
        print_text(
            &report,
            after.as_ref().ok().and_then(Option::as_ref),
            hooks.as_ref(),
        );
    }
    if !complete {
        return Err(partial(&report));
    }
    after?;
    hooks_done?;
    Ok(())
}

/// The run's report for a person.
pub(crate) fn print_text(
    report: &BackupReport,
    after: Option<&crate::retention::AfterBackup>,
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
        after.print();
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

/// A sink of a backup run: its name and whether it is required.
type SinkChoice = (String, bool);

/// The sinks of a backup run with whether each is required, and the
/// job's quorum: the run's sinks (`--sink`, else the job's) marked optional
/// by `[sink.X] optional = true` or `--sink-optional X`, then every
/// `--sink-optional` sink not among them.
fn fan_out(
    config: Option<&Config>,
    job: &str,
    one_off: bool,
    names: Vec<String>,
    optional: &[String],
) -> Result<(Vec<SinkChoice>, Option<usize>)> {
    let configured_optional = |n: &str| config.is_some_and(|c| c.sink_optional.contains(n));
    let mut targets: Vec<SinkChoice> = Vec::new();
    for n in names.into_iter().chain(optional.iter().cloned()) {
        if targets.iter().any(|(t, _)| *t == n) {
            continue;
        }
        let required = !configured_optional(&n) && !optional.contains(&n);
        targets.push((n, required));
    }
    let quorum = if one_off {
        None
    } else {
        config.and_then(|c| c.jobs.get(job)).and_then(|j| j.quorum)
    };
    if let Some(q) = quorum
        && q > targets.len()
    {
        return Err(config_error(format!(
            "job `{job}` has quorum = {q}, but this run writes to {} sink(s)",
            targets.len()
        ))
        .with_hint("name more sinks with --sink, or lower the job's quorum"));
    }
    if targets.iter().all(|(_, required)| !required) && quorum.is_none() {
        tracing::info!("every sink is optional: the run succeeds when any one stores the snapshot");
    }
    Ok((targets, quorum))
}

/// The backup's audit notes and metrics (per job and per sink).
async fn record_backup(
    ctx: &Ctx,
    config: Option<&crate::config::Config>,
    outcome: &coffer_core::BackupOutcome,
    complete: bool,
    secs: f64,
) {
    let job = outcome.index.job.as_str();
    let r = &ctx.record;
    r.note("snapshot", outcome.index.id.as_str());
    r.note("bytes_in", outcome.plain_bytes);
    r.note("bytes_out", outcome.index.object.size);
    r.note(
        "sinks",
        serde_json::json!(
            outcome
                .sinks
                .iter()
                .map(|s| serde_json::json!({"sink": s.name, "ok": s.result.is_ok()}))
                .collect::<Vec<_>>()
        ),
    );
    let now = jiff::Timestamp::now().as_second() as f64;
    r.metric("coffer_backup_last_run_timestamp_seconds", &[("job", job)], now);
    r.metric(
        "coffer_backup_last_run_success",
        &[("job", job)],
        if complete { 1.0 } else { 0.0 },
    );
    r.metric("coffer_backup_last_duration_seconds", &[("job", job)], secs);
    r.metric(
        "coffer_backup_last_bytes_in",
        &[("job", job)],
        outcome.plain_bytes as f64,
    );
    let wants_metrics = config.is_some_and(|c| c.metrics_file.is_some());
    for s in outcome.sinks.iter().filter(|s| s.result.is_ok()) {
        let labels = [("job", job), ("sink", s.name.as_str())];
        r.metric("coffer_backup_last_success_timestamp_seconds", &labels, now);
        r.metric(
            "coffer_backup_last_bytes_out",
            &labels,
            outcome.index.object.size as f64,
        );
        if wants_metrics
            && let Ok(sink) = ctx.sink(&s.name, config)
            && let Ok(cat) = coffer_core::Catalog::load(sink.as_ref()).await
        {
            r.metric(
                "coffer_snapshots",
                &[("sink", s.name.as_str())],
                cat.snapshots.len() as f64,
            );
        }
    }
}
