//! `coffer drill [SNAPSHOT]`: rehearse a restore. The snapshot is verified
//! and restored into scratch targets: a temporary directory, one folder
//! per source, for files, `.env` secrets and command outputs, and for a
//! source kind that declares a scratch place of its own
//! ([`coffer_core::SourceFactory::drill_scratch`]) that place (MongoDB:
//! databases `<db><suffix>`, never the source databases; Kubernetes: a
//! scratch namespace). The kinds' own checks and the job's post-restore
//! checks run against them, RTO and RPO are measured, the scratch targets
//! are removed (unless `--keep`), and the evidence (JSON and Markdown) is
//! appended to the drill history on the sink (`coffer drills` lists it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use coffer_core::checks::{Check, CheckEnv, ChecksAt, DrillScratch, ScratchRun, check_result as result};
use coffer_core::{Error, Registry, RestoreOptions, config_error};
use serde_json::Value;

use crate::Failure;
use crate::checks::{CheckResult, failures, run_checks};
use crate::config::Config;
use crate::ctx::{CmdResult, Ctx, ReadSel, open_point_in_time, open_snapshot, pitr_target};
use crate::evidence::{DRILL_FORMAT, DrillOutput, DrillReport, Scratch};
use crate::output::print_json;
use crate::restoring::restore_snapshot;

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
    /// The MongoDB server to restore the scratch databases into (default:
    /// the one the snapshot was taken from, if its URI held no password).
    #[arg(long, value_name = "URI", env = "COFFER_MONGO_URI", hide_env_values = true)]
    pub mongo_uri: Option<String>,
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

/// The scratch targets of one drill.
struct Targets {
    /// `None` in the copy a [`SignalCleanup`] holds (the temp dir removes
    /// itself when dropped).
    dir: Option<tempfile::TempDir>,
    /// The scratch places of the source kinds that have their own.
    places: Vec<Arc<dyn DrillScratch>>,
}

impl Targets {
    /// The scratch targets of a drill of `index`'s sources picked by
    /// `--only`: a temp dir, and each kind's own scratch place, given the
    /// database suffix (never empty: a drill never writes a source
    /// database) and the restore options the user gave.
    fn new(
        a: &DrillArgs,
        index: &coffer_core::Index,
        registry: &Registry,
        options: &RestoreOptions,
    ) -> coffer_core::Result<Targets> {
        let short = index.id.as_str().rsplit('-').next().unwrap_or("x").to_string();
        // Two drills of one snapshot at once get different scratch names.
        let run = format!("{short}-{:04x}", rand::random::<u16>());
        let suffix = a
            .scratch_suffix
            .clone()
            .unwrap_or_else(|| format!("-drill-{run}"));
        if suffix.is_empty() || suffix.contains(['.', '/', '\\', ' ', '"', '$', '\0']) {
            return Err(config_error(format!(
                "--scratch-suffix `{suffix}` cannot make a scratch database"
            ))
            .with_hint(
                "a drill never writes into a source database: give a non-empty suffix without . / \\ space \" $",
            ));
        }
        let mut by_kind: BTreeMap<&str, Vec<coffer_core::IndexSource>> = BTreeMap::new();
        for s in index
            .sources
            .iter()
            .filter(|s| a.only.is_empty() || a.only.iter().any(|o| *o == s.name || *o == s.kind))
        {
            by_kind.entry(s.kind.as_str()).or_default().push(s.clone());
        }
        let mut places = Vec::new();
        for (kind, sources) in by_kind {
            let run = ScratchRun {
                run: &run,
                suffix: &suffix,
                sources: &sources,
                options,
            };
            if let Some(place) = registry.source_factory(kind)?.drill_scratch(&run)? {
                places.push(Arc::from(place));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("coffer-drill-{short}-"))
            .tempdir()
            .map_err(|e| Error::io("cannot make the drill's scratch directory", e))?;
        Ok(Targets {
            dir: Some(dir),
            places,
        })
    }

    /// After the restore: each place notes what it made.
    fn restored(&mut self, outcome: &coffer_core::RestoreOutcome) {
        for place in &mut self.places {
            Arc::get_mut(place)
                .expect("the scratch places are shared only once restored")
                .restored(outcome);
        }
    }
}

/// Removes a drill's scratch places when the drill is dropped part-way (a
/// signal ends the run while the checks run), on a thread of its own, and
/// says on stderr what it removed or could not.
#[derive(Default)]
struct SignalCleanup {
    armed: Option<Targets>,
}

impl SignalCleanup {
    fn arm(a: &DrillArgs, t: &Targets) -> SignalCleanup {
        if a.keep {
            return SignalCleanup::default();
        }
        SignalCleanup {
            armed: Some(Targets {
                dir: None,
                places: t.places.clone(),
            }),
        }
    }

    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for SignalCleanup {
    fn drop(&mut self) {
        let Some(t) = self.armed.take() else { return };
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            Some(rt.block_on(cleanup(false, t)))
        })
        .join();
        match done {
            Ok(Some(s)) => match s.cleanup_error {
                None => eprintln!("drill interrupted: its scratch targets were removed"),
                Some(e) => eprintln!("drill interrupted: removing its scratch targets failed: {e}"),
            },
            _ => eprintln!("drill interrupted: its scratch targets could not be removed; drop them by hand"),
        }
    }
}

/// What the restore and the checks of a drill found.
struct Findings {
    checks: Vec<CheckResult>,
    plain_bytes: u64,
    files: usize,
    restore_error: Option<Error>,
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
    let slices = to_ts.map(|_| replays.iter().map(|r| r.slices).sum::<usize>());
    let index = opened.entry.index.clone();
    let left_out = left_out(&a.only, &index)?;
    let user_options = user_options(&a);
    let mut targets = Targets::new(&a, &index, &ctx.registry, &user_options)?;
    if !ctx.quiet {
        eprintln!(
            "drill: restoring snapshot {} from {} into scratch targets",
            index.id, opened.sink_name
        );
    }
    let restore_started = Instant::now();
    let restored = restore_snapshot(
        ctx,
        opened.config.as_ref(),
        opened.sink.as_ref(),
        &opened.admitted,
        opened.ids,
        &a.only,
        a.cache_dir.as_deref(),
        {
            let mut opts = options(&user_options, &targets);
            opts.log_replays = replays;
            opts
        },
        // Scratch places only: a temp directory, new scratch databases and
        // a scratch namespace (a server or cluster the origin names gets
        // only databases and Secrets the drill creates and removes).
        true,
    )
    .await;
    let restore_seconds = restore_started.elapsed().as_secs_f64();
    let checks_started = Instant::now();
    let mut guard = SignalCleanup::default();
    let found = match restored {
        Ok(outcome) => {
            let config = opened.config.as_ref();
            targets.restored(&outcome);
            // From here the scratch targets exist: a signal that drops this
            // future (SIGTERM, SIGHUP, Ctrl-C) still removes them.
            guard = SignalCleanup::arm(&a, &targets);
            let at = Restored {
                index: &index,
                outcome,
                targets: &targets,
                params: &user_options.params,
                restore_seconds,
            };
            check_restored(&a, config, at).await
        }
        Err(e) => {
            let mut failed = result("restore", index.id.to_string(), false, e.to_string(), e.hint());
            failed.seconds = round(restore_seconds);
            Findings {
                checks: vec![failed],
                plain_bytes: 0,
                files: 0,
                restore_error: Some(e),
            }
        }
    };
    let checks_seconds = checks_started.elapsed().as_secs_f64();
    guard.disarm();
    let scratch = cleanup(a.keep, targets).await;
    let mut checks = found.checks;
    // A drill that leaves scratch targets behind did not pass: they may
    // hold secrets, and the next drill's numbers would be skewed.
    if let Some(e) = &scratch.cleanup_error {
        checks.push(result(
            "cleanup",
            "scratch targets".into(),
            false,
            format!("removing them failed: {e}"),
            Some("remove what is named here by hand (scratch databases, namespace, directory)"),
        ));
    }
    let passed = failures(&checks).is_none();
    let report = DrillReport {
        left_out,
        format: DRILL_FORMAT.into(),
        drill: format!(
            "{}-{:06x}",
            started_at.strftime("%Y%m%dT%H%M%SZ"),
            rand::random::<u32>() >> 8
        ),
        started_at,
        finished_at: jiff::Timestamp::now(),
        host: coffer_core::hostname(),
        coffer_version: env!("CARGO_PKG_VERSION").into(),
        snapshot: index.id.to_string(),
        job: index.job.clone(),
        sink: opened.sink_name.clone(),
        snapshot_time: index.created_at,
        signature: opened.admitted.trust().as_str().into(),
        signer: opened.admitted.trust().fingerprint().map(str::to_owned),
        object_bytes: index.object.size,
        plain_bytes: found.plain_bytes,
        files: found.files,
        passed,
        rto_seconds: round(restore_seconds + checks_seconds),
        restore_seconds: round(restore_seconds),
        checks_seconds: round(checks_seconds),
        rpo_seconds: round(
            (started_at.as_millisecond() - to_ts.map_or(index.created_at, |p| p.time()).as_millisecond())
                as f64
                / 1000.0,
        ),
        to_ts,
        slices,
        audit_gap_seconds: audit_gap(&checks),
        checks,
        scratch,
    };
    record(ctx, &report);
    // The evidence is kept even when the drill failed: that is what an
    // auditor most needs to see.
    let stored = report.append_to(&opened.sink).await;
    if let Some(dir) = &a.report {
        report.write_to(dir)?;
    }
    print(ctx, &report, stored.as_ref().err());
    stored.map_err(|e| {
        e.prefix(format!(
            "the drill's report could not be stored on sink `{}`",
            opened.sink_name
        ))
    })?;
    if let Some(e) = found.restore_error {
        return Err(e.into());
    }
    match failures(&report.checks) {
        None => Ok(()),
        Some(why) => Err(Failure::Checks(format!(
            "drill of snapshot {} failed: {why}",
            index.id
        ))),
    }
}

/// The snapshot's sources a drill `--only SOURCE…` leaves out (none
/// without `--only`); an `--only` naming no source of the snapshot is a
/// usage error.
fn left_out(only: &[String], index: &coffer_core::Index) -> coffer_core::Result<Vec<String>> {
    let picked = |s: &coffer_core::IndexSource| only.iter().any(|o| *o == s.name || *o == s.kind);
    if let Some(unknown) = only
        .iter()
        .find(|o| !index.sources.iter().any(|s| s.name == **o || s.kind == **o))
    {
        let names: Vec<&str> = index.sources.iter().map(|s| s.name.as_str()).collect();
        return Err(config_error(format!(
            "--only {unknown}: snapshot {} has no such source (it has {})",
            index.id,
            names.join(", ")
        ))
        .with_hint("name a source or a kind of the snapshot, as `coffer show` lists them"));
    }
    if only.is_empty() {
        return Ok(Vec::new());
    }
    Ok(index
        .sources
        .iter()
        .filter(|s| !picked(s))
        .map(|s| s.name.clone())
        .collect())
}

/// A drill's restore into its scratch targets, for the checks.
struct Restored<'a> {
    index: &'a coffer_core::Index,
    outcome: coffer_core::RestoreOutcome,
    targets: &'a Targets,
    /// The restore options the user gave (`--mongo-uri`).
    params: &'a BTreeMap<String, String>,
    restore_seconds: f64,
}

/// Runs the checks of the kinds' scratch places (the scratch copies hold
/// what the snapshot holds), then the job's checks against them.
async fn check_restored(a: &DrillArgs, config: Option<&Config>, r: Restored<'_>) -> Findings {
    let outcome = &r.outcome;
    let files = outcome.summary.files_checked;
    let summary: Vec<String> = outcome
        .reports
        .iter()
        .map(|(n, r)| format!("{n}: {}", r.summary))
        .collect();
    let mut restore = result(
        "restore",
        r.index.id.to_string(),
        true,
        format!(
            "{files} files verified against SHA256SUMS; {}",
            summary.join("; ")
        ),
        None,
    );
    restore.seconds = round(r.restore_seconds);
    let mut at = ChecksAt {
        params: r.params.clone(),
        ..ChecksAt::default()
    };
    let mut specs: Vec<Arc<dyn Check>> = Vec::new();
    for place in &r.targets.places {
        place.checks_at(&mut at);
        specs.extend(place.checks());
    }
    let env = CheckEnv {
        restored: Some(outcome),
        renamed: Some(&at.renamed),
        params: Some(&at.params),
        snapshot_time: Some(r.index.created_at),
    };
    let job = a.job.clone().unwrap_or_else(|| r.index.job.clone());
    specs.extend(
        config
            .and_then(|c| c.jobs.get(&job))
            .map(|j| j.checks.clone())
            .unwrap_or_default(),
    );
    let mut checks = vec![restore];
    checks.extend(run_checks(&specs, &env).await);
    Findings {
        checks,
        plain_bytes: outcome.summary.manifest.total_bytes,
        files,
        restore_error: None,
    }
}

/// The drill in the audit log and the metrics.
fn record(ctx: &Ctx, report: &DrillReport) {
    let r = &ctx.record;
    r.note("snapshot", report.snapshot.as_str());
    r.note("sink", report.sink.as_str());
    r.note("job", report.job.as_str());
    r.note("drill", report.drill.as_str());
    r.note("passed", report.passed);
    let job = [("job", report.job.as_str())];
    let now = report.finished_at.as_second() as f64;
    // A partial drill (`--only`) proves part of a restore: it is not the
    // job's last drill in the metrics, and its RTO is not the job's.
    if !report.left_out.is_empty() {
        r.note("left_out", report.left_out.join(","));
        return;
    }
    r.metric("coffer_drill_last_timestamp_seconds", &job, now);
    r.metric(
        "coffer_drill_last_passed",
        &job,
        if report.passed { 1.0 } else { 0.0 },
    );
    r.metric("coffer_drill_last_rto_seconds", &job, report.rto_seconds);
    if report.passed {
        r.metric("coffer_drill_last_success_timestamp_seconds", &job, now);
    }
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// The restore options the user gave the drill.
fn user_options(a: &DrillArgs) -> RestoreOptions {
    let mut opts = RestoreOptions::default();
    if let Some(uri) = &a.mongo_uri {
        opts.params.insert("mongo-uri".into(), uri.clone());
    }
    opts
}

/// The restore into the scratch targets: files under the temp dir, a
/// folder per source; each kind with a scratch place of its own sends its
/// restore there.
fn options(user: &RestoreOptions, t: &Targets) -> RestoreOptions {
    let mut opts = user.clone();
    opts.target = t.dir.as_ref().map(|d| d.path().join("restore"));
    opts.target_per_source = true;
    for place in &t.places {
        place.prepare(&mut opts);
    }
    opts
}

/// The largest gap an `audit` check measured.
fn audit_gap(checks: &[CheckResult]) -> Option<f64> {
    checks
        .iter()
        .filter(|c| c.kind == "audit")
        .filter_map(|c| c.details.get("gap_seconds").and_then(Value::as_f64))
        .reduce(f64::max)
}

/// Removes the scratch targets unless `--keep`; says what is left.
async fn cleanup(keep: bool, t: Targets) -> Scratch {
    let mut scratch = Scratch {
        dir: t
            .dir
            .as_ref()
            .map(|d| d.path().display().to_string())
            .unwrap_or_default(),
        kept: keep,
        ..Scratch::default()
    };
    for place in &t.places {
        let e = place.evidence();
        scratch.places.extend(e.fields);
        scratch.described.extend(e.lines);
    }
    if keep {
        let _ = t.dir.map(tempfile::TempDir::keep);
        return scratch;
    }
    let mut errors = Vec::new();
    if let Some(Err(e)) = t.dir.map(tempfile::TempDir::close) {
        errors.push(format!("removing {}: {e}", scratch.dir));
    }
    for place in &t.places {
        if let Err(e) = place.cleanup().await {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        scratch.cleanup_error = Some(errors.join("; "));
    }
    scratch
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
