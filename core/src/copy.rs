//! Copying snapshots between sinks without any decryption key: the shared
//! path of `coffer copy`, `coffer export` and `coffer import`.
//!
//! A copy streams the ciphertext from one sink to the other, hashing it on
//! the way; the stream yields an error *before its end* if the size or the
//! SHA-256 differs from the index, so the target sink's all-or-nothing
//! `put` discards it and nothing becomes visible. Then the companions
//! (`<id>.sig`, `<id>.pin`) are copied, and the index last: an interrupted
//! copy never looks complete on the target, and re-running it resumes
//! (an identical object left by a run killed before its index is reused).
//!
//! The hashing runs inline on the task that feeds the target's `put`
//! (a few hundred microseconds per 1 MiB chunk); the target's file I/O is
//! on its own blocking thread, so both proceed in parallel.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::bundle::{Index, SnapshotId};
use crate::catalog::CatalogEntry;
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{LockOptions, acquire_exclusive_with, acquire_shared_with};
use crate::signing::{TrustState, TrustedSigners, check_signature};
use crate::sink::{ByteStream, PutOptions, Sink, SinkExt};

/// Where a sink stores chunks: ciphertext SHA-256 → (pack, offset).
type Held = HashMap<[u8; 32], (String, u64)>;

/// Options of [`copy_snapshot`]; grows without breaking callers.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CopyOptions {
    /// The trust policy, judged on the index bytes as fetched: a bad
    /// signature is always refused; with trusted signers configured,
    /// unsigned and untrusted snapshots are refused too.
    pub trusted: TrustedSigners,
    /// Counts the object bytes copied (for a progress display).
    pub progress: Option<Arc<crate::Progress>>,
    /// Where a target (named by its `info`) stores chunks, by ciphertext
    /// SHA-256: read once (see `stored_chunks`), then kept up to date by
    /// each copy to it.
    held: Arc<tokio::sync::Mutex<Option<(String, Held)>>>,
    /// Writes a chunked snapshot as one bundle instead of copying its
    /// chunks (`export --format bundle`); bundles are copied as they are.
    pub bundle: Option<crate::rebundle::Rebundle>,
}

impl CopyOptions {
    /// Default options: no trusted signer (bad signatures still refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts the copied object bytes into `progress`.
    pub fn with_progress(mut self, progress: Arc<crate::Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Sets the trusted signers.
    pub fn with_trusted(mut self, trusted: TrustedSigners) -> Self {
        self.trusted = trusted;
        self
    }

    /// Writes chunked snapshots as bundles, with these keys.
    pub fn with_bundle(mut self, how: crate::rebundle::Rebundle) -> Self {
        self.bundle = Some(how);
        self
    }
}

/// Whether a snapshot was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyStatus {
    /// Written to the target (possibly completing an interrupted copy).
    Copied,
    /// The target already held the same index and an object of the right size.
    Skipped,
}

impl CopyStatus {
    /// Stable name for output: `copied` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyStatus::Copied => "copied",
            CopyStatus::Skipped => "skipped",
        }
    }
}

/// What [`copy_snapshot`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CopyOutcome {
    /// The snapshot.
    pub id: SnapshotId,
    /// Copied or skipped.
    pub status: CopyStatus,
    /// Ciphertext bytes transferred (0 when skipped or reused).
    pub bytes: u64,
    /// Companion keys written to the target (`<id>.sig`, `<id>.pin`).
    pub companions: Vec<String>,
    /// An identical object left by an interrupted copy was kept and reused.
    pub reused_object: bool,
    /// The signature as judged by [`CopyOptions::trusted`].
    pub signature: TrustState,
    /// The index as copied.
    pub index: Index,
}

fn integrity(msg: impl Into<String>, id: &SnapshotId) -> Error {
    Error::new(ErrorKind::Integrity, msg)
        .with_context("snapshot", id)
        .with_hint("the snapshot on the source is corrupt or was tampered with; copy it from another sink, or verify it with `coffer verify`")
}

/// Wraps the object stream: counts and hashes it, and yields an error
/// instead of ending when the bytes differ from the index, so an
/// all-or-nothing `put` keeps nothing.
struct Verified {
    inner: ByteStream,
    hasher: Sha256,
    seen: u64,
    index: Index,
    done: bool,
}

impl Stream for Verified {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.index.object.size {
                    this.done = true;
                    return Poll::Ready(Some(Err(integrity(
                        format!(
                            "object is larger than its index says ({} bytes)",
                            this.index.object.size
                        ),
                        &this.index.id,
                    ))));
                }
                this.hasher.update(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                let index = &this.index;
                if this.seen != index.object.size {
                    return Poll::Ready(Some(Err(integrity(
                        format!(
                            "object is truncated: {} of {} bytes",
                            this.seen, index.object.size
                        ),
                        &index.id,
                    ))));
                }
                let sha = hex::encode(std::mem::take(&mut this.hasher).finalize());
                if sha != index.object.sha256 {
                    return Poll::Ready(Some(Err(integrity(
                        "object's SHA-256 does not match its index",
                        &index.id,
                    )
                    .with_context("expected", &index.object.sha256)
                    .with_context("actual", sha))));
                }
                Poll::Ready(None)
            }
        }
    }
}

/// A stream of `from`'s object that fails before its end unless it
/// matches `index` (size and SHA-256).
pub async fn verified_object_stream(from: &dyn Sink, index: &Index) -> Result<ByteStream> {
    let inner = from.get(&index.object.key).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            integrity("the snapshot's object is missing on the source", &index.id)
        } else {
            e
        }
    })?;
    Ok(Box::pin(Verified {
        inner,
        hasher: Sha256::new(),
        seen: 0,
        index: index.clone(),
        done: false,
    }))
}

async fn get_optional(sink: &dyn Sink, key: &str) -> Result<Option<Bytes>> {
    match sink.get_bytes(key).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` under `key` create-only; an existing identical object
/// counts as written. Returns whether it wrote.
async fn put_small(to: &dyn Sink, key: &str, bytes: Bytes) -> Result<bool> {
    let len = bytes.len() as u64;
    match to
        .put_bytes(key, bytes.clone(), PutOptions::create().with_size_hint(len))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match get_optional(to, key).await? {
            Some(existing) if existing == bytes => Ok(false),
            _ => Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("the target already holds a different {key}"),
            )
            .with_context("sink", to.info())
            .with_hint("another snapshot with this id, or a changed signature, is on the target; compare both with `coffer show`, and remove the target's copy if it is the wrong one")),
        },
        Err(e) => Err(e),
    }
}

/// Copies one snapshot from `from` to `to` without decrypting it.
///
/// # Behavior
/// - Reads the index (and `<id>.sig`) fresh from `from` and judges the
///   signature with [`CopyOptions::trusted`] before copying anything.
/// - Skips (status [`CopyStatus::Skipped`]) when `to` already has the same
///   index bytes and an object of the index's size; missing companions
///   are still added.
/// - Otherwise streams the object with [`crate::PutMode::Create`] and a size
///   hint; if the bytes differ from the index (size or SHA-256), the
///   stream fails before its end and nothing is visible on `to`
///   ([`ErrorKind::Integrity`]).
/// - An index-less object already on `to` is reused when it verifies
///   (an interrupted earlier copy), and reported as an error otherwise.
/// - Companions are copied next, the index last, all create-only.
/// - Takes no lock: callers hold a shared lock on `to` (see
///   [`copy_snapshots`]).
pub async fn copy_snapshot(
    from: &dyn Sink,
    to: &dyn Sink,
    entry: &CatalogEntry,
    opts: &CopyOptions,
) -> Result<CopyOutcome> {
    let id = &entry.index.id;
    let index_key = id.index_key();
    let sig_key = id.signature_key();
    let index_bytes = from.get_bytes(&index_key).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::new(
                ErrorKind::NotFound,
                format!("snapshot {id} vanished from the source"),
            )
            .with_context("sink", from.info())
            .with_hint("it was pruned meanwhile; list the source again")
        } else {
            e
        }
    })?;
    let index = Index::from_json(&index_bytes, &index_key)?;
    let sig_bytes = get_optional(from, &sig_key).await?;
    let signature = opts
        .trusted
        .enforce(id.as_str(), &check_signature(&index_bytes, sig_bytes.as_deref()))?;
    if let (Some(_), Some(how)) = (&index.chunks, &opts.bundle) {
        return copy_as_bundle((from, to), entry, &index, how, opts, signature).await;
    }
    let index_present = target_has_index(to, id, &index_bytes).await?;
    let mut outcome = CopyOutcome {
        id: id.clone(),
        status: CopyStatus::Copied,
        bytes: 0,
        companions: Vec::new(),
        reused_object: false,
        signature,
        index: index.clone(),
    };
    if index.chunks.is_some() {
        outcome.bytes += copy_chunks(from, to, &index, opts).await?;
    }
    match to.head(&index.object.key).await? {
        Some(o) if o.size == index.object.size && index_present => {
            outcome.status = CopyStatus::Skipped;
        }
        Some(o) => {
            reuse_object(to, &index, o.size, index_present).await?;
            outcome.reused_object = true;
        }
        None => outcome.bytes += copy_object(from, to, &index, opts).await?,
    }
    outcome.companions = copy_companions(from, to, entry, sig_bytes).await?;
    if !index_present {
        put_small(to, &index_key, index_bytes).await?;
    }
    Ok(outcome)
}

/// [`copy_snapshot`] of a chunked snapshot with [`CopyOptions::bundle`]:
/// written again as one bundle (see [`crate::rebundle`]), unless `to`
/// holds its bundle already; then its companions but the signature, then
/// the new signature and index.
async fn copy_as_bundle(
    (from, to): (&dyn Sink, &dyn Sink),
    entry: &CatalogEntry,
    index: &Index,
    how: &crate::rebundle::Rebundle,
    opts: &CopyOptions,
    signature: TrustState,
) -> Result<CopyOutcome> {
    let key = index.id.index_key();
    let mut outcome = CopyOutcome {
        id: index.id.clone(),
        status: CopyStatus::Skipped,
        bytes: 0,
        companions: Vec::new(),
        reused_object: false,
        signature,
        index: index.clone(),
    };
    if let Some(there) = get_optional(to, &key).await? {
        let there = Index::from_json(&there, &key)?;
        if there.chunks.is_some() || there.created_at != index.created_at {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("the target holds snapshot {} already, not as a bundle", index.id),
            )
            .with_context("sink", to.info())
            .with_hint("export it without --format bundle, or to another medium"));
        }
        outcome.index = there;
        outcome.companions = copy_companions(from, to, entry, None).await?;
        return Ok(outcome);
    }
    let (encryption, sign) = how.check(index, &outcome.signature)?;
    let progress = opts.progress.clone();
    let (bundle, bytes) = crate::rebundle::write_bundle(from, to, index, how, encryption, progress).await?;
    outcome.companions = copy_companions(from, to, entry, None).await?;
    let key = how.signing_key().filter(|_| sign);
    crate::rebundle::publish(to, &bundle, key.map(|k| k.as_ref())).await?;
    (outcome.status, outcome.bytes, outcome.index) = (CopyStatus::Copied, bytes, bundle);
    Ok(outcome)
}

/// Stores on `to` what a chunked snapshot needs there, each chunk checked
/// against its SHA-256 on the way, then the snapshot's locations on `to`
/// and the dedup key it was made with (encrypted) when `to` lacks it.
/// Returns the bytes copied.
///
/// Chunk by chunk: a chunk `to` already stores (the same ciphertext, in a
/// snapshot a trusted signer signed: fan-out gives each sink packs of its
/// own) is not sent again. A pack whose chunks `to` mostly lacks is
/// copied whole under its name (packs are never rewritten, so a pack of
/// that name on `to` is the same pack: a resumed copy skips it); the few
/// missing chunks of other packs go into new packs. The list and its
/// signature are copied unchanged: they name no pack. Chunks of a list
/// made before locations moved out stay in their packs (whole packs).
async fn copy_chunks(from: &dyn Sink, to: &dyn Sink, index: &Index, opts: &CopyOptions) -> Result<u64> {
    use crate::chunked::{ChunkRef, locs_key};
    let (list, inline) = crate::chunked::store::read_list_located(from, index).await?;
    let locs = locs_key(&index.id);
    let mut copied = 0;
    if inline || to.head(&locs).await?.is_none() {
        let present = crate::chunked::store::list_packs(to).await?;
        let source = crate::chunked::store::list_packs(from).await?;
        let mut cached = opts.held.lock().await;
        let target = to.info().to_string();
        if !inline && cached.as_ref().is_none_or(|(of, _)| *of != target) {
            *cached = Some((target, stored_chunks(to, &present, &opts.trusted).await?));
        }
        let mut none = HashMap::new();
        let held = match (inline, cached.as_mut()) {
            (false, Some((_, held))) => held,
            _ => &mut none,
        };
        let mut by_pack: BTreeMap<&str, Vec<&ChunkRef>> = BTreeMap::new();
        for c in &list.0 {
            by_pack.entry(c.pack.as_str()).or_default().push(c);
        }
        let mut moved = crate::chunked::store::PackWriter::default();
        for (pack, chunks) in by_pack {
            if same_pack(to, pack, &present, &source)? {
                continue;
            }
            let missing: Vec<&ChunkRef> = chunks
                .into_iter()
                .filter(|c| !held.contains_key(&c.sha256))
                .collect();
            let size = source.get(pack).copied().unwrap_or(0);
            let wanted: u64 = missing.iter().map(|c| c.length).sum();
            if inline || (!missing.is_empty() && wanted * 2 >= size) {
                copied += copy_pack(from, to, index, pack, &missing, opts).await?;
            } else if !missing.is_empty() {
                copied += send_chunks((from, to), index, pack, &missing, opts, &mut moved).await?;
            }
        }
        copied += moved.flush(to).await?;
        if !inline {
            let mut located = list.clone();
            for c in &mut located.0 {
                // Sent into a new pack; else in its own pack where the
                // target holds that (by name, or copied whole just now),
                // or where the target stores the same ciphertext already.
                let place = moved.placed.get(&c.sha256).or_else(|| {
                    (!present.contains_key(&c.pack))
                        .then(|| held.get(&c.sha256))
                        .flatten()
                });
                if let Some((pack, offset)) = place {
                    (c.pack, c.offset) = (pack.clone(), *offset);
                }
            }
            put_small(to, &locs, Bytes::from(located.locs_object())).await?;
            // The next snapshot of this run finds these chunks stored.
            for c in located.0 {
                held.entry(c.sha256).or_insert((c.pack, c.offset));
            }
        }
    }
    if let Some(info) = &index.chunks {
        let key = format!("{}dedup-{}.age", crate::chunked::KEYS_PREFIX, info.dedup_key);
        if to.head(&key).await?.is_none()
            && let Some(sealed) = get_optional(from, &key).await?
        {
            put_small(to, &key, sealed).await?;
        }
    }
    Ok(copied)
}

/// Whether `to` holds `pack` already (the same size as on the source); a
/// pack of that name with another size is a damaged copy, refused.
fn same_pack(
    to: &dyn Sink,
    pack: &str,
    present: &HashMap<String, u64>,
    source: &HashMap<String, u64>,
) -> Result<bool> {
    match (present.get(pack), source.get(pack)) {
        (Some(a), Some(b)) if a == b => Ok(true),
        (Some(_), _) => Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("the target holds pack {pack} with another size than the source's"),
        )
        .with_context("sink", to.info())
        .with_hint("a damaged or partial copy: verify the target (`coffer verify --all`), delete that pack there, then copy again")),
        _ => Ok(false),
    }
}

/// Where `to` stores each chunk (by ciphertext SHA-256) that a snapshot
/// listed there names, in a pack present and long enough; only snapshots
/// `trusted` admits count (another writer's list could claim a chunk it
/// does not hold).
async fn stored_chunks(
    to: &dyn Sink,
    present: &HashMap<String, u64>,
    trusted: &crate::signing::TrustedSigners,
) -> Result<Held> {
    let cat = crate::Catalog::load(to).await?;
    let mut held = HashMap::new();
    for e in cat.snapshots.iter().filter(|e| {
        e.index.chunks.is_some()
            && e.state == crate::SnapshotState::Complete
            && (trusted.is_empty() || trusted.enforce(e.index.id.as_str(), &e.signature).is_ok())
    }) {
        let Ok(list) = crate::chunked::read_list(to, &e.index).await else {
            continue; // unreadable: its chunks are sent again
        };
        for c in list.0 {
            if present
                .get(&c.pack)
                .is_some_and(|&size| c.offset + c.length <= size)
            {
                held.entry(c.sha256).or_insert((c.pack, c.offset));
            }
        }
    }
    Ok(held)
}

/// Copies pack `pack` whole under its name, after checking the chunks the
/// snapshot uses in it (`chunks`); returns the bytes stored.
async fn copy_pack(
    from: &dyn Sink,
    to: &dyn Sink,
    index: &Index,
    pack: &str,
    chunks: &[&crate::chunked::ChunkRef],
    opts: &CopyOptions,
) -> Result<u64> {
    let key = crate::chunked::pack_key(pack);
    let bytes = fetch_pack(from, index, pack).await?;
    for c in chunks {
        crate::chunked::reader::slice(&bytes, index, c)
            .and_then(|b| crate::chunked::reader::check(index, c, &b))
            .map_err(|e| e.prefix("on the source"))?;
    }
    let len = bytes.len() as u64;
    let stored = match to
        .put_bytes(&key, bytes, PutOptions::create().with_size_hint(len))
        .await
    {
        Ok(_) => len,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => 0,
        Err(e) => return Err(e.prefix(format!("storing pack {pack}"))),
    };
    if let Some(p) = &opts.progress {
        p.add(len);
    }
    Ok(stored)
}

/// Pack `pack` of the source, whole.
async fn fetch_pack(from: &dyn Sink, index: &Index, pack: &str) -> Result<Bytes> {
    from.get_bytes(&crate::chunked::pack_key(pack))
        .await
        .map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                integrity(format!("pack {pack} is missing on the source"), &index.id)
            } else {
                e
            }
        })
}

/// Sends `chunks` of source pack `pack` into the new packs of `writer`,
/// each checked on the way; returns the bytes stored.
async fn send_chunks(
    (from, to): (&dyn Sink, &dyn Sink),
    index: &Index,
    pack: &str,
    chunks: &[&crate::chunked::ChunkRef],
    opts: &CopyOptions,
    writer: &mut crate::chunked::store::PackWriter,
) -> Result<u64> {
    let bytes = fetch_pack(from, index, pack).await?;
    let mut stored = 0;
    for c in chunks {
        let chunk = crate::chunked::reader::slice(&bytes, index, c)
            .and_then(|b| crate::chunked::reader::check(index, c, &b).map(|()| b))
            .map_err(|e| e.prefix("on the source"))?;
        stored += writer.push(to, c.sha256, &chunk).await?;
        if let Some(p) = &opts.progress {
            p.add(c.length);
        }
    }
    Ok(stored)
}

/// Whether `to` already holds exactly this index; a different index for
/// the same id is an error (the two sinks disagree).
async fn target_has_index(to: &dyn Sink, id: &SnapshotId, index_bytes: &Bytes) -> Result<bool> {
    match get_optional(to, &id.index_key()).await? {
        Some(b) if b == *index_bytes => Ok(true),
        Some(_) => Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("the target holds a different index for snapshot {id}"),
        )
        .with_context("sink", to.info())
        .with_hint("the two sinks disagree about this snapshot; compare them with `coffer show SNAPSHOT --sink …` and remove the wrong one")),
        None => Ok(false),
    }
}

/// An object already on `to` without a matching index, left by an
/// interrupted copy (a put is all-or-nothing, so it is complete — but it
/// may be another object): kept only if it verifies.
async fn reuse_object(to: &dyn Sink, index: &Index, size: u64, index_present: bool) -> Result<()> {
    let checked = if size == index.object.size {
        crate::restore::verify_object(to, index, None, None).await
    } else {
        Err(Error::new(
            ErrorKind::Integrity,
            format!("size {size} instead of {}", index.object.size),
        ))
    };
    match checked {
        Err(e) if e.kind() == ErrorKind::Integrity => Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "the target already holds an object {} that is not this snapshot's ({})",
                index.object.key,
                e.message()
            ),
        )
        .with_context("sink", to.info())
        .with_hint(if index_present {
            "the target's copy of this snapshot is damaged: delete its index and object there, then copy again"
        } else {
            "a stale object without an index (an interrupted run, shown by `coffer list` as incomplete); delete it from the target, then copy again"
        })),
        other => other,
    }
}

/// Streams the object, verified on the way, create-only with a size hint;
/// returns the bytes written.
async fn copy_object(from: &dyn Sink, to: &dyn Sink, index: &Index, opts: &CopyOptions) -> Result<u64> {
    let mut body = verified_object_stream(from, index).await?;
    if let Some(progress) = opts.progress.clone() {
        body = body
            .inspect(move |chunk| {
                if let Ok(c) = chunk {
                    progress.add(c.len() as u64);
                }
            })
            .boxed();
    }
    let put = PutOptions::create().with_size_hint(index.object.size);
    to.put(&index.object.key, body, put).await.map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            e.with_hint("another copy or backup wrote this object meanwhile; run the copy again")
        } else {
            e
        }
    })
}

/// Copies the signature and other companions (a pin), before the index: a
/// signed snapshot is never visible without its signature. Returns the
/// keys written.
async fn copy_companions(
    from: &dyn Sink,
    to: &dyn Sink,
    entry: &CatalogEntry,
    sig_bytes: Option<Bytes>,
) -> Result<Vec<String>> {
    let sig_key = entry.index.id.signature_key();
    let mut companions: Vec<(String, Option<Bytes>)> = Vec::new();
    if let Some(sig) = sig_bytes {
        companions.push((sig_key.clone(), Some(sig)));
    }
    // The chunk locations are the target's own (see `copy_chunks`).
    let locs_key = crate::chunked::locs_key(&entry.index.id);
    for key in &entry.companions {
        if *key != sig_key && *key != locs_key {
            companions.push((key.clone(), None));
        }
    }
    let mut written = Vec::new();
    for (key, bytes) in companions {
        let bytes = match bytes {
            Some(b) => b,
            None => match get_optional(from, &key).await? {
                Some(b) => b,
                None => continue, // removed meanwhile (an unpin)
            },
        };
        if put_small(to, &key, bytes).await? {
            written.push(key);
        }
    }
    Ok(written)
}

/// Copies `entries` from `from` to `to` one after the other under a shared
/// lock on `to` (holder `holder`: `copy`, `export`, `import`), calling
/// `each` after every snapshot. One snapshot's failure does not stop the
/// others; failing to take the lock fails the whole call.
pub async fn copy_snapshots(
    from: Arc<dyn Sink>,
    to: Arc<dyn Sink>,
    entries: &[CatalogEntry],
    opts: &CopyOptions,
    holder: &str,
    each: &mut (dyn FnMut(&CatalogEntry, &Result<CopyOutcome>) + Send),
) -> Result<Vec<Result<CopyOutcome>>> {
    let lock_opts = LockOptions::from_env()?;
    // Writing bundles replaces what a killed run left: no other run may
    // be writing the same snapshot meanwhile.
    let guard = if opts.bundle.is_some() {
        acquire_exclusive_with(to.clone(), holder, &lock_opts).await
    } else {
        acquire_shared_with(to.clone(), holder, &lock_opts).await
    }
    .map_err(|e| e.prefix(format!("locking the target {}", to.info())))?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let r = match guard.ensure_held() {
            Ok(()) => copy_snapshot(from.as_ref(), to.as_ref(), entry, opts).await,
            Err(e) => Err(e),
        };
        each(entry, &r);
        out.push(r);
    }
    guard.release().await;
    Ok(out)
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::signing::SigningKey;
    use crate::sink::ObjectMeta;
    use crate::testkit::MemorySink;
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// Stores a snapshot (object, optional signature, pin, index) on `sink`.
    async fn store(sink: &dyn Sink, id: &str, body: &[u8], key: Option<&SigningKey>) -> SnapshotId {
        let id: SnapshotId = id.parse().unwrap();
        let index = crate::bundle::test_index(&id, body);
        let json = index.to_json();
        sink.put_bytes(
            &id.object_key(),
            Bytes::copy_from_slice(body),
            PutOptions::create(),
        )
        .await
        .unwrap();
        if let Some(k) = key {
            sink.put_bytes(
                &id.signature_key(),
                k.sign_index(&json).to_json().into(),
                PutOptions::create(),
            )
            .await
            .unwrap();
        }
        sink.put_bytes(
            &crate::pin_key(&id),
            Bytes::from_static(b"{}"),
            PutOptions::create(),
        )
        .await
        .unwrap();
        sink.put_bytes(&id.index_key(), json.into(), PutOptions::create())
            .await
            .unwrap();
        id
    }

    async fn entry(sink: &dyn Sink, id: &SnapshotId) -> CatalogEntry {
        Catalog::load(sink)
            .await
            .unwrap()
            .resolve(id.as_str())
            .unwrap()
            .clone()
    }

    /// Records the order of the keys put into it.
    #[derive(Debug, Default)]
    struct Recording {
        inner: MemorySink,
        puts: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Sink for Recording {
        fn info(&self) -> crate::SinkInfo {
            self.inner.info()
        }
        async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64> {
            let r = self.inner.put(key, body, opts).await;
            if r.is_ok() {
                self.puts.lock().unwrap().push(key.to_string());
            }
            r
        }
        async fn get(&self, key: &str) -> Result<ByteStream> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
    }

    #[tokio::test]
    async fn copies_object_companions_then_index_last_and_skips_identical() {
        let from = MemorySink::new();
        let key = SigningKey::generate();
        let body = vec![7u8; 300_000];
        let id = store(&from, "20261127T221500Z-3f9a1c2e", &body, Some(&key)).await;
        let e = entry(&from, &id).await;
        let to = Recording::default();
        let out = copy_snapshot(&from, &to, &e, &CopyOptions::new()).await.unwrap();
        assert_eq!(out.status, CopyStatus::Copied);
        assert_eq!(out.bytes, body.len() as u64);
        let puts = to.puts.lock().unwrap().clone();
        assert_eq!(puts.first().unwrap(), &id.object_key());
        assert_eq!(puts.last().unwrap(), &id.index_key(), "index last: {puts:?}");
        assert!(puts.contains(&id.signature_key()) && puts.contains(&crate::pin_key(&id)));
        for k in &puts {
            assert_eq!(from.get_bytes(k).await.unwrap(), to.get_bytes(k).await.unwrap());
        }
        let cat = Catalog::load(&to).await.unwrap();
        assert!(cat.snapshots[0].pinned);
        assert!(matches!(
            cat.snapshots[0].signature,
            crate::signing::SignatureState::Valid(_)
        ));

        // Again: skipped, nothing written.
        let out = copy_snapshot(&from, &to, &e, &CopyOptions::new()).await.unwrap();
        assert_eq!(out.status, CopyStatus::Skipped);
        assert_eq!(to.puts.lock().unwrap().len(), puts.len());
    }

    #[tokio::test]
    async fn hash_mismatch_leaves_nothing_visible_on_the_target() {
        let from = MemorySink::new();
        let body = vec![1u8; 200_000];
        let id = store(&from, "20261127T221500Z-3f9a1c2e", &body, None).await;
        let e = entry(&from, &id).await;
        // Same size, one bit flipped.
        let mut bad = body.clone();
        bad[150_000] ^= 1;
        from.put_bytes(&id.object_key(), bad.into(), PutOptions::default())
            .await
            .unwrap();
        let to = MemorySink::new();
        let err = copy_snapshot(&from, &to, &e, &CopyOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
        assert!(err.to_string().contains("SHA-256"), "{err}");
        assert!(to.keys().is_empty(), "nothing visible: {:?}", to.keys());

        // Truncated: also refused, also nothing.
        from.put_bytes(
            &id.object_key(),
            Bytes::from(vec![1u8; 1000]),
            PutOptions::default(),
        )
        .await
        .unwrap();
        let e = entry(&from, &id).await;
        let err = copy_snapshot(&from, &to, &e, &CopyOptions::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(to.keys().is_empty());
    }

    #[tokio::test]
    async fn resumes_after_an_interrupted_copy_and_reports_foreign_objects() {
        let from = MemorySink::new();
        let body = b"ciphertext".to_vec();
        let id = store(&from, "20261127T221500Z-3f9a1c2e", &body, None).await;
        let e = entry(&from, &id).await;
        // A copy killed after the object: reused.
        let to = MemorySink::new();
        to.put_bytes(&id.object_key(), body.clone().into(), PutOptions::create())
            .await
            .unwrap();
        let out = copy_snapshot(&from, &to, &e, &CopyOptions::new()).await.unwrap();
        assert!(out.reused_object && out.status == CopyStatus::Copied);
        assert_eq!(Catalog::load(&to).await.unwrap().snapshots.len(), 1);

        // A different object under the same key: a clear error, no index.
        let to = MemorySink::new();
        to.put_bytes(
            &id.object_key(),
            Bytes::from_static(b"other"),
            PutOptions::create(),
        )
        .await
        .unwrap();
        let err = copy_snapshot(&from, &to, &e, &CopyOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("not this snapshot's"), "{err}");
        assert!(err.hint().unwrap().contains("stale object"), "{err:?}");
        assert!(to.head(&id.index_key()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn trust_policy_is_enforced_on_the_fetched_bytes() {
        let from = MemorySink::new();
        let signer = SigningKey::generate();
        let id = store(&from, "20261127T221500Z-3f9a1c2e", b"x", None).await;
        let e = entry(&from, &id).await;
        let mut trusted = TrustedSigners::new();
        trusted.push(signer.public());
        let to = MemorySink::new();
        let err = copy_snapshot(&from, &to, &e, &CopyOptions::new().with_trusted(trusted.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert!(err.to_string().contains("unsigned"), "{err}");
        assert!(to.keys().is_empty());

        let id2 = store(&from, "20261128T221500Z-3f9a1c2e", b"y", Some(&signer)).await;
        let e2 = entry(&from, &id2).await;
        let out = copy_snapshot(&from, &to, &e2, &CopyOptions::new().with_trusted(trusted))
            .await
            .unwrap();
        assert!(matches!(out.signature, TrustState::Trusted(_)));
    }

    #[tokio::test]
    async fn copy_snapshots_takes_and_releases_a_shared_lock() {
        let from: Arc<dyn Sink> = Arc::new(MemorySink::new());
        let id = store(from.as_ref(), "20261127T221500Z-3f9a1c2e", b"abc", None).await;
        let e = entry(from.as_ref(), &id).await;
        let to: Arc<dyn Sink> = Arc::new(MemorySink::new());
        let mut seen = 0;
        let r = copy_snapshots(
            from,
            to.clone(),
            &[e],
            &CopyOptions::new(),
            "copy",
            &mut |_, r| {
                assert!(r.is_ok());
                seen += 1;
            },
        )
        .await
        .unwrap();
        assert_eq!((r.len(), seen), (1, 1));
        assert!(to.list(crate::lock::LOCK_PREFIX).await.unwrap().is_empty());
    }
}
