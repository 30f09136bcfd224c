//! Point-in-time restore planning: which base snapshot and which slices
//! bring a job's sources to a position, checked before anything is
//! restored.
//!
//! The base is the newest complete snapshot of the job whose sources are
//! consistent at or before the target (their index records the position)
//! and whose slice chain runs unbroken from that position to the target.
//! Every slice needed is fetched, its signature judged, its SHA-256 checked
//! and decrypted into an encrypted spill before the restore starts, so a
//! damaged, missing or forged slice fails the restore before the database
//! is touched.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{LogPos, Segment, SliceIndex, StoredSlice, list_slices, needed, open, segments};
use crate::catalog::{Catalog, CatalogEntry, SnapshotState};
use crate::crypto::Identities;
use crate::error::{Error, ErrorKind, Result};
use crate::signing::{AdmittedIndex, TrustedSigners};
use crate::sink::{Sink, SinkExt};
use crate::spill::{SpillBody, SpillTask};

/// A time span the archive can restore to: from a base snapshot's position
/// to the end of its unbroken chain, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Range {
    /// The earliest position (a base snapshot's).
    pub from: LogPos,
    /// The latest position archived.
    pub to: LogPos,
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) … {} ({})",
            self.from.time(),
            self.from,
            self.to.time(),
            self.to
        )
    }
}

/// The ranges restorable from `segments` with bases at `bases`.
pub fn ranges(segments: &[Segment], bases: &[LogPos]) -> Vec<Range> {
    let mut out = Vec::new();
    for seg in segments {
        let first_base = bases
            .iter()
            .filter(|&&b| seg.from.ts <= b && b <= seg.to.ts)
            .min();
        if let Some(&from) = first_base {
            out.push(Range { from, to: seg.to.ts });
        }
    }
    // A base outside every chain restores to its own position.
    for &b in bases {
        if !out.iter().any(|r| r.from <= b && b <= r.to) {
            out.push(Range { from: b, to: b });
        }
    }
    out.sort_by_key(|r| r.from);
    out
}

/// Entries to replay after a snapshot's own: the decrypted slices of one
/// source, concatenated in log order, and the span of them to apply.
#[derive(Clone)]
pub struct LogReplay {
    /// The source (its name in the snapshot).
    pub source: String,
    /// Apply entries after this position (the base's) …
    pub after: LogPos,
    /// … up to and including this one.
    pub until: LogPos,
    /// Slices the entries came from.
    pub slices: usize,
    body: Arc<Mutex<Option<SpillBody>>>,
}

impl std::fmt::Debug for LogReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReplay")
            .field("source", &self.source)
            .field("after", &self.after)
            .field("until", &self.until)
            .field("slices", &self.slices)
            .finish()
    }
}

impl LogReplay {
    /// Takes the entries (once).
    pub fn take(&self) -> Option<SpillBody> {
        self.body.lock().expect("replay lock").take()
    }

    /// Puts entries back (after a check read them).
    pub fn put(&self, body: SpillBody) {
        *self.body.lock().expect("replay lock") = Some(body);
    }
}

/// A point-in-time restore, planned and checked.
pub struct Plan {
    /// The base snapshot.
    pub base: AdmittedIndex,
    /// Per source of the base: the slices to fetch.
    pub sources: Vec<SourcePlan>,
    /// The target position.
    pub target: LogPos,
}

/// The slices of one source a plan needs.
pub struct SourcePlan {
    /// Source name.
    pub source: String,
    /// The base's position.
    pub after: LogPos,
    /// The slices, in log order.
    pub slices: Vec<StoredSlice>,
}

/// The slices of every source of `job` found on `sink` that a snapshot of
/// the job records a position for.
pub async fn chains(
    sink: &dyn Sink,
    catalog: &Catalog,
    job: &str,
) -> Result<Vec<(String, Vec<StoredSlice>, Vec<(String, Error)>)>> {
    let mut names: Vec<String> = catalog
        .snapshots
        .iter()
        .filter(|e| e.index.job == job)
        .flat_map(|e| {
            e.index
                .sources
                .iter()
                .filter(|s| s.position.is_some())
                .map(|s| s.name.clone())
        })
        .collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let (slices, bad) = list_slices(sink, job, &name).await?;
        out.push((name, slices, bad));
    }
    Ok(out)
}

/// The bases of `job` (complete snapshots with a position for `source`).
pub fn bases<'a>(catalog: &'a Catalog, job: &str, source: &str) -> Vec<(&'a CatalogEntry, LogPos)> {
    catalog
        .snapshots
        .iter()
        .filter(|e| e.index.job == job && e.state == SnapshotState::Complete)
        .filter_map(|e| {
            let p = e.index.sources.iter().find(|s| s.name == source)?.position?;
            Some((e, p))
        })
        .collect()
}

/// Plans a restore of `job` to `target`: the newest base at or before it
/// whose every positioned source has an unbroken chain to `target`.
/// Refused (config error, exit 2) when the target is in a gap or past the
/// archive, naming the restorable ranges.
pub async fn plan(
    sink: &dyn Sink,
    catalog: &Catalog,
    trust: &TrustedSigners,
    job: &str,
    target: LogPos,
) -> Result<Plan> {
    let chains = chains(sink, catalog, job).await?;
    if chains.is_empty() {
        return Err(crate::config_error(format!(
            "job `{job}` has no snapshot with a point in time on this sink, so nothing to restore to a time from"
        ))
        .with_hint("a MongoDB source dumped from a replica set records one; run `coffer oplog follow` to archive the oplog after it"));
    }
    let mut candidates: Vec<&CatalogEntry> = catalog
        .snapshots
        .iter()
        .filter(|e| e.index.job == job && e.state == SnapshotState::Complete)
        .collect();
    candidates.sort_by_key(|e| std::cmp::Reverse(e.index.created_at));
    let segs: Vec<(String, Vec<StoredSlice>, Vec<Segment>)> = chains
        .into_iter()
        .map(|(name, slices, _)| {
            let idx: Vec<SliceIndex> = slices.iter().map(|s| s.index.clone()).collect();
            let segs = segments(&idx);
            (name, slices, segs)
        })
        .collect();
    let mut best: Option<(LogPos, &CatalogEntry, Vec<SourcePlan>)> = None;
    for entry in candidates {
        let Some((newest, plans)) = plan_from(entry, &segs, target) else {
            continue;
        };
        if best.as_ref().is_none_or(|(p, _, _)| newest > *p) {
            best = Some((newest, entry, plans));
        }
    }
    let Some((_, entry, sources)) = best else {
        return Err(refusal(catalog, job, target, &segs));
    };
    let base = trust.admit(entry)?;
    for sp in &sources {
        for s in &sp.slices {
            trust
                .enforce(&format!("oplog slice {}", s.index.index_key()), &s.signature)
                .map_err(|e| {
                    e.with_hint(
                        "the slice may be forged: restore to a time before it, or check --trusted-signer",
                    )
                })?;
        }
    }
    Ok(Plan {
        base,
        sources,
        target,
    })
}

/// The slices each chained source needs from base `entry` to `target`,
/// and the base's newest position; `None` when `entry` cannot be the base
/// (a source without a position, one past `target`, or no unbroken chain
/// from it to `target`).
fn plan_from(
    entry: &CatalogEntry,
    segs: &[(String, Vec<StoredSlice>, Vec<Segment>)],
    target: LogPos,
) -> Option<(LogPos, Vec<SourcePlan>)> {
    let mut plans = Vec::new();
    let mut newest = None;
    for (name, slices, segs) in segs {
        let pos = entry
            .index
            .sources
            .iter()
            .find(|s| &s.name == name)
            .and_then(|s| s.position)?;
        if pos > target {
            return None;
        }
        newest = newest.max(Some(pos));
        let chosen: Vec<StoredSlice> = if pos == target {
            Vec::new()
        } else {
            let seg = segs.iter().find(|s| s.covers(pos, target))?;
            let idx: Vec<SliceIndex> = slices.iter().map(|s| s.index.clone()).collect();
            needed(&idx, seg, pos, target)
                .into_iter()
                .map(|n| slices[n].clone())
                .collect()
        };
        plans.push(SourcePlan {
            source: name.clone(),
            after: pos,
            slices: chosen,
        });
    }
    Some((newest?, plans))
}

/// The refusal of a target no base reaches, naming the restorable ranges.
fn refusal(
    catalog: &Catalog,
    job: &str,
    target: LogPos,
    segs: &[(String, Vec<StoredSlice>, Vec<Segment>)],
) -> Error {
    let mut lines = Vec::new();
    for (name, _, s) in segs {
        let b: Vec<LogPos> = bases(catalog, job, name).into_iter().map(|(_, p)| p).collect();
        for r in ranges(s, &b) {
            lines.push(format!("{name}: {r}"));
        }
    }
    let list = if lines.is_empty() {
        "none".to_string()
    } else {
        lines.join("; ")
    };
    Error::new(
        ErrorKind::ConfigInvalid,
        format!(
            "job `{job}` cannot be restored to {} ({target}): no base snapshot with an unbroken oplog chain up to it (in a gap, before the first base, or past what is archived). Restorable: {list}",
            target.time()
        ),
    )
    .with_hint("pick a time inside a restorable range (`coffer oplog status` lists them)")
}

/// Fetches, checks and decrypts every slice of `plan`, into one encrypted
/// spill per source; fails on the first damaged slice, before any restore.
pub async fn fetch(sink: &dyn Sink, plan: &Plan, identities: &Identities) -> Result<Vec<LogReplay>> {
    let mut out = Vec::new();
    for sp in &plan.sources {
        let mut spill = SpillTask::spawn(8 << 20);
        for s in &sp.slices {
            let object = sink.get_bytes(&s.index.object.key).await.map_err(|e| {
                e.with_hint("an oplog slice the chain needs is missing: copy it from another sink, or restore to a time before it")
            })?;
            let plain = open(&s.index, &object, identities)?;
            spill
                .append(&plain)
                .await
                .map_err(|e| Error::io("cannot buffer the oplog slices in an encrypted temp file", e))?;
        }
        let body = spill
            .finish()
            .await
            .map_err(|e| Error::io("cannot buffer the oplog slices", e))?;
        out.push(LogReplay {
            source: sp.source.clone(),
            after: sp.after,
            until: plan.target,
            slices: sp.slices.len(),
            body: Arc::new(Mutex::new(Some(body))),
        });
    }
    Ok(out)
}
