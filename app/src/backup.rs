//! A job's backup: its sources checked, its hooks run around the capture
//! (cold backups), the snapshot fanned out to its sinks under their locks,
//! judged against the quorum, then pinned or pruned, and noted on the
//! run's observer (audit notes, `coffer_backup_*` metrics).

use std::path::PathBuf;
use std::sync::Arc;

use coffer_core::chunked::SnapshotFormat;
use coffer_core::ops::BackupReport;
use coffer_core::{Error, Progress, Result, config_error, ops::BackupOutcome, ops::BackupRequest};

use crate::App;
use crate::config::Config;
use crate::hooks::HookRun;
use crate::job::{JobPlan, ResolvedJob};
use crate::retention::AfterBackup;

/// A sink of a backup run: its name and whether it is required.
pub type SinkChoice = (String, bool);

/// A backup of a resolved job.
pub struct JobBackup {
    /// The job, its keys and codec resolved.
    pub job: ResolvedJob,
    /// The sinks written, each with whether it is required ([`fan_out`]).
    pub sinks: Vec<SinkChoice>,
    /// How many sinks must store the snapshot, when the job sets a quorum.
    pub quorum: Option<usize>,
    /// Store the snapshot in this format on every sink, whatever their
    /// `format` says.
    pub format: Option<SnapshotFormat>,
    /// The dedup key file of chunked sinks (default: theirs, else the
    /// host's).
    pub dedup_key: Option<PathBuf>,
    /// The snapshot time to record instead of now.
    pub time: Option<jiff::Timestamp>,
    /// Pin the snapshot on every sink that stored it.
    pub keep_forever: bool,
    /// Apply the retention policy on every sink that stored it.
    pub prune: bool,
}

/// What a backup that produced a snapshot did.
pub struct JobBackupRun {
    /// The snapshot and each sink's result.
    pub outcome: BackupOutcome,
    /// Wall time of the capture and fan-out.
    pub seconds: f64,
    /// The quorum (or every required sink) holds the snapshot.
    pub complete: bool,
    /// The quorum the run was judged against.
    pub quorum: Option<usize>,
    /// What pinning and pruning did (`None` when neither was asked).
    pub after: Result<Option<AfterBackup>>,
    /// The hooks that ran and the health wait, if the job has hooks.
    pub hooks: Option<HookRun>,
    /// Whether the `after` hooks and the health wait succeeded.
    pub hooks_done: Result<()>,
}

impl JobBackupRun {
    /// The report of the run (the `--json` output of `coffer backup`).
    pub fn report(&self) -> BackupReport {
        let mut report = BackupReport::new(&self.outcome, self.seconds, self.quorum, self.complete);
        if let Ok(Some(after)) = &self.after {
            report.pinned_on = Some(after.pinned.clone());
            report.prune = Some(after.pruned.clone());
        }
        if let Some(h) = &self.hooks {
            report.hooks = Some(h.reports.iter().map(|r| r.typed()).collect());
            report.health = h.health.as_ref().map(|r| r.typed());
        }
        report
    }
}

/// Where and how a backup stores its snapshot.
struct Target {
    sinks: Vec<SinkChoice>,
    format: Option<SnapshotFormat>,
    dedup_key: Option<PathBuf>,
    time: Option<jiff::Timestamp>,
}

/// A backup that stored no snapshot: why, and the hooks that ran (their
/// `after` and `on-failure` commands ran too).
pub struct BackupFailed {
    /// What failed.
    pub error: Error,
    /// The job's hooks, if any ran.
    pub hooks: Option<HookRun>,
}

impl From<Error> for BackupFailed {
    fn from(error: Error) -> Self {
        BackupFailed { error, hooks: None }
    }
}

/// The sinks of a backup run with whether each is required, and the
/// job's quorum: the run's sinks (`names`, the job's or the command
/// line's) marked optional by `[sink.X] optional = true` or by `optional`,
/// then every `optional` sink not among them.
pub fn fan_out(
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

impl App {
    /// Runs the backup `req` of a job of `config` (or a one-off one):
    /// phases on `progress`. A run that stored no snapshot is a
    /// [`BackupFailed`]; one that did is a [`JobBackupRun`], complete or
    /// short of its sinks.
    pub async fn backup(
        &self,
        config: Option<&Config>,
        req: JobBackup,
        progress: Arc<Progress>,
    ) -> std::result::Result<JobBackupRun, BackupFailed> {
        let JobBackup {
            job,
            sinks,
            quorum,
            format,
            dedup_key,
            time,
            keep_forever,
            prune,
        } = req;
        let one_off = !job.plan.configured;
        let target = Target {
            sinks,
            format,
            dedup_key,
            time,
        };
        let req = self.backup_request(config, job, target).await?;
        // A job's hooks (cold backups): `before`, then the backup, then
        // `after` whatever happened (see crate::hooks).
        let mut hooks = match (config, one_off) {
            (Some(cfg), false) => cfg
                .jobs
                .get(&req.job)
                .map(|j| j.hooks())
                .filter(|h| !h.is_empty())
                .map(HookRun::new),
            _ => None,
        };
        if let Some(h) = hooks.as_mut()
            && let Err(error) = h.before().await
        {
            let _ = h.finish(true).await;
            return Err(BackupFailed { error, hooks });
        }
        let (outcome, seconds) = match coffer_core::ops::backup(req, "backup", progress).await {
            Ok(done) => done,
            Err(error) => {
                if let Some(h) = hooks.as_mut() {
                    let _ = h.finish(true).await;
                }
                return Err(BackupFailed { error, hooks });
            }
        };
        let after = crate::retention::after_backup(self, config, keep_forever, prune, &outcome).await;
        let stored = outcome.sinks.iter().filter(|s| s.result.is_ok()).count();
        let complete = match quorum {
            Some(q) => stored >= q,
            None => outcome.required_ok(),
        };
        let hooks_done = match hooks.as_mut() {
            Some(h) => h.finish(!complete || after.is_err()).await,
            None => Ok(()),
        };
        self.record_backup(config, &outcome, complete, seconds).await;
        Ok(JobBackupRun {
            outcome,
            seconds,
            complete,
            quorum,
            after,
            hooks,
            hooks_done,
        })
    }

    /// The pipeline's request for `job`: its sinks resolved, the dedup key
    /// of chunked ones, its configured sources checked (a missing path
    /// names its place in the config file). Notes the job and counts the
    /// run as failed until it succeeds.
    async fn backup_request(
        &self,
        config: Option<&Config>,
        job: ResolvedJob,
        t: Target,
    ) -> Result<BackupRequest> {
        let ResolvedJob {
            plan,
            encryption,
            compression,
            signing_key,
        } = job;
        let one_off = !plan.configured;
        let sinks = self.sink_targets(&t.sinks, config, t.format)?;
        let dedup_key = self
            .dedup_key(&sinks, config, t.dedup_key.as_deref(), &encryption)
            .await?;
        let JobPlan {
            job, sources, tags, ..
        } = plan;
        let now = jiff::Timestamp::now().as_second() as f64;
        self.record.note("job", job.as_str());
        self.record
            .metric("coffer_backup_last_run_timestamp_seconds", &[("job", &job)], now);
        self.record
            .metric("coffer_backup_last_run_success", &[("job", &job)], 0.0);
        if let Some(cfg) = config.filter(|_| !one_off) {
            for s in &sources {
                let name = s.info().name;
                if let Some(place) = cfg.source_places.get(&name) {
                    s.check().await.map_err(|e| e.prefix(place))?;
                }
            }
        }
        Ok(BackupRequest {
            job,
            sources,
            sinks,
            encryption,
            compression,
            tags,
            time: t.time,
            threads: crate::job::threads(),
            signing_key,
            dedup_key,
            // The config's trusted signers (or its own signing keys):
            // chunks are reused only from snapshots they signed.
            trusted: crate::trust::trusted_signers(&[], config)?,
        })
    }

    /// The backup's audit notes and metrics (per job and per sink).
    async fn record_backup(
        &self,
        config: Option<&Config>,
        outcome: &BackupOutcome,
        complete: bool,
        secs: f64,
    ) {
        let job = outcome.index.job.as_str();
        let r = &self.record;
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
                && let Ok(sink) = self.sink(&s.name, config)
                && let Ok(cat) = coffer_core::ops::Catalog::load(sink.as_ref()).await
            {
                r.metric(
                    "coffer_snapshots",
                    &[("sink", s.name.as_str())],
                    cat.snapshots.len() as f64,
                );
            }
        }
    }
}
