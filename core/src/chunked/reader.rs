//! Reading chunked snapshots: the ciphertext of each chunk fetched in
//! stream order ([`fetch_chunks`]), checked against the SHA-256 its list
//! gives before it is decrypted and decompressed ([`ChunkReader`]), and
//! the check without a key ([`verify_chunks`]).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{ChunkList, ChunkRef, MAX_CHUNK, pack_key};
use crate::bundle::Index;
use crate::crypto::Identities;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::{Sink, SinkExt};

/// Packs of a remote sink kept in memory while a restore reads: chunks of
/// one backup lie in stream order, shared ones in a few older packs.
const PACK_CACHE: usize = 3;

fn damaged(index: &Index, c: &ChunkRef, what: &str) -> Error {
    Error::new(
        ErrorKind::Integrity,
        format!(
            "pack {} is damaged: {what} (chunk at offset {})",
            c.pack, c.offset
        ),
    )
    .with_context("snapshot", &index.id)
    .with_hint(
        "every snapshot using that pack is affected (`coffer verify --all` names them); restore another \
         snapshot, or copy the pack again from another sink",
    )
}

/// Checks one chunk's ciphertext against its list entry.
pub(crate) fn check(index: &Index, c: &ChunkRef, bytes: &[u8]) -> Result<()> {
    match mismatch(c, bytes) {
        Some(what) => Err(damaged(index, c, what)),
        None => Ok(()),
    }
}

/// How a chunk's ciphertext differs from its list entry, if it does.
pub(crate) fn mismatch(c: &ChunkRef, bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() as u64 != c.length {
        return Some("it is shorter than the chunk list says");
    }
    (<[u8; 32]>::from(Sha256::digest(bytes)) != c.sha256)
        .then_some("a chunk's SHA-256 does not match the chunk list")
}

/// Where the fetcher reads packs from.
struct Packs<'a> {
    sink: &'a dyn Sink,
    local: BTreeMap<String, Arc<std::fs::File>>,
    cached: Vec<(String, Bytes)>,
}

impl<'a> Packs<'a> {
    fn new(sink: &'a dyn Sink) -> Self {
        Packs {
            sink,
            local: BTreeMap::new(),
            cached: Vec::new(),
        }
    }

    async fn read(&mut self, index: &Index, c: &ChunkRef) -> Result<Bytes> {
        if let Some(f) = self.local.get(&c.pack) {
            return read_at(f.clone(), index, c).await;
        }
        if let Some((_, b)) = self.cached.iter().find(|(n, _)| *n == c.pack) {
            return slice(b, index, c);
        }
        let key = pack_key(&c.pack);
        let missing = |e: Error| {
            if e.kind() == ErrorKind::NotFound {
                damaged(index, c, "the pack is missing")
            } else {
                e
            }
        };
        if let Some(f) = self.sink.open_local(&key).await.map_err(missing)? {
            let f = Arc::new(f);
            let bytes = read_at(f.clone(), index, c).await;
            if self.local.len() >= 64 {
                self.local.pop_first();
            }
            self.local.insert(c.pack.clone(), f);
            return bytes;
        }
        let b = self.sink.get_bytes(&key).await.map_err(missing)?;
        let bytes = slice(&b, index, c);
        if self.cached.len() >= PACK_CACHE {
            self.cached.remove(0);
        }
        self.cached.push((c.pack.clone(), b));
        bytes
    }
}

/// Chunks from this size on are read from a local pack on a blocking
/// thread; a smaller read (a page or two) costs less than the hand-off.
const BLOCKING_READ_FROM: u64 = 64 * 1024;

/// Reads chunk `c` from the local pack file `f`.
async fn read_at(f: Arc<std::fs::File>, index: &Index, c: &ChunkRef) -> Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let (offset, length) = (c.offset, c.length);
    let read = move || {
        let mut buf = vec![0u8; length as usize];
        f.read_exact_at(&mut buf, offset).map(|()| buf)
    };
    let read = match length >= BLOCKING_READ_FROM {
        true => tokio::task::spawn_blocking(read).await.map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("reading pack {} failed: {e}", c.pack),
            )
        })?,
        false => read(),
    };
    match read {
        Ok(buf) => Ok(buf.into()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(damaged(index, c, "the pack is truncated")),
        Err(e) => Err(Error::io(format!("reading pack {}", c.pack), e)),
    }
}

pub(crate) fn slice(b: &Bytes, index: &Index, c: &ChunkRef) -> Result<Bytes> {
    let end = c.offset.checked_add(c.length).filter(|&e| e <= b.len() as u64);
    match end {
        Some(end) => Ok(b.slice(c.offset as usize..end as usize)),
        None => Err(damaged(index, c, "the pack is truncated")),
    }
}

/// Sends the ciphertext of every chunk of `list`, in order, into `tx`
/// (an error item ends it); stops when the receiver is dropped.
async fn fetch_chunks(sink: &dyn Sink, index: &Index, list: &ChunkList, tx: mpsc::Sender<Result<Bytes>>) {
    let mut packs = Packs::new(sink);
    for c in &list.0 {
        let item = packs.read(index, c).await;
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// A chunked snapshot's chunks as they are fetched: what a blocking
/// reader ([`ChunkReader`]) takes.
pub struct ChunkStream {
    pub(crate) list: Arc<ChunkList>,
    pub(crate) rx: mpsc::Receiver<Result<Bytes>>,
    pub(crate) progress: Option<Arc<crate::Progress>>,
}

/// Reads the chunk list of `index` (checked against it), then runs `f`
/// on a blocking thread with the stream of its chunks, fetched from
/// `sink` meanwhile. Counts into `progress` (phase `decrypt`, then
/// `commit`).
pub async fn with_chunk_stream<T: Send + 'static>(
    sink: &dyn Sink,
    index: &Index,
    progress: Option<Arc<crate::Progress>>,
    f: impl FnOnce(ChunkStream) -> Result<T> + Send + 'static,
) -> Result<T> {
    let list = Arc::new(super::store::read_list(sink, index).await?);
    if let Some(p) = &progress {
        p.begin("decrypt", Some(list.stored_bytes()));
    }
    let (tx, rx) = mpsc::channel(4);
    let stream = ChunkStream {
        list: list.clone(),
        rx,
        progress,
    };
    let work = tokio::task::spawn_blocking(move || f(stream));
    let (r, ()) = tokio::join!(work, fetch_chunks(sink, index, &list, tx));
    r.map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?
}

/// The plaintext tar stream of a chunked snapshot: each chunk's
/// ciphertext (as [`fetch_chunks`] sends it) checked against its SHA-256
/// in the chunk list before it is decrypted and decompressed. Blocking.
pub struct ChunkReader<'a> {
    list: Arc<ChunkList>,
    index: Index,
    rx: mpsc::Receiver<Result<Bytes>>,
    identities: &'a Identities,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    progress: Option<Arc<crate::Progress>>,
    /// One decompression context for every chunk: small chunks (a
    /// collection's documents) would otherwise pay for a new one each.
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    compressed: Vec<u8>,
}

impl<'a> ChunkReader<'a> {
    /// Reads the chunks of `stream`, decrypting with `identities`.
    pub fn new(stream: ChunkStream, index: &Index, identities: &'a Identities) -> Self {
        ChunkReader {
            list: stream.list,
            index: index.clone(),
            rx: stream.rx,
            identities,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            progress: stream.progress,
            zstd: None,
            compressed: Vec::new(),
        }
    }

    fn open_next(&mut self) -> Result<bool> {
        let Some(c) = self.list.0.get(self.next) else {
            if let Some(p) = self.progress.take() {
                p.begin("commit", None);
            }
            return Ok(false);
        };
        let cipher = match self.rx.blocking_recv() {
            Some(item) => item?,
            None => return Err(Error::new(ErrorKind::Cancelled, "reading the chunks stopped")),
        };
        check(&self.index, c, &cipher)?;
        self.compressed.clear();
        self.identities
            .decrypt(&cipher[..])?
            .read_to_end(&mut self.compressed)
            .map_err(|e| Error::io("decrypting a chunk", e))?;
        let bad = |e: io::Error| Error::new(ErrorKind::Integrity, format!("decompressing a chunk: {e}"));
        let zstd = match &mut self.zstd {
            Some(z) => z,
            None => self.zstd.insert(zstd::bulk::Decompressor::new().map_err(bad)?),
        };
        // A chunk's frame names its size (bulk compression writes it);
        // never more than the largest chunk.
        let size = zstd::zstd_safe::get_frame_content_size(&self.compressed)
            .ok()
            .flatten()
            .filter(|&n| n <= 2 * MAX_CHUNK as u64)
            .map_or(2 * MAX_CHUNK, |n| n as usize);
        self.buf.clear();
        self.buf.reserve(size);
        zstd.decompress_to_buffer(&self.compressed, &mut self.buf)
            .map_err(bad)?;
        self.pos = 0;
        self.next += 1;
        if let Some(p) = &self.progress {
            p.add(c.length);
        }
        Ok(true)
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if !self.open_next().map_err(Error::into_io)? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The ciphertext of a chunked snapshot's first chunk (an age file of
/// its own), checked against its list: what a key check decrypts.
pub async fn first_chunk(sink: &dyn Sink, index: &Index) -> Result<Bytes> {
    let list = super::store::read_list(sink, index).await?;
    let c = list.0.first().ok_or_else(|| {
        Error::new(
            ErrorKind::Integrity,
            format!("the chunk list of {} is empty", index.id),
        )
    })?;
    let mut packs = Packs::new(sink);
    let bytes = packs.read(index, c).await?;
    check(index, c, &bytes)?;
    Ok(bytes)
}

/// What [`verify_sampled`] found.
pub struct SampledCheck {
    /// Per snapshot, in the order given.
    pub results: Vec<Result<()>>,
    /// The packs the snapshots reference.
    pub packs: usize,
}

/// A sampled check without a key (`verify --sample`) of chunked
/// snapshots: each one's chunk list against its index, every pack a chunk
/// lies in present and long enough (one listing of the sink's packs), and
/// the ciphertext SHA-256 of every chunk in the packs `choose` picks from
/// all those referenced (each read once). A damaged chunk fails every
/// snapshot that references it. Counts into `progress` as phase `verify`.
pub async fn verify_sampled(
    sink: &dyn Sink,
    indexes: &[&Index],
    choose: impl FnOnce(&std::collections::BTreeSet<String>) -> std::collections::BTreeSet<String>,
    progress: Option<&crate::Progress>,
) -> Result<SampledCheck> {
    let mut results: Vec<Result<()>> = Vec::with_capacity(indexes.len());
    let mut lists: Vec<Option<ChunkList>> = Vec::with_capacity(indexes.len());
    for index in indexes {
        let (list, result) = match super::store::read_list(sink, index).await {
            Ok(l) => (Some(l), Ok(())),
            Err(e) => (None, Err(e)),
        };
        lists.push(list);
        results.push(result);
    }
    let stored: BTreeMap<String, u64> = sink
        .list(super::DATA_PREFIX)
        .await?
        .into_iter()
        .filter_map(|m| super::pack_name(&m.key).map(|n| (n.to_string(), m.size)))
        .collect();
    let referenced: std::collections::BTreeSet<String> = lists
        .iter()
        .flatten()
        .flat_map(|l| l.0.iter().map(|c| c.pack.clone()))
        .collect();
    let chosen = choose(&referenced);
    // Where each chosen pack's chunks are, and which snapshots use them.
    let mut to_read: BTreeMap<&str, BTreeMap<(u64, u64), ChunkUsers>> = BTreeMap::new();
    for (i, (index, list)) in indexes.iter().zip(&lists).enumerate() {
        let Some(list) = list else { continue };
        let mut r = Ok(());
        for c in &list.0 {
            match stored.get(&c.pack) {
                None => r = Err(damaged(index, c, "the pack is missing")),
                Some(&size) if c.offset.saturating_add(c.length) > size => {
                    r = Err(damaged(index, c, "the pack is truncated"));
                }
                Some(_) if chosen.contains(&c.pack) => {
                    let at = to_read.entry(&c.pack).or_default();
                    at.entry((c.offset, c.length))
                        .or_insert((c, Vec::new()))
                        .1
                        .push(i);
                }
                Some(_) => {}
            }
            if r.is_err() {
                break;
            }
        }
        results[i] = r;
    }
    if let Some(p) = progress {
        let bytes = to_read.values().flat_map(|m| m.keys().map(|(_, len)| len)).sum();
        p.begin("verify", Some(bytes));
    }
    read_chosen(sink, indexes, &to_read, &mut results, progress).await?;
    Ok(SampledCheck {
        results,
        packs: referenced.len(),
    })
}

/// A chunk and the snapshots (by position) whose lists name it.
type ChunkUsers<'a> = (&'a ChunkRef, Vec<usize>);

/// Reads the chunks of the chosen packs (`to_read`, by pack and place) and
/// fails in `results` every snapshot that uses a damaged one.
async fn read_chosen(
    sink: &dyn Sink,
    indexes: &[&Index],
    to_read: &BTreeMap<&str, BTreeMap<(u64, u64), ChunkUsers<'_>>>,
    results: &mut [Result<()>],
    progress: Option<&crate::Progress>,
) -> Result<()> {
    let mut packs = Packs::new(sink);
    for chunks in to_read.values() {
        for (c, users) in chunks.values() {
            let what = match packs.read(indexes[users[0]], c).await {
                Ok(bytes) => mismatch(c, &bytes),
                // Listed whole a moment ago: changed meanwhile.
                Err(e) if e.kind() == ErrorKind::Integrity => Some("the pack no longer holds it as listed"),
                Err(e) => return Err(e),
            };
            if let Some(what) = what {
                for &u in users {
                    if results[u].is_ok() {
                        results[u] = Err(damaged(indexes[u], c, what));
                    }
                }
            }
            if let Some(p) = progress {
                p.add(c.length);
            }
        }
        packs.local.clear();
        packs.cached.clear();
    }
    Ok(())
}

/// Checks without a key that every chunk a snapshot references is
/// stored with the ciphertext its list names: the list against the index,
/// then each pack read once. Counts into `progress` as phase `verify`.
pub async fn verify_chunks(sink: &dyn Sink, index: &Index, progress: Option<&crate::Progress>) -> Result<()> {
    let list = super::store::read_list(sink, index).await?;
    if let Some(p) = progress {
        p.begin("verify", Some(list.stored_bytes()));
    }
    let mut by_pack: BTreeMap<&str, Vec<&ChunkRef>> = BTreeMap::new();
    for c in &list.0 {
        by_pack.entry(&c.pack).or_default().push(c);
    }
    let mut packs = Packs::new(sink);
    let mut damage: Vec<Error> = Vec::new();
    for chunks in by_pack.values() {
        for c in chunks {
            match packs.read(index, c).await.and_then(|b| check(index, c, &b)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Integrity => {
                    damage.push(e);
                    break; // one error per pack
                }
                Err(e) => return Err(e),
            }
            if let Some(p) = progress {
                p.add(c.length);
            }
        }
        packs.local.clear();
        packs.cached.clear();
    }
    match damage.len() {
        0 => Ok(()),
        1 => Err(damage.remove(0)),
        n => {
            let first = damage.remove(0);
            Err(first.suffix(format!("and {} more damaged pack(s)", n - 1)))
        }
    }
}
