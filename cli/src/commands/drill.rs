//! `coffer drill [SNAPSHOT]`: rehearse a restore ([`coffer_app::App::drill`]):
//! the arguments become a [`DrillRequest`], the outcome text or JSON, and
//! `--report DIR` a copy of the evidence.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use coffer_app::drill::{DrillOutcome, DrillRequest};
use coffer_core::{Error, RestoreOptions};

use crate::Failure;
use crate::ctx::{CmdResult, Ctx, ReadSel, open_point_in_time, open_snapshot, pitr_target};
use crate::evidence::{DrillOutput, DrillReport};
use crate::output::{Spinner, print_json};

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Snapshot id, unique prefix, or `latest` (default: latest).
    #[arg(conflicts_with_all = ["to_time", "to_ts"])]
    pub snapshot: Option<String>,
    /// Rehearse a point-in-time restore: the job's newest snapshot at or
    /// before TIME (RFC 3339, the whole second included) plus its archived
    /// oplog slices, as `restore --to-time` does.
    #[arg(long, value_name = "TIME", conflicts_with = "to_ts")]
    pub to_time: Option<String>,
    /// As --to-time, to an exact oplog entry `SECONDS:ORDINAL`.
    #[arg(long, value_name = "S:I")]
    pub to_ts: Option<String>,
    #[command(flatten)]
    pub read: ReadSel,
    /// The plugins' connection options (`--mongo-uri`: the server the
    /// scratch databases go to; default: the one the snapshot was taken
    /// from, if its URI held no password), made from their declarations
    /// as `KIND.NAME=VALUE`.
    #[arg(skip)]
    pub opts: Vec<String>,
    /// Appended to each database name to make its scratch copy (default
    /// `-drill-`, the snapshot's random part and this run's). Never empty,
    /// and a scratch database that exists already is refused: a drill only
    /// writes, and drops, databases it created.
    #[arg(long, value_name = "SUFFIX")]
    pub scratch_suffix: Option<String>,
    /// The job whose checks run (default: the snapshot's job).
    #[arg(long)]
    pub job: Option<String>,
    /// Rehearse only this source of the snapshot (name or kind);
    /// repeatable. The report names the sources left out, and a partial
    /// drill never counts as the last passed drill (`coffer drills`, the
    /// `coffer_drill_last_passed` metric).
    #[arg(long = "only", value_name = "SOURCE")]
    pub only: Vec<String>,
    /// Keep the scratch targets (directory, databases, namespace) for a
    /// look; they are listed in the report.
    #[arg(long)]
    pub keep: bool,
    /// Also write the report (`<drill>.json`, `<drill>.md`) into DIR.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Directory for the verified ciphertext cache (default: temp dir).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}
pub(crate) async fn exec(ctx: &Ctx, a: DrillArgs) -> CmdResult {
    let started_at = jiff::Timestamp::now();
    let spec = a.snapshot.clone().unwrap_or_else(|| "latest".into());
    let needs_key = "a drill needs a key (the one a real restore would use: the drill proves it works)";
    let (opened, replays, to_ts) = if a.to_time.is_some() || a.to_ts.is_some() {
        let target = pitr_target(a.to_time.as_deref(), a.to_ts.as_deref())?;
        let at = open_point_in_time(ctx, &a.read, a.job.as_deref(), target, needs_key).await?;
        (at.opened, at.replays, Some(target))
    } else {
        (
            open_snapshot(ctx, &a.read, &spec, a.job.as_deref(), needs_key).await?,
            Vec::new(),
            None,
        )
    };
    if !ctx.quiet {
        eprintln!(
            "drill: restoring snapshot {} from {} into scratch targets",
            opened.entry.index.id, opened.sink_name
        );
    }
    let mut options = RestoreOptions::default();
    for o in &a.opts {
        ctx.registry.apply_restore_option(o, &mut options)?;
    }
    let sink_name = opened.sink_name.clone();
    let req = DrillRequest {
        started_at,
        opened,
        replays,
        to_ts,
        options,
        scratch_suffix: a.scratch_suffix.clone(),
        job: a.job.clone(),
        only: a.only.clone(),
        keep: a.keep,
        cache_dir: a.cache_dir.clone(),
    };
    let progress = Arc::new(coffer_core::Progress::default());
    let spinner = Spinner::start("restore", progress.clone(), ctx.quiet);
    let outcome = ctx.app.drill(req, progress).await;
    spinner.finish();
    let outcome = outcome?;
    if let Some(dir) = &a.report {
        outcome.report.write_to(dir)?;
    }
    print(ctx, &outcome.report, outcome.stored.as_ref().err());
    verdict(outcome, &sink_name)
}

/// The exit of a drill: the evidence not stored, the restore's error, or
/// the failed checks.
fn verdict(outcome: DrillOutcome, sink_name: &str) -> CmdResult {
    let why = outcome.failures();
    let DrillOutcome {
        report,
        stored,
        restore_error,
    } = outcome;
    stored.map_err(|e| {
        e.prefix(format!(
            "the drill's report could not be stored on sink `{sink_name}`"
        ))
    })?;
    if let Some(e) = restore_error {
        return Err(e.into());
    }
    match why {
        None => Ok(()),
        Some(why) => Err(Failure::Checks(format!(
            "drill of snapshot {} failed: {why}",
            report.snapshot
        ))),
    }
}

fn print(ctx: &Ctx, report: &DrillReport, store_error: Option<&Error>) {
    if ctx.json {
        print_json(&DrillOutput {
            report: report.clone(),
            stored: store_error.is_none(),
        });
        return;
    }
    println!("drill {}: {}", report.drill, report.verdict());
    println!(
        "  snapshot {} (job {}, {}), RTO {:.1} s (restore {:.1} s), RPO {:.0} s",
        report.snapshot,
        report.job,
        report.signature,
        report.rto_seconds,
        report.restore_seconds,
        report.rpo_seconds
    );
    for c in &report.checks {
        println!("  {}", c.line());
    }
    match (&report.scratch.cleanup_error, report.scratch.kept) {
        (Some(e), _) => println!("  scratch targets: removing them failed: {e}"),
        (None, true) => println!("  scratch targets kept: {}", report.scratch.dir),
        (None, false) => println!("  scratch targets removed"),
    }
    if store_error.is_none() {
        println!(
            "  evidence: drills/{}.json and .md on sink {}",
            report.drill, report.sink
        );
    }
}
