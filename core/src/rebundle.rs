//! A chunked snapshot written again as one bundle (`coffer export --format
//! bundle`): the same tar stream — same entries, `SHA256SUMS`, manifest
//! and id — compressed and encrypted again as one age file, for a medium
//! that must open with `age -d | zstd -d | tar x` alone.
//!
//! Unlike a copy this needs keys: an identity reads the chunks, the new
//! object is encrypted to the recipients the snapshot was (the index names
//! their fingerprints; every one must be given), and the new index — a new
//! object, so a new SHA-256 — is signed by the exporting key when the
//! snapshot's own signature was judged trusted (never otherwise: a
//! signature here vouches for the content).
//! Each chunk is checked against the signed chunk list before it is
//! decrypted, and the tar stream's length against the index's, so the
//! bundle holds exactly what the snapshot did. Nothing is visible on the
//! target until the object is complete: it is streamed with an
//! all-or-nothing `put` that fails unless the writer finished; then the
//! companions, the signature and the index. The target is locked
//! exclusively meanwhile ([`crate::ops::copy_snapshots`]).

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bundle::{Compression, Index, IndexEncryption, IndexObject};
use crate::chunked::{ChunkReader, ChunkStream, with_chunk_stream};
use crate::crypto::{Encryption, Identities, RecipientKey};
use crate::error::{Error, ErrorKind, Result, config_error};
use crate::signing::{SigningKey, TrustState};
use crate::sink::{ByteStream, PutOptions, Sink, SinkExt};
use crate::stream::{Compressor, ObjectOut};

/// Bundle chunks queued between the writer thread and the target's `put`.
const QUEUE: usize = 8;

/// What writing a chunked snapshot again as a bundle needs: identities that
/// read its chunks, recipients to encrypt to (a pool: each snapshot takes
/// those its index names) and the key that signs the new index.
#[derive(Clone)]
pub struct Rebundle {
    identities: Arc<Identities>,
    recipients: Vec<RecipientKey>,
    signing_key: Option<Arc<SigningKey>>,
    threads: u32,
}

impl std::fmt::Debug for Rebundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebundle")
            .field("recipients", &self.recipients.len())
            .field("signs", &self.signing_key.is_some())
            .finish_non_exhaustive()
    }
}

impl Rebundle {
    /// Reads chunks with `identities`, encrypts to `recipients` (the
    /// snapshot's own, matched by fingerprint), signs with `signing_key`.
    pub fn new(
        identities: Identities,
        recipients: Vec<RecipientKey>,
        signing_key: Option<Arc<SigningKey>>,
    ) -> Rebundle {
        Rebundle {
            identities: Arc::new(identities),
            recipients,
            signing_key,
            threads: 0,
        }
    }

    /// zstd worker threads (0 = compress on the writer thread).
    pub fn with_threads(mut self, threads: u32) -> Rebundle {
        self.threads = threads;
        self
    }

    /// The key that signs the new indexes, if any.
    pub fn signing_key(&self) -> Option<&Arc<SigningKey>> {
        self.signing_key.as_ref()
    }

    /// The recipients `index` is encrypted to, from the pool: every
    /// fingerprint it names must be matched, so the bundle opens for
    /// exactly whoever could open the snapshot.
    fn encryption_for(&self, index: &Index) -> Result<Encryption> {
        if index.encryption.mode != "recipients" {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "snapshot {} is encrypted with `{}`, not to recipients",
                    index.id, index.encryption.mode
                ),
            ));
        }
        let mut keys = Vec::new();
        let mut missing = Vec::new();
        for fp in &index.encryption.recipients {
            match self.recipients.iter().find(|k| k.fingerprint() == *fp) {
                Some(k) => keys.push(k.clone()),
                None => missing.push(fp.as_str()),
            }
        }
        if !missing.is_empty() {
            return Err(config_error(format!(
                "snapshot {} is encrypted to {} recipient(s), and {} of them ({}) are neither in the config nor given with --recipient: the bundle would not open for them",
                index.id,
                index.encryption.recipients.len(),
                missing.len(),
                missing.join(", ")
            ))
            .with_hint("pass each missing public key with --recipient age1… (`coffer show SNAPSHOT` lists the fingerprints), or export the snapshot as it is stored (without --format bundle)"));
        }
        Ok(Encryption::Recipients(keys))
    }

    /// Refuses, before anything is written, what cannot be done, and says
    /// whether the bundle's index is signed: only when the snapshot's own
    /// signature was judged trusted (a bundle signed here vouches for its
    /// content, so an unchecked or unsigned snapshot never gains a
    /// signature it did not have).
    pub(crate) fn check(&self, index: &Index, signature: &TrustState) -> Result<(Encryption, bool)> {
        let sign = match signature {
            TrustState::Unsigned => false,
            TrustState::Trusted(_) if self.signing_key.is_some() => true,
            TrustState::Trusted(_) => {
                return Err(config_error(format!(
                    "snapshot {} is signed, and its bundle (a new object) needs a signature of its own: no signing key was given",
                    index.id
                ))
                .with_hint("pass --signing-key FILE (or set `signing-key` in the config; the importing site must trust its public half), or export the snapshot as it is stored (without --format bundle)"));
            }
            TrustState::Untrusted(_) | TrustState::BadSignature(_) => {
                return Err(config_error(format!(
                    "snapshot {} is signed by a key no trusted signer names: signing its bundle here would vouch for what nobody checked",
                    index.id
                ))
                .with_hint("pass --trusted-signer with the key that signed it (or set `trusted-signers`), or export it as it is stored (without --format bundle)"));
            }
        };
        Ok((self.encryption_for(index)?, sign))
    }
}

/// Writes the object of the chunked snapshot `index` of `from` as a
/// bundle on `to` and returns the bundle's index (to be published with
/// [`publish`]) and the bytes written. The caller holds `to` exclusively:
/// an index-less object or signature of this id is what an export killed
/// before its index left (no index names it, and a new encryption never
/// yields the same bytes), and is replaced.
pub(crate) async fn write_bundle(
    from: &dyn Sink,
    to: &dyn Sink,
    index: &Index,
    how: &Rebundle,
    encryption: Encryption,
    progress: Option<Arc<crate::Progress>>,
) -> Result<(Index, u64)> {
    let key = index.id.object_key();
    for stale in [&key, &index.id.signature_key()] {
        if to.head(stale).await?.is_some() {
            to.delete(stale).await?;
        }
    }
    let (mode, recipients) = encryption.describe();
    let (tx, rx) = mpsc::channel::<Result<Option<Bytes>>>(QUEUE);
    let (idx, ids, threads) = (index.clone(), how.identities.clone(), how.threads);
    let write = with_chunk_stream(from, index, progress, move |stream| {
        let written = encode(stream, &idx, &ids, &encryption, threads, &tx);
        match &written {
            Ok(_) => tx.blocking_send(Ok(None)).ok(),
            Err(e) => tx
                .blocking_send(Err(Error::new(e.kind(), format!("writing the bundle: {e}"))))
                .ok(),
        };
        written
    });
    let (written, stored) = tokio::join!(write, to.put(&key, body(rx), PutOptions::create()));
    let (sha256, size, plain) = written?;
    let stored = stored?;
    if stored != size {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!("the target stored {stored} bytes of the bundle, expected {size}"),
        ));
    }
    let mut bundle = index.clone();
    bundle.object = IndexObject {
        key,
        size,
        sha256,
        plain_size: Some(plain),
    };
    bundle.coffer_version = env!("CARGO_PKG_VERSION").into();
    bundle.compression = Compression::default().name().into();
    bundle.encryption = IndexEncryption {
        scheme: "age".into(),
        mode,
        recipients,
    };
    bundle.chunks = None;
    Ok((bundle, size))
}

/// The last writes of a bundle: its signature (with `key`), then its index.
pub(crate) async fn publish(to: &dyn Sink, bundle: &Index, key: Option<&SigningKey>) -> Result<()> {
    let bytes = Bytes::from(bundle.to_json());
    if let Some(k) = key {
        let sig = Bytes::from(k.sign_index(&bytes).to_json());
        to.put_bytes(&bundle.id.signature_key(), sig, PutOptions::create())
            .await
            .map_err(|e| e.prefix("writing the signature"))?;
    }
    to.put_bytes(&bundle.id.index_key(), bytes, PutOptions::create())
        .await
        .map(|_| ())
}

/// The `put` body: what the writer sends, ending cleanly only at its
/// end-of-bundle marker; a writer that stopped without one fails the put.
fn body(rx: mpsc::Receiver<Result<Option<Bytes>>>) -> ByteStream {
    Box::pin(futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Ok(Some(b))) => Some((Ok(b), Some(rx))),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some((Err(e), None)),
            None => Some((
                Err(Error::new(ErrorKind::Cancelled, "the bundle writer stopped")),
                None,
            )),
        }
    }))
}

/// The chunks of `stream`, checked and decrypted, compressed with zstd
/// and encrypted into `tx`. Returns the object's SHA-256 and size and the
/// tar stream's length. Blocking.
fn encode(
    stream: ChunkStream,
    index: &Index,
    identities: &Identities,
    encryption: &Encryption,
    threads: u32,
    tx: &mpsc::Sender<Result<Option<Bytes>>>,
) -> Result<(String, u64, u64)> {
    let out = ObjectOut::new(
        |buf: Vec<u8>| {
            tx.blocking_send(Ok(Some(Bytes::from(buf))))
                .map_err(|_| Error::new(ErrorKind::Cancelled, "the target stopped").into_io())
        },
        Default::default(),
    );
    let age = encryption.encrypt(out)?;
    let mut zstd =
        Compressor::new(Compression::default(), age, threads).map_err(|e| Error::io("starting zstd", e))?;
    let mut reader = ChunkReader::new(stream, index, identities);
    let plain = io::copy(&mut reader, &mut zstd).map_err(|e| Error::io("reading the chunks", e))?;
    if let Some(expected) = index.object.plain_size
        && plain != expected
    {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!("the chunks hold {plain} bytes of tar stream, the index says {expected}"),
        ));
    }
    let (sha, size) = zstd
        .finish()
        .map_err(|e| Error::io("compressing", e))?
        .finish()
        .map_err(|e| Error::io("finishing encryption", e))?
        .finish()
        .map_err(|e| Error::io("sending the last chunk", e))?;
    Ok((sha, size, plain))
}
