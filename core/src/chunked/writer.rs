//! The chunked side of a backup run:
//!
//! ```text
//! tar stage → Chunker → seal workers (address, zstd, age) → in order → packer per sink → packs
//! ```
//!
//! A chunk every sink already stores is neither compressed nor encrypted;
//! a sink gets only the chunks it lacks, packed into objects of
//! [`PACK_TARGET`] bytes written create-only. A sink's chunk list is
//! returned once every one of its packs is stored: the run then writes
//! the list, the signature and the index, in that order.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::chunker::PlainChunk;
use super::{ChunkList, ChunkRef, DedupKey, KnownChunks, PACK_TARGET, new_pack_name, pack_key};
use crate::backup::Progress;
use crate::crypto::Encryption;
use crate::error::{Error, ErrorKind, Result};
use crate::sink::{PutOptions, Sink};

/// Packs of one sink being uploaded while the next one is filled.
const PUTS_IN_FLIGHT: usize = 1;

/// Work for the seal workers: a chunk in stream order, or the end of a
/// stream that finished cleanly.
enum Job {
    Chunk(u64, PlainChunk),
    /// A chunk every sink stores, not read again (the file cache).
    Known(u64, [u8; 32]),
    Done(u64),
}

/// A sealed chunk, in stream order.
struct Sealed {
    address: [u8; 32],
    /// Compressed and encrypted, when some sink may lack it.
    cipher: Option<(Bytes, [u8; 32])>,
}

enum SealedMsg {
    Chunk(u64, Arc<Sealed>),
    Done(u64),
}

/// What one chunked sink received.
#[derive(Debug)]
pub(crate) struct SinkChunks {
    pub(crate) list: ChunkList,
    pub(crate) new_chunks: u64,
    pub(crate) new_bytes: u64,
}

/// The running chunked side of a backup.
pub(crate) struct ChunkedRun {
    workers: Vec<std::thread::JoinHandle<()>>,
    distribute: tokio::task::JoinHandle<Result<Vec<[u8; 32]>>>,
    packers: Vec<tokio::task::JoinHandle<Result<SinkChunks>>>,
    /// Per sink: set when an optional sink fell behind and was dropped.
    lagged: Vec<Arc<std::sync::atomic::AtomicBool>>,
}

/// Chunks an optional sink's packer may be behind the distributor before
/// the sink is dropped from the run (the others never wait for it).
pub(crate) const OPTIONAL_LAG_CHUNKS: usize = 16;

/// One sink's place in the distribution.
struct Outlet {
    tx: Option<mpsc::Sender<SealedMsg>>,
    /// `Some` for an optional sink: dropped (its packer aborted) when its
    /// queue is full.
    optional: Option<(Arc<std::sync::atomic::AtomicBool>, tokio::task::AbortHandle)>,
}

/// Hands the chunker's chunks to the seal workers, numbered.
pub(crate) struct ChunkFeed {
    tx: std::sync::mpsc::SyncSender<Job>,
    seq: u64,
}

impl super::chunker::ChunkOut for ChunkFeed {
    fn send(&mut self, chunk: PlainChunk) -> io::Result<()> {
        let seq = self.next();
        self.push(Job::Chunk(seq, chunk))
    }
}

impl ChunkFeed {
    /// The number of chunks sent so far (the next one's sequence number).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// A chunk every sink of the run stores, by its address (see
    /// [`KnownChunks`]): referenced, not read.
    pub(crate) fn send_known(&mut self, address: [u8; 32]) -> io::Result<()> {
        let seq = self.next();
        self.push(Job::Known(seq, address))
    }

    /// The next chunk's sequence number, taken.
    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    fn push(&self, job: Job) -> io::Result<()> {
        self.tx
            .send(job)
            .map_err(|_| Error::new(ErrorKind::Cancelled, "the chunk stage stopped").into_io())
    }

    /// The stream ended cleanly: the sinks may store their last packs.
    pub(crate) fn done(self) -> io::Result<()> {
        self.push(Job::Done(self.seq))
    }
}

/// Starts `workers` seal threads and one packer per sink; `required[i]`
/// says whether sink `i` may pace the run (an optional one is dropped
/// when it falls [`OPTIONAL_LAG_CHUNKS`] behind).
pub(crate) fn start(
    key: &DedupKey,
    encryption: &Encryption,
    level: i32,
    workers: usize,
    sinks: Vec<(Arc<dyn Sink>, Arc<KnownChunks>)>,
    required: &[bool],
    progress: Arc<Progress>,
) -> Result<(ChunkFeed, ChunkedRun)> {
    super::check_encryption(encryption)?;
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(1);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (sealed_tx, sealed_rx) = mpsc::channel::<Result<SealedMsg>>(2);
    let seal = Arc::new(Seal {
        address_key: key.address_key(),
        secret_key: rand::random(),
        encryption: encryption.clone(),
        level,
        known: sinks.iter().map(|(_, k)| k.clone()).collect(),
        sealed: Mutex::new(HashMap::new()),
    });
    let mut handles = Vec::new();
    for i in 0..workers.max(1) {
        let (rx, tx, seal) = (job_rx.clone(), sealed_tx.clone(), seal.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("coffer-seal-{i}"))
                .spawn(move || seal_worker(&seal, &rx, &tx))
                .map_err(|e| Error::io("starting a seal thread", e))?,
        );
    }
    drop(sealed_tx);
    let mut outlets = Vec::new();
    let mut packers = Vec::new();
    let mut lagged = Vec::new();
    for (i, (sink, known)) in sinks.into_iter().enumerate() {
        let required = required.get(i).copied().unwrap_or(true);
        let (tx, rx) = mpsc::channel::<SealedMsg>(if required { 2 } else { OPTIONAL_LAG_CHUNKS });
        let packer = tokio::spawn(packer(sink, known, rx, progress.clone()));
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        outlets.push(Outlet {
            tx: Some(tx),
            optional: (!required).then(|| (flag.clone(), packer.abort_handle())),
        });
        packers.push(packer);
        lagged.push(flag);
    }
    let distribute = tokio::spawn(distribute(sealed_rx, outlets));
    let feed = ChunkFeed { tx: job_tx, seq: 0 };
    Ok((
        feed,
        ChunkedRun {
            workers: handles,
            distribute,
            packers,
            lagged,
        },
    ))
}

impl ChunkedRun {
    /// Waits for every sink's packs; one result per sink, in order, and
    /// the address of every chunk of the stream in order. An error of the
    /// sealing itself fails every sink.
    pub(crate) async fn finish(self) -> (Vec<Result<SinkChunks>>, Vec<[u8; 32]>) {
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || workers.into_iter().for_each(|w| drop(w.join()))).await;
        let dist = self
            .distribute
            .await
            .unwrap_or_else(|e| Err(Error::new(ErrorKind::Unexpected, e.to_string())));
        let mut out = Vec::new();
        for (p, lagged) in self.packers.into_iter().zip(self.lagged) {
            let r = p
                .await
                .unwrap_or_else(|e| Err(Error::new(ErrorKind::Unexpected, e.to_string())));
            // A dropped sink's packer never saw the end of the stream.
            let r = if lagged.load(Ordering::SeqCst) {
                Err(lag_error())
            } else {
                r
            };
            out.push(match (&dist, r) {
                (Err(e), _) => Err(Error::new(e.kind(), e.message().to_string())),
                (Ok(_), r) => r,
            });
        }
        (out, dist.unwrap_or_default())
    }
}

struct Seal {
    address_key: [u8; 32],
    /// Addresses of secret chunks: this snapshot's own, never kept.
    secret_key: [u8; 32],
    encryption: Encryption,
    level: i32,
    known: Vec<Arc<KnownChunks>>,
    /// Chunks sealed by this run, with the lowest sequence number sealed:
    /// a later repeat is not sealed again.
    sealed: Mutex<HashMap<[u8; 32], u64>>,
}

impl Seal {
    fn seal(&self, seq: u64, chunk: &PlainChunk) -> Result<Sealed> {
        let key = if chunk.secret {
            &self.secret_key
        } else {
            &self.address_key
        };
        let address: [u8; 32] = blake3::keyed_hash(key, &chunk.data).into();
        let stored_everywhere = !chunk.secret && self.known.iter().all(|k| k.contains(&address));
        // Of repeats in this run, the one first in the stream is sealed
        // (whichever worker gets to it first): the packers see it first,
        // so the later ones need no ciphertext. A repeat that is earlier
        // than the one recorded is sealed too.
        let first = !stored_everywhere && {
            let mut sealed = self.sealed.lock().expect("sealed");
            let lowest = sealed.entry(address).or_insert(u64::MAX);
            let earlier = seq < *lowest;
            if earlier {
                *lowest = seq;
            }
            earlier
        };
        if !first {
            return Ok(Sealed {
                address,
                cipher: None,
            });
        }
        // One compression context per worker thread: small chunks (a
        // collection's documents) would otherwise pay for a new one each.
        thread_local! {
            static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
                const { std::cell::RefCell::new(None) };
        }
        let compressed = ZSTD
            .with(|z| {
                let mut z = z.borrow_mut();
                if z.as_ref().is_none_or(|(level, _)| *level != self.level) {
                    *z = Some((self.level, zstd::bulk::Compressor::new(self.level)?));
                }
                let (_, c) = z.as_mut().expect("set above");
                c.compress(&chunk.data)
            })
            .map_err(|e| Error::io("compressing a chunk", e))?;
        let mut w = self
            .encryption
            .encrypt(Vec::with_capacity(compressed.len() + 512))?;
        w.write_all(&compressed)
            .map_err(|e| Error::io("encrypting a chunk", e))?;
        let cipher = w.finish().map_err(|e| Error::io("encrypting a chunk", e))?;
        let sha: [u8; 32] = Sha256::digest(&cipher).into();
        Ok(Sealed {
            address,
            cipher: Some((Bytes::from(cipher), sha)),
        })
    }
}

fn seal_worker(
    seal: &Seal,
    rx: &Mutex<std::sync::mpsc::Receiver<Job>>,
    tx: &mpsc::Sender<Result<SealedMsg>>,
) {
    loop {
        let job = match rx.lock().expect("jobs").recv() {
            Ok(job) => job,
            Err(_) => return, // the stream stopped (cleanly or not)
        };
        let msg = match job {
            Job::Chunk(seq, chunk) => {
                // A panic would leave a hole in the sequence the distributor
                // waits on: an error instead.
                let sealed =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| seal.seal(seq, &chunk)))
                        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Unexpected, "a seal thread panicked")));
                sealed.map(|s| SealedMsg::Chunk(seq, Arc::new(s)))
            }
            Job::Known(seq, address) => Ok(SealedMsg::Chunk(
                seq,
                Arc::new(Sealed {
                    address,
                    cipher: None,
                }),
            )),
            Job::Done(seq) => Ok(SealedMsg::Done(seq)),
        };
        if tx.blocking_send(msg).is_err() {
            return;
        }
    }
}

/// Puts sealed chunks back in stream order and hands each to every
/// sink's packer. Ends with the end marker when the stream ended
/// cleanly; without it, the packers store nothing more. Returns the
/// addresses in stream order.
async fn distribute(
    mut rx: mpsc::Receiver<Result<SealedMsg>>,
    mut sinks: Vec<Outlet>,
) -> Result<Vec<[u8; 32]>> {
    let mut addresses = Vec::new();
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, SealedMsg> = BTreeMap::new();
    while let Some(msg) = rx.recv().await {
        let msg = msg?;
        let seq = match &msg {
            SealedMsg::Chunk(seq, _) | SealedMsg::Done(seq) => *seq,
        };
        waiting.insert(seq, msg);
        while let Some(msg) = waiting.remove(&next) {
            next += 1;
            let done = matches!(msg, SealedMsg::Done(_));
            if let SealedMsg::Chunk(_, s) = &msg {
                addresses.push(s.address);
            }
            for outlet in &mut sinks {
                let Some(tx) = &outlet.tx else { continue };
                let copy = match &msg {
                    SealedMsg::Chunk(seq, s) => SealedMsg::Chunk(*seq, s.clone()),
                    SealedMsg::Done(seq) => SealedMsg::Done(*seq),
                };
                match &outlet.optional {
                    // A required sink paces the run.
                    None => {
                        let _ = tx.send(copy).await; // a failed packer reports its own error
                    }
                    // An optional one is dropped once its queue is full:
                    // its packer is stopped (a pack being put is not
                    // stored), and no chunk list or index goes there.
                    Some((lagged, abort)) => {
                        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(copy) {
                            lagged.store(true, Ordering::SeqCst);
                            abort.abort();
                            outlet.tx = None;
                        }
                    }
                }
            }
            if done {
                return Ok(addresses);
            }
        }
    }
    Ok(addresses)
}

/// One sink's packer: records where each chunk lies, appending the ones
/// the sink lacks to the pack being filled and storing full packs.
async fn packer(
    sink: Arc<dyn Sink>,
    known: Arc<KnownChunks>,
    mut rx: mpsc::Receiver<SealedMsg>,
    progress: Arc<Progress>,
) -> Result<SinkChunks> {
    let mut added: HashMap<[u8; 32], ChunkRef> = HashMap::new();
    let mut out = SinkChunks {
        list: ChunkList::default(),
        new_chunks: 0,
        new_bytes: 0,
    };
    // Small chunks (tar headers, small files, coffer's own entries) go to
    // packs of their own: one a later snapshot still shares then keeps a
    // small pack alive, not 8 MiB of file data (packs are removed whole).
    let mut packs = [OpenPack::new(), OpenPack::new()];
    let mut puts = futures::stream::FuturesUnordered::new();
    while let Some(msg) = rx.recv().await {
        let sealed = match msg {
            SealedMsg::Chunk(_, s) => s,
            SealedMsg::Done(_) => {
                for p in &mut packs {
                    if !p.bytes.is_empty() {
                        puts.push(put_pack(
                            sink.clone(),
                            p.name.clone(),
                            std::mem::take(&mut p.bytes),
                        ));
                    }
                }
                while let Some(r) = puts.next().await {
                    r?;
                }
                return Ok(out);
            }
        };
        if let Some(r) = known
            .get(&sealed.address)
            .or_else(|| added.get(&sealed.address).cloned())
        {
            out.list.0.push(r);
            continue;
        }
        let Some((cipher, sha256)) = &sealed.cipher else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "a chunk this sink lacks was not sealed",
            ));
        };
        let pack = &mut packs[usize::from(cipher.len() >= SMALL_CHUNK)];
        let r = ChunkRef {
            address: sealed.address,
            pack: pack.name.clone(),
            offset: pack.bytes.len() as u64,
            length: cipher.len() as u64,
            sha256: *sha256,
        };
        pack.bytes.extend_from_slice(cipher);
        out.new_chunks += 1;
        out.new_bytes += cipher.len() as u64;
        progress
            .cipher_bytes
            .fetch_add(cipher.len() as u64, Ordering::Relaxed);
        added.insert(r.address, r.clone());
        out.list.0.push(r);
        if pack.bytes.len() >= PACK_TARGET {
            let full = std::mem::replace(pack, OpenPack::new());
            puts.push(put_pack(sink.clone(), full.name, full.bytes));
            if puts.len() > PUTS_IN_FLIGHT
                && let Some(r) = puts.next().await
            {
                r?;
            }
        }
    }
    Err(Error::new(
        ErrorKind::Cancelled,
        "the backup stopped before its stream ended",
    ))
}

/// Why an optional chunked sink's part of the run failed when it fell
/// behind.
fn lag_error() -> Error {
    Error::new(
        ErrorKind::Unreachable,
        format!(
            "an optional chunked sink fell more than {OPTIONAL_LAG_CHUNKS} chunks behind the others and was \
             dropped from this run"
        ),
    )
    .with_hint(
        "no snapshot was stored there (packs it had stored already are removed by the next prune); the other \
         sinks went on at full speed. Copy the snapshot to it later (`coffer copy`), or make it required to \
         have the run wait for it",
    )
}

/// Chunks whose ciphertext is smaller than this go to the small packs.
const SMALL_CHUNK: usize = 64 << 10;

/// A pack being filled.
struct OpenPack {
    name: String,
    bytes: Vec<u8>,
}

impl OpenPack {
    fn new() -> OpenPack {
        OpenPack {
            name: new_pack_name(),
            bytes: Vec::new(),
        }
    }
}

/// Stores one pack, create-only.
async fn put_pack(sink: Arc<dyn Sink>, name: String, bytes: Vec<u8>) -> Result<()> {
    let len = bytes.len() as u64;
    let body = futures::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed();
    let n = sink
        .put(&pack_key(&name), body, PutOptions::create().with_size_hint(len))
        .await
        .map_err(|e| e.prefix(format!("storing pack {name}")))?;
    if n != len {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!("sink stored {n} bytes of pack {name}, expected {len}"),
        ));
    }
    Ok(())
}
