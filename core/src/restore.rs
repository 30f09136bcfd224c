//! Reading snapshots back: fetching and hash-checking the ciphertext,
//! decrypting and walking the tar with every check, and restoring through
//! the sources' [`Restorer`]s.
//!
//! Order of checks, so that nothing is written from a bad bundle: the
//! ciphertext is copied to a local cache file (ciphertext is safe on disk)
//! while its SHA-256 and size are compared with the index, and only then
//! decrypted — or, from a sink of local files and for an index that
//! declares the plaintext size, hashed while it is decrypted
//! ([`RestoreInput`]), the plaintext held to that signed size. Entries are
//! staged by the restorers as they stream by, and made visible
//! (`finish(commit = true)`) only after the whole tar was read,
//! `SHA256SUMS` and `manifest.json` matched every entry and the object's
//! hash matched the index; otherwise everything staged is removed.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::bundle::{
    Compression, Index, MANIFEST_ENTRY, MANIFEST_FORMAT, Manifest, SOURCES_ENTRY, SUMS_ENTRY, SourceRecord,
    SourcesFile,
};
use crate::crypto::Identities;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::Sink;
use crate::source::{
    Area, RestoreEntry, RestoreEntryKind, RestoreOptions, RestoreReport, Restorer, Source,
    check_relative_path,
};
use crate::stream::{FileHasher, HashOnThread, decompressor};

fn integrity(msg: impl Into<String>, index: &Index) -> Error {
    Error::new(ErrorKind::Integrity, msg)
        .with_context("snapshot", &index.id)
        .with_hint("the snapshot is corrupt or was tampered with; restore another snapshot or copy it again from another sink")
}

/// Checks without a key that what `index` names is stored as it says: a
/// bundle's object ([`verify_object`]), or every chunk of a chunked
/// snapshot ([`crate::chunked::verify_chunks`]).
pub async fn verify_stored(sink: &dyn Sink, index: &Index, progress: Option<&crate::Progress>) -> Result<()> {
    match index.chunks {
        Some(_) => crate::chunked::verify_chunks(sink, index, progress).await,
        None => verify_object(sink, index, None, progress).await,
    }
}

/// Streams the object of `index` from `sink` and checks its size and
/// SHA-256 against the index, writing the bytes to `out` if given; counts
/// into `progress` as phase `verify`.
pub async fn verify_object(
    sink: &dyn Sink,
    index: &Index,
    out: Option<&mut std::fs::File>,
    progress: Option<&crate::Progress>,
) -> Result<()> {
    // The cache file is written on a thread of its own while this task
    // hashes the next chunk.
    let writer = match out {
        Some(f) => {
            let mut file = f
                .try_clone()
                .map_err(|e| Error::io("opening the restore cache", e))?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
            let task = tokio::task::spawn_blocking(move || -> Result<()> {
                while let Some(chunk) = rx.blocking_recv() {
                    file.write_all(&chunk)
                        .map_err(|e| Error::io("writing the restore cache", e))?;
                }
                Ok(())
            });
            Some((tx, task))
        }
        None => None,
    };
    let hashed = hash_object(sink, index, writer.as_ref().map(|(tx, _)| tx), progress).await;
    if let Some((tx, task)) = writer {
        drop(tx);
        let written = task
            .await
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("the cache writer failed: {e}")))?;
        // A write error (a full disk) first: it is why the loop stopped.
        written?;
        hashed
    } else {
        hashed
    }
}

/// The loop of [`verify_object`]: hashes each chunk and hands it to `out`.
async fn hash_object(
    sink: &dyn Sink,
    index: &Index,
    out: Option<&tokio::sync::mpsc::Sender<bytes::Bytes>>,
    progress: Option<&crate::Progress>,
) -> Result<()> {
    if let Some(p) = progress {
        p.begin("verify", Some(index.object.size));
    }
    let mut stream = sink.get(&index.object.key).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            integrity("the snapshot's object is missing", index)
        } else {
            e
        }
    })?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > index.object.size {
            break; // too large: check_digest says so
        }
        hasher.update(&chunk);
        if let Some(p) = progress {
            p.add(chunk.len() as u64);
        }
        if let Some(tx) = out
            && tx.send(chunk).await.is_err()
        {
            // The writer stopped on an error, which the caller reports.
            break;
        }
    }
    check_digest(size, hasher, index)
}

/// Whether `size` bytes hashed into `hasher` are the object `index` names.
fn check_digest(size: u64, hasher: Sha256, index: &Index) -> Result<()> {
    if size > index.object.size {
        return Err(integrity(
            format!(
                "object is larger than the index says ({} bytes)",
                index.object.size
            ),
            index,
        ));
    }
    if size != index.object.size {
        return Err(integrity(
            format!("object is truncated: {size} of {} bytes", index.object.size),
            index,
        ));
    }
    let sha = hex::encode(hasher.finalize());
    if sha != index.object.sha256 {
        return Err(integrity("object's SHA-256 does not match its index", index)
            .with_context("expected", &index.object.sha256)
            .with_context("actual", sha));
    }
    Ok(())
}

/// Hashes an object opened in place ([`Sink::open_local`]) through its
/// handle, then rewinds it: the bytes checked are the bytes decrypted,
/// whatever happens to the path meanwhile.
fn verify_local(file: &mut std::fs::File, index: &Index, progress: Option<&crate::Progress>) -> Result<()> {
    use std::io::Read;
    if let Some(p) = progress {
        p.begin("verify", Some(index.object.size));
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("reading the snapshot's object", e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > index.object.size {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(p) = progress {
            p.add(n as u64);
        }
    }
    check_digest(size, hasher, index)?;
    file.rewind()
        .map_err(|e| Error::io("reading the snapshot's object", e))
}

/// Downloads the object to a temporary file in `cache_dir` (or the system
/// temp dir), verified against the index; the file is deleted on drop.
/// Counts into `progress` as phase `verify`.
pub async fn fetch_verified(
    sink: &dyn Sink,
    index: &Index,
    cache_dir: Option<&Path>,
    progress: Option<&std::sync::Arc<crate::Progress>>,
) -> Result<std::fs::File> {
    // A sink of local files: checked and decrypted in place, no copy.
    if let Some(mut file) = sink.open_local(&index.object.key).await? {
        let idx = index.clone();
        let progress = progress.cloned();
        return tokio::task::spawn_blocking(move || {
            verify_local(&mut file, &idx, progress.as_deref()).map(|_| file)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?;
    }
    let dir = cache_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let mut file = tempfile::tempfile_in(&dir)
        .map_err(|e| Error::io(format!("creating a cache file in {}", dir.display()), e))?;
    verify_object(sink, index, Some(&mut file), progress.map(|p| &**p)).await?;
    file.flush()
        .map_err(|e| Error::io("writing the restore cache", e))?;
    file.rewind()
        .map_err(|e| Error::io("reading the restore cache", e))?;
    Ok(file)
}

/// Counts what is read through it into a [`crate::Progress`] phase, and
/// starts the phase `then` when the input ends (e.g. `commit` after
/// `decrypt`).
#[derive(Debug)]
pub struct ProgressRead<R> {
    inner: R,
    progress: std::sync::Arc<crate::Progress>,
    then: Option<&'static str>,
}

impl<R> ProgressRead<R> {
    /// Starts phase `phase` of `total` bytes read through `inner`.
    pub fn new(
        inner: R,
        progress: std::sync::Arc<crate::Progress>,
        phase: &'static str,
        total: u64,
        then: Option<&'static str>,
    ) -> Self {
        progress.begin(phase, Some(total));
        ProgressRead {
            inner,
            progress,
            then,
        }
    }
}

impl<R: Read> Read for ProgressRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(next) = self.then.take() {
                self.progress.begin(next, None);
            }
        } else {
            self.progress.add(n as u64);
        }
        Ok(n)
    }
}

/// Receives what [`read_bundle`] finds.
pub trait BundleVisitor {
    /// Called once with `sources.json`, before any entry.
    fn sources(&mut self, sources: &SourcesFile) -> Result<()>;
    /// Called for each entry of a source, in bundle order. Whatever of the
    /// reader the visitor leaves unread is read (and hashed) afterwards.
    fn entry(&mut self, source: &str, entry: RestoreEntry<'_>) -> Result<()>;
}

/// What [`read_bundle`] checked.
#[derive(Debug, Clone)]
pub struct BundleSummary {
    /// The sources of the bundle.
    pub sources: SourcesFile,
    /// The manifest.
    pub manifest: Manifest,
    /// Number of file entries whose hash was checked.
    pub files_checked: usize,
}

/// Decrypts, decompresses and walks a bundle, checking that it belongs to
/// `index`, that every path is safe, and that every file matches
/// `SHA256SUMS` and `manifest.json`. Blocking: run it on a blocking thread.
pub fn read_bundle<R: Read + Send>(
    input: R,
    index: &Index,
    identities: &Identities,
    visitor: &mut dyn BundleVisitor,
) -> Result<BundleSummary> {
    // The header is read here, so a wrong key fails before anything starts.
    let plain = identities.decrypt(input)?;
    let compression = Compression::from_name(&index.compression)?;
    // Decryption, decompression, and the tar walk with its hashing and the
    // restorers' writes each run on a thread of their own, as `age -d |
    // zstd -d | tar x` does, joined by bounded channels of 1 MiB chunks.
    std::thread::scope(|scope| {
        let decrypted = pump(scope, move || Ok(plain));
        let decoded = pump(scope, move || {
            decompressor(compression, BufReader::with_capacity(1 << 20, decrypted))
        });
        let decoded = Bounded {
            inner: decoded,
            read: 0,
            size: index.object.plain_size,
        };
        walk_bundle(decoded, index, visitor)
    })
}

/// Walks a chunked snapshot's tar stream like [`read_bundle`]: the chunks
/// are checked, decrypted and decompressed on a thread of their own.
/// Blocking.
pub fn read_chunked(
    stream: crate::chunked::ChunkStream,
    index: &Index,
    identities: &Identities,
    visitor: &mut dyn BundleVisitor,
) -> Result<BundleSummary> {
    std::thread::scope(|scope| {
        let decoded = pump(scope, move || {
            Ok(crate::chunked::ChunkReader::new(stream, index, identities))
        });
        let decoded = Bounded {
            inner: decoded,
            read: 0,
            size: index.object.plain_size,
        };
        walk_bundle(decoded, index, visitor)
    })
}

/// The decompressed stream, held to the index's signed `plain_size` when
/// it has one: a forged object (anyone with the public recipient key can
/// encrypt one) cannot stream, and so stage, more than the genuine one
/// would before its hash is found to differ.
struct Bounded<R> {
    inner: R,
    read: u64,
    size: Option<u64>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        match self.size {
            Some(size) if self.read > size => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the bundle is larger than its index says ({size} bytes)"),
            )),
            Some(size) if n == 0 && !buf.is_empty() && self.read != size => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the bundle is shorter than its index says ({} of {size} bytes)",
                    self.read
                ),
            )),
            _ => Ok(n),
        }
    }
}

/// The object a restore reads: either checked whole against the index
/// before it is decrypted, or — from a sink that keeps its objects as
/// files on this host, for an index that declares the plaintext size —
/// hashed as it is decrypted ([`RestoreInput::finish`] then compares, and
/// the restore commits nothing until it matched). That reads the object
/// once instead of twice.
pub struct RestoreInput {
    inner: Box<dyn Read + Send>,
    /// While decrypting: the hash so far, the bytes read.
    hashing: Option<(Sha256, u64)>,
    /// A chunked snapshot's chunks (each checked before it is decrypted).
    chunks: Option<crate::chunked::ChunkStream>,
}

impl RestoreInput {
    /// Opens the object of `index` on `sink` for a restore: in place and
    /// hashed while decrypting where it can be, else fetched and verified
    /// first ([`fetch_verified`]). Counts into `progress` (phases `verify`
    /// when checked first, `decrypt`, then `commit`).
    pub async fn open(
        sink: &dyn Sink,
        index: &Index,
        cache_dir: Option<&Path>,
        progress: Arc<crate::Progress>,
    ) -> Result<RestoreInput> {
        let size = index.object.size;
        if index.object.plain_size.is_some()
            && let Some(file) = sink.open_local(&index.object.key).await?
        {
            let file = ProgressRead::new(file, progress, "decrypt", size, Some("commit"));
            return Ok(RestoreInput {
                inner: Box::new(file),
                hashing: Some((Sha256::new(), 0)),
                chunks: None,
            });
        }
        let file = fetch_verified(sink, index, cache_dir, Some(&progress)).await?;
        let file = ProgressRead::new(file, progress, "decrypt", size, Some("commit"));
        Ok(RestoreInput {
            inner: Box::new(file),
            hashing: None,
            chunks: None,
        })
    }

    /// The input of a chunked snapshot (see
    /// [`crate::chunked::with_chunk_stream`]).
    pub fn chunked(stream: crate::chunked::ChunkStream) -> RestoreInput {
        RestoreInput {
            inner: Box::new(io::empty()),
            hashing: None,
            chunks: Some(stream),
        }
    }

    /// After the bundle was read: hashes the rest of the object (bytes the
    /// decryptor did not need) and compares size and SHA-256 with the
    /// index; an object checked before decrypting passes at once.
    pub fn finish(&mut self, index: &Index) -> Result<()> {
        if self.hashing.is_none() {
            return Ok(());
        }
        io::copy(self, &mut io::sink()).map_err(|e| read_error(e, index))?;
        let (hasher, size) = self.hashing.take().expect("hashing");
        check_digest(size, hasher, index)
    }
}

impl Read for RestoreInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some((hasher, size)) = &mut self.hashing {
            hasher.update(&buf[..n]);
            *size += n as u64;
        }
        Ok(n)
    }
}

/// Reads what `open` returns on a scoped thread of its own, in 1 MiB
/// chunks through a bounded channel; the returned reader yields them (and
/// the first error) in order. The thread stops when the reader is dropped.
fn pump<'scope, R: Read>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    open: impl FnOnce() -> io::Result<R> + Send + 'scope,
) -> ChannelReader {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    scope.spawn(move || {
        let mut input = match open() {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; crate::stream::CHUNK];
            match crate::fsutil::read_up_to(&mut input, &mut buf) {
                Ok(0) => return, // end: closing the channel is EOF
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(buf)).is_err() {
                        return; // the reader stopped
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    ChannelReader {
        rx,
        buf: Vec::new(),
        pos: 0,
    }
}

/// Reads the chunks of a channel as one stream.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.buf = chunk?;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn walk_bundle(decoded: impl Read, index: &Index, visitor: &mut dyn BundleVisitor) -> Result<BundleSummary> {
    let mut archive = tar::Archive::new(decoded);
    let mut walk = BundleWalk {
        index,
        sources: None,
        names: HashMap::new(),
        hasher: FileHasher::start().map_err(|e| Error::io("starting the hashing thread", e))?,
        sums: None,
        manifest: None,
    };
    let entries = archive.entries().map_err(|e| read_error(e, index))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(e, index))?;
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| integrity("a path in the bundle is not UTF-8", index))?;
        if walk.manifest.is_some() {
            return Err(integrity(format!("entry `{path}` after manifest.json"), index));
        }
        if !walk.meta_entry(&path, &mut entry, visitor)? {
            walk.data_entry(&path, &mut entry, visitor)?;
        }
    }
    // Read to the end so the age stream's last chunk is authenticated.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| read_error(e, index))?;
    walk.finish()
}

/// What a walk through a bundle has seen so far.
struct BundleWalk<'a> {
    index: &'a Index,
    sources: Option<SourcesFile>,
    /// Source name → kind.
    names: HashMap<String, String>,
    /// Hashes every file entry's content on its own thread.
    hasher: FileHasher,
    sums: Option<String>,
    manifest: Option<Manifest>,
}

impl BundleWalk<'_> {
    /// Reads coffer's own entries (`sources.json` first, `SHA256SUMS`,
    /// `manifest.json` last); `false` for a source's entry.
    fn meta_entry(
        &mut self,
        path: &str,
        entry: &mut impl Read,
        visitor: &mut dyn BundleVisitor,
    ) -> Result<bool> {
        let index = self.index;
        if self.sources.is_none() {
            if path != SOURCES_ENTRY {
                return Err(integrity("the bundle does not start with sources.json", index));
            }
            let s: SourcesFile = serde_json::from_slice(&read_small(entry, index)?)
                .map_err(|e| integrity(format!("sources.json is malformed: {e}"), index))?;
            if s.id != index.id {
                return Err(integrity(
                    format!("the bundle belongs to snapshot {}, not to this index", s.id),
                    index,
                ));
            }
            for r in &s.sources {
                self.names.insert(r.name.clone(), r.kind.clone());
            }
            visitor.sources(&s)?;
            self.sources = Some(s);
        } else if path == SUMS_ENTRY {
            let bytes = read_small(entry, index)?;
            self.sums =
                Some(String::from_utf8(bytes).map_err(|_| integrity("SHA256SUMS is not UTF-8", index))?);
        } else if path == MANIFEST_ENTRY {
            let m: Manifest = serde_json::from_slice(&read_small(entry, index)?)
                .map_err(|e| integrity(format!("manifest.json is malformed: {e}"), index))?;
            self.manifest = Some(m);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// One entry of a source, `<area>/<source>/<relative path>`: checked,
    /// handed to the visitor, read to its end and hashed.
    fn data_entry<R: Read>(
        &mut self,
        path: &str,
        entry: &mut tar::Entry<'_, R>,
        visitor: &mut dyn BundleVisitor,
    ) -> Result<()> {
        let index = self.index;
        let header = entry.header();
        let size = header.size().map_err(|e| read_error(e, index))?;
        let mode = header.mode().map_err(|e| read_error(e, index))?;
        let mtime = header.mtime().map_err(|e| read_error(e, index))? as i64;
        let owner = match (header.uid(), header.gid()) {
            (Ok(0), Ok(0)) => None,
            (Ok(uid), Ok(gid)) => u32::try_from(uid).ok().zip(u32::try_from(gid).ok()),
            _ => None,
        };
        let trimmed = path.trim_end_matches('/');
        let mut parts = trimmed.splitn(3, '/');
        let (Some(area), Some(source), Some(rel)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(integrity(format!("unexpected entry `{path}`"), index));
        };
        let Some(area) = Area::from_dir(area) else {
            return Err(integrity(format!("unexpected entry `{path}`"), index));
        };
        if !self.names.contains_key(source) {
            return Err(integrity(
                format!("entry `{path}` belongs to no source of the bundle"),
                index,
            ));
        }
        check_relative_path(rel)?;
        let kind = entry_kind(entry, path, size, index)?;
        let is_file = matches!(kind, RestoreEntryKind::File { .. });
        let mut hr = HashOnThread::new(entry, &self.hasher);
        visitor.entry(
            source,
            RestoreEntry {
                area,
                path: rel,
                mode,
                mtime,
                owner,
                kind,
                reader: &mut hr,
            },
        )?;
        io::copy(&mut hr, &mut io::sink()).map_err(|e| read_error(e, index))?;
        if is_file {
            let n = hr.finish(trimmed.to_string()).map_err(|e| read_error(e, index))?;
            if n != size {
                return Err(integrity(format!("entry `{path}` is truncated"), index));
            }
        } else {
            hr.abandon().map_err(|e| read_error(e, index))?;
        }
        Ok(())
    }

    /// Checks what was read against `SHA256SUMS` and `manifest.json`.
    fn finish(self) -> Result<BundleSummary> {
        let index = self.index;
        // Path → (size, SHA-256) of every file entry read.
        let computed: BTreeMap<String, (u64, String)> = self
            .hasher
            .finish()?
            .into_iter()
            .map(|d| (d.path, (d.size, d.sha256)))
            .collect();
        let sources = self
            .sources
            .ok_or_else(|| integrity("the bundle is empty", index))?;
        let sums = self
            .sums
            .ok_or_else(|| integrity("the bundle has no SHA256SUMS", index))?;
        let manifest = self
            .manifest
            .ok_or_else(|| integrity("the bundle has no manifest.json (truncated?)", index))?;
        if manifest.format != MANIFEST_FORMAT || manifest.id != index.id {
            return Err(integrity("manifest.json belongs to another snapshot", index));
        }
        let mut listed = BTreeMap::new();
        for line in sums.split('\n').filter(|l| !l.is_empty()) {
            let Some((sha, path)) = crate::bundle::parse_sums_line(line) else {
                return Err(integrity(format!("bad SHA256SUMS line {line:?}"), index));
            };
            listed.insert(path, sha);
        }
        for (path, (_, sha)) in &computed {
            match listed.get(path) {
                Some(s) if s == sha => {}
                Some(_) => return Err(integrity(format!("`{path}` does not match SHA256SUMS"), index)),
                None => return Err(integrity(format!("`{path}` is missing from SHA256SUMS"), index)),
            }
        }
        if listed.len() != computed.len() {
            return Err(integrity(
                "SHA256SUMS lists files that are not in the bundle",
                index,
            ));
        }
        let manifest_map: BTreeMap<_, _> = manifest
            .entries
            .iter()
            .map(|e| (e.path.clone(), (e.size, e.sha256.clone())))
            .collect();
        if manifest_map != computed {
            return Err(integrity(
                "manifest.json does not match the bundle's files",
                index,
            ));
        }
        Ok(BundleSummary {
            sources,
            manifest,
            files_checked: computed.len(),
        })
    }
}

/// The kind of a source's entry: file, directory or symlink; any other tar
/// type is refused.
fn entry_kind<R: Read>(
    entry: &tar::Entry<'_, R>,
    path: &str,
    size: u64,
    index: &Index,
) -> Result<RestoreEntryKind> {
    match entry.header().entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => Ok(RestoreEntryKind::File { size }),
        tar::EntryType::Directory => Ok(RestoreEntryKind::Dir),
        tar::EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| integrity(format!("symlink `{path}` has no target"), index))?;
            Ok(RestoreEntryKind::Symlink { target })
        }
        other => Err(integrity(
            format!("entry `{path}` has unsupported type {other:?}"),
            index,
        )),
    }
}

fn read_small(r: &mut impl Read, index: &Index) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(64 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| read_error(e, index))?;
    Ok(buf)
}

fn read_error(e: io::Error, index: &Index) -> Error {
    let err = Error::io("reading the bundle", e);
    match err.kind() {
        ErrorKind::Decryption | ErrorKind::StorageFull | ErrorKind::Cancelled => err,
        _ if err.kind() == ErrorKind::Unexpected || err.kind() == ErrorKind::Integrity => {
            integrity(err.message().to_string(), index)
        }
        _ => err,
    }
}

/// A visitor that only checks.
#[derive(Debug, Default)]
pub struct CheckOnly;

impl BundleVisitor for CheckOnly {
    fn sources(&mut self, _: &SourcesFile) -> Result<()> {
        Ok(())
    }
    fn entry(&mut self, _: &str, _: RestoreEntry<'_>) -> Result<()> {
        Ok(())
    }
}

/// Picks the sources to restore and builds them; `None` skips a source.
pub type SourceResolver = Box<dyn FnMut(&SourceRecord) -> Result<Option<Arc<dyn Source>>> + Send>;

/// What a restore did, per source.
#[derive(Debug)]
pub struct RestoreOutcome {
    /// The checked bundle.
    pub summary: BundleSummary,
    /// `(source name, report)` per restored source.
    pub reports: Vec<(String, RestoreReport)>,
}

struct RestoreVisitor {
    resolve: SourceResolver,
    opts: RestoreOptions,
    handle: tokio::runtime::Handle,
    restorers: Vec<(String, Box<dyn Restorer>)>,
    slot: HashMap<String, usize>,
}

impl BundleVisitor for RestoreVisitor {
    fn sources(&mut self, sources: &SourcesFile) -> Result<()> {
        for record in &sources.sources {
            if let Some(source) = (self.resolve)(record)? {
                let mut opts = self.opts.for_kind(&record.kind);
                if let (true, Some(target)) = (opts.target_per_source, &opts.target) {
                    opts.target = Some(target.join(&record.name));
                }
                let restorer = self
                    .handle
                    .block_on(source.restore(&opts))
                    .map_err(|e| e.prefix(format!("source `{}`", record.name)))?;
                self.slot.insert(record.name.clone(), self.restorers.len());
                self.restorers.push((record.name.clone(), restorer));
            }
        }
        if self.restorers.is_empty() {
            return Err(crate::config_error(
                "nothing to restore: no source of the snapshot was selected",
            ));
        }
        Ok(())
    }

    fn entry(&mut self, source: &str, entry: RestoreEntry<'_>) -> Result<()> {
        self.opts.cancel.check()?;
        if let Some(&i) = self.slot.get(source) {
            let (name, r) = &mut self.restorers[i];
            r.entry(entry).map_err(|e| e.prefix(format!("source `{name}`")))?;
        }
        Ok(())
    }
}

/// Restores a verified cache file through the sources `resolve` picks.
/// Blocking: call from `spawn_blocking`; `handle` runs the sources' async
/// setup.
pub fn restore_bundle(
    mut input: RestoreInput,
    index: &Index,
    identities: &Identities,
    resolve: SourceResolver,
    opts: RestoreOptions,
    handle: tokio::runtime::Handle,
) -> Result<RestoreOutcome> {
    let commit = !opts.dry_run;
    let cancel = opts.cancel.clone();
    let mut visitor = RestoreVisitor {
        resolve,
        opts,
        handle,
        restorers: Vec::new(),
        slot: HashMap::new(),
    };
    let read = match input.chunks.take() {
        Some(stream) => read_chunked(stream, index, identities, &mut visitor),
        None => read_bundle(
            BufReader::with_capacity(1 << 20, &mut input),
            index,
            identities,
            &mut visitor,
        ),
    };
    let read = match read {
        // Nothing leaves staging until the object's hash matched the index.
        Ok(summary) => input.finish(index).map(|()| summary),
        Err(e) if e.kind() == ErrorKind::Cancelled => Err(e),
        // A bundle that cannot be read is best explained by an object that
        // does not match its index, when that is why (a flipped byte fails
        // decryption before the hash is complete).
        Err(e) => Err(input.finish(index).err().unwrap_or(e)),
    };
    let mut restorers = std::mem::take(&mut visitor.restorers);
    // Commits that may fail (a restore command, a database swap) go first,
    // the renames of staged files (which cannot fail once staged) last: a
    // failing commit then leaves the least applied. Stable: bundle order
    // otherwise.
    restorers.sort_by_key(|(_, r)| r.commit_only_renames());
    match read {
        Ok(summary) => {
            commit_all(restorers, commit, &cancel).map(|reports| RestoreOutcome { summary, reports })
        }
        Err(e) => {
            for (name, r) in restorers {
                if let Err(abort) = r.finish(false) {
                    tracing::warn!("cleaning up source `{name}` after a failed restore: {abort}");
                }
            }
            Err(e)
        }
    }
}

/// Finishes every restorer of a bundle that verified: commits each (or,
/// with `commit` false, a dry run, aborts), and after a failed commit
/// aborts the rest; the error says what was already applied.
fn commit_all(
    restorers: Vec<(String, Box<dyn Restorer>)>,
    commit: bool,
    cancel: &crate::CancelFlag,
) -> Result<Vec<(String, RestoreReport)>> {
    let mut reports = Vec::new();
    // The last moment to honour an interrupt: nothing is committed yet.
    let mut failure = cancel.check().err();
    let mut applied: Vec<String> = Vec::new();
    for (name, r) in restorers {
        // After a failed commit, abort the rest rather than half-apply more.
        let ok = commit && failure.is_none();
        match r.finish(ok) {
            Ok(rep) => {
                if ok {
                    applied.push(format!("`{name}` ({})", rep.summary));
                }
                reports.push((name, rep));
            }
            Err(e) => {
                let e = e.prefix(format!("source `{name}`"));
                // Say exactly what the failure leaves applied.
                let e = match (ok, applied.is_empty()) {
                    (true, false) => e.suffix(format!(
                        "already applied before it failed: {}; the other sources were not changed",
                        applied.join(", ")
                    )),
                    (true, true) if commit => e.suffix("no other source was changed"),
                    _ => e,
                };
                failure = failure.or(Some(e));
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}
