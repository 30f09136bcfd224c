//! `coffer drill [SNAPSHOT]`: rehearse a restore. The snapshot is verified
//! and restored into scratch targets (a temporary directory, one folder
//! per source, for files,
//! `.env` secrets and command outputs; scratch MongoDB databases named
//! `<db><suffix>` on the given or original server, never the source
//! databases; a scratch Kubernetes namespace), the job's post-restore
//! checks run against them, RTO and RPO are measured, the scratch targets
//! are removed (unless `--keep`), and the evidence (JSON and Markdown) is
//! appended to the drill history on the sink (`coffer drills` lists it).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use coffer_core::{Error, RestoreOptions, SourceRecord, config_error};
use serde_json::Value;

use crate::Failure;
use crate::checks::{
    CheckEnv, CheckResult, CheckSpec, MongoCountsCheck, MongoTarget, expected_counts, failures, result,
    run_checks,
};
use crate::config::Config;
use crate::ctx::{CmdResult, Ctx, ReadSel, open_point_in_time, open_snapshot, pitr_target};
use crate::evidence::{DRILL_FORMAT, DrillOutput, DrillReport, Scratch};
use crate::output::print_json;
use crate::restoring::restore_snapshot;

/// Kinds of the MongoDB sources.
const MONGO_KINDS: [&str; 3] = ["mongo", "mongo-env", "mongodump"];

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
    /// The snapshot's sources (their origins name the server and cluster).
    sources: Vec<SourceRecord>,
    databases: Vec<(String, String)>,
    k8s_namespace: Option<String>,
    /// The Secrets the restore wrote into the scratch namespace.
    k8s_secrets: Vec<String>,
    suffix: String,
}

impl Targets {
    /// The scratch targets of a drill of `index`: a temp dir, the database
    /// suffix (never empty: a drill never writes a source database) and,
    /// when the snapshot has Kubernetes Secrets, a scratch namespace.
    fn new(a: &DrillArgs, index: &coffer_core::Index) -> coffer_core::Result<Targets> {
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
        let dir = tempfile::Builder::new()
            .prefix(&format!("coffer-drill-{short}-"))
            .tempdir()
            .map_err(|e| Error::io("cannot make the drill's scratch directory", e))?;
        Ok(Targets {
            dir: Some(dir),
            sources: Vec::new(),
            databases: Vec::new(),
            k8s_namespace: index
                .sources
                .iter()
                .any(|s| s.kind == "k8s")
                .then(|| format!("coffer-drill-{run}")),
            k8s_secrets: Vec::new(),
            suffix,
        })
    }
}

/// Removes a drill's scratch databases and Secrets when the drill is
/// dropped part-way (a signal ends the run while the checks run), on a
/// thread of its own, and says on stderr what it removed or could not.
#[derive(Default)]
struct SignalCleanup {
    armed: Option<(Targets, Option<String>)>,
}

impl SignalCleanup {
    fn arm(a: &DrillArgs, t: &Targets) -> SignalCleanup {
        if a.keep {
            return SignalCleanup::default();
        }
        let copy = Targets {
            dir: None,
            databases: t.databases.clone(),
            k8s_namespace: t.k8s_namespace.clone(),
            k8s_secrets: t.k8s_secrets.clone(),
            suffix: t.suffix.clone(),
            sources: t.sources.clone(),
        };
        let uri = a.mongo_uri.clone().or_else(|| origin_uri(&t.sources));
        SignalCleanup {
            armed: Some((copy, uri)),
        }
    }

    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for SignalCleanup {
    fn drop(&mut self) {
        let Some((t, uri)) = self.armed.take() else { return };
        let sources = t.sources.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            Some(rt.block_on(cleanup(false, t, uri.as_deref(), &sources)))
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
    sources: Vec<SourceRecord>,
    mongo_uri: Option<String>,
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
    let mut targets = Targets::new(&a, &index)?;
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
            let mut opts = options(&a, &targets);
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
            note_scratch(&mut targets, &outcome);
            // From here the scratch targets exist: a signal that drops this
            // future (SIGTERM, SIGHUP, Ctrl-C) still removes them.
            guard = SignalCleanup::arm(&a, &targets);
            check_restored(&a, config, &index, outcome, &targets, restore_seconds).await
        }
        Err(e) => {
            let mut failed = result("restore", index.id.to_string(), false, e.to_string(), e.hint());
            failed.seconds = round(restore_seconds);
            Findings {
                checks: vec![failed],
                plain_bytes: 0,
                files: 0,
                sources: Vec::new(),
                mongo_uri: a.mongo_uri.clone(),
                restore_error: Some(e),
            }
        }
    };
    let checks_seconds = checks_started.elapsed().as_secs_f64();
    guard.disarm();
    let scratch = cleanup(a.keep, targets, found.mongo_uri.as_deref(), &found.sources).await;
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

/// After a restore into the scratch targets: the scratch databases and
/// Secrets it made, and the snapshot's sources.
fn note_scratch(targets: &mut Targets, outcome: &coffer_core::RestoreOutcome) {
    targets.sources = outcome.summary.sources.sources.clone();
    let counts = expected_counts(outcome);
    for db in counts
        .iter()
        .flat_map(|c| c.keys())
        .filter_map(|ns| ns.split_once('.').map(|(d, _)| d))
    {
        if !targets.databases.iter().any(|(from, _)| from == db) {
            targets
                .databases
                .push((db.to_string(), format!("{db}{}", targets.suffix)));
        }
    }
    if let Some(ns) = &targets.k8s_namespace {
        let prefix = format!("Secret {ns}/");
        targets.k8s_secrets = outcome
            .reports
            .iter()
            .flat_map(|(_, r)| &r.actions)
            .filter(|act| act.action == "create" || act.action == "replace")
            .filter_map(|act| act.target.strip_prefix(&prefix).map(str::to_owned))
            .collect();
    }
}

/// Checks that the scratch databases hold exactly the counts at the
/// snapshot's consistency point and runs the job's checks against them.
async fn check_restored(
    a: &DrillArgs,
    config: Option<&Config>,
    index: &coffer_core::Index,
    outcome: coffer_core::RestoreOutcome,
    targets: &Targets,
    restore_seconds: f64,
) -> Findings {
    let files = outcome.summary.files_checked;
    let sources = outcome.summary.sources.sources.clone();
    let counts = expected_counts(&outcome);
    let mongo_uri = a.mongo_uri.clone().or_else(|| origin_uri(&sources));
    let summary: Vec<String> = outcome
        .reports
        .iter()
        .map(|(n, r)| format!("{n}: {}", r.summary))
        .collect();
    let mut restore = result(
        "restore",
        index.id.to_string(),
        true,
        format!(
            "{files} files verified against SHA256SUMS; {}",
            summary.join("; ")
        ),
        None,
    );
    restore.seconds = round(restore_seconds);
    let env = CheckEnv {
        manifest_counts: counts.clone(),
        db_map: targets.databases.iter().cloned().collect(),
        mongo_uri: mongo_uri.clone(),
        snapshot_time: Some(index.created_at),
        base_dir: config_dir(config),
    };
    // The scratch databases hold exactly what the snapshot holds.
    let mut specs = Vec::new();
    if counts.as_ref().is_some_and(|c| !c.is_empty()) {
        specs.push(CheckSpec::MongoCounts(MongoCountsCheck {
            target: MongoTarget {
                uri: mongo_uri.clone(),
                uri_env: None,
            },
            minimums: Default::default(),
        }));
    }
    let job = a.job.clone().unwrap_or_else(|| index.job.clone());
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
        sources,
        mongo_uri,
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

fn config_dir(config: Option<&Config>) -> PathBuf {
    config
        .and_then(|c| c.path.parent().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The restore into the scratch targets.
fn options(a: &DrillArgs, t: &Targets) -> RestoreOptions {
    let mut opts = RestoreOptions::default();
    opts.target = t.dir.as_ref().map(|d| d.path().join("restore"));
    opts.target_per_source = true;
    if let Some(uri) = &a.mongo_uri {
        opts.params.insert("mongo-uri".into(), uri.clone());
    }
    // Every database `db` to `db<suffix>` (database names hold no `.`, and
    // `*` captures leftmost-shortest). Only into databases that do not
    // exist yet: a drill drops what it restored, so it must never write
    // into (or replace) a database it did not create, such as another
    // team's `app-staging` for `--scratch-suffix=-staging`.
    opts.params.insert("ns-from".into(), "*.*".into());
    opts.params.insert("ns-to".into(), format!("*{}.*", t.suffix));
    opts.params.insert("new-databases-only".into(), "true".into());
    if let Some(ns) = &t.k8s_namespace {
        opts.params.insert("k8s-namespace".into(), ns.clone());
    }
    opts
}

/// The server of the snapshot's MongoDB source, when its origin names one
/// usable without a password from the bundle.
fn origin_uri(sources: &[SourceRecord]) -> Option<String> {
    let origin = &sources
        .iter()
        .find(|s| MONGO_KINDS.contains(&s.kind.as_str()))?
        .origin;
    if let Some(var) = origin.get("uri-env").and_then(Value::as_str) {
        return std::env::var(var).ok();
    }
    match (
        origin.get("uri").and_then(Value::as_str),
        origin.get("has-password"),
    ) {
        (Some(uri), Some(Value::Bool(false))) => Some(uri.to_string()),
        _ => None,
    }
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
async fn cleanup(keep: bool, t: Targets, mongo_uri: Option<&str>, sources: &[SourceRecord]) -> Scratch {
    let mut scratch = Scratch {
        dir: t
            .dir
            .as_ref()
            .map(|d| d.path().display().to_string())
            .unwrap_or_default(),
        databases: t.databases.clone(),
        k8s_namespace: t.k8s_namespace.clone(),
        kept: keep,
        cleanup_error: None,
    };
    if keep {
        let _ = t.dir.map(tempfile::TempDir::keep);
        return scratch;
    }
    let mut errors = Vec::new();
    if let Some(Err(e)) = t.dir.map(tempfile::TempDir::close) {
        errors.push(format!("removing {}: {e}", scratch.dir));
    }
    if !t.databases.is_empty() {
        let names: Vec<String> = t.databases.iter().map(|(_, to)| to.clone()).collect();
        match mongo_uri {
            Some(uri) => {
                if let Err(e) = crate::checks::mongo::drop_databases(uri, &names).await {
                    errors.push(e);
                }
            }
            None => errors.push(format!("no server known to drop {}", names.join(", "))),
        }
    }
    if let Some(ns) = &t.k8s_namespace {
        errors.extend(delete_k8s(sources, ns, &t.k8s_secrets).await);
    }
    if !errors.is_empty() {
        scratch.cleanup_error = Some(errors.join("; "));
    }
    scratch
}

/// Deletes the Secrets the drill wrote into its scratch namespace, through
/// the cluster connection of the snapshot's k8s source.
#[cfg(feature = "k8s")]
async fn delete_k8s(sources: &[SourceRecord], namespace: &str, names: &[String]) -> Option<String> {
    let source = sources.iter().find(|s| s.kind == "k8s")?;
    coffer_source_k8s::delete_restored(&source.origin, namespace, names)
        .await
        .err()
        .map(|e| e.to_string())
}

#[cfg(not(feature = "k8s"))]
async fn delete_k8s(_: &[SourceRecord], _: &str, _: &[String]) -> Option<String> {
    None
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
