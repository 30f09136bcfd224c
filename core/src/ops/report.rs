//! Outcome types of the operations whose work lives elsewhere in core
//! (the backup pipeline, restore, verify, copy, locks): what their
//! `--json` output is, built from the core results.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ErrorInfo, PruneReport};
use crate::{
    BackupOutcome, CatalogEntry, CopyOutcome, Index, IndexObject, LockInfo, LockStatus, Manifest,
    RestoreAction, RestoreOutcome, Result, Sink, SnapshotId, SourceRecord, UnlockReport,
};

/// Seconds rounded to milliseconds, as reports show durations.
pub fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The `--json` output of `coffer backup` and `coffer import-runbook`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BackupReport {
    /// The new snapshot.
    pub id: SnapshotId,
    /// Its job.
    pub job: String,
    /// Snapshot time.
    pub created_at: Timestamp,
    /// `import-runbook`: the archive imported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
    /// `import-runbook`: SHA256SUMS lines checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256sums_checked: Option<usize>,
    /// Entries in the bundle.
    pub entries: u64,
    /// Plaintext bytes of file entries.
    pub plain_bytes: u64,
    /// The encrypted object (a chunked snapshot's: its chunk list).
    pub object: IndexObject,
    /// A chunked snapshot: its chunks, and what this run added (on the
    /// first sink that stored it; each sink adds what it lacked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<crate::chunked::IndexChunks>,
    /// Bytes of unchanged files a chunked backup did not read again (its
    /// file cache); 0 for bundles.
    pub reused_bytes: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// What each source captured.
    pub sources: Vec<SourceSummary>,
    /// What each sink did.
    pub sinks: Vec<SinkResult>,
    /// Sinks that hold the snapshot.
    pub stored_on: usize,
    /// Sinks that must hold it for the run to succeed (`null`: every
    /// required sink).
    pub quorum: Option<usize>,
    /// Fewer sinks than needed hold it (exit 4).
    pub partial: bool,
    /// `--keep-forever`: sinks it was pinned on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_on: Option<Vec<String>>,
    /// `--prune`: what retention did on each sink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<Vec<PruneReport>>,
    /// The job's hooks, in the order they ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Vec<HookRun>>,
    /// The wait for the service's health after the hooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthWait>,
}

impl BackupReport {
    /// The report of `outcome`, `seconds` long, with `quorum` and whether
    /// the run counts as complete.
    pub fn new(outcome: &BackupOutcome, seconds: f64, quorum: Option<usize>, complete: bool) -> BackupReport {
        BackupReport {
            id: outcome.index.id.clone(),
            job: outcome.index.job.clone(),
            created_at: outcome.index.created_at,
            imported_from: None,
            sha256sums_checked: None,
            entries: outcome.entries,
            plain_bytes: outcome.plain_bytes,
            object: outcome.index.object.clone(),
            chunks: outcome.index.chunks.clone(),
            reused_bytes: outcome.reused_bytes,
            seconds,
            sources: outcome
                .sources
                .iter()
                .map(|s| SourceSummary {
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    summary: s.report.summary.clone(),
                    details: s.report.details.clone(),
                })
                .collect(),
            sinks: outcome
                .sinks
                .iter()
                .map(|s| SinkResult {
                    name: s.name.clone(),
                    location: s.location.clone(),
                    required: s.required,
                    optional: !s.required,
                    ok: s.result.is_ok(),
                    error: s.result.as_ref().err().map(|e| e.to_string()),
                    hint: s.result.as_ref().err().and_then(|e| e.hint()).map(str::to_string),
                })
                .collect(),
            stored_on: outcome.sinks.iter().filter(|s| s.result.is_ok()).count(),
            quorum,
            partial: !complete,
            pinned_on: None,
            prune: None,
            hooks: None,
            health: None,
        }
    }
}

/// What a source captured.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SourceSummary {
    /// Source name.
    pub name: String,
    /// Plugin kind.
    pub kind: String,
    /// One line for humans.
    pub summary: String,
    /// Plugin-specific figures (no secrets).
    pub details: serde_json::Value,
}

/// What one sink did with the snapshot.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SinkResult {
    /// Sink name.
    pub name: String,
    /// Where it is.
    pub location: String,
    /// Its failure fails the run.
    pub required: bool,
    /// `!required`.
    pub optional: bool,
    /// Object and index are stored.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
}

/// How one hook went.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HookRun {
    /// `pre`, `post`, `on-error`, …
    pub phase: String,
    /// The program run.
    pub program: String,
    /// Exited 0.
    pub ok: bool,
    /// Exit code; `null` when killed or not started.
    pub status: Option<i32>,
    /// Killed at its timeout.
    pub timed_out: bool,
    /// Wall time.
    pub seconds: f64,
    /// Why it could not run.
    pub error: Option<String>,
}

/// How the wait for the service's health went.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HealthWait {
    /// The URL polled (password masked).
    pub url: String,
    /// It answered healthy in time.
    pub ok: bool,
    /// Requests made.
    pub attempts: u32,
    /// Wall time.
    pub seconds: f64,
    /// What the last attempt saw.
    pub last: String,
}

/// The `--json` output of `coffer restore`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: SnapshotId,
    /// The sink it came from.
    pub sink: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// Files checked against `SHA256SUMS`.
    pub files_checked: usize,
    /// What each source did (or would do).
    pub sources: Vec<SourceRestore>,
    /// The job's post-restore checks.
    pub checks: Vec<CheckResult>,
}

impl RestoreReport {
    /// The report of `outcome`.
    pub fn new(
        outcome: &RestoreOutcome,
        sink: &str,
        dry_run: bool,
        checks: Vec<CheckResult>,
    ) -> RestoreReport {
        RestoreReport {
            snapshot: outcome.summary.sources.id.clone(),
            sink: sink.to_string(),
            dry_run,
            files_checked: outcome.summary.files_checked,
            sources: outcome
                .reports
                .iter()
                .map(|(name, r)| SourceRestore {
                    name: name.clone(),
                    summary: r.summary.clone(),
                    actions: r.actions.clone(),
                })
                .collect(),
            checks,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CheckResult {
    /// `http`, `prometheus`, `mongo-counts`, `audit`, or a drill's own
    /// (`restore`).
    pub kind: String,
    /// What was checked, e.g. the URL.
    pub target: String,
    /// It passed.
    pub passed: bool,
    /// The figure, e.g. `200 after 0.3 s`, `12 collections, 48213 documents`.
    pub figure: String,
    /// What to do when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Wall time.
    pub seconds: f64,
    /// Numbers for machines (counts, times, gaps).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl CheckResult {
    /// One line for humans (and its hint when it failed).
    pub fn line(&self) -> String {
        let mark = if self.passed { "ok    " } else { "FAILED" };
        let mut line = format!("{mark} {:<12} {}: {}", self.kind, self.target, self.figure);
        if let (false, Some(h)) = (self.passed, &self.hint) {
            line.push_str(&format!("\n       hint: {h}"));
        }
        line
    }
}

/// The `--json` output of `coffer check`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CheckReport {
    /// The job whose checks ran.
    pub job: String,
    /// Every check passed.
    pub passed: bool,
    /// One per check, in the order configured.
    pub checks: Vec<CheckResult>,
}

/// What one source's restore did.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SourceRestore {
    /// Source name.
    pub name: String,
    /// One line for humans.
    pub summary: String,
    /// Each change made (or planned).
    pub actions: Vec<RestoreAction>,
}

/// One snapshot's verification: the `--json` output of `coffer verify` is
/// an array of these.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct VerifyResult {
    /// Sink name.
    pub sink: String,
    /// Snapshot id (or the key of an unreadable index).
    pub id: String,
    /// It verified.
    pub ok: bool,
    /// The bundle was decrypted and every file checked (`--deep`).
    pub deep: bool,
    /// Files checked against `SHA256SUMS` (deep only).
    pub files_checked: Option<usize>,
    /// Why it failed.
    pub error: Option<ErrorInfo>,
    /// `--sample`: how far the rotation is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<SampleProgress>,
}

/// Where a `verify --sample` rotation stands.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SampleProgress {
    /// What rotates: `snapshots` (bundles, and every snapshot of a deep
    /// check) or `packs` (the packs of chunked snapshots).
    pub unit: String,
    /// Rotation number.
    pub cycle: u64,
    /// Snapshots (or packs) verified in this rotation.
    pub covered: usize,
    /// Snapshots (or packs) on the sink.
    pub of: usize,
}

/// The `--json` output of `coffer show`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ShowOutcome {
    /// Sink it was read from.
    pub sink: String,
    /// `complete`, `missing-object`, …
    pub state: String,
    /// The public index.
    pub index: Index,
    /// `unsigned`, `trusted`, `untrusted` or `bad`.
    pub signature: String,
    /// Fingerprint of the signer.
    pub signer: Option<String>,
    /// The manifest, when a key was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// The sources as recorded, when a key was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<SourceRecord>>,
}

/// The `--json` output of `coffer copy`, `export` and `import`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TransferReport {
    /// Where the snapshots came from.
    pub from: String,
    /// Where they went.
    pub to: String,
    /// One per snapshot.
    pub snapshots: Vec<TransferItem>,
    /// `export`: the restore kit (RESTORE.txt, sums, signers, custody log)
    /// was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kit: Option<bool>,
    /// `import`: the custody log on the medium got its entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custody_logged: Option<bool>,
}

/// What happened to one snapshot in a transfer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TransferItem {
    /// Snapshot id (or key of an unreadable index).
    pub id: String,
    /// It is on the target.
    pub ok: bool,
    /// `copied`, `skipped` or `failed`.
    pub status: String,
    /// Ciphertext bytes transferred.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Size of the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// An identical object left by an interrupted copy was reused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_object: Option<bool>,
    /// Companion keys written (`<id>.sig`, `<id>.pin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub companions: Option<Vec<String>>,
    /// The signature as judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

impl TransferReport {
    /// The report of a batch of copies from `from` to `to`: one item per
    /// snapshot, in order.
    pub fn new(
        from: &dyn Sink,
        to: &dyn Sink,
        results: &[(CatalogEntry, Result<CopyOutcome>)],
    ) -> TransferReport {
        TransferReport {
            from: from.info().to_string(),
            to: to.info().to_string(),
            snapshots: results
                .iter()
                .map(|(e, r)| match r {
                    Ok(o) => TransferItem::done(o),
                    Err(err) => TransferItem::failed(e.index.id.as_str(), err.into()),
                })
                .collect(),
            kit: None,
            custody_logged: None,
        }
    }
}

impl TransferItem {
    /// The item of a copy that succeeded.
    pub fn done(o: &CopyOutcome) -> TransferItem {
        TransferItem {
            id: o.id.to_string(),
            ok: true,
            status: o.status.as_str().to_string(),
            bytes: Some(o.bytes),
            size: Some(o.index.object.size),
            reused_object: Some(o.reused_object),
            companions: Some(o.companions.clone()),
            signature: Some(o.signature.as_str().to_string()),
            error: None,
        }
    }

    /// The item of a copy that failed.
    pub fn failed(id: &str, error: ErrorInfo) -> TransferItem {
        TransferItem {
            id: id.to_string(),
            ok: false,
            status: "failed".into(),
            bytes: None,
            size: None,
            reused_object: None,
            companions: None,
            signature: None,
            error: Some(error),
        }
    }
}

/// What `unlock` did on one sink: its `--json` output is an array of these.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SinkUnlock {
    /// Sink name.
    pub sink: String,
    /// Locks removed.
    pub removed: Vec<LockRow>,
    /// Locks kept (live, unless `--all`).
    pub kept: Vec<LockRow>,
}

impl SinkUnlock {
    /// The rows of `report`.
    pub fn new(sink: &str, report: &UnlockReport) -> SinkUnlock {
        SinkUnlock {
            sink: sink.to_string(),
            removed: report.removed.iter().map(LockRow::new).collect(),
            kept: report.kept.iter().map(LockRow::new).collect(),
        }
    }
}

/// A lock object.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LockRow {
    /// Its key.
    pub key: String,
    /// Its holder is gone or it was not refreshed in time.
    pub stale: bool,
    /// Its content (`null`: unreadable).
    pub lock: Option<LockInfo>,
    /// Who holds it, for humans.
    pub holder: String,
}

impl LockRow {
    fn new(l: &LockStatus) -> LockRow {
        LockRow {
            key: l.key.clone(),
            stale: l.stale,
            lock: l.info.clone(),
            holder: l.describe(),
        }
    }
}

/// The `--json` output of `coffer keygen`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct KeygenOutcome {
    /// The public recipient to encrypt to.
    pub recipient: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Where the identity was written (mode 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
}

/// The `--json` output of `coffer keygen --signing`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SignerKeygenOutcome {
    /// The public key to trust (`coffer-sign-ed25519:…`).
    pub signer: String,
    /// The same key in OpenSSH form.
    pub ssh: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Where the signing key was written (mode 0600).
    pub signing_key_file: String,
}

/// The `--json` output of `coffer keycheck`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct KeycheckReport {
    /// Every identity opened the snapshots it must.
    pub passed: bool,
    /// One per (sink, job, identity).
    pub checks: Vec<KeycheckRow>,
}

/// Whether one identity opens one job's newest snapshot.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct KeycheckRow {
    /// Sink name.
    pub sink: String,
    /// Job.
    pub job: String,
    /// The snapshot tried.
    pub snapshot: String,
    /// The identity (file or fingerprint, never the key).
    pub identity: String,
    /// It opened.
    pub ok: bool,
    /// Why not.
    pub error: Option<ErrorInfo>,
}

/// The `--json` output of `coffer init`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InitOutcome {
    /// The config file written.
    pub written: String,
}

/// The `--json` output of `coffer sink init`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SinkReady {
    /// The sink as given.
    pub sink: String,
    /// Where it is.
    pub location: String,
    /// It is ready for backups.
    pub ready: bool,
}
