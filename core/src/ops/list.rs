//! `list`: the snapshots of a sink, with their signatures judged.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::Serialize;

use super::Unreadable;
use crate::{Catalog, CatalogEntry, IndexSource, Result, Sink, SnapshotId, TrustedSigners};

/// One sink's snapshots: the `--json` output of `coffer list` is an
/// array of these.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SinkListing {
    /// Sink name.
    pub sink: String,
    /// Where it is.
    pub location: String,
    /// Complete and damaged snapshots, oldest first.
    pub snapshots: Vec<SnapshotRow>,
    /// Keys of objects without an index: interrupted backups.
    pub incomplete: Vec<String>,
    /// Indexes that could not be read.
    pub unreadable: Vec<Unreadable>,
}

/// A snapshot as `list` shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SnapshotRow {
    /// Snapshot id.
    pub id: SnapshotId,
    /// Snapshot time (UTC).
    pub created_at: Timestamp,
    /// Job that made it.
    pub job: String,
    /// Host that made it.
    pub host: String,
    /// User tags.
    pub tags: Vec<String>,
    /// Size of the encrypted object in bytes.
    pub size: u64,
    /// SHA-256 of the encrypted object.
    pub sha256: String,
    /// Its sources.
    pub sources: Vec<IndexSource>,
    /// `complete`, `missing-object`, `size-mismatch`, …
    pub state: String,
    /// Kept whatever the retention policy says.
    pub pinned: bool,
    /// `unsigned`, `trusted`, `untrusted` or `bad`.
    pub signature: String,
    /// Fingerprint of the signer, if signed.
    pub signer: Option<String>,
    /// `restore` accepts it under the trusted signers given.
    pub trusted: bool,
    /// `bundle` or `chunked`.
    pub format: crate::chunked::SnapshotFormat,
    /// A chunked snapshot: its chunks and what its backup added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<crate::chunked::IndexChunks>,
}

impl SnapshotRow {
    /// The row of `e`, its signature judged by `trust`.
    pub fn new(e: &CatalogEntry, trust: &TrustedSigners) -> SnapshotRow {
        let t = trust.judge(&e.signature);
        SnapshotRow {
            id: e.index.id.clone(),
            created_at: e.index.created_at,
            job: e.index.job.clone(),
            host: e.index.host.clone(),
            tags: e.index.tags.clone(),
            size: e.index.object.size,
            sha256: e.index.object.sha256.clone(),
            sources: e.index.sources.clone(),
            state: e.state.as_str().to_string(),
            pinned: e.pinned,
            signature: t.as_str().to_string(),
            signer: t.fingerprint().map(str::to_string),
            trusted: trust.enforce(e.index.id.as_str(), &e.signature).is_ok(),
            format: match e.index.chunks {
                Some(_) => crate::chunked::SnapshotFormat::Chunked,
                None => crate::chunked::SnapshotFormat::Bundle,
            },
            chunks: e.index.chunks.clone(),
        }
    }
}

/// Lists one sink.
pub async fn list_sink(
    name: &str,
    sink: &dyn Sink,
    trust: &TrustedSigners,
) -> Result<(Catalog, SinkListing)> {
    let cat = Catalog::load(sink).await?;
    let listing = SinkListing {
        sink: name.to_string(),
        location: sink.info().to_string(),
        snapshots: cat.snapshots.iter().map(|e| SnapshotRow::new(e, trust)).collect(),
        incomplete: cat.incomplete.clone(),
        unreadable: Unreadable::list(&cat),
    };
    Ok((cat, listing))
}
