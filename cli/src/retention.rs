//! Retention commands: `coffer prune`, `coffer pin`, `coffer unpin`, and
//! what `coffer backup --prune` / `--keep-forever` do after a backup.
//!
//! The decisions come from the pure `coffer_core::apply`; this module
//! resolves the policy (flags > the sink's `retention` > the job's), feeds
//! it the catalog of each sink, prints the decisions and deletes.
//! The safety floor is checked before anything is deleted: per job, the
//! newest `complete` snapshot's object is read back and its SHA-256
//! compared with its index (no key needed), walking back until one
//! verifies; that one is never deleted, and with none verified nothing is.

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_core::{
    BackupOutcome, Catalog, Decision, PinMarker, PolicyTimeZone, PutOptions, Result, RetentionPolicy, Sink,
    SinkExt, SnapshotId, SnapshotMeta, SnapshotState, config_error, pin_key,
};
use serde_json::json;

use crate::config::Config;
use crate::ctx::{Ctx, PolicyFlags};

/// Where each group's policy comes from: flags, else the sink's override,
/// else the job's `retention`.
pub(crate) struct Policies<'a> {
    config: Option<&'a Config>,
    flags: Option<RetentionPolicy>,
    timezone: Option<PolicyTimeZone>,
}

impl Policies<'_> {
    pub(crate) fn new<'a>(config: Option<&'a Config>, flags: &PolicyFlags) -> Policies<'a> {
        Policies {
            config,
            flags: flags.policy(),
            timezone: flags.timezone.clone(),
        }
    }

    /// The policy for `job` on sink `sink`, and where it comes from.
    fn get(&self, sink: &str, job: &str) -> (RetentionPolicy, String) {
        let configured = self.config.and_then(|c| {
            c.sink_retention
                .get(sink)
                .map(|p| (p.clone(), format!("[sink.{sink}]")))
                .or_else(|| {
                    c.jobs
                        .get(job)
                        .and_then(|j| j.retention.clone())
                        .map(|p| (p, format!("[job.{job}]")))
                })
        });
        let (mut policy, from) = match (&self.flags, configured) {
            (Some(f), c) => {
                let mut f = f.clone();
                if f.timezone.is_none() {
                    f.timezone = c.and_then(|(p, _)| p.timezone);
                }
                (f, "flags".to_string())
            }
            (None, Some(c)) => c,
            (None, None) => (RetentionPolicy::default(), "nowhere".to_string()),
        };
        if let Some(tz) = &self.timezone {
            policy.timezone = Some(tz.clone());
        }
        (policy, from)
    }
}

/// One snapshot's verdict as printed.
struct Row {
    decision: Decision,
    state: SnapshotState,
    /// Deleted (false in dry runs and for kept snapshots).
    deleted: bool,
    /// Why a planned delete did not happen (pinned meanwhile).
    skipped: Option<String>,
    /// The SHA-256 check of the floor found the object corrupt.
    corrupt: Option<String>,
}

/// The check of the snapshot retention keeps as its safety floor: the
/// newest one whose object matches its index (SHA-256, no key needed).
#[derive(Debug, Default)]
struct FloorCheck {
    /// The snapshot that verified and is never deleted.
    verified: Option<SnapshotId>,
    /// Newer snapshots whose object failed the check.
    corrupt: Vec<SnapshotId>,
}

/// What prune did on one sink.
pub(crate) struct SinkReport {
    sink: String,
    location: String,
    dry_run: bool,
    /// Job → (policy, where it came from).
    policies: BTreeMap<String, (RetentionPolicy, String)>,
    rows: Vec<Row>,
    unreadable: Vec<(String, String)>,
    /// Job → its floor check (jobs with a policy only).
    floors: BTreeMap<String, FloorCheck>,
}

impl SinkReport {
    /// (sink, snapshots deleted, snapshots left) for the audit log and
    /// the metrics.
    pub(crate) fn counts(&self) -> (&str, usize, usize) {
        let deleted = self.rows.iter().filter(|r| r.deleted).count();
        (&self.sink, deleted, self.rows.len() - deleted)
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "sink": self.sink,
            "location": self.location,
            "dry_run": self.dry_run,
            "policies": self.policies.iter().map(|(job, (p, from))| json!({
                "job": job, "policy": p, "from": from, "empty": p.is_empty(),
            })).collect::<Vec<_>>(),
            "snapshots": self.rows.iter().map(|r| json!({
                "id": r.decision.id.as_str(),
                "time": r.decision.time.to_string(),
                "job": r.decision.job,
                "keep": r.decision.keep,
                "reasons": r.decision.reasons,
                "state": r.state.as_str(),
                "deleted": r.deleted,
                "skipped": r.skipped,
                "corrupt": r.corrupt,
            })).collect::<Vec<_>>(),
            "floors": self.floors.iter().map(|(job, f)| json!({
                "job": job,
                "verified": f.verified.as_ref().map(SnapshotId::as_str),
                "corrupt": f.corrupt.iter().map(SnapshotId::as_str).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "unreadable": self.unreadable.iter().map(|(k, e)| json!({"key": k, "error": e})).collect::<Vec<_>>(),
        })
    }

    pub(crate) fn print(&self, several: bool) {
        if several {
            println!("sink {} ({}):", self.sink, self.location);
        }
        if self.rows.is_empty() {
            println!("  no snapshots");
        }
        let mut job = None;
        for r in &self.rows {
            if job != Some(&r.decision.job) {
                job = Some(&r.decision.job);
                let (p, from) = &self.policies[&r.decision.job];
                let what = if p.is_empty() {
                    "no retention policy: nothing is deleted".to_string()
                } else {
                    format!("{p} (from {from})")
                };
                println!("job {}: {what}", r.decision.job);
                if let Some(f) = self.floors.get(&r.decision.job) {
                    match &f.verified {
                        Some(id) => println!(
                            "  floor: {id} verified (SHA-256 of its object matches its index): never deleted"
                        ),
                        None => println!(
                            "  floor: no snapshot verified (SHA-256 of each object against its index): nothing is deleted"
                        ),
                    }
                }
            }
            let verdict = match (r.decision.keep, r.deleted, &r.skipped) {
                (true, _, _) => "keep",
                (false, _, Some(_)) => "skipped",
                (false, true, _) => "deleted",
                (false, false, _) => "delete",
            };
            let why = match (&r.skipped, r.decision.keep) {
                (Some(s), _) => s.clone(),
                (None, true) => r.decision.reasons.join(", "),
                (None, false) => "no rule keeps it".to_string(),
            };
            let state = match &r.corrupt {
                Some(e) => format!(" [corrupt: {e}]"),
                None if r.state == SnapshotState::Complete => String::new(),
                None => format!(" [{}]", r.state.as_str()),
            };
            println!(
                "  {verdict:<7} {}  {}{state}  {why}",
                r.decision.id,
                r.decision.time.strftime("%Y-%m-%d %H:%M:%S")
            );
        }
        for (k, e) in &self.unreadable {
            println!("  unreadable index {k} (left alone): {e}");
        }
        let kept = self.rows.iter().filter(|r| r.decision.keep).count();
        let to_delete = self.rows.len() - kept;
        if self.dry_run {
            println!("{kept} kept, {to_delete} would be deleted (dry run: nothing was deleted)");
        } else {
            let deleted = self.rows.iter().filter(|r| r.deleted).count();
            println!("{kept} kept, {deleted} deleted");
        }
    }
}

/// Applies the policies to one sink; deletes unless `dry_run`. Holds the
/// sink's exclusive lock while deciding and deleting.
pub(crate) async fn prune_sink(
    name: &str,
    sink: Arc<dyn Sink>,
    job_filter: Option<&str>,
    policies: &Policies<'_>,
    dry_run: bool,
) -> Result<SinkReport> {
    let guard = if dry_run {
        None
    } else {
        Some(coffer_core::acquire_exclusive(sink.clone(), "prune").await?)
    };
    let result = prune_locked(name, sink.as_ref(), job_filter, policies, guard.as_ref(), dry_run).await;
    if let Some(g) = guard {
        g.release().await;
    }
    result
}

async fn prune_locked(
    name: &str,
    sink: &dyn Sink,
    job_filter: Option<&str>,
    policies: &Policies<'_>,
    guard: Option<&coffer_core::LockGuard>,
    dry_run: bool,
) -> Result<SinkReport> {
    let cat = Catalog::load(sink).await?;
    let now = jiff::Timestamp::now();
    let mut by_job: BTreeMap<&str, Vec<&coffer_core::CatalogEntry>> = BTreeMap::new();
    for e in &cat.snapshots {
        if job_filter.is_none_or(|j| j == e.index.job) {
            by_job.entry(e.index.job.as_str()).or_default().push(e);
        }
    }
    let mut report = SinkReport {
        sink: name.to_string(),
        location: sink.info().to_string(),
        dry_run,
        policies: BTreeMap::new(),
        rows: Vec::new(),
        unreadable: cat.unreadable.clone(),
        floors: BTreeMap::new(),
    };
    for (job, entries) in by_job {
        let (policy, from) = policies.get(name, job);
        let floor = if policy.is_empty() {
            None
        } else {
            Some(check_floor(sink, &entries, now).await?)
        };
        let corrupt = |id: &SnapshotId| floor.as_ref().is_some_and(|f| f.corrupt.contains(id));
        let metas: Vec<SnapshotMeta> = entries
            .iter()
            .map(|e| SnapshotMeta {
                id: e.index.id.clone(),
                time: e.index.created_at,
                job: e.index.job.clone(),
                tags: e.index.tags.clone(),
                pinned: e.pinned,
                verified_good: e.state == SnapshotState::Complete && !corrupt(&e.index.id),
            })
            .collect();
        let no_floor = floor.as_ref().is_some_and(|f| f.verified.is_none());
        for mut decision in coffer_core::apply(&metas, &policy, now) {
            let entry = entries
                .iter()
                .find(|e| e.index.id == decision.id)
                .expect("a decision per snapshot");
            if no_floor && !decision.keep {
                decision.keep = true;
                decision.reasons.push("no snapshot verified".into());
            }
            report.rows.push(Row {
                corrupt: corrupt(&decision.id)
                    .then(|| "object's SHA-256 does not match its index".to_string()),
                decision,
                state: entry.state,
                deleted: false,
                skipped: None,
            });
        }
        report.policies.insert(job.to_string(), (policy, from));
        if let Some(f) = floor {
            report.floors.insert(job.to_string(), f);
        }
    }
    if dry_run {
        return Ok(report);
    }
    for row in report.rows.iter_mut().filter(|r| !r.decision.keep) {
        if let Some(g) = guard {
            g.ensure_held()?;
        }
        let id = &row.decision.id;
        // `coffer pin` may have run since the listing.
        if sink.head(&pin_key(id)).await?.is_some() {
            row.skipped = Some("pinned while pruning".into());
            continue;
        }
        let companions = cat
            .snapshots
            .iter()
            .find(|e| &e.index.id == id)
            .map(|e| e.companions.clone())
            .unwrap_or_default();
        delete_snapshot(sink, id, &companions).await.map_err(|e| {
            e.prefix(format!("deleting snapshot {id}")).with_hint(
                "run `coffer prune` again; its index went first, so no index points at a missing object",
            )
        })?;
        row.deleted = true;
    }
    Ok(report)
}

/// Finds the safety floor of one job before anything is deleted: walks its
/// snapshots newest first and checks each object's size and SHA-256
/// against its index (no key needed) until one verifies. A corrupt newest
/// snapshot thus never lets retention delete the last good ones.
async fn check_floor(
    sink: &dyn Sink,
    entries: &[&coffer_core::CatalogEntry],
    now: jiff::Timestamp,
) -> Result<FloorCheck> {
    let mut floor = FloorCheck::default();
    let candidates = entries
        .iter()
        .rev()
        .filter(|e| e.index.created_at <= now && e.state == SnapshotState::Complete);
    for e in candidates {
        match coffer_core::verify_object(sink, &e.index, None, None).await {
            Ok(()) => {
                floor.verified = Some(e.index.id.clone());
                break;
            }
            Err(err) if err.kind() == coffer_core::ErrorKind::Integrity => {
                tracing::warn!("snapshot {} is corrupt: {err}", e.index.id);
                floor.corrupt.push(e.index.id.clone());
            }
            Err(err) => {
                return Err(err.prefix(format!("checking snapshot {} before pruning", e.index.id)));
            }
        }
    }
    Ok(floor)
}

/// Deletes the index first (the snapshot stops existing), then the
/// ciphertext, then companions such as a signature, so an interrupted
/// prune never leaves an index pointing at nothing.
pub(crate) async fn delete_snapshot(sink: &dyn Sink, id: &SnapshotId, companions: &[String]) -> Result<()> {
    sink.delete(&id.index_key()).await?;
    sink.delete(&id.object_key()).await?;
    for key in companions {
        sink.delete(key).await?;
    }
    Ok(())
}

/// Fails before a `backup --prune` starts if no sink of the run has a
/// policy for `job`: the prune would delete nothing.
pub(crate) fn check_backup_prune(config: Option<&Config>, job: &str, sinks: &[String]) -> Result<()> {
    let policies = Policies::new(config, &PolicyFlags::default());
    if sinks.iter().all(|s| policies.get(s, job).0.is_empty()) {
        return Err(config_error(format!(
            "--prune: job `{job}` has no retention policy, so nothing would be pruned"
        ))
        .with_hint(format!(
            "add `retention = {{ keep-daily = 30, keep-monthly = 12 }}` to [job.{job}] (or a sink), or run `coffer prune --keep-… ` instead"
        )));
    }
    Ok(())
}

/// What `backup --keep-forever` / `--prune` did on the sinks that stored
/// the snapshot.
pub(crate) struct AfterBackup {
    pinned: Vec<String>,
    pruned: Vec<SinkReport>,
}

impl AfterBackup {
    /// Adds `pinned` and `prune` to the backup's JSON output.
    pub(crate) fn add_json(&self, v: &mut serde_json::Value) {
        v["pinned_on"] = json!(self.pinned);
        v["prune"] = json!(self.pruned.iter().map(SinkReport::to_json).collect::<Vec<_>>());
    }

    pub(crate) fn print(&self) {
        if !self.pinned.is_empty() {
            println!("  pinned on {}: kept forever", self.pinned.join(", "));
        }
        for r in &self.pruned {
            println!("prune on sink {} ({}):", r.sink, r.location);
            r.print(false);
        }
    }
}

/// Runs `--keep-forever` and `--prune` on each sink that stored the new
/// snapshot; `None` when neither flag is set.
pub(crate) async fn after_backup(
    ctx: &Ctx,
    config: Option<&Config>,
    keep_forever: bool,
    prune: bool,
    outcome: &BackupOutcome,
) -> Result<Option<AfterBackup>> {
    if !keep_forever && !prune {
        return Ok(None);
    }
    let id = &outcome.index.id;
    let mut after = AfterBackup {
        pinned: vec![],
        pruned: vec![],
    };
    for s in outcome.sinks.iter().filter(|s| s.result.is_ok()) {
        let sink = ctx.sink(&s.name, config)?;
        if keep_forever {
            write_pin(sink.as_ref(), id, Some("backup --keep-forever".into()))
                .await
                .map_err(|e| {
                    e.prefix(format!(
                        "snapshot {id} was written; pinning it on sink `{}`",
                        s.name
                    ))
                })?;
            after.pinned.push(s.name.clone());
        }
        if prune {
            let policies = Policies::new(config, &PolicyFlags::default());
            let report = prune_sink(&s.name, sink, Some(&outcome.index.job), &policies, false)
                .await
                .map_err(|e| e.prefix(format!("snapshot {id} was written; pruning sink `{}`", s.name)))?;
            after.pruned.push(report);
        }
    }
    Ok(Some(after))
}

pub(crate) async fn write_pin(sink: &dyn Sink, id: &SnapshotId, reason: Option<String>) -> Result<()> {
    let marker = PinMarker {
        id: id.clone(),
        pinned_at: jiff::Timestamp::now(),
        reason,
        host: coffer_core::hostname(),
    };
    sink.put_bytes(&pin_key(id), marker.to_json().into(), PutOptions::default())
        .await
        .map(|_| ())
}

/// The sinks of `sel` that hold snapshot `id` (by its index).
pub(crate) async fn sinks_holding(
    sinks: &[(String, Arc<dyn Sink>)],
    id: &SnapshotId,
) -> Result<Vec<(String, Arc<dyn Sink>)>> {
    let mut out = Vec::new();
    for (name, sink) in sinks {
        if sink
            .head(&id.index_key())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?
            .is_some()
        {
            out.push((name.clone(), sink.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use coffer_core::{ByteStream, Error, ErrorKind, ObjectMeta, SinkInfo, async_trait};

    use super::*;

    /// A sink that records deletes and fails on the keys it is told to.
    #[derive(Debug, Default)]
    struct RecordingSink {
        deleted: Mutex<Vec<String>>,
        fail_on: Option<String>,
    }

    #[async_trait]
    impl Sink for RecordingSink {
        fn info(&self) -> SinkInfo {
            SinkInfo::new("test", "recording")
        }
        async fn put(&self, _key: &str, _body: ByteStream, _opts: PutOptions) -> Result<u64> {
            Err(Error::new(ErrorKind::Unsupported, "read-only"))
        }
        async fn get(&self, key: &str) -> Result<ByteStream> {
            Err(Error::new(ErrorKind::NotFound, key.to_string()))
        }
        async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>> {
            Ok(vec![])
        }
        async fn delete(&self, key: &str) -> Result<()> {
            if self.fail_on.as_deref() == Some(key) {
                return Err(Error::new(ErrorKind::PermissionDenied, "refused"));
            }
            self.deleted.lock().unwrap().push(key.to_string());
            Ok(())
        }
    }

    #[tokio::test]
    async fn deletes_the_index_first_then_the_object_then_companions() {
        let id: SnapshotId = "20261127T221500Z-3f9a1c2e".parse().unwrap();
        let sink = RecordingSink::default();
        delete_snapshot(&sink, &id, &[format!("{id}.sig")]).await.unwrap();
        assert_eq!(
            *sink.deleted.lock().unwrap(),
            [format!("{id}.json"), format!("{id}.coffer"), format!("{id}.sig")]
        );
        // Interrupted at the object: the index is already gone, so no index
        // points at a missing object.
        let sink = RecordingSink {
            fail_on: Some(id.object_key()),
            ..Default::default()
        };
        assert!(delete_snapshot(&sink, &id, &[]).await.is_err());
        assert_eq!(*sink.deleted.lock().unwrap(), [id.index_key()]);
    }

    #[test]
    fn flags_replace_the_configured_policy_and_keep_its_zone() {
        let none = PolicyFlags::default();
        assert!(none.policy().is_none());
        let flags = PolicyFlags {
            keep_last: Some(3),
            ..Default::default()
        };
        let p = Policies::new(None, &flags);
        let (policy, from) = p.get("s", "j");
        assert_eq!(policy.to_string(), "keep-last 3");
        assert_eq!(from, "flags");
        let (policy, from) = Policies::new(None, &none).get("s", "j");
        assert!(policy.is_empty());
        assert_eq!(from, "nowhere");
    }
}
