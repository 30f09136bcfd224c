//! The backup pipeline:
//!
//! ```text
//! sources (async) → tar (thread) → compressor (zstd workers)
//!                       ↘ per-file SHA-256 (thread)
//!   → age + ciphertext SHA-256 (thread) → tee (async) → sink 1 … N
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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;
use tokio::sync::mpsc;

mod publish;
mod stages;

use self::publish::{Snapshot, every_sink_failed, write_indexes};
use self::stages::{CacheUse, CipherMsg, TarMsg, age_stage, tar_stage};
use crate::bundle::{Compression, Index, Manifest, ManifestSource};
use crate::chunked::cache::Seen;
use crate::chunked::writer::{ChunkFeed, ChunkedRun};
use crate::chunked::{DedupKey, SnapshotFormat};
use crate::crypto::Encryption;
use crate::error::{Error, ErrorKind, Result};
use crate::signing::SigningKey;
use crate::sink::{PutOptions, Sink};
use crate::source::{CaptureContext, EntrySender, Source};

/// 1 MiB chunks queued between the compression and encryption stages, and
/// between encryption and the sinks. On two cores the five busy threads
/// (tar, hashing, two zstd workers, age) take turns; a queue of 8 rides out a stage
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
    /// How the snapshot is stored there.
    pub format: SnapshotFormat,
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
    /// Keys the chunker and chunk addresses of the chunked sinks (one key
    /// per run); required when a sink is chunked.
    pub dedup_key: Option<Arc<DedupKey>>,
    /// When not empty, a chunked sink's new snapshot reuses only chunks of
    /// snapshots these signers signed (see [`crate::chunked::load_known`]).
    pub trusted: crate::TrustedSigners,
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
    /// Bytes of unchanged files a chunked backup did not read again (the
    /// file cache).
    pub reused_bytes: AtomicU64,
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
    pub(crate) fn expect_sources(&self, n: usize) {
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
    /// Bytes of unchanged files not read again (chunked sinks only).
    pub reused_bytes: u64,
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

/// Runs one backup: captures every source once and writes the same
/// ciphertext to every sink.
///
/// The steps: [`preflight`] (names, `check()` of each source), start the
/// tar and age stages on their threads, start one `put` per sink, then
/// [`produce`] (sources → tar stage) and [`tee`] (ciphertext → sinks) run
/// together until [`settle`] joins the stages; [`write_indexes`] then
/// stores signature and index where the object landed.
///
/// Returns `Err` only when no snapshot could be produced at all (a source
/// or the pipeline failed, or every sink failed); per-sink failures are in
/// [`BackupOutcome::sinks`].
pub async fn run_backup(req: BackupRequest, progress: Arc<Progress>) -> Result<BackupOutcome> {
    preflight(&req).await?;
    let mut snapshot = Snapshot::new(&req);
    let (bundled, chunked): (Vec<usize>, Vec<usize>) =
        (0..req.sinks.len()).partition(|&i| req.sinks[i].format == SnapshotFormat::Bundle);
    let started = Timestamp::now();
    let side = ChunkParts::split(
        start_chunked(&req, &chunked, &progress).await?,
        bundled.is_empty(),
    );

    let (tar_tx, tar_rx) = mpsc::channel::<TarMsg>(16);
    let (cipher_tx, cipher_rx) = std::sync::mpsc::sync_channel::<CipherMsg>(STAGE_QUEUE);
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(STAGE_QUEUE);
    let bundle = (!bundled.is_empty()).then_some((cipher_tx, cipher_rx, out_tx));
    let stages = Stages::start(
        &req,
        &snapshot,
        &progress,
        tar_rx,
        bundle,
        side.feed,
        side.cache_use,
    )?;
    let (sink_txs, puts) = bundle_puts(&req, &bundled, &snapshot.id.object_key());

    progress.expect_sources(req.sources.len());
    let ctx = CaptureContext::new(req.job.clone()).with_progress(progress.clone());
    let pipeline = async {
        let (prod, sink_txs) = tokio::join!(produce(&req.sources, &ctx, tar_tx), tee(out_rx, sink_txs));
        settle(stages, prod, sink_txs).await
    };
    let (result, put_results) = tokio::join!(pipeline, futures::future::join_all(puts));
    let (chunk_results, addresses) = match side.run {
        Some(run) => run.finish().await,
        None => (Vec::new(), Vec::new()),
    };
    if put_results.iter().all(Result::is_err) && chunk_results.iter().all(Result::is_err) {
        let all = in_sink_order((&bundled, put_results), (&chunked, chunk_results));
        return Err(all_puts_failed(&req.sinks, &all, result));
    }
    let (manifest, plain_size, bundle_object, seen) = result?;
    snapshot.set_positions(&manifest);
    if let Some(path) = side.cache_path {
        save_file_cache(&path, &manifest, &seen, &addresses, started).await;
    }

    let mut outcomes: Vec<(usize, SinkOutcome)> = Vec::new();
    let mut index = None;
    if let Some((sha256, size)) = bundle_object {
        let idx = snapshot.index(&req, size, sha256, plain_size);
        let targets: Vec<&SinkTarget> = bundled.iter().map(|&i| &req.sinks[i]).collect();
        let written = write_indexes(&req, &targets, &idx, put_results).await;
        outcomes.extend(bundled.iter().copied().zip(written));
        index = Some(idx);
    }
    if !chunked.is_empty() {
        let key_id = req.dedup_key.as_ref().map(|k| k.id()).unwrap_or_default();
        let targets: Vec<&SinkTarget> = chunked.iter().map(|&i| &req.sinks[i]).collect();
        let (written, first) =
            publish::write_chunked(&req, &snapshot, &targets, chunk_results, &key_id, plain_size).await;
        outcomes.extend(chunked.iter().copied().zip(written));
        index = index.or(first);
    }
    outcomes.sort_by_key(|(i, _)| *i);
    let sinks: Vec<SinkOutcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    let index = index.unwrap_or_else(|| snapshot.index(&req, 0, String::new(), plain_size));
    let outcome = BackupOutcome {
        index,
        sources: manifest.sources,
        entries: manifest.entries.len() as u64,
        plain_bytes: manifest.total_bytes,
        sinks,
        reused_bytes: progress.reused_bytes.load(Ordering::Relaxed),
    };
    if !outcome.any_ok() {
        return Err(every_sink_failed(&outcome));
    }
    Ok(outcome)
}

/// The chunked side of a run, taken apart for the stages that use it.
#[derive(Default)]
struct ChunkParts {
    /// The dedup key and the chunk feed, for the tar stage.
    feed: Option<(Arc<DedupKey>, ChunkFeed)>,
    /// The seal workers and packers, finished after the stages.
    run: Option<ChunkedRun>,
    /// The file cache and what the sinks store, for the tar stage.
    cache_use: Option<CacheUse>,
    /// Where the next run's file cache goes.
    cache_path: Option<std::path::PathBuf>,
}

impl ChunkParts {
    /// Takes `side` apart; `only_chunked` says no bundle is written, so
    /// the file cache may spare reading unchanged files.
    fn split(side: Option<ChunkSide>, only_chunked: bool) -> ChunkParts {
        let Some(side) = side else {
            return ChunkParts::default();
        };
        ChunkParts {
            cache_path: side.cache.path().map(std::path::Path::to_path_buf),
            cache_use: Some(CacheUse {
                cache: side.cache,
                // With a bundle written too, every file is read anyway.
                known: only_chunked.then_some(side.known),
            }),
            feed: Some((side.key, side.feed)),
            run: Some(side.run),
        }
    }
}

/// Starts one `put` of the bundle object per bundle sink: the channels the
/// tee feeds, and the puts to run beside it.
fn bundle_puts(
    req: &BackupRequest,
    bundled: &[usize],
    object_key: &str,
) -> (
    Vec<SinkTx>,
    Vec<impl std::future::Future<Output = Result<u64>> + use<>>,
) {
    let mut sink_txs = Vec::new();
    let mut puts = Vec::new();
    for target in bundled.iter().map(|&i| &req.sinks[i]) {
        // A required sink paces the run; an optional one gets a buffer and
        // is dropped from the run when it falls further behind (`tee`).
        let (tx, rx) = mpsc::channel::<Result<Bytes>>(if target.required { 2 } else { OPTIONAL_LAG });
        let lagged = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(tokio::sync::Notify::new());
        sink_txs.push(Some(SinkFeed {
            tx,
            required: target.required,
            lagged: lagged.clone(),
            dropped: dropped.clone(),
        }));
        let sink = target.sink.clone();
        let key = object_key.to_string();
        puts.push(async move {
            // A sink dropped from the run is not waited for: its put is
            // dropped too, which the Sink contract makes store nothing.
            tokio::select! {
                r = sink.put(&key, tokio_stream_from(rx, lagged), PutOptions::create()) => r,
                _ = dropped.notified() => Err(lag_error()),
            }
        });
    }
    (sink_txs, puts)
}

/// Saves the next run's file cache: what this run read or reused (files
/// changed since a second before it started are left out).
async fn save_file_cache(
    path: &std::path::Path,
    manifest: &Manifest,
    seen: &[Seen],
    addresses: &[[u8; 32]],
    started: Timestamp,
) {
    let sums: std::collections::HashMap<&str, &str> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.sha256.as_str()))
        .collect();
    let racy_after = started.as_nanosecond() as i64 - 1_000_000_000;
    crate::chunked::FileCache::save(path, seen, &sums, addresses, racy_after).await;
}

/// Starts the chunked side of a run when some sinks are chunked: loads
/// which chunks each already stores (an unreadable sink: none, so it gets
/// every chunk, and its own error later), then the seal workers and
/// packers.
async fn start_chunked(
    req: &BackupRequest,
    chunked: &[usize],
    progress: &Arc<Progress>,
) -> Result<Option<ChunkSide>> {
    if chunked.is_empty() {
        return Ok(None);
    }
    let key = req.dedup_key.clone().ok_or_else(|| {
        crate::config_error("a chunked sink needs a dedup key")
            .with_hint("set `dedup-key = PATH` on the sink, or pass --dedup-key PATH")
    })?;
    let mut sinks: Vec<(Arc<dyn crate::Sink>, Arc<crate::chunked::KnownChunks>)> = Vec::new();
    for &i in chunked {
        let t = &req.sinks[i];
        let known = match crate::Catalog::load(t.sink.as_ref()).await {
            Ok(cat) => crate::chunked::load_known(t.sink.as_ref(), &cat, &key.id(), &req.trusted).await,
            Err(e) => Err(e),
        };
        let known = known.unwrap_or_else(|e| {
            tracing::info!(
                "sink `{}`: cannot read its chunks ({e}); storing every chunk",
                t.name
            );
            Default::default()
        });
        sinks.push((t.sink.clone(), Arc::new(known)));
    }
    let level = match req.compression {
        Compression::Zstd(level) => level,
        _ => 3,
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let required: Vec<bool> = chunked.iter().map(|&i| req.sinks[i].required).collect();
    let (feed, run) = crate::chunked::writer::start(
        &key,
        &req.encryption,
        level,
        workers,
        sinks.clone(),
        &required,
        progress.clone(),
    )?;
    let location = crate::chunked::FileCache::location(&req.job, &key.id());
    let cache = tokio::task::spawn_blocking(move || crate::chunked::FileCache::load(location))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("loading the file cache failed: {e}"),
            )
        })?;
    let known = sinks.iter().map(|(_, k)| k.clone()).collect();
    Ok(Some(ChunkSide {
        key,
        feed,
        run,
        known,
        cache,
    }))
}

/// The chunked side of a run, started.
struct ChunkSide {
    key: Arc<DedupKey>,
    feed: ChunkFeed,
    run: ChunkedRun,
    known: Vec<Arc<crate::chunked::KnownChunks>>,
    cache: crate::chunked::FileCache,
}

/// Checks the request before anything runs: encryption, at least one
/// source and sink, unique valid source names, each source's `check()`.
async fn preflight(req: &BackupRequest) -> Result<()> {
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
    Ok(())
}

/// The tar + compression thread and the encryption thread.
struct Stages {
    tar: std::thread::JoinHandle<Result<(Manifest, u64, Vec<Seen>)>>,
    /// Only when some sink takes a bundle.
    age: Option<std::thread::JoinHandle<Result<(String, u64)>>>,
}

/// The channels of the bundle's compression and encryption stages.
type BundleStages = (
    std::sync::mpsc::SyncSender<CipherMsg>,
    std::sync::mpsc::Receiver<CipherMsg>,
    mpsc::Sender<Bytes>,
);

impl Stages {
    fn start(
        req: &BackupRequest,
        snapshot: &Snapshot,
        progress: &Arc<Progress>,
        tar_rx: mpsc::Receiver<TarMsg>,
        bundle: Option<BundleStages>,
        chunks: Option<(Arc<DedupKey>, ChunkFeed)>,
        cache: Option<CacheUse>,
    ) -> Result<Stages> {
        let (cipher_tx, age_side) = match bundle {
            Some((cipher_tx, cipher_rx, out_tx)) => (Some(cipher_tx), Some((cipher_rx, out_tx))),
            None => (None, None),
        };
        let tar_progress = progress.clone();
        let (compression, threads) = (req.compression, req.threads);
        let sources_file = snapshot.sources_file();
        let manifest = snapshot.manifest_base(&req.job);
        let tar = std::thread::Builder::new()
            .name("coffer-tar".into())
            .spawn(move || {
                tar_stage(
                    tar_rx,
                    cipher_tx,
                    chunks,
                    cache,
                    sources_file,
                    manifest,
                    compression,
                    threads,
                    tar_progress,
                )
            })
            .map_err(|e| Error::io("starting the tar thread", e))?;
        let age = match age_side {
            Some((cipher_rx, out_tx)) => {
                let encryption = req.encryption.clone();
                let cipher_progress = progress.clone();
                Some(
                    std::thread::Builder::new()
                        .name("coffer-age".into())
                        .spawn(move || age_stage(cipher_rx, out_tx, encryption, cipher_progress))
                        .map_err(|e| Error::io("starting the encryption thread", e))?,
                )
            }
            None => None,
        };
        Ok(Stages { tar, age })
    }
}

/// Runs the sources one after the other into the tar thread, then hands it
/// their reports.
async fn produce(
    sources: &[Arc<dyn Source>],
    ctx: &CaptureContext,
    tar_tx: mpsc::Sender<TarMsg>,
) -> Result<()> {
    let mut reports = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let (tx, mut rx) = EntrySender::channel(8);
        let capture = src.capture(ctx, tx);
        let tar_tx = &tar_tx;
        // Owns `rx`: when the writer stops, the receiver goes with it and
        // the source's next send fails, so the capture ends too instead of
        // waiting on a full channel forever.
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
        .map_err(|_| Error::new(ErrorKind::Cancelled, "the bundle writer stopped"))
}

/// Chunks (1 MiB each) an optional sink may fall behind the run before it
/// is dropped from it: a slow optional sink never paces the others.
const OPTIONAL_LAG: usize = 16;

/// The feed of one sink's `put`.
struct SinkFeed {
    tx: mpsc::Sender<Result<Bytes>>,
    required: bool,
    /// Set when an optional sink fell [`OPTIONAL_LAG`] chunks behind: its
    /// stream then ends with an error, so its put stores nothing.
    lagged: Arc<AtomicBool>,
    /// Told then, so the run drops that put instead of waiting for it.
    dropped: Arc<tokio::sync::Notify>,
}

type SinkTx = Option<SinkFeed>;

/// Every ciphertext chunk to every live sink. Ends cleanly only when the
/// age thread finished; returns the senders still open. A required sink
/// is waited for; an optional one whose buffer is full is dropped from
/// the run (its put fails, nothing is stored there, the others go on).
async fn tee(mut out_rx: mpsc::Receiver<Bytes>, mut sink_txs: Vec<SinkTx>) -> Vec<SinkTx> {
    while let Some(chunk) = out_rx.recv().await {
        for slot in sink_txs.iter_mut() {
            let Some(feed) = slot else { continue };
            let sent = if feed.required {
                feed.tx.send(Ok(chunk.clone())).await.is_ok()
            } else {
                match feed.tx.try_send(Ok(chunk.clone())) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        feed.lagged.store(true, Ordering::SeqCst);
                        feed.dropped.notify_one();
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            };
            if !sent {
                *slot = None; // that sink failed or fell behind; its put reports why
            }
        }
        if sink_txs.iter().all(Option::is_none) {
            break; // every sink failed: stop the pipeline early
        }
    }
    sink_txs
}

/// Joins the stage threads and releases the sinks: a clean end of their
/// streams on success, an error item otherwise (which the Sink contract
/// turns into "nothing visible"). The stage that failed first explains
/// best: tar, then age, then the producer (which only sees "writer
/// stopped").
async fn settle(
    stages: Stages,
    prod: Result<()>,
    sink_txs: Vec<SinkTx>,
) -> Result<(Manifest, u64, Option<(String, u64)>, Vec<Seen>)> {
    // Both threads end once their inputs end; join them off the reactor.
    let joined = tokio::task::spawn_blocking(move || {
        let tar = stages.tar.join().unwrap_or_else(|_| Err(panic_error("tar")));
        let age = stages
            .age
            .map(|age| age.join().unwrap_or_else(|_| Err(panic_error("encryption"))));
        (tar, age.transpose())
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Unexpected, format!("pipeline join failed: {e}")));
    let result = match joined.map(|(tar, age)| (tar, age, prod)) {
        Ok((Ok((manifest, plain, seen)), Ok(object), Ok(()))) => Ok((manifest, plain, object, seen)),
        Ok((tar, age, prod)) => {
            let mut errors: Vec<Error> = [tar.err(), age.err(), prod.err()].into_iter().flatten().collect();
            // A stage that stopped only because another did says
            // "Cancelled"; report the one that failed for real.
            let real = errors
                .iter()
                .position(|e| e.kind() != ErrorKind::Cancelled)
                .unwrap_or(0);
            Err(errors.swap_remove(real))
        }
        Err(e) => Err(e),
    };
    let txs: Vec<_> = sink_txs.into_iter().flatten().collect();
    if let Err(e) = &result {
        for feed in &txs {
            let aborted = Err(Error::new(e.kind(), format!("backup aborted: {}", e.message())));
            if feed.required {
                let _ = feed.tx.send(aborted).await;
            } else if feed.tx.try_send(aborted).is_err() {
                // Its buffer is full: its stream ends with an error anyway.
                feed.lagged.store(true, Ordering::SeqCst);
            }
        }
    }
    result
}

/// The results of the bundle and the chunked sinks, in the order of the
/// request's sinks (`bundled` and `chunked` are their positions).
fn in_sink_order<C>(
    (bundled, puts): (&[usize], Vec<Result<u64>>),
    (chunked, chunks): (&[usize], Vec<Result<C>>),
) -> Vec<Result<u64>> {
    bundled
        .iter()
        .zip(puts)
        .map(|(&i, r)| (i, r))
        .chain(chunked.iter().zip(chunks).map(|(&i, r)| (i, r.map(|_| 0))))
        .collect::<std::collections::BTreeMap<usize, _>>()
        .into_values()
        .collect()
}

/// The error of a run in which no sink stored the object: the source or
/// pipeline error when there was one (it explains better than the sinks'
/// echo of it), else the first sink's.
fn all_puts_failed<T>(sinks: &[SinkTarget], puts: &[Result<u64>], result: Result<T>) -> Error {
    let (t, e) = sinks
        .iter()
        .zip(puts)
        .find_map(|(t, r)| r.as_ref().err().map(|e| (t, e)))
        .expect("all failed");
    let mut err = Error::new(e.kind(), format!("every sink failed; sink `{}`: {e}", t.name));
    if let Some(h) = e.hint() {
        err = err.with_hint(h);
    }
    match result {
        Err(r) if r.kind() != ErrorKind::Cancelled => r,
        _ => err,
    }
}

fn panic_error(stage: &str) -> Error {
    Error::new(ErrorKind::Unexpected, format!("the {stage} stage panicked"))
}

/// The stream a sink's `put` reads; once `lagged` is set (the sink was
/// dropped from the run) it ends at once with an error, never cleanly, so
/// nothing is stored there and the run does not wait for the buffer.
fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes>>,
    lagged: Arc<AtomicBool>,
) -> crate::sink::ByteStream {
    let mut ended = false;
    futures::stream::poll_fn(move |cx| match rx.poll_recv(cx) {
        _ if ended => std::task::Poll::Ready(None),
        _ if lagged.load(Ordering::SeqCst) => {
            ended = true;
            std::task::Poll::Ready(Some(Err(lag_error())))
        }
        other => other,
    })
    .boxed()
}

/// Why an optional sink's put failed when it fell behind.
fn lag_error() -> Error {
    Error::new(
        ErrorKind::Unreachable,
        format!("an optional sink fell more than {OPTIONAL_LAG} MiB behind the others and was dropped from this run"),
    )
    .with_hint(
        "nothing was stored there; the other sinks went on at full speed. Copy the snapshot to it later \
         (`coffer copy`), or make it required to have the run wait for it",
    )
}
