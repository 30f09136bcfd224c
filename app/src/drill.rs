//! A drill: rehearse a restore. The snapshot is restored into scratch
//! targets — a temporary directory, one folder per source, for files,
//! `.env` secrets and command outputs, and for a source kind that declares
//! a scratch place of its own ([`coffer_core::SourceFactory::drill_scratch`])
//! that place (MongoDB: databases `<db><suffix>`, never the source
//! databases; Kubernetes: a scratch namespace). The kinds' own checks and
//! the job's post-restore checks run against them, RTO and RPO are
//! measured, the scratch targets are removed (unless asked to keep them),
//! and the evidence is appended to the drill history on the sink.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use coffer_core::checks::{Check, CheckEnv, ChecksAt, DrillScratch, ScratchRun, check_result as result};
use coffer_core::slices::LogPos;
use coffer_core::slices::pitr::LogReplay;
use coffer_core::{Error, Progress, Registry, RestoreOptions, config_error};
use serde_json::Value;

use crate::App;
use crate::checks::{CheckResult, failures, run_checks};
use crate::config::Config;
use crate::evidence::{DRILL_FORMAT, DrillReport, Scratch};
use crate::restoring::{Opened, RestoreOf};

/// A drill of an opened snapshot.
pub struct DrillRequest {
    /// When the drill started (before the snapshot was opened): the RPO is
    /// measured from here.
    pub started_at: jiff::Timestamp,
    /// The snapshot, its signature judged, with the keys a real restore
    /// would use.
    pub opened: Opened,
    /// A point-in-time drill: the oplog slices to replay and their target.
    pub replays: Vec<LogReplay>,
    /// The target of a point-in-time drill.
    pub to_ts: Option<LogPos>,
    /// Restore options the user gave (e.g. `mongo.uri`, the server the
    /// scratch databases go to).
    pub options: RestoreOptions,
    /// Appended to each database name to make its scratch copy (default
    /// `-drill-<snapshot's random part>-<this run's>`); never empty.
    pub scratch_suffix: Option<String>,
    /// The job whose checks run (default: the snapshot's).
    pub job: Option<String>,
    /// Only these sources (names or kinds; all when empty): a partial
    /// drill, which never counts as the last passed one.
    pub only: Vec<String>,
    /// Keep the scratch targets for a look.
    pub keep: bool,
    /// Where the verified ciphertext is cached (default: a temp dir).
    pub cache_dir: Option<PathBuf>,
}

/// What a drill found.
pub struct DrillOutcome {
    /// The evidence (also when the drill failed).
    pub report: DrillReport,
    /// Whether the evidence reached the sink's drill history.
    pub stored: coffer_core::Result<()>,
    /// The restore's own error, when it failed (its exit code is the
    /// drill's).
    pub restore_error: Option<Error>,
}

impl DrillOutcome {
    /// `None` when every check passed, else what failed, in one line.
    pub fn failures(&self) -> Option<String> {
        failures(&self.report.checks)
    }
}

impl App {
    /// Runs the drill `req`: restore into scratch targets, checks,
    /// cleanup, evidence stored on the snapshot's sink and noted on
    /// [`App::record`] (a whole drill also sets the job's
    /// `coffer_drill_last_*` metrics). Errors before the restore (an
    /// `only` naming no source, a bad suffix) are returned; anything after
    /// is in the outcome.
    pub async fn drill(
        &self,
        req: DrillRequest,
        progress: Arc<Progress>,
    ) -> coffer_core::Result<DrillOutcome> {
        let mut a = req;
        let slices = a.to_ts.map(|_| a.replays.iter().map(|r| r.slices).sum::<usize>());
        let index = a.opened.entry.index.clone();
        let left_out = left_out(&a.only, &index)?;
        let mut targets = Targets::new(&a, &index, &self.registry, &a.options)?;
        let ran = self.rehearse(&mut a, &index, &mut targets, progress).await;
        let scratch = cleanup(a.keep, targets).await;
        let (report, restore_error) = report(&a, &index, ran, scratch, left_out, slices);
        self.record_drill(&report);
        // The evidence is kept even when the drill failed: that is what an
        // auditor most needs to see.
        let stored = report.append_to(&a.opened.sink).await;
        Ok(DrillOutcome {
            report,
            stored,
            restore_error,
        })
    }

    /// The restore into the scratch targets and the checks of what it
    /// restored, timed; a signal that ends the drill meanwhile still
    /// removes the scratch targets.
    async fn rehearse(
        &self,
        a: &mut DrillRequest,
        index: &coffer_core::format::Index,
        targets: &mut Targets,
        progress: Arc<Progress>,
    ) -> Ran {
        let restore_started = Instant::now();
        let what = RestoreOf {
            only: &a.only,
            cache_dir: a.cache_dir.as_deref(),
            options: {
                let mut opts = options(&a.options, targets);
                opts.log_replays = std::mem::take(&mut a.replays);
                opts
            },
            // Scratch places only: a temp directory, new scratch databases
            // and a scratch namespace (a server or cluster the origin names
            // gets only databases and Secrets the drill creates and removes).
            origin_places: true,
        };
        let restored = self.restore(&mut a.opened, what, progress).await;
        let restore_seconds = restore_started.elapsed().as_secs_f64();
        let checks_started = Instant::now();
        let mut guard = SignalCleanup::default();
        let found = match restored {
            Ok(outcome) => {
                targets.restored(&outcome);
                // From here the scratch targets exist: a signal that drops
                // this future (SIGTERM, SIGHUP, Ctrl-C) still removes them.
                guard = SignalCleanup::arm(a, targets);
                let at = Restored {
                    index,
                    outcome,
                    targets,
                    params: &a.options.params,
                    restore_seconds,
                };
                check_restored(a, a.opened.config.as_ref(), at).await
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
        guard.disarm();
        Ran {
            found,
            restore_seconds,
            checks_seconds: checks_started.elapsed().as_secs_f64(),
        }
    }
}

/// What [`App::rehearse`] found, and how long the restore and the checks
/// took.
struct Ran {
    found: Findings,
    restore_seconds: f64,
    checks_seconds: f64,
}

/// The drill's evidence (a failed cleanup is a failed check: scratch
/// targets left behind may hold secrets and skew the next drill), and the
/// restore's error if it failed.
fn report(
    a: &DrillRequest,
    index: &coffer_core::format::Index,
    ran: Ran,
    scratch: Scratch,
    left_out: Vec<String>,
    slices: Option<usize>,
) -> (DrillReport, Option<Error>) {
    let Ran {
        found,
        restore_seconds,
        checks_seconds,
    } = ran;
    let mut checks = found.checks;
    if let Some(e) = &scratch.cleanup_error {
        checks.push(result(
            "cleanup",
            "scratch targets".into(),
            false,
            format!("removing them failed: {e}"),
            Some("remove what is named here by hand (scratch databases, namespace, directory)"),
        ));
    }
    let trust = a.opened.admitted.trust();
    let report = DrillReport {
        left_out,
        format: DRILL_FORMAT.into(),
        drill: format!(
            "{}-{:06x}",
            a.started_at.strftime("%Y%m%dT%H%M%SZ"),
            rand::random::<u32>() >> 8
        ),
        started_at: a.started_at,
        finished_at: jiff::Timestamp::now(),
        host: coffer_core::format::hostname(),
        coffer_version: env!("CARGO_PKG_VERSION").into(),
        snapshot: index.id.to_string(),
        job: index.job.clone(),
        sink: a.opened.sink_name.clone(),
        snapshot_time: index.created_at,
        signature: trust.as_str().into(),
        signer: trust.fingerprint().map(str::to_owned),
        object_bytes: index.object.size,
        plain_bytes: found.plain_bytes,
        files: found.files,
        passed: failures(&checks).is_none(),
        rto_seconds: round(restore_seconds + checks_seconds),
        restore_seconds: round(restore_seconds),
        checks_seconds: round(checks_seconds),
        rpo_seconds: round(
            (a.started_at.as_millisecond() - a.to_ts.map_or(index.created_at, |p| p.time()).as_millisecond())
                as f64
                / 1000.0,
        ),
        to_ts: a.to_ts,
        slices,
        audit_gap_seconds: audit_gap(&checks),
        checks,
        scratch,
    };
    (report, found.restore_error)
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
        a: &DrillRequest,
        index: &coffer_core::format::Index,
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
        let mut by_kind: BTreeMap<&str, Vec<coffer_core::format::IndexSource>> = BTreeMap::new();
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
                kind,
                sources: &sources,
                options: &options.for_kind(kind),
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
    fn arm(a: &DrillRequest, t: &Targets) -> SignalCleanup {
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

/// The snapshot's sources a drill `--only SOURCE…` leaves out (none
/// without `--only`); an `--only` naming no source of the snapshot is a
/// usage error.
fn left_out(only: &[String], index: &coffer_core::format::Index) -> coffer_core::Result<Vec<String>> {
    let picked = |s: &coffer_core::format::IndexSource| only.iter().any(|o| *o == s.name || *o == s.kind);
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
    index: &'a coffer_core::format::Index,
    outcome: coffer_core::RestoreOutcome,
    targets: &'a Targets,
    /// The restore options the user gave (`--mongo-uri`).
    params: &'a coffer_core::KindOptions,
    restore_seconds: f64,
}

/// Runs the checks of the kinds' scratch places (the scratch copies hold
/// what the snapshot holds), then the job's checks against them.
async fn check_restored(a: &DrillRequest, config: Option<&Config>, r: Restored<'_>) -> Findings {
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
impl App {
    fn record_drill(&self, report: &DrillReport) {
        let r = &self.record;
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
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
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
    // A whole restored tree: removed on a blocking thread.
    if let Some(dir) = t.dir {
        match tokio::task::spawn_blocking(move || dir.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("removing {}: {e}", scratch.dir)),
            Err(e) => errors.push(format!("removing {}: {e}", scratch.dir)),
        }
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
