//! What a backup run publishes besides the object: the snapshot's identity
//! and records ([`Snapshot`]), then `<id>.sig` and the public index on each
//! sink that stored the object ([`write_indexes`]).

use bytes::Bytes;
use jiff::Timestamp;

use super::{BackupOutcome, BackupRequest, SinkOutcome};
use crate::bundle::{
    INDEX_FORMAT, Index, IndexEncryption, IndexObject, IndexSource, MANIFEST_FORMAT, Manifest, SnapshotId,
    SourceRecord, SourcesFile, hostname,
};
use crate::error::{Error, ErrorKind, Result};
use crate::sink::{PutOptions, SinkExt};
use crate::source::SourceInfo;

/// The snapshot a run makes: its id, time, host and sources.
pub(super) struct Snapshot {
    pub(super) id: SnapshotId,
    created_at: Timestamp,
    host: String,
    infos: Vec<SourceInfo>,
}

impl Snapshot {
    pub(super) fn new(req: &BackupRequest) -> Snapshot {
        let created_at = req.time.unwrap_or_else(Timestamp::now);
        Snapshot {
            id: SnapshotId::new(created_at),
            created_at,
            host: hostname(),
            infos: req.sources.iter().map(|s| s.info()).collect(),
        }
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
        }
    }
}

/// On each sink whose `put` stored exactly the object: the signature (when
/// signing), then the index last, so an index always means a complete
/// snapshot. One outcome per sink, in order.
pub(super) async fn write_indexes(
    req: &BackupRequest,
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
    let writes = req.sinks.iter().zip(puts).map(|(t, put)| {
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
