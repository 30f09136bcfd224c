//! The backup pipeline:
//!
//! ```text
//! sources (async) → tar + per-entry SHA-256 (thread) → compressor (zstd
//! workers) → age + ciphertext SHA-256 (thread) → tee (async) → sink 1 … N
//! ```
//!
//! Stages are joined by bounded channels of 1 MiB chunks, so memory stays
//! bounded whatever the data size. The tar and age stages run on their own
//! OS threads and zstd on its worker threads, so compression, encryption
//! and hashing use every core while the async reactor only moves chunks.
//!
//! A sink's stream ends cleanly only after every stage finished: any
//! failure upstream is delivered to each sink as an error item, which the
//! Sink contract turns into "nothing visible". The public index is written
//! to a sink only after its object (and, when signing, `<id>.sig`) was
//! stored.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::bundle::{
    Compression, INDEX_FORMAT, Index, IndexEncryption, IndexObject, IndexSource, MANIFEST_ENTRY,
    MANIFEST_FORMAT, Manifest, ManifestEntry, ManifestSource, SOURCES_ENTRY, SUMS_ENTRY, SnapshotId,
    SourceRecord, SourcesFile, hostname,
};
use crate::crypto::Encryption;
use crate::error::{Error, ErrorKind, Result};
use crate::signing::SigningKey;
use crate::sink::{PutOptions, Sink, SinkExt};
use crate::source::{CaptureContext, Entry, EntryBody, EntrySender, Source, SourceReport};
use crate::stream::{ChunkWriter, Compressor, CountingWriter, ExactReader, HashReader};

/// 1 MiB chunks queued between the compression and encryption stages, and
/// between encryption and the sinks. On two cores the four busy threads
/// (tar, two zstd workers, age) take turns; a queue of 8 rides out a stage
/// that was descheduled for a time slice, where a queue of 2 stalled the
/// stages before it (bench/run.sh: ~3% less wall time). Costs at most
/// 16 MiB, and each chunk may be held by every hop.
const STAGE_QUEUE: usize = 8;

/// A sink of a backup run.
#[derive(Debug, Clone)]
pub struct SinkTarget {
    /// Name in the job (or the URL for one-off runs).
    pub name: String,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// Whether the run fails when this sink fails.
    pub required: bool,
}

/// Everything a backup run needs, resolved.
#[derive(Debug)]
pub struct BackupRequest {
    /// Job name.
    pub job: String,
    /// Sources, captured in order.
    pub sources: Vec<Arc<dyn Source>>,
    /// Sinks, written concurrently.
    pub sinks: Vec<SinkTarget>,
    /// Recipients or passphrase.
    pub encryption: Encryption,
    /// Compression codec.
    pub compression: Compression,
    /// Tags for the index.
    pub tags: Vec<String>,
    /// Snapshot time; now if `None`.
    pub time: Option<Timestamp>,
    /// zstd worker threads (0 = single-threaded).
    pub threads: u32,
    /// Signs the index (`<id>.sig`, written before the index) when set.
    pub signing_key: Option<Arc<SigningKey>>,
}

/// Live counters for progress display, shared by the work and whatever
/// shows it (a progress bar on a terminal).
///
/// Work goes in named phases (`backup`; `verify`, `decrypt`, `commit` of
/// a restore), each with the bytes done and, where known, its total. A
/// backup's total is known once every source reported its size
/// ([`CaptureContext::report_size`](crate::CaptureContext::report_size)).
#[derive(Debug, Default)]
pub struct Progress {
    /// Plaintext bytes read from sources, counted as they are read.
    pub plain_bytes: AtomicU64,
    /// Ciphertext bytes produced.
    pub cipher_bytes: AtomicU64,
    /// Entries written.
    pub entries: AtomicU64,
    phase: std::sync::Mutex<&'static str>,
    done: AtomicU64,
    total: AtomicU64,
    sources: std::sync::atomic::AtomicUsize,
    reported: std::sync::atomic::AtomicUsize,
    expected: AtomicU64,
    watched: std::sync::atomic::AtomicBool,
    /// Wakes a display at each new phase, so a short one is shown too.
    changed: tokio::sync::Notify,
}

impl Progress {
    /// Starts phase `name`, of `total` bytes if known.
    pub fn begin(&self, name: &'static str, total: Option<u64>) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = name;
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Waits until a new phase begins (or `max` passed): a display redraws
    /// then.
    pub async fn changed_or(&self, max: std::time::Duration) {
        let _ = tokio::time::timeout(max, self.changed.notified()).await;
    }

    /// Counts `n` more bytes of the current phase done.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// The current phase, its bytes done, and its total if known.
    pub fn now(&self) -> (&'static str, u64, Option<u64>) {
        let phase = *self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let total = self.total.load(Ordering::Relaxed);
        (
            phase,
            self.done.load(Ordering::Relaxed),
            (total > 0).then_some(total),
        )
    }

    /// Someone shows this progress (a bar on a terminal): sources may then
    /// spend a little to report their size.
    pub fn set_watched(&self) {
        self.watched.store(true, Ordering::Relaxed);
    }

    /// Whether someone shows this progress.
    pub fn is_watched(&self) -> bool {
        self.watched.load(Ordering::Relaxed)
    }

    /// A backup of `n` sources starts: its total is known once each
    /// reported its size.
    fn expect_sources(&self, n: usize) {
        self.begin("backup", None);
        self.sources.store(n, Ordering::Relaxed);
    }

    /// A source will read about `bytes` bytes.
    pub(crate) fn report_size(&self, bytes: u64) {
        let expected = self.expected.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let reported = self.reported.fetch_add(1, Ordering::Relaxed) + 1;
        if reported == self.sources.load(Ordering::Relaxed) {
            self.total.store(expected.max(1), Ordering::Relaxed);
        }
    }
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

/// How one sink fared.
#[derive(Debug)]
pub struct SinkOutcome {
    /// Sink name.
    pub name: String,
    /// Where it is.
    pub location: String,
    /// Whether it was required.
    pub required: bool,
    /// `Ok` when object and index are stored.
    pub result: Result<()>,
}

/// What a backup run did.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The index written to the sinks.
    pub index: Index,
    /// Per-source reports.
    pub sources: Vec<ManifestSource>,
    /// Number of entries.
    pub entries: u64,
    /// Plaintext bytes of file entries.
    pub plain_bytes: u64,
    /// Per-sink results, in the order given.
    pub sinks: Vec<SinkOutcome>,
}

impl BackupOutcome {
    /// Whether every required sink succeeded.
    pub fn required_ok(&self) -> bool {
        self.sinks.iter().all(|s| !s.required || s.result.is_ok())
    }

    /// Whether at least one sink holds the snapshot.
    pub fn any_ok(&self) -> bool {
        self.sinks.iter().any(|s| s.result.is_ok())
    }
}

enum TarMsg {
    Entry(usize, Entry),
    Finish(Vec<SourceReport>),
}

enum CipherMsg {
    Chunk(Vec<u8>),
    Done,
}

/// Runs one backup: captures every source once and writes the same
/// ciphertext to every sink.
///
/// Returns `Err` only when no snapshot could be produced at all (a source
/// or the pipeline failed, or every sink failed); per-sink failures are in
/// [`BackupOutcome::sinks`].
pub async fn run_backup(req: BackupRequest, progress: Arc<Progress>) -> Result<BackupOutcome> {
    req.encryption.validate()?;
    if req.sinks.is_empty() {
        return Err(crate::config_error("no sink configured").with_hint("add --sink DIR_OR_URL"));
    }
    let mut names = std::collections::HashSet::new();
    for s in &req.sources {
        let info = s.info();
        crate::bundle::check_source_name(&info.name)?;
        if !names.insert(info.name.clone()) {
            return Err(crate::config_error(format!(
                "two sources are named `{}`",
                info.name
            )));
        }
    }
    if req.sources.is_empty() {
        return Err(crate::config_error("no source configured").with_hint("add --source KIND:SPEC"));
    }
    for s in &req.sources {
        s.check()
            .await
            .map_err(|e| e.prefix(format!("source `{}`", s.info().name)))?;
    }

    let created_at = req.time.unwrap_or_else(Timestamp::now);
    let id = SnapshotId::new(created_at);
    let host = hostname();
    let infos: Vec<_> = req.sources.iter().map(|s| s.info()).collect();
    let sources_file = SourcesFile {
        id: id.clone(),
        sources: infos
            .iter()
            .map(|i| SourceRecord {
                name: i.name.clone(),
                kind: i.kind.to_string(),
                description: i.description.clone(),
                origin: i.origin.clone(),
            })
            .collect(),
    };
    let manifest_base = Manifest {
        format: MANIFEST_FORMAT.into(),
        id: id.clone(),
        job: req.job.clone(),
        created_at,
        host: host.clone(),
        coffer_version: env!("CARGO_PKG_VERSION").into(),
        sources: vec![],
        entries: vec![],
        total_bytes: 0,
    };

    // Stage channels.
    let (tar_tx, tar_rx) = mpsc::channel::<TarMsg>(16);
    let (cipher_tx, cipher_rx) = std::sync::mpsc::sync_channel::<CipherMsg>(STAGE_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(STAGE_QUEUE);

    // Tar + compression thread.
    let tar_progress = progress.clone();
    let compression = req.compression;
    let threads = req.threads;
    let source_names: Vec<String> = infos.iter().map(|i| i.name.clone()).collect();
    let tar_thread = std::thread::Builder::new()
        .name("coffer-tar".into())
        .spawn(move || {
            tar_stage(
                tar_rx,
                cipher_tx,
                sources_file,
                manifest_base,
                source_names,
                compression,
                threads,
                tar_progress,
            )
        })
        .map_err(|e| Error::io("starting the tar thread", e))?;

    // Encryption thread.
    let encryption = req.encryption.clone();
    let cipher_progress = progress.clone();
    let age_thread = std::thread::Builder::new()
        .name("coffer-age".into())
        .spawn(move || age_stage(cipher_rx, out_tx, encryption, cipher_progress))
        .map_err(|e| Error::io("starting the encryption thread", e))?;

    // Sinks: one bounded channel each, fed by the tee below.
    let object_key = id.object_key();
    let mut sink_txs = Vec::new();
    let mut puts = Vec::new();
    for target in &req.sinks {
        let (tx, rx) = mpsc::channel::<Result<Bytes>>(2);
        sink_txs.push(Some(tx));
        let sink = target.sink.clone();
        let key = object_key.clone();
        puts.push(async move {
            let stream = tokio_stream_from(rx);
            sink.put(&key, stream, PutOptions::create()).await
        });
    }

    // Producer: run sources one after the other into the tar thread.
    progress.expect_sources(req.sources.len());
    let ctx = CaptureContext::new(req.job.clone()).with_progress(progress.clone());
    let producer = async {
        let mut reports = Vec::new();
        for (i, src) in req.sources.iter().enumerate() {
            let (tx, mut rx) = EntrySender::channel(8);
            let capture = src.capture(&ctx, tx);
            let tar_tx = &tar_tx;
            // Owns `rx`: when the writer stops, the receiver goes with it
            // and the source's next send fails, so the capture ends too
            // instead of waiting on a full channel forever.
            let forward = async move {
                while let Some(e) = rx.recv().await {
                    if tar_tx.send(TarMsg::Entry(i, e)).await.is_err() {
                        return Err(Error::new(ErrorKind::Cancelled, "the bundle writer stopped"));
                    }
                }
                Ok(())
            };
            let (report, fwd) = tokio::join!(capture, forward);
            let report = report.map_err(|e| e.prefix(format!("source `{}`", src.info().name)))?;
            fwd?;
            reports.push(report);
        }
        tar_tx
            .send(TarMsg::Finish(reports))
            .await
            .map_err(|_| Error::new(ErrorKind::Cancelled, "the bundle writer stopped"))?;
        drop(tar_tx);
        Ok::<(), Error>(())
    };

    // Tee: every ciphertext chunk to every live sink. Ends cleanly only when
    // the age thread finished; otherwise every sink gets an error item.
    let tee = async move {
        let mut sink_txs = sink_txs;
        while let Some(chunk) = out_rx.recv().await {
            for slot in sink_txs.iter_mut() {
                if let Some(tx) = slot
                    && tx.send(Ok(chunk.clone())).await.is_err()
                {
                    *slot = None; // that sink failed; its put reports why
                }
            }
            if sink_txs.iter().all(Option::is_none) {
                break; // every sink failed: stop the pipeline early
            }
        }
        drop(out_rx);
        sink_txs
    };

    let puts_fut = futures::future::join_all(puts);
    let pipeline = async {
        let (prod, sink_txs) = tokio::join!(producer, tee);
        // Both threads end once their inputs end; join them off the reactor.
        let joined = tokio::task::spawn_blocking(move || {
            let tar = tar_thread.join().unwrap_or_else(|_| Err(panic_error("tar")));
            let age = age_thread
                .join()
                .unwrap_or_else(|_| Err(panic_error("encryption")));
            (tar, age)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("pipeline join failed: {e}")));
        let result = match joined {
            Ok((tar, age)) => {
                // The stage that failed first explains best: tar, then
                // age, then the producer (which only sees "writer stopped").
                match (tar, age, prod) {
                    (Ok(manifest), Ok((sha, size)), Ok(())) => Ok((manifest, sha, size)),
                    (tar, age, prod) => {
                        let mut errors: Vec<Error> =
                            [tar.err(), age.err(), prod.err()].into_iter().flatten().collect();
                        // A stage that stopped only because another did says
                        // "Cancelled"; report the one that failed for real.
                        let real = errors
                            .iter()
                            .position(|e| e.kind() != ErrorKind::Cancelled)
                            .unwrap_or(0);
                        Err(errors.swap_remove(real))
                    }
                }
            }
            Err(e) => Err(e),
        };
        // Release the sinks: a clean end on success, an error otherwise.
        let txs: Vec<_> = sink_txs.into_iter().flatten().collect();
        if let Err(e) = &result {
            for tx in &txs {
                let _ = tx
                    .send(Err(Error::new(
                        e.kind(),
                        format!("backup aborted: {}", e.message()),
                    )))
                    .await;
            }
        }
        drop(txs);
        result
    };
    let (result, put_results) = tokio::join!(pipeline, puts_fut);
    if put_results.iter().all(|r| r.is_err()) {
        let (t, e) = req
            .sinks
            .iter()
            .zip(&put_results)
            .find_map(|(t, r)| r.as_ref().err().map(|e| (t, e)))
            .expect("all failed");
        let mut err = Error::new(e.kind(), format!("every sink failed; sink `{}`: {e}", t.name));
        if let Some(h) = e.hint() {
            err = err.with_hint(h);
        }
        // A source or pipeline error explains better than the sinks' echo of it.
        return Err(match result {
            Err(r) if r.kind() != ErrorKind::Cancelled => r,
            _ => err,
        });
    }
    let (manifest, sha256, size) = result?;

    let (mode, recipients) = req.encryption.describe();
    let index = Index {
        format: INDEX_FORMAT.into(),
        id: id.clone(),
        job: req.job.clone(),
        created_at,
        host,
        tags: req.tags.clone(),
        coffer_version: env!("CARGO_PKG_VERSION").into(),
        sources: infos
            .iter()
            .map(|i| IndexSource {
                name: i.name.clone(),
                kind: i.kind.into(),
            })
            .collect(),
        object: IndexObject {
            key: object_key.clone(),
            size,
            sha256,
        },
        compression: req.compression.name().into(),
        encryption: IndexEncryption {
            scheme: "age".into(),
            mode,
            recipients,
        },
    };
    let index_bytes = Bytes::from(index.to_json());
    // The signature covers the exact index bytes stored below.
    let sig_bytes = req
        .signing_key
        .as_ref()
        .map(|k| Bytes::from(k.sign_index(&index_bytes).to_json()));

    // Object, then signature, then index last, only where the object landed.
    let mut sinks = Vec::new();
    let index_writes = req.sinks.iter().zip(put_results).map(|(t, put)| {
        let bytes = index_bytes.clone();
        let key = id.index_key();
        let sig = sig_bytes.clone().map(|b| (id.signature_key(), b));
        async move {
            let result = match put {
                Ok(n) if n != size => Err(Error::new(
                    ErrorKind::Integrity,
                    format!("sink stored {n} bytes, expected {size}"),
                )),
                Ok(_) => {
                    let signed = match sig {
                        Some((sig_key, sig)) => t
                            .sink
                            .put_bytes(&sig_key, sig, PutOptions::create())
                            .await
                            .map(|_| ())
                            .map_err(|e| e.prefix("writing the signature")),
                        None => Ok(()),
                    };
                    match signed {
                        Ok(()) => t
                            .sink
                            .put_bytes(&key, bytes, PutOptions::create())
                            .await
                            .map(|_| ()),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            SinkOutcome {
                name: t.name.clone(),
                location: t.sink.info().to_string(),
                required: t.required,
                result,
            }
        }
    });
    for o in futures::future::join_all(index_writes).await {
        sinks.push(o);
    }

    let outcome = BackupOutcome {
        index,
        sources: manifest.sources,
        entries: manifest.entries.len() as u64,
        plain_bytes: manifest.total_bytes,
        sinks,
    };
    if !outcome.any_ok() {
        let first = outcome.sinks.iter().find_map(|s| s.result.as_ref().err());
        let msg = first.map(|e| e.to_string()).unwrap_or_default();
        let hint = first.and_then(|e| e.hint()).map(str::to_string);
        let mut err = Error::new(
            first.map(|e| e.kind()).unwrap_or(ErrorKind::Unexpected),
            format!("every sink failed: {msg}"),
        );
        if let Some(h) = hint {
            err = err.with_hint(h);
        }
        return Err(err);
    }
    Ok(outcome)
}

fn panic_error(stage: &str) -> Error {
    Error::new(ErrorKind::Unexpected, format!("the {stage} stage panicked"))
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Result<Bytes>>) -> crate::sink::ByteStream {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
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

#[allow(clippy::too_many_arguments)]
fn tar_stage(
    mut rx: mpsc::Receiver<TarMsg>,
    cipher_tx: std::sync::mpsc::SyncSender<CipherMsg>,
    sources_file: SourcesFile,
    mut manifest: Manifest,
    source_names: Vec<String>,
    compression: Compression,
    threads: u32,
    progress: Arc<Progress>,
) -> Result<Manifest> {
    let chunk_tx = cipher_tx.clone();
    let chunks = ChunkWriter::new(move |buf| {
        chunk_tx
            .send(CipherMsg::Chunk(buf))
            .map_err(|_| Error::new(ErrorKind::Cancelled, "the encryption stage stopped").into_io())
    });
    let compressor =
        Compressor::new(compression, chunks, threads).map_err(|e| Error::io("starting compression", e))?;
    let mut builder = tar::Builder::new(compressor);
    builder.mode(tar::HeaderMode::Complete);
    let now = manifest.created_at.as_second();
    let mut sums = String::new();
    let mut seen = std::collections::HashSet::new();

    let append_bytes = |builder: &mut tar::Builder<_>, path: &str, bytes: &[u8]| -> Result<()> {
        let mut h = header(tar::EntryType::Regular, 0o600, now, bytes.len() as u64);
        builder
            .append_data(&mut h, path, bytes)
            .map_err(|e| Error::io(format!("writing {path}"), e))
    };
    let sources_json = serde_json::to_vec_pretty(&sources_file).expect("serializes");
    append_bytes(&mut builder, SOURCES_ENTRY, &sources_json)?;

    let reports = loop {
        let Some(msg) = rx.blocking_recv() else {
            return Err(Error::new(
                ErrorKind::Cancelled,
                "capture stopped before it finished",
            ));
        };
        let (src, entry) = match msg {
            TarMsg::Entry(src, entry) => (src, entry),
            TarMsg::Finish(reports) => break reports,
        };
        let name = &source_names[src];
        crate::source::check_relative_path(&entry.path).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("source `{name}` produced a bad path: {e}"),
            )
        })?;
        let path = format!("{}/{}/{}", entry.area.dir(), name, entry.path);
        if !seen.insert(path.clone()) {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("source `{name}` produced `{path}` twice"),
            ));
        }
        // Secrets are private whatever their source said.
        let mode = match (entry.area.is_secret(), &entry.body) {
            (true, EntryBody::Dir) => 0o700,
            (true, _) => 0o600,
            (false, _) => entry.mode,
        };
        let (uid, gid) = entry.owner.unwrap_or((0, 0));
        match entry.body {
            EntryBody::File { size, reader } => {
                let mut h = header(tar::EntryType::Regular, mode, entry.mtime, size);
                h.set_uid(uid.into());
                h.set_gid(gid.into());
                // The outer BufReader lets io::copy move 1 MiB blocks (hashing
                // and compressing in large blocks is markedly cheaper).
                let counted = CountRead {
                    inner: ExactReader::new(reader, size, path.clone()),
                    progress: progress.clone(),
                };
                let hr = HashReader::new(counted);
                let mut buffered = io::BufReader::with_capacity(1 << 20, hr);
                builder
                    .append_data(&mut h, &path, &mut buffered)
                    .map_err(|e| Error::io(format!("reading {path}"), e))?;
                let (sha, n) = buffered.into_inner().finish();
                sums.push_str(&crate::bundle::sums_line(&sha, &path));
                manifest.total_bytes += n;
                manifest.entries.push(ManifestEntry {
                    path,
                    size: n,
                    sha256: sha,
                });
            }
            EntryBody::Dir => {
                let mut h = header(tar::EntryType::Directory, mode, entry.mtime, 0);
                h.set_uid(uid.into());
                h.set_gid(gid.into());
                builder
                    .append_data(&mut h, format!("{path}/"), io::empty())
                    .map_err(|e| Error::io(format!("writing {path}"), e))?;
            }
            EntryBody::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, mode, entry.mtime, 0);
                h.set_uid(uid.into());
                h.set_gid(gid.into());
                builder
                    .append_link(&mut h, &path, &target)
                    .map_err(|e| Error::io(format!("writing {path}"), e))?;
            }
        }
        progress.entries.fetch_add(1, Ordering::Relaxed);
    };

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
    append_bytes(&mut builder, SUMS_ENTRY, sums.as_bytes())?;
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("serializes");
    append_bytes(&mut builder, MANIFEST_ENTRY, &manifest_json)?;
    let compressor = builder
        .into_inner()
        .map_err(|e| Error::io("finishing the tar stream", e))?;
    let chunks = compressor
        .finish()
        .map_err(|e| Error::io("finishing compression", e))?;
    chunks
        .finish()
        .map_err(|e| Error::io("finishing compression", e))?;
    cipher_tx
        .send(CipherMsg::Done)
        .map_err(|_| Error::new(ErrorKind::Cancelled, "the encryption stage stopped"))?;
    Ok(manifest)
}

fn age_stage(
    rx: std::sync::mpsc::Receiver<CipherMsg>,
    out_tx: mpsc::Sender<Bytes>,
    encryption: Encryption,
    progress: Arc<Progress>,
) -> Result<(String, u64)> {
    let hasher = Arc::new(std::sync::Mutex::new(Sha256::new()));
    let h2 = hasher.clone();
    let chunks = ChunkWriter::new(move |buf: Vec<u8>| {
        h2.lock().expect("hasher").update(&buf);
        out_tx
            .blocking_send(Bytes::from(buf))
            .map_err(|_| Error::new(ErrorKind::Cancelled, "the sinks stopped").into_io())
    });
    let counter = Arc::new(AtomicU64::new(0));
    let counting = CountingWriter {
        inner: chunks,
        counter: counter.clone(),
    };
    let mut writer = encryption.encrypt(counting)?;
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
    let counting = writer
        .finish()
        .map_err(|e| Error::io("finishing encryption", e))?;
    counting
        .inner
        .finish()
        .map_err(|e| Error::io("sending the last chunk", e))?;
    let size = counter.load(Ordering::Relaxed);
    let sha = hex::encode(std::mem::take(&mut *hasher.lock().expect("hasher")).finalize());
    Ok((sha, size))
}
