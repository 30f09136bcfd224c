//! [`Spill`]: holds an entry's body of unknown length (a collection's
//! `.bson`, a command's stdout) until its size is known (a tar header needs
//! it first), in memory up to a bound and beyond it in
//! an unnamed temp file encrypted with an ephemeral age key, so no
//! plaintext ever touches the disk.
//!
//! Blocking: writes past the bound encrypt and write to disk. Async code
//! fills a body through a [`SpillTask`], which does that work on a blocking
//! thread behind a queue of 4 × 1 MiB, so a cursor keeps reading meanwhile.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Cursor, Read, Seek, SeekFrom, Write};

use age::x25519;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A growing body: memory first, then an encrypted temp file.
pub struct Spill {
    limit: usize,
    mem: Vec<u8>,
    file: Option<SpillFile>,
    len: u64,
    hasher: Sha256,
}

struct SpillFile {
    /// The key exists only in this process's memory; the file (already
    /// unlinked) is unreadable without it.
    identity: x25519::Identity,
    writer: age::stream::StreamWriter<BufWriter<File>>,
}

/// A finished body.
pub struct SpillBody {
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// Whether it went to disk (encrypted).
    pub spilled: bool,
    /// The content.
    pub reader: Box<dyn Read + Send>,
}

impl Spill {
    /// An empty body kept in memory up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Spill {
            limit,
            mem: Vec::new(),
            file: None,
            len: 0,
            hasher: Sha256::new(),
        }
    }

    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        if self.file.is_none() && self.mem.len() + data.len() <= self.limit {
            self.mem.extend_from_slice(data);
            return Ok(());
        }
        if self.file.is_none() {
            let identity = x25519::Identity::generate();
            let recipient = identity.to_public();
            let encryptor =
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .map_err(io::Error::other)?;
            // `tempfile()` is unlinked at once: nothing is left behind, even
            // after a crash.
            let file = tempfile::tempfile()?;
            let mut writer = encryptor.wrap_output(BufWriter::with_capacity(256 * 1024, file))?;
            writer.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(SpillFile { identity, writer });
        }
        let spill = self.file.as_mut().expect("created above");
        spill.writer.write_all(data)
    }

    /// Finishes the body, returning its size, hash and a reader.
    pub fn finish(self) -> io::Result<SpillBody> {
        let sha256: [u8; 32] = self.hasher.finalize().into();
        match self.file {
            None => Ok(SpillBody {
                size: self.len,
                sha256,
                spilled: false,
                reader: Box::new(Cursor::new(self.mem)),
            }),
            Some(SpillFile { identity, writer }) => {
                let mut file = writer.finish()?.into_inner().map_err(|e| e.into_error())?;
                file.flush()?;
                file.seek(SeekFrom::Start(0))?;
                let decryptor = age::Decryptor::new(BufReader::with_capacity(256 * 1024, file))
                    .map_err(io::Error::other)?;
                let reader = decryptor
                    .decrypt(std::iter::once(&identity as &dyn age::Identity))
                    .map_err(io::Error::other)?;
                Ok(SpillBody {
                    size: self.len,
                    sha256,
                    spilled: true,
                    reader: Box::new(reader),
                })
            }
        }
    }
}

/// Bytes handed to a [`SpillTask`]'s thread at a time.
const CHUNK: usize = 1 << 20;
/// Chunks queued between a [`SpillTask`]'s producer and its thread: the
/// producer runs ahead by at most this many (4 MiB) while a chunk is
/// hashed, encrypted and written.
const QUEUE: usize = 4;

/// A [`Spill`] filled from async code. Hashing, encrypting and writing
/// happen on a blocking thread behind a queue of [`QUEUE`] chunks of
/// [`CHUNK`] bytes, so a producer (a cursor waiting for its next batch)
/// waits for that work only when it is 4 MiB ahead of it: the server
/// prepares the next batch while the last one is stored.
///
/// Not cancel-safe: a dropped [`SpillTask::append`] may have taken bytes
/// that never reach the body; drop the whole task instead (its thread then
/// stops after the chunks already queued).
pub struct SpillTask {
    chunk: Vec<u8>,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    handle: Option<JoinHandle<io::Result<SpillBody>>>,
}

impl SpillTask {
    /// Starts an empty body kept in memory up to `limit` bytes.
    pub fn spawn(limit: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        let handle = tokio::task::spawn_blocking(move || {
            let mut spill = Spill::new(limit);
            while let Some(chunk) = rx.blocking_recv() {
                spill.write(&chunk)?;
            }
            spill.finish()
        });
        SpillTask {
            chunk: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Appends `data`, waiting only while the queue is full. An error is
    /// the thread's: the body can no longer be stored.
    pub async fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let take = data.len().min(CHUNK - self.chunk.len());
            self.chunk.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.chunk.len() == CHUNK {
                let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
                self.send(full).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        let Some(tx) = &self.tx else {
            return Err(io::Error::other("the spill thread already stopped"));
        };
        if tx.send(chunk).await.is_ok() {
            return Ok(());
        }
        // The thread stopped early: only an error does that.
        self.tx = None;
        match self.join().await {
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("the spill thread stopped early")),
        }
    }

    /// Stores what is left, waits for every chunk to be stored and returns
    /// the body, like [`Spill::finish`].
    pub async fn finish(mut self) -> io::Result<SpillBody> {
        let last = std::mem::take(&mut self.chunk);
        if !last.is_empty() {
            self.send(last).await?;
        }
        self.tx = None;
        self.join().await
    }

    async fn join(&mut self) -> io::Result<SpillBody> {
        match self.handle.take() {
            Some(handle) => match handle.await {
                Ok(body) => body,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(io::Error::other(e)),
            },
            None => Err(io::Error::other("the spill thread already stopped")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(limit: usize, chunks: &[Vec<u8>]) -> (SpillBody, Vec<u8>) {
        let mut spill = Spill::new(limit);
        let mut all = Vec::new();
        for c in chunks {
            spill.write(c).unwrap();
            all.extend_from_slice(c);
        }
        let mut body = spill.finish().unwrap();
        let mut back = Vec::new();
        body.reader.read_to_end(&mut back).unwrap();
        assert_eq!(back, all);
        assert_eq!(body.size, all.len() as u64);
        assert_eq!(body.sha256, <[u8; 32]>::from(Sha256::digest(&all)));
        (body, all)
    }

    #[test]
    fn stays_in_memory_under_the_bound() {
        let (body, _) = roundtrip(1024, &[vec![1; 500], vec![2; 524]]);
        assert!(!body.spilled);
    }

    #[test]
    fn spills_encrypted_past_the_bound() {
        let chunks: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100_000]).collect();
        let (body, _) = roundtrip(1 << 20, &chunks);
        assert!(body.spilled);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_stores_what_was_queued_in_order() {
        let chunks: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100_000]).collect();
        let mut task = SpillTask::spawn(1 << 20);
        for c in &chunks {
            task.append(c).await.unwrap();
        }
        task.append(&[]).await.unwrap();
        // One piece larger than a chunk and one that ends mid-chunk.
        let big: Vec<u8> = (0..3 * CHUNK + 7).map(|i| (i % 251) as u8).collect();
        task.append(&big).await.unwrap();
        task.append(b"tail").await.unwrap();
        let mut body = task.finish().await.unwrap();
        let chunks: Vec<Vec<u8>> = chunks.into_iter().chain([big, b"tail".to_vec()]).collect();
        let all = chunks.concat();
        let mut back = Vec::new();
        body.reader.read_to_end(&mut back).unwrap();
        assert!(body.spilled);
        assert_eq!(back, all);
        assert_eq!(body.sha256, <[u8; 32]>::from(Sha256::digest(&all)));
    }

    #[test]
    fn empty_body() {
        let (body, _) = roundtrip(16, &[]);
        assert_eq!(body.size, 0);
    }
}
