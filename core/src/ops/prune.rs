//! `prune`: apply retention to a sink, after the safety-floor check.
//!
//! The decisions come from the pure [`crate::apply`]; this operation feeds
//! it the catalog of a sink under the sink's exclusive lock, checks the
//! safety floor before anything is deleted and deletes in a crash-safe
//! order. Per job, the newest `complete` snapshot's object is read back
//! and its SHA-256 compared with its index (no key needed), walking back
//! until one verifies; that one is never deleted, and with none verified
//! nothing is.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::Serialize;

use super::Unreadable;
use crate::{
    Catalog, CatalogEntry, Decision, ErrorKind, LockGuard, Result, RetentionPolicy, Sink, SinkExt,
    SnapshotId, SnapshotMeta, SnapshotState, pin_key,
};

/// Where each job's policy comes from. The CLI resolves flags > the sink's
/// `retention` > the job's; a library caller can return a fixed policy.
pub trait PolicySource: Send + Sync {
    /// The policy for `job` on the sink named `sink`, and where it comes
    /// from (`flags`, `[sink.NAME]`, `[job.NAME]`, `nowhere`).
    fn policy(&self, sink: &str, job: &str) -> (RetentionPolicy, String);
}

impl PolicySource for RetentionPolicy {
    fn policy(&self, _sink: &str, _job: &str) -> (RetentionPolicy, String) {
        (self.clone(), "request".into())
    }
}

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneRequest {
    /// Only this job's snapshots.
    pub job: Option<String>,
    /// Decide and report; delete nothing (and take no lock).
    pub dry_run: bool,
    /// The time retention counts back from (the caller's clock, so a test
    /// or a replay can set it).
    pub now: Timestamp,
    /// When not empty, only snapshots these signers signed count toward
    /// retention: the others are neither counted nor deleted (reported as
    /// kept, "not counted"), so a compromised backup host cannot push
    /// good snapshots out of `keep-last` with junk ones of its own.
    pub trusted: crate::TrustedSigners,
}

/// What prune did (or would do) on one sink: the `--json` output of
/// `coffer prune` is an array of these.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PruneReport {
    /// Sink name.
    pub sink: String,
    /// Where it is, e.g. `local:/backups`.
    pub location: String,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// The policy of each job met on the sink.
    pub policies: Vec<JobPolicy>,
    /// Every snapshot of the jobs pruned, oldest first per job.
    pub snapshots: Vec<PruneRow>,
    /// Per job with a policy: the snapshot kept as the safety floor.
    pub floors: Vec<Floor>,
    /// Indexes that could not be read (left alone).
    pub unreadable: Vec<Unreadable>,
    /// Packs and chunk lists no kept snapshot references: removed (or,
    /// in a dry run, what would be). `null` on a sink without chunks.
    pub chunks: Option<crate::chunked::SweepOutcome>,
    /// Oplog slices older than every kept snapshot of their job: removed
    /// (or, in a dry run, what would be), per job and source.
    #[serde(default)]
    pub slices: Vec<SlicePrune>,
}

/// The oplog slices prune removed (or would) for one job's source: those
/// whose entries all precede the oldest kept snapshot's position, so
/// every kept snapshot keeps its chain onward. The newest slice always
/// stays (the follower resumes after it).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SlicePrune {
    /// Job.
    pub job: String,
    /// Source followed.
    pub source: String,
    /// The oldest kept snapshot's position; `null`: no kept snapshot has
    /// one, so no slice is removed.
    pub kept_from: Option<crate::slices::LogPos>,
    /// Slices removed (or that would be).
    pub removed: usize,
    /// Their bytes.
    pub removed_bytes: u64,
    /// The range they covered: from the first one's `prev` to the last
    /// one's `last`.
    pub removed_range: Option<(crate::slices::LogPos, crate::slices::LogPos)>,
    /// Slices left.
    pub left: usize,
}

/// A job's policy and where it comes from.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct JobPolicy {
    /// Job name.
    pub job: String,
    /// The policy applied.
    pub policy: RetentionPolicy,
    /// `flags`, `[sink.NAME]`, `[job.NAME]` or `nowhere`.
    pub from: String,
    /// No rule: nothing of this job is deleted.
    pub empty: bool,
}

/// One snapshot's verdict.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PruneRow {
    /// Snapshot id.
    pub id: SnapshotId,
    /// Snapshot time.
    pub time: Timestamp,
    /// Its job.
    pub job: String,
    /// Kept by a rule (or the floor, or a pin).
    pub keep: bool,
    /// Why it is kept, e.g. `last 1/3`, `daily 2/30 (2026-11-25)`, `pinned`.
    pub reasons: Vec<String>,
    /// `complete`, `missing-object`, …
    pub state: String,
    /// Deleted (false in dry runs and for kept snapshots).
    pub deleted: bool,
    /// Why a planned delete did not happen (pinned meanwhile).
    pub skipped: Option<String>,
    /// The SHA-256 check of the floor found the object corrupt.
    pub corrupt: Option<String>,
}

/// The check of the snapshot a job keeps as its safety floor.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Floor {
    /// Job name.
    pub job: String,
    /// The newest snapshot whose object matches its index; never deleted.
    /// `null`: none verified, so nothing of the job was deleted.
    pub verified: Option<SnapshotId>,
    /// Newer snapshots whose object failed the check.
    pub corrupt: Vec<SnapshotId>,
}

impl PruneReport {
    /// Snapshots deleted.
    pub fn deleted(&self) -> usize {
        self.snapshots.iter().filter(|r| r.deleted).count()
    }

    /// Snapshots left on the sink (of the jobs pruned).
    pub fn left(&self) -> usize {
        self.snapshots.len() - self.deleted()
    }

    /// The policy of `job` as reported.
    pub fn policy_of(&self, job: &str) -> Option<&JobPolicy> {
        self.policies.iter().find(|p| p.job == job)
    }

    /// The floor check of `job` (jobs with a policy only).
    pub fn floor_of(&self, job: &str) -> Option<&Floor> {
        self.floors.iter().find(|f| f.job == job)
    }
}

/// Applies the policies to one sink; deletes unless `req.dry_run`. Holds
/// the sink's exclusive lock while deciding and deleting.
pub async fn prune_sink(
    name: &str,
    sink: Arc<dyn Sink>,
    req: &PruneRequest,
    policies: &dyn PolicySource,
) -> Result<PruneReport> {
    let guard = if req.dry_run {
        None
    } else {
        Some(crate::acquire_exclusive(sink.clone(), "prune").await?)
    };
    let result = prune_locked(name, sink.as_ref(), req, policies, guard.as_ref()).await;
    if let Some(g) = guard {
        g.release().await;
    }
    result
}

async fn prune_locked(
    name: &str,
    sink: &dyn Sink,
    req: &PruneRequest,
    policies: &dyn PolicySource,
    guard: Option<&LockGuard>,
) -> Result<PruneReport> {
    let cat = Catalog::load(sink).await?;
    let now = req.now;
    let mut by_job: BTreeMap<&str, Vec<&CatalogEntry>> = BTreeMap::new();
    let mut not_counted = Vec::new();
    for e in &cat.snapshots {
        if req.job.as_deref().is_none_or(|j| j == e.index.job) {
            if !req.trusted.is_empty() && req.trusted.enforce(e.index.id.as_str(), &e.signature).is_err() {
                not_counted.push(e);
                continue;
            }
            by_job.entry(e.index.job.as_str()).or_default().push(e);
        }
    }
    let mut report = PruneReport {
        sink: name.to_string(),
        location: sink.info().to_string(),
        dry_run: req.dry_run,
        policies: Vec::new(),
        snapshots: Vec::new(),
        floors: Vec::new(),
        unreadable: Unreadable::list(&cat),
        chunks: None,
        slices: Vec::new(),
    };
    for (job, entries) in by_job {
        let (policy, from) = policies.policy(name, job);
        let floor = if policy.is_empty() {
            None
        } else {
            Some(check_floor(sink, job, &entries, now).await?)
        };
        decide(&mut report, &entries, &policy, floor.as_ref(), now);
        report.policies.push(JobPolicy {
            job: job.to_string(),
            empty: policy.is_empty(),
            policy,
            from,
        });
        report.floors.extend(floor);
    }
    for e in not_counted {
        report.snapshots.push(PruneRow {
            id: e.index.id.clone(),
            time: e.index.created_at,
            job: e.index.job.clone(),
            keep: true,
            reasons: vec![format!(
                "not counted: {} (no trusted signer signed it)",
                req.trusted.judge(&e.signature).as_str()
            )],
            state: e.state.as_str().to_string(),
            deleted: false,
            skipped: None,
            corrupt: None,
        });
    }
    if !req.dry_run {
        delete_unkept(sink, &cat, &mut report, guard).await?;
    }
    sweep_chunks(sink, &cat, &mut report, req.dry_run, guard).await?;
    prune_slices(sink, &cat, &mut report, req.dry_run, guard).await?;
    Ok(report)
}

/// Removes the oplog slices of each pruned job that only hold entries
/// before its oldest kept snapshot's position.
async fn prune_slices(
    sink: &dyn Sink,
    cat: &Catalog,
    report: &mut PruneReport,
    dry_run: bool,
    guard: Option<&LockGuard>,
) -> Result<()> {
    let jobs: Vec<String> = report.policies.iter().map(|p| p.job.clone()).collect();
    for job in jobs {
        let prefix = format!("{}{job}/", crate::slices::SLICES_PREFIX);
        let mut sources: Vec<String> = sink
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|o| o.key[prefix.len()..].split_once('/').map(|(s, _)| s.to_string()))
            .collect();
        sources.sort();
        sources.dedup();
        for source in sources {
            let gone = |id: &SnapshotId| report.snapshots.iter().any(|r| &r.id == id && !r.keep);
            let kept_from = cat
                .snapshots
                .iter()
                .filter(|e| e.index.job == job && !gone(&e.index.id))
                .filter_map(|e| e.index.sources.iter().find(|s| s.name == source)?.position)
                .min();
            let (slices, _) = crate::slices::list_slices(sink, &job, &source).await?;
            let mut row = SlicePrune {
                job: job.clone(),
                source: source.clone(),
                kept_from,
                removed: 0,
                removed_bytes: 0,
                removed_range: None,
                left: slices.len(),
            };
            if let Some(from) = kept_from {
                let newest = slices.len().saturating_sub(1);
                for (n, s) in slices.iter().enumerate() {
                    if n == newest || s.index.last.ts > from {
                        break;
                    }
                    if !dry_run {
                        if let Some(g) = guard {
                            g.ensure_held()?;
                        }
                        crate::slices::delete_slice(sink, &s.index).await?;
                    }
                    row.removed += 1;
                    row.left -= 1;
                    row.removed_bytes += s.index.object.size;
                    let start = row.removed_range.map_or(s.index.prev.ts, |(a, _)| a);
                    row.removed_range = Some((start, s.index.last.ts));
                }
            }
            if row.left + row.removed > 0 {
                report.slices.push(row);
            }
        }
    }
    Ok(())
}

/// Removes the packs no snapshot left on the sink references
/// ([`crate::chunked::sweep`]: safe beside backups on other hosts, which
/// hold shared locks; it skips while one runs). In a dry run, counts what
/// would go once the planned deletes are done. Nothing to do on a sink
/// that never held chunks.
async fn sweep_chunks(
    sink: &dyn Sink,
    cat: &Catalog,
    report: &mut PruneReport,
    dry_run: bool,
    guard: Option<&LockGuard>,
) -> Result<()> {
    let chunked = cat.snapshots.iter().any(|e| e.index.chunks.is_some())
        || cat
            .incomplete
            .iter()
            .any(|k| k.ends_with(crate::chunked::CHUNKS_SUFFIX))
        || !sink.list(crate::chunked::DATA_PREFIX).await?.is_empty();
    if !chunked {
        return Ok(());
    }
    if let Some(g) = guard {
        g.ensure_held()?;
    }
    let gone: std::collections::HashSet<SnapshotId> = report
        .snapshots
        .iter()
        .filter(|r| dry_run && !r.keep)
        .map(|r| r.id.clone())
        .collect();
    let swept = crate::chunked::sweep(sink, &gone, dry_run).await?;
    if let Some(why) = &swept.skipped {
        tracing::info!("not removing unused packs: {why}");
    }
    report.chunks = Some(swept);
    Ok(())
}

/// Adds the verdicts on one job's snapshots to `report`.
fn decide(
    report: &mut PruneReport,
    entries: &[&CatalogEntry],
    policy: &RetentionPolicy,
    floor: Option<&Floor>,
    now: Timestamp,
) {
    let corrupt = |id: &SnapshotId| floor.is_some_and(|f| f.corrupt.contains(id));
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
    let no_floor = floor.is_some_and(|f| f.verified.is_none());
    for mut decision in crate::apply(&metas, policy, now) {
        let entry = entries
            .iter()
            .find(|e| e.index.id == decision.id)
            .expect("a decision per snapshot");
        if no_floor && !decision.keep {
            decision.keep = true;
            decision.reasons.push("no snapshot verified".into());
        }
        let Decision {
            id,
            time,
            job,
            keep,
            reasons,
        } = decision;
        report.snapshots.push(PruneRow {
            corrupt: corrupt(&id).then(|| "object's SHA-256 does not match its index".to_string()),
            id,
            time,
            job,
            keep,
            reasons,
            state: entry.state.as_str().to_string(),
            deleted: false,
            skipped: None,
        });
    }
}

/// Deletes the snapshots no rule keeps, re-checking the lock and pins
/// before each.
async fn delete_unkept(
    sink: &dyn Sink,
    cat: &Catalog,
    report: &mut PruneReport,
    guard: Option<&LockGuard>,
) -> Result<()> {
    for row in report.snapshots.iter_mut().filter(|r| !r.keep) {
        if let Some(g) = guard {
            g.ensure_held()?;
        }
        let id = &row.id;
        // `coffer pin` may have run since the listing.
        if sink.head(&pin_key(id)).await?.is_some() {
            row.skipped = Some("pinned while pruning".into());
            continue;
        }
        let entry = cat.snapshots.iter().find(|e| &e.index.id == id);
        let companions = entry.map(|e| e.companions.clone()).unwrap_or_default();
        let object = entry.map_or_else(|| id.object_key(), |e| e.index.object.key.clone());
        delete_snapshot(sink, id, &object, &companions)
            .await
            .map_err(|e| {
                e.prefix(format!("deleting snapshot {id}")).with_hint(
                    "run `coffer prune` again; its index went first, so no index points at a missing object",
                )
            })?;
        row.deleted = true;
    }
    Ok(())
}

/// Finds the safety floor of one job before anything is deleted: walks its
/// snapshots newest first and checks each object's size and SHA-256
/// against its index (no key needed) until one verifies. A corrupt newest
/// snapshot thus never lets retention delete the last good ones.
async fn check_floor(sink: &dyn Sink, job: &str, entries: &[&CatalogEntry], now: Timestamp) -> Result<Floor> {
    let mut floor = Floor {
        job: job.to_string(),
        ..Floor::default()
    };
    let candidates = entries
        .iter()
        .rev()
        .filter(|e| e.index.created_at <= now && e.state == SnapshotState::Complete);
    for e in candidates {
        match crate::verify_stored(sink, &e.index, None).await {
            Ok(()) => {
                floor.verified = Some(e.index.id.clone());
                break;
            }
            Err(err) if err.kind() == ErrorKind::Integrity => {
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

/// Deletes the index first (the snapshot stops existing), then its
/// object (the ciphertext, or a chunked snapshot's chunk list: its packs
/// go in [`crate::chunked::sweep`]), then companions such as a signature,
/// so an interrupted prune never leaves an index pointing at nothing.
pub async fn delete_snapshot(
    sink: &dyn Sink,
    id: &SnapshotId,
    object: &str,
    companions: &[String],
) -> Result<()> {
    sink.delete(&id.index_key()).await?;
    sink.delete(object).await?;
    for key in companions {
        sink.delete(key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{ByteStream, Error, ObjectMeta, PutOptions, SinkInfo, async_trait};

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
        delete_snapshot(&sink, &id, &id.object_key(), &[format!("{id}.sig")])
            .await
            .unwrap();
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
        assert!(delete_snapshot(&sink, &id, &id.object_key(), &[]).await.is_err());
        assert_eq!(*sink.deleted.lock().unwrap(), [id.index_key()]);
    }
}
