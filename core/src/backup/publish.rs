//! What a backup run publishes besides the object: the snapshot's identity
//! and records ([`Snapshot`]), then `<id>.sig` and the public index on each
//! sink that stored the object ([`write_indexes`]).

use bytes::Bytes;
use jiff::Timestamp;

use sha2::{Digest, Sha256};

use super::{BackupOutcome, BackupRequest, SinkOutcome, SinkTarget};
use crate::bundle::{
    INDEX_FORMAT, Index, IndexEncryption, IndexObject, IndexSource, MANIFEST_FORMAT, Manifest, SnapshotId,
    SourceRecord, SourcesFile, hostname,
};
use crate::chunked::IndexChunks;
use crate::chunked::writer::SinkChunks;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::{PutOptions, SinkExt};
use crate::source::SourceInfo;

/// The snapshot a run makes: its id, time, host and sources.
pub(super) struct Snapshot {
    pub(super) id: SnapshotId,
    created_at: Timestamp,
    host: String,
    infos: Vec<SourceInfo>,
    /// Each source's position in its change log, once captured.
    positions: std::collections::BTreeMap<String, crate::slices::LogPos>,
}

impl Snapshot {
    pub(super) fn new(req: &BackupRequest) -> Snapshot {
        let created_at = req.time.unwrap_or_else(Timestamp::now);
        Snapshot {
            id: SnapshotId::new(created_at),
            created_at,
            host: hostname(),
            infos: req.sources.iter().map(|s| s.info()).collect(),
            positions: Default::default(),
        }
    }

    /// Takes the sources' change-log positions from the finished manifest.
    pub(super) fn set_positions(&mut self, manifest: &Manifest) {
        self.positions = manifest
            .sources
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.report.position?)))
            .collect();
    }

    /// `sources.json`, the first entry of the bundle.
    pub(super) fn sources_file(&self) -> SourcesFile {
        SourcesFile {
            id: self.id.clone(),
            sources: self
                .infos
                .iter()
                .map(|i| SourceRecord {
                    name: i.name.clone(),
                    kind: i.kind.to_string(),
                    description: i.description.clone(),
                    origin: i.origin.clone(),
                })
                .collect(),
        }
    }

    /// The manifest before any entry.
    pub(super) fn manifest_base(&self, job: &str) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            id: self.id.clone(),
            job: job.to_string(),
            created_at: self.created_at,
            host: self.host.clone(),
            coffer_version: env!("CARGO_PKG_VERSION").into(),
            sources: vec![],
            entries: vec![],
            total_bytes: 0,
        }
    }

    /// The public index of the finished object.
    pub(super) fn index(&self, req: &BackupRequest, size: u64, sha256: String, plain_size: u64) -> Index {
        let (mode, recipients) = req.encryption.describe();
        Index {
            format: INDEX_FORMAT.into(),
            id: self.id.clone(),
            job: req.job.clone(),
            created_at: self.created_at,
            host: self.host.clone(),
            tags: req.tags.clone(),
            coffer_version: env!("CARGO_PKG_VERSION").into(),
            sources: self
                .infos
                .iter()
                .map(|i| IndexSource {
                    name: i.name.clone(),
                    kind: i.kind.into(),
                    position: self.positions.get(&i.name).copied(),
                })
                .collect(),
            object: IndexObject {
                key: self.id.object_key(),
                size,
                sha256,
                plain_size: Some(plain_size),
            },
            compression: req.compression.name().into(),
            encryption: IndexEncryption {
                scheme: "age".into(),
                mode,
                recipients,
            },
            chunks: None,
        }
    }
}

/// On each sink whose `put` stored exactly the object: the signature (when
/// signing), then the index last, so an index always means a complete
/// snapshot. One outcome per sink, in order.
pub(super) async fn write_indexes(
    req: &BackupRequest,
    targets: &[&SinkTarget],
    index: &Index,
    puts: Vec<Result<u64>>,
) -> Vec<SinkOutcome> {
    let index_bytes = Bytes::from(index.to_json());
    // The signature covers the exact index bytes stored below.
    let sig_bytes = req
        .signing_key
        .as_ref()
        .map(|k| Bytes::from(k.sign_index(&index_bytes).to_json()));
    let size = index.object.size;
    let writes = targets.iter().zip(puts).map(|(t, put)| {
        let index_bytes = index_bytes.clone();
        let sig_bytes = sig_bytes.clone();
        async move {
            let result = async {
                let n = put?;
                if n != size {
                    return Err(Error::new(
                        ErrorKind::Integrity,
                        format!("sink stored {n} bytes, expected {size}"),
                    ));
                }
                publish_index(t, index, index_bytes, sig_bytes).await
            }
            .await;
            SinkOutcome {
                name: t.name.clone(),
                location: t.sink.info().to_string(),
                required: t.required,
                result,
            }
        }
    });
    futures::future::join_all(writes).await
}

/// The signature (when signing), then the index: the last writes of a
/// snapshot on a sink.
async fn publish_index(
    t: &SinkTarget,
    index: &Index,
    index_bytes: Bytes,
    sig_bytes: Option<Bytes>,
) -> Result<()> {
    if let Some(sig) = sig_bytes {
        t.sink
            .put_bytes(&index.id.signature_key(), sig, PutOptions::create())
            .await
            .map_err(|e| e.prefix("writing the signature"))?;
    }
    t.sink
        .put_bytes(&index.id.index_key(), index_bytes, PutOptions::create())
        .await
        .map(|_| ())
}

/// On each chunked sink whose packs are all stored: its chunk list, the
/// signature, then the index, whose object is that list. The lists (and
/// so the indexes) differ between sinks where their packs do. Returns one
/// outcome per sink and the first index written (or made).
pub(super) async fn write_chunked(
    req: &BackupRequest,
    snapshot: &Snapshot,
    targets: &[&SinkTarget],
    results: Vec<Result<SinkChunks>>,
    key_id: &str,
    plain_size: u64,
) -> (Vec<SinkOutcome>, Option<Index>) {
    let writes = targets.iter().zip(results).map(|(t, r)| async move {
        let result = async {
            let chunks = r?;
            let text = Bytes::from(chunks.list.to_object());
            let mut index = snapshot.index(
                req,
                text.len() as u64,
                hex::encode(Sha256::digest(&text)),
                plain_size,
            );
            index.object.key = snapshot.id.chunks_key();
            let locs = Bytes::from(chunks.list.locs_object());
            index.compression = "zstd".into();
            index.chunks = Some(IndexChunks {
                dedup_key: key_id.to_string(),
                chunks: chunks.list.0.len() as u64,
                stored_bytes: chunks.list.stored_bytes(),
                new_chunks: chunks.new_chunks,
                new_bytes: chunks.new_bytes,
            });
            // The locations first: a list is never without them.
            t.sink
                .put_bytes(
                    &crate::chunked::locs_key(&snapshot.id),
                    locs,
                    PutOptions::create(),
                )
                .await
                .map_err(|e| e.prefix("writing the chunk locations"))?;
            t.sink
                .put_bytes(&index.object.key, text, PutOptions::create())
                .await
                .map_err(|e| e.prefix("writing the chunk list"))?;
            let index_bytes = Bytes::from(index.to_json());
            let sig_bytes = req
                .signing_key
                .as_ref()
                .map(|k| Bytes::from(k.sign_index(&index_bytes).to_json()));
            publish_index(t, &index, index_bytes, sig_bytes).await?;
            Ok(index)
        }
        .await;
        let index = result.as_ref().ok().cloned();
        let outcome = SinkOutcome {
            name: t.name.clone(),
            location: t.sink.info().to_string(),
            required: t.required,
            result: result.map(|_| ()),
        };
        (outcome, index)
    });
    let done = futures::future::join_all(writes).await;
    let first = done.iter().find_map(|(_, i)| i.clone());
    (done.into_iter().map(|(o, _)| o).collect(), first)
}

/// The error of a run that stored its object nowhere in the end: the first
/// sink's, with its hint.
pub(super) fn every_sink_failed(outcome: &BackupOutcome) -> Error {
    let first = outcome.sinks.iter().find_map(|s| s.result.as_ref().err());
    let msg = first.map(|e| e.to_string()).unwrap_or_default();
    let mut err = Error::new(
        first.map(|e| e.kind()).unwrap_or(ErrorKind::Unexpected),
        format!("every sink failed: {msg}"),
    );
    if let Some(h) = first.and_then(|e| e.hint()) {
        err = err.with_hint(h);
    }
    err
}
