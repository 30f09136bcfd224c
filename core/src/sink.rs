//! The [`Sink`] trait: where bundles are stored. A sink only ever sees
//! ciphertext and public indexes.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use jiff::Timestamp;

use crate::error::{Error, ErrorKind, Result};

/// A stream of byte chunks; an `Err` item aborts whatever consumes it.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// One stored object, as [`Sink::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key under the sink's location, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the sink knows it.
    pub modified: Option<Timestamp>,
}

/// Whether [`Sink::put`] may replace an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PutMode {
    /// Replace any existing object (locks, signatures being refreshed).
    #[default]
    Overwrite,
    /// Fail with [`ErrorKind::AlreadyExists`] if the key exists. Snapshot
    /// objects and indexes are always written this way.
    Create,
}

/// Options of [`Sink::put`]; grows without breaking plugins.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PutOptions {
    /// Overwrite or create-only.
    pub mode: PutMode,
    /// The expected size, when known; sinks may use it to preflight free
    /// space or choose a part size. Never trusted for correctness.
    pub size_hint: Option<u64>,
}

impl PutOptions {
    /// Create-only options.
    pub fn create() -> Self {
        PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        }
    }

    /// Sets the expected size (see [`PutOptions::size_hint`]).
    pub fn with_size_hint(mut self, size: u64) -> Self {
        self.size_hint = Some(size);
        self
    }
}

/// What a sink is and can do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SinkInfo {
    /// URL scheme or kind, e.g. `file`.
    pub scheme: &'static str,
    /// Where it stores, without credentials, e.g. `/srv/backups`.
    pub location: String,
    /// Whether `PutMode::Create` is enforced atomically by the storage.
    pub atomic_create: bool,
    /// A remote sink declares the longest one operation (or a stall of a
    /// streaming put or get) may take, beyond its client's own bounds; the
    /// [`Registry`](crate::Registry) then layers it as
    /// `RetrySink(TimeoutSink(sink))`: whole operations retried on
    /// temporary errors ([`RetryPolicy::default`](crate::RetryPolicy)),
    /// and bounded by this. `None` (local storage): no layers.
    pub remote_bound: Option<std::time::Duration>,
}

impl SinkInfo {
    /// Describes a sink.
    pub fn new(scheme: &'static str, location: impl Into<String>) -> Self {
        SinkInfo {
            scheme,
            location: location.into(),
            atomic_create: false,
            remote_bound: None,
        }
    }

    /// Declares a remote sink whose operations may take up to `bound`
    /// (see [`SinkInfo::remote_bound`]).
    pub fn with_remote_bound(mut self, bound: std::time::Duration) -> Self {
        self.remote_bound = Some(bound);
        self
    }

    /// Sets the `atomic_create` flag.
    pub fn with_atomic_create(mut self, yes: bool) -> Self {
        self.atomic_create = yes;
        self
    }
}

impl std::fmt::Display for SinkInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.scheme, self.location)
    }
}

/// Stores opaque objects: the encrypted bundles and their public indexes.
///
/// Keys are `/`-separated relative paths of printable UTF-8 (spaces and
/// non-ASCII allowed); they never start with `/` nor contain `..`
/// segments. Implementations are used as `Arc<dyn Sink>` from many tasks at
/// once.
#[async_trait]
pub trait Sink: Send + Sync + Debug + 'static {
    /// What this sink is.
    ///
    /// # Behavior
    /// - Cheap and infallible; never contacts the storage.
    /// - The location never contains credentials.
    fn info(&self) -> SinkInfo;

    /// Stores the bytes of `body` under `key`.
    ///
    /// # Behavior
    /// - All-or-nothing: the object becomes visible (to `get`, `list`) only
    ///   once the whole body was received and made durable. If `body`
    ///   yields an error, or the returned future is dropped, nothing new is
    ///   visible under `key` and any previous object there is unchanged.
    /// - With [`PutMode::Create`], fails with [`ErrorKind::AlreadyExists`]
    ///   if `key` exists, and never replaces it.
    /// - Returns the number of bytes stored.
    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64>;

    /// Reads the object under `key`.
    ///
    /// # Behavior
    /// - Fails with [`ErrorKind::NotFound`] if there is none.
    /// - The stream yields exactly the bytes stored; a stream that ends
    ///   early yields an error rather than ending silently.
    async fn get(&self, key: &str) -> Result<ByteStream>;

    /// Lists the objects whose key starts with `prefix` (`""` for all).
    ///
    /// # Behavior
    /// - Recursive: keys in "subdirectories" are listed too.
    /// - Objects being written by `put` (temporary names) are never listed.
    /// - An object whose `put` has returned is listed (read-after-write).
    /// - Order is unspecified.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Removes the object under `key`.
    ///
    /// # Behavior
    /// - Succeeds when the object is already gone.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Prepares this location as a new sink (`coffer sink init`, `backup
    /// --create-sink`).
    ///
    /// # Behavior
    /// - Succeeds when the location already is a sink; never removes or
    ///   changes objects.
    /// - A sink whose location can silently be wrong (a directory of an
    ///   unmounted disk) creates only the last path component and a marker
    ///   object, and otherwise refuses to run with
    ///   [`ErrorKind::SinkMissing`]. The default does nothing.
    async fn init(&self) -> Result<()> {
        Ok(())
    }

    /// Opens the object under `key` for reading in place, when this sink
    /// keeps its objects as files on this host (a local directory, a
    /// medium): a restore then checks and decrypts that file instead of
    /// copying it to a cache first. `Ok(None)` (the default): use
    /// [`Sink::get`]. A missing object is `Ok(None)` or `NotFound`.
    async fn open_local(&self, key: &str) -> Result<Option<std::fs::File>> {
        let _ = key;
        Ok(None)
    }
}

/// Conveniences over any [`Sink`]; implemented for every sink, so wrappers
/// need not forward them.
#[async_trait]
pub trait SinkExt: Sink {
    /// Stores `bytes` under `key`.
    async fn put_bytes(&self, key: &str, bytes: Bytes, opts: PutOptions) -> Result<u64> {
        let stream = futures::stream::once(async move { Ok(bytes) }).boxed();
        self.put(key, stream, opts).await
    }

    /// Reads the whole object under `key` into memory (for small objects).
    async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let chunks: Vec<Bytes> = self.get(key).await?.try_collect().await?;
        Ok(chunks.concat().into())
    }

    /// The metadata of `key`, or `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.list(key).await?.into_iter().find(|o| o.key == key))
    }
}

impl<S: Sink + ?Sized> SinkExt for S {}

#[async_trait]
impl<S: Sink + ?Sized> Sink for Arc<S> {
    fn info(&self) -> SinkInfo {
        (**self).info()
    }
    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64> {
        (**self).put(key, body, opts).await
    }
    async fn get(&self, key: &str) -> Result<ByteStream> {
        (**self).get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        (**self).list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key).await
    }
    async fn init(&self) -> Result<()> {
        (**self).init().await
    }
    async fn open_local(&self, key: &str) -> Result<Option<std::fs::File>> {
        (**self).open_local(key).await
    }
}

/// Checks that `key` is a valid sink key (see [`Sink`]); plugins call it
/// first in every method.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key.contains('\0')
        || key.contains('\\')
        || key
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        return Err(Error::new(ErrorKind::ConfigInvalid, "invalid object key").with_context("key", key));
    }
    Ok(())
}

/// Checks a [`Sink::list`] prefix: empty (everything), or a valid key
/// with or without a trailing `/`, or one that stops mid-name.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let probe = prefix.strip_suffix('/').unwrap_or(prefix);
    if prefix.is_empty() || (!probe.is_empty() && validate_key(probe).is_ok()) {
        return Ok(());
    }
    Err(Error::new(ErrorKind::ConfigInvalid, "invalid list prefix").with_context("prefix", prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "a/b.json", "with space/ünï.coffer"] {
            validate_key(ok).unwrap();
        }
        for bad in ["", "/a", "a/", "a/../b", "./a", "a//b", "a\\b"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
    }
}
