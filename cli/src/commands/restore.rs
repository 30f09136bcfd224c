//! `coffer restore`: verify, then restore every source (all or nothing).

use std::path::PathBuf;

use clap::Args;
use coffer_core::ops::{CheckResult, RestoreReport};
use coffer_core::{RestoreOptions, RestoreOutcome, config_error, format::Index as SnapshotIndex};

use crate::Failure;
use crate::checks::failures;
use crate::config::Config;
use crate::ctx::{CmdResult, Ctx, Opened, ReadSel, open_point_in_time, open_snapshot, pitr_target};
use crate::output::{print_json, printable};
use crate::restoring::restore_snapshot;
use coffer_app::restoring::RestoreOf;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest` (not with --to-time/--to-ts,
    /// which choose the base themselves).
    #[arg(required_unless_present_any = ["to_time", "to_ts"], conflicts_with_all = ["to_time", "to_ts"])]
    pub snapshot: Option<String>,
    /// Point in time: restore the job's MongoDB sources as of this time
    /// (RFC 3339; every write of that whole second included), from the
    /// newest snapshot at or before it plus the oplog slices archived by
    /// `coffer oplog follow`. Every slice is checked before anything is
    /// changed.
    #[arg(long, value_name = "TIME", conflicts_with = "to_ts")]
    pub to_time: Option<String>,
    /// Point in time to an exact oplog entry `SECONDS:ORDINAL` (its
    /// Timestamp(t, i); that entry included).
    #[arg(long, value_name = "S:I")]
    pub to_ts: Option<String>,
    /// With --to-time/--to-ts: the job (default: the config's only job).
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    #[command(flatten)]
    pub read: ReadSel,
    /// Put file sources under DIR and env sources into DIR instead of their
    /// original paths.
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Restore only this source (name or kind); repeatable.
    #[arg(long = "only", value_name = "SOURCE")]
    pub only: Vec<String>,
    /// Verify and show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Directory for the verified ciphertext cache (default: temp dir).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A restore option a source plugin declares, `KIND.NAME=VALUE` (or
    /// `KIND.NAME` for a flag), e.g. `--opt mongo.uri=mongodb://…`;
    /// repeatable. `--help` lists them; the plugins' flags (`--mongo-uri`,
    /// `--drop`, `--ns-from` …, `--k8s-namespace`) are aliases made from
    /// their declarations.
    #[arg(long = "opt", value_name = "KIND.NAME=VALUE")]
    pub opts: Vec<String>,
    /// How many of `opts`, at their start, the plugins' flags made (a
    /// flag sets the option of every kind declaring it).
    #[arg(skip)]
    pub from_flags: usize,
    /// Do not run the job's post-restore checks after the restore.
    #[arg(long)]
    pub no_checks: bool,
    /// Restore sources the configuration does not declare to the places
    /// the snapshot recorded (paths, server, namespace) although no trusted
    /// signer signed it. Without it such a restore is refused and the
    /// places are named, since whoever can write to a sink could have
    /// chosen them.
    #[arg(long)]
    pub to_origin: bool,
}

pub(crate) async fn exec(ctx: &Ctx, a: RestoreArgs) -> CmdResult {
    let (opened, replays) = match &a.snapshot {
        Some(spec) => (
            open_snapshot(ctx, &a.read, spec, None, "restore needs a key").await?,
            Vec::new(),
        ),
        None => {
            let target = pitr_target(a.to_time.as_deref(), a.to_ts.as_deref())?;
            let at =
                open_point_in_time(ctx, &a.read, a.job.as_deref(), target, "restore needs a key").await?;
            ctx.record.note("to_ts", at.target.to_string());
            (at.opened, at.replays)
        }
    };
    let mut opened = opened;
    let index = opened.entry.index.clone();
    check_args(&a, &index)?;
    let mut opts = restore_options(ctx, &a)?;
    opts.log_replays = replays;
    let params = opts.params.clone();
    let what = RestoreOf {
        only: &a.only,
        cache_dir: a.cache_dir.as_deref(),
        options: opts,
        origin_places: a.to_origin,
    };
    let outcome = restore_snapshot(ctx, &mut opened, what).await?;
    let Opened {
        config, sink_name, ..
    } = opened;

    ctx.record.note("snapshot", index.id.as_str());
    ctx.record.note("sink", sink_name.as_str());
    ctx.record.note("job", index.job.as_str());
    ctx.record.note("dry_run", a.dry_run);
    if let Some(t) = &a.target {
        ctx.record.note("target", t.display().to_string());
    }
    ctx.record.note(
        "sources",
        outcome.reports.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
    );
    let checks = post_restore_checks(config.as_ref(), &a, &index, &outcome, &params).await;
    let failed = failures(&checks);
    if ctx.json {
        print_json(&RestoreReport::new(
            &outcome,
            &sink_name,
            a.dry_run,
            checks.clone(),
        ));
    } else {
        print_text(ctx, &a, &sink_name, &index, &outcome, &checks);
    }
    if let Some(why) = failed {
        return Err(Failure::Checks(format!(
            "snapshot {} was restored, but {why}",
            index.id
        )));
    }
    Ok(())
}

/// Refuses an `--only` the snapshot has no source for, and a `--target`
/// that is not a directory, before anything is read.
fn check_args(a: &RestoreArgs, index: &SnapshotIndex) -> coffer_core::Result<()> {
    // An option is read by its kind's sources only: one for a kind the
    // snapshot lacks would be ignored without a word.
    for opt in a.opts.iter().skip(a.from_flags) {
        // Named without its value: a connection string may hold a password.
        let named = opt.split('=').next().unwrap_or_default();
        let kind = named.split('.').next().unwrap_or_default();
        if !index.sources.iter().any(|s| s.kind == kind) {
            let kinds: std::collections::BTreeSet<&str> =
                index.sources.iter().map(|s| s.kind.as_str()).collect();
            return Err(config_error(format!(
                "--opt {named}: the snapshot has no `{kind}` source to read it"
            ))
            .with_hint(format!(
                "options are read by the sources of their kind; this snapshot's kinds: {}",
                kinds.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    for only in &a.only {
        if !index.sources.iter().any(|s| &s.name == only || &s.kind == only) {
            let names: Vec<_> = index
                .sources
                .iter()
                .map(|s| format!("{} ({})", s.name, s.kind))
                .collect();
            return Err(
                config_error(format!("--only {only}: the snapshot has no such source"))
                    .with_hint(format!("its sources: {}", names.join(", "))),
            );
        }
    }
    match &a.target {
        Some(t) if t.exists() && !t.is_dir() => Err(config_error(format!(
            "--target {} is not a directory",
            t.display()
        ))),
        _ => Ok(()),
    }
}

/// The job's post-restore checks, after a real restore of the whole
/// snapshot to its own places (none for a dry run, `--no-checks`,
/// `--target` or `--only`).
async fn post_restore_checks(
    config: Option<&Config>,
    a: &RestoreArgs,
    index: &SnapshotIndex,
    outcome: &RestoreOutcome,
    params: &coffer_core::KindOptions,
) -> Vec<CheckResult> {
    let partial = a.dry_run || a.no_checks || a.target.is_some() || !a.only.is_empty();
    match config.filter(|_| !partial) {
        Some(c) => coffer_app::checks::after_restore(c, &index.job, index.created_at, outcome, params).await,
        None => Vec::new(),
    }
}

/// The restore's text output: what changed per source, then the checks.
fn print_text(
    ctx: &Ctx,
    a: &RestoreArgs,
    sink_name: &str,
    index: &SnapshotIndex,
    outcome: &RestoreOutcome,
    checks: &[CheckResult],
) {
    {
        let verb = if a.dry_run { "would restore" } else { "restored" };
        println!(
            "{verb} snapshot {} from {sink_name} ({} files verified against SHA256SUMS)",
            index.id, outcome.summary.files_checked
        );
        for (name, r) in &outcome.reports {
            println!("  source {name}: {}", r.summary);
            // A dry run lists every change; a real restore only when short
            // (or with -v; --json always has them).
            if a.dry_run || r.actions.len() <= 20 || ctx.verbose {
                for act in &r.actions {
                    println!("    {:<11} {}", act.action, printable(&act.target));
                }
            } else {
                println!("    ({} changes; -v or --json lists them)", r.actions.len());
            }
        }
        if a.dry_run {
            println!("dry run: nothing was changed");
        }
        if !checks.is_empty() {
            println!("post-restore checks of job `{}`:", index.job);
            for r in checks {
                println!("  {}", r.line());
            }
        }
    }
}

/// The restore options the flags ask for.
fn restore_options(ctx: &Ctx, a: &RestoreArgs) -> coffer_core::Result<RestoreOptions> {
    let mut opts = RestoreOptions::default();
    opts.target = a.target.clone();
    opts.dry_run = a.dry_run;
    for o in &a.opts {
        ctx.registry.apply_restore_option(o, &mut opts)?;
    }
    Ok(opts)
}
