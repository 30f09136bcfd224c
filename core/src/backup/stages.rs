//! The threads of the pipeline: tar + compression ([`tar_stage`], with
//! the SHA-256 of each file on a [`FileHasher`] thread beside it), and age
//! encryption + ciphertext SHA-256 ([`age_stage`]).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Progress;
use crate::bundle::{
    Compression, MANIFEST_ENTRY, Manifest, ManifestEntry, ManifestSource, SOURCES_ENTRY, SUMS_ENTRY,
    SourcesFile,
};
use crate::chunked::cache::Seen;
use crate::chunked::chunker::Chunker;
use crate::chunked::writer::ChunkFeed;
use crate::chunked::{DedupKey, FileCache, KnownChunks, OWN_CHUNKS_FROM};
use crate::crypto::Encryption;
use crate::error::{Error, ErrorKind, Result};
use crate::source::FileStat;
use crate::source::{Entry, EntryBody, SourceReport};
use crate::stream::{
    BLOCK, ChunkWriter, Compressor, ExactReader, FileDigest, FileHasher, HashMsg, ObjectOut,
};

pub(super) enum TarMsg {
    Entry(usize, Entry),
    Finish(Vec<SourceReport>),
}

pub(super) enum CipherMsg {
    Chunk(Vec<u8>),
    Done,
}

/// Counts what is read through it as plaintext read from the sources.
struct CountRead<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R: io::Read> io::Read for CountRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.plain_bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// Builds a tar header for an entry path.
fn header(kind: tar::EntryType, mode: u32, mtime: i64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_mtime(mtime.max(0) as u64);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The tar stage: writes `sources.json`, every entry the sources send
/// (hashing each file into `SHA256SUMS` and the manifest), then
/// `SHA256SUMS` and `manifest.json`, compressed into 1 MiB chunks for the
/// age stage.
#[allow(clippy::too_many_arguments)]
pub(super) fn tar_stage(
    mut rx: mpsc::Receiver<TarMsg>,
    cipher_tx: Option<std::sync::mpsc::SyncSender<CipherMsg>>,
    chunks: Option<(Arc<DedupKey>, ChunkFeed)>,
    cache: Option<CacheUse>,
    sources_file: SourcesFile,
    manifest: Manifest,
    compression: Compression,
    threads: u32,
    progress: Arc<Progress>,
) -> Result<(Manifest, u64, Vec<Seen>)> {
    let mut w = TarWriter::new(
        cipher_tx.clone(),
        chunks,
        cache,
        manifest,
        compression,
        threads,
        progress,
    )?;
    let sources_json = serde_json::to_vec_pretty(&sources_file).expect("serializes");
    w.append_bytes(SOURCES_ENTRY, &sources_json)?;
    let reports = loop {
        match rx.blocking_recv() {
            Some(TarMsg::Entry(src, entry)) => w.append_entry(&sources_file.sources[src].name, entry)?,
            Some(TarMsg::Finish(reports)) => break reports,
            None => {
                return Err(Error::new(
                    ErrorKind::Cancelled,
                    "capture stopped before it finished",
                ));
            }
        }
    };
    let finished = w.finish(&sources_file, reports)?;
    if let Some(tx) = cipher_tx {
        tx.send(CipherMsg::Done)
            .map_err(|_| Error::new(ErrorKind::Cancelled, "the encryption stage stopped"))?;
    }
    Ok(finished)
}

/// Counts the bytes written through it (the tar stream, for the index's
/// `plain_size`).
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A metadata entry of coffer's own: mode 0600, the snapshot's time
/// `now`. Never deduplicated (it names the snapshot, and `SHA256SUMS`
/// holds the hashes of secrets): chunks of its own.
fn append_meta(
    builder: &mut tar::Builder<Counted<TarOut>>,
    now: i64,
    path: &str,
    bytes: &[u8],
) -> Result<()> {
    let cut = |b: &mut tar::Builder<Counted<TarOut>>, secret| {
        b.get_mut()
            .inner
            .cut(secret)
            .map_err(|e| Error::io(format!("writing {path}"), e))
    };
    cut(builder, true)?;
    let mut h = header(tar::EntryType::Regular, 0o600, now, bytes.len() as u64);
    builder
        .append_data(&mut h, path, bytes)
        .map_err(|e| Error::io(format!("writing {path}"), e))?;
    cut(builder, false)
}

type ChunkSink = ChunkWriter<Box<dyn FnMut(Vec<u8>) -> io::Result<()> + Send>>;

/// Where the tar stream goes: compressed for the bundle sinks, cut into
/// chunks for the chunked ones, or both (the same stream).
struct TarOut {
    bundle: Option<Compressor<ChunkSink>>,
    chunker: Option<Chunker<ChunkFeed>>,
}

impl TarOut {
    /// Ends the current chunk (see [`Chunker::cut`]); nothing for a bundle.
    fn cut(&mut self, secret: bool) -> io::Result<()> {
        match &mut self.chunker {
            Some(c) => c.cut(secret),
            None => Ok(()),
        }
    }

    /// Chunks sent so far, when chunking.
    fn seq(&mut self) -> Option<u64> {
        self.chunker.as_mut().map(|c| c.out().seq())
    }
}

/// The file cache as the tar stage uses it.
pub(super) struct CacheUse {
    pub(super) cache: FileCache,
    /// The chunks each chunked sink stores; `None` when a bundle is
    /// written too (every file is read then).
    pub(super) known: Option<Vec<Arc<KnownChunks>>>,
}

impl CacheUse {
    /// The digest and data chunks of an unchanged file whose chunks every
    /// sink stores.
    fn reusable(&self, path: &str, stat: &FileStat) -> Option<(String, Vec<[u8; 32]>)> {
        let known = self.known.as_ref()?;
        let (sha, chunks) = self.cache.lookup(path, stat)?;
        let stored = chunks.iter().all(|a| known.iter().all(|k| k.contains(a)));
        (stored && !chunks.is_empty()).then(|| (sha.to_string(), chunks))
    }
}

impl Write for TarOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(b) = &mut self.bundle {
            b.write_all(buf)?;
        }
        if let Some(c) = &mut self.chunker {
            c.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The tar stream being written, with the manifest it accumulates.
struct TarWriter {
    builder: tar::Builder<Counted<TarOut>>,
    manifest: Manifest,
    /// Hashes file contents on its own thread.
    hasher: FileHasher,
    /// Writes the header blocks of a file entry (with GNU long-name
    /// entries where needed), which [`TarWriter::append_file`] then
    /// follows with the content.
    headers: tar::Builder<Vec<u8>>,
    seen: std::collections::HashSet<String>,
    progress: Arc<Progress>,
    /// The file cache of a chunked run, and the files it will hold.
    cache: Option<CacheUse>,
    cached: Vec<Seen>,
}

impl TarWriter {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cipher_tx: Option<std::sync::mpsc::SyncSender<CipherMsg>>,
        chunks: Option<(Arc<DedupKey>, ChunkFeed)>,
        cache: Option<CacheUse>,
        manifest: Manifest,
        compression: Compression,
        threads: u32,
        progress: Arc<Progress>,
    ) -> Result<TarWriter> {
        let bundle = match cipher_tx {
            Some(cipher_tx) => {
                let send: Box<dyn FnMut(Vec<u8>) -> io::Result<()> + Send> = Box::new(move |buf| {
                    cipher_tx.send(CipherMsg::Chunk(buf)).map_err(|_| {
                        Error::new(ErrorKind::Cancelled, "the encryption stage stopped").into_io()
                    })
                });
                Some(
                    Compressor::new(compression, ChunkWriter::new(send), threads)
                        .map_err(|e| Error::io("starting compression", e))?,
                )
            }
            None => None,
        };
        let chunker = chunks.map(|(key, feed)| Chunker::new(&key, feed));
        let mut builder = tar::Builder::new(Counted {
            inner: TarOut { bundle, chunker },
            bytes: 0,
        });
        builder.mode(tar::HeaderMode::Complete);
        Ok(TarWriter {
            builder,
            manifest,
            hasher: FileHasher::start().map_err(|e| Error::io("starting the hashing thread", e))?,
            headers: tar::Builder::new(Vec::new()),
            seen: std::collections::HashSet::new(),
            progress,
            cache,
            cached: Vec::new(),
        })
    }

    /// A metadata entry of coffer's own (see [`append_meta`]).
    fn append_bytes(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        let now = self.manifest.created_at.as_second();
        append_meta(&mut self.builder, now, path, bytes)
    }

    /// One entry of source `name`, at `<area>/<name>/<path>`.
    fn append_entry(&mut self, name: &str, entry: Entry) -> Result<()> {
        let path = self.new_path(name, &entry)?;
        // Secrets are private whatever their source said.
        let mode = match (entry.area.is_secret(), &entry.body) {
            (true, EntryBody::Dir) => 0o700,
            (true, _) => 0o600,
            (false, _) => entry.mode,
        };
        // A secret, or a file large enough to dedup on its own, starts
        // and ends chunks of its own.
        let secret = entry.area.is_secret();
        let own = secret || matches!(entry.body, EntryBody::File { size, .. } if size >= OWN_CHUNKS_FROM);
        // Every file starts and ends chunks (a small one, header and data
        // together, is one chunk): a changed small file costs itself, not
        // the content-defined chunk of its neighbours around it.
        let around = own || matches!(entry.body, EntryBody::File { .. });
        let cut = |w: &mut Self, secret| {
            w.builder
                .get_mut()
                .inner
                .cut(secret)
                .map_err(|e| Error::io(format!("writing {path}"), e))
        };
        if around {
            cut(self, secret)?;
        }
        // A file with chunks of its own may come from the file cache.
        let stat = entry.stat.filter(|_| own && !secret);
        let (uid, gid) = entry.owner.unwrap_or((0, 0));
        let with_owner = |kind, size| {
            let mut h = header(kind, mode, entry.mtime, size);
            h.set_uid(uid.into());
            h.set_gid(gid.into());
            h
        };
        let data_from = match entry.body {
            EntryBody::File { size, reader } => {
                let mut h = with_owner(tar::EntryType::Regular, size);
                // A collection's documents: small chunks at document ends.
                let documents = entry.area == crate::Area::Mongo && path.ends_with(".bson");
                self.append_file(
                    &mut h,
                    path.clone(),
                    reader,
                    size,
                    own.then_some(secret),
                    stat.as_ref(),
                    documents,
                )?
            }
            EntryBody::Dir => {
                let mut h = with_owner(tar::EntryType::Directory, 0);
                self.builder
                    .append_data(&mut h, format!("{path}/"), io::empty())
                    .map_err(|e| Error::io(format!("writing {path}"), e))?;
                None
            }
            EntryBody::Symlink { target } => {
                let mut h = with_owner(tar::EntryType::Symlink, 0);
                self.builder
                    .append_link(&mut h, &path, &target)
                    .map_err(|e| Error::io(format!("writing {path}"), e))?;
                None
            }
        };
        if around {
            cut(self, false)?;
        }
        if let (Some(stat), Some(from), Some(to)) = (stat, data_from, self.builder.get_mut().inner.seq()) {
            self.cached.push(Seen {
                path,
                stat,
                seqs: from..to,
            });
        }
        self.progress.entries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The bundle path of `entry` of source `name`, checked: relative,
    /// and not produced before.
    fn new_path(&mut self, name: &str, entry: &Entry) -> Result<String> {
        crate::source::check_relative_path(&entry.path).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("source `{name}` produced a bad path: {e}"),
            )
        })?;
        let path = format!("{}/{}/{}", entry.area.dir(), name, entry.path);
        if !self.seen.insert(path.clone()) {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("source `{name}` produced `{path}` twice"),
            ));
        }
        Ok(path)
    }

    /// A file's content, hashed into `SHA256SUMS` and the manifest as it
    /// streams through. With `header_apart` (a file with chunks of its
    /// own), its header blocks are a chunk of their own, so a change of
    /// mtime or size leaves the data's chunks as they were.
    ///
    /// With `stat` (a file the file cache may hold), returns the number of
    /// the first chunk of its data; a cached file whose chunks every sink
    /// stores is then not read: its chunks are referenced.
    ///
    /// With `documents` (a collection's `.bson`) and chunks of its own,
    /// the data is cut as a document sequence ([`Chunker::documents`]).
    #[allow(clippy::too_many_arguments)]
    fn append_file(
        &mut self,
        h: &mut tar::Header,
        path: String,
        reader: Box<dyn io::Read + Send>,
        size: u64,
        header_apart: Option<bool>,
        stat: Option<&FileStat>,
        documents: bool,
    ) -> Result<Option<u64>> {
        // The header through a scratch builder (it writes GNU long-name
        // entries where a path needs them), then the content in 1 MiB
        // blocks straight into compression, each block moved on to the
        // hasher: tar's own copy would feed zstd 8 KiB at a time and the
        // hasher would need a copy of every block.
        self.headers.get_mut().clear();
        self.headers
            .append_data(h, &path, io::empty())
            .map_err(|e| Error::io(format!("writing {path}"), e))?;
        let out = self.builder.get_mut();
        out.write_all(self.headers.get_ref())
            .map_err(|e| Error::io(format!("writing {path}"), e))?;
        if let Some(secret) = header_apart {
            out.inner
                .cut(secret)
                .map_err(|e| Error::io(format!("writing {path}"), e))?;
            if documents && let Some(c) = &mut out.inner.chunker {
                c.documents();
            }
        }
        let data_from = stat.and_then(|_| out.inner.seq());
        let reuse = stat.and_then(|st| self.cache.as_ref()?.reusable(&path, st));
        if let Some((sha256, chunks)) = reuse {
            self.reuse_chunks(path, size, sha256, chunks)?;
        } else {
            self.stream_content(path, reader, size)?;
        }
        Ok(data_from)
    }

    /// A cached file whose chunks every sink stores: its chunks are
    /// referenced and its digest taken from the cache, without reading it.
    fn reuse_chunks(&mut self, path: String, size: u64, sha256: String, chunks: Vec<[u8; 32]>) -> Result<()> {
        let out = self.builder.get_mut();
        let feed = out
            .inner
            .chunker
            .as_mut()
            .expect("a cache only when chunking")
            .out();
        for a in chunks {
            feed.send_known(a)
                .map_err(|e| Error::io(format!("writing {path}"), e))?;
        }
        // The bytes the stream holds there: the content and its padding.
        out.bytes += size + (512 - size % 512) % 512;
        self.progress.add(size);
        self.progress.reused_bytes.fetch_add(size, Ordering::Relaxed);
        self.hasher
            .send(HashMsg::Known(FileDigest { path, size, sha256 }))
            .map_err(|e| Error::io("hashing the files", e))
    }

    /// A file's content read and written in blocks, each block moved on to
    /// the hasher, then the tar padding.
    fn stream_content(&mut self, path: String, reader: Box<dyn io::Read + Send>, size: u64) -> Result<()> {
        let out = self.builder.get_mut();
        let mut reader = CountRead {
            inner: ExactReader::new(reader, size, path.clone()),
            progress: self.progress.clone(),
        };
        let mut left = size;
        while left > 0 {
            let mut block = self.hasher.block();
            let n = (&mut reader)
                .take(left.min(BLOCK as u64))
                .read_to_end(&mut block)
                .map_err(|e| Error::io(format!("reading {path}"), e))?;
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    format!("{path} ended before its {size} bytes"),
                ));
            }
            left -= n as u64;
            out.write_all(&block)
                .map_err(|e| Error::io(format!("writing {path}"), e))?;
            self.hasher
                .send(HashMsg::Data(block))
                .map_err(|e| Error::io(format!("hashing {path}"), e))?;
        }
        let pad = (512 - size % 512) % 512;
        out.write_all(&[0; 512][..pad as usize])
            .map_err(|e| Error::io(format!("writing {path}"), e))?;
        self.hasher
            .send(HashMsg::EndOfFile(path))
            .map_err(|e| Error::io("hashing the files", e))
    }

    /// Writes `SHA256SUMS` and `manifest.json` (with the sources' reports)
    /// and flushes compression; returns the manifest and the bytes of the
    /// tar stream.
    fn finish(
        self,
        sources_file: &SourcesFile,
        reports: Vec<SourceReport>,
    ) -> Result<(Manifest, u64, Vec<Seen>)> {
        let TarWriter {
            mut builder,
            mut manifest,
            hasher,
            cached,
            ..
        } = self;
        manifest.sources = sources_file
            .sources
            .iter()
            .zip(reports)
            .map(|(s, report)| ManifestSource {
                name: s.name.clone(),
                kind: s.kind.clone(),
                report,
            })
            .collect();
        let mut sums = String::new();
        for FileDigest { path, size, sha256 } in hasher.finish()? {
            sums.push_str(&crate::bundle::sums_line(&sha256, &path));
            manifest.total_bytes += size;
            manifest.entries.push(ManifestEntry { path, size, sha256 });
        }
        let now = manifest.created_at.as_second();
        append_meta(&mut builder, now, SUMS_ENTRY, sums.as_bytes())?;
        let manifest_json = serde_json::to_vec_pretty(&manifest).expect("serializes");
        append_meta(&mut builder, now, MANIFEST_ENTRY, &manifest_json)?;
        // The tar's end blocks in a chunk of this snapshot's own: shared,
        // the same 1 KiB of zeros would keep the first snapshot's last
        // pack alive as long as any snapshot exists.
        builder
            .get_mut()
            .inner
            .cut(true)
            .map_err(|e| Error::io("finishing the tar stream", e))?;
        let Counted {
            inner: TarOut { bundle, chunker },
            bytes,
        } = builder
            .into_inner()
            .map_err(|e| Error::io("finishing the tar stream", e))?;
        if let Some(compressor) = bundle {
            let chunks = compressor
                .finish()
                .map_err(|e| Error::io("finishing compression", e))?;
            chunks
                .finish()
                .map_err(|e| Error::io("finishing compression", e))?;
        }
        if let Some(chunker) = chunker {
            chunker
                .finish()
                .and_then(ChunkFeed::done)
                .map_err(|e| Error::io("finishing the chunks", e))?;
        }
        Ok((manifest, bytes, cached))
    }
}

pub(super) fn age_stage(
    rx: std::sync::mpsc::Receiver<CipherMsg>,
    out_tx: mpsc::Sender<Bytes>,
    encryption: Encryption,
    progress: Arc<Progress>,
) -> Result<(String, u64)> {
    let counter = Arc::new(AtomicU64::new(0));
    let out = ObjectOut::new(
        move |buf: Vec<u8>| {
            out_tx
                .blocking_send(Bytes::from(buf))
                .map_err(|_| Error::new(ErrorKind::Cancelled, "the sinks stopped").into_io())
        },
        counter.clone(),
    );
    let mut writer = encryption.encrypt(out)?;
    loop {
        match rx.recv() {
            Ok(CipherMsg::Chunk(buf)) => {
                writer.write_all(&buf).map_err(|e| Error::io("encrypting", e))?;
                progress
                    .cipher_bytes
                    .store(counter.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            Ok(CipherMsg::Done) => break,
            // The tar stage stopped without finishing: never finish the age
            // stream, so no complete-looking ciphertext exists.
            Err(_) => return Err(Error::new(ErrorKind::Cancelled, "the bundle writer stopped")),
        }
    }
    writer
        .finish()
        .map_err(|e| Error::io("finishing encryption", e))?
        .finish()
        .map_err(|e| Error::io("sending the last chunk", e))
}
