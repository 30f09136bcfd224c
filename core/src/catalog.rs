//! The snapshots on a sink: every `<id>.json` index, checked against the
//! object it names. An object without an index is an interrupted backup and
//! never counts as a snapshot.

use std::collections::HashMap;

use crate::bundle::{INDEX_SUFFIX, Index, OBJECT_SUFFIX, SIGNATURE_SUFFIX, SnapshotId};
use crate::chunked::CHUNKS_SUFFIX;
use crate::error::{Error, ErrorKind, Result};
use crate::retention::pin_key;
use crate::signing::{SignatureState, check_signature};
use crate::sink::{ObjectMeta, Sink, SinkExt};

/// The state of a listed snapshot, from the listing alone (no hashing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    /// Index and object present, sizes agree.
    Complete,
    /// The index names an object that is missing.
    ObjectMissing,
    /// The object's size differs from the index.
    SizeMismatch,
}

impl SnapshotState {
    /// Stable name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Complete => "complete",
            SnapshotState::ObjectMissing => "object-missing",
            SnapshotState::SizeMismatch => "size-mismatch",
        }
    }
}

/// A snapshot on a sink.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    /// Its index.
    pub index: Index,
    /// Listing state.
    pub state: SnapshotState,
    /// A pin marker `<id>.pin` exists: retention never deletes it.
    pub pinned: bool,
    /// Other objects of this snapshot besides the index and the ciphertext
    /// (`<id>.pin`, a signature …), in key order.
    pub companions: Vec<String>,
    /// What `<id>.sig` says about the exact index bytes (before any trust
    /// decision: see [`crate::TrustedSigners::enforce`]).
    pub signature: SignatureState,
}

/// All snapshots on one sink, oldest first.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Snapshots with an index.
    pub snapshots: Vec<CatalogEntry>,
    /// Objects with no index: interrupted backups (or a backup running now).
    pub incomplete: Vec<String>,
    /// Indexes that could not be read, with the reason.
    pub unreadable: Vec<(String, String)>,
}

/// Keys `<id>.<anything>` other than the index and the object: companions
/// such as the pin marker `<id>.pin`, never snapshots or indexes themselves.
fn companions_of(objects: &[ObjectMeta], id: &SnapshotId) -> Vec<String> {
    let (index, object, chunks) = (id.index_key(), id.object_key(), id.chunks_key());
    let mut keys: Vec<String> = objects
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| {
            k.strip_prefix(id.as_str())
                .is_some_and(|rest| rest.starts_with('.') && !rest.contains('/'))
                && *k != index
                && *k != object
                && *k != chunks
        })
        .map(str::to_string)
        .collect();
    keys.sort();
    keys
}

/// Reads one index and the signature beside it (when listed), checked
/// against the index's exact bytes later.
async fn read_index(
    sink: &dyn Sink,
    key: &str,
    listed: &HashMap<&str, &ObjectMeta>,
) -> (String, Result<bytes::Bytes>, Result<Option<bytes::Bytes>>) {
    let id = key.strip_suffix(INDEX_SUFFIX).unwrap_or(key);
    let sig_key = format!("{id}{SIGNATURE_SUFFIX}");
    let sig = if listed.contains_key(sig_key.as_str()) {
        match sink.get_bytes(&sig_key).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    } else {
        Ok(None)
    };
    (key.to_string(), sink.get_bytes(key).await, sig)
}

/// Parses an index and checks that it names its own snapshot's object.
fn parse_index(bytes: &[u8], key: &str) -> Result<Index> {
    let index = Index::from_json(bytes, key)?;
    let own = match index.chunks {
        None => index.id.object_key(),
        Some(_) => index.id.chunks_key(),
    };
    if index.object.key == own {
        Ok(index)
    } else {
        Err(
            Error::new(ErrorKind::Integrity, "index names another snapshot's object")
                .with_context("object", &index.object.key),
        )
    }
}

impl Catalog {
    /// Reads the catalog of `sink`.
    pub async fn load(sink: &dyn Sink) -> Result<Catalog> {
        let objects = sink.list("").await?;
        let by_key: HashMap<&str, &ObjectMeta> = objects.iter().map(|o| (o.key.as_str(), o)).collect();
        let mut cat = Catalog::default();
        let mut indexed = std::collections::HashSet::new();
        let index_keys: Vec<&ObjectMeta> = objects
            .iter()
            .filter(|o| {
                o.key
                    .strip_suffix(INDEX_SUFFIX)
                    .is_some_and(|id| !id.contains('/') && id.parse::<SnapshotId>().is_ok())
            })
            .collect();
        let reads = index_keys.iter().map(|o| read_index(sink, &o.key, &by_key));
        for (key, bytes, sig) in futures::future::join_all(reads).await {
            let signature = match (&bytes, sig) {
                (Ok(b), Ok(sig)) => check_signature(b, sig.as_deref()),
                (_, Err(e)) => SignatureState::Bad(format!("unreadable signature: {e}")),
                (Err(_), _) => SignatureState::Unsigned,
            };
            match bytes.and_then(|b| parse_index(&b, &key)) {
                Ok(index) => {
                    indexed.insert(index.object.key.clone());
                    let state = match by_key.get(index.object.key.as_str()) {
                        None => SnapshotState::ObjectMissing,
                        Some(o) if o.size != index.object.size => SnapshotState::SizeMismatch,
                        Some(_) => SnapshotState::Complete,
                    };
                    let companions = companions_of(&objects, &index.id);
                    let pinned = companions.iter().any(|k| *k == pin_key(&index.id));
                    cat.snapshots.push(CatalogEntry {
                        index,
                        state,
                        pinned,
                        companions,
                        signature,
                    });
                }
                // Deleted between list and get (a concurrent prune): skip.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    // Its object belongs to a snapshot with a corrupt index,
                    // not to an interrupted backup.
                    if let Some(id) = key.strip_suffix(INDEX_SUFFIX) {
                        indexed.insert(format!("{id}{OBJECT_SUFFIX}"));
                        indexed.insert(format!("{id}{CHUNKS_SUFFIX}"));
                    }
                    cat.unreadable.push((key, e.to_string()))
                }
            }
        }
        for o in &objects {
            let object = o.key.ends_with(OBJECT_SUFFIX) || o.key.ends_with(CHUNKS_SUFFIX);
            if object && !o.key.contains('/') && !indexed.contains(&o.key) {
                cat.incomplete.push(o.key.clone());
            }
        }
        cat.snapshots
            .sort_by(|a, b| (a.index.created_at, &a.index.id).cmp(&(b.index.created_at, &b.index.id)));
        Ok(cat)
    }

    /// The snapshots a selection names, oldest first, each once: every one
    /// (`all`), the newest (`latest`, or no spec), else each of `specs`
    /// (`latest`, an id or a unique prefix).
    pub fn select(&self, specs: &[String], latest: bool, all: bool) -> Result<Vec<CatalogEntry>> {
        if all {
            return Ok(self.snapshots.clone());
        }
        if latest || specs.is_empty() {
            return Ok(vec![self.resolve("latest")?.clone()]);
        }
        let mut out: Vec<CatalogEntry> = Vec::new();
        for s in specs {
            let e = self.resolve(s)?;
            if !out.iter().any(|o| o.index.id == e.index.id) {
                out.push(e.clone());
            }
        }
        out.sort_by(|a, b| a.index.id.cmp(&b.index.id));
        Ok(out)
    }

    /// Finds a snapshot by `latest`, its full id, or a unique prefix of it.
    ///
    /// A snapshot whose index is unreadable is found too, as an integrity
    /// failure: a corrupt index never reads as "no such snapshot", and
    /// `latest` never falls back past one.
    pub fn resolve(&self, spec: &str) -> Result<&CatalogEntry> {
        self.resolve_in(spec, None)
    }

    /// [`Catalog::resolve`] where `latest` means the newest snapshot of
    /// `job` when one is given (an id or prefix names one snapshot, of
    /// whatever job).
    pub fn resolve_in(&self, spec: &str, job: Option<&str>) -> Result<&CatalogEntry> {
        self.resolve_any(spec, job)
    }

    fn resolve_any(&self, spec: &str, job: Option<&str>) -> Result<&CatalogEntry> {
        let corrupt = |what: &str, key: &str, err: &str| {
            Error::new(ErrorKind::Integrity, format!("{what} {key} is corrupt: {err}"))
                .with_context("key", key)
                .with_hint("the snapshot cannot be trusted on this sink; copy it again from another sink (`coffer copy`), or use another snapshot (`coffer list`)")
        };
        let unreadable_id = |key: &str| {
            key.strip_suffix(INDEX_SUFFIX)
                .and_then(|id| id.parse::<SnapshotId>().ok())
        };
        if spec == "latest" {
            let latest = self
                .snapshots
                .iter()
                .rev()
                .find(|s| job.is_none_or(|j| s.index.job == j));
            // An unreadable index newer than the latest readable one may be
            // the real latest: never fall back to an older one silently.
            let newer_unreadable = self
                .unreadable
                .iter()
                .find(|(key, _)| unreadable_id(key).is_some_and(|id| latest.is_none_or(|l| id > l.index.id)));
            if let Some((key, err)) = newer_unreadable {
                return Err(corrupt("the newest snapshot's index", key, err));
            }
            return latest.ok_or_else(|| match job {
                Some(j) if !self.snapshots.is_empty() => Error::new(
                    ErrorKind::NotFound,
                    format!("the sink holds no snapshot of job `{j}`"),
                )
                .with_hint("`coffer list` shows the jobs of the snapshots it holds"),
                _ => Error::new(ErrorKind::NotFound, "the sink holds no snapshot")
                    .with_hint("run `coffer backup` first, or check the --sink location"),
            });
        }
        let matches: Vec<_> = self
            .snapshots
            .iter()
            .filter(|s| s.index.id.as_str().starts_with(spec))
            .collect();
        let corrupt_matches: Vec<_> = self
            .unreadable
            .iter()
            .filter(|(key, _)| unreadable_id(key).is_some_and(|id| id.as_str().starts_with(spec)))
            .collect();
        match (matches.as_slice(), corrupt_matches.as_slice()) {
            ([one], []) => Ok(one),
            ([], [(key, err)]) => Err(corrupt("the index", key, err)),
            ([], []) if self.snapshots.is_empty() => {
                Err(Error::new(ErrorKind::NotFound, "the sink holds no snapshot")
                    .with_hint("run `coffer backup` first, or check the --sink location"))
            }
            ([], []) => Err(Error::new(ErrorKind::NotFound, format!("no snapshot `{spec}`"))
                .with_hint("`coffer list --sink S` shows the snapshots")),
            (many, bad) => Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "`{spec}` matches {} snapshots; give more of the id",
                    many.len() + bad.len()
                ),
            )),
        }
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::sink::PutOptions;
    use crate::testkit::MemorySink;
    use bytes::Bytes;

    #[tokio::test]
    async fn pin_markers_and_signatures_are_companions_not_snapshots() {
        let sink = MemorySink::new();
        let id: SnapshotId = "20261127T221500Z-3f9a1c2e".parse().unwrap();
        let index = crate::bundle::test_index(&id, b"abc");
        let put = |k: String, b: Bytes| {
            let sink = &sink;
            async move { sink.put_bytes(&k, b, PutOptions::default()).await.unwrap() }
        };
        put(id.object_key(), Bytes::from_static(b"abc")).await;
        put(id.index_key(), index.to_json().into()).await;
        let cat = Catalog::load(&sink).await.unwrap();
        assert_eq!(cat.snapshots.len(), 1);
        assert!(!cat.snapshots[0].pinned);
        assert!(cat.snapshots[0].companions.is_empty());

        put(pin_key(&id), Bytes::from_static(b"{}")).await;
        put(format!("{id}.sig"), Bytes::from_static(b"sig")).await;
        // An orphan pin of a deleted snapshot is neither a snapshot nor incomplete.
        put("20250101T000000Z-00000000.pin".into(), Bytes::from_static(b"{}")).await;
        let cat = Catalog::load(&sink).await.unwrap();
        assert_eq!(cat.snapshots.len(), 1);
        assert!(cat.snapshots[0].pinned);
        assert_eq!(
            cat.snapshots[0].companions,
            [format!("{id}.pin"), format!("{id}.sig")]
        );
        assert!(cat.incomplete.is_empty() && cat.unreadable.is_empty());
    }
}
